"""ASGI middleware: a request id on every request and response; the authentication-off warning."""

from __future__ import annotations

import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bulwark.api.errors import REQUEST_ID_HEADER
from bulwark.api.request_state import start_request_state


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
        request_id = str(uuid.uuid4())
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
