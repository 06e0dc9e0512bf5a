"""A real ``bulwark serve`` process over HTTP: concurrency, restarts, the demo fleet."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from bulwark.domain.actions import ActionType
from bulwark.store.uow import SqlUnitOfWorkFactory
from tests.conftest import TENANT, make_machine, seed
from tests.identity_support import app_token, bearer, register_app
from tests.support import child_env, free_port, server_process

pytestmark = pytest.mark.slow


def _env(database_url: str, data_dir: Path) -> dict[str, str]:
    return {"BULWARK_DATABASE_URL": database_url, "BULWARK_DATA_DIR": str(data_dir), "BULWARK_DEFAULT_TENANT_ID": TENANT}


def _headers(base: str, uow_factory: SqlUnitOfWorkFactory) -> dict[str, str]:
    with httpx.Client(base_url=base) as client:
        return bearer(app_token(client, register_app(uow_factory, ["Machine.Offboard", "Machine.Read.All"])))


async def _offboard_all_at_once(base: str, headers: dict[str, str], machine_id: str, count: int) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=base, timeout=60, headers=headers) as client:
        calls = [client.post(f"/api/machines/{machine_id}/offboard", json={"Comment": f"race {i}"}) for i in range(count)]
        return await asyncio.gather(*calls)


@pytest.mark.parametrize("workers", [1, 2])
def test_concurrent_offboards_create_exactly_one_action(
    database_url: str, uow_factory: SqlUnitOfWorkFactory, tmp_path: Path, workers: int, request: pytest.FixtureRequest
) -> None:
    machine = make_machine(11)
    seed(uow_factory, [machine])
    env = _env(database_url, tmp_path)
    if workers > 1:
        # Several workers share rate-limit budgets through Redis (they refuse to start without it).
        env["BULWARK_REDIS_URL"] = request.getfixturevalue("redis_url")
        env["BULWARK_RATE_LIMIT_KEY_PREFIX"] = f"bulwark-test:{uuid.uuid4().hex}"
    with server_process("--workers", str(workers), env=env, log=tmp_path / "server.log") as base:
        responses = asyncio.run(_offboard_all_at_once(base, _headers(base, uow_factory), machine.id, 40))
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [200] + [400] * 39, [r.text for r in responses if r.status_code not in (200, 400)]
        assert {r.json()["error"]["code"] for r in responses if r.status_code == 400} == {"ActiveRequestAlreadyExists"}
        winner = next(r.json() for r in responses if r.status_code == 200)
        with uow_factory(write=False) as uow:
            active = uow.actions.active_for(machine.id, ActionType.OFFBOARD)
        assert active is not None and active.id == winner["id"]


def test_acknowledged_action_survives_a_restart(database_url: str, uow_factory: SqlUnitOfWorkFactory, tmp_path: Path) -> None:
    machine = make_machine(12)
    seed(uow_factory, [machine])
    env = _env(database_url, tmp_path)
    port = free_port()
    with server_process(env=env, port=port) as base:
        headers = _headers(base, uow_factory)
        created = httpx.post(
            f"{base}/api/machines/{machine.id}/offboard", json={"Comment": "before restart"}, headers=headers
        ).json()
    with server_process(env=env, port=port) as base:
        # The token issued before the restart still verifies: the signing key lives in the database.
        again = httpx.get(f"{base}/api/machineactions/{created['id']}", headers=headers)
    assert again.status_code == 200
    assert again.json() == created


def test_demo_server_from_nothing(tmp_path: Path) -> None:
    """What README's run command does: a fresh data directory, a demo fleet, a token, an offboard by curl."""
    log = tmp_path / "demo.log"
    data = tmp_path / "fresh"
    with server_process("--demo", "--data-dir", str(data), env={"BULWARK_DATABASE_URL": ""}, log=log) as base:
        printed = log.read_text()
        assert "Seeded demo fleet" in printed
        machine_id = printed.split("/api/machines/")[1].split("/offboard")[0]
        assert httpx.post(f"{base}/api/machines/{machine_id}/offboard", json={"Comment": "demo"}).status_code == 401
        creds = json.loads((data / "demo-credentials.json").read_text())
        full, reader = creds["applications"]
        assert full["client_secret"] in printed and creds["users"][0]["password"] in printed
        token = httpx.post(
            creds["token_endpoint"],
            data={
                "grant_type": "client_credentials",
                "client_id": full["client_id"],
                "client_secret": full["client_secret"],
                "scope": creds["scope"],
            },
        ).json()["access_token"]
        created = httpx.post(f"{base}/api/machines/{machine_id}/offboard", json={"Comment": "demo"}, headers=bearer(token))
        assert created.status_code == 200, created.text
        assert created.json()["requestor"] == "Bulwark Demo Automation"
        # The demo's simulated sensors carry the offboard out.
        action_id = created.json()["id"]
        seen = {created.json()["status"]}
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and "Succeeded" not in seen:
            seen.add(httpx.get(f"{base}/api/machineactions/{action_id}", headers=bearer(token)).json()["status"])
            time.sleep(0.2)
        assert seen <= {"Pending", "InProgress", "Succeeded"} and "Succeeded" in seen, seen
    assert (data / "bulwark.db").exists()
    # A restart keeps the same demo credentials working, so scripts need not re-read them.
    with server_process("--demo", "--data-dir", str(data), env={"BULWARK_DATABASE_URL": ""}) as base:
        again = json.loads((data / "demo-credentials.json").read_text())
        assert again["applications"] == creds["applications"] and again["users"] == creds["users"]
        reader_token = httpx.post(
            again["token_endpoint"],
            data={
                "grant_type": "client_credentials",
                "client_id": reader["client_id"],
                "client_secret": reader["client_secret"],
                "scope": again["scope"],
            },
        ).json()["access_token"]
        refused = httpx.post(f"{base}/api/machines/{machine_id}/offboard", json={"Comment": "x"}, headers=bearer(reader_token))
        assert refused.status_code == 403
        assert refused.json()["error"]["message"] == (
            "Missing application roles. API required roles: Machine.Offboard, application roles: Machine.Read.All."
        )


def _sensors_in_long_polls(base: str) -> int:
    metrics = httpx.get(f"{base}/metrics", timeout=10).text
    return int(sum(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith("bulwark_sensors_connected")))


def _wait_for(condition: Callable[[], object], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


async def _offboard_until_stopped(
    base: str, token: str, machine_ids: list[str], proc: subprocess.Popen[bytes], stop: signal.Signals
) -> dict[str, dict]:
    """Offboard ``machine_ids`` from a few clients at once; send ``stop`` to the server once three are
    acknowledged, and go on until it refuses connections. Returns what was acknowledged."""
    acknowledged: dict[str, dict] = {}
    pending = list(machine_ids)
    stopped = asyncio.Event()

    async def client() -> None:
        async with httpx.AsyncClient(base_url=base, headers=bearer(token), timeout=60) as http:
            while pending:
                machine_id = pending.pop()
                try:
                    response = await http.post(f"/api/machines/{machine_id}/offboard", json={"Comment": "at shutdown"})
                except httpx.TransportError:
                    assert stopped.is_set(), "the server went away before it was asked to stop"
                    return
                assert response.status_code == 200, response.text
                acknowledged[machine_id] = response.json()
                if len(acknowledged) >= 3 and not stopped.is_set():
                    proc.send_signal(stop)
                    stopped.set()

    await asyncio.gather(*(client() for _ in range(4)))
    return acknowledged


@pytest.mark.parametrize(
    ("workers", "stop"),
    [(1, signal.SIGINT), pytest.param(2, signal.SIGTERM, marks=pytest.mark.redis)],
    ids=["one-process-sigint", "two-workers-sigterm"],
)
def test_a_stopping_demo_server_answers_held_long_polls_and_keeps_what_it_acknowledged(
    tmp_path: Path, workers: int, stop: signal.Signals, request: pytest.FixtureRequest
) -> None:
    """Ctrl-C (or a process manager's SIGTERM) on ``serve --demo`` with its simulated sensors and a real
    `bulwark sensor run` in their long polls, while offboards are under way: every held poll is
    answered "poll again", the server exits 0 without a traceback, and after a restart the sensor
    is back on its own and every acknowledged offboard is there."""
    data, port = tmp_path / "data", free_port()
    base = f"http://127.0.0.1:{port}"
    env = child_env({"BULWARK_DATABASE_URL": "", "BULWARK_DATA_DIR": str(data), "BULWARK_DEMO_MACHINE_COUNT": "60"})
    if workers > 1:
        env["BULWARK_REDIS_URL"] = request.getfixturevalue("redis_url")
        env["BULWARK_RATE_LIMIT_KEY_PREFIX"] = f"bulwark-test:{uuid.uuid4().hex}"
    serve = [sys.executable, "-m", "bulwark.cli", "serve", "--demo", "--host", "127.0.0.1", "--port", str(port)]
    serve += ["--workers", str(workers)]
    server_log, sensor_log, state = tmp_path / "server.log", tmp_path / "sensor.log", tmp_path / "device" / "state.json"

    def start_server(log: Path) -> subprocess.Popen[bytes]:
        with open(log, "wb") as out:
            proc = subprocess.Popen(serve, env=env, stdout=out, stderr=subprocess.STDOUT)

        def healthy() -> bool:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        _wait_for(healthy, "the server to answer", timeout=90)
        return proc

    server = start_server(server_log)
    sensor: subprocess.Popen[bytes] | None = None
    restarted: subprocess.Popen[bytes] | None = None
    try:
        simulated = int(server_log.read_text().split("Simulated sensors for ")[1].split()[0])
        _wait_for(lambda: _sensors_in_long_polls(base) >= simulated, "the simulated sensors' long polls")
        creds = json.loads((data / "demo-credentials.json").read_text())
        full = creds["applications"][0]
        token_request = {
            "grant_type": "client_credentials",
            "client_id": full["client_id"],
            "client_secret": full["client_secret"],
            "scope": creds["scope"],
        }
        token = httpx.post(creds["token_endpoint"], data=token_request).json()["access_token"]
        active = httpx.get(
            f"{base}/api/machines",
            params={"$filter": "healthStatus eq 'Active' and osPlatform eq 'Windows11'", "$top": "12"},
            headers=bearer(token),
        ).json()["value"]
        assert len(active) >= 6, active

        package = tmp_path / "onboarding.json"
        issued = subprocess.run(
            [sys.executable, "-m", "bulwark.cli", "sensor", "package", "onboarding", "--server-url", base, "--out", str(package)],
            env=env,
            capture_output=True,
            timeout=60,
        )
        assert issued.returncode == 0, issued.stderr
        run = ["sensor", "run", "--state", str(state), "--onboarding-package", str(package), "--dns-name", "real-1.contoso.com"]
        with open(sensor_log, "wb") as out:
            sensor = subprocess.Popen(
                [sys.executable, "-m", "bulwark.cli", *run, "--check-in-interval", "600", "--poll-wait", "120"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        _wait_for(lambda: state.exists() and json.loads(state.read_text()).get("enrolment"), "the sensor's enrolment")
        machine_id = json.loads(state.read_text())["enrolment"]["machineId"]
        _wait_for(lambda: _sensors_in_long_polls(base) >= simulated + 1, "the real sensor's long poll")

        acknowledged = asyncio.run(_offboard_until_stopped(base, token, [m["id"] for m in active], server, stop))
        assert server.wait(60) == 0, server_log.read_text()[-3000:]
        printed = server_log.read_text()
        for sign in ("Traceback", "CancelledError", "ERROR", "timeout graceful shutdown exceeded"):
            assert sign not in printed, printed[-3000:]
        # The real sensor's held poll was answered ("no action, poll again in a second"), not cut.
        assert sensor.poll() is None, sensor_log.read_text()
        _wait_for(lambda: "the server is stopping; polling again in 1 s" in sensor_log.read_text(), "the stop notice", 10)

        restarted = start_server(tmp_path / "restarted.log")
        _wait_for(lambda: "reconnected to the server" in sensor_log.read_text(), "the sensor's reconnect", timeout=90)
        for machine, action in acknowledged.items():
            again = httpx.get(f"{base}/api/machineactions/{action['id']}", headers=bearer(token))
            assert again.status_code == 200, (machine, again.text)
            assert {k: again.json()[k] for k in ("id", "type", "machineId", "requestor")} == {
                k: action[k] for k in ("id", "type", "machineId", "requestor")
            }
        # The sensor kept its enrolment through the restart and carries out the next offboard.
        created = httpx.post(f"{base}/api/machines/{machine_id}/offboard", json={"Comment": "after"}, headers=bearer(token))
        assert created.status_code == 200, created.text
        assert sensor.wait(60) == 0, sensor_log.read_text()
        assert json.loads(state.read_text())["enrolment"]["generation"] == 1
        said = sensor_log.read_text()
        assert " WARNING " not in said and " ERROR " not in said and "Traceback" not in said, said
        restarted.send_signal(signal.SIGTERM)
        assert restarted.wait(60) == 0
    finally:
        for proc in (server, sensor, restarted):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
