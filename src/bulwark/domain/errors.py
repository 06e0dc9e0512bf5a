"""Errors the API reports, named by their MDE error codes."""

from __future__ import annotations


class MdeError(Exception):
    """An error the API answers in the MDE error envelope: its code, HTTP status and message for the caller.

    (The SDK's own base exception, ``bulwark.client.BulwarkError``, is a different thing: what a
    client raises.)
    """

    code = "BadRequest"
    status = 400
    default_message = "General Bad Request error message."

    def __init__(self, message: str | None = None, *, headers: dict[str, str] | None = None) -> None:
        self.message = message or self.default_message
        self.headers = headers or {}
        # The machine a refused request concerned, when the use case learnt it (for the audit trail).
        self.machine_id: str | None = None
        super().__init__(self.message)

    def about(self, machine_id: str) -> MdeError:
        """This error, noting the machine it concerns (the audit of the refusal records it)."""
        self.machine_id = machine_id
        return self


class BadRequest(MdeError):
    """A request the API cannot accept, with no more specific code."""


class InvalidODataQuery(MdeError):
    """An invalid OData query option, reported with the MDE code ODataError."""

    code = "ODataError"
    default_message = "Invalid OData URI query."


class InvalidInput(MdeError):
    """A malformed value, such as an id of the wrong shape."""

    code = "InvalidInput"
    default_message = "Invalid input."


class InvalidRequestBody(MdeError):
    """A body that is not valid JSON, not an object, of a wrong type or too large."""

    code = "InvalidRequestBody"
    default_message = "Invalid request body."


class MissingRequiredParameter(MdeError):
    """A required body parameter is missing or empty."""

    code = "MissingRequiredParameter"

    def __init__(self, parameter: str) -> None:
        super().__init__(f"Parameter {parameter} is missing.")
        self.parameter = parameter


class OsPlatformNotSupported(MdeError):
    """The device's OS platform does not support the action."""

    code = "OsPlatformNotSupported"

    def __init__(self, platform: str) -> None:
        super().__init__(f"OS Platform {platform} isn't supported for this action.")


class ClientVersionNotSupported(MdeError):
    """The device's OS version or agent is too old for the action."""

    code = "ClientVersionNotSupported"

    def __init__(self, action: str, minimum: str) -> None:
        super().__init__(f"{action} is supported on client version {minimum} and above.")


class ActiveRequestAlreadyExists(MdeError):
    """An action of the same type is already pending or in progress on the machine."""

    code = "ActiveRequestAlreadyExists"
    default_message = "Action is already in progress"


class Unauthorized(MdeError):
    """No valid bearer token."""

    code = "Unauthorized"
    status = 401
    default_message = "Unauthorized (invalid or expired authorization header)."


class Forbidden(MdeError):
    """The caller lacks a permission."""

    code = "Forbidden"
    status = 403
    default_message = "Forbidden."


class DisallowedOperation(MdeError):
    """The operation is not allowed in the action's current state."""

    code = "DisallowedOperation"
    status = 403
    default_message = "The operation is not allowed."


class NotFound(MdeError):
    """No such route or resource, with no more specific code."""

    code = "NotFound"
    status = 404
    default_message = "General Not Found error message."


class ResourceNotFound(MdeError):
    """A named resource does not exist (or the caller may not see it)."""

    code = "ResourceNotFound"
    status = 404

    def __init__(self, kind: str, identifier: str) -> None:
        super().__init__(f"{kind} {identifier} was not found")


class MethodNotAllowed(MdeError):
    """The route exists, but not for this HTTP method."""

    code = "MethodNotAllowed"
    status = 405
    default_message = "The requested HTTP method is not allowed for this resource."


class PayloadTooLarge(MdeError):
    """The request body is larger than the server accepts."""

    code = "PayloadTooLarge"
    status = 413
    default_message = "The request body is too large."


class UnsupportedMediaType(MdeError):
    """The request body is not in a format the operation accepts."""

    code = "UnsupportedMediaType"
    status = 415
    default_message = "Unsupported Content-Type; send the body as JSON with 'Content-Type: application/json'."


class TooManyRequests(MdeError):
    """The caller exceeded a rate limit."""

    code = "TooManyRequests"
    status = 429
    default_message = "Rate limit is exceeded. Try again later."


class ServiceUnavailable(MdeError):
    """A dependency Bulwark needs is unavailable and the configuration says to refuse."""

    code = "ServiceUnavailable"
    status = 503
    default_message = "The service is temporarily unavailable. Try again later."


class InternalServerError(MdeError):
    """An unexpected failure; the caller may retry."""

    code = "InternalServerError"
    status = 500
    default_message = "An unexpected error occurred. Retry the operation."
