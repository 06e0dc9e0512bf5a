"""What an operator watches: one access-log line and two metric updates per request, and ``/metrics``.

The access log replaces uvicorn's (which ``bulwark serve`` turns off): one line per request with
the operation id, status, duration, caller and request id (a JSON object with BULWARK_LOG_JSON).

Who may read ``/metrics``: it is not for API callers, and not for the internet. Without
BULWARK_METRICS_TOKEN only clients on this host's loopback interface may read it; with the token
set, every reader must present it as a bearer token (use this behind a reverse proxy on the same
host, where every request would otherwise come from loopback). BULWARK_METRICS_ENABLED=false
turns the route off.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import time
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bulwark.api.request_state import scope_state
from bulwark.domain.errors import Forbidden, NotFound, Unauthorized
from bulwark.metrics import CONTENT_TYPE, Metrics
from bulwark.settings import Settings

access_log = logging.getLogger("bulwark.access")
UNMATCHED = "unmatched"
_MAX_LOGGED_PATH = 512


def operation_of(scope: Scope) -> str:
    """The operation that served a request: its operation id, the route's name, or ``unmatched``.

    Never the path: a label or log field taken from what a caller sends could grow without bound.
    """
    route = scope.get("route")
    if route is None:
        return UNMATCHED
    return getattr(route, "operation_id", None) or getattr(route, "name", None) or UNMATCHED


def caller_of(scope: Scope) -> str:
    """The authenticated caller, as ``application:<name>`` or ``user:<upn>``; ``-`` before or without authentication."""
    state = scope_state(scope)
    principal = state.principal if state else None
    return f"{principal.kind.value}:{principal.name}" if principal else "-"


class ObservabilityMiddleware:
    """Time each request; count it by operation and status; write its access-log line."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        # The series of each operation and status, looked up once (both label sets are bounded).
        self._counted: dict[tuple[str, int], Any] = {}
        self._timed: dict[str, Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets if the app fails before answering

        async def send_and_note_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note_status)
        finally:
            self.observe(scope, status, time.perf_counter() - started)

    def observe(self, scope: Scope, status: int, seconds: float) -> None:
        """Record one finished request."""
        operation = operation_of(scope)
        counted = self._counted.get((operation, status))
        if counted is None:
            counted = self._counted[(operation, status)] = self.metrics.requests.labels(operation, str(status))
        timed = self._timed.get(operation)
        if timed is None:
            timed = self._timed[operation] = self.metrics.latency.labels(operation)
        counted.inc()
        timed.observe(seconds)
        if access_log.isEnabledFor(logging.INFO):
            # The path as it came on the wire (percent-encoded: no control characters), without the query.
            path = scope.get("raw_path", b"").decode("latin-1")[:_MAX_LOGGED_PATH] or scope["path"]
            caller = caller_of(scope)
            state = scope_state(scope)
            request_id = state.request_id if state else ""
            duration_ms = round(seconds * 1000, 2)
            access_log.info(
                '%s %s %s %.2fms op=%s caller="%s" request_id=%s',
                scope["method"],
                path,
                status,
                duration_ms,
                operation,
                caller,
                request_id,
                extra={
                    "method": scope["method"],
                    "path": path,
                    "status": status,
                    "duration_ms": duration_ms,
                    "operation": operation,
                    "caller": caller,
                    "request_id": request_id,
                },
            )


def _is_loopback(host: str | None) -> bool:
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def metrics_router(metrics: Metrics, settings: Settings) -> APIRouter:
    """``GET /metrics``: the Prometheus text exposition, for the readers described above."""
    router = APIRouter(include_in_schema=False)
    token = settings.metrics_token.get_secret_value().encode() if settings.metrics_token else None

    @router.get("/metrics", name="metrics")
    async def read_metrics(request: Request) -> Response:
        if not settings.metrics_enabled:
            raise NotFound()
        if token is not None:
            scheme, _, presented = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip().encode(), token):
                raise Unauthorized("Metrics need the bearer token configured in BULWARK_METRICS_TOKEN.")
        elif not _is_loopback(request.client.host if request.client else None):
            raise Forbidden("Metrics are readable from this host only (or set BULWARK_METRICS_TOKEN).")
        return Response(metrics.exposition(), media_type=CONTENT_TYPE, headers={"Cache-Control": "no-store"})

    return router
