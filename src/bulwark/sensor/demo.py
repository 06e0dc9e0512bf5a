"""Simulated sensors for the demo fleet, so that offboards on ``bulwark serve --demo`` complete.

Device side: given an onboarding package and device names (which the server's start-up issues and
picks), run the simulated fleet in a background thread against the server.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import httpx

from bulwark.sensor.agent import SensorOptions
from bulwark.sensor.fleet import run_fleet

# A visible moment of InProgress before a demo offboard succeeds.
DEMO_ACTION_SECONDS = 2.0


class DemoSensors:
    """The simulated sensors running in their background thread; ``stop`` ends them quickly and quietly."""

    def __init__(self, count: int) -> None:
        self.count = count
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    def stop(self) -> None:
        """Ask every simulated sensor to end its long poll and stop (callable from any thread, signal handlers too)."""
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)

    def join(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the sensors to have stopped."""
        if self._thread is not None:
            self._thread.join(timeout)


def start_demo_sensors(package: dict[str, Any], names: list[str], server_url: str, *, ca_file: str | None = None) -> DemoSensors:
    """Start, in a background thread, one simulated sensor per name.

    Each keeps the inventory properties of the machine it enrols as. ``ca_file`` is the CA to
    trust when the server serves HTTPS.
    """
    sensors = DemoSensors(len(names))
    if not names:
        return sensors
    options = SensorOptions(check_in_interval=300, action_delay=DEMO_ACTION_SECONDS)
    # A few hundred simulated sensors would drown the server's own log lines.
    logging.getLogger("bulwark.sensor").setLevel(logging.WARNING)

    async def main() -> None:
        sensors._loop = asyncio.get_running_loop()
        sensors._stop = asyncio.Event()
        await asyncio.to_thread(_wait_until_serving, server_url, ca_file)
        if not sensors._stop.is_set():
            await run_fleet(
                package, len(names), names=names, keep_properties=True, options=options, verify=ca_file, stop=sensors._stop
            )

    sensors._thread = threading.Thread(target=asyncio.run, args=(main(),), name="demo-sensors", daemon=True)
    sensors._thread.start()
    return sensors


def _wait_until_serving(server_url: str, ca_file: str | None, timeout: float = 60.0) -> None:
    """Return once the server answers its health check (it starts after this thread)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{server_url}/healthz", timeout=1, verify=ca_file or True).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
