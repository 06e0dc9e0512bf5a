"""Machine inventory routes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from bulwark.api.deps import CurrentPrincipal, RuntimeDep, odata_base, point_read
from bulwark.api.listing import list_response
from bulwark.api.schemas import ERROR_RESPONSES, ODATA_PARAMETERS, MachineOut
from bulwark.api.wire import action_to_wire, entity_response, machine_to_wire, stored_machines_to_wire
from bulwark.bootstrap import Runtime
from bulwark.domain.access import Principal
from bulwark.odata import MACHINE_ACTION_SPEC, MACHINE_SPEC, ODataQuery, Page, StoredMachines
from bulwark.service.inventory import get_machine, list_actions, list_machine_records

router = APIRouter(tags=["Machine"])


@router.get(
    "/machines",
    operation_id="listMachines",
    summary="List machines, with OData $filter, $top, $skip, $orderby, $select and $count",
    responses=ERROR_RESPONSES,
    openapi_extra=ODATA_PARAMETERS,
)
def read_machines(request: Request, runtime: RuntimeDep, principal: CurrentPrincipal) -> Response:
    """The machines the caller may see, one page at a time."""
    fetch = lambda query: _machines_on_wire(query, principal, runtime)  # noqa: E731
    return list_response(request, runtime, MACHINE_SPEC, "Machines", fetch, _as_rendered)


def _machines_on_wire(query: ODataQuery, principal: Principal, runtime: Runtime) -> Page[dict[str, Any]]:
    """One page of machines, rendered: from stored values where the store hands them out (SQLite),
    which costs far less than building each machine first, else from the machines."""
    found = list_machine_records(query, principal, runtime.uow(write=False))
    if isinstance(found, StoredMachines):
        items = stored_machines_to_wire(found)
    else:
        items = [machine_to_wire(machine) for machine in found.items]
    return Page(items, found.has_more, found.total, found.next_token)


def _as_rendered(item: dict[str, Any]) -> dict[str, Any]:
    return item


@router.get(
    "/machines/{id}/machineactions",
    operation_id="listMachineActionsOfMachine",
    summary="List the actions of one machine (by id or computer DNS name)",
    responses=ERROR_RESPONSES,
    openapi_extra=ODATA_PARAMETERS,
)
def read_machine_actions(id: str, request: Request, runtime: RuntimeDep, principal: CurrentPrincipal) -> Response:
    """One machine's action history, newest first."""
    fetch = lambda query: list_actions(query, principal, runtime.uow(write=False), machine_id_or_name=id)  # noqa: E731
    return list_response(request, runtime, MACHINE_ACTION_SPEC, "MachineActions", fetch, action_to_wire)


@router.get(
    "/machines/{id}",
    operation_id="getMachine",
    summary="Get a machine by id or computer DNS name",
    response_model=MachineOut,
    responses=ERROR_RESPONSES,
)
async def read_machine(id: str, request: Request, runtime: RuntimeDep, principal: CurrentPrincipal) -> Response:
    """One machine, by its 40-character id or its computer DNS name."""
    machine = await point_read(runtime, get_machine, id, principal)
    return entity_response(f"{odata_base(request, runtime)}#Machines/$entity", machine_to_wire(machine))
