"""Machines: the device inventory entity and the platform rules for offboarding."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from datetime import datetime

from bulwark.domain.errors import BadRequest, ClientVersionNotSupported, InvalidInput, OsPlatformNotSupported

MACHINE_ID_PATTERN = re.compile(r"^[0-9A-Za-z]{40}$")

# Windows 10 version 1703 is build 15063: the first build that supports offboarding by API.
WINDOWS10_MIN_BUILD = 15063
# Windows Server 2012 R2 and 2016 are supported only with the unified agent, whose agent versions
# start at 10.8000 (the older MMA-based sensor reports 10.3xxx and below).
UNIFIED_AGENT_MIN = (10, 8000)


class HealthStatus(str, enum.Enum):
    """Sensor health, as the live API spells it."""

    ACTIVE = "Active"
    INACTIVE = "Inactive"
    IMPAIRED_COMMUNICATION = "ImpairedCommunication"
    NO_SENSOR_DATA = "NoSensorData"
    NO_SENSOR_DATA_IMPAIRED_COMMUNICATION = "NoSensorDataImpairedCommunication"
    UNKNOWN = "Unknown"


class OnboardingStatus(str, enum.Enum):
    """Onboarding state; the live API has no "Offboarded" value."""

    ONBOARDED = "Onboarded"
    CAN_BE_ONBOARDED = "CanBeOnboarded"
    UNSUPPORTED = "Unsupported"
    INSUFFICIENT_INFO = "InsufficientInfo"


SUPPORTED_PLATFORMS = frozenset({"Windows11", "Windows10", "WindowsServer2019", "WindowsServer2022", "WindowsServer2025"})
UNIFIED_AGENT_PLATFORMS = frozenset({"WindowsServer2012R2", "WindowsServer2016"})


@dataclass(slots=True)
class Machine:
    """A device in a tenant's inventory, with every field of the live entity."""

    id: str
    tenant_id: str
    computer_dns_name: str
    first_seen: datetime
    last_seen: datetime
    os_platform: str
    os_processor: str | None = "x64"
    version: str | None = None
    os_build: int | None = None
    last_ip_address: str | None = None
    last_external_ip_address: str | None = None
    agent_version: str | None = None
    health_status: str = HealthStatus.ACTIVE.value
    device_value: str = "Normal"
    rbac_group_id: int | None = None
    rbac_group_name: str | None = None
    risk_score: str = "None"
    exposure_level: str = "None"
    is_aad_joined: bool = False
    aad_device_id: str | None = None
    machine_tags: list[str] = field(default_factory=list)
    onboarding_status: str = OnboardingStatus.ONBOARDED.value
    os_architecture: str | None = "64-bit"
    ip_addresses: list[dict] = field(default_factory=list)
    managed_by: str | None = "MicrosoftDefenderForEndpoint"
    managed_by_status: str | None = "Success"
    is_potential_duplication: bool = False
    is_excluded: bool = False
    offboarded_at: datetime | None = None


def normalize_machine_id(raw: str) -> str:
    """Validate a machine id (40 alphanumeric characters) and return it in lowercase.

    Raises InvalidInput for anything else, so a malformed id never reaches storage.
    """
    if not MACHINE_ID_PATTERN.match(raw):
        raise InvalidInput(f"Invalid input {raw!r}: machine id must be 40 alphanumeric characters.")
    return raw.lower()


MAX_DNS_NAME_LENGTH = 255


def check_lookup_name(raw: str) -> str:
    """Validate a machine id or computer DNS name used to look a machine up, and return it.

    Raises InvalidInput for a value no machine can have: longer than a DNS name, or holding
    control characters (NUL among them, which PostgreSQL refuses in text) or lone surrogates.
    """
    if len(raw) > MAX_DNS_NAME_LENGTH or any(ord(ch) < 32 or 0xD800 <= ord(ch) <= 0xDFFF for ch in raw):
        raise InvalidInput("Invalid input: not a machine id or computer DNS name.")
    return raw


def _agent_version_tuple(agent_version: str | None) -> tuple[int, int]:
    if not agent_version:
        return (0, 0)
    parts = agent_version.split(".")
    try:
        return (int(parts[0]), int(parts[1]) if len(parts) > 1 else 0)
    except ValueError:
        return (0, 0)


def ensure_offboard_supported(machine: Machine) -> None:
    """Raise the live API's error if ``machine``'s platform cannot be offboarded by API.

    Windows 11, Windows 10 1703+ and Windows Server 2019+ are supported; Windows Server 2012 R2
    and 2016 need the unified agent; macOS, Linux and everything else are not supported.
    """
    platform = machine.os_platform
    if platform == "Windows10":
        if machine.os_build is not None and machine.os_build < WINDOWS10_MIN_BUILD:
            raise ClientVersionNotSupported("Offboard", "1703 (build 15063)")
        return
    if platform in SUPPORTED_PLATFORMS:
        return
    if platform in UNIFIED_AGENT_PLATFORMS:
        if _agent_version_tuple(machine.agent_version) < UNIFIED_AGENT_MIN:
            raise ClientVersionNotSupported("Offboard", "10.8000 (the unified agent)")
        return
    raise OsPlatformNotSupported(platform)


def ensure_not_offboarded(machine: Machine) -> None:
    """Refuse to offboard a machine that already is: its sensor has stopped and nobody would carry the action out.

    The live service has no code for it; the general ``BadRequest`` is used, with a message saying why.
    """
    if machine.offboarded_at is not None:
        when = machine.offboarded_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        raise BadRequest(
            f"Machine {machine.id} was already offboarded at {when}; its sensor has stopped, so no action would be "
            "carried out. Onboard the device again first."
        )
