"""Machine-action routes: offboard a machine, read an action."""

from __future__ import annotations

import logging
from functools import partial

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from bulwark.api.deps import CurrentPrincipal, RequestContextDep, RuntimeDep, odata_base, point_read
from bulwark.api.listing import list_response
from bulwark.api.request_state import request_state
from bulwark.api.schemas import (
    ERROR_RESPONSES,
    ODATA_PARAMETERS,
    WRITE_RESPONSES,
    CommentBody,
    MachineActionOut,
    OffboardBody,
    parse_body,
)
from bulwark.api.wire import action_to_wire, entity_response
from bulwark.domain.actions import MachineAction
from bulwark.domain.errors import PayloadTooLarge, UnsupportedMediaType
from bulwark.odata import MACHINE_ACTION_SPEC
from bulwark.service.actions import CancelAction, cancel_action
from bulwark.service.inventory import list_actions
from bulwark.service.offboarding import RequestOffboard, get_action, prepare_offboard, request_offboard

router = APIRouter(tags=["MachineAction"])
log = logging.getLogger("bulwark.actions")

_COMMENT_BODY_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["Comment"],
                    "properties": {
                        "Comment": {"type": "string", "description": "Why the machine is offboarded."},
                        "ExternalId": {"type": "string", "nullable": True},
                        "Title": {"type": "string", "nullable": True},
                        "RequestSource": {"type": "string", "nullable": True},
                    },
                },
                "example": {"Comment": "Offboard machine by automation"},
            }
        },
    }
}


def require_json(request: Request) -> None:
    """Accept a JSON body, or one sent with no Content-Type; refuse any other type with 415.

    curl without ``-H`` sends ``application/x-www-form-urlencoded``, so the message says what to send.
    """
    declared = request.headers.get("content-type")
    if declared is None or not declared.strip():
        return
    media_type = declared.split(";", 1)[0].strip().lower()
    if media_type == "application/json" or (media_type.startswith("application/") and media_type.endswith("+json")):
        return
    shown = "".join(ch if ch.isprintable() else "?" for ch in media_type)[:100]
    raise UnsupportedMediaType(
        f"Unsupported Content-Type '{shown}': send the body as JSON with the header 'Content-Type: application/json' "
        """(with curl: -H 'Content-Type: application/json' -d '{"Comment": "..."}')."""
    )


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused as soon as it grows past ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"The request body is larger than {limit} bytes.")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The request body is larger than {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


def _machine_of(action: MachineAction) -> str:
    """Whose sensor to wake for a new action."""
    return action.machine_id


@router.post(
    "/machines/{id}/offboard",
    operation_id="offboardMachine",
    summary="Offboard device from Defender for Endpoint",
    description="Offboards a device, stopping the sensor service but not removing registry information.",
    response_model=MachineActionOut,
    responses=WRITE_RESPONSES,
    openapi_extra=_COMMENT_BODY_SCHEMA,
)
async def offboard_machine(
    id: str, request: Request, runtime: RuntimeDep, principal: CurrentPrincipal, context: RequestContextDep
) -> Response:
    """Create a Pending Offboard action; the device's sensor carries it out."""
    settings = runtime.settings
    require_json(request)
    raw = await read_body(request, settings.max_body_bytes)
    body = parse_body(raw, OffboardBody, max_comment_length=settings.max_comment_length)
    request_state(request).remember_comment(body.Comment)
    command = RequestOffboard(
        machine_id=id,
        comment=body.Comment or "",
        external_id=body.ExternalId,
        title=body.Title,
        request_source=body.RequestSource,
    )
    # Answered once the action and its audit event are committed, together with the other
    # offboards queued meanwhile (store/group_commit.py), and the machine's sensor is woken.
    # request_offboard refuses only before it writes, and writes last: it needs no savepoint in the
    # batch, and on PostgreSQL its read and write share round trips with the batch's others.
    action = await runtime.writer.run(
        partial(request_offboard, command, principal, clock=runtime.clock, context=context),
        wake=_machine_of,
        savepoint=False,
        prepare=partial(prepare_offboard, command, principal),
        defer_refusals=True,
    )
    runtime.metrics.actions_created.labels(action.type.value).inc()
    log.info(
        "offboard requested: action %s machine %s (%s) by %s",
        action.id,
        action.machine_id,
        action.computer_dns_name,
        principal.name,
        extra={
            "action_id": action.id,
            "machine_id": action.machine_id,
            "caller": principal.name,
            "request_id": context.request_id,
        },
    )
    return entity_response(
        f"{odata_base(request, runtime)}#MachineActions/$entity", action_to_wire(action), settings.offboard_status_code
    )


@router.post(
    "/machineactions/{id}/cancel",
    operation_id="cancelMachineAction",
    summary="Cancel a machine action that is not yet final",
    description="Cancels an action no device has claimed yet; answers the same action with status Cancelled.",
    response_model=MachineActionOut,
    responses=WRITE_RESPONSES,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"type": "object", "required": ["Comment"], "properties": {"Comment": {"type": "string"}}},
                    "example": {"Comment": "Cancel the offboard: wrong device"},
                }
            },
        }
    },
)
async def cancel_machine_action(
    id: str, request: Request, runtime: RuntimeDep, principal: CurrentPrincipal, context: RequestContextDep
) -> Response:
    """Move a Pending action to Cancelled, with the caller and comment in its cancellation fields."""
    settings = runtime.settings
    require_json(request)
    raw = await read_body(request, settings.max_body_bytes)
    body = parse_body(raw, CommentBody, max_comment_length=settings.max_comment_length)
    request_state(request).remember_comment(body.Comment)
    command = CancelAction(action_id=id, comment=body.Comment or "")
    action = await run_in_threadpool(cancel_action, command, principal, runtime.uow(), runtime.clock, context)
    runtime.metrics.actions_finished.labels(action.type.value, action.status.value).inc()
    log.info(
        "action cancelled: %s %s on machine %s by %s",
        action.type.value,
        action.id,
        action.machine_id,
        principal.name,
        extra={
            "action_id": action.id,
            "machine_id": action.machine_id,
            "caller": principal.name,
            "request_id": context.request_id,
        },
    )
    return entity_response(f"{odata_base(request, runtime)}#MachineActions/$entity", action_to_wire(action))


@router.get(
    "/machineactions",
    operation_id="listMachineActions",
    summary="List machine actions, newest first, with OData $filter, $top, $skip, $orderby, $select and $count",
    responses=ERROR_RESPONSES,
    openapi_extra=ODATA_PARAMETERS,
)
def read_machine_actions(request: Request, runtime: RuntimeDep, principal: CurrentPrincipal) -> Response:
    """Action history on the machines the caller may see, one page at a time."""
    fetch = lambda query: list_actions(query, principal, runtime.uow(write=False))  # noqa: E731
    return list_response(request, runtime, MACHINE_ACTION_SPEC, "MachineActions", fetch, action_to_wire)


@router.get(
    "/machineactions/{id}",
    operation_id="getMachineAction",
    summary="Get a machine action by id",
    response_model=MachineActionOut,
    responses=ERROR_RESPONSES,
)
async def get_machine_action(id: str, request: Request, runtime: RuntimeDep, principal: CurrentPrincipal) -> Response:
    """Read one action, to follow an offboard to its final state."""
    action = await point_read(runtime, get_action, id, principal)
    return entity_response(f"{odata_base(request, runtime)}#MachineActions/$entity", action_to_wire(action))
