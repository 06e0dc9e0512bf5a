"""Machine inventory routes."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from bulwark.api.deps import CurrentPrincipal, RuntimeDep, odata_base
from bulwark.api.schemas import ERROR_RESPONSES
from bulwark.api.wire import entity_response, machine_to_wire
from bulwark.service.inventory import get_machine

router = APIRouter(tags=["Machine"])


@router.get(
    "/machines/{id}",
    operation_id="getMachine",
    summary="Get a machine by id or computer DNS name",
    responses=ERROR_RESPONSES,
)
def read_machine(id: str, request: Request, runtime: RuntimeDep, principal: CurrentPrincipal) -> Response:
    """One machine, by its 40-character id or its computer DNS name."""
    machine = get_machine(id, principal, runtime.uow(write=False))
    return entity_response(f"{odata_base(request, runtime)}#Machines/$entity", machine_to_wire(machine))
