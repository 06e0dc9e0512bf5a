"""Cost of one rate limit check, in memory and on Redis, against a no-op check measured in the same run."""

from __future__ import annotations

import argparse
import gc
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import redis

from bulwark.ratelimit import (
    MDE_DEFAULT_LIMITS,
    RateLimitDecision,
    RateLimitPolicy,
    caller_key_for,
    create_rate_limiter,
)

Check = Callable[[str, str], RateLimitDecision]
OPERATION = "machines.offboard"
# Each caller makes at most this many calls per run, so the "allowed" runs stay under 100/minute.
CALLS_PER_CALLER = 50


@dataclass(frozen=True)
class Measurement:
    """Timings of one scenario."""

    name: str
    calls: int
    per_call_ns: list[int]
    wall_seconds: float

    @property
    def calls_per_second(self) -> float:
        """Throughput over the whole run, timer overhead included."""
        return self.calls / self.wall_seconds

    def percentile_us(self, fraction: float) -> float:
        """Per-call latency at `fraction` (0.5 = median), in microseconds."""
        ordered = sorted(self.per_call_ns)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] / 1000


def measure(name: str, check: Check, callers: list[str], calls: int, warmup: int) -> Measurement:
    """Time `calls` checks cycling through `callers`, after `warmup` untimed checks."""
    for index in range(warmup):
        check(callers[index % len(callers)], "warmup")
    gc.collect()
    per_call = []
    clock = time.perf_counter_ns
    started = clock()
    for index in range(calls):
        caller = callers[index % len(callers)]
        before = clock()
        check(caller, OPERATION)
        per_call.append(clock() - before)
    wall = (clock() - started) / 1e9
    return Measurement(name, calls, per_call, wall)


def callers_for(calls: int) -> list[str]:
    """Enough distinct callers that none of them exceeds its budget during `calls` checks."""
    count = calls // CALLS_PER_CALLER + 1
    return [caller_key_for("bench-tenant", application_id=f"app-{index}") for index in range(count)]


def redis_reachable(url: str) -> bool:
    """Whether a Redis answers at `url`."""
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def run(memory_calls: int, redis_calls: int, redis_url: str) -> list[Measurement]:
    """Measure every scenario; Redis ones only when Redis answers."""
    policy = RateLimitPolicy.parse(MDE_DEFAULT_LIMITS)
    allowed_decision = RateLimitDecision(allowed=True)

    def no_op(caller_key: str, operation: str) -> RateLimitDecision:
        return allowed_decision

    one_noisy_caller = [caller_key_for("bench-tenant", application_id="noisy")]
    results = [measure("no-op baseline", no_op, callers_for(memory_calls), memory_calls, warmup=1000)]

    disabled = create_rate_limiter(None, policy, enabled=False)
    results.append(measure("limits off", disabled.check, callers_for(memory_calls), memory_calls, warmup=1000))

    memory = create_rate_limiter(None, policy)
    results.append(measure("memory, allowed", memory.check, callers_for(memory_calls), memory_calls, warmup=1000))
    memory.check(one_noisy_caller[0], OPERATION)
    for _ in range(100):
        memory.check(one_noisy_caller[0], OPERATION)
    results.append(measure("memory, refused", memory.check, one_noisy_caller, memory_calls, warmup=0))

    if not redis_reachable(redis_url):
        print(f"Redis at {redis_url} did not answer: Redis scenarios skipped")
        return results
    prefix = f"bulwark-bench-{uuid.uuid4().hex}"
    shared = create_rate_limiter(redis_url, policy, key_prefix=prefix)
    try:
        results.append(measure("redis, allowed", shared.check, callers_for(redis_calls), redis_calls, warmup=200))
        for _ in range(101):
            shared.check(one_noisy_caller[0], OPERATION)
        results.append(measure("redis, refused", shared.check, one_noisy_caller, redis_calls, warmup=0))
    finally:
        shared.close()
        client = redis.Redis.from_url(redis_url)
        for key in client.scan_iter(match=f"{prefix}:*"):
            client.delete(key)
        client.close()
    return results


def report(results: list[Measurement]) -> None:
    """Print one line per scenario, with ratios to the no-op baseline."""
    baseline = results[0]
    base_median = baseline.percentile_us(0.5)
    header = (
        f"{'scenario':<18}{'calls':>8}{'calls/s':>12}{'median us':>11}{'p99 us':>10}"
        f"{'median x no-op':>16}{'throughput / no-op':>20}"
    )
    print(header)
    print("-" * len(header))
    for result in results:
        median = result.percentile_us(0.5)
        print(
            f"{result.name:<18}{result.calls:>8}{result.calls_per_second:>12,.0f}{median:>11.2f}"
            f"{result.percentile_us(0.99):>10.2f}{median / base_median:>16.1f}"
            f"{result.calls_per_second / baseline.calls_per_second:>20.4f}"
        )
    print(
        "\nPer-call times include two perf_counter_ns reads, as the baseline's do; "
        "mean per call: " + ", ".join(f"{r.name} {statistics.fmean(r.per_call_ns) / 1000:.2f} us" for r in results)
    )


def main() -> None:
    """Parse arguments, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--memory-calls", type=int, default=20_000)
    parser.add_argument("--redis-calls", type=int, default=3_000)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    arguments = parser.parse_args()
    report(run(arguments.memory_calls, arguments.redis_calls, arguments.redis_url))


if __name__ == "__main__":
    main()
