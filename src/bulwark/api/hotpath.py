"""The busiest operations, dispatched without the framework's per-request machinery.

Offboarding a machine, following the action, reading and listing machines are what automation
calls most.
``HotRoutes`` serves them directly: it recognises the (already case-folded) path, then runs the
very functions FastAPI would run, in the order it would run them (the caller from its token, the
test server's faults, the rate limit, the route itself), and answers errors through the app's own
exception handlers. What it skips is the generic work around them: matching the request against
every route, resolving a dependency graph, and the exception and exit-stack layers. Everything a
client or operator observes (status, body, headers, audit events, metrics, the access log) comes
from the same code as before.

The routes stay declared on their routers, so the OpenAPI document is unchanged, and any request
this does not recognise (another method, ``HEAD``, an unexpected shape) goes to the router as ever.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from bulwark.api import machine_actions, machines
from bulwark.api.control import apply_faults
from bulwark.api.deps import get_principal, get_request_context
from bulwark.api.ratelimiting import enforce_rate_limit
from bulwark.bootstrap import Runtime
from bulwark.domain.access import Principal
from bulwark.domain.errors import MdeError

# What a hot operation runs once the caller is known and within budget: (request, runtime, caller, path id).
Serve = Callable[[Request, Runtime, Principal, str], Awaitable[Response]]

# The public API's prefixes (the live service answers under both).
_PREFIXES = (("api",), ("api", "v1.0"))


async def _offboard(request: Request, runtime: Runtime, principal: Principal, id: str) -> Response:
    context = await get_request_context(request)
    return await machine_actions.offboard_machine(id, request, runtime, principal, context)


async def _get_action(request: Request, runtime: Runtime, principal: Principal, id: str) -> Response:
    return await machine_actions.get_machine_action(id, request, runtime, principal)


async def _get_machine(request: Request, runtime: Runtime, principal: Principal, id: str) -> Response:
    return await machines.read_machine(id, request, runtime, principal)


async def _list_machines(request: Request, runtime: Runtime, principal: Principal, id: str) -> Response:
    # A list may scan: it runs off the event loop, on the list threads (one on SQLite, where several
    # threads building pages at once only trade the GIL: measured, a third less CPU a page).
    if runtime.lists is None:
        return await run_in_threadpool(machines.read_machines, request, runtime, principal)
    # With this request's context (request id, log fields), as the threadpool would pass it.
    work = functools.partial(contextvars.copy_context().run, machines.read_machines, request, runtime, principal)
    return await asyncio.get_running_loop().run_in_executor(runtime.lists, work)


# (method, path below the prefix with None for {id}, the route's operation id, what serves it)
_OPERATIONS: tuple[tuple[str, tuple[str | None, ...], str, Serve], ...] = (
    ("POST", ("machines", None, "offboard"), "offboardMachine", _offboard),
    ("GET", ("machineactions", None), "getMachineAction", _get_action),
    ("GET", ("machines", None), "getMachine", _get_machine),
    ("GET", ("machines",), "listMachines", _list_machines),
)


@dataclass(frozen=True, slots=True)
class _HotOperation:
    route: APIRoute
    serve: Serve


def _route(operation_id: str) -> APIRoute:
    for router in (machine_actions.router, machines.router):
        for route in router.routes:
            if isinstance(route, APIRoute) and route.operation_id == operation_id:
                return route
    raise LookupError(operation_id)


# A path's segments as split on "/" (so the first is empty), None where the {id} goes.
_Template = tuple[str | None, ...]


def _operation_table() -> dict[tuple[str, int], list[tuple[_Template, _HotOperation]]]:
    """Templates and operations by method and number of slashes."""
    table: dict[tuple[str, int], list[tuple[_Template, _HotOperation]]] = {}
    for method, below, operation_id, serve in _OPERATIONS:
        operation = _HotOperation(_route(operation_id), serve)
        for prefix in _PREFIXES:
            template = ("", *prefix, *below)
            table.setdefault((method, len(template) - 1), []).append((template, operation))
    return table


class HotRoutes:
    """Pure ASGI: serve the operations of ``_OPERATIONS`` directly, pass everything else to ``app``.

    Installed innermost among the app's middleware: the request id, Host and body-size checks,
    case-insensitive paths, the control API's bookkeeping, metrics and the access log all run
    around it exactly as they do around the router.
    """

    def __init__(self, app: ASGIApp, runtime: Runtime, handlers: dict[Any, Callable[..., Any]]) -> None:
        self.app = app
        self.runtime = runtime
        self.handlers = handlers
        self.table = _operation_table()
        self.faults = runtime.control is not None

    def match(self, scope: Scope) -> tuple[_HotOperation, str] | None:
        """The hot operation a request is for and its path id, or None.

        Paths arrive spelled as their route spells them (``CaseInsensitivePathMiddleware``); the
        id is any non-empty segment, as the router's ``{id}`` matches it.
        """
        path: str = scope["path"]
        candidates = self.table.get((scope["method"], path.count("/")))
        if candidates is None:
            return None
        segments = path.split("/")
        for template, operation in candidates:
            ident = ""
            for sent, expected in zip(segments, template, strict=True):
                if expected is None:
                    if not sent:
                        break
                    ident = sent
                elif sent != expected:
                    break
            else:
                return operation, ident
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        found = self.match(scope)
        if found is None:
            await self.app(scope, receive, send)
            return
        operation, ident = found
        # What routing would have put in the scope: the route (operation id for metrics, the rate
        # limit and audits) and the path parameters (the id a refusal's audit names).
        scope["route"] = operation.route
        scope["endpoint"] = operation.route.endpoint
        scope["path_params"] = {"id": ident} if ident else {}
        request = Request(scope, receive)
        runtime = self.runtime
        try:
            principal = await get_principal(request, runtime)
            if self.faults:
                await apply_faults(request, runtime, principal)
            await enforce_rate_limit(request, runtime, principal)
            response = await operation.serve(request, runtime, principal, ident)
        except (MdeError, StarletteHTTPException) as error:
            response = await self._handle(request, error)
        await response(scope, receive, send)

    async def _handle(self, request: Request, error: Exception) -> Response:
        """The app's own handler for ``error``, as the exception middleware would choose it."""
        for cls in type(error).__mro__:
            handler = self.handlers.get(cls)
            if handler is not None:
                return await handler(request, error)
        raise error
