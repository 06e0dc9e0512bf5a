"""Crafted input answers 400 in the error envelope, on SQLite and PostgreSQL, never 500.

Surrogates and NUL bytes in literals, ids and comments, huge LIKE literals and filters of
thousands of terms are refused before they reach the database. What does fail unexpectedly is
audited, and logs never print SQL parameters.
"""

from __future__ import annotations

import logging
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text

from bulwark.api.app import create_app
from bulwark.clock import FrozenClock
from bulwark.settings import Settings
from bulwark.store.db import create_db_engine
from bulwark.store.tables import audit_events, machine_actions
from bulwark.store.uow import SqlUnitOfWorkFactory as UnitOfWorkFactory
from tests.conftest import make_machine, seed
from tests.identity_support import ALL_APP_ROLES, app_token, bearer, register_app

MACHINE = make_machine(1)
MANY_ORS = " or ".join(f"computerDnsName eq 'host-{i}'" for i in range(1000))
FILTERS = {
    "literal over the cap": f"startswith(computerDnsName,'{'a' * 50_000}')",
    "contains over the cap": f"contains(computerDnsName,'{'%' * 5_000}')",
    "a thousand ors": MANY_ORS,
    "nul in a literal": "computerDnsName eq 'a\x00b'",
    "nul in a function literal": "startswith(computerDnsName,'\x00')",
    "deep nesting": "not (" * 100 + "osPlatform eq 'Windows11'" + ")" * 100,
    "a long filter": "osPlatform eq 'Windows11' and " * 400 + "osPlatform eq 'Windows11'",
}


@pytest.fixture
def client(settings: Settings, uow_factory: UnitOfWorkFactory, clock: FrozenClock):
    seed(uow_factory, [MACHINE])
    with TestClient(create_app(settings, clock=clock), raise_server_exceptions=False) as test_client:
        test_client.headers.update(bearer(app_token(test_client, register_app(uow_factory, ALL_APP_ROLES))))
        yield test_client


def assert_400(answer) -> None:
    assert answer.status_code == 400, answer.text[:500]
    error = answer.json()["error"]
    assert error["target"] == answer.headers["request-id"]
    assert error["code"] in {"ODataError", "InvalidInput", "InvalidRequestBody", "BadRequest"}


@pytest.mark.parametrize("name", list(FILTERS))
@pytest.mark.parametrize("path", ["/api/machines", "/api/machineactions"])
def test_crafted_filters_are_400(client: TestClient, name: str, path: str) -> None:
    text = FILTERS[name]
    if path == "/api/machineactions":
        # The same attacks on a property actions may be filtered on.
        text = text.replace("computerDnsName", "requestor").replace("osPlatform", "requestor")
    query = "$filter=" + quote(text, safe="")
    assert_400(client.get(f"{path}?{query}"))


def test_a_lone_surrogate_in_the_query_string_is_never_a_500(client: TestClient) -> None:
    # Bytes that are not UTF-8 decode to U+FFFD, an ordinary character: no match, no error.
    query = "$filter=" + quote("startswith(computerDnsName,'") + "%ED%A0%80" + quote("')")
    answer = client.get(f"/api/machines?{query}")
    assert answer.status_code == 200 and answer.json()["value"] == []


def test_a_hundred_terms_are_still_served(client: TestClient) -> None:
    many = " or ".join(f"computerDnsName eq 'host-{i}.contoso.com'" for i in range(100))
    answer = client.get("/api/machines?$filter=" + quote(many, safe=""))
    assert answer.status_code == 200, answer.text[:300]
    assert [m["id"] for m in answer.json()["value"]] == [MACHINE.id]


@pytest.mark.parametrize(
    "raw_id",
    ["%00", "host%00name", "a" * 39 + "%00", "%ED%A0%80", "x" * 300],
)
def test_crafted_ids_are_400_or_404(client: TestClient, raw_id: str) -> None:
    for path in (f"/api/machines/{raw_id}", f"/api/machines/{raw_id}/machineactions", f"/api/machineactions/{raw_id}"):
        answer = client.get(path)
        assert answer.status_code in (400, 404), (path, answer.text[:300])
        assert "error" in answer.json()
    assert client.post(f"/api/machines/{raw_id}/offboard", json={"Comment": "x"}).status_code in (400, 404)
    assert client.post(f"/api/machineactions/{raw_id}/cancel", json={"Comment": "x"}).status_code in (400, 404)


@pytest.mark.parametrize("body", [b'{"Comment": "nul \\u0000 inside"}', b'{"Comment": "\\ud800 lone surrogate"}'])
def test_crafted_comments_are_400_and_change_nothing(client: TestClient, uow_factory: UnitOfWorkFactory, body: bytes) -> None:
    assert_400(client.post(f"/api/machines/{MACHINE.id}/offboard", content=body, headers={"Content-Type": "application/json"}))
    created = client.post(f"/api/machines/{MACHINE.id}/offboard", json={"Comment": "fine"}).json()
    assert_400(
        client.post(f"/api/machineactions/{created['id']}/cancel", content=body, headers={"Content-Type": "application/json"})
    )
    with uow_factory(write=False) as uow:
        assert [r.status for r in uow.conn.execute(select(machine_actions.c.status))] == ["Pending"]


def test_an_unexpected_failure_is_audited(
    client: TestClient, uow_factory: UnitOfWorkFactory, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bulwark.service import offboarding

    def broken(*args, **kwargs):
        raise RuntimeError("the database went away")

    monkeypatch.setattr("bulwark.api.machine_actions.request_offboard", broken)
    with caplog.at_level(logging.ERROR):
        answer = client.post(f"/api/machines/{MACHINE.id}/offboard", json={"Comment": "why"})
    assert "the database went away" in caplog.text
    assert answer.status_code == 500
    assert answer.json()["error"]["code"] == "InternalServerError"
    with uow_factory(write=False) as uow:
        rows = uow.conn.execute(select(audit_events)).mappings().all()
    assert [(r["action"], r["outcome_status"], r["machine_id"], r["request_id"]) for r in rows] == [
        (offboarding.OFFBOARD_AUDIT_ACTION, 500, MACHINE.id, answer.headers["request-id"])
    ]


def test_database_errors_never_carry_their_parameters(database_url: str) -> None:
    engine = create_db_engine(database_url, pool_size=1)
    try:
        with pytest.raises(Exception) as failure, engine.connect() as conn:
            conn.execute(text("SELECT * FROM no_such_table WHERE x = :secret"), {"secret": "hunter2-password"})
        assert "hunter2-password" not in str(failure.value)
    finally:
        engine.dispose()
