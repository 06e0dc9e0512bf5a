"""How long the pytest plugin's server takes to start and to reset (docs/testing.md).

Starts `bulwark serve --demo` through `bulwark.testing.BulwarkServer` several times and prints, for
each start, the wall time until it answers and the CPU seconds its process spent getting there
(user + system, from /proc: on a busy machine the CPU figure is the steadier of the two), then
the median time of a reset and of an offboard carried out by a simulated device.

    .venv/bin/python benchmarks/testing_startup.py [--starts 3] [--machines 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from bulwark.testing import BulwarkServer


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=3)
    parser.add_argument("--machines", type=int, default=20)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    walls, cpus, resets, offboards = [], [], [], []
    for index in range(args.starts):
        with tempfile.TemporaryDirectory() as directory:
            server = BulwarkServer.start(Path(directory), machine_count=args.machines)
            try:
                assert server.process is not None
                cpu = cpu_seconds(server.process.pid)
                walls.append(server.startup_seconds)
                cpus.append(cpu)
                print(f"start {index + 1}: ready in {server.startup_seconds:.2f} s wall, {cpu:.2f} s CPU in the server process")
                if index == 0:
                    server.control.reset()  # the first token and reset warm the server up
                    with server.client() as client:
                        machine = next(
                            iter(client.list_machines(filter="healthStatus eq 'Active' and osPlatform eq 'Windows11'", top=1))
                        ).id
                        for _ in range(5):
                            started = time.monotonic()
                            server.control.reset()
                            resets.append(time.monotonic() - started)
                            started = time.monotonic()
                            client.wait(client.offboard(machine, "benchmark"), timeout=60, poll_interval=0.05)
                            offboards.append(time.monotonic() - started)
            finally:
                server.stop()
    print(f"start-up: median {statistics.median(walls):.2f} s wall, {statistics.median(cpus):.2f} s CPU (server process)")
    print(
        f"reset: median {statistics.median(resets) * 1000:.0f} ms; "
        f"offboard to Succeeded after a reset: median {statistics.median(offboards):.2f} s"
    )
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
