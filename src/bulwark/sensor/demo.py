"""Simulated sensors for the demo fleet, so that offboards on ``bulwark serve --demo`` complete.

Device side: given an onboarding package and device names (which the server's start-up issues and
picks), run the simulated fleet in a background thread against the server. On a test server
(control API on) the server's start-up also hands over how to learn of a reset, so that every
stopped sensor starts again, freshly enrolled, after each one.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx

from bulwark.sensor.agent import SensorOptions
from bulwark.sensor.fleet import run_fleet

log = logging.getLogger("bulwark.sensor.demo")
# A visible moment of InProgress before a demo offboard succeeds.
DEMO_ACTION_SECONDS = 2.0
# An idle demo should cost next to nothing: each simulated sensor holds one long poll open for
# as long as the server allows (it is woken the moment an action arrives, so this costs no
# latency) and checks in every quarter hour. ``serve --demo`` raises the server's long-poll limit
# to match unless BULWARK_SENSOR_POLL_MAX_SECONDS says otherwise.
DEMO_POLL_SECONDS = 300.0
DEMO_CHECK_IN_SECONDS = 900.0
# How often the demo fleet looks for a reset by the control API.
RESET_POLL_SECONDS = 0.25


class ResetEpochs:
    """The fleet's restart signal: the reset epoch, which ``POST /_bulwark/reset`` advances.

    ``read`` returns the epoch (the server's start-up reads it from the database); one poller
    serves every sensor waiting for a reset, and ``current`` reads afresh.
    """

    def __init__(self, read: Callable[[], int], interval: float = RESET_POLL_SECONDS) -> None:
        self._read = read
        self._interval = interval
        self._latest = -1
        self._condition: asyncio.Condition | None = None
        self._poller: asyncio.Task[None] | None = None

    async def current(self) -> int:
        """The epoch now."""
        return await asyncio.to_thread(self._read)

    async def changed(self, since: int) -> None:
        """Return once the epoch has moved past ``since``."""
        if self._condition is None:
            self._condition = asyncio.Condition()
            self._poller = asyncio.create_task(self._poll())
        async with self._condition:
            await self._condition.wait_for(lambda: self._latest > since)

    async def _poll(self) -> None:
        assert self._condition is not None
        while True:
            try:
                epoch = await asyncio.to_thread(self._read)
            except Exception:
                log.exception("could not read the reset epoch")
            else:
                if epoch != self._latest:
                    async with self._condition:
                        self._latest = epoch
                        self._condition.notify_all()
            await asyncio.sleep(self._interval)


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


def start_demo_sensors(
    package: dict[str, Any],
    names: list[str],
    server_url: str,
    *,
    ca_file: str | None = None,
    action_seconds: float = DEMO_ACTION_SECONDS,
    reset_epoch: Callable[[], int] | None = None,
) -> DemoSensors:
    """Start, in a background thread, one simulated sensor per name.

    Each keeps the inventory properties of the machine it enrols as. ``ca_file`` is the CA to
    trust when the server serves HTTPS. With ``reset_epoch`` (a test server's control API), the
    sensors follow the behaviour the control API sets for their machines, and start again after
    each reset.
    """
    sensors = DemoSensors(len(names))
    if not names:
        return sensors
    control = reset_epoch is not None
    options = SensorOptions(
        check_in_interval=DEMO_CHECK_IN_SECONDS,
        poll_wait=DEMO_POLL_SECONDS,
        action_delay=action_seconds,
        follow_simulation=control,
    )
    restart = ResetEpochs(reset_epoch) if reset_epoch is not None else None
    # A few hundred simulated sensors would drown the server's own log lines.
    logging.getLogger("bulwark.sensor").setLevel(logging.WARNING)

    async def main() -> None:
        sensors._loop = asyncio.get_running_loop()
        sensors._stop = asyncio.Event()
        await asyncio.to_thread(_wait_until_serving, server_url, ca_file)
        if not sensors._stop.is_set():
            await run_fleet(
                package,
                len(names),
                names=names,
                keep_properties=True,
                options=options,
                verify=ca_file,
                stop=sensors._stop,
                restart=restart,
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
