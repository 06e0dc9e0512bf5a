"""Use cases that end actions: cancel by a caller, and the sweeper that times them out."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from bulwark.clock import Clock
from bulwark.domain.access import ACTION_PERMISSIONS, Principal, require_any
from bulwark.domain.actions import ActionStatus, MachineAction, normalize_action_id
from bulwark.domain.errors import BadRequest, ResourceNotFound
from bulwark.service.audit_trail import RequestContext, audit_event
from bulwark.service.ports import UnitOfWork

CANCEL_AUDIT_ACTION = "machine_action.cancel.requested"


class ActionCannotBeCancelled(BadRequest):
    """The action is final, or already being carried out by its device."""

    code = "BadRequest"


@dataclass(frozen=True, slots=True)
class CancelAction:
    """A caller's request to cancel one action."""

    action_id: str
    comment: str


def cancel_action(
    command: CancelAction, principal: Principal, uow: UnitOfWork, clock: Clock, context: RequestContext
) -> MachineAction:
    """Cancel an action the caller may see, if no device has claimed it yet.

    Any action permission allows it. The lifecycle allows Cancelled only from Pending, and the move
    is a guarded transition, so against a sensor claiming the same action exactly one of them wins:
    a claimed action is carried out and reported, a cancelled one is never handed to a device.
    """
    require_any(principal, ACTION_PERMISSIONS)
    action_id = normalize_action_id(command.action_id)
    with uow:
        action = uow.actions.get_visible(principal, action_id)
        if action is None:
            raise ResourceNotFound("MachineAction", command.action_id)
        now = clock.now()
        won = uow.actions.transition(
            action_id,
            ActionStatus.CANCELLED,
            at=now,
            cancellation_requestor=principal.name,
            cancellation_comment=command.comment,
            cancellation_date_time_utc=now,
        )
        if not won:
            current = uow.actions.get(principal.tenant_id, action_id)
            status = current.status if current else action.status
            if status.is_final:
                raise ActionCannotBeCancelled(f"Action {action_id} is already in final state {status.value}.")
            raise ActionCannotBeCancelled(f"Action {action_id} is {status.value}: its device is already carrying it out.")
        audit_event(
            uow,
            clock,
            action=CANCEL_AUDIT_ACTION,
            principal=principal,
            context=context,
            outcome_status=200,
            machine_id=action.machine_id,
            machine_action_id=action_id,
            comment=command.comment,
        )
        cancelled = uow.actions.get(principal.tenant_id, action_id)
        uow.commit()
    assert cancelled is not None
    return cancelled


@dataclass(frozen=True, slots=True)
class SweepPolicy:
    """How long actions may wait and run, and when offboarded machines turn Inactive."""

    pickup_timeout: timedelta
    in_progress_timeout: timedelta
    inactive_after_offboard: timedelta


@dataclass(frozen=True, slots=True)
class TimedOutAction:
    """An action a sweep ended as TimeOut."""

    action_id: str
    type: str
    previous_status: ActionStatus


@dataclass(frozen=True, slots=True)
class SweepResult:
    """What one sweep changed."""

    pending_timed_out: int
    in_progress_timed_out: int
    machines_inactive: int
    timed_out: tuple[TimedOutAction, ...] = ()


def sweep(policy: SweepPolicy, uow: UnitOfWork, clock: Clock, *, batch: int = 500) -> SweepResult:
    """End overdue actions as TimeOut and turn long-offboarded machines Inactive.

    Every change is a guarded transition, so sweepers in several processes may run at once: an
    action a sensor claims or a caller cancels meanwhile is simply not counted.
    """
    now = clock.now()
    counts = {ActionStatus.PENDING: 0, ActionStatus.IN_PROGRESS: 0}
    timed_out: list[TimedOutAction] = []
    limits = {
        ActionStatus.PENDING: {"created_before": now - policy.pickup_timeout},
        ActionStatus.IN_PROGRESS: {"updated_before": now - policy.in_progress_timeout},
    }
    for status, cutoff in limits.items():
        while True:
            with uow:
                overdue = uow.actions.overdue(status, limit=batch, **cutoff)
                ended: list[TimedOutAction] = []
                for action_id, action_type in overdue:
                    if uow.actions.transition(action_id, ActionStatus.TIMEOUT, at=now, only_from=status):
                        ended.append(TimedOutAction(action_id, action_type, status))
                        audit_event(
                            uow,
                            clock,
                            action="machine_action.timed_out",
                            principal=None,
                            context=RequestContext(request_id=""),
                            outcome_status=200,
                            machine_action_id=action_id,
                            details={"from": status.value},
                        )
                uow.commit()
            counts[status] += len(ended)
            timed_out.extend(ended)
            if len(overdue) < batch:
                break
    with uow:
        inactive = uow.machines.mark_inactive_offboarded_before(now - policy.inactive_after_offboard)
        uow.commit()
    return SweepResult(counts[ActionStatus.PENDING], counts[ActionStatus.IN_PROGRESS], inactive, tuple(timed_out))
