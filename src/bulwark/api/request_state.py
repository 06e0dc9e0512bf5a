"""What one HTTP request carries between the middleware, its dependencies, its route and the error handlers."""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.requests import HTTPConnection
from starlette.types import Scope

from bulwark.domain.access import Principal

# The one entry Bulwark keeps in the ASGI scope's state; everything else is a typed field below.
_SCOPE_KEY = "bulwark"


@dataclass(slots=True)
class RequestState:
    """Per-request values, created by ``RequestIdMiddleware`` and read through ``request_state``.

    ``comment_parsed`` stays false until a route has parsed the body; for a request refused before
    that, the refusal audit reads the Comment from the unparsed body itself.
    """

    request_id: str
    # The authenticated caller, kept for the audit of a later refusal.
    principal: Principal | None = None
    # The request's Comment once the route parsed its body (None: the body had none).
    comment: str | None = None
    comment_parsed: bool = False
    # Headers every response to this request carries, whatever writes it (such as the RateLimit fields).
    response_headers: dict[str, str] = field(default_factory=dict)

    def remember_comment(self, comment: str | None) -> None:
        """Keep the request's comment for the audit of a later refusal."""
        self.comment = comment
        self.comment_parsed = True

    def add_response_headers(self, headers: dict[str, str]) -> None:
        """Headers the response will carry, whatever route or error handler writes it."""
        self.response_headers.update(headers)


def start_request_state(scope: Scope, request_id: str) -> RequestState:
    """Create the request's state (the request-id middleware does, once per request)."""
    state = RequestState(request_id=request_id)
    scope.setdefault("state", {})[_SCOPE_KEY] = state
    return state


def scope_state(scope: Scope) -> RequestState | None:
    """The state of the request ``scope`` belongs to, for ASGI middleware; None before the request-id middleware ran."""
    found = scope.get("state", {}).get(_SCOPE_KEY)
    return found if isinstance(found, RequestState) else None


def request_state(request: HTTPConnection) -> RequestState:
    """The request's state; an empty one if the request did not pass through the middleware."""
    state = request.scope.setdefault("state", {})
    found = state.get(_SCOPE_KEY)
    if found is None:
        found = state[_SCOPE_KEY] = RequestState(request_id="")
    return found
