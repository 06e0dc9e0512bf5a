"""The audit trail: who asked for what, on which machine, why, and what came of it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bulwark.clock import Clock
from bulwark.domain.access import Principal
from bulwark.service.ports import UnitOfWork


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Facts about the HTTP request that the audit trail keeps."""

    request_id: str
    client_ip: str | None = None


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
        occurred_at=clock.now(),
        tenant_id=principal.tenant_id if principal else tenant_id,
        actor_kind=principal.kind.value if principal else None,
        actor_id=principal.id if principal else None,
        actor_name=principal.name if principal else None,
        action=action,
        machine_id=machine_id,
        machine_action_id=machine_action_id,
        outcome_status=outcome_status,
        outcome_code=outcome_code,
        comment=comment,
        request_id=context.request_id,
        client_ip=context.client_ip,
        details=details,
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
    comment: str | None = None,
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
            comment=comment,
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
