"""Exceptions raised by the SDK, one class per error code the API documents."""

from __future__ import annotations

import re
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from bulwark.client.models import MachineAction


class BulwarkError(Exception):
    """Base class of every exception the SDK raises on purpose."""


class ConfigurationError(BulwarkError):
    """The client was given incomplete or contradictory settings."""


class TransportError(BulwarkError):
    """The service could not be reached (or stopped answering) and retrying did not help."""


class ResponseFormatError(BulwarkError):
    """A successful response did not have the shape the API contract promises."""

    def __init__(self, message: str, *, status: int, request_id: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.request_id = request_id


class AuthenticationError(BulwarkError):
    """The token endpoint refused to issue an access token, or could not be reached."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.request_id = request_id


class TokenEndpointUnreachable(TransportError, AuthenticationError):
    """The token endpoint could not be reached (connection refused, TLS verification failed, timeout).

    A transport failure, not a refusal: the CLI reports it as unreachable (exit 6). It is also an
    AuthenticationError, as it always was, for code that catches that.
    """

    def __init__(self, message: str) -> None:
        AuthenticationError.__init__(self, message)


class ActionWaitTimeout(BulwarkError):
    """An action did not reach a final state within the time allowed for waiting."""

    def __init__(self, action_id: str, timeout: float, last_seen: MachineAction | None) -> None:
        status = last_seen.status.value if last_seen is not None else "unknown"
        super().__init__(f"Action {action_id} is still {status} after {timeout:g} seconds")
        self.action_id = action_id
        self.timeout = timeout
        self.last_seen = last_seen


class ApiError(BulwarkError):
    """The API answered with an error envelope `{"error": {"code", "message", "target"}}`.

    `code` is the code the service sent (it may be more specific than the class, for codes
    this SDK does not know); `request_id` is the error target, which is also the `request-id`
    response header, and identifies the request in the server's logs.
    """

    code: str = "ApiError"
    default_status: ClassVar[int | None] = None

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        request_id: str | None = None,
        *,
        body: Any = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}" + (f" (request {request_id})" if request_id else ""))
        self.status = status
        self.code = code
        self.message = message
        self.request_id = request_id
        self.body = body


class BadRequest(ApiError):
    """400: the request was malformed; the more specific 400 codes derive from this class."""

    code = "BadRequest"
    default_status = 400


class ODataError(BadRequest):
    """400: the OData query ($filter, $top, $skip, ...) is invalid."""

    code = "ODataError"


class InvalidInput(BadRequest):
    """400: an input value (such as a machine id) is invalid."""

    code = "InvalidInput"


class InvalidRequestBody(BadRequest):
    """400: the request body is not valid."""

    code = "InvalidRequestBody"


class MissingRequiredParameter(BadRequest):
    """400: a required body parameter (such as `Comment`) is missing."""

    code = "MissingRequiredParameter"


class OsPlatformNotSupported(BadRequest):
    """400: the machine's OS platform does not support the action."""

    code = "OsPlatformNotSupported"


class ClientVersionNotSupported(BadRequest):
    """400: the machine's sensor or OS version is too old for the action."""

    code = "ClientVersionNotSupported"


class ActiveRequestAlreadyExists(BadRequest):
    """400: an action of the same kind is already pending or in progress on the machine."""

    code = "ActiveRequestAlreadyExists"


class Unauthorized(ApiError):
    """401: the bearer token is missing, invalid or expired."""

    code = "Unauthorized"
    default_status = 401


class Forbidden(ApiError):
    """403: the caller lacks the permission or device-group access the operation needs."""

    code = "Forbidden"
    default_status = 403


class DisallowedOperation(Forbidden):
    """403: the operation is not allowed in the current state of the target."""

    code = "DisallowedOperation"


class NotFound(ApiError):
    """404: nothing answers at this address."""

    code = "NotFound"
    default_status = 404


class ResourceNotFound(NotFound):
    """404: the machine or action does not exist or is not visible to the caller."""

    code = "ResourceNotFound"


class TooManyRequests(ApiError):
    """429: a rate limit was exceeded; `retry_after` says how many seconds to wait, if known."""

    code = "TooManyRequests"
    default_status = 429

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        request_id: str | None = None,
        *,
        body: Any = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(status, code, message, request_id, body=body)
        self.retry_after = retry_after


class InternalServerError(ApiError):
    """500: the service failed; retrying later may succeed."""

    code = "InternalServerError"
    default_status = 500


_ERROR_CLASSES: tuple[type[ApiError], ...] = (
    BadRequest,
    ODataError,
    InvalidInput,
    InvalidRequestBody,
    MissingRequiredParameter,
    OsPlatformNotSupported,
    ClientVersionNotSupported,
    ActiveRequestAlreadyExists,
    Unauthorized,
    Forbidden,
    DisallowedOperation,
    NotFound,
    ResourceNotFound,
    TooManyRequests,
    InternalServerError,
)
ERROR_CLASS_BY_CODE: dict[str, type[ApiError]] = {cls.code: cls for cls in _ERROR_CLASSES}
_ERROR_CLASS_BY_STATUS: dict[int, type[ApiError]] = {
    # Only the family heads (BadRequest, NotFound, ...) declare a status; subclasses inherit it.
    cls.default_status: cls
    for cls in _ERROR_CLASSES
    if "default_status" in vars(cls) and cls.default_status is not None
}


def error_class_for(status: int, code: str | None) -> type[ApiError]:
    """The exception class for an error response: by code first, then by HTTP status."""
    if code and code in ERROR_CLASS_BY_CODE:
        return ERROR_CLASS_BY_CODE[code]
    return _ERROR_CLASS_BY_STATUS.get(status, ApiError)


def default_code_for(status: int) -> str:
    """A code for error responses that carry none, e.g. `ServiceUnavailable` for 503."""
    cls = _ERROR_CLASS_BY_STATUS.get(status)
    if cls is not None:
        return cls.code
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        return f"Http{status}"
    words = re.split(r"[^A-Za-z0-9]+", phrase.replace("'", ""))
    return "".join(word[:1].upper() + word[1:] for word in words)


def untrusted_certificate_hint(exc: BaseException) -> str:
    """What to do when `exc` is a refused TLS certificate (empty otherwise)."""
    if "CERTIFICATE_VERIFY_FAILED" in str(exc) or "certificate verify failed" in str(exc):
        return (
            " (the server's TLS certificate is not trusted: give its CA with --ca-file or BULWARK_CA_FILE, "
            "e.g. the ca.pem in the server's data directory, or use a credentials file that names it)"
        )
    return ""
