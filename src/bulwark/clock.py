"""Clocks: the system clock in production, a frozen one in tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """Anything that tells the current time as a timezone-aware UTC datetime."""

    def now(self) -> datetime: ...


class SystemClock:
    """The real wall clock."""

    def now(self) -> datetime:
        """Return the current UTC time."""
        return datetime.now(UTC)


class FrozenClock:
    """A clock that only moves when told to, so tests never sleep."""

    def __init__(self, now: datetime | None = None) -> None:
        self._now = now or datetime(2026, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        """Return the frozen time."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds``."""
        self._now = self._now + timedelta(seconds=seconds)


class OffsetClock:
    """A clock running ``offset`` seconds ahead of another: a test server's clock, moved on demand.

    Only the fleet and its actions read it (timestamps, timeouts, the sweeper); tokens keep the
    real clock, so callers' tokens stay valid however far it moves.
    """

    def __init__(self, base: Clock, offset_seconds: float = 0.0) -> None:
        self.base = base
        self.offset_seconds = offset_seconds

    def now(self) -> datetime:
        """The base clock's time plus the offset."""
        return self.base.now() + timedelta(seconds=self.offset_seconds)
