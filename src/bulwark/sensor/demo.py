"""Simulated sensors for the demo fleet, so that offboards on ``bulwark serve --demo`` complete."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import httpx

from bulwark.clock import SystemClock
from bulwark.domain.machines import HealthStatus
from bulwark.domain.sensors import derive_machine_id
from bulwark.sensor.agent import SensorOptions
from bulwark.sensor.fleet import run_fleet
from bulwark.service.sensors import issue_onboarding_package
from bulwark.settings import Settings
from bulwark.store.db import create_db_engine
from bulwark.store.uow import SqlUnitOfWorkFactory as UnitOfWorkFactory

# A visible moment of InProgress before a demo offboard succeeds.
DEMO_ACTION_SECONDS = 2.0


def start_demo_sensors(settings: Settings, server_url: str, *, ca_file: str | None = None) -> int:
    """Start, in a background thread, one simulated sensor per active demo machine; return how many.

    The demo machines' ids derive from their names the way enrolment derives ids from device
    identities, so each simulated sensor enrols as its machine and keeps its inventory properties.
    Other machines of the tenant get no simulated sensor. ``ca_file`` is the CA to trust when the
    server serves HTTPS.
    """
    engine = create_db_engine(settings.resolved_database_url(), pool_size=1)
    try:
        uow = UnitOfWorkFactory(engine)
        tenant = settings.default_tenant_id
        with uow(write=False) as reader:
            machines = reader.machines.ids_and_dns_names(tenant, HealthStatus.ACTIVE.value)
        # Only the demo fleet's own machines: their ids are what enrolling their names derives.
        names = [dns.split(".")[0] for machine_id, dns in machines if derive_machine_id(tenant, dns.split(".")[0]) == machine_id]
        if not names:
            return 0
        # The simulated fleet keeps no state across restarts: as the operator starting the demo,
        # this server lets its package replace the demo machines' earlier (simulated) sensors.
        package = issue_onboarding_package(tenant, server_url, None, uow(), SystemClock(), replaces_sensors=True)
    finally:
        engine.dispose()
    options = SensorOptions(check_in_interval=300, action_delay=DEMO_ACTION_SECONDS)
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
