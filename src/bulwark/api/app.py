"""The composition root: ``create_app(settings)`` wires storage, clock and routes into one ASGI app."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from bulwark import __version__
from bulwark.api import device_packages, machine_actions, sensor_gateway
from bulwark.api.background import background
from bulwark.api.deps import Runtime
from bulwark.api.errors import install_error_handlers
from bulwark.api.middleware import RequestIdMiddleware
from bulwark.api.wire import json_response
from bulwark.clock import Clock, SystemClock
from bulwark.notifier import create_notifier
from bulwark.service.uow import UnitOfWorkFactory
from bulwark.settings import Settings
from bulwark.store.db import create_db_engine


def _public_api() -> APIRouter:
    router = APIRouter()
    router.include_router(machine_actions.router)
    router.include_router(device_packages.router)
    return router


def create_app(settings: Settings | None = None, *, clock: Clock | None = None) -> FastAPI:
    """Build the Bulwark ASGI application. The database must already be migrated."""
    settings = settings or Settings()
    engine = create_db_engine(settings.resolved_database_url())
    notifier = create_notifier(settings.notifier, settings.resolved_database_url(), settings.redis_url, engine)
    runtime = Runtime(
        settings=settings, engine=engine, uow=UnitOfWorkFactory(engine), clock=clock or SystemClock(), notifier=notifier
    )

    app = FastAPI(
        title="Bulwark",
        version=__version__,
        description="A self-hosted Microsoft Defender for Endpoint machine-action API.",
        lifespan=background,
    )
    app.state.runtime = runtime
    install_error_handlers(app)
    app.add_middleware(RequestIdMiddleware)

    public = _public_api()
    app.include_router(public, prefix="/api")
    # The live service also answers under /api/v1.0; same operations, kept out of the schema.
    app.include_router(public, prefix="/api/v1.0", include_in_schema=False)
    app.include_router(sensor_gateway.router)

    @app.get("/healthz", include_in_schema=False)
    def healthz():  # noqa: ANN202
        return json_response({"status": "ok", "version": __version__})

    return app


def create_app_from_environment() -> FastAPI:
    """Factory for ``uvicorn --factory`` and worker processes: settings from the environment."""
    return create_app(Settings())
