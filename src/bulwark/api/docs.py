"""Interactive API documentation that works offline, and an OpenAPI document that says how to authenticate.

Swagger UI's assets come from the pinned ``swagger-ui-bundle`` package (Apache-2.0, its licence ships
in the package) and are served from ``/docs/assets``; nothing is loaded from a CDN. The OpenAPI
document declares two security schemes: ``oauth2`` (client credentials against Bulwark's own token
endpoint for the default tenant, so Swagger UI's "Authorize" button gets a real token) and ``bearer``
(paste any token). Every ``/api`` operation requires one of them.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson
from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from starlette.responses import FileResponse, Response

from bulwark.auth.tokens import DEFENDER_AUDIENCE
from bulwark.domain.errors import NotFound
from bulwark.settings import Settings

SCOPE = f"{DEFENDER_AUDIENCE}/.default"
DOCS_PATH = "/docs"
ASSETS_PATH = "/docs/assets"
OAUTH2_REDIRECT_PATH = "/docs/oauth2-redirect"
OPENAPI_PATH = "/openapi.json"
# The only files served from the package: what the page loads. Nothing else in it is reachable.
_ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon-32x32.png": "image/png",
}
_TOKEN_URL_PLACEHOLDER = "{bulwark-token-url}"


def swagger_ui_directory() -> Path:
    """Where the packaged Swagger UI files are."""
    import swagger_ui_bundle

    return Path(swagger_ui_bundle.swagger_ui_path)


def security_schemes() -> dict[str, Any]:
    """``components.securitySchemes``; the oauth2 token URL is filled in per request."""
    return {
        "oauth2": {
            "type": "oauth2",
            "description": "Client credentials of a Bulwark application (bulwark apps create), as with Entra ID.",
            "flows": {
                "clientCredentials": {
                    "tokenUrl": _TOKEN_URL_PLACEHOLDER,
                    "scopes": {SCOPE: "The Defender for Endpoint API, with the application's roles."},
                }
            },
        },
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "An access token from the token endpoint (application or user).",
        },
    }


def with_security(schema: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI document with the security schemes, required by every ``/api`` operation."""
    schema = copy.deepcopy(schema)
    schema.setdefault("components", {})["securitySchemes"] = security_schemes()
    for path, operations in schema.get("paths", {}).items():
        if not path.startswith("/api/"):
            continue
        for operation in operations.values():
            if isinstance(operation, dict):
                operation["security"] = [{"oauth2": [SCOPE]}, {"bearer": []}]
    return schema


def install_docs(app: FastAPI, settings: Settings) -> None:
    """Serve ``/openapi.json``, ``/docs`` and its assets (the app must have docs_url and openapi_url unset)."""
    router = APIRouter(include_in_schema=False)
    template: list[bytes] = []  # the serialised document, built on first use (every route exists by then)
    assets = swagger_ui_directory()

    def token_url(request: Request) -> str:
        base = settings.public_base_url or str(request.base_url).rstrip("/")
        return f"{base}/{settings.default_tenant_id}/oauth2/v2.0/token"

    @router.get(OPENAPI_PATH)
    async def openapi(request: Request) -> Response:
        if not template:
            template.append(orjson.dumps(with_security(app.openapi())))
        quoted = orjson.dumps(_TOKEN_URL_PLACEHOLDER)
        body = template[0].replace(quoted, orjson.dumps(token_url(request)))
        return Response(body, media_type="application/json")

    @router.get(DOCS_PATH)
    async def swagger_ui() -> Response:
        return get_swagger_ui_html(
            openapi_url=OPENAPI_PATH,
            title=f"{app.title} - API documentation",
            swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_PATH}/favicon-32x32.png",
            oauth2_redirect_url=OAUTH2_REDIRECT_PATH,
            init_oauth={"scopes": [SCOPE]},
            # No validator badge: it would call validator.swagger.io.
            swagger_ui_parameters={"validatorUrl": None},
        )

    @router.get(OAUTH2_REDIRECT_PATH)
    async def oauth2_redirect() -> Response:
        return get_swagger_ui_oauth2_redirect_html()

    @router.get(ASSETS_PATH + "/{name}")
    async def asset(name: str) -> Response:
        media_type = _ASSETS.get(name)
        if media_type is None:
            raise NotFound()
        return FileResponse(assets / name, media_type=media_type, headers={"Cache-Control": "public, max-age=86400"})

    app.include_router(router)
