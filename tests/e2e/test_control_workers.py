"""The control API with two worker processes: what one worker is told, the other applies."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bulwark.client import ActionStatus
from bulwark.testing import BulwarkServer

pytestmark = [pytest.mark.slow, pytest.mark.redis]


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[BulwarkServer]:
    # Several workers need Redis (shared rate-limit budgets, wake-ups); the control state itself
    # lives in the database.
    env = {"BULWARK_REDIS_URL": redis_url, "BULWARK_RATE_LIMIT_KEY_PREFIX": f"test-control-{uuid.uuid4()}"}
    server = BulwarkServer.start(Path(tmp_path_factory.mktemp("two-workers")), workers=2, env=env)
    try:
        yield server
    finally:
        server.stop()


def fresh_get(server: BulwarkServer, path: str) -> httpx.Response:
    # A new connection per call, so that calls spread over both workers.
    return httpx.get(f"{server.url}{path}", headers={"Authorization": f"Bearer {server.token()}"}, timeout=30)


def test_faults_clock_and_behaviour_hold_across_workers(two_workers: BulwarkServer) -> None:
    server = two_workers
    server.control.reset()
    server.control.add_fault("listMachines", status=503, count=3)
    statuses = [fresh_get(server, "/api/machines").status_code for _ in range(10)]
    assert sorted(statuses) == [200] * 7 + [503] * 3

    server.control.advance_clock(86400)
    offsets = {fresh_get(server, "/_bulwark/clock").json()["offsetSeconds"] for _ in range(8)}
    assert offsets == {86400}

    with server.client() as client:
        [machine] = [m.id for m in client.list_machines(filter="healthStatus eq 'Active' and osPlatform eq 'Windows11'", top=1)]
        server.control.set_behavior(machine, "Failed", error_h_result=-2147024891)
        action = client.wait(client.offboard(machine, "Two workers"), timeout=30, poll_interval=0.1)
        assert (action.status, action.error_h_result) == (ActionStatus.FAILED, -2147024891)
        # Timestamps come from the moved clock, whichever worker wrote them.
        assert (
            action.creation_date_time_utc - action.creation_date_time_utc.now(action.creation_date_time_utc.tzinfo)
        ).total_seconds() > 86000

    server.control.reset()
    assert {fresh_get(server, "/_bulwark/clock").json()["offsetSeconds"] for _ in range(6)} == {0}
    assert server.control.requests() == []  # control calls are not API calls: nothing recorded
