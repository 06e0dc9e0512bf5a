"""Use cases of the control plane: behaviours, faults, the clock, reset, and the request log.

Every change is audited in the transaction that makes it. The control API is a test server's
tool: nothing here runs unless it is turned on.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bulwark.clock import Clock, OffsetClock
from bulwark.domain.access import Principal
from bulwark.domain.control import (
    MAX_CLOCK_OFFSET_SECONDS,
    MAX_FAULTS,
    Behavior,
    ControlSnapshot,
    Fault,
    SimulatedOutcome,
)
from bulwark.domain.errors import InvalidInput, ResourceNotFound
from bulwark.domain.sensors import SensorIdentity
from bulwark.service.actions import SweepPolicy, SweepResult, sweep
from bulwark.service.audit_trail import RequestContext, audit_event
from bulwark.service.demo import DEMO_TENANT_NAME, add_demo_machines
from bulwark.service.ports import UnitOfWork


@dataclass
class ControlPlane:
    """A server process's side of the control plane: its moved clock and the operations faults may name."""

    clock: OffsetClock
    request_log_size: int
    operations: frozenset[str] = field(default_factory=frozenset)

    def apply_offset(self, seconds: float) -> None:
        """Move this process's clock to ``seconds`` ahead of real time."""
        self.clock.offset_seconds = seconds


def _audit(uow: UnitOfWork, clock: Clock, principal: Principal, context: RequestContext, action: str, **extra: Any) -> None:
    audit_event(uow, clock, action=f"control.{action}", principal=principal, context=context, outcome_status=200, **extra)


# --- behaviours ---


@dataclass(frozen=True, slots=True)
class SetBehavior:
    """What a machine's simulated sensor should do with its next actions."""

    machine_id: str
    outcome: SimulatedOutcome
    delay_seconds: float = 0.0
    error_h_result: int | None = None


def _machine_in_tenant(uow: UnitOfWork, principal: Principal, machine_id: str) -> str:
    if len(machine_id) > 64:  # no machine id is this long; do not echo it back whole
        raise ResourceNotFound("Machine", machine_id[:64])
    machine = uow.machines.get_in_tenant(principal.tenant_id, machine_id.lower(), lock=False)
    if machine is None:
        raise ResourceNotFound("Machine", machine_id)
    return machine.id


def set_behavior(command: SetBehavior, principal: Principal, uow: UnitOfWork, clock: Clock, context: RequestContext) -> Behavior:
    """Replace the machine's behaviour (a machine of the caller's tenant)."""
    with uow:
        machine_id = _machine_in_tenant(uow, principal, command.machine_id)
        behavior = Behavior(machine_id, command.outcome, command.delay_seconds, command.error_h_result)
        uow.control.set_behavior(behavior, clock.now())
        _audit(uow, clock, principal, context, "behavior.set", machine_id=machine_id, details=behavior.to_wire())
        uow.commit()
    return behavior


def get_behavior(machine_id: str, principal: Principal, uow: UnitOfWork) -> Behavior | None:
    """The machine's behaviour, or None when it has the default."""
    with uow:
        return uow.control.get_behavior(_machine_in_tenant(uow, principal, machine_id))


def clear_behavior(machine_id: str, principal: Principal, uow: UnitOfWork, clock: Clock, context: RequestContext) -> str:
    """Give the machine back its default behaviour; return its id."""
    with uow:
        machine_id = _machine_in_tenant(uow, principal, machine_id)
        removed = uow.control.delete_behavior(machine_id)
        _audit(uow, clock, principal, context, "behavior.cleared", machine_id=machine_id, details={"removed": removed})
        uow.commit()
    return machine_id


def machine_behavior(sensor: SensorIdentity, uow: UnitOfWork) -> Behavior | None:
    """The simulated behaviour of the sensor's machine, read when it is about to be handed an action."""
    with uow:
        return uow.control.get_behavior(sensor.machine_id)


# --- faults ---


@dataclass(frozen=True, slots=True)
class AddFault:
    """A fault for the next matching API calls: a status (429/500/503) or a delay."""

    operation: str
    status: int | None = None
    latency_ms: int | None = None
    retry_after_seconds: int | None = None
    count: int | None = None
    probability: float | None = None


def add_fault(command: AddFault, principal: Principal, uow: UnitOfWork, clock: Clock, context: RequestContext) -> Fault:
    """Store a fault; every server process applies it from its next request on."""
    fault = Fault(
        id=str(uuid.uuid4()),
        operation=command.operation,
        status=command.status,
        latency_ms=command.latency_ms,
        retry_after_seconds=command.retry_after_seconds,
        remaining=command.count,
        probability=command.probability,
        created_at=clock.now(),
    )
    with uow:
        if uow.control.count_faults() >= MAX_FAULTS:
            raise InvalidInput(f"Invalid input: at most {MAX_FAULTS} faults at once; remove some first.")
        uow.control.add_fault(fault)
        _audit(uow, clock, principal, context, "fault.added", details=fault.to_wire())
        uow.commit()
    return fault


def list_faults(uow: UnitOfWork) -> list[Fault]:
    """Every active fault, oldest first."""
    with uow:
        return uow.control.list_faults()


def remove_fault(fault_id: str, principal: Principal, uow: UnitOfWork, clock: Clock, context: RequestContext) -> None:
    """Remove a fault; ResourceNotFound when there is none by that id."""
    with uow:
        if not uow.control.delete_fault(fault_id):
            raise ResourceNotFound("Fault", fault_id)
        _audit(uow, clock, principal, context, "fault.removed", details={"id": fault_id})
        uow.commit()


def choose_fault(
    snapshot: ControlSnapshot, operation: str, uow: UnitOfWork, chance: Callable[[], float] = random.random
) -> Fault | None:
    """The fault this call of ``operation`` meets, if any; spends one call of a counted fault.

    Faults are tried oldest first. A counted fault is spent with a guarded decrement, so across
    processes exactly ``count`` calls meet it; a probabilistic one draws for each call.
    """
    for fault in snapshot.faults:
        if not fault.matches(operation):
            continue
        if fault.probability is not None and chance() >= fault.probability:
            continue
        if fault.remaining is not None:
            with uow:
                taken = uow.control.take_fault(fault.id)
                uow.commit()
            if not taken:
                continue
        return fault
    return None


# --- clock, reset, snapshot ---


def load_snapshot(uow: UnitOfWork) -> ControlSnapshot:
    """The clock offset, reset epoch and active faults (one read per request)."""
    with uow:
        return uow.control.snapshot()


def clock_state(uow: UnitOfWork) -> tuple[float, int]:
    """(clock offset in seconds, reset epoch)."""
    with uow:
        return uow.control.state()


@dataclass(frozen=True, slots=True)
class ClockAdvanced:
    """The clock's new offset and what the sweep it triggered did."""

    offset_seconds: float
    swept: SweepResult


def advance_clock(
    seconds: float,
    principal: Principal,
    uow: UnitOfWork,
    clock: Clock,
    context: RequestContext,
    *,
    policy: SweepPolicy,
    apply_offset: Callable[[float], None],
) -> ClockAdvanced:
    """Move the server's clock forward by ``seconds`` for every process, then sweep at once.

    ``apply_offset`` sets this process's clock before the sweep, so timeouts are judged at the
    new time; other processes read the offset from the database on their next request.
    """
    with uow:
        offset, _ = uow.control.state()
        if offset + seconds > MAX_CLOCK_OFFSET_SECONDS:
            raise InvalidInput(f"Invalid input seconds: the clock may run at most {MAX_CLOCK_OFFSET_SECONDS} seconds ahead.")
        offset = uow.control.advance_clock(seconds)
        apply_offset(offset)
        _audit(uow, clock, principal, context, "clock.advanced", details={"seconds": seconds, "offsetSeconds": offset})
        uow.commit()
    return ClockAdvanced(offset, sweep(policy, uow, clock))


def reset_fleet(
    principal: Principal,
    uow: UnitOfWork,
    clock: Clock,
    context: RequestContext,
    *,
    demo_tenant_id: str,
    demo_machine_count: int,
    apply_offset: Callable[[float], None],
) -> int:
    """Back to the freshly seeded demo fleet, in one transaction; return the new reset epoch.

    Actions, audit events, enrolments, machines, behaviours, faults, the request log and the clock
    offset go; tenants, device groups, applications, users, keys and onboarding packages stay, so
    tokens and the demo devices' onboarding keep working. The demo fleet is seeded again as it
    was, and the reset itself is the first event of the new audit trail.
    """
    with uow:
        epoch = uow.control.wipe_fleet()
        apply_offset(0.0)
        if not uow.tenants.exists(demo_tenant_id):
            uow.tenants.add(demo_tenant_id, DEMO_TENANT_NAME, clock.now())
        fleet = add_demo_machines(uow, clock, demo_tenant_id, count=demo_machine_count)
        _audit(uow, clock, principal, context, "reset", details={"epoch": epoch, "machines": len(fleet)})
        uow.commit()
    return epoch


# --- request log ---


def record_request(uow: UnitOfWork, clock: Clock, *, keep: int, **values: Any) -> None:
    """Append one API call to the bounded log (timestamped with the server's clock)."""
    with uow:
        uow.control.record_request(keep=keep, occurred_at=clock.now(), **values)
        uow.commit()


def list_requests(uow: UnitOfWork, operation: str | None, limit: int) -> list[dict[str, Any]]:
    """The newest recorded calls, newest first."""
    with uow:
        return uow.control.list_requests(operation, limit)
