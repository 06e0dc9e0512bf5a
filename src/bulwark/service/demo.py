"""A realistic demo fleet: one tenant, several device groups, every platform the rules know."""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass
from datetime import timedelta

from bulwark.clock import Clock
from bulwark.domain.machines import HealthStatus, Machine
from bulwark.domain.sensors import derive_machine_id
from bulwark.service.ports import UnitOfWork

DEMO_TENANT_NAME = "Contoso"
DEMO_DOMAIN = "contoso.com"
DEMO_GROUPS = ["Workstations", "Servers", "Finance", "Engineering", "Ungrouped-lab"]

# (platform, version, build, agent version, weight): mostly offboardable Windows, plus the
# platforms and versions the rules refuse, so every answer of the API can be seen on the demo.
_PLATFORMS = [
    ("Windows11", "23H2", 22631, "10.8760.22631.1000", 30),
    ("Windows11", "22H2", 22621, "10.8750.22621.1000", 10),
    ("Windows10", "22H2", 19045, "10.8760.19045.1000", 25),
    ("Windows10", "1709", 16299, "10.8500.16299.1000", 3),
    ("Windows10", "1607", 14393, "10.3720.14393.1000", 3),
    ("WindowsServer2022", "21H2", 20348, "10.8760.20348.1000", 8),
    ("WindowsServer2019", "1809", 17763, "10.8760.17763.1000", 8),
    ("WindowsServer2016", "1607", 14393, "10.8760.14393.1000", 3),
    ("WindowsServer2016", "1607", 14393, "10.3720.14393.1000", 2),
    ("WindowsServer2012R2", "6.3", 9600, "10.8760.9600.1000", 2),
    ("WindowsServer2012R2", "6.3", 9600, "10.3720.9600.1000", 2),
    ("macOS", "14.5", None, "101.24052.0001", 3),
    ("Linux", "Ubuntu 22.04", None, "101.24052.0002", 3),
]
# Machine 0 is always a Windows 11 workstation, so the example printed at start can be offboarded.
DEMO_EXAMPLE_NAME = "ws-0000"
_PREFIXES = {"Windows11": "ws", "Windows10": "ws", "macOS": "mac", "Linux": "lnx"}


@dataclass(frozen=True)
class DemoFleet:
    """What ``seed_demo_fleet`` created."""

    tenant_id: str
    machine_count: int
    example_machine_id: str
    example_dns_name: str
    created: bool


def demo_machine_id(tenant_id: str, name: str) -> str:
    """A stable 40-hex machine id for a demo device."""
    return hashlib.sha1(f"{tenant_id}/{name}".encode()).hexdigest()


def seed_demo_fleet(uow: UnitOfWork, clock: Clock, tenant_id: str, *, count: int = 300, seed: int = 7) -> DemoFleet:
    """Create the demo tenant and fleet unless the tenant already has machines (then report it)."""
    with uow:
        if not uow.tenants.exists(tenant_id):
            uow.tenants.add(tenant_id, DEMO_TENANT_NAME, clock.now())
        existing = uow.machines.count(tenant_id)
        if existing:
            example = DEMO_EXAMPLE_NAME
            return DemoFleet(tenant_id, existing, demo_machine_id(tenant_id, example), f"{example}.{DEMO_DOMAIN}", False)
        fleet = add_demo_machines(uow, clock, tenant_id, count=count, seed=seed)
        uow.commit()
    first = fleet[0]
    return DemoFleet(tenant_id, len(fleet), first.id, first.computer_dns_name, True)


def add_demo_machines(uow: UnitOfWork, clock: Clock, tenant_id: str, *, count: int = 300, seed: int = 7) -> list[Machine]:
    """Insert the demo fleet into the caller's open unit of work (device groups made when missing).

    The same ``count`` and ``seed`` give the same machines, so a reset brings back the fleet a
    test started with.
    """
    rng = random.Random(seed)
    now = clock.now()
    known = {group["name"]: group["id"] for group in uow.device_groups.list(tenant_id)}
    group_ids = [
        known[name] if name in known else uow.device_groups.add(tenant_id, name, f"Demo device group {name}")
        for name in DEMO_GROUPS
    ]
    weights = [p[4] for p in _PLATFORMS]
    fleet: list[Machine] = []
    for index in range(count):
        platform, version, build, agent, _ = _PLATFORMS[0] if index == 0 else rng.choices(_PLATFORMS, weights)[0]
        prefix = _PREFIXES.get(platform, "srv")
        name = f"{prefix}-{index:04d}"
        first_seen = now - timedelta(days=rng.randint(30, 900), seconds=rng.randint(0, 86_399))
        last_seen = now - timedelta(minutes=rng.randint(0, 60 * 24 * 3))
        ip = f"10.{rng.randint(0, 20)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
        group = None if index % 17 == 0 else rng.choice(group_ids if prefix == "srv" else group_ids[:1] + group_ids[2:])
        tags = rng.sample(["VIP", "Finance", "Kiosk", "Lab", "Pilot", "Legacy"], rng.randint(0, 2))
        fleet.append(
            Machine(
                id=demo_machine_id(tenant_id, name),
                tenant_id=tenant_id,
                computer_dns_name=f"{name}.{DEMO_DOMAIN}",
                first_seen=first_seen,
                last_seen=last_seen,
                os_platform=platform,
                version=version,
                os_build=build,
                last_ip_address=ip,
                last_external_ip_address=f"203.0.113.{rng.randint(1, 254)}",
                agent_version=agent,
                health_status=rng.choices(["Active", "Inactive", "ImpairedCommunication", "NoSensorData"], [85, 9, 3, 3])[0],
                device_value=rng.choices(["Normal", "Low", "High"], [80, 10, 10])[0],
                rbac_group_id=group,
                risk_score=rng.choice(["None", "Informational", "Low", "Medium", "High"]),
                exposure_level=rng.choice(["None", "Low", "Medium", "High"]),
                is_aad_joined=platform.startswith("Windows1"),
                aad_device_id=None,
                machine_tags=tags,
                os_architecture="64-bit",
                ip_addresses=[
                    {
                        "ipAddress": ip,
                        "macAddress": f"00155D{rng.randint(0, 0xFFFFFF):06X}",
                        "type": "Ethernet",
                        "operationalStatus": "Up",
                    }
                ],
            )
        )
    uow.machines.add_many(fleet)
    return fleet


def demo_sensor_names(uow: UnitOfWork, tenant_id: str) -> list[str]:
    """The device names of the tenant's active demo machines, for simulated sensors to enrol as.

    Only the demo fleet's own machines: their ids are what enrolling their names derives, so each
    simulated sensor enrols as its machine. Other machines of the tenant get none.
    """
    with uow:
        machines = uow.machines.ids_and_dns_names(tenant_id, HealthStatus.ACTIVE.value)
    # Devices enrolled by `bulwark sensor run` or `sensor fleet` also have ids derived from their
    # names; only the demo fleet's naming (ws-0000.contoso.com, ...) marks a demo machine.
    names = [(machine_id, name) for machine_id, dns in machines if (name := _demo_name(dns)) is not None]
    return [name for machine_id, name in names if derive_machine_id(tenant_id, name) == machine_id]


_DEMO_NAME = re.compile(rf"^((?:{'|'.join(sorted(set(_PREFIXES.values()) | {'srv'}))})-\d{{4}})\.{re.escape(DEMO_DOMAIN)}$")


def _demo_name(dns_name: str) -> str | None:
    match = _DEMO_NAME.match(dns_name)
    return match.group(1) if match else None
