"""Shared set-up for the use-case unit tests: callers, machines and a tenant in a fake unit of work."""

from __future__ import annotations

from datetime import UTC, datetime

from bulwark.domain.access import Permission, Principal, PrincipalKind
from bulwark.domain.machines import Machine
from bulwark.service.audit_trail import RequestContext
from tests.conftest import TENANT, make_machine
from tests.unit.fakes import FakeUnitOfWorkFactory

CONTEXT = RequestContext(request_id="req-1", client_ip="192.0.2.10")

APP = Principal(
    tenant_id=TENANT,
    kind=PrincipalKind.APPLICATION,
    id="app-1",
    name="Automation",
    permissions=frozenset({Permission.MACHINE_OFFBOARD.value, Permission.MACHINE_READ_ALL.value}),
)


def user(*, groups: frozenset[int] | None = frozenset(), can_manage: bool = True, ungrouped: bool = False) -> Principal:
    """A user holding the offboard permission who sees only ``groups`` (and ungrouped machines if asked)."""
    return Principal(
        tenant_id=TENANT,
        kind=PrincipalKind.USER,
        id="user-1",
        name="analyst@contoso.com",
        permissions=frozenset({Permission.MACHINE_OFFBOARD.value}),
        device_group_ids=groups,
        include_ungrouped=ungrouped,
        can_manage=can_manage,
    )


def with_tenant(uow: FakeUnitOfWorkFactory, *machines: Machine) -> FakeUnitOfWorkFactory:
    """Add the tenant and ``machines`` as committed data."""
    with uow() as work:
        work.tenants.add(TENANT, "Contoso", datetime(2026, 1, 1, tzinfo=UTC))
        work.machines.add_many(machines)
        work.commit()
    return uow


__all__ = ["APP", "CONTEXT", "TENANT", "make_machine", "user", "with_tenant"]
