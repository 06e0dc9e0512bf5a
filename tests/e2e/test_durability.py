"""Nothing acknowledged is lost: SIGKILL a real server in the middle of an offboard load, restart it,
and find every acknowledged action and its audit event."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from bulwark.service.offboarding import OFFBOARD_AUDIT_ACTION
from bulwark.store.tables import audit_events, machine_actions
from bulwark.store.uow import SqlUnitOfWorkFactory as UnitOfWorkFactory
from tests.conftest import TENANT, make_machine, seed
from tests.identity_support import app_token, bearer, register_app
from tests.support import child_env, free_port, server_process

pytestmark = pytest.mark.slow

MACHINES = 600
CONCURRENCY = 16
# The load is bounded: at most MACHINES requests, and the kill comes after this many answers.
KILL_AFTER_ACKNOWLEDGED = 120


def _start(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    out = open(log, "ab")  # the child keeps its own copy of the descriptor
    proc = subprocess.Popen(
        [sys.executable, "-m", "bulwark.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=child_env(env),
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    out.close()
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("server did not become healthy in time")
        time.sleep(0.1)


async def _load_until_killed(
    base: str, headers: dict[str, str], ids: list[str], proc: subprocess.Popen[bytes]
) -> dict[str, dict]:
    """Offboard ``ids`` from CONCURRENCY clients; SIGKILL the server mid-load; return what was acknowledged."""
    acknowledged: dict[str, dict] = {}
    queue: asyncio.Queue[str] = asyncio.Queue()
    for machine_id in ids:
        queue.put_nowait(machine_id)
    killed = asyncio.Event()

    async def client() -> None:
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as http:
            while not queue.empty():
                machine_id = queue.get_nowait()
                try:
                    response = await http.post(f"/api/machines/{machine_id}/offboard", json={"Comment": "before the crash"})
                except httpx.TransportError:
                    if killed.is_set():
                        return
                    raise
                assert response.status_code == 200, response.text
                acknowledged[machine_id] = response.json()
                if len(acknowledged) >= KILL_AFTER_ACKNOWLEDGED and not killed.is_set():
                    # No shutdown, no flush: the process is gone between one instruction and the next.
                    os.kill(proc.pid, signal.SIGKILL)
                    killed.set()

    await asyncio.gather(*(client() for _ in range(CONCURRENCY)))
    return acknowledged


def test_every_acknowledged_offboard_survives_sigkill(database_url: str, uow_factory: UnitOfWorkFactory, tmp_path: Path) -> None:
    machines = [make_machine(1000 + i) for i in range(MACHINES)]
    seed(uow_factory, machines)
    env = {"BULWARK_DATABASE_URL": database_url, "BULWARK_DATA_DIR": str(tmp_path), "BULWARK_DEFAULT_TENANT_ID": TENANT}
    env["BULWARK_RATE_LIMIT_ENABLED"] = "false"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    proc = _start(env, port, log)
    try:
        with httpx.Client(base_url=base) as http:
            headers = bearer(app_token(http, register_app(uow_factory, ["Machine.Offboard", "Machine.Read.All"])))
        acknowledged = asyncio.run(_load_until_killed(base, headers, [m.id for m in machines], proc))
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert len(acknowledged) >= KILL_AFTER_ACKNOWLEDGED
    # The load was cut short by the kill, not finished before it.
    assert len(acknowledged) < MACHINES

    with (
        server_process(env=env, port=port, log=tmp_path / "restarted.log") as base,
        httpx.Client(base_url=base, headers=headers) as http,
    ):
        for machine_id, action in acknowledged.items():
            again = http.get(f"/api/machineactions/{action['id']}")
            assert again.status_code == 200, (machine_id, again.text)
            assert again.json() == action
    with uow_factory(write=False) as uow:
        audited = {
            row.machine_action_id: row
            for row in uow.conn.execute(
                select(audit_events.c.machine_action_id, audit_events.c.machine_id, audit_events.c.comment).where(
                    audit_events.c.action == OFFBOARD_AUDIT_ACTION
                )
            )
        }
        stored = {row.id for row in uow.conn.execute(select(machine_actions.c.id))}
    for machine_id, action in acknowledged.items():
        event = audited.get(action["id"])
        assert event is not None, f"acknowledged action {action['id']} has no audit event"
        assert event.machine_id == machine_id and event.comment == "before the crash"
    # And nothing half-written: every stored action has its audit event, and the other way round.
    assert stored == set(audited)
