"""The control plane of a test server: simulated device behaviour, injected faults, a moved clock.

Plain values and the limits every control request is checked against. Nothing here is reachable
unless the control API is turned on (``serve --demo`` or ``BULWARK_CONTROL_API=true``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any

# The application role a caller's token must carry to use the control API.
CONTROL_ROLE = "Bulwark.Control"

# Bounds of every number a control request may carry: a test server must not be made to sleep for
# hours, hold unbounded state, or move its clock by centuries.
MAX_BEHAVIOR_DELAY_SECONDS = 600.0
MAX_FAULT_COUNT = 1000
MAX_FAULT_LATENCY_MS = 30_000
MAX_RETRY_AFTER_SECONDS = 3600
MAX_FAULTS = 100
MAX_CLOCK_ADVANCE_SECONDS = 366 * 24 * 3600
MAX_CLOCK_OFFSET_SECONDS = 10 * 366 * 24 * 3600
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
FAULT_STATUSES = (429, 500, 503)
ANY_OPERATION = "*"


class SimulatedOutcome(str, enum.Enum):
    """What a simulated sensor does with its machine's next actions."""

    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    NEVER = "Never"  # never picks them up: they end TimeOut by the normal rules


@dataclass(frozen=True, slots=True)
class Behavior:
    """A machine's simulated behaviour: finish after ``delay_seconds`` with ``outcome``."""

    machine_id: str
    outcome: SimulatedOutcome
    delay_seconds: float = 0.0
    error_h_result: int | None = None

    def to_wire(self) -> dict[str, Any]:
        """The JSON shape, as the control API and the simulated sensor read it."""
        body: dict[str, Any] = {"outcome": self.outcome.value, "delaySeconds": self.delay_seconds}
        if self.outcome is SimulatedOutcome.FAILED:
            body["errorHResult"] = self.error_h_result
        return body


@dataclass(frozen=True, slots=True)
class Fault:
    """An injected fault: matching API calls answer ``status`` (or are delayed by ``latency_ms``).

    ``remaining`` counts the calls still to fault (None: until removed); ``probability`` makes each
    matching call fault only by chance.
    """

    id: str
    operation: str
    status: int | None
    latency_ms: int | None
    retry_after_seconds: int | None
    remaining: int | None
    probability: float | None
    created_at: datetime

    def matches(self, operation: str) -> bool:
        """Whether a call of ``operation`` is one this fault aims at."""
        return self.operation in (ANY_OPERATION, operation)

    def to_wire(self) -> dict[str, Any]:
        """The JSON shape the control API answers."""
        return {
            "id": self.id,
            "operation": self.operation,
            "status": self.status,
            "latencyMs": self.latency_ms,
            "retryAfterSeconds": self.retry_after_seconds,
            "remaining": self.remaining,
            "probability": self.probability,
            "createdDateTimeUtc": self.created_at.isoformat().replace("+00:00", "Z"),
        }


@dataclass(frozen=True, slots=True)
class ControlSnapshot:
    """What each request reads once: the clock offset, the reset epoch, and the active faults."""

    clock_offset_seconds: float = 0.0
    reset_epoch: int = 0
    faults: tuple[Fault, ...] = ()
