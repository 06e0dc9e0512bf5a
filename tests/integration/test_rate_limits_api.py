"""Rate limits as a client sees them: 429 with an honest Retry-After, headers, audit."""

from __future__ import annotations

import limits.storage.memory
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from bulwark.api.app import ConfigurationError, create_app
from bulwark.clock import FrozenClock
from bulwark.settings import Settings
from bulwark.store.tables import audit_events
from bulwark.store.uow import SqlUnitOfWorkFactory
from tests.conftest import make_machine, seed
from tests.identity_support import auth_headers

MACHINES = [make_machine(i) for i in range(1, 8)]


class _LimitsTime:
    """The module-level ``time`` that limits' memory storage reads, driven by the frozen clock."""

    def __init__(self, clock: FrozenClock) -> None:
        self.clock = clock

    def time(self) -> float:
        return self.clock.now().timestamp()


@pytest.fixture
def client(settings: Settings, uow_factory: SqlUnitOfWorkFactory, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(limits.storage.memory, "time", _LimitsTime(clock))
    # The memory storage's cleanup thread drops a call at exactly one window old, while the
    # window itself still counts it then; with a frozen clock that race decides the boundary
    # test, so cleanup (which changes no answer otherwise) is kept out of it.
    monkeypatch.setattr(limits.storage.memory.MemoryStorage, "_MemoryStorage__schedule_expiry", lambda self: None)
    seed(uow_factory, MACHINES)
    limited = settings.model_copy(update={"rate_limit": "3/minute;5/hour"})
    with TestClient(create_app(limited, clock=clock)) as test_client:
        test_client.headers.update(auth_headers(test_client, uow_factory))
        yield test_client


def read(client: TestClient, index: int):
    return client.get(f"/api/machines/{MACHINES[index].id}")


def test_minute_window_refuses_with_retry_after_that_is_honest(client: TestClient, clock: FrozenClock) -> None:
    for i in range(3):
        assert read(client, i).status_code == 200
        clock.advance(1)
    refused = read(client, 3)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "TooManyRequests"
    assert refused.json()["error"]["target"] == refused.headers["request-id"]
    retry_after = int(refused.headers["Retry-After"])
    assert 0 < retry_after <= 60
    # Half a second short of Retry-After is still inside the window (the exact boundary instant is
    # left out: the limits library's memory storage may expire the oldest call there or not).
    clock.advance(retry_after - 1.5)
    assert read(client, 3).status_code == 429, "calling early must still be refused"
    clock.advance(1.5)
    assert read(client, 3).status_code == 200, "waiting Retry-After seconds must get through"


def test_hour_window_applies_after_the_minute_window_resets(client: TestClient, clock: FrozenClock) -> None:
    for i in range(3):
        assert read(client, i).status_code == 200
    clock.advance(61)
    assert [read(client, i).status_code for i in range(3)] == [200, 200, 429]
    refused = read(client, 0)
    assert int(refused.headers["Retry-After"]) > 60  # the hour window is the one refusing now


def test_headers_on_allowed_calls_and_operations_counted_separately(client: TestClient) -> None:
    first = read(client, 0)
    assert first.headers["RateLimit-Policy"] == '"per-minute";q=3;w=60, "per-hour";q=5;w=3600'
    assert first.headers["RateLimit"].startswith('"per-minute";r=2')
    for i in range(2):
        read(client, i)
    assert read(client, 0).status_code == 429
    # Offboarding is another operation with its own budget.
    assert client.post(f"/api/machines/{MACHINES[0].id}/offboard", json={"Comment": "x"}).status_code == 200


def test_refused_offboards_are_audited(client: TestClient, uow_factory: SqlUnitOfWorkFactory) -> None:
    statuses = [client.post(f"/api/machines/{m.id}/offboard", json={"Comment": "bulk"}).status_code for m in MACHINES[:4]]
    assert statuses == [200, 200, 200, 429]
    with uow_factory(write=False) as uow:
        rows = uow.conn.execute(select(audit_events).order_by(audit_events.c.id)).mappings().all()
    assert [(r["machine_id"], r["outcome_status"], r["outcome_code"]) for r in rows] == [
        (MACHINES[0].id, 200, None),
        (MACHINES[1].id, 200, None),
        (MACHINES[2].id, 200, None),
        (MACHINES[3].id, 429, "TooManyRequests"),
    ]


def test_limits_off_for_load_tests(settings: Settings, uow_factory: SqlUnitOfWorkFactory) -> None:
    seed(uow_factory, MACHINES[:1])
    off = settings.model_copy(update={"rate_limit_enabled": False, "rate_limit": "1/minute"})
    with TestClient(create_app(off)) as client:
        client.headers.update(auth_headers(client, uow_factory))
        assert all(read(client, 0).status_code == 200 for _ in range(5))
        assert "RateLimit" not in read(client, 0).headers


def test_several_workers_without_redis_are_refused(settings: Settings) -> None:
    with pytest.raises(ConfigurationError, match="BULWARK_REDIS_URL"):
        create_app(settings.model_copy(update={"workers": 2}))
