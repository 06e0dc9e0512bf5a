"""Request bodies and response shapes of the public API (wire names, for parsing and OpenAPI).

The ``...Out`` models describe responses for OpenAPI only; what is sent is written by
``api/wire.py``. tests/unit/test_wire_schemas.py holds the two to the same fields, in the same order.
"""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bulwark.domain.actions import RequestSource
from bulwark.domain.errors import InvalidInput, InvalidRequestBody, MissingRequiredParameter

_SOURCES = {s.value.lower(): s.value for s in RequestSource}


class CommentBody(BaseModel):
    """``{"Comment": "..."}``, case-sensitive as on the live service."""

    model_config = ConfigDict(extra="ignore", strict=True)

    Comment: str | None = None


BodyT = TypeVar("BodyT", bound=CommentBody)


class OffboardBody(CommentBody):
    """The offboard request: ``Comment`` plus the optional ``ExternalId``, ``Title``, ``RequestSource``."""

    ExternalId: str | None = Field(default=None, max_length=400)
    Title: str | None = Field(default=None, max_length=400)
    RequestSource: str | None = None

    @field_validator("RequestSource")
    @classmethod
    def _known_source(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if value.lower() not in _SOURCES:
            raise ValueError(f"RequestSource must be one of {', '.join(_SOURCES.values())}")
        return _SOURCES[value.lower()]


def parse_body(raw: bytes, model: type[BodyT], *, max_comment_length: int) -> BodyT:
    """Parse and validate a JSON body, raising the live API's error for each kind of bad input."""
    if not raw.strip():
        raise InvalidRequestBody("Invalid request body: the body is empty; expected a JSON object with Comment.")
    try:
        data: Any = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequestBody(f"Invalid request body: not valid JSON ({exc.msg} at position {exc.pos}).") from None
    if not isinstance(data, dict):
        raise InvalidRequestBody("Invalid request body: expected a JSON object.")
    try:
        body = model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "body"
        if first["type"] in {"string_type", "int_type", "bool_type"}:
            raise InvalidRequestBody(f"Invalid request body: {field} must be a string or null.") from None
        raise InvalidInput(f"Invalid input {field}: {first['msg']}.") from None
    if body.Comment is None or not body.Comment.strip():
        raise MissingRequiredParameter("Comment")
    if len(body.Comment) > max_comment_length:
        raise InvalidInput(f"Invalid input Comment: longer than {max_comment_length} characters.")
    return body


class MachineActionOut(BaseModel):
    """A MachineAction as the API returns it."""

    model_config = ConfigDict(populate_by_name=True)

    odata_context: str = Field(alias="@odata.context")
    id: str
    type: str
    title: str | None
    requestor: str
    requestorComment: str
    status: str
    machineId: str
    computerDnsName: str | None
    creationDateTimeUtc: str
    lastUpdateDateTimeUtc: str
    cancellationRequestor: str | None
    cancellationComment: str | None
    cancellationDateTimeUtc: str | None
    errorHResult: int
    scope: str | None
    externalId: str | None
    requestSource: str
    relatedFileInfo: Any | None
    commands: list[Any]
    troubleshootInfo: Any | None


class MachineOut(BaseModel):
    """A Machine as the API returns it."""

    model_config = ConfigDict(populate_by_name=True)

    odata_context: str = Field(alias="@odata.context")
    id: str
    computerDnsName: str
    firstSeen: str
    lastSeen: str
    osPlatform: str
    osProcessor: str | None
    version: str | None
    osBuild: int | None
    lastIpAddress: str | None
    lastExternalIpAddress: str | None
    agentVersion: str | None
    healthStatus: str
    deviceValue: str
    rbacGroupId: int | None
    rbacGroupName: str | None
    riskScore: str
    exposureLevel: str
    isAadJoined: bool
    aadDeviceId: str | None
    machineTags: list[str]
    onboardingStatus: str
    osArchitecture: str | None
    ipAddresses: list[dict[str, Any]]
    managedBy: str | None
    managedByStatus: str | None
    isPotentialDuplication: bool
    isExcluded: bool


class ErrorDetail(BaseModel):
    """The inner error object."""

    code: str
    message: str
    target: str


class ErrorEnvelope(BaseModel):
    """Every error body: ``{"error": {"code", "message", "target"}}``."""

    error: ErrorDetail


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorEnvelope, "description": text}
    for code, text in {
        400: "Bad Request",
        401: "Unauthorized",
        403: "Forbidden",
        404: "Not Found",
        429: "Too Many Requests",
        500: "Internal Server Error",
    }.items()
}
