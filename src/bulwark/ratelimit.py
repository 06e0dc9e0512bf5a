"""Per-caller, per-operation rate limits on the `limits` library, shared through Redis when configured."""

from __future__ import annotations

import logging
import math
import threading
import time
import zlib
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeAlias
from urllib.parse import quote, urlsplit

from limits import RateLimitItem, parse_many
from limits.errors import StorageError
from limits.storage import MemoryStorage, RedisStorage, Storage, storage_from_string
from limits.strategies import MovingWindowRateLimiter

logger = logging.getLogger(__name__)

MDE_DEFAULT_LIMITS = "100/minute;1500/hour"
"""The live service's published limits: both windows must allow a call."""

LIMITS_OFF = "off"
"""Policy string that turns limiting off (for the default or for one operation)."""

DEFAULT_REDIS_KEY_PREFIX = "bulwark:ratelimit"

UNAUTHENTICATED_OPERATION = "unauthenticated"
"""The operation name under which refused unauthenticated requests count, per source address."""

FailMode: TypeAlias = Literal["open", "closed"]
Clock: TypeAlias = Callable[[], float]

_REDIS_SCHEMES = frozenset({"redis", "rediss", "redis+unix"})
_LOCK_STRIPES = 64
# Redis reports a window's oldest call rounded to 14 significant digits (within 50 microseconds
# for present-day timestamps); waits are computed from a moment this much later so that the
# rounding can never shorten them.
_TIMESTAMP_SLACK = 0.0001


@dataclass(frozen=True, slots=True)
class RateLimitWindow:
    """One quota: at most `limit` calls in any `seconds`-long span, advertised under `name`."""

    name: str
    limit: int
    seconds: int
    item: RateLimitItem = field(repr=False, compare=False)

    @classmethod
    def from_item(cls, item: RateLimitItem) -> RateLimitWindow:
        """Wrap a parsed `limits` item, naming it after its window ("per-minute", "per-10-seconds")."""
        unit = item.GRANULARITY.name
        name = f"per-{unit}" if item.multiples == 1 else f"per-{item.multiples}-{unit}s"
        return cls(name=name, limit=item.amount, seconds=item.get_expiry(), item=item)


def parse_windows(spec: str) -> tuple[RateLimitWindow, ...]:
    """Parse "100/minute;1500/hour" (any `limits` notation) or "off" into windows, shortest first.

    "off" gives no windows. Raises ValueError for unparsable text, a limit below 1 or two windows
    of the same length (their headers would be indistinguishable).
    """
    if spec.strip().lower() == LIMITS_OFF:
        return ()
    windows = sorted((RateLimitWindow.from_item(item) for item in parse_many(spec)), key=lambda w: w.seconds)
    if not windows:
        raise ValueError(f"no rate limit found in {spec!r}")
    for window in windows:
        if window.limit < 1:
            raise ValueError(f"rate limit {spec!r}: use 'off' rather than a limit below 1")
    lengths = [window.seconds for window in windows]
    if len(set(lengths)) != len(lengths):
        raise ValueError(f"rate limit {spec!r} has two windows of the same length")
    return tuple(windows)


@dataclass(frozen=True)
class RateLimitPolicy:
    """Which windows apply to each API operation: a default, and per-operation overrides.

    An operation mapped to no windows (the string "off") is not limited.
    """

    default: tuple[RateLimitWindow, ...]
    overrides: Mapping[str, tuple[RateLimitWindow, ...]] = field(default_factory=dict)

    @classmethod
    def parse(cls, default: str = MDE_DEFAULT_LIMITS, overrides: Mapping[str, str] | None = None) -> RateLimitPolicy:
        """Build a policy from strings, e.g. `parse("100/minute;1500/hour", {"health": "off"})`."""
        parsed = {operation: parse_windows(spec) for operation, spec in (overrides or {}).items()}
        return cls(default=parse_windows(default), overrides=parsed)

    def windows_for(self, operation: str) -> tuple[RateLimitWindow, ...]:
        """The windows that all must allow a call to `operation`."""
        return self.overrides.get(operation, self.default)


@dataclass(frozen=True, slots=True)
class RateLimitDecision:
    """What to do with one call.

    - `allowed`: serve the call. When False and `storage_failed` is False the answer is
      429 TooManyRequests with `headers` (which then include Retry-After); when False and
      `storage_failed` is True the limit store could not be reached in fail-closed mode: answer 503.
    - `retry_after`: whole seconds after which the same call will pass if nothing else consumes
      the caller's budget meanwhile; set only on a refusal by the limits.
    - `headers`: response headers to send with the answer, whatever it is (may be empty).
    - `storage_failed`: the limit store failed; the call was let through (fail open) or refused
      (fail closed) without being counted.
    - `violated_policies`: names of the windows that refused the call (as in RateLimit-Policy).
    """

    allowed: bool
    retry_after: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    storage_failed: bool = False
    violated_policies: tuple[str, ...] = ()


@dataclass
class RateLimiterStats:
    """Counters a metrics endpoint can export; updated under a lock, so exact under threads.

    `storage_errors` counts checks decided by the fail mode because the limit store failed
    (or had failed less than the retry interval before).
    """

    checks: int = 0
    allowed: int = 0
    refused: int = 0
    storage_errors: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def record(self, decision: RateLimitDecision) -> None:
        """Count one decision."""
        with self._lock:
            self.checks += 1
            if decision.allowed:
                self.allowed += 1
            else:
                self.refused += 1
            if decision.storage_failed:
                self.storage_errors += 1


class RateLimiter(Protocol):
    """Decides whether a caller may call an operation now."""

    stats: RateLimiterStats

    def check(self, caller_key: str, operation: str) -> RateLimitDecision:
        """Count the call against every window of `operation` if all allow it; otherwise count nothing."""
        ...

    def peek(self, caller_key: str, operation: str) -> RateLimitDecision:
        """Whether a call would be allowed now, counting nothing (a refusal carries Retry-After)."""
        ...

    def close(self) -> None:
        """Release connections held by the limiter."""
        ...


def caller_key_for(tenant_id: str, *, application_id: str | None = None, user_id: str | None = None) -> str:
    """The budget owner of a call: the tenant and either its application (app tokens) or its user."""
    if (application_id is None) == (user_id is None):
        raise ValueError("give exactly one of application_id and user_id")
    if application_id is not None:
        return f"{tenant_id}:app:{application_id}"
    return f"{tenant_id}:user:{user_id}"


def format_policy_header(windows: tuple[RateLimitWindow, ...]) -> str:
    """RateLimit-Policy value (draft-ietf-httpapi-ratelimit-headers-10): `"per-minute";q=100;w=60, ...`."""
    return ", ".join(f'"{window.name}";q={window.limit};w={window.seconds}' for window in windows)


def _seconds_until(moment: float, now: float) -> int:
    """Whole seconds to wait so that a retry lands strictly after `moment`.

    A call counts in its window up to and including the instant it is exactly one window old
    (in memory and in Redis alike), so an exact whole number of seconds must round up by one.
    """
    return max(1, math.floor(moment + _TIMESTAMP_SLACK - now) + 1)


@dataclass(frozen=True, slots=True)
class _WindowState:
    window: RateLimitWindow
    remaining: int
    reset_at: float
    used: bool


class WindowRateLimiter:
    """Moving-window limiter over a `limits` storage (memory or Redis); every window must allow a call.

    Strategy: `limits`' moving window. It keeps the timestamp of each counted call, so "100 per
    minute" means at most 100 calls in any 60 seconds (a fixed window lets 200 through around a
    window boundary), and the moment a refused caller may come back is exact: when the oldest
    counted call leaves the window. That makes Retry-After honest by construction; the sliding
    window counter only estimates the previous window's calls, so the time it takes to decay is an
    approximation too, and a fixed window's reset is honest but its burst is not. The price is
    storage: one list entry per counted call (up to 100 + 1,500 short timestamps, a few tens of KB,
    per busy caller and operation in Redis) and O(log limit) list reads per check in one Lua script
    per window. That is small for these limits; limits in the tens of thousands would call for
    the sliding window counter instead.

    A check reads every window first and consumes only when all allow, so refused calls cost
    nothing. Reading and consuming are separate storage calls. In memory a lock per caller and
    operation (striped) makes them atomic. With Redis, two concurrent calls of one caller (from
    any processes) can both read "one left": each window's consume is atomic in Redis, so no
    window ever admits more than its limit, and the loser is refused. The cost of that race is
    confined to the racing caller: when it loses on a later window, the windows consumed before
    it keep that call. Windows are consumed tightest first (fewest remaining), where losing is
    most likely, which makes that rare. (A lock held across Redis calls would queue unrelated
    callers behind a slow Redis, and would not stop the race between processes anyway.)

    When the store fails, the check is decided by `fail_mode`, and for `storage_retry_interval`
    seconds after that checks are decided the same way without touching the store, so that an
    unresponsive Redis costs one timeout per interval rather than one per request.

    Timestamps come from the clock of each process that records a call, so hosts sharing Redis
    need synchronised clocks (NTP); skew shifts Retry-After by the skew.
    """

    def __init__(
        self,
        storage: Storage,
        policy: RateLimitPolicy,
        fail_mode: FailMode = "open",
        clock: Clock = time.time,
        storage_retry_interval: float = 1.0,
    ) -> None:
        """Limit calls per `policy` in `storage`, which must be built with `wrap_exceptions=True`.

        `clock` must be the clock the storage reads (time.time unless a test replaces both).
        """
        if fail_mode not in ("open", "closed"):
            raise ValueError(f"fail_mode must be 'open' or 'closed', not {fail_mode!r}")
        self.stats = RateLimiterStats()
        self._storage = storage
        self._strategy = MovingWindowRateLimiter(storage)
        self._policy = policy
        self._fail_mode = fail_mode
        self._clock = clock
        self._locks: list[threading.Lock] | None = None
        if isinstance(storage, MemoryStorage):
            self._locks = [threading.Lock() for _ in range(_LOCK_STRIPES)]
        self._policy_headers: dict[tuple[RateLimitWindow, ...], str] = {}
        self._storage_retry_interval = storage_retry_interval
        self._storage_retry_at = -math.inf  # time.monotonic() before which the store is not tried
        self._storage_failing = False
        self._last_failure_warning = -math.inf

    def check(self, caller_key: str, operation: str) -> RateLimitDecision:
        """Count the call against every window of `operation` if all allow it; otherwise count nothing."""
        windows = self._policy.windows_for(operation)
        if not windows:
            decision = RateLimitDecision(allowed=True)
        elif time.monotonic() < self._storage_retry_at:
            decision = self._storage_failure(windows)
        else:
            # Quoting keeps "/" (the `limits` key separator) inside a part, so ("a/b", "c") and
            # ("a", "b/c") can never share a budget.
            identifiers = (quote(caller_key, safe=""), quote(operation, safe=""))
            try:
                with self._lock_for(identifiers):
                    decision = self._check_windows(windows, identifiers)
            except StorageError as exc:
                self._storage_retry_at = time.monotonic() + self._storage_retry_interval
                self._warn_storage_failure(exc)
                decision = self._storage_failure(windows)
            else:
                if self._storage_failing:
                    self._storage_failing = False
                    logger.info("rate limit store answers again; limits apply")
        self.stats.record(decision)
        return decision

    def peek(self, caller_key: str, operation: str) -> RateLimitDecision:
        """Whether a call would be allowed now, counting nothing (a refusal carries Retry-After).

        For budgets counted only on some outcomes, such as failed sign-ins: peek before the
        attempt, ``check`` after a failure. A failing store is decided by the fail mode.
        """
        windows = self._policy.windows_for(operation)
        if not windows:
            return RateLimitDecision(allowed=True)
        if time.monotonic() < self._storage_retry_at:
            return self._storage_failure(windows)
        identifiers = (quote(caller_key, safe=""), quote(operation, safe=""))
        try:
            with self._lock_for(identifiers):
                states = self._read(windows, identifiers)
        except StorageError as exc:
            self._storage_retry_at = time.monotonic() + self._storage_retry_interval
            self._warn_storage_failure(exc)
            return self._storage_failure(windows)
        exhausted = [state.window for state in states if state.remaining < 1]
        if exhausted:
            return self._refusal(states, exhausted)
        return RateLimitDecision(allowed=True)

    def close(self) -> None:
        """Close the Redis connection pool, if any."""
        if isinstance(self._storage, RedisStorage):
            connection: Any = self._storage.get_connection()  # a redis client; limits types it without close()
            connection.close()

    def _lock_for(self, identifiers: tuple[str, str]) -> AbstractContextManager[object]:
        if self._locks is None:
            return nullcontext()
        return self._locks[zlib.crc32("\0".join(identifiers).encode()) % _LOCK_STRIPES]

    def _check_windows(self, windows: tuple[RateLimitWindow, ...], identifiers: tuple[str, str]) -> RateLimitDecision:
        states = self._read(windows, identifiers)
        exhausted = [state.window for state in states if state.remaining < 1]
        if exhausted:
            return self._refusal(states, exhausted)
        for state in sorted(states, key=lambda s: (s.remaining, s.window.seconds)):
            if not self._strategy.hit(state.window.item, *identifiers):
                # A concurrent call of the same caller (another process, with Redis) took the
                # last slot between our read and this hit.
                return self._refusal(self._read(windows, identifiers), [state.window])
        now = self._clock()
        consumed = [_WindowState(state.window, state.remaining - 1, state.reset_at, used=True) for state in states]
        return RateLimitDecision(allowed=True, headers=self._headers(consumed, now))

    def _read(self, windows: tuple[RateLimitWindow, ...], identifiers: tuple[str, str]) -> list[_WindowState]:
        states = []
        for window in windows:
            reset_at, remaining = self._strategy.get_window_stats(window.item, *identifiers)
            remaining = max(0, remaining)
            states.append(_WindowState(window, remaining, reset_at, used=remaining < window.limit))
        return states

    def _refusal(self, states: list[_WindowState], refusing: list[RateLimitWindow]) -> RateLimitDecision:
        # Read after the storage so that the wait is measured from no earlier than the answer.
        now = self._clock()
        waits = []
        for state in states:
            if state.window in refusing:
                # A refusing window that shows a free slot now was refused at the very instant
                # its oldest call left (or a racing call's did): a slot is free within a second.
                waits.append(_seconds_until(state.reset_at, now) if state.remaining < 1 else 1)
        retry_after = max(waits)
        headers = self._headers(states, now)
        headers["Retry-After"] = str(retry_after)
        return RateLimitDecision(
            allowed=False,
            retry_after=retry_after,
            headers=headers,
            violated_policies=tuple(window.name for window in refusing),
        )

    def _headers(self, states: list[_WindowState], now: float) -> dict[str, str]:
        """RateLimit and RateLimit-Policy per draft-ietf-httpapi-ratelimit-headers-10.

        RateLimit: `"per-minute";r=<calls left>;t=<seconds until one more call is allowed>`, one
        item per window; `t` is left out for a window with no counted call (its whole quota is
        there). The policy names are the same in both fields.
        """
        items = []
        for state in states:
            item = f'"{state.window.name}";r={state.remaining}'
            if state.used:
                item += f";t={_seconds_until(state.reset_at, now)}"
            items.append(item)
        return {
            "RateLimit-Policy": self._policy_header(tuple(state.window for state in states)),
            "RateLimit": ", ".join(items),
        }

    def _policy_header(self, windows: tuple[RateLimitWindow, ...]) -> str:
        header = self._policy_headers.get(windows)
        if header is None:
            header = self._policy_headers[windows] = format_policy_header(windows)
        return header

    def _storage_failure(self, windows: tuple[RateLimitWindow, ...]) -> RateLimitDecision:
        return RateLimitDecision(
            allowed=self._fail_mode == "open",
            storage_failed=True,
            headers={"RateLimit-Policy": self._policy_header(windows)},
        )

    def _warn_storage_failure(self, exc: StorageError) -> None:
        self._storage_failing = True
        # One warning a minute at most: an outage must not flood the log with one line per request.
        moment = time.monotonic()
        if moment - self._last_failure_warning < 60:
            return
        self._last_failure_warning = moment
        action = "letting calls through unlimited" if self._fail_mode == "open" else "refusing calls"
        logger.warning(
            "rate limit store failed (%s: %s); %s until it answers (%d store errors so far)",
            type(exc.storage_error).__name__,
            exc.storage_error,
            action,
            self.stats.storage_errors + 1,
        )


class UnlimitedRateLimiter:
    """Allows every call and sends no rate limit headers: limits turned off."""

    def __init__(self) -> None:
        """Start with zeroed counters."""
        self.stats = RateLimiterStats()

    def check(self, caller_key: str, operation: str) -> RateLimitDecision:
        """Allow the call."""
        decision = RateLimitDecision(allowed=True)
        self.stats.record(decision)
        return decision

    def peek(self, caller_key: str, operation: str) -> RateLimitDecision:
        """Allow the call."""
        return RateLimitDecision(allowed=True)

    def close(self) -> None:
        """Nothing to release."""


def create_rate_limiter(
    storage_uri: str | None,
    policy: RateLimitPolicy,
    fail_mode: FailMode = "open",
    enabled: bool = True,
    *,
    key_prefix: str = DEFAULT_REDIS_KEY_PREFIX,
    storage_timeout: float = 0.25,
    storage_retry_interval: float = 1.0,
    clock: Clock = time.time,
) -> RateLimiter:
    """Build the limiter the settings describe.

    `storage_uri`: None or "memory://" for this process alone; "redis://host:port/db" (also
    "rediss://", "redis+unix://") to share budgets among all processes using that Redis, under
    `key_prefix`. Nothing connects until the first check, so an unreachable Redis never stops
    start-up; a check waits at most `storage_timeout` seconds per Redis call before applying
    `fail_mode` ("open": allow, "closed": refuse with `storage_failed`), and the following
    `storage_retry_interval` seconds apply it without trying Redis.
    `enabled=False` gives a limiter that allows everything.
    """
    if fail_mode not in ("open", "closed"):
        raise ValueError(f"fail_mode must be 'open' or 'closed', not {fail_mode!r}")
    if not enabled:
        return UnlimitedRateLimiter()
    scheme = urlsplit(storage_uri).scheme if storage_uri else "memory"
    storage: Storage
    if scheme == "memory":
        storage = MemoryStorage(wrap_exceptions=True)
    elif scheme in _REDIS_SCHEMES:
        assert storage_uri is not None
        storage = storage_from_string(
            storage_uri,
            wrap_exceptions=True,
            key_prefix=key_prefix,
            socket_timeout=storage_timeout,
            socket_connect_timeout=storage_timeout,
        )  # type: ignore[assignment]
    else:
        raise ValueError(f"unsupported rate limit storage {scheme!r}: use memory:// or redis://")
    return WindowRateLimiter(storage, policy, fail_mode=fail_mode, clock=clock, storage_retry_interval=storage_retry_interval)
