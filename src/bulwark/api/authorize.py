"""The authority's authorization endpoint: a sign-in form that answers a registered client with a code.

``GET /{tenant}/oauth2/v2.0/authorize`` checks the request (client, exact redirect URI, PKCE S256)
and shows the sign-in form; ``POST`` checks the password, throttled per user and per source, and
redirects to the redirect URI with ``code`` and ``state``. Nothing is ever redirected to a URI the
client did not register.
"""

from __future__ import annotations

import secrets
from urllib.parse import parse_qs, urlencode, urlsplit

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse, RedirectResponse, Response

from bulwark.api.console.templating import render, security_headers
from bulwark.api.deps import RequestContextDep, RuntimeDep
from bulwark.api.errors import request_id_of
from bulwark.bootstrap import SIGNIN_PER_SOURCE, SIGNIN_PER_USER
from bulwark.service.signin import (
    AuthorizationRequest,
    AuthorizeError,
    SignInFailed,
    check_authorization_request,
    sign_in_for_code,
)

router = APIRouter(tags=["Authority"])

MAX_FORM_BYTES = 16 * 1024
FORM_COOKIE = "bulwark_signin_form"
_PARAMS = ("client_id", "response_type", "redirect_uri", "scope", "state", "code_challenge", "code_challenge_method")


async def read_form(request: Request, limit: int = MAX_FORM_BYTES) -> dict[str, str] | None:
    """A url-encoded form's fields (first value of each), or None if it is not one or too large."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    try:
        return {k: v[0] for k, v in parse_qs(b"".join(chunks).decode("utf-8"), keep_blank_values=True).items()}
    except (UnicodeDecodeError, ValueError):
        return None


def _origin(uri: str) -> str:
    parts = urlsplit(uri)
    return f"{parts.scheme}://{parts.netloc}"


def _redirect_with(uri: str, values: dict[str, str | None]) -> Response:
    query = urlencode({k: v for k, v in values.items() if v is not None})
    separator = "&" if urlsplit(uri).query else "?"
    headers = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
    return RedirectResponse(f"{uri}{separator}{query}", status_code=303, headers=headers)


def _error_page(request: Request, error: AuthorizeError, status: int = 400) -> Response:
    return render(
        "error.html",
        status,
        title="Sign-in request refused",
        code=error.error,
        message=error.description,
        request_id=request_id_of(request),
        user=None,
    )


def _refuse(request: Request, error: AuthorizeError, params: dict[str, str]) -> Response:
    if error.redirectable:
        redirect_uri = params["redirect_uri"]
        return _redirect_with(
            redirect_uri, {"error": error.error, "error_description": error.description, "state": params.get("state")}
        )
    return _error_page(request, error)


def _form(
    request: Request,
    checked: AuthorizationRequest,
    params: dict[str, str],
    form_token: str,
    *,
    username: str = "",
    error: str | None = None,
    error_code: str | None = None,
    status: int = 200,
) -> Response:
    response = render(
        "signin.html",
        status,
        form_targets=[_origin(checked.redirect_uri)],
        client_name=checked.client_name,
        params={name: params.get(name, "") for name in _PARAMS if params.get(name) is not None},
        form_token=form_token,
        username=username,
        error=error,
        error_code=error_code,
        request_id=request_id_of(request),
        user=None,
    )
    secure = request.url.scheme == "https"
    response.set_cookie(
        FORM_COOKIE,
        form_token,
        max_age=900,
        path=request.url.path,
        httponly=True,
        secure=secure,
        samesite="strict",
    )
    return response


@router.get(
    "/{tenant}/oauth2/v2.0/authorize",
    summary="Authorization endpoint (sign-in form, authorization code with PKCE)",
    response_class=HTMLResponse,
    responses={
        200: {"description": "The sign-in form", "content": {"text/html": {}}},
        303: {"description": "Back to the client's registered redirect URI with an OAuth error"},
        400: {
            "description": "A request that cannot be redirected (unknown client or redirect URI)",
            "content": {"text/html": {}},
        },
        413: {"description": "Request too large"},
    },
)
async def authorize(tenant: str, request: Request, runtime: RuntimeDep) -> Response:
    """Show the sign-in form for a registered client's authorization request."""
    params = {k: v for k, v in request.query_params.items() if k in _PARAMS}
    try:
        checked = await run_in_threadpool(check_authorization_request, runtime.uow, tenant, params)
    except AuthorizeError as error:
        return _refuse(request, error, params)
    token = request.cookies.get(FORM_COOKIE) or ""
    if len(token) != 43:
        token = secrets.token_urlsafe(32)
    return _form(request, checked, params, token)


@router.post("/{tenant}/oauth2/v2.0/authorize", include_in_schema=False)
async def authorize_sign_in(tenant: str, request: Request, runtime: RuntimeDep, context: RequestContextDep) -> Response:
    """Check the user's password; answer the client's redirect URI with a code."""
    fields = await read_form(request)
    if fields is None:
        return render(
            "error.html",
            400,
            title="Sign-in refused",
            code="invalid_request",
            message="The sign-in form must be posted url-encoded and small.",
            request_id=request_id_of(request),
            user=None,
        )
    params = {k: v for k, v in fields.items() if k in _PARAMS}
    try:
        checked = await run_in_threadpool(check_authorization_request, runtime.uow, tenant, params)
    except AuthorizeError as error:
        return _refuse(request, error, params)
    cookie_token = request.cookies.get(FORM_COOKIE) or ""
    form_token = fields.get("form_token") or ""
    if not cookie_token or not secrets.compare_digest(cookie_token.encode(), form_token.encode()):
        return render(
            "error.html",
            403,
            title="Sign-in refused",
            code="CsrfTokenInvalid",
            message="This sign-in form expired or did not come from this server. Go back, reload it and sign in again.",
            request_id=request_id_of(request),
            user=None,
        )
    username = (fields.get("username") or "").strip()[:320]
    password = fields.get("password") or ""
    limiter = runtime.signin_limiter
    source = f"{tenant}:{context.client_ip or '-'}"
    for key, operation in ((source, SIGNIN_PER_SOURCE), (f"{tenant}:{username.lower()}", SIGNIN_PER_USER)):
        decision = await run_in_threadpool(limiter.check, key, operation)
        if not decision.allowed:
            message = (
                f"AADSTS50053: Too many sign-in attempts. Try again in {decision.retry_after} seconds."
                if decision.retry_after
                else "AADSTS50053: Sign-in is unavailable right now. Try again later."
            )
            return _form(
                request,
                checked,
                params,
                form_token,
                username=username,
                error=message,
                error_code="IdsLocked",
                status=429,
            )
    try:
        code = await run_in_threadpool(sign_in_for_code, runtime.uow, runtime.clock, checked, username, password, context)
    except SignInFailed as failed:
        return _form(
            request,
            checked,
            params,
            form_token,
            username=username,
            error=f"AADSTS{failed.aadsts}: {failed.message}",
            error_code="invalid_grant",
            status=400,
        )
    response = _redirect_with(checked.redirect_uri, {"code": code, "state": checked.state})
    response.headers.update({k: v for k, v in security_headers().items() if k != "Content-Security-Policy"})
    response.delete_cookie(FORM_COOKIE, path=request.url.path)
    return response
