"""Typed views of the MachineAction and Machine entities as the API sends them."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.alias_generators import to_camel


def _assume_utc(value: datetime) -> datetime:
    # The service writes UTC; a timestamp without an offset is still UTC, and an aware value
    # compares safely with datetime.now(UTC) in user code.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_assume_utc)]

# Some payloads carry null where an empty array is meant; both read as an empty list.
_NullAsEmpty = BeforeValidator(lambda value: [] if value is None else value)


class ActionStatus(StrEnum):
    """Where a machine action is in its lifecycle; the last four never change again."""

    PENDING = "Pending"
    IN_PROGRESS = "InProgress"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    TIME_OUT = "TimeOut"
    CANCELLED = "Cancelled"

    @property
    def is_final(self) -> bool:
        """Whether the action has finished (successfully or not) and will not change."""
        return self not in (ActionStatus.PENDING, ActionStatus.IN_PROGRESS)


class _WireModel(BaseModel):
    # camelCase on the wire, snake_case in Python; fields the SDK does not know yet are kept
    # (in model_extra) rather than rejected, so a newer server does not break older clients.
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="allow",
        frozen=True,
    )


class MachineAction(_WireModel):
    """An action requested on a machine (offboard, isolate, ...) and its progress."""

    # Declared in the order the live service emits the fields.
    id: str
    type: str
    title: str | None = None
    requestor: str | None = None
    requestor_comment: str | None = None
    status: ActionStatus
    machine_id: str | None = None
    computer_dns_name: str | None = None
    creation_date_time_utc: UtcDatetime | None = None
    last_update_date_time_utc: UtcDatetime | None = None
    cancellation_requestor: str | None = None
    cancellation_comment: str | None = None
    cancellation_date_time_utc: UtcDatetime | None = None
    error_h_result: int = 0
    scope: str | None = None
    external_id: str | None = None
    request_source: str | None = None
    related_file_info: Any = None
    commands: Annotated[list[Any], _NullAsEmpty] = Field(default_factory=list)
    troubleshoot_info: Any = None


class Machine(_WireModel):
    """A device known to the service, as listed in the machine inventory."""

    id: str
    computer_dns_name: str | None = None
    first_seen: UtcDatetime | None = None
    last_seen: UtcDatetime | None = None
    os_platform: str | None = None
    os_processor: str | None = None
    version: str | None = None
    os_build: int | None = None
    last_ip_address: str | None = None
    last_external_ip_address: str | None = None
    agent_version: str | None = None
    health_status: str | None = None
    device_value: str | None = None
    rbac_group_id: int | None = None
    rbac_group_name: str | None = None
    risk_score: str | None = None
    exposure_level: str | None = None
    is_aad_joined: bool | None = None
    aad_device_id: str | None = None
    machine_tags: Annotated[list[str], _NullAsEmpty] = Field(default_factory=list)
    onboarding_status: str | None = None
    os_architecture: str | None = None
    ip_addresses: Annotated[list[Any], _NullAsEmpty] = Field(default_factory=list)
    managed_by: str | None = None
    managed_by_status: str | None = None
    is_potential_duplication: bool | None = None
    is_excluded: bool | None = None
