"""The audit trail: who asked for what, on which machine, why, and what came of it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bulwark.clock import Clock
from bulwark.domain.access import READ_PERMISSIONS, Principal
from bulwark.domain.errors import Forbidden
from bulwark.service.ports import UnitOfWork


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Facts about the HTTP request that the audit trail keeps."""

    request_id: str
    client_ip: str | None = None


def audit_values(
    clock: Clock,
    *,
    action: str,
    principal: Principal | None,
    context: RequestContext,
    outcome_status: int,
    outcome_code: str | None = None,
    tenant_id: str | None = None,
    machine_id: str | None = None,
    machine_action_id: str | None = None,
    comment: str | None = None,
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One event's columns, as ``audit_event`` records them (for a repository that writes it with other rows)."""
    return {
        "occurred_at": clock.now(),
        "tenant_id": principal.tenant_id if principal else tenant_id,
        "actor_kind": principal.kind.value if principal else None,
        "actor_id": principal.id if principal else None,
        "actor_name": principal.name if principal else None,
        "action": action,
        "machine_id": machine_id,
        "machine_action_id": machine_action_id,
        "outcome_status": outcome_status,
        "outcome_code": outcome_code,
        "comment": comment,
        "request_id": context.request_id,
        "client_ip": context.client_ip,
        "details": details,
    }


def audit_event(
    uow: UnitOfWork,
    clock: Clock,
    *,
    action: str,
    principal: Principal | None,
    context: RequestContext,
    outcome_status: int,
    outcome_code: str | None = None,
    tenant_id: str | None = None,
    machine_id: str | None = None,
    machine_action_id: str | None = None,
    comment: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Append one event inside the caller's unit of work (the caller commits)."""
    uow.audit.append(
        **audit_values(
            clock,
            action=action,
            principal=principal,
            context=context,
            outcome_status=outcome_status,
            outcome_code=outcome_code,
            tenant_id=tenant_id,
            machine_id=machine_id,
            machine_action_id=machine_action_id,
            comment=comment,
            details=details,
        )
    )


def record_refusal(
    uow: UnitOfWork,
    clock: Clock,
    *,
    action: str,
    principal: Principal | None,
    context: RequestContext,
    outcome_status: int,
    outcome_code: str,
    tenant_id: str | None = None,
    machine_id: str | None = None,
    machine_action_id: str | None = None,
    comment: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Record, in its own transaction, a request that was refused and changed nothing else."""
    with uow:
        audit_event(
            uow,
            clock,
            action=action,
            principal=principal,
            context=context,
            outcome_status=outcome_status,
            outcome_code=outcome_code,
            tenant_id=tenant_id,
            machine_id=machine_id,
            machine_action_id=machine_action_id,
            comment=comment,
            details=details,
        )
        uow.commit()


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """Which audit events to list (every field optional); see ``AuditRepository.list``."""

    tenant_id: str | None = None
    action: str | None = None
    machine_id: str | None = None
    caller: str | None = None
    since: datetime | None = None
    limit: int | None = 100


def list_audit_events(uow: UnitOfWork, query: AuditQuery | None = None) -> list[dict[str, Any]]:
    """The matching audit events, newest first."""
    query = query or AuditQuery()
    with uow:
        return uow.audit.list(
            tenant_id=query.tenant_id,
            limit=query.limit,
            action=query.action,
            machine_id=query.machine_id,
            caller=query.caller,
            since=query.since,
        )


def may_read_audit(principal: Principal) -> bool:
    """Who may read the audit trail: callers whose role manages security settings and who may read devices.

    The trail holds other people's comments and client addresses, so view-only roles do not see
    it; and, like every other read, it shows only events on machines the caller may see (plus
    events on no machine, such as failed sign-ins).
    """
    return principal.can_manage and bool(principal.permissions & {p.value for p in READ_PERMISSIONS})


def search_audit_events(principal: Principal, uow: UnitOfWork, **filters: Any) -> list[dict[str, Any]]:
    """Events the caller may read, newest first, filtered (see ``AuditRepository.search``)."""
    if not may_read_audit(principal):
        raise Forbidden("Reading the audit trail needs a role that manages security settings.")
    with uow:
        return uow.audit.search(principal, **filters)


def audit_action_names(principal: Principal, uow: UnitOfWork) -> list[str]:
    """The event names of the caller's tenant."""
    with uow:
        return uow.audit.action_names(principal.tenant_id)
