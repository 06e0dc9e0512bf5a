"""Machine inventory routes."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from bulwark.api.deps import CurrentPrincipal, RuntimeDep, odata_base, point_read
from bulwark.api.listing import list_response
from bulwark.api.schemas import ERROR_RESPONSES, ODATA_PARAMETERS, MachineOut
from bulwark.api.wire import action_to_wire, entity_response, machine_to_wire
from bulwark.odata import MACHINE_ACTION_SPEC, MACHINE_SPEC
from bulwark.service.inventory import get_machine, list_actions, list_machines

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
    fetch = lambda query: list_machines(query, principal, runtime.uow(write=False))  # noqa: E731
    return list_response(request, runtime, MACHINE_SPEC, "Machines", fetch, machine_to_wire)


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
