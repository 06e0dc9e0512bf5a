"""The web console: server-rendered pages for people, on the same process and rules as the API."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.responses import RedirectResponse, Response
from starlette.staticfiles import StaticFiles

from bulwark.api.console.templating import STATIC_DIR


def mount_console(app: FastAPI) -> None:
    """Serve the console under /console (with its static files), and send / there.

    The console's own client registration (a public client whose redirect URI is this server's
    /console/callback) is made when the server starts (``bootstrap.start_runtime``), for the
    default tenant.
    """
    from bulwark.api.authorize import router as authorize_router
    from bulwark.api.console.routes import router as console_router

    app.include_router(authorize_router)
    app.include_router(console_router)
    app.mount("/console/static", StaticFiles(directory=STATIC_DIR), name="console-static")

    @app.get("/", include_in_schema=False)
    async def root() -> Response:
        return RedirectResponse("/console/", status_code=307)
