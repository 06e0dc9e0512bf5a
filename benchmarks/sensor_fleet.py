"""How many connected sensors one server process holds, and how fast an action reaches one.

Starts one ``bulwark serve`` process (SQLite in a scratch directory, or ``--database-url``), runs a
simulated fleet of N real sensors spread over ``--processes`` simulator processes, waits until every
sensor has enrolled and sits in its long poll, then offboards machines one at a time and measures,
for each, the time from sending the offboard request to the moment the sensor holds the claimed
action. It measures twice: at once, while the enrolments' writes and the first wave of polls may
still be settling, and again once every sensor has renewed its first long poll and the server is
quiet. Prints one JSON line per fleet size (progress goes to stderr).

    python benchmarks/sensor_fleet.py --sizes 500 1000 2000 4000 --actions 100
    python benchmarks/sensor_fleet.py --sizes 10000 --processes 2 --actions 100
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import math
import multiprocessing
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from bulwark.clock import SystemClock  # noqa: E402
from bulwark.domain.sensors import derive_machine_id  # noqa: E402
from bulwark.sensor.agent import SensorOptions  # noqa: E402
from bulwark.sensor.fleet import run_fleet  # noqa: E402
from bulwark.service.sensors import issue_onboarding_package  # noqa: E402
from bulwark.store.db import create_db_engine, upgrade_database  # noqa: E402
from bulwark.store.uow import SqlUnitOfWorkFactory  # noqa: E402

TENANT = "6f1c4d1e-2b43-4c7a-9d55-0b6a3c1e8f10"
POLL_WAIT = 25.0  # the server's default longest poll (BULWARK_SENSOR_POLL_MAX_SECONDS)
TICKS = os.sysconf("SC_CLK_TCK")


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _cpu_seconds(pid: int) -> float:
    """User and system CPU seconds the process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def _descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def _progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- the simulator processes ---------------------------------------------------------------------


def simulate(package: dict, names: list[str], poll_wait: float, events: Any, connected: Any, stop: Any) -> None:
    """One simulator process: run ``names`` as real sensors until ``stop`` is set.

    Reports ``("action", action_id, monotonic_seconds)`` for each action a sensor holds (the
    monotonic clock is the host's, shared by every process on it) and at the end
    ``("report", outcomes, cpu_seconds)``. Once ``connected`` is set (every sensor polls), the
    sensors' objects are frozen out of the garbage collector's sight: its full collections would
    otherwise pause every simulated sensor of the process for a few hundred milliseconds, a delay
    a real fleet (one device per sensor) does not have.
    """
    logging.getLogger("bulwark.sensor").setLevel(logging.ERROR)
    gc.freeze()

    def on_action(name: str, action: dict) -> None:
        events.put(("action", action["id"], time.monotonic()))

    async def run() -> None:
        stopping = asyncio.Event()
        options = SensorOptions(check_in_interval=3600, poll_wait=poll_wait)
        fleet = asyncio.create_task(
            run_fleet(package, len(names), names=names, options=options, on_action=on_action, stop=stopping)
        )
        frozen = False
        parent = os.getppid()
        # Until told to stop, or the benchmark is gone.
        while not fleet.done() and not stop.is_set() and os.getppid() == parent:
            await asyncio.sleep(0.2)
            if connected.is_set() and not frozen:
                frozen = True
                gc.collect()
                gc.freeze()
        stopping.set()
        report = await fleet
        events.put(("report", dict(report.outcomes), time.process_time()))

    asyncio.run(run())


# -- the measurement -----------------------------------------------------------------------------


class Deliveries:
    """Action ids the simulators reported holding, with when (monotonic seconds), as they arrive."""

    def __init__(self, events: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.received: dict[str, float] = {}
        self.reports: list[tuple[dict, float]] = []
        self.arrived = asyncio.Event()
        self._events = events
        self._loop = loop
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while True:
            event = self._events.get()
            if event is None:
                return
            self._loop.call_soon_threadsafe(self._note, event)

    def _note(self, event: tuple) -> None:
        if event[0] == "action":
            self.received[event[1]] = event[2]
            self.arrived.set()
        else:
            self.reports.append((event[1], event[2]))

    def close(self) -> None:
        self._events.put(None)
        self._thread.join(5)


async def _connected(client: httpx.AsyncClient) -> int:
    """The server's count of sensors in a long poll right now (``bulwark_sensors_connected``)."""
    text = (await client.get("/metrics")).text
    for line in text.splitlines():
        if line.startswith("bulwark_sensors_connected "):
            return int(float(line.split()[1]))
    return 0


async def _healthz_ms(client: httpx.AsyncClient, times: int = 5) -> float:
    spans = []
    for _ in range(times):
        started = time.monotonic()
        (await client.get("/healthz")).raise_for_status()
        spans.append(time.monotonic() - started)
    return round(statistics.median(spans) * 1000, 1)


async def _quiet(server_pid: int, busy_fraction: float, window: float = 2.0, patience: float = 120.0) -> float:
    """Wait until the server used under ``busy_fraction`` of a core over ``window`` seconds; the seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < patience:
        before = _cpu_seconds(server_pid)
        await asyncio.sleep(window)
        if (_cpu_seconds(server_pid) - before) / window < busy_fraction:
            break
    return time.monotonic() - started


async def _offboard_round(client: httpx.AsyncClient, deliveries: Deliveries, names: list[str], server_pid: int) -> dict[str, Any]:
    """Offboard each of ``names`` in turn; delivery times, and how long the offboard request itself took."""
    latencies: list[float] = []
    answered: list[float] = []
    slowest: list[tuple[float, float]] = []
    errors = 0
    cpu_before, started = _cpu_seconds(server_pid), time.monotonic()
    for name in names:
        deliveries.arrived.clear()
        sent = time.monotonic()
        response = await client.post(f"/api/machines/{derive_machine_id(TENANT, name)}/offboard", json={"Comment": "bench"})
        answered_at = time.monotonic()
        if response.status_code != 200:
            errors += 1
            continue
        action_id = response.json()["id"]
        deadline = sent + 30
        while action_id not in deliveries.received and time.monotonic() < deadline:
            try:
                await asyncio.wait_for(deliveries.arrived.wait(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                break
            deliveries.arrived.clear()
        if action_id not in deliveries.received:
            errors += 1
            continue
        latency = deliveries.received[action_id] - sent
        if latency > 0.05:
            _progress(f"slow delivery: {latency * 1000:.1f} ms, sent at monotonic {sent:.3f}")
        latencies.append(latency)
        answered.append(answered_at - sent)
        slowest.append((latency, answered_at - sent))
    elapsed = time.monotonic() - started
    slowest.sort(reverse=True)
    return {
        "actions": len(latencies),
        "errors": errors,
        "latency_median_ms": round(statistics.median(latencies) * 1000, 1) if latencies else None,
        "latency_p99_ms": round(_percentile(latencies, 0.99) * 1000, 1) if latencies else None,
        "latency_max_ms": round(max(latencies) * 1000, 1) if latencies else None,
        # How much of the delivery time the offboard request took (its transaction and answer).
        "offboard_answer_median_ms": round(statistics.median(answered) * 1000, 1) if answered else None,
        "offboard_answer_p99_ms": round(_percentile(answered, 0.99) * 1000, 1) if answered else None,
        "slowest_ms": [[round(a * 1000, 1), round(b * 1000, 1)] for a, b in slowest[:3]],
        "server_cpu_share": round((_cpu_seconds(server_pid) - cpu_before) / elapsed, 2) if elapsed else None,
    }


async def measure(
    base: str, package: dict, size: int, actions: int, processes: int, poll_wait: float, server_pid: int, url: str
) -> dict[str, Any]:
    """Connect ``size`` sensors, then time offboards from request to sensor, at once and settled."""
    engine = create_db_engine(url, pool_size=1)

    def count_machines() -> int:
        with SqlUnitOfWorkFactory(engine)(write=False) as uow:
            return uow.machines.count(TENANT)

    machines_before = count_machines()
    names = [f"bench{size}-{i:05d}" for i in range(size)]
    context = multiprocessing.get_context("spawn")
    events = context.Queue()
    stop = context.Event()
    everyone_connected = context.Event()
    deliveries = Deliveries(events, asyncio.get_running_loop())
    simulators = [
        context.Process(
            target=simulate, args=(package, names[i::processes], poll_wait, events, everyone_connected, stop), daemon=True
        )
        for i in range(processes)
    ]
    started = time.monotonic()
    for simulator in simulators:
        simulator.start()
    timeline: list[tuple[float, int]] = []
    result: dict[str, Any] = {"sensors": size, "processes": processes, "poll_wait": poll_wait}
    try:
        async with httpx.AsyncClient(base_url=base, timeout=60) as client:
            last_note = started
            while True:
                enrolled = count_machines() - machines_before
                connected = await _connected(client)
                now = time.monotonic()
                timeline.append((now - started, enrolled))
                if now - last_note >= 30:
                    last_note = now
                    cpu = [round(_cpu_seconds(s.pid), 0) for s in simulators if s.pid]
                    _progress(
                        f"{size}: {enrolled} enrolled, {connected} polling after {now - started:.0f} s; server "
                        f"{_rss_mib(server_pid):.0f} MiB, {_descriptors(server_pid)} fds; simulator CPU s {cpu}"
                    )
                # Every sensor enrolled (its machine exists) and in its long poll (a sensor
                # renewing its poll is out of it for a moment: allow one in a thousand).
                if enrolled >= size and connected >= size - size // 1000:
                    break
                if not any(s.is_alive() for s in simulators):
                    raise RuntimeError("every simulator process ended early")
                await asyncio.sleep(1)
            connect_seconds = time.monotonic() - started
            everyone_connected.set()
            result["connect_seconds"] = round(connect_seconds, 1)
            # Enrolment rate over the first and the last tenth of the fleet.
            tenth = max(1, size // 10)
            first = next(t for t, n in timeline if n >= tenth)
            ninth = next(t for t, n in timeline if n >= size - tenth)
            result["enrol_per_second_first_tenth"] = round(tenth / first, 1) if first else None
            last = connect_seconds - ninth
            result["enrol_per_second_last_tenth"] = round(tenth / last, 1) if last > 0 else None
            result["server_rss_mib"] = round(_rss_mib(server_pid), 1)
            result["server_descriptors"] = _descriptors(server_pid)
            result["healthz_ms"] = await _healthz_ms(client)
            await asyncio.sleep(2)  # the simulators' last full collection (above), before measuring
            chosen = random.Random(size).sample(names, min(2 * actions, size))
            # At once: enrolments' writes and the first wave of polls may still be settling.
            result["at_once"] = await _offboard_round(client, deliveries, chosen[:actions], server_pid)
            # Settled: every sensor has renewed its first long poll, and the server is quiet
            # (under a quarter of a core beyond the fleet's steady polling).
            polled_at = time.monotonic()
            await asyncio.sleep(max(0.0, connect_seconds + poll_wait + 5 - (time.monotonic() - started)))
            steady = size / poll_wait * 0.002  # about two milliseconds of CPU per renewed poll
            waited = await _quiet(server_pid, 0.25 + steady)
            result["settle_seconds"] = round(time.monotonic() - polled_at, 1)
            result["settle_quiet_wait_seconds"] = round(waited, 1)
            result["healthz_settled_ms"] = await _healthz_ms(client)
            result["settled"] = await _offboard_round(client, deliveries, chosen[actions:], server_pid)
            result["server_rss_mib_end"] = round(_rss_mib(server_pid), 1)
    finally:
        stop.set()
        for simulator in simulators:
            await asyncio.to_thread(simulator.join, 60)
            if simulator.is_alive():
                simulator.kill()
        await asyncio.sleep(0.5)  # the last reports, on their way through the reading thread
        deliveries.close()
        engine.dispose()
    outcomes: Counter = Counter()
    for counts, _ in deliveries.reports:
        outcomes.update(counts)
    result["fleet_outcomes"] = dict(outcomes)
    result["simulator_cpu_seconds"] = [round(cpu, 1) for _, cpu in deliveries.reports]
    return result


def main() -> None:
    """Run the benchmark for each fleet size and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 1000, 2000])
    parser.add_argument("--actions", type=int, default=100, help="offboards per measurement (two measurements)")
    parser.add_argument(
        "--processes",
        type=int,
        default=None,
        help="simulator processes (default: one per 2,000 sensors, at most one per CPU)",
    )
    parser.add_argument(
        "--poll-wait",
        type=float,
        default=POLL_WAIT,
        help="seconds each long poll is held (the server's BULWARK_SENSOR_POLL_MAX_SECONDS is set to match)",
    )
    parser.add_argument("--database-url", default=None, help="PostgreSQL URL (default: SQLite in a scratch directory)")
    parser.add_argument("--port", type=int, default=8791)
    args = parser.parse_args()

    for size in args.sizes:
        processes = args.processes or max(1, min(os.cpu_count() or 1, math.ceil(size / 2000)))
        with tempfile.TemporaryDirectory() as scratch:
            url = args.database_url or f"sqlite:///{scratch}/bulwark.db"
            upgrade_database(url)
            engine = create_db_engine(url, pool_size=1)
            uow = SqlUnitOfWorkFactory(engine)
            with uow() as setup:
                if not setup.tenants.exists(TENANT):
                    setup.tenants.add(TENANT, "Bench", SystemClock().now())
                setup.commit()
            base = f"http://127.0.0.1:{args.port}"
            package = issue_onboarding_package(TENANT, base, None, uow(), SystemClock())
            engine.dispose()
            env = {
                **os.environ,
                "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])),
                "BULWARK_DATABASE_URL": url,
                "BULWARK_DATA_DIR": scratch,
                "BULWARK_DEFAULT_TENANT_ID": TENANT,
                "BULWARK_LOG_LEVEL": "WARNING",
                # Sensor delivery is measured here, not token checks or rate limits.
                "BULWARK_AUTH_ENABLED": "false",
                "BULWARK_RATE_LIMIT_ENABLED": "false",
                "BULWARK_SENSOR_POLL_MAX_SECONDS": str(args.poll_wait),
            }
            server = subprocess.Popen(
                [sys.executable, "-m", "bulwark.cli", "serve", "--port", str(args.port)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    try:
                        if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                            break
                    except httpx.TransportError:
                        time.sleep(0.2)
                figures = asyncio.run(measure(base, package, size, args.actions, processes, args.poll_wait, server.pid, url))
                print(json.dumps(figures), flush=True)
            finally:
                server.terminate()
                server.wait(30)


if __name__ == "__main__":
    main()
