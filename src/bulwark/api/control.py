"""The control API (``/_bulwark``): make a test server's devices fail, its API falter, its clock move.

Served only when ``Settings.control_api_enabled`` (``serve --demo`` or ``BULWARK_CONTROL_API=true``);
otherwise none of these routes exist and ``/_bulwark/...`` answers 404. Every call needs an
application token of Bulwark's own authority holding the application role ``Bulwark.Control``.
Bodies are validated strictly (unknown fields, wrong types and out-of-range numbers answer 400
in the error envelope) and every change is audited.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl

import orjson
from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bulwark.api.deps import CurrentPrincipal, RequestContextDep, RuntimeDep
from bulwark.api.machine_actions import read_body
from bulwark.api.request_state import request_state
from bulwark.api.wire import format_timestamp, json_response
from bulwark.domain.access import Principal
from bulwark.domain.control import (
    ANY_OPERATION,
    FAULT_STATUSES,
    INT32_MAX,
    INT32_MIN,
    MAX_BEHAVIOR_DELAY_SECONDS,
    MAX_CLOCK_ADVANCE_SECONDS,
    MAX_FAULT_COUNT,
    MAX_FAULT_LATENCY_MS,
    MAX_RETRY_AFTER_SECONDS,
    Fault,
    SimulatedOutcome,
)
from bulwark.domain.errors import InternalServerError, InvalidInput, InvalidRequestBody, ServiceUnavailable, TooManyRequests
from bulwark.service import control as use_cases
from bulwark.service.control import ControlPlane

log = logging.getLogger("bulwark.control")

PREFIX = "/_bulwark"
MAX_CONTROL_BODY_BYTES = 4096
# Request log: bodies up to this size are kept; token requests keep only these form fields.
MAX_RECORDED_BODY_BYTES = 16 * 1024
TOKEN_FIELDS_KEPT = frozenset({"grant_type", "client_id", "scope", "username"})
REDACTED = "[redacted]"
E_FAIL = -2147467259


# --- who may call ---


async def control_principal(request: Request, runtime: RuntimeDep) -> Principal:
    """The caller: 401 without a valid token, 403 without the ``Bulwark.Control`` application role."""
    return await run_in_threadpool(runtime.auth.authenticate_control, request.headers.get("authorization"))


ControlPrincipal = Annotated[Principal, Depends(control_principal)]
router = APIRouter(prefix=PREFIX, tags=["Control (test servers only)"])


def _plane(runtime: Any) -> ControlPlane:
    plane = runtime.control
    assert plane is not None, "control routes are mounted only with the control plane"
    return plane


# --- bodies ---


class _StrictBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class BehaviorIn(_StrictBody):
    """``PUT /_bulwark/machines/{id}/behavior``."""

    outcome: SimulatedOutcome = Field(strict=False)
    delaySeconds: float = Field(default=0.0, ge=0, le=MAX_BEHAVIOR_DELAY_SECONDS, allow_inf_nan=False)
    errorHResult: int | None = Field(default=None, ge=INT32_MIN, le=INT32_MAX)

    @model_validator(mode="after")
    def _h_result_only_when_failing(self) -> BehaviorIn:
        if self.errorHResult is not None and self.outcome is not SimulatedOutcome.FAILED:
            raise ValueError("errorHResult is only meaningful with outcome Failed")
        return self


class FaultIn(_StrictBody):
    """``POST /_bulwark/faults``: a status or a latency, for ``count`` calls or with a ``probability``."""

    operation: str = Field(min_length=1, max_length=100)
    status: Literal[429, 500, 503] | None = None
    latencyMs: int | None = Field(default=None, ge=1, le=MAX_FAULT_LATENCY_MS)
    retryAfterSeconds: int | None = Field(default=None, ge=0, le=MAX_RETRY_AFTER_SECONDS)
    count: int | None = Field(default=None, ge=1, le=MAX_FAULT_COUNT)
    probability: float | None = Field(default=None, ge=0, le=1, allow_inf_nan=False)

    @model_validator(mode="after")
    def _consistent(self) -> FaultIn:
        if (self.status is None) == (self.latencyMs is None):
            raise ValueError(f"give exactly one of status ({', '.join(map(str, FAULT_STATUSES))}) or latencyMs")
        if self.retryAfterSeconds is not None and self.status != 429:
            raise ValueError("retryAfterSeconds goes with status 429 only")
        if self.count is not None and self.probability is not None:
            raise ValueError("give count or probability, not both")
        return self


class ClockAdvanceIn(_StrictBody):
    """``POST /_bulwark/clock/advance``."""

    seconds: float = Field(gt=0, le=MAX_CLOCK_ADVANCE_SECONDS, allow_inf_nan=False)


def parse_control_body(raw: bytes, model: type[_StrictBody]) -> Any:
    """Parse a JSON object strictly into ``model``; 400 in the envelope for anything else."""
    if not raw.strip():
        raise InvalidRequestBody("Invalid request body: the body is empty; expected a JSON object.")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequestBody(f"Invalid request body: not valid JSON ({exc.msg} at position {exc.pos}).") from None
    if not isinstance(data, dict):
        raise InvalidRequestBody("Invalid request body: expected a JSON object.")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise InvalidInput(f"Invalid input {where}: {first['msg']}.") from None


async def _body(request: Request, model: type[_StrictBody]) -> Any:
    return parse_control_body(await read_body(request, MAX_CONTROL_BODY_BYTES), model)


# --- behaviours ---


@router.put("/machines/{id}/behavior", operation_id="controlSetBehavior", summary="Set a machine's simulated behaviour")
async def put_behavior(
    id: str, request: Request, runtime: RuntimeDep, principal: ControlPrincipal, context: RequestContextDep
) -> Response:
    """What the machine's simulated sensor does with its next actions."""
    body: BehaviorIn = await _body(request, BehaviorIn)
    error_h_result = body.errorHResult
    if body.outcome is SimulatedOutcome.FAILED and error_h_result is None:
        error_h_result = E_FAIL
    command = use_cases.SetBehavior(id, body.outcome, body.delaySeconds, error_h_result)
    behavior = await run_in_threadpool(use_cases.set_behavior, command, principal, runtime.uow(), runtime.clock, context)
    # A sensor holding back (Never) looks again now.
    await run_in_threadpool(runtime.notifier.publish, behavior.machine_id)
    return json_response({"machineId": behavior.machine_id, **behavior.to_wire()})


@router.get("/machines/{id}/behavior", operation_id="controlGetBehavior", summary="Read a machine's simulated behaviour")
async def get_behavior(id: str, runtime: RuntimeDep, principal: ControlPrincipal) -> Response:
    """The machine's behaviour; ``outcome`` null means the default (the simulated sensor's own)."""
    behavior = await run_in_threadpool(use_cases.get_behavior, id, principal, runtime.uow(write=False))
    if behavior is None:
        return json_response({"machineId": id.lower(), "outcome": None, "delaySeconds": None})
    return json_response({"machineId": behavior.machine_id, **behavior.to_wire()})


@router.delete("/machines/{id}/behavior", operation_id="controlClearBehavior", summary="Restore a machine's default behaviour")
async def delete_behavior(id: str, runtime: RuntimeDep, principal: ControlPrincipal, context: RequestContextDep) -> Response:
    """Back to the simulated sensor's default; a sensor holding back picks up its actions now."""
    machine_id = await run_in_threadpool(use_cases.clear_behavior, id, principal, runtime.uow(), runtime.clock, context)
    await run_in_threadpool(runtime.notifier.publish, machine_id)
    return Response(status_code=204)


# --- faults ---


@router.post("/faults", operation_id="controlAddFault", summary="Inject a fault into API calls")
async def post_fault(request: Request, runtime: RuntimeDep, principal: ControlPrincipal, context: RequestContextDep) -> Response:
    """The next matching calls answer the status (or are delayed); 201 with the fault's id."""
    body: FaultIn = await _body(request, FaultIn)
    plane = _plane(runtime)
    if body.operation != ANY_OPERATION and body.operation not in plane.operations:
        known = ", ".join(sorted(plane.operations))
        raise InvalidInput(
            f"Invalid input operation: {body.operation[:100]!r} is not an operation id; use '*' or one of {known}."
        )
    retry_after = body.retryAfterSeconds if body.retryAfterSeconds is not None else (1 if body.status == 429 else None)
    command = use_cases.AddFault(body.operation, body.status, body.latencyMs, retry_after, body.count, body.probability)
    fault = await run_in_threadpool(use_cases.add_fault, command, principal, runtime.uow(), runtime.clock, context)
    return json_response(fault.to_wire(), 201)


@router.get("/faults", operation_id="controlListFaults", summary="List the injected faults")
async def get_faults(runtime: RuntimeDep, principal: ControlPrincipal) -> Response:
    """Every active fault, oldest first."""
    faults = await run_in_threadpool(use_cases.list_faults, runtime.uow(write=False))
    return json_response({"value": [fault.to_wire() for fault in faults]})


@router.delete("/faults/{fault_id}", operation_id="controlRemoveFault", summary="Remove an injected fault")
async def delete_fault(fault_id: str, runtime: RuntimeDep, principal: ControlPrincipal, context: RequestContextDep) -> Response:
    """204, or 404 when there is no such fault."""
    await run_in_threadpool(use_cases.remove_fault, fault_id[:64], principal, runtime.uow(), runtime.clock, context)
    return Response(status_code=204)


# --- clock and reset ---


def _clock_body(plane: ControlPlane) -> dict[str, Any]:
    return {
        "now": format_timestamp(plane.clock.now()),
        "realNow": format_timestamp(plane.clock.base.now()),
        "offsetSeconds": plane.clock.offset_seconds,
    }


@router.post("/clock/advance", operation_id="controlAdvanceClock", summary="Move the server's clock forward and sweep")
async def advance_clock(
    request: Request, runtime: RuntimeDep, principal: ControlPrincipal, context: RequestContextDep
) -> Response:
    """Every process's fleet clock moves forward; overdue actions time out at once."""
    from bulwark.bootstrap import sweep_policy

    body: ClockAdvanceIn = await _body(request, ClockAdvanceIn)
    plane = _plane(runtime)
    result = await run_in_threadpool(
        use_cases.advance_clock,
        body.seconds,
        principal,
        runtime.uow(),
        runtime.clock,
        context,
        policy=sweep_policy(runtime.settings),
        apply_offset=plane.apply_offset,
    )
    swept = result.swept
    return json_response(
        {
            **_clock_body(plane),
            "swept": {
                "pendingTimedOut": swept.pending_timed_out,
                "inProgressTimedOut": swept.in_progress_timed_out,
                "machinesInactive": swept.machines_inactive,
            },
        }
    )


@router.get("/clock", operation_id="controlGetClock", summary="The server's clock and its offset")
async def get_clock(runtime: RuntimeDep, principal: ControlPrincipal) -> Response:
    """``now`` as the fleet sees it, the real time, and the offset between them."""
    return json_response(_clock_body(_plane(runtime)))


@router.post("/reset", operation_id="controlReset", summary="Back to the freshly seeded demo fleet")
async def reset(runtime: RuntimeDep, principal: ControlPrincipal, context: RequestContextDep) -> Response:
    """Actions, audit, enrolments, behaviours, faults and the clock offset go; identities stay."""
    settings = runtime.settings
    epoch = await run_in_threadpool(
        use_cases.reset_fleet,
        principal,
        runtime.uow(),
        runtime.clock,
        context,
        demo_tenant_id=settings.default_tenant_id,
        demo_machine_count=settings.demo_machine_count,
        apply_offset=_plane(runtime).apply_offset,
    )
    return json_response({"epoch": epoch, "machines": settings.demo_machine_count})


# --- request log ---


@router.get("/requests", operation_id="controlListRequests", summary="The recorded API calls, newest first")
async def get_requests(
    runtime: RuntimeDep,
    principal: ControlPrincipal,
    operation: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    """Time, method, path, operation id, status, caller and body of each recent call."""
    rows = await run_in_threadpool(use_cases.list_requests, runtime.uow(write=False), operation, limit)
    return json_response(
        {
            "value": [
                {
                    "time": format_timestamp(row["occurred_at"]),
                    "method": row["method"],
                    "path": row["path"],
                    "operation": row["operation"],
                    "status": row["status"],
                    "caller": row["caller"],
                    "body": row["body"],
                }
                for row in rows
            ]
        }
    )


# --- applied to every API call: faults, and the clock and log middleware ---


def _fault_error(fault: Fault) -> Exception:
    if fault.status == 429:
        seconds = fault.retry_after_seconds if fault.retry_after_seconds is not None else 1
        return TooManyRequests(f"Rate limit is exceeded. Try again in {seconds} seconds.", headers={"Retry-After": str(seconds)})
    if fault.status == 503:
        return ServiceUnavailable("The service is temporarily unavailable. Try again later.")
    return InternalServerError()


async def apply_faults(request: Request, runtime: RuntimeDep, principal: CurrentPrincipal) -> None:
    """Before a public route runs: answer an injected fault's status, or delay the call.

    A dependency of the public router, so it runs after routing (the operation id is known), after
    authentication (only real callers meet faults) and before the rate limit and the route: a
    faulted call changes nothing.
    """
    plane = runtime.control
    if plane is None:
        return
    snapshot = request_state(request).control
    if snapshot is None:
        snapshot = await run_in_threadpool(use_cases.load_snapshot, runtime.uow(write=False))
    if not snapshot.faults:
        return
    operation = getattr(request.scope.get("route"), "operation_id", None) or ""
    fault = await run_in_threadpool(use_cases.choose_fault, snapshot, operation, runtime.uow())
    if fault is None:
        return
    if fault.latency_ms is not None:
        await asyncio.sleep(fault.latency_ms / 1000)
        return
    raise _fault_error(fault)


def _is_token_request(path: str) -> bool:
    return "/oauth2/" in path and path.endswith("/token")


def _recorded_body(raw: bytes, size: int, token_request: bool) -> Any:
    """What the log keeps of a body: JSON as JSON, token forms without their secrets."""
    if size == 0:
        return None
    if size > MAX_RECORDED_BODY_BYTES:
        return {"notRecorded": f"{size} bytes"}
    text = raw.decode("utf-8", errors="replace")
    if token_request:
        return {name: value if name in TOKEN_FIELDS_KEPT else REDACTED for name, value in parse_qsl(text)}
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return text


def _caller(principal: Any) -> dict[str, Any] | None:
    if not isinstance(principal, Principal):
        return None
    return {"kind": principal.kind.value, "id": principal.id, "name": principal.name, "tenantId": principal.tenant_id}


class ControlMiddleware:
    """Per request: read the shared control state (clock offset, faults) once, and log API calls.

    Installed inside ``RequestIdMiddleware``, so the request's state exists when it runs.

    The clock offset and the faults live in the database, so every worker process applies what a
    control call on any of them set, from its next request on. API calls (``/api`` and the token
    endpoint) are recorded when their answer starts, before the client can see it: never their
    headers, and of token requests only the non-secret form fields.
    """

    def __init__(self, app: ASGIApp, runtime: Any) -> None:
        self.app = app
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not path.startswith(("/api/", "/sensor/", PREFIX)) and not _is_token_request(path):
            await self.app(scope, receive, send)
            return
        runtime = self.runtime
        plane: ControlPlane = runtime.control
        try:
            if path.startswith("/sensor/"):
                # Devices meet no faults: only the clock matters to them.
                offset, _ = await run_in_threadpool(use_cases.clock_state, runtime.uow(write=False))
                plane.apply_offset(offset)
            else:
                snapshot = await run_in_threadpool(use_cases.load_snapshot, runtime.uow(write=False))
                plane.apply_offset(snapshot.clock_offset_seconds)
                request_state(Request(scope)).control = snapshot
        except Exception:
            log.exception("could not read the control state")
        if not (path.startswith("/api/") or _is_token_request(path)):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0

        async def receive_and_keep() -> Message:
            nonlocal size
            message = await receive()
            if message["type"] == "http.request":
                body = message.get("body", b"")
                size += len(body)
                if size <= MAX_RECORDED_BODY_BYTES:
                    chunks.append(body)
            return message

        async def send_after_recording(message: Message) -> None:
            if message["type"] == "http.response.start":
                await self._record(scope, message["status"], b"".join(chunks), size, path)
            await send(message)

        await self.app(scope, receive_and_keep, send_after_recording)

    async def _record(self, scope: Scope, status: int, raw: bytes, size: int, path: str) -> None:
        runtime = self.runtime
        route = scope.get("route")
        operation = getattr(route, "operation_id", None) or getattr(route, "name", None)
        if not operation:
            # No route matched (a mistyped or probing path): nothing a playbook test asserts on,
            # and no database write for whoever sends it.
            return
        query = scope.get("query_string", b"").decode("latin-1")
        principal = request_state(Request(scope)).principal
        try:
            await run_in_threadpool(
                use_cases.record_request,
                runtime.uow(),
                runtime.clock,
                keep=runtime.control.request_log_size,
                method=scope.get("method", "")[:10],
                path=(path + (f"?{query}" if query else ""))[:2048],
                operation=operation[:100],
                status=status,
                caller=_caller(principal),
                body=_recorded_body(raw, size, _is_token_request(path)),
            )
        except Exception:
            log.exception("could not record an API call")
