"""What an idle ``bulwark serve --demo`` costs: CPU seconds of the server process while nobody calls it.

Starts ``serve --demo`` (its simulated sensors included) on a fresh SQLite directory, lets every
simulated sensor enrol and settle into its long poll, then reads the process's user+system CPU time
(``/proc/<pid>/stat``) at the start and end of a window and prints it as a share of one core.

    python benchmarks/idle_cost.py                 # 90 s to settle, 90 s measured
    python benchmarks/idle_cost.py --settle 60 --window 120
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cpu_per_request import cpu_seconds
from run import free_port, wait_until_healthy

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settle", type=float, default=90.0, help="seconds after start before measuring")
    parser.add_argument("--window", type=float, default=90.0, help="seconds measured")
    args = parser.parse_args()

    port = free_port()
    with tempfile.TemporaryDirectory() as scratch:
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT / "src"),
            "BULWARK_DATABASE_URL": "",
            "BULWARK_LOG_LEVEL": "WARNING",
        }
        command = [sys.executable, "-m", "bulwark.cli", "serve", "--demo", "--port", str(port), "--data-dir", f"{scratch}/data"]
        server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            if not wait_until_healthy(f"http://127.0.0.1:{port}", 60):
                raise RuntimeError("server did not start")
            time.sleep(args.settle)
            before, started = cpu_seconds(server.pid), time.monotonic()
            time.sleep(args.window)
            used, elapsed = cpu_seconds(server.pid) - before, time.monotonic() - started
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(30)
    print(
        json.dumps(
            {
                "scenario": "idle serve --demo",
                "window_seconds": round(elapsed, 1),
                "cpu_seconds": round(used, 2),
                "share_of_a_core_percent": round(100 * used / elapsed, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
