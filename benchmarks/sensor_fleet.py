"""How many connected sensors one server process holds, and how fast an action reaches one.

Starts one ``bulwark serve`` process (SQLite in a scratch directory, or ``--database-url``), runs a
simulated fleet of N sensors in this process, waits until every sensor is in its long poll, then
offboards machines one at a time and measures, for each, the time from sending the offboard request
to the moment the sensor holds the claimed action. Prints one JSON line per fleet size.

    python benchmarks/sensor_fleet.py --sizes 500 1000 2000 4000 --actions 100
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


async def measure(base: str, package: dict, size: int, actions: int, server_pid: int, url: str) -> dict:
    """Connect ``size`` sensors, then time ``actions`` offboards from request to sensor."""
    engine = create_db_engine(url, pool_size=1)

    def count_machines() -> int:
        with SqlUnitOfWorkFactory(engine)(write=False) as uow:
            return uow.machines.count(TENANT)

    machines_before = count_machines()
    names = [f"bench{size}-{i:05d}" for i in range(size)]
    received: dict[str, float] = {}
    arrived = asyncio.Event()

    def on_action(name: str, action: dict) -> None:
        received[action["id"]] = time.perf_counter()
        arrived.set()

    stop = asyncio.Event()
    options = SensorOptions(check_in_interval=3600, poll_wait=25)
    started = time.perf_counter()
    fleet = asyncio.create_task(run_fleet(package, size, names=names, options=options, on_action=on_action, stop=stop))
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        # Every sensor has enrolled once its machine exists; then give the polls time to settle.
        while count_machines() < machines_before + size:
            if fleet.done():
                raise RuntimeError(f"fleet ended early: {fleet.result()}")
            await asyncio.sleep(0.5)
        await asyncio.sleep(3 + size / 1000)
        connect_seconds = time.perf_counter() - started
        latencies: list[float] = []
        errors = 0
        for name in random.Random(size).sample(names, min(actions, size)):
            arrived.clear()
            sent = time.perf_counter()
            response = await client.post(f"/api/machines/{derive_machine_id(TENANT, name)}/offboard", json={"Comment": "bench"})
            if response.status_code != 200:
                errors += 1
                continue
            action_id = response.json()["id"]
            deadline = sent + 30
            while action_id not in received and time.perf_counter() < deadline:
                try:
                    await asyncio.wait_for(arrived.wait(), max(0.0, deadline - time.perf_counter()))
                except TimeoutError:
                    break
                arrived.clear()
            if action_id in received:
                latencies.append(received[action_id] - sent)
            else:
                errors += 1
        rss = _rss_mib(server_pid)
    stop.set()
    report = await fleet
    engine.dispose()
    return {
        "sensors": size,
        "connect_seconds": round(connect_seconds, 1),
        "actions": len(latencies),
        "errors": errors,
        "latency_median_ms": round(statistics.median(latencies) * 1000, 1) if latencies else None,
        "latency_p99_ms": round(_percentile(latencies, 0.99) * 1000, 1) if latencies else None,
        "server_rss_mib": round(rss, 1),
        "fleet_outcomes": dict(report.outcomes),
    }


def main() -> None:
    """Run the benchmark for each fleet size and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 1000, 2000])
    parser.add_argument("--actions", type=int, default=100)
    parser.add_argument("--database-url", default=None, help="PostgreSQL URL (default: SQLite in a scratch directory)")
    parser.add_argument("--port", type=int, default=8791)
    args = parser.parse_args()
    logging.getLogger("bulwark.sensor").setLevel(logging.ERROR)

    for size in args.sizes:
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
                "PYTHONPATH": str(ROOT / "src"),
                "BULWARK_DATABASE_URL": url,
                "BULWARK_DATA_DIR": scratch,
                "BULWARK_DEFAULT_TENANT_ID": TENANT,
                "BULWARK_LOG_LEVEL": "WARNING",
                # Sensor delivery is measured here, not token checks or rate limits.
                "BULWARK_AUTH_ENABLED": "false",
                "BULWARK_RATE_LIMIT_ENABLED": "false",
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
                print(json.dumps(asyncio.run(measure(base, package, size, args.actions, server.pid, url))), flush=True)
            finally:
                server.terminate()
                server.wait(30)


if __name__ == "__main__":
    main()
