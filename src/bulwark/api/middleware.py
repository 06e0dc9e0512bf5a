"""ASGI middleware: a request id on every request and response; the authentication-off warning; the
request-size limit and the allowed hosts, both enforced before any route runs."""

from __future__ import annotations

import orjson
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bulwark.api.errors import REQUEST_ID_HEADER
from bulwark.api.request_state import start_request_state, state_of_scope
from bulwark.ids import new_uuid


class RequestIdMiddleware:
    """Give each request its ``RequestState`` and an id, and echo the id in a header.

    Also writes the headers that dependencies queued in ``RequestState.response_headers`` (such
    as the RateLimit fields), so they reach every response, successful or not.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = new_uuid()
        state = start_request_state(scope, request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                extra = {REQUEST_ID_HEADER: request_id, **state.response_headers}
                for name, value in extra.items():
                    if name.lower().encode() not in present:
                        headers.append((name.lower().encode(), value.encode("latin-1")))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_id)


AUTH_DISABLED_HEADER = ("Bulwark-Warning", "authentication disabled")


class AuthDisabledWarningMiddleware:
    """Says on every response that authentication is off, so nobody mistakes such a server for a safe one."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_warning(message: Message) -> None:
            if message["type"] == "http.response.start":
                name, value = AUTH_DISABLED_HEADER
                message["headers"] = [*message.get("headers", []), (name.lower().encode(), value.encode())]
            await send(message)

        await self.app(scope, receive, send_with_warning)


class BodyTooLarge(StarletteHTTPException):
    """Raised from ``receive`` when a body grows past the limit; the error handlers answer 413.

    An HTTPException because FastAPI turns any other exception raised while it parses a body
    into a 400; this one it lets through to the envelope.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"The request body is larger than {limit} bytes.")


class BodySizeLimitMiddleware:
    """One request-size limit for every route, enforced before anything parses the body.

    A declared ``Content-Length`` above the limit (or one that is not a number) is answered 413
    at once, without calling the app, reading the body or authenticating the caller. A body sent
    without a length (chunked) is counted as it arrives; the chunk that crosses the limit raises
    ``BodyTooLarge`` inside the app, which answers 413 in the error envelope. Either way at most
    ``limit`` bytes are ever held in memory.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = [value for name, value in scope.get("headers", []) if name == b"content-length"]
        if declared:
            text = declared[0].decode("latin-1").strip()
            if len(declared) > 1 or not text.isdigit():
                await refuse(scope, send, 400, "InvalidRequest", "The Content-Length header is not a single number.")
                return
            if int(text) > self.limit:
                await refuse(scope, send, 413, "PayloadTooLarge", f"The request body is larger than {self.limit} bytes.")
                return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    # Nothing may read this body again (the audit of the refusal included).
                    state_of_scope(scope).body_refused = True
                    raise BodyTooLarge(self.limit)
            return message

        await self.app(scope, counting_receive, send)


def host_name(header: str) -> str | None:
    """The host name of a Host header (lowercase, no port, IPv6 without brackets); None if malformed."""
    value = header.strip().lower()
    if value.startswith("["):
        name, sep, rest = value[1:].partition("]")
        if not sep or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            return None
        return name
    name, _, port = value.partition(":")
    if port and not port.isdigit():
        return None
    return name or None


class AllowedHostsMiddleware:
    """Refuse requests addressed to a host name not in ``allowed`` (400 in the error envelope).

    Links Bulwark writes (``@odata.context``, ``@odata.nextLink``, an onboarding package's
    ``serverUrl``) are built from the public base URL when one is set, else from the request's
    own base; checking Host here means a caller can never make them point somewhere else, and a
    DNS-rebinding page cannot reach the server through a name of its own. ``"*"`` allows any host.
    """

    def __init__(self, app: ASGIApp, allowed: frozenset[str]) -> None:
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or "*" in self.allowed:
            await self.app(scope, receive, send)
            return
        hosts = [value for name, value in scope.get("headers", []) if name == b"host"]
        if not hosts:
            # HTTP/1.0 without Host: links use the address the server listens on.
            await self.app(scope, receive, send)
            return
        name = host_name(hosts[0].decode("latin-1")) if len(hosts) == 1 else None
        if name is None or name not in self.allowed:
            await refuse(scope, send, 400, "InvalidHost", "The Host header names a host this server does not answer for.")
            return
        await self.app(scope, receive, send)


async def refuse(scope: Scope, send: Send, status: int, code: str, message: str) -> None:
    """Answer with the error envelope before any route runs."""
    request_id = state_of_scope(scope).request_id
    body = orjson.dumps({"error": {"code": code, "message": message, "target": request_id}})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
