"""Simulated sensors for the demo fleet, so that offboards on ``bulwark serve --demo`` complete."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable

import httpx

from bulwark.clock import SystemClock
from bulwark.domain.machines import HealthStatus
from bulwark.domain.sensors import derive_machine_id
from bulwark.sensor.agent import SensorOptions
from bulwark.sensor.fleet import run_fleet
from bulwark.service.control import clock_state
from bulwark.service.sensors import issue_onboarding_package
from bulwark.settings import Settings
from bulwark.store.db import create_db_engine
from bulwark.store.uow import SqlUnitOfWorkFactory as UnitOfWorkFactory

log = logging.getLogger("bulwark.sensor.demo")
# How often the demo fleet looks for a reset by the control API.
RESET_POLL_SECONDS = 0.25


class ResetEpochs:
    """The fleet's restart signal: the reset epoch in the database, which ``POST /_bulwark/reset`` advances.

    One poller serves every sensor waiting for a reset; ``current`` reads afresh.
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


def start_demo_sensors(settings: Settings, server_url: str, *, ca_file: str | None = None) -> int:
    """Start, in a background thread, one simulated sensor per active demo machine; return how many.

    The demo machines' ids derive from their names the way enrolment derives ids from device
    identities, so each simulated sensor enrols as its machine and keeps its inventory properties.
    Other machines of the tenant get no simulated sensor. ``ca_file`` is the CA to trust when the
    server serves HTTPS.
    """
    engine = create_db_engine(settings.resolved_database_url(), pool_size=1)
    control = settings.control_api_enabled
    try:
        uow = UnitOfWorkFactory(engine)
        tenant = settings.default_tenant_id
        with uow(write=False) as reader:
            machines = reader.machines.ids_and_dns_names(tenant, HealthStatus.ACTIVE.value)
        # Only the demo fleet's own machines: their ids are what enrolling their names derives.
        names = [dns.split(".")[0] for machine_id, dns in machines if derive_machine_id(tenant, dns.split(".")[0]) == machine_id]
        if not names:
            return 0
        package = issue_onboarding_package(tenant, server_url, None, uow(), SystemClock())
    finally:
        if not control:
            engine.dispose()
    # With the control API, the simulated sensors follow the behaviour it sets for their machines,
    # and start again, freshly enrolled, after each reset.
    options = SensorOptions(check_in_interval=300, action_delay=settings.demo_action_seconds, follow_simulation=control)
    restart = ResetEpochs(lambda: clock_state(uow(write=False))[1]) if control else None
    # A few hundred simulated sensors would drown the server's own log lines.
    logging.getLogger("bulwark.sensor").setLevel(logging.WARNING)

    def run() -> None:
        _wait_until_serving(server_url, ca_file)
        asyncio.run(
            run_fleet(package, len(names), names=names, keep_properties=True, options=options, verify=ca_file, restart=restart)
        )

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
