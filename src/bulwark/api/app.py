"""``create_app(settings)``: the server's parts, built by ``bulwark.bootstrap``, and the routes in one ASGI app."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import APIRouter, Depends, FastAPI
from fastapi.routing import APIRoute

from bulwark import __version__
from bulwark.api import control, device_packages, machine_actions, machines, metadata, oauth, sensor_gateway
from bulwark.api.background import background
from bulwark.api.console import mount_console
from bulwark.api.control import ControlMiddleware, apply_faults
from bulwark.api.docs import install_docs
from bulwark.api.errors import install_error_handlers
from bulwark.api.health import ReadinessProbe, health_router
from bulwark.api.hotpath import HotRoutes
from bulwark.api.middleware import (
    AllowedHostsMiddleware,
    AuthDisabledWarningMiddleware,
    BodySizeLimitMiddleware,
    RequestIdMiddleware,
)
from bulwark.api.observability import ObservabilityMiddleware, metrics_router
from bulwark.api.paths import CaseInsensitivePathMiddleware
from bulwark.api.ratelimiting import enforce_rate_limit
from bulwark.bootstrap import Runtime, build_runtime, close_runtime, start_runtime
from bulwark.clock import Clock
from bulwark.domain.control import CONTROL_ROLE
from bulwark.service.control import ControlPlane
from bulwark.settings import Settings


class ConfigurationError(RuntimeError):
    """Settings that cannot work together; raised at start, before anything is served."""


_PUBLIC_ROUTERS = (machine_actions.router, machines.router, device_packages.router)


def _public_api(*, faults: bool) -> APIRouter:
    # Every public operation is rate limited per caller and operation; on a test server with the
    # control API, injected faults are applied first.
    dependencies = [Depends(apply_faults)] if faults else []
    router = APIRouter(dependencies=[*dependencies, Depends(enforce_rate_limit)])
    for part in _PUBLIC_ROUTERS:
        router.include_router(part)
    return router


def create_app(settings: Settings | None = None, *, clock: Clock | None = None) -> FastAPI:
    """Build the Bulwark ASGI application. The database must already be migrated."""
    settings = settings or Settings()
    problem = settings.multi_process_problem()
    if problem:
        raise ConfigurationError(problem)
    runtime = build_runtime(settings, clock)
    readiness = ReadinessProbe(runtime.engine, settings.redis_url)

    @asynccontextmanager
    async def lifespan(app_: FastAPI) -> AsyncIterator[None]:
        # Blocking work (database calls) runs in this many threads. More threads than this only
        # queue for the GIL and the database, and raise latency without adding throughput.
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.threadpool_size
        try:
            # Written once before serving (the first signing key), never while building the app.
            await anyio.to_thread.run_sync(start_runtime, runtime)
            # The wake-up listener and the sweeper run for as long as the app serves.
            async with background(app_):
                yield
        finally:
            readiness.close()
            close_runtime(runtime)

    app = FastAPI(
        lifespan=lifespan,
        title="Bulwark",
        version=__version__,
        description="A self-hosted Microsoft Defender for Endpoint machine-action API.",
        # Trailing slashes are served directly by CaseInsensitivePathMiddleware, never redirected.
        redirect_slashes=False,
        # /docs and /openapi.json are served by install_docs: local assets, security schemes.
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.runtime = runtime
    install_error_handlers(app)
    # Innermost: the busiest operations, served without the router (their routes stay declared).
    app.add_middleware(HotRoutes, runtime=runtime, handlers=app.exception_handlers)
    if runtime.control is not None:
        # Inside the request-id middleware: it reads and fills the request's state.
        app.add_middleware(ControlMiddleware, runtime=runtime)
    # Starlette runs the last added middleware first: the request id, the Host check, the body-size limit.
    app.add_middleware(BodySizeLimitMiddleware, limit=settings.max_body_bytes)
    app.add_middleware(AllowedHostsMiddleware, allowed=settings.effective_allowed_hosts())
    app.add_middleware(RequestIdMiddleware)
    app.add_middleware(CaseInsensitivePathMiddleware, routes=app.routes)
    # Outermost: times the whole request and sees the status of every answer, errors included.
    app.add_middleware(ObservabilityMiddleware, metrics=runtime.metrics)
    if not settings.auth_enabled:
        logging.getLogger("bulwark.auth").warning(
            "AUTHENTICATION IS DISABLED: every caller is treated as %s with every permission. "
            "Never expose this server; unset BULWARK_AUTH_ENABLED to require tokens.",
            settings.default_requestor,
        )
        app.add_middleware(AuthDisabledWarningMiddleware)
    app.include_router(oauth.router)

    public = _public_api(faults=runtime.control is not None)
    app.include_router(public, prefix="/api")
    # The live service also answers under /api/v1.0; same operations, kept out of the schema.
    app.include_router(public, prefix="/api/v1.0", include_in_schema=False)
    # The CSDL document that @odata.context links point at; public, like the OpenAPI document.
    app.include_router(metadata.router, prefix="/api")
    app.include_router(metadata.router, prefix="/api/v1.0")
    app.include_router(sensor_gateway.router)
    if runtime.control is not None:
        _install_control_api(app, runtime, runtime.control)
    app.include_router(health_router(readiness))
    app.include_router(metrics_router(runtime.metrics, settings))
    install_docs(app, settings)
    mount_console(app)
    install_openapi(app)

    return app


def _install_control_api(app: FastAPI, runtime: Runtime, plane: ControlPlane) -> None:
    """Mount ``/_bulwark`` and say loudly that this server can be reset by API."""
    plane.operations = frozenset(
        route.operation_id
        for part in _PUBLIC_ROUTERS
        for route in part.routes
        if isinstance(route, APIRoute) and route.operation_id
    )
    app.include_router(control.router)
    logging.getLogger("bulwark.control").warning(
        "THE CONTROL API IS ON (/_bulwark): callers holding %s can reset the fleet, make devices fail, inject "
        "faults and move the clock. It is for test servers only; never expose this server.",
        CONTROL_ROLE,
    )


def install_openapi(app: FastAPI) -> None:
    """Finish the OpenAPI document: no route documents FastAPI's 422, which Bulwark never answers
    (invalid input is 400 in the error envelope). Security schemes are added by ``api.docs``."""
    previous = app.openapi

    def openapi() -> dict:
        schema = previous()
        if schema.get("x-bulwark-finished"):
            return schema
        components = schema.setdefault("components", {})
        components.get("schemas", {}).pop("HTTPValidationError", None)
        components.get("schemas", {}).pop("ValidationError", None)
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                if not isinstance(operation, dict):
                    continue
                operation.get("responses", {}).pop("422", None)
        schema["x-bulwark-finished"] = True
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def freeze_startup_heap() -> None:
    """Keep what a serving process built to start out of the garbage collector's full collections.

    Modules, routes, models and compiled statements (over a hundred thousand objects) live as long
    as the process, yet every full collection walks them again while every request waits; a server
    holding thousands of long polls runs such collections every few seconds while sensors connect.
    Frozen after one last collection, they are never walked again. For serving processes only: a
    process that builds many apps (tests) would keep each one's garbage.
    """
    gc.collect()
    gc.freeze()


def create_app_from_environment() -> FastAPI:
    """Factory for ``uvicorn --factory`` and worker processes: settings and logging from the environment."""
    from bulwark.logs import configure_logging

    settings = Settings()
    configure_logging(settings.log_level, settings.log_json)
    app = create_app(settings)
    freeze_startup_heap()
    return app
