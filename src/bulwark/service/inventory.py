"""Use cases for reading the machine inventory."""

from __future__ import annotations

from bulwark.domain.access import ACTION_PERMISSIONS, READ_PERMISSIONS, Principal, require_any
from bulwark.domain.actions import MachineAction
from bulwark.domain.errors import ResourceNotFound
from bulwark.domain.machines import MACHINE_ID_PATTERN, Machine, check_lookup_name
from bulwark.odata import ODataQuery, Page, StoredMachines
from bulwark.service.ports import PointReads, UnitOfWork


def _find_machine(uow: PointReads, principal: Principal, id_or_dns_name: str) -> Machine | None:
    check_lookup_name(id_or_dns_name)
    machine = None
    if MACHINE_ID_PATTERN.match(id_or_dns_name):
        machine = uow.machines.get(principal, id_or_dns_name.lower())
    return machine or uow.machines.find_by_dns_name(principal, id_or_dns_name)


def get_machine(id_or_dns_name: str, principal: Principal, uow: PointReads) -> Machine:
    """The machine with this id or computer DNS name, if the caller may see it.

    A 40-character alphanumeric value is tried as an id first; anything else (or an id that
    matches nothing) is looked up as a DNS name, case-insensitively, as the live service does.
    """
    require_any(principal, READ_PERMISSIONS)
    with uow:
        machine = _find_machine(uow, principal, id_or_dns_name)
    if machine is None:
        raise ResourceNotFound("Machine", id_or_dns_name)
    return machine


def list_machines(query: ODataQuery, principal: Principal, uow: UnitOfWork) -> Page[Machine]:
    """One page of the machines the caller may see, filtered and ordered by ``query``."""
    require_any(principal, READ_PERMISSIONS)
    with uow:
        return uow.lists.machines(principal, query)


def list_machine_records(query: ODataQuery, principal: Principal, uow: UnitOfWork) -> StoredMachines | Page[Machine]:
    """``list_machines``, as stored values where the store can hand them out (cheaper to render)."""
    require_any(principal, READ_PERMISSIONS)
    with uow:
        stored = uow.lists.stored_machines(principal, query)
        return stored if stored is not None else uow.lists.machines(principal, query)


def list_actions(
    query: ODataQuery, principal: Principal, uow: UnitOfWork, *, machine_id_or_name: str | None = None
) -> Page[MachineAction]:
    """One page of action history on machines the caller may see (of one machine when given)."""
    require_any(principal, READ_PERMISSIONS | ACTION_PERMISSIONS)
    with uow:
        machine_id = None
        if machine_id_or_name is not None:
            machine = _find_machine(uow, principal, machine_id_or_name)
            if machine is None:
                raise ResourceNotFound("Machine", machine_id_or_name)
            machine_id = machine.id
        return uow.lists.actions(principal, query, machine_id=machine_id)


def visible_device_groups(principal: Principal, uow: UnitOfWork) -> list[dict]:
    """The device groups of the caller's tenant that the caller may see, by name (for filters)."""
    require_any(principal, READ_PERMISSIONS)
    with uow:
        groups = uow.device_groups.list(principal.tenant_id)
    return sorted((g for g in groups if principal.sees_group(g["id"])), key=lambda g: g["name"].lower())


def visible_tags(principal: Principal, uow: UnitOfWork) -> list[str]:
    """The tags on machines the caller may see (for filters)."""
    require_any(principal, READ_PERMISSIONS)
    with uow:
        return uow.machines.tags(principal)
