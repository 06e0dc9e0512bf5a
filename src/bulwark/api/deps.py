"""The FastAPI dependencies that hand the server's runtime (built in ``bulwark.bootstrap``) to routes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from bulwark.api.request_state import request_state
from bulwark.api.unauthenticated import refuse_unauthenticated
from bulwark.bootstrap import Runtime
from bulwark.domain.access import Principal
from bulwark.domain.errors import Unauthorized
from bulwark.service.audit_trail import RequestContext

T = TypeVar("T")


async def get_runtime(request: Request) -> Runtime:
    """The app's runtime (async: a plain lookup should not cost a threadpool hop)."""
    return request.app.state.runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_principal(request: Request, runtime: RuntimeDep) -> Principal:
    """The caller named by the request's bearer token; 401 Unauthorized without a valid one.

    A token seen recently is answered from memory on the event loop; otherwise verification
    (which may fetch a provider's keys) and resolution (which reads the database) run in the
    threadpool, off the event loop.
    """
    authorization = request.headers.get("authorization")
    principal = runtime.auth.authenticate_cached(authorization)
    if principal is None:
        try:
            principal = await run_in_threadpool(runtime.auth.authenticate, authorization)
        except Unauthorized as refused:
            raise await refuse_unauthenticated(request, runtime, refused) from None
    request_state(request).principal = principal
    return principal


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]


async def get_request_context(request: Request) -> RequestContext:
    """The request id and client address, for the audit trail."""
    return RequestContext(
        request_id=request_state(request).request_id,
        client_ip=request.client.host if request.client else None,
    )


RequestContextDep = Annotated[RequestContext, Depends(get_request_context)]


async def point_read(runtime: Runtime, read: Callable[..., T], *args: Any) -> T:
    """Run a read of one row by key, ``read(*args, uow)``: inline on the event loop on SQLite, in the threadpool elsewhere.

    An indexed read of one row from a local SQLite file takes tens of microseconds and never
    waits for a lock (WAL: readers do not block on the writer), less than the hop to a worker
    thread and back; it runs on this thread's own connection (``Runtime.point_reads``). A network
    database's round trip must not hold up the event loop. Only for reads bounded by a key: lists
    and anything that scans stay in the threadpool.
    """
    if runtime.point_reads is not None:
        return read(*args, runtime.point_reads())
    return await run_in_threadpool(read, *args, runtime.uow(write=False))


# The request bases seen (few: one per name the server is reached by), each built once.
_BASES: dict[tuple[Any, ...], str] = {}
_MAX_BASES = 64


def public_base(request: Request, runtime: Runtime) -> str:
    """The base of every link Bulwark writes: the public base URL, or the one the request came in on.

    The request's base is safe to use: ``AllowedHostsMiddleware`` refused any Host not allowed.
    """
    configured = runtime.settings.public_base_url
    if configured:
        return configured
    scope = request.scope
    # Everything Starlette builds ``request.base_url`` from.
    host = [value for name, value in scope["headers"] if name == b"host"]
    server = scope.get("server")
    key = (scope.get("scheme"), tuple(server) if server else None, scope.get("app_root_path", scope.get("root_path", "")), *host)
    base = _BASES.get(key)
    if base is None:
        base = str(request.base_url).rstrip("/")
        if len(_BASES) >= _MAX_BASES:
            _BASES.clear()
        _BASES[key] = base
    return base


def odata_base(request: Request, runtime: Runtime) -> str:
    """The base of ``@odata.context`` URLs."""
    return f"{public_base(request, runtime)}/api/$metadata"
