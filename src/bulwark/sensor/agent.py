"""The device-side program: enrol, check in, take actions from the server and report how they ended."""

from __future__ import annotations

import asyncio
import enum
import logging
import platform
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from bulwark import __version__
from bulwark.domain.sensors import InvalidPackage, read_onboarding_package, verify_offboarding_package
from bulwark.sensor.state import RUNNING, STOPPED, StateStore

log = logging.getLogger("bulwark.sensor")

AGENT_VERSION = f"10.8800.{__version__}"
# HRESULTs the sensor reports: E_ABORT for an action interrupted by a crash or restart, E_NOTIMPL
# for an action type this sensor does not carry out, E_FAIL for an offboard that failed on the
# device (simulated with ``SensorOptions.fail_offboard``).
E_ABORT = -2147467260
E_NOTIMPL = -2147467263
E_FAIL = -2147467259
# How long after the server said it is stopping failing to reach it is taken for a restart under
# way (logged as INFO); past this, each failure is a warning again.
RESTART_PATIENCE_SECONDS = 120.0


class SensorError(Exception):
    """A condition the sensor cannot run past (not onboarded, credential refused, ...)."""


class Outcome(str, enum.Enum):
    """Why ``Sensor.run`` returned."""

    OFFBOARDED = "offboarded"  # an offboard action stopped the service
    STOPPED = "stopped"  # the service was already stopped and no re-onboard was asked for
    REMOVED = "removed"  # an offboarding package removed the onboarding information
    CANCELLED = "cancelled"  # asked to stop (fleet shutdown)


@dataclass
class DeviceProfile:
    """What the sensor reports about its device."""

    computer_dns_name: str
    os_platform: str
    version: str | None = None
    os_build: int | None = None
    ip_addresses: list[str] = field(default_factory=list)
    agent_version: str = AGENT_VERSION
    os_processor: str | None = "x64"

    def to_wire(self) -> dict[str, Any]:
        """The properties as the gateway reads them."""
        return {
            "computerDnsName": self.computer_dns_name,
            "osPlatform": self.os_platform,
            "version": self.version,
            "osBuild": self.os_build,
            "agentVersion": self.agent_version,
            "ipAddresses": self.ip_addresses,
            "osProcessor": self.os_processor,
        }


# What `bulwark sensor run` simulates unless told otherwise: a device the API can offboard.
SIMULATED_PLATFORM = "Windows11"
SIMULATED_VERSION = "23H2"
SIMULATED_BUILD = 22631
SIMULATED_DOMAIN = "contoso.com"


def simulated_profile(device_identity: str) -> DeviceProfile:
    """A Windows 11 workstation named after the device identity (stable across restarts)."""
    return DeviceProfile(
        computer_dns_name=f"sim-{device_identity.replace('-', '')[:8].lower()}.{SIMULATED_DOMAIN}",
        os_platform=SIMULATED_PLATFORM,
        version=SIMULATED_VERSION,
        os_build=SIMULATED_BUILD,
        ip_addresses=["10.0.0.10"],
    )


def profile_from_wire(values: dict[str, Any]) -> DeviceProfile:
    """A profile as ``DeviceProfile.to_wire`` wrote it."""
    return DeviceProfile(
        computer_dns_name=values["computerDnsName"],
        os_platform=values["osPlatform"],
        version=values.get("version"),
        os_build=values.get("osBuild"),
        ip_addresses=list(values.get("ipAddresses") or []),
        os_processor=values.get("osProcessor"),
    )


def detect_profile() -> DeviceProfile:
    """This host's own properties, named the way the inventory names them."""
    system = platform.system()
    build: int | None = None
    if system == "Windows":
        try:
            build = int(platform.version().split(".")[-1])
        except ValueError:
            build = None
        os_platform = "Windows11" if (build or 0) >= 22000 else "Windows10"
    else:
        os_platform = {"Darwin": "macOS"}.get(system, system or "Unknown")
    try:
        addresses = sorted({a for a in socket.gethostbyname_ex(socket.gethostname())[2]})
    except OSError:
        addresses = []
    processor = {"x86_64": "x64", "amd64": "x64", "arm64": "arm64", "aarch64": "arm64"}.get(platform.machine().lower())
    return DeviceProfile(
        computer_dns_name=socket.getfqdn().lower(),
        os_platform=os_platform,
        version=platform.release() or None,
        os_build=build,
        ip_addresses=addresses,
        os_processor=processor,
    )


@dataclass
class SensorOptions:
    """How the sensor paces itself."""

    check_in_interval: float = 60.0
    poll_wait: float = 25.0
    action_delay: float = 0.0  # simulated work per action, for demos and tests
    retry_delay: float = 1.0
    max_retry_delay: float = 30.0
    # Simulate a device whose offboard fails: report it Failed (E_FAIL) and keep the service
    # running, so that playbooks can rehearse their failure handling.
    fail_offboard: bool = False
    # A simulated device of a test server follows the behaviour the server's control API set for
    # its machine (an action's ``simulation``: outcome, delay, HRESULT). A real sensor ignores it.
    follow_simulation: bool = False


def _retry_after(response: httpx.Response, longest: float) -> float | None:
    """The seconds of a ``Retry-After: <seconds>`` header, at most ``longest``; None without one."""
    value = response.headers.get("retry-after", "").strip()
    if not value.isdigit():
        return None
    return min(float(value), longest)


def apply_offboarding_package(store: StateStore, package: Any, now: datetime | None = None) -> None:
    """Remove the onboarding information completely, if ``package`` is genuine and not expired.

    Raises InvalidPackage (saying why) and changes nothing otherwise; the device judges expiry
    with its own clock.
    """
    state = store.load()
    onboarding = state.get("onboarding")
    if not onboarding:
        raise InvalidPackage("This device is not onboarded.")
    verify_offboarding_package(
        package,
        tenant_id=onboarding["tenantId"],
        public_key=onboarding["packageSigningKey"],
        now=now or datetime.now(UTC),
    )
    state.update(onboarding=None, enrolment=None, service=STOPPED, currentAction=None)
    store.save(state)


class Sensor:
    """One device's sensor, running against its server until offboarded or told to stop."""

    def __init__(
        self,
        store: StateStore,
        profile: DeviceProfile,
        *,
        client: httpx.AsyncClient | None = None,
        options: SensorOptions | None = None,
        on_action: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.store = store
        self.profile = profile
        self.options = options or SensorOptions()
        self._client = client
        self._owns_client = client is None
        self.on_action = on_action
        self.state = store.load()
        self.machine_id: str | None = (self.state.get("enrolment") or {}).get("machineId")
        # When the server said it is stopping (monotonic seconds), until it answers again:
        # meanwhile, failing to reach it is a restart under way, not worth a warning at first.
        self._server_stopped_at: float | None = None

    # -- onboarding -------------------------------------------------------------------------

    def onboard(self, package: Any) -> None:
        """Keep the onboarding package's information in the state (the device's registry)."""
        self.state["onboarding"] = read_onboarding_package(package)
        self.state["service"] = RUNNING
        self._save()

    @property
    def server_url(self) -> str:
        onboarding = self.state.get("onboarding")
        if not onboarding:
            raise SensorError("This device is not onboarded: run with an onboarding package first.")
        return onboarding["serverUrl"]

    def _save(self) -> None:
        self.store.save(self.state)

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.state['enrolment']['credential']}"}

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send, retrying transport failures and server errors with backoff (the server may restart)."""
        assert self._client is not None
        delay = self.options.retry_delay
        retried_at_once = False
        failed = False
        while True:
            stopped_at = self._server_stopped_at
            restarting = stopped_at is not None and time.monotonic() - stopped_at < RESTART_PATIENCE_SECONDS
            level = logging.INFO if restarting else logging.WARNING
            try:
                response = await self._client.request(method, f"{self.server_url}{path}", **kwargs)
                if response.status_code < 500:
                    if failed or stopped_at is not None:
                        log.info("reconnected to the server (%s answered %s)", path, response.status_code)
                        self._server_stopped_at = None
                    return response
                log.log(level, "server answered %s for %s; retrying", response.status_code, path)
            except httpx.TransportError as exc:
                if not retried_at_once and isinstance(exc, (httpx.ReadError, httpx.RemoteProtocolError)):
                    # Most likely a kept-alive connection the server closed meanwhile: retry at once.
                    retried_at_once = True
                    continue
                log.log(level, "server unreachable (%s) for %s; retrying", exc.__class__.__name__, path)
            failed = True
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.options.max_retry_delay)

    async def enrol(self) -> None:
        """Enrol with the onboarding information; the server derives the same machine id every time."""
        onboarding = self.state["onboarding"]
        response = await self._request(
            "POST",
            "/sensor/v1/enrol",
            json={
                "tenantId": onboarding["tenantId"],
                "onboardingKey": onboarding["onboardingKey"],
                "deviceIdentity": self.state["deviceIdentity"],
                "properties": self.profile.to_wire(),
                # Proof that this is the device enrolled under this identity, when it was.
                "currentCredential": (self.state.get("enrolment") or {}).get("credential"),
                "reonboardingProof": self.state.get("reonboardingProof"),
            },
        )
        if response.status_code != 200:
            raise SensorError(f"enrolment refused: {response.status_code} {response.text}")
        body = response.json()
        self.state["enrolment"] = {
            "sensorId": body["sensorId"],
            "machineId": body["machineId"],
            "credential": body["credential"],
            "generation": body["generation"],
        }
        # Kept outside the enrolment, so that it survives an offboarding package.
        self.state["reonboardingProof"] = body.get("reonboardingProof")
        self.state["service"] = RUNNING
        self.state["currentAction"] = None
        self.machine_id = body["machineId"]
        self._save()
        log.info("enrolled as machine %s (generation %s)", self.machine_id, body["generation"])

    async def check_in(self) -> None:
        """Report the device's properties; the server updates lastSeen and healthStatus."""
        response = await self._request("POST", "/sensor/v1/checkin", json=self.profile.to_wire(), headers=self._headers())
        self._raise_for_auth(response)

    def _raise_for_auth(self, response: httpx.Response) -> None:
        if response.status_code == 401:
            raise SensorError("the server no longer accepts this sensor's credential (enrolled again elsewhere?)")
        if response.status_code >= 400 and response.status_code != 403:
            raise SensorError(f"server refused: {response.status_code} {response.text}")

    async def claimed_action(self) -> dict[str, Any] | None:
        """The action the server says this device claimed and has not reported (after a crash), or None."""
        response = await self._request("GET", "/sensor/v1/actions/current", headers=self._headers())
        if response.status_code in (204, 404):  # 404: a server without this endpoint
            return None
        self._raise_for_auth(response)
        return response.json() if response.status_code == 200 else None

    async def next_action(self, wait: float) -> dict[str, Any] | None:
        """Claim the next action, waiting up to ``wait`` seconds for one."""
        response = await self._request(
            "GET",
            "/sensor/v1/actions/next",
            params={"wait": f"{wait:.3f}"},
            headers=self._headers(),
            timeout=httpx.Timeout(wait + 30, connect=10),
        )
        if response.status_code == 204:
            pause = _retry_after(response, self.options.max_retry_delay)
            if pause is not None:
                # The server is stopping (a restart, most likely): poll again a moment later.
                self._server_stopped_at = time.monotonic()
                log.info("the server is stopping; polling again in %g s", pause)
                await asyncio.sleep(pause)
            return None
        self._raise_for_auth(response)
        if response.status_code == 403:
            raise SensorError(f"server refused actions: {response.text}")
        return response.json()

    async def report(self, action_id: str, status: str, error_h_result: int = 0) -> dict[str, Any]:
        """Report an action's outcome; answers ``{"accepted", "action"}``."""
        response = await self._request(
            "POST",
            f"/sensor/v1/actions/{action_id}/outcome",
            json={"status": status, "errorHResult": error_h_result},
            headers=self._headers(),
        )
        self._raise_for_auth(response)
        return response.json()

    # -- carrying out actions ---------------------------------------------------------------

    async def _finish_interrupted(self) -> bool:
        """Settle an action a previous run claimed but did not see through; True if it stopped the service."""
        current = self.state.get("currentAction")
        if not current or not self.state.get("enrolment"):
            return False
        answer = await self.report(current["id"], "Failed", E_ABORT)
        status = answer["action"]["status"]
        self.state["currentAction"] = None
        # The previous run's offboard was accepted just before it stopped: finish stopping now.
        stopped = current.get("type") == "Offboard" and status == "Succeeded"
        if stopped:
            self.state["service"] = STOPPED
        self._save()
        log.info("action %s from an earlier run ended %s", current["id"], status)
        return stopped

    async def carry_out(self, action: dict[str, Any]) -> bool:
        """Carry out one claimed action and report it; return True if the service stopped."""
        self.state["currentAction"] = {"id": action["id"], "type": action["type"]}
        self._save()
        simulation = action.get("simulation") if self.options.follow_simulation else None
        if not isinstance(simulation, dict):
            simulation = None
        delay = float(simulation.get("delaySeconds") or 0) if simulation else self.options.action_delay
        if delay:
            await asyncio.sleep(delay)
        failure = E_NOTIMPL if action["type"] != "Offboard" else E_FAIL if self.options.fail_offboard else None
        if simulation is not None:
            outcome = simulation.get("outcome")
            failure = int(simulation.get("errorHResult") or E_FAIL) if outcome == "Failed" else None
            if outcome == "Succeeded" and action["type"] != "Offboard":
                await self.report(action["id"], "Succeeded")
                self.state["currentAction"] = None
                self._save()
                return False
        if failure is not None:
            # The service keeps running: the device stays onboarded and takes the next action.
            await self.report(action["id"], "Failed", failure)
            self.state["currentAction"] = None
            self._save()
            return False
        # Offboard: the service stops for good only once the server has recorded the success, so
        # the action's status and the device never disagree.
        answer = await self.report(action["id"], "Succeeded")
        self.state["currentAction"] = None
        if answer["accepted"]:
            # Onboarding information stays: only the service stops, and it does not start again
            # on its own (``bulwark sensor run --reonboard`` does).
            self.state["service"] = STOPPED
        self._save()
        return bool(answer["accepted"])

    def _onboarding_removed(self) -> bool:
        """Whether something else (an offboarding package) removed the onboarding information."""
        return not self.store.load().get("onboarding")

    async def _watch_for_removal(self) -> None:
        while not self._onboarding_removed():
            await asyncio.sleep(0.5)

    async def run(self, *, reonboard: bool = False, watch_state: bool = False) -> Outcome:
        """Run until the device is offboarded (or the service is found stopped, or removed)."""
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(30, connect=10))
        try:
            return await self._run(reonboard=reonboard, watch_state=watch_state)
        finally:
            if self._owns_client:
                await self._client.aclose()
                self._client = None

    async def _run(self, *, reonboard: bool, watch_state: bool) -> Outcome:
        self.server_url  # noqa: B018 - raises SensorError when not onboarded
        if self.state.get("service") == STOPPED and (await self._finish_interrupted() or not reonboard):
            return Outcome.STOPPED
        if reonboard or not self.state.get("enrolment"):
            await self.enrol()
        elif await self._finish_interrupted():
            return Outcome.OFFBOARDED
        else:
            # Killed after the server recorded a claim but before this device noted it: the
            # server remembers the action, so carry it out now rather than leave it InProgress.
            claimed = await self.claimed_action()
            if claimed is not None:
                log.info("resuming action %s claimed before a restart", claimed["id"])
                if await self.carry_out(claimed):
                    return Outcome.OFFBOARDED
        watcher = asyncio.ensure_future(self._watch_for_removal()) if watch_state else asyncio.get_running_loop().create_future()
        poll: asyncio.Future | None = None
        try:
            next_check_in = 0.0
            while True:
                now = time.monotonic()
                if now >= next_check_in:
                    await self.check_in()
                    next_check_in = now + self.options.check_in_interval
                wait = max(0.0, min(self.options.poll_wait, next_check_in - time.monotonic()))
                poll = asyncio.ensure_future(self.next_action(wait))
                await asyncio.wait({poll, watcher}, return_when=asyncio.FIRST_COMPLETED)
                if watcher.done():
                    poll.cancel()
                    return Outcome.REMOVED
                action = poll.result()
                if self._server_stopped_at is not None:
                    # Check in first when the server is back: it answers at once, a long poll would not.
                    next_check_in = 0.0
                if action is not None:
                    if self.on_action:
                        self.on_action(action)
                    if await self.carry_out(action):
                        return Outcome.OFFBOARDED
        finally:
            # Stopped or cancelled (a fleet shutting down): leave no request behind.
            watcher.cancel()
            if poll is not None and not poll.done():
                poll.cancel()
                await asyncio.gather(poll, return_exceptions=True)
