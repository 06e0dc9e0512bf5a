"""The token authority, Entra ID style: OpenID discovery, the JWKS, and the token endpoint."""

from __future__ import annotations

import base64
import binascii
import uuid
from urllib.parse import parse_qs, unquote_plus

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from bulwark.api.deps import RuntimeDep
from bulwark.api.wire import json_response
from bulwark.auth.tokens import DEFENDER_AUDIENCE, openid_configuration
from bulwark.service.identity import TokenRequestError

router = APIRouter(tags=["Authority"])

MAX_FORM_BYTES = 16 * 1024
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _oauth_error(runtime: RuntimeDep, error: TokenRequestError) -> Response:
    trace = str(uuid.uuid4())
    body = {
        "error": error.error,
        "error_description": f"{error.description} Trace ID: {trace} Timestamp: {runtime.clock.now():%Y-%m-%d %H:%M:%SZ}",
        "error_codes": [error.aadsts],
        "timestamp": f"{runtime.clock.now():%Y-%m-%d %H:%M:%SZ}",
        "trace_id": trace,
        "correlation_id": str(uuid.uuid4()),
    }
    return json_response(body, error.status, headers=_NO_STORE)


def _unknown_tenant(tenant: str) -> TokenRequestError:
    return TokenRequestError("invalid_tenant", 90002, f"Tenant '{tenant}' not found.")


@router.get("/{tenant}/v2.0/.well-known/openid-configuration", summary="OpenID Connect discovery document")
def discovery(tenant: str, runtime: RuntimeDep) -> Response:
    """Where clients such as MSAL find the token endpoint and the signing keys of a tenant."""
    if not runtime.auth.resolver.tenant_exists(tenant):
        return _oauth_error(runtime, _unknown_tenant(tenant))
    document = openid_configuration(runtime.auth.base_url, tenant)
    document["grant_types_supported"] = ["client_credentials", "password"]
    document["tenant_region_scope"] = "WW"
    return json_response(document)


@router.get("/{tenant}/discovery/v2.0/keys", summary="Public signing keys (JWKS)")
def jwks(tenant: str, runtime: RuntimeDep) -> Response:
    """The keys that verify tokens: the active one and those rotated out but not yet retired."""
    if not runtime.auth.resolver.tenant_exists(tenant):
        return _oauth_error(runtime, _unknown_tenant(tenant))
    return json_response(runtime.auth.keyring().jwks())


def _basic_credentials(header: str | None) -> tuple[str | None, str | None]:
    scheme, _, value = (header or "").partition(" ")
    if scheme.lower() != "basic" or not value:
        return None, None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    client_id, sep, secret = decoded.partition(":")
    # RFC 6749 section 2.3.1: both parts are form-url-encoded before joining.
    return (unquote_plus(client_id), unquote_plus(secret)) if sep else (None, None)


@router.get("/common/userrealm/{username}", include_in_schema=False)
def user_realm(username: str) -> Response:
    """MSAL asks this before a password sign-in; every Bulwark user signs in here (managed, not federated)."""
    domain = username.rpartition("@")[2][:255]
    return json_response({"ver": "1.0", "account_type": "Managed", "domain_name": domain, "cloud_instance_name": "bulwark"})


async def _bounded_body(request: Request) -> bytes:
    # An oversized form is refused as empty; nothing reads further than the limit.
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_FORM_BYTES:
            return b""
        chunks.append(chunk)
    return b"".join(chunks)


@router.post("/{tenant}/oauth2/v2.0/token", summary="Token endpoint (client credentials, password)")
async def token(tenant: str, request: Request, runtime: RuntimeDep) -> Response:
    """Issue an access token for ``scope=https://api.securitycenter.microsoft.com/.default``.

    ``grant_type=client_credentials`` with ``client_id`` and ``client_secret`` (in the form or as
    HTTP Basic) gives an application token; ``grant_type=password`` with ``client_id``,
    ``username`` and ``password`` gives a delegated user token.
    """
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await _bounded_body(request)
    if content_type != "application/x-www-form-urlencoded" or not body:
        runtime.metrics.token_failures.labels("other", "invalid_request").inc()
        return _oauth_error(
            runtime,
            TokenRequestError("invalid_request", 900144, "The request body must be form-encoded and contain 'grant_type'."),
        )
    try:
        fields = {k: v[0] for k, v in parse_qs(body.decode("utf-8"), strict_parsing=False).items()}
    except UnicodeDecodeError:
        fields = {}
    basic_id, basic_secret = _basic_credentials(request.headers.get("authorization"))
    client_id = fields.get("client_id") or basic_id
    client_secret = fields.get("client_secret") or basic_secret
    grant = fields.get("grant_type")
    tokens = runtime.auth.tokens
    try:
        if grant == "client_credentials":
            issued = await run_in_threadpool(tokens.client_credentials, tenant, client_id, client_secret, fields.get("scope"))
            extra: dict[str, str] = {}
        elif grant == "password":
            issued = await run_in_threadpool(
                tokens.password,
                tenant,
                client_id,
                client_secret,
                fields.get("username"),
                fields.get("password"),
                fields.get("scope"),
            )
            extra = {"scope": f"{DEFENDER_AUDIENCE}/.default"}
        elif not grant:
            raise TokenRequestError(
                "invalid_request", 900144, "The request body must contain the following parameter: 'grant_type'."
            )
        else:
            raise TokenRequestError(
                "unsupported_grant_type", 70003, f"The app requested an unsupported grant type '{grant[:40]}'."
            )
    except TokenRequestError as error:
        runtime.metrics.token_failures.labels(runtime.metrics.grant_label(grant), error.error).inc()
        return _oauth_error(runtime, error)
    runtime.metrics.tokens_issued.labels(runtime.metrics.grant_label(grant)).inc()
    body_out = {
        "token_type": "Bearer",
        **extra,
        "expires_in": issued.expires_in,
        "ext_expires_in": issued.expires_in,
        "access_token": issued.access_token,
    }
    return json_response(body_out, headers=_NO_STORE)
