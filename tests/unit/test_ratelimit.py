"""Rate limiter behaviour on in-memory storage, driven by a frozen clock."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import limits.storage.memory
import pytest
from limits.storage import MemoryStorage

from bulwark.ratelimit import (
    MDE_DEFAULT_LIMITS,
    RateLimitDecision,
    RateLimitPolicy,
    UnlimitedRateLimiter,
    WindowRateLimiter,
    caller_key_for,
    create_rate_limiter,
    parse_windows,
)

START = 1_700_000_000.0
APP = caller_key_for("tenant-1", application_id="app-1")
OTHER_APP = caller_key_for("tenant-1", application_id="app-2")
OFFBOARD = "machines.offboard"


class FrozenClock:
    """Time that moves only when a test says so; stands in for the `time` module `limits` reads."""

    def __init__(self, start: float) -> None:
        self.now = start

    def time(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FrozenClock:
    frozen = FrozenClock(START)
    # The memory storage calls `time.time()` through its own module's `time` name, so replacing
    # that name freezes the limiter's storage without touching the process-wide clock.
    monkeypatch.setattr(limits.storage.memory, "time", frozen)
    return frozen


def make_limiter(
    clock: FrozenClock, default: str = MDE_DEFAULT_LIMITS, overrides: dict[str, str] | None = None
) -> WindowRateLimiter:
    limiter = create_rate_limiter(None, RateLimitPolicy.parse(default, overrides), clock=clock.time)
    assert isinstance(limiter, WindowRateLimiter)
    return limiter


def call_many(limiter: WindowRateLimiter, count: int, caller: str = APP, operation: str = OFFBOARD) -> list[bool]:
    return [limiter.check(caller, operation).allowed for _ in range(count)]


def service_limits(decision: RateLimitDecision) -> dict[str, dict[str, int]]:
    """Parse the RateLimit header into {policy: {"r": .., "t": ..}}."""
    parsed = {}
    for item in decision.headers["RateLimit"].split(", "):
        name, *params = item.split(";")
        parsed[name.strip('"')] = {key: int(value) for key, value in (p.split("=") for p in params)}
    return parsed


def test_minute_window_allows_100_calls_then_refuses(clock: FrozenClock) -> None:
    limiter = make_limiter(clock)

    assert call_many(limiter, 100) == [True] * 100
    clock.advance(0.5)
    refused = limiter.check(APP, OFFBOARD)

    assert not refused.allowed
    assert not refused.storage_failed
    assert refused.violated_policies == ("per-minute",)
    assert refused.retry_after == 60
    assert refused.headers["Retry-After"] == "60"
    assert service_limits(refused)["per-minute"] == {"r": 0, "t": 60}


@pytest.mark.parametrize("refused_after", [0.25, 0.5, 0.999, 17.3, 59.5])
def test_waiting_retry_after_gets_through_and_a_second_less_does_not(clock: FrozenClock, refused_after: float) -> None:
    limiter = make_limiter(clock, "10/minute")
    call_many(limiter, 4)
    clock.advance(refused_after / 2)
    call_many(limiter, 6)
    clock.advance(refused_after / 2)

    retry_after = limiter.check(APP, OFFBOARD).retry_after
    assert retry_after is not None

    clock.advance(retry_after - 1)
    assert not limiter.check(APP, OFFBOARD).allowed
    clock.advance(1)
    assert limiter.check(APP, OFFBOARD).allowed


def test_retry_after_rounds_a_whole_number_of_seconds_up(clock: FrozenClock) -> None:
    # A call counts until it is strictly more than a window old, so a caller refused exactly
    # 60 s before the oldest call leaves must wait 61 s. (One second less lands exactly on the
    # window edge, where the storage's background expiry may or may not have run yet.)
    limiter = make_limiter(clock, "3/minute")
    call_many(limiter, 3)

    refused = limiter.check(APP, OFFBOARD)
    assert refused.retry_after == 61

    clock.advance(61)
    assert limiter.check(APP, OFFBOARD).allowed


def test_hour_window_refuses_the_1501st_call_until_the_first_calls_are_an_hour_old(clock: FrozenClock) -> None:
    limiter = make_limiter(clock)
    for _ in range(15):
        assert call_many(limiter, 100) == [True] * 100
        clock.advance(60.5)  # the minute window is free again

    refused = limiter.check(APP, OFFBOARD)
    assert not refused.allowed
    assert refused.violated_policies == ("per-hour",)
    # First batch at START, now START + 907.5: it leaves the hour window after 2692.5 s.
    assert refused.retry_after == 2693
    assert service_limits(refused) == {"per-minute": {"r": 100}, "per-hour": {"r": 0, "t": 2693}}

    clock.advance(2692)
    assert not limiter.check(APP, OFFBOARD).allowed
    clock.advance(1)
    assert call_many(limiter, 100) == [True] * 100  # the whole first batch has left the hour


def test_retry_after_covers_every_exhausted_window(clock: FrozenClock) -> None:
    limiter = make_limiter(clock, "2/minute;2/hour")
    call_many(limiter, 2)
    clock.advance(10.5)

    refused = limiter.check(APP, OFFBOARD)

    assert refused.violated_policies == ("per-minute", "per-hour")
    assert refused.retry_after == 3590
    clock.advance(3589)
    assert not limiter.check(APP, OFFBOARD).allowed
    clock.advance(1)
    assert limiter.check(APP, OFFBOARD).allowed


def test_refused_calls_do_not_consume_any_window(clock: FrozenClock) -> None:
    limiter = make_limiter(clock, "2/minute;3/hour")
    assert call_many(limiter, 2) == [True, True]
    assert call_many(limiter, 20) == [False] * 20

    clock.advance(60.5)
    third = limiter.check(APP, OFFBOARD)

    assert third.allowed
    assert service_limits(third)["per-hour"]["r"] == 0
    assert limiter.check(APP, OFFBOARD).violated_policies == ("per-hour",)


def test_refused_calls_leave_the_hour_budget_untouched_at_mde_limits(clock: FrozenClock) -> None:
    limiter = make_limiter(clock)
    call_many(limiter, 100)
    refusals = [limiter.check(APP, OFFBOARD) for _ in range(50)]

    assert all(not decision.allowed for decision in refusals)
    assert {service_limits(decision)["per-hour"]["r"] for decision in refusals} == {1400}
    clock.advance(60.5)
    assert service_limits(limiter.check(APP, OFFBOARD))["per-hour"]["r"] == 1399


def test_a_noisy_caller_does_not_touch_another_callers_budget(clock: FrozenClock) -> None:
    limiter = make_limiter(clock)
    call_many(limiter, 150, caller=APP)

    other = limiter.check(OTHER_APP, OFFBOARD)

    assert other.allowed
    assert service_limits(other)["per-minute"]["r"] == 99
    assert service_limits(other)["per-hour"]["r"] == 1499


def test_users_and_applications_of_one_tenant_have_separate_budgets(clock: FrozenClock) -> None:
    limiter = make_limiter(clock, "1/minute")
    limiter.check(caller_key_for("t", application_id="x"), OFFBOARD)

    assert limiter.check(caller_key_for("t", user_id="x"), OFFBOARD).allowed
    assert not limiter.check(caller_key_for("t", application_id="x"), OFFBOARD).allowed


def test_separators_in_names_cannot_merge_two_budgets(clock: FrozenClock) -> None:
    limiter = make_limiter(clock, "1/minute")
    assert limiter.check("a/b", "c").allowed

    assert limiter.check("a", "b/c").allowed


def test_each_operation_has_its_own_budget(clock: FrozenClock) -> None:
    limiter = make_limiter(clock)
    call_many(limiter, 100, operation=OFFBOARD)

    assert not limiter.check(APP, OFFBOARD).allowed
    listing = limiter.check(APP, "machines.list")
    assert listing.allowed
    assert service_limits(listing)["per-minute"]["r"] == 99


def test_operation_overrides_replace_the_default_and_off_disables(clock: FrozenClock) -> None:
    limiter = make_limiter(clock, overrides={OFFBOARD: "2/minute", "health": "off"})

    assert call_many(limiter, 3, operation=OFFBOARD) == [True, True, False]
    assert call_many(limiter, 101, operation="machines.list") == [True] * 100 + [False]
    health = [limiter.check(APP, "health") for _ in range(2000)]
    assert all(decision.allowed and decision.headers == {} for decision in health)


def test_headers_follow_the_ratelimit_draft(clock: FrozenClock) -> None:
    limiter = make_limiter(clock)
    limiter.check(APP, OFFBOARD)
    clock.advance(20.5)

    second = limiter.check(APP, OFFBOARD)

    assert second.headers == {
        "RateLimit-Policy": '"per-minute";q=100;w=60, "per-hour";q=1500;w=3600',
        "RateLimit": '"per-minute";r=98;t=40, "per-hour";r=1498;t=3580',
    }
    assert second.retry_after is None


def test_a_window_without_calls_reports_its_full_quota_and_no_reset_time(clock: FrozenClock) -> None:
    limiter = make_limiter(clock, "1/minute;1/hour")
    limiter.check(APP, OFFBOARD)
    clock.advance(70)

    refused = limiter.check(APP, OFFBOARD)

    assert refused.violated_policies == ("per-hour",)
    assert service_limits(refused) == {"per-minute": {"r": 1}, "per-hour": {"r": 0, "t": 3531}}
    assert refused.headers["Retry-After"] == "3531"


def test_disabled_limiter_allows_everything_without_headers(clock: FrozenClock) -> None:
    limiter = create_rate_limiter(None, RateLimitPolicy.parse("1/minute"), enabled=False)

    decisions = [limiter.check(APP, OFFBOARD) for _ in range(500)]

    assert isinstance(limiter, UnlimitedRateLimiter)
    assert all(d == RateLimitDecision(allowed=True) for d in decisions)
    assert limiter.stats.checks == 500


def test_policy_off_allows_everything(clock: FrozenClock) -> None:
    limiter = make_limiter(clock, "off")

    assert all(limiter.check(APP, OFFBOARD) == RateLimitDecision(allowed=True) for _ in range(500))


def test_threads_of_one_process_never_exceed_the_limit_nor_charge_refused_calls(clock: FrozenClock) -> None:
    limiter = make_limiter(clock)
    results: list[bool] = []
    results_lock = threading.Lock()

    def hammer() -> None:
        outcome = call_many(limiter, 40)
        with results_lock:
            results.extend(outcome)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert results.count(True) == 100
    assert service_limits(limiter.check(APP, OFFBOARD))["per-hour"]["r"] == 1400
    assert limiter.stats.allowed == 100
    assert limiter.stats.refused == 221


class RacingStorage(MemoryStorage):
    """Memory storage that lets a rival caller run just before the next slot is taken."""

    rival: Callable[[], object] | None = None

    def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        rival, self.rival = self.rival, None
        if rival is not None:
            rival()
        return super().acquire_entry(key, limit, expiry, amount)


def test_losing_the_last_slot_to_another_process_refuses_without_charging_other_windows(
    clock: FrozenClock,
) -> None:
    storage = RacingStorage()
    policy = RateLimitPolicy.parse("1/minute;10/hour")
    ours = WindowRateLimiter(storage, policy, clock=clock.time)
    theirs = WindowRateLimiter(storage, policy, clock=clock.time)  # as another process would
    storage.rival = lambda: theirs.check(APP, OFFBOARD)

    lost = ours.check(APP, OFFBOARD)

    assert not lost.allowed
    assert lost.violated_policies == ("per-minute",)
    assert lost.retry_after == 61
    assert service_limits(lost)["per-hour"]["r"] == 9  # only the winner's call counted


class UnreachableStorage(MemoryStorage):
    """A storage that fails its first `failures` reads and writes, as a store that went away does."""

    def __init__(self, failures: int = 1_000_000) -> None:
        super().__init__(wrap_exceptions=True)
        self.failures_left = failures
        self.attempts = 0

    def _maybe_fail(self) -> None:
        self.attempts += 1
        if self.failures_left > 0:
            self.failures_left -= 1
            raise ValueError("store unreachable")

    def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        self._maybe_fail()
        return super().get_moving_window(key, limit, expiry)

    def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        self._maybe_fail()
        return super().acquire_entry(key, limit, expiry, amount)


def test_fail_open_lets_calls_through_logs_once_and_counts_errors(caplog: pytest.LogCaptureFixture) -> None:
    storage = UnreachableStorage()
    limiter = WindowRateLimiter(storage, RateLimitPolicy.parse("1/minute"), fail_mode="open")

    with caplog.at_level(logging.WARNING, logger="bulwark.ratelimit"):
        decisions = [limiter.check(APP, OFFBOARD) for _ in range(3)]

    assert all(d.allowed and d.storage_failed and d.retry_after is None for d in decisions)
    assert decisions[0].headers == {"RateLimit-Policy": '"per-minute";q=1;w=60'}
    assert limiter.stats.storage_errors == 3
    assert storage.attempts == 1  # within the retry interval the store is left alone
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "store unreachable" in warnings[0].getMessage()


def test_fail_closed_refuses_with_a_storage_failure() -> None:
    limiter = WindowRateLimiter(UnreachableStorage(), RateLimitPolicy.parse("1/minute"), fail_mode="closed")

    decision = limiter.check(APP, OFFBOARD)

    assert not decision.allowed
    assert decision.storage_failed
    assert decision.retry_after is None
    assert "Retry-After" not in decision.headers
    assert limiter.stats.storage_errors == 1


def test_limits_apply_again_once_the_store_answers(caplog: pytest.LogCaptureFixture) -> None:
    limiter = WindowRateLimiter(UnreachableStorage(failures=1), RateLimitPolicy.parse("1/minute"), storage_retry_interval=0)

    with caplog.at_level(logging.INFO, logger="bulwark.ratelimit"):
        during = limiter.check(APP, OFFBOARD)
        after = [limiter.check(APP, OFFBOARD) for _ in range(2)]

    assert during.storage_failed
    assert [d.allowed for d in after] == [True, False]
    assert not any(d.storage_failed for d in after)
    assert any("answers again" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("spec", ["0/minute", "100/minute;200/60 seconds", "lots", ""])
def test_unusable_policies_are_rejected(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_windows(spec)


def test_policy_strings_parse_to_named_windows_shortest_first() -> None:
    windows = parse_windows("1500/hour;100/minute;5/10 seconds")

    assert [(w.name, w.limit, w.seconds) for w in windows] == [
        ("per-10-seconds", 5, 10),
        ("per-minute", 100, 60),
        ("per-hour", 1500, 3600),
    ]
    assert parse_windows("OFF") == ()


def test_factory_rejects_unknown_settings() -> None:
    policy = RateLimitPolicy.parse()
    with pytest.raises(ValueError):
        create_rate_limiter(None, policy, fail_mode="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        create_rate_limiter("memcached://127.0.0.1:11211", policy)


def test_caller_key_needs_exactly_one_principal() -> None:
    with pytest.raises(ValueError):
        caller_key_for("t")
    with pytest.raises(ValueError):
        caller_key_for("t", application_id="a", user_id="u")


def test_peek_counts_nothing_and_refuses_once_the_budget_is_spent(clock: FrozenClock) -> None:
    # Budgets counted only on some outcomes (failed sign-ins): peek before, check after a failure.
    limiter = make_limiter(clock, "3/minute")
    assert all(limiter.peek(APP, OFFBOARD).allowed for _ in range(10))
    assert call_many(limiter, 3) == [True, True, True]
    refused = limiter.peek(APP, OFFBOARD)
    assert not refused.allowed and refused.retry_after == 61
    clock.advance(61)
    assert limiter.peek(APP, OFFBOARD).allowed
    assert create_rate_limiter(None, RateLimitPolicy.parse("1/minute"), enabled=False).peek(APP, OFFBOARD).allowed
