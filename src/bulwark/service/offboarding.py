"""Use cases for offboarding machines and reading actions."""

from __future__ import annotations

from dataclasses import dataclass

from bulwark.clock import Clock
from bulwark.domain.access import ACTION_PERMISSIONS, OFFBOARD_RULE, READ_PERMISSIONS, Principal, require_any
from bulwark.domain.actions import ActionStatus, ActionType, MachineAction, RequestSource, normalize_action_id
from bulwark.domain.errors import MdeError, ResourceNotFound
from bulwark.domain.machines import ensure_not_offboarded, ensure_offboard_supported, normalize_machine_id
from bulwark.ids import new_uuid
from bulwark.service.audit_trail import RequestContext, audit_values
from bulwark.service.ports import PointReads, UnitOfWork

OFFBOARD_AUDIT_ACTION = "machine_action.offboard.requested"


@dataclass(frozen=True, slots=True)
class RequestOffboard:
    """A caller's request to offboard one machine."""

    machine_id: str
    comment: str
    external_id: str | None = None
    title: str | None = None
    request_source: str | None = None


def prepare_offboard(command: RequestOffboard, principal: Principal, uow: UnitOfWork) -> None:
    """Announce the read ``request_offboard`` will make, so that a store running many offboards
    together (a group-commit batch) can fetch their machines at once. Checks and changes nothing."""
    uow.machines.read_ahead(principal, normalize_machine_id(command.machine_id))


def request_offboard(
    command: RequestOffboard, principal: Principal, uow: UnitOfWork, clock: Clock, context: RequestContext
) -> MachineAction:
    """Create a Pending Offboard action for a machine the caller may see and manage.

    Checks, in the live service's order: permission, id shape, existence and device-group access
    (both answered as not found so that group membership does not leak), the user's role, the
    platform, and an already active offboard. That last check is the database's: a unique index
    refuses a second active action, so concurrent requests create exactly one, with no read-then-
    write window. The action and its audit event are written together (or neither) and commit
    together.

    Every refusal comes before anything is written, and the database's refusal is no error in the
    transaction (``add_with_event``): so this use case may run in a group-commit batch without a
    savepoint of its own (``GroupCommitter.run(..., savepoint=False)``). Its one write is its last
    step and its refusal is not caught, so such a batch may also send it with its other members'
    and learn the refusal afterwards (``defer_refusals=True``).
    """
    OFFBOARD_RULE.check_caller(principal)
    machine_id = normalize_machine_id(command.machine_id)
    with uow:
        machine = uow.machines.get(principal, machine_id, with_tags=False)
        if machine is None:
            raise ResourceNotFound("Machine", command.machine_id)
        try:
            OFFBOARD_RULE.check_role(principal)
            ensure_offboard_supported(machine)
            ensure_not_offboarded(machine)
        except MdeError as refused:
            raise refused.about(machine.id) from None
        now = clock.now()
        action = MachineAction(
            id=new_uuid(),
            tenant_id=principal.tenant_id,
            type=ActionType.OFFBOARD,
            title=command.title,
            requestor=principal.name,
            requestor_comment=command.comment,
            status=ActionStatus.PENDING,
            machine_id=machine.id,
            computer_dns_name=machine.computer_dns_name,
            creation_date_time_utc=now,
            last_update_date_time_utc=now,
            external_id=command.external_id,
            request_source=command.request_source or RequestSource.PUBLIC_API.value,
        )
        event = audit_values(
            clock,
            action=OFFBOARD_AUDIT_ACTION,
            principal=principal,
            context=context,
            outcome_status=200,
            machine_id=machine.id,
            machine_action_id=action.id,
            comment=command.comment,
        )
        uow.actions.add_with_event(action, event, requestor_id=principal.id)
        uow.commit()
    return action


def get_action(action_id: str, principal: Principal, uow: PointReads) -> MachineAction:
    """The action with ``action_id`` if the caller may read it (action or read permission)."""
    require_any(principal, READ_PERMISSIONS | ACTION_PERMISSIONS)
    with uow:
        action = uow.actions.get_visible(principal, normalize_action_id(action_id))
    if action is None:
        raise ResourceNotFound("MachineAction", action_id)
    return action
