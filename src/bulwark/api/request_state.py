"""What one HTTP request carries between the middleware, its dependencies, its route and the error handlers."""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.requests import HTTPConnection
from starlette.types import Scope

from bulwark.domain.access import Principal
from bulwark.domain.control import ControlSnapshot

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
    # The signed-in console user (``bulwark.api.console.routes.ConsoleUser``), for its error pages.
    console_user: object | None = None
    # Headers every response to this request carries, whatever writes it (such as the RateLimit fields).
    response_headers: dict[str, str] = field(default_factory=dict)
    # On a test server with the control API: the control state read once for this request.
    control: ControlSnapshot | None = None
    # The body crossed the size limit mid-stream: nothing may read it again (the refusal audit included).
    body_refused: bool = False
    # An unauthenticated source past its budget: its refusal is answered but not audited.
    audit_skipped: bool = False

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
    return state_of_scope(request.scope)


def state_of_scope(scope: Scope) -> RequestState:
    """The state of the request ``scope`` belongs to (for ASGI middleware, which has no Request)."""
    state = scope.setdefault("state", {})
    found = state.get(_SCOPE_KEY)
    if found is None:
        found = state[_SCOPE_KEY] = RequestState(request_id="")
    return found
