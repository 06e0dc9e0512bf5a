"""Use cases for reading the machine inventory."""

from __future__ import annotations

from bulwark.domain.access import READ_PERMISSIONS, Principal, require_any
from bulwark.domain.errors import ResourceNotFound
from bulwark.domain.machines import MACHINE_ID_PATTERN, Machine
from bulwark.service.uow import UnitOfWork


def get_machine(id_or_dns_name: str, principal: Principal, uow: UnitOfWork) -> Machine:
    """The machine with this id or computer DNS name, if the caller may see it.

    A 40-character alphanumeric value is tried as an id first; anything else (or an id that
    matches nothing) is looked up as a DNS name, case-insensitively, as the live service does.
    """
    require_any(principal, READ_PERMISSIONS)
    with uow:
        machine = None
        if MACHINE_ID_PATTERN.match(id_or_dns_name):
            machine = uow.machines.get(principal, id_or_dns_name.lower())
        if machine is None:
            machine = uow.machines.find_by_dns_name(principal, id_or_dns_name)
    if machine is None:
        raise ResourceNotFound("Machine", id_or_dns_name)
    return machine
