"""The web console: server-rendered pages for people, on the same process and rules as the API."""

from __future__ import annotations

import logging

from fastapi import FastAPI
from starlette.responses import RedirectResponse, Response
from starlette.staticfiles import StaticFiles

from bulwark.console.templating import STATIC_DIR

log = logging.getLogger("bulwark.console")


def mount_console(app: FastAPI) -> None:
    """Serve the console under /console (with its static files), and send / there.

    The console's own client registration (a public client whose redirect URI is this server's
    /console/callback) is made when the app starts, for the default tenant.
    """
    from bulwark.api.authorize import router as authorize_router
    from bulwark.console.routes import router as console_router

    app.include_router(authorize_router)
    app.include_router(console_router)
    app.mount("/console/static", StaticFiles(directory=STATIC_DIR), name="console-static")

    @app.get("/", include_in_schema=False)
    async def root() -> Response:
        return RedirectResponse("/console/", status_code=307)


def register_console_client(runtime: object) -> None:
    """Register (or update) the console as a client of the default tenant; safe on every start."""
    from bulwark.service.signin import CONSOLE_CALLBACK_PATH, ensure_console_client

    settings = runtime.settings  # type: ignore[attr-defined]
    redirect_uri = settings.issuer_base_url() + CONSOLE_CALLBACK_PATH
    if ensure_console_client(runtime.uow, runtime.clock, settings.default_tenant_id, redirect_uri) is None:  # type: ignore[attr-defined]
        log.info("console: tenant %s does not exist yet; nobody can sign in to the console", settings.default_tenant_id)
