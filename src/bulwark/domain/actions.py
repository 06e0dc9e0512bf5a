"""Machine actions: their types, statuses and the lifecycle that moves them."""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

from bulwark.domain.errors import InvalidInput


class ActionStatus(str, enum.Enum):
    """Where an action is in its lifecycle, spelled as the live API spells it."""

    PENDING = "Pending"
    IN_PROGRESS = "InProgress"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    TIMEOUT = "TimeOut"
    CANCELLED = "Cancelled"

    @property
    def is_final(self) -> bool:
        """Final statuses never change again."""
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset({ActionStatus.SUCCEEDED, ActionStatus.FAILED, ActionStatus.TIMEOUT, ActionStatus.CANCELLED})
ACTIVE_STATUSES = frozenset({ActionStatus.PENDING, ActionStatus.IN_PROGRESS})

# The lifecycle as data: from each status, the statuses it may move to. This table is the only rule
# for status moves: the store's guarded UPDATE takes its allowed-from set from ``allowed_from``.
TRANSITIONS: Mapping[ActionStatus, frozenset[ActionStatus]] = MappingProxyType(
    {
        ActionStatus.PENDING: frozenset({ActionStatus.IN_PROGRESS, ActionStatus.CANCELLED, ActionStatus.TIMEOUT}),
        ActionStatus.IN_PROGRESS: frozenset({ActionStatus.SUCCEEDED, ActionStatus.FAILED, ActionStatus.TIMEOUT}),
        ActionStatus.SUCCEEDED: frozenset(),
        ActionStatus.FAILED: frozenset(),
        ActionStatus.TIMEOUT: frozenset(),
        ActionStatus.CANCELLED: frozenset(),
    }
)


def can_transition(current: ActionStatus, target: ActionStatus) -> bool:
    """Whether the lifecycle allows moving from ``current`` to ``target``."""
    return target in TRANSITIONS[current]


def allowed_from(target: ActionStatus) -> frozenset[ActionStatus]:
    """The statuses from which the lifecycle allows moving to ``target`` (empty for Pending)."""
    return _ALLOWED_FROM[target]


_ALLOWED_FROM: Mapping[ActionStatus, frozenset[ActionStatus]] = MappingProxyType(
    {target: frozenset(s for s, targets in TRANSITIONS.items() if target in targets) for target in ActionStatus}
)


def transition_sources(target: ActionStatus, only_from: ActionStatus | None = None) -> frozenset[ActionStatus]:
    """The statuses a move to ``target`` may start from, narrowed to ``only_from`` when given.

    Raises ValueError when the lifecycle never allows the move (``only_from`` outside the table's
    set, or a target nothing moves to): such a call is a programming error, not a lost race.
    """
    sources = allowed_from(target)
    if only_from is not None:
        if only_from not in sources:
            raise ValueError(f"the lifecycle does not allow {only_from.value} -> {target.value}")
        return frozenset({only_from})
    if not sources:
        raise ValueError(f"the lifecycle allows no move to {target.value}")
    return sources


class ActionType(str, enum.Enum):
    """The machine-action family. Bulwark carries out ``Offboard``; the others are named for filters."""

    OFFBOARD = "Offboard"
    ISOLATE = "Isolate"
    UNISOLATE = "Unisolate"
    RUN_ANTIVIRUS_SCAN = "RunAntiVirusScan"
    COLLECT_INVESTIGATION_PACKAGE = "CollectInvestigationPackage"
    STOP_AND_QUARANTINE_FILE = "StopAndQuarantineFile"
    RESTRICT_CODE_EXECUTION = "RestrictCodeExecution"
    UNRESTRICT_CODE_EXECUTION = "UnrestrictCodeExecution"
    LIVE_RESPONSE = "LiveResponse"


class RequestSource(str, enum.Enum):
    """Where a request came from."""

    PUBLIC_API = "PublicApi"
    PORTAL = "Portal"
    BULK_ACTION = "BulkAction"


@dataclass(slots=True)
class MachineAction:
    """An action requested on one machine, with every field of the live entity."""

    id: str
    tenant_id: str
    type: ActionType
    requestor: str
    requestor_comment: str
    status: ActionStatus
    machine_id: str
    computer_dns_name: str | None
    creation_date_time_utc: datetime
    last_update_date_time_utc: datetime
    title: str | None = None
    cancellation_requestor: str | None = None
    cancellation_comment: str | None = None
    cancellation_date_time_utc: datetime | None = None
    error_h_result: int = 0
    scope: str | None = None
    external_id: str | None = None
    request_source: str = RequestSource.PUBLIC_API.value
    related_file_info: Any = None
    commands: list[Any] = field(default_factory=list)
    troubleshoot_info: Any = None


def normalize_action_id(raw: str) -> str:
    """Validate a machine-action id (a GUID) and return it in canonical lowercase form.

    Raises InvalidInput for anything that is not a GUID.
    """
    try:
        return str(uuid.UUID(raw))
    except (ValueError, AttributeError, TypeError):
        raise InvalidInput(f"Invalid input {raw!r}: machine action id must be a GUID.") from None
