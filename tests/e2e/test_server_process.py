"""A real ``bulwark serve`` process over HTTP: concurrency, restarts, the demo fleet."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

import httpx
import pytest

from bulwark.domain.actions import ActionType
from bulwark.store.uow import SqlUnitOfWorkFactory
from tests.conftest import TENANT, make_machine, seed
from tests.identity_support import app_token, bearer, register_app
from tests.support import free_port, server_process

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


def test_demo_server_stops_quietly_ending_long_polls(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    from tests.support import child_env

    log = tmp_path / "demo.log"
    port = free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bulwark.cli", "serve", "--demo", "--port", str(port), "--data-dir", str(tmp_path / "d")],
            env=child_env({"BULWARK_DATABASE_URL": ""}),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.2)
            time.sleep(3)  # the demo sensors are in their long polls
            proc.send_signal(signal.SIGINT)
            assert proc.wait(30) in (0, 130), log.read_text()[-3000:]  # 130: stopped by Ctrl-C
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    printed = log.read_text()
    assert "Traceback" not in printed and "CancelledError" not in printed, printed[-3000:]
