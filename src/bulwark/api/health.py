"""Liveness (``/healthz``) and readiness (``/readyz``) for load balancers and orchestrators.

Both are unauthenticated, so both are cheap and say nothing an outsider could use: no versions of
internals, no error text, no addresses. ``/readyz`` checks that the database answers and is migrated
to this version's head, and that Redis answers when one is configured. However often it is called,
each process runs at most one check at a time and reuses the last answer for a second, so it cannot
be used to load the database or tie up the threads that serve the API.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from fastapi import APIRouter
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from bulwark import __version__
from bulwark.api.wire import json_response
from bulwark.bootstrap import database_revisions

if TYPE_CHECKING:
    from redis import Redis

log = logging.getLogger("bulwark.health")
_NO_STORE = {"Cache-Control": "no-store"}

DATABASE_UNREACHABLE = "database unreachable"
DATABASE_NOT_MIGRATED = "database is not migrated to this version (run: bulwark db upgrade)"
REDIS_UNREACHABLE = "redis unreachable"
CHECK_TIMED_OUT = "readiness checks did not answer in time"


class ReadinessProbe:
    """Checks the database and Redis; one check at a time per process, each answer reused briefly."""

    def __init__(self, engine: Engine, redis_url: str | None, *, reuse_seconds: float = 1.0, timeout_seconds: float = 3.0):
        self._engine = engine
        self._redis_url = redis_url
        self._redis: Redis | None = None
        self._reuse_seconds = reuse_seconds
        self._timeout_seconds = timeout_seconds
        self._answer: str | None = None
        self._answered_at = float("-inf")
        self._running: asyncio.Task[str | None] | None = None

    async def problem(self) -> str | None:
        """Why the service is not ready, or None when it is."""
        if time.monotonic() - self._answered_at < self._reuse_seconds:
            return self._answer
        if self._running is None:
            self._running = asyncio.create_task(self._refresh())
        try:
            # Shielded: a caller that gives up leaves the single running check to finish for the next one.
            return await asyncio.wait_for(asyncio.shield(self._running), self._timeout_seconds)
        except TimeoutError:
            return CHECK_TIMED_OUT

    async def _refresh(self) -> str | None:
        try:
            answer = await run_in_threadpool(self._check)
        finally:
            self._running = None
        self._answer, self._answered_at = answer, time.monotonic()
        return answer

    def _check(self) -> str | None:
        try:
            current, head = database_revisions(self._engine)
        except Exception as exc:
            log.warning("readiness: database check failed: %s", exc.__class__.__name__)
            return DATABASE_UNREACHABLE
        if current is None or current != head:
            log.warning("readiness: database at revision %s, this version needs %s", current, head)
            return DATABASE_NOT_MIGRATED
        if self._redis_url:
            try:
                self._redis_client().ping()
            except Exception as exc:
                log.warning("readiness: redis check failed: %s", exc.__class__.__name__)
                return REDIS_UNREACHABLE
        return None

    def _redis_client(self) -> Redis:
        if self._redis is None:
            from redis import Redis

            self._redis = Redis.from_url(self._redis_url or "", socket_connect_timeout=1, socket_timeout=1)
        return self._redis

    def close(self) -> None:
        """Release the Redis connection."""
        if self._redis is not None:
            self._redis.close()


def health_router(probe: ReadinessProbe) -> APIRouter:
    """``/healthz`` (the process answers) and ``/readyz`` (and can do its work)."""
    router = APIRouter(include_in_schema=False)

    @router.get("/healthz")
    async def healthz() -> Response:
        return json_response({"status": "ok", "version": __version__}, headers=_NO_STORE)

    @router.get("/readyz")
    async def readyz() -> Response:
        problem = await probe.problem()
        if problem is None:
            return json_response({"status": "ready"}, headers=_NO_STORE)
        return json_response({"status": "unavailable", "reason": problem}, 503, headers=_NO_STORE)

    return router
