"""Rate limits shared through a real Redis by several limiters and processes, and Redis outages."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

import bulwark
from bulwark.ratelimit import RateLimiter, RateLimitPolicy, caller_key_for, create_rate_limiter

pytestmark = pytest.mark.redis

REDIS_URL = os.environ.get("BULWARK_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
APP = caller_key_for("tenant-1", application_id="app-1")
OFFBOARD = "machines.offboard"


@pytest.fixture(scope="module")
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis at {REDIS_URL} is unreachable: {exc}")
    yield client
    client.close()


@pytest.fixture
def key_prefix(redis_client: redis.Redis) -> Iterator[str]:
    prefix = f"bulwark-test-{uuid.uuid4().hex}"
    yield prefix
    for key in redis_client.scan_iter(match=f"{prefix}:*"):
        redis_client.delete(key)


def redis_limiter(key_prefix: str, limits: str, fail_mode: str = "open") -> RateLimiter:
    policy = RateLimitPolicy.parse(limits)
    return create_rate_limiter(REDIS_URL, policy, fail_mode, key_prefix=key_prefix)  # type: ignore[arg-type]


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"


def test_two_limiters_share_one_budget(key_prefix: str) -> None:
    first = redis_limiter(key_prefix, "5/minute;100/hour")
    second = redis_limiter(key_prefix, "5/minute;100/hour")

    outcomes = [limiter.check(APP, OFFBOARD).allowed for limiter in (first, second) * 4]

    assert outcomes == [True] * 5 + [False] * 3
    refused = second.check(APP, OFFBOARD)
    assert refused.violated_policies == ("per-minute",)
    assert refused.retry_after is not None and 59 <= refused.retry_after <= 60
    assert '"per-hour";r=95' in refused.headers["RateLimit"]
    first.close()
    second.close()


def test_callers_keep_separate_budgets_in_redis(key_prefix: str) -> None:
    limiter = redis_limiter(key_prefix, "2/minute")
    for _ in range(5):
        limiter.check(APP, OFFBOARD)

    assert limiter.check(caller_key_for("tenant-1", application_id="app-2"), OFFBOARD).allowed
    assert limiter.check(APP, "machines.list").allowed
    limiter.close()


CHECKER = textwrap.dedent(
    """
    import json, sys, time
    from bulwark.ratelimit import RateLimitPolicy, create_rate_limiter

    url, prefix, limits, calls, start_at = sys.argv[1:6]
    limiter = create_rate_limiter(url, RateLimitPolicy.parse(limits), key_prefix=prefix)
    time.sleep(max(0.0, float(start_at) - time.time()))
    decisions = [limiter.check("tenant-1:app:app-1", "machines.offboard") for _ in range(int(calls))]
    print(json.dumps([[d.allowed, d.retry_after, d.storage_failed] for d in decisions]))
    """
)


def run_checkers(key_prefix: str, limits: str, calls: list[int], start_at: float) -> list[list[list]]:
    """Run one checker process per entry of `calls`, all at once; return each one's decisions."""
    env = {**os.environ, "PYTHONPATH": str(Path(bulwark.__file__).resolve().parents[1])}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", CHECKER, REDIS_URL, key_prefix, limits, str(count), str(start_at)],
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        for count in calls
    ]
    outputs = []
    for process in processes:
        stdout, _ = process.communicate(timeout=30)
        assert process.returncode == 0
        outputs.append(json.loads(stdout))
    return outputs


def test_two_processes_one_after_the_other_share_one_budget(key_prefix: str) -> None:
    [first] = run_checkers(key_prefix, "10/minute;1000/hour", [6], start_at=0)
    [second] = run_checkers(key_prefix, "10/minute;1000/hour", [6], start_at=0)

    assert [allowed for allowed, _, _ in first] == [True] * 6
    assert [allowed for allowed, _, _ in second] == [True] * 4 + [False] * 2
    assert all(59 <= retry_after <= 60 for allowed, retry_after, _ in second if not allowed)


def test_two_processes_at_once_never_exceed_the_limit(key_prefix: str) -> None:
    outputs = run_checkers(key_prefix, "25/minute;1000/hour", [40, 40], start_at=time.time() + 1.5)

    allowed = sum(allowed for output in outputs for allowed, _, _ in output)
    assert allowed == 25
    assert not any(failed for output in outputs for _, _, failed in output)


def test_retry_after_is_honest_on_redis(key_prefix: str) -> None:
    limiter = redis_limiter(key_prefix, "2/second")
    assert [limiter.check(APP, OFFBOARD).allowed for _ in range(2)] == [True, True]

    refused = limiter.check(APP, OFFBOARD)
    assert not refused.allowed
    assert refused.retry_after == 1

    time.sleep(refused.retry_after)
    assert limiter.check(APP, OFFBOARD).allowed
    limiter.close()


def test_unreachable_redis_fails_open_with_a_warning_and_a_counter(caplog: pytest.LogCaptureFixture) -> None:
    limiter = create_rate_limiter(closed_port_url(), RateLimitPolicy.parse("1/minute"), "open")

    with caplog.at_level(logging.WARNING, logger="bulwark.ratelimit"):
        started = time.perf_counter()
        decisions = [limiter.check(APP, OFFBOARD) for _ in range(3)]
        elapsed = time.perf_counter() - started

    assert all(d.allowed and d.storage_failed for d in decisions)
    assert limiter.stats.storage_errors == 3
    assert any("rate limit store failed" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert elapsed < 3  # refused connections answer at once: no retries with back-off
    limiter.close()


def test_unreachable_redis_fails_closed_when_configured() -> None:
    limiter = create_rate_limiter(closed_port_url(), RateLimitPolicy.parse("1/minute"), "closed")

    decision = limiter.check(APP, OFFBOARD)

    assert not decision.allowed
    assert decision.storage_failed
    assert limiter.stats.storage_errors == 1
    limiter.close()
