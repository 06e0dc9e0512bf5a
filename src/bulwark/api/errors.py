"""One way out for every error: the MDE error envelope, with the request id as its target."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from bulwark.api.refusal_audit import audit_refusal
from bulwark.api.request_state import request_state
from bulwark.api.wire import json_response
from bulwark.domain.errors import (
    InternalServerError,
    InvalidInput,
    MdeError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
)

log = logging.getLogger("bulwark.api")

REQUEST_ID_HEADER = "request-id"


def request_id_of(request: Request) -> str:
    """The id the request-id middleware gave this request."""
    return request_state(request).request_id


def error_response(request: Request, error: MdeError) -> Response:
    """Render ``error`` in the MDE envelope."""
    request_id = request_id_of(request)
    headers = {REQUEST_ID_HEADER: request_id, **error.headers}
    body = {"error": {"code": error.code, "message": error.message, "target": request_id}}
    return json_response(body, error.status, headers=headers)


async def _mde_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, MdeError)
    await audit_refusal(request, exc)
    return error_response(request, exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 404:
        error: MdeError = NotFound()
    elif exc.status_code == 405:
        error = MethodNotAllowed()
    elif exc.status_code == 413:
        # Counted by the body-size middleware; refused offboards and cancels are audited as ever.
        error = PayloadTooLarge(str(exc.detail))
        await audit_refusal(request, error)
    else:
        error = MdeError(str(exc.detail))
        error.status = exc.status_code
    return error_response(request, error)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid"}
    where = ".".join(str(p) for p in first.get("loc", ()))
    return error_response(request, InvalidInput(f"Invalid input {where}: {first.get('msg')}."))


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    # The traceback names the failure; SQL parameters never appear (engines hide them).
    log.exception("unexpected error", extra={"request_id": request_id_of(request), "path": request.url.path})
    error = InternalServerError()
    # A failed audited operation is audited like a refused one.
    await audit_refusal(request, error)
    return error_response(request, error)


def install_error_handlers(app: FastAPI) -> None:
    """Route every kind of failure through the envelope."""
    app.add_exception_handler(MdeError, _mde_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected_error)
