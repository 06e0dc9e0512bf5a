"""How long `bulwark serve` takes to stop: seconds from SIGINT (or SIGTERM) to the process's exit.

Each scenario starts a real server on a fresh data directory, waits until its sensors hold their
long polls, sends the signal and times the exit; it prints the median and the range over --runs
starts, the exit codes, and whether the server printed a traceback. Scenarios:

    idle           bulwark serve, nobody connected
    fleet          bulwark serve, and `bulwark sensor fleet` holding --fleet long polls
    demo           bulwark serve --demo (its simulated sensors hold one long poll per active machine)
    demo+fleet     both
    workers+fleet  bulwark serve --workers 2 and the fleet (needs Redis: --redis-url); workers+demo too

    .venv/bin/python benchmarks/shutdown.py [--runs 5] [--fleet 50] [--signal TERM]
        [--scenarios idle,fleet,demo,demo+fleet] [--group] [--redis-url redis://127.0.0.1:6379/0]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

BULWARK = [sys.executable, "-m", "bulwark.cli"]
TENANT = "0b5e1c7a-4d2f-4e8b-9a61-2f3c4d5e6f70"


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(base: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    """Return once the server answers its health check."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early with {proc.returncode}")
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError("server did not become healthy in time")


def held_long_polls(base: str, at_least: int, timeout: float = 120) -> int:
    """Wait until the server reports ``at_least`` sensors in a long poll (its metrics); return how many."""
    deadline = time.monotonic() + timeout
    held = 0
    while time.monotonic() < deadline:
        text = httpx.get(f"{base}/metrics", timeout=5).text
        held = int(sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("bulwark_sensors_connected")))
        if held >= at_least:
            return held
        time.sleep(0.5)
    return held


def one_run(scenario: str, args: argparse.Namespace, directory: Path) -> tuple[float, int, bool, int]:
    """Start, signal, time the exit; (seconds, exit code, traceback printed, long polls held at the signal)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    parts = set(scenario.split("+"))
    env = {**os.environ, "BULWARK_DATABASE_URL": "", "BULWARK_DATA_DIR": str(directory / "data"), "PYTHONUNBUFFERED": "1"}
    env["BULWARK_DEMO_MACHINE_COUNT"] = str(args.demo_machines)
    serve = [*BULWARK, "serve", "--host", "127.0.0.1", "--port", str(port)]
    if "demo" in parts:
        serve.append("--demo")
    if "workers" in parts:
        serve += ["--workers", "2"]
        env["BULWARK_REDIS_URL"] = args.redis_url
        env["BULWARK_RATE_LIMIT_KEY_PREFIX"] = f"bench-shutdown:{uuid.uuid4().hex}"
    env["BULWARK_DEFAULT_TENANT_ID"] = TENANT
    if "demo" not in parts:
        # The demo seeds its tenant; without it the fleet's onboarding package needs one.
        for command in (["db", "upgrade"], ["tenants", "create", "Shutdown benchmark", "--id", TENANT]):
            subprocess.run([*BULWARK, *command], env=env, check=True, capture_output=True)
    log = directory / "server.log"
    fleet: subprocess.Popen[bytes] | None = None
    with open(log, "wb") as out:
        # In a session of its own, so that --group can signal the server's whole process group.
        proc = subprocess.Popen(serve, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_healthy(base, proc)
        expected = 0
        if "demo" in parts:
            # About half the demo fleet is active, each with a simulated sensor in a long poll.
            expected += args.demo_machines // 3
        if "fleet" in parts:
            package = directory / "onboarding.json"
            subprocess.run(
                [*BULWARK, "sensor", "package", "onboarding", "--server-url", base, "--out", str(package)],
                env=env,
                check=True,
                capture_output=True,
            )
            with open(directory / "fleet.log", "wb") as out:
                fleet = subprocess.Popen(
                    [*BULWARK, "sensor", "fleet", "--count", str(args.fleet), "--onboarding-package", str(package)],
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            expected += args.fleet
        held = held_long_polls(base, expected) if expected and "workers" not in parts else expected
        if "workers" in parts:
            time.sleep(5)  # each worker counts only its own long polls: give the fleet time to settle
        time.sleep(1)
        started = time.monotonic()
        if args.group:
            os.killpg(proc.pid, args.signal)
        else:
            proc.send_signal(args.signal)
        code = proc.wait(120)
        seconds = time.monotonic() - started
    finally:
        for child in (proc, fleet):
            if child is not None and child.poll() is None:
                child.kill()
                child.wait()
    return seconds, code, "Traceback" in log.read_text(errors="replace"), held


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--fleet", type=int, default=50, help="sensors of the `bulwark sensor fleet` process")
    parser.add_argument("--demo-machines", type=int, default=300)
    parser.add_argument("--signal", choices=["INT", "TERM"], default="INT")
    parser.add_argument(
        "--group",
        action="store_true",
        help="signal the server's whole process group (Ctrl-C in a terminal, systemd's default), not only its main process",
    )
    parser.add_argument("--scenarios", default="idle,fleet,demo,demo+fleet")
    parser.add_argument("--redis-url", default=os.environ.get("BULWARK_REDIS_URL", "redis://127.0.0.1:6379/0"))
    args = parser.parse_args()
    args.signal = getattr(signal, f"SIG{args.signal}")
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; signal {args.signal.name}")
    for scenario in args.scenarios.split(","):
        times, codes, tracebacks, held = [], set(), 0, []
        for _ in range(args.runs):
            with tempfile.TemporaryDirectory() as directory:
                seconds, code, traceback, polls = one_run(scenario, args, Path(directory))
            times.append(seconds)
            codes.add(code)
            tracebacks += traceback
            held.append(polls)
        print(
            f"{scenario:14} median {statistics.median(times):.2f} s (min {min(times):.2f}, max {max(times):.2f}) "
            f"over {args.runs} runs; long polls held ~{statistics.median(held):.0f}; exit codes {sorted(codes)}; "
            f"tracebacks in {tracebacks} runs",
            flush=True,
        )
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
