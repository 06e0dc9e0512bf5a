"""A real ``bulwark serve`` process over HTTP: concurrency, restarts, the demo fleet."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from bulwark.domain.actions import ActionType
from bulwark.service.uow import UnitOfWorkFactory
from tests.conftest import TENANT, make_machine, seed
from tests.support import free_port, server_process

pytestmark = pytest.mark.slow


def _env(database_url: str, data_dir: Path) -> dict[str, str]:
    return {"BULWARK_DATABASE_URL": database_url, "BULWARK_DATA_DIR": str(data_dir), "BULWARK_DEFAULT_TENANT_ID": TENANT}


async def _offboard_all_at_once(base: str, machine_id: str, count: int) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        calls = [client.post(f"/api/machines/{machine_id}/offboard", json={"Comment": f"race {i}"}) for i in range(count)]
        return await asyncio.gather(*calls)


@pytest.mark.parametrize("workers", [1, 2])
def test_concurrent_offboards_create_exactly_one_action(
    database_url: str, uow_factory: UnitOfWorkFactory, tmp_path: Path, workers: int
) -> None:
    machine = make_machine(11)
    seed(uow_factory, [machine])
    with server_process("--workers", str(workers), env=_env(database_url, tmp_path), log=tmp_path / "server.log") as base:
        responses = asyncio.run(_offboard_all_at_once(base, machine.id, 40))
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [200] + [400] * 39, [r.text for r in responses if r.status_code not in (200, 400)]
        assert {r.json()["error"]["code"] for r in responses if r.status_code == 400} == {"ActiveRequestAlreadyExists"}
        winner = next(r.json() for r in responses if r.status_code == 200)
        with uow_factory(write=False) as uow:
            active = uow.actions.active_for(machine.id, ActionType.OFFBOARD)
        assert active is not None and active.id == winner["id"]


def test_acknowledged_action_survives_a_restart(database_url: str, uow_factory: UnitOfWorkFactory, tmp_path: Path) -> None:
    machine = make_machine(12)
    seed(uow_factory, [machine])
    env = _env(database_url, tmp_path)
    port = free_port()
    with server_process(env=env, port=port) as base:
        created = httpx.post(f"{base}/api/machines/{machine.id}/offboard", json={"Comment": "before restart"}).json()
    with server_process(env=env, port=port) as base:
        again = httpx.get(f"{base}/api/machineactions/{created['id']}")
    assert again.status_code == 200
    assert again.json() == created


def test_demo_server_from_nothing(tmp_path: Path) -> None:
    """What README's run command does: a fresh data directory, a demo fleet, an offboard by curl."""
    log = tmp_path / "demo.log"
    with server_process("--demo", "--data-dir", str(tmp_path / "fresh"), env={"BULWARK_DATABASE_URL": ""}, log=log) as base:
        printed = log.read_text()
        assert "Seeded demo fleet" in printed
        machine_id = printed.split("/api/machines/")[1].split("/offboard")[0]
        created = httpx.post(f"{base}/api/machines/{machine_id}/offboard", json={"Comment": "demo"})
        assert created.status_code == 200, created.text
        # The demo's simulated sensors carry the offboard out.
        action_id = created.json()["id"]
        seen = {created.json()["status"]}
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and "Succeeded" not in seen:
            seen.add(httpx.get(f"{base}/api/machineactions/{action_id}").json()["status"])
            time.sleep(0.2)
        assert seen <= {"Pending", "InProgress", "Succeeded"} and "Succeeded" in seen, seen
    assert (tmp_path / "fresh" / "bulwark.db").exists()
