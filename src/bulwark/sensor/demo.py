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
# An idle demo should cost next to nothing: each simulated sensor holds one long poll open for
# as long as the server allows (it is woken the moment an action arrives, so this costs no
# latency) and checks in every quarter hour. ``serve --demo`` raises the server's long-poll limit
# to match unless BULWARK_SENSOR_POLL_MAX_SECONDS says otherwise.
DEMO_POLL_SECONDS = 300.0
DEMO_CHECK_IN_SECONDS = 900.0


def start_demo_sensors(package: dict[str, Any], names: list[str], server_url: str, *, ca_file: str | None = None) -> int:
    """Start, in a background thread, one simulated sensor per name; return how many.

    Each keeps the inventory properties of the machine it enrols as. ``ca_file`` is the CA to
    trust when the server serves HTTPS.
    """
    if not names:
        return 0
    options = SensorOptions(
        check_in_interval=DEMO_CHECK_IN_SECONDS, poll_wait=DEMO_POLL_SECONDS, action_delay=DEMO_ACTION_SECONDS
    )
    # A few hundred simulated sensors would drown the server's own log lines.
    logging.getLogger("bulwark.sensor").setLevel(logging.WARNING)

    def run() -> None:
        _wait_until_serving(server_url, ca_file)
        asyncio.run(run_fleet(package, len(names), names=names, keep_properties=True, options=options, verify=ca_file))

    thread = threading.Thread(target=run, name="demo-sensors", daemon=True)
    thread.start()
    return len(names)


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
