"""``create_app(settings)``: the server's parts, built by ``bulwark.bootstrap``, and the routes in one ASGI app."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import APIRouter, Depends, FastAPI

from bulwark import __version__
from bulwark.api import device_packages, machine_actions, machines, metadata, oauth, sensor_gateway
from bulwark.api.background import background
from bulwark.api.docs import install_docs
from bulwark.api.errors import install_error_handlers
from bulwark.api.health import ReadinessProbe, health_router
from bulwark.api.middleware import AuthDisabledWarningMiddleware, RequestIdMiddleware
from bulwark.api.observability import ObservabilityMiddleware, metrics_router
from bulwark.api.paths import CaseInsensitivePathMiddleware
from bulwark.api.ratelimiting import enforce_rate_limit
from bulwark.bootstrap import build_runtime, close_runtime, start_runtime
from bulwark.clock import Clock
from bulwark.settings import Settings


class ConfigurationError(RuntimeError):
    """Settings that cannot work together; raised at start, before anything is served."""


def _public_api() -> APIRouter:
    # Every public operation is rate limited per caller and operation.
    router = APIRouter(dependencies=[Depends(enforce_rate_limit)])
    router.include_router(machine_actions.router)
    router.include_router(machines.router)
    router.include_router(device_packages.router)
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

    public = _public_api()
    app.include_router(public, prefix="/api")
    # The live service also answers under /api/v1.0; same operations, kept out of the schema.
    app.include_router(public, prefix="/api/v1.0", include_in_schema=False)
    # The CSDL document that @odata.context links point at; public, like the OpenAPI document.
    app.include_router(metadata.router, prefix="/api")
    app.include_router(metadata.router, prefix="/api/v1.0")
    app.include_router(sensor_gateway.router)
    app.include_router(health_router(readiness))
    app.include_router(metrics_router(runtime.metrics, settings))
    install_docs(app, settings)

    return app


def create_app_from_environment() -> FastAPI:
    """Factory for ``uvicorn --factory`` and worker processes: settings and logging from the environment."""
    from bulwark.logs import configure_logging

    settings = Settings()
    configure_logging(settings.log_level, settings.log_json)
    return create_app(settings)
