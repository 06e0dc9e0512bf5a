"""A simulated fleet: many lightweight sensors in one process, for load tests and demos."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import ssl
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from bulwark.sensor.agent import DeviceProfile, Outcome, Sensor, SensorError, SensorOptions
from bulwark.sensor.state import MemoryState, new_state

log = logging.getLogger("bulwark.sensor.fleet")
# httpx's connection pool looks at each of its connections on every request (and at an idle one's
# socket with a system call), so a pool's cost per request grows with its size: small pools keep a
# large fleet's cost per request flat. They share one TLS context, which is costly to build.
SENSORS_PER_CLIENT = 10

# (platform, version, build) of simulated devices: all of them offboardable by API.
_PROFILES = [
    ("Windows11", "23H2", 22631),
    ("Windows10", "22H2", 19045),
    ("WindowsServer2022", "21H2", 20348),
    ("WindowsServer2019", "1809", 17763),
]


FLEET_DOMAIN = "fleet.example"


def simulated_profile(name: str, domain: str = FLEET_DOMAIN) -> DeviceProfile:
    """A plausible, stable device profile for the simulated device called ``name``."""
    digest = hashlib.sha1(name.encode()).digest()
    platform_name, version, build = _PROFILES[digest[0] % len(_PROFILES)]
    return DeviceProfile(
        computer_dns_name=f"{name}.{domain}",
        os_platform=platform_name,
        version=version,
        os_build=build,
        ip_addresses=[f"10.{digest[1] % 64}.{digest[2]}.{digest[3] % 254 + 1}"],
    )


class RestartSignal(Protocol):
    """When a test server's fleet is reset: the epoch now, and a wait for the next one."""

    async def current(self) -> int: ...

    async def changed(self, since: int) -> None: ...


@dataclass
class FleetReport:
    """How the fleet's sensors ended, and what they received."""

    outcomes: Counter = field(default_factory=Counter)
    actions_received: int = 0


async def run_fleet(
    package: dict[str, Any],
    count: int,
    *,
    names: list[str] | None = None,
    keep_properties: bool = False,
    options: SensorOptions | None = None,
    on_action: Callable[[str, dict[str, Any]], None] | None = None,
    stop: asyncio.Event | None = None,
    enrol_concurrency: int = 50,
    verify: str | None = None,
    restart: RestartSignal | None = None,
) -> FleetReport:
    """Run ``count`` simulated sensors (named ``names`` or ``fleet-NNNNN``) until each stops or ``stop`` is set.

    Device identities are the names, so the same names map to the same machines run after run.
    ``keep_properties`` enrols without reporting properties, keeping what the inventory has (the
    demo fleet). ``verify`` is a CA file to trust (a server with Bulwark's local CA). With
    ``restart`` (a test server's demo fleet), a sensor that stopped (offboarded, or refused once a
    reset removed its enrolment) starts again, freshly enrolled, after the next reset.
    """
    names = names or [f"fleet-{i:05d}" for i in range(count)]
    report = FleetReport()
    per_client = SENSORS_PER_CLIENT
    # Each sensor sends one request at a time, so its group never needs more connections than sensors.
    limits = httpx.Limits(max_connections=per_client, max_keepalive_connections=per_client)
    tls = ssl.create_default_context(cafile=verify) if verify else httpx.create_ssl_context()
    gate = asyncio.Semaphore(enrol_concurrency)
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(60, connect=30), verify=tls))
            for _ in range(max(1, -(-len(names) // per_client)))
        ]

        async def one(index: int, name: str) -> None:
            client = clients[index // per_client]
            state = new_state(device_identity=name)
            profile = simulated_profile(name)
            if keep_properties:
                # Every property None: the sensor reports nothing, so the inventory keeps what it has.
                nothing: dict[str, Any] = dict.fromkeys(
                    ("computer_dns_name", "os_platform", "ip_addresses", "agent_version", "os_processor")
                )
                profile = DeviceProfile(**nothing)

            def received(action: dict[str, Any]) -> None:
                report.actions_received += 1
                if on_action:
                    on_action(name, action)

            if restart is None:
                outcome, _ = await run_one(name, state, profile, client, received, None)
                report.outcomes[outcome] += 1
                return
            while True:
                outcome, epoch = await run_one(name, new_state(device_identity=name), profile, client, received, restart)
                report.outcomes[outcome] += 1
                await restart.changed(epoch)

        async def run_one(
            name: str,
            state: dict[str, Any],
            profile: DeviceProfile,
            client: httpx.AsyncClient,
            received: Callable[[dict[str, Any]], None],
            restart: RestartSignal | None,
        ) -> tuple[str, int]:
            """Enrol and run one sensor until it stops; (how it ended, the reset epoch it enrolled in)."""
            sensor = Sensor(MemoryState(state), profile, client=client, options=options, on_action=received)
            before = 0
            try:
                sensor.onboard(package)
                while True:
                    before = await restart.current() if restart else 0
                    async with gate:
                        await sensor.enrol()
                    # A reset between reading the epoch and enrolling may have removed this
                    # enrolment: enrol again (harmless for a machine that is not offboarded).
                    if restart is None or await restart.current() == before:
                        break
                outcome = await sensor.run()
            except SensorError as exc:
                # After a reset every enrolment is refused: expected, and the sensor starts again.
                (log.info if restart else log.warning)("simulated sensor %s stopped: %s", name, exc)
                return "error", before
            return outcome.value, before

        tasks = [asyncio.create_task(one(i, name)) for i, name in enumerate(names)]
        waiter = asyncio.create_task(stop.wait()) if stop else None
        pending = set(tasks) | ({waiter} if waiter else set())
        while tasks and not all(t.done() for t in tasks):
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if waiter is not None and waiter in done:
                break
        for task in tasks:
            if not task.done():
                task.cancel()
                report.outcomes[Outcome.CANCELLED.value] += 1
        await asyncio.gather(*tasks, return_exceptions=True)
        if waiter is not None:
            waiter.cancel()
    return report
