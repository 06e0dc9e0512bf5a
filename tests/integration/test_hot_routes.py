"""The busiest operations, served without the router, answer exactly as the router would.

Every request below goes to two servers on identical data: one as built, one whose hot routes are
turned off so that the router serves everything. Status, body, headers, audit events, metrics and
access-log lines must be the same (ids, request ids and durations aside).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from bulwark.api.app import create_app
from bulwark.api.hotpath import HotRoutes
from bulwark.clock import FrozenClock
from bulwark.settings import Settings
from bulwark.store.db import create_db_engine
from bulwark.store.tables import audit_events, machine_actions
from bulwark.store.uow import SqlUnitOfWorkFactory
from tests.conftest import TENANT, make_machine, seed
from tests.identity_support import ALL_APP_ROLES, app_token, bearer, register_app, register_user, user_token

GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)
RESET = re.compile(r"\bt=\d+")
WAIT = re.compile(r"(?<=Try again in )\d+")
LOOPBACK = ("127.0.0.1", 50000)
WIN11, MAC, FINANCE = make_machine(1), make_machine(2, os_platform="macOS", agent_version="101.1"), make_machine(3)
METRICS_TOKEN = "metrics-token-0123456789"


class Server:
    """One app on its own copy of the data, with a token for each kind of caller."""

    def __init__(self, client: TestClient, uow_factory: SqlUnitOfWorkFactory, headers: dict[str, dict[str, str]]) -> None:
        self.client = client
        self.uow_factory = uow_factory
        self.headers = headers


@pytest.fixture
def servers(sqlite_template: Path, tmp_path: Path, clock: FrozenClock) -> Iterator[tuple[Server, Server]]:
    built: list[Server] = []
    engines = []
    for name in ("hot", "router"):
        path = tmp_path / f"{name}.db"
        path.write_bytes(sqlite_template.read_bytes())
        url = f"sqlite:///{path}"
        engine = create_db_engine(url, pool_size=2)
        engines.append(engine)
        factory = SqlUnitOfWorkFactory(engine)
        open_group, finance = seed(factory, [], groups=["Workstations", "Finance"])
        seed(factory, [WIN11, MAC, make_machine(3, rbac_group_id=finance), make_machine(4, rbac_group_id=open_group)])
        register_user(factory, "finance.admin@contoso.com", capabilities=["ViewData"], device_groups=[finance])
        settings = Settings(
            data_dir=tmp_path / name,
            database_url=url,
            default_tenant_id=TENANT,
            allowed_hosts=["testserver"],
            rate_limit_overrides={"getMachineAction": "3/minute"},
            metrics_token=METRICS_TOKEN,
            sweep_interval_seconds=3600,
        )
        app = create_app(settings, clock=clock)
        if name == "router":
            # The same app without its hot routes: the router serves every request.
            app.user_middleware = [m for m in app.user_middleware if m.cls is not HotRoutes]
        client = TestClient(app, client=LOOPBACK, raise_server_exceptions=False)
        client.__enter__()
        app_id = register_app(factory, ALL_APP_ROLES, name="SOAR playbook")
        reader_id = register_app(factory, ["Machine.Read.All"], name="Reader")
        delegated_id = register_app(factory, (), delegated=["Machine.Read", "Machine.Offboard"], name="Delegated")
        headers = {
            "app": bearer(app_token(client, app_id)),
            "reader": bearer(app_token(client, reader_id)),
            "user": bearer(user_token(client, delegated_id, "finance.admin@contoso.com")),
            "none": {},
            "bad": {"Authorization": "Bearer not-a-token"},
        }
        built.append(Server(client, factory, headers))
    try:
        yield built[0], built[1]
    finally:
        for server in built:
            server.client.__exit__(None, None, None)
        for engine in engines:
            engine.dispose()


def _normal(text: str) -> str:
    # Ids differ between the servers, and so may the seconds until a window resets (the limiter
    # counts in real time, the servers' clock is frozen), by the second that passed between them.
    text = GUID.sub("<guid>", text)
    return WAIT.sub("<seconds>", RESET.sub("t=<seconds>", text))


def _answer(response: Any) -> dict[str, Any]:
    headers = {k: _normal(v) for k, v in response.headers.items() if k not in ("date",)}
    if "retry-after" in headers:
        # Said in the header and in the message alike.
        assert f"Try again in {headers['retry-after']} seconds" in response.text
        headers["retry-after"] = "<seconds>"
    return {"status": response.status_code, "body": _normal(response.text), "headers": headers}


def _audit(server: Server) -> list[tuple[Any, ...]]:
    with server.uow_factory(write=False) as uow:
        rows = uow.conn.execute(select(audit_events).order_by(audit_events.c.id)).mappings().all()
    return [
        (
            r["action"],
            r["actor_kind"],
            r["actor_name"],
            r["outcome_status"],
            r["outcome_code"],
            r["machine_id"],
            r["comment"],
            r["client_ip"],
        )
        for r in rows
    ]


def _metrics(server: Server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = server.client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert response.status_code == 200
    found = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name.endswith(("_sum", "_bucket", "_created")) or "duration" in sample.name:
                continue
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def _requests(ids: dict[str, str]) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(caller, method, path, options) of every request both servers answer."""
    win11, mac, finance = f"{1:040x}", f"{2:040x}", f"{3:040x}"
    json_headers = {"Content-Type": "application/json"}
    return [
        ("app", "GET", "/api/machines", {}),
        ("app", "GET", "/api/Machines/?$filter=healthStatus eq 'Active'&$top=2&$count=true", {}),
        ("app", "GET", "/api/v1.0/machines?$select=id,computerDnsName&$top=1", {}),
        ("app", "GET", "/api/machines?$filter=nonsense eq 1", {}),
        ("app", "GET", "/api/machines?$top=-1", {}),
        ("user", "GET", "/api/machines", {}),
        ("none", "GET", "/api/machines", {}),
        ("bad", "GET", "/api/machines", {}),
        ("app", "GET", f"/api/machines/{win11}", {}),
        ("app", "GET", "/api/machines/HOST-1.contoso.com", {}),
        ("user", "GET", f"/api/machines/{win11}", {}),
        ("user", "GET", f"/api/machines/{finance}", {}),
        ("app", "POST", f"/api/machines/{win11}/offboard", {"json": {"Comment": "retire", "ExternalId": "ticket-7"}}),
        ("app", "POST", f"/api/machines/{win11}/offboard", {"json": {"Comment": "again"}}),
        ("app", "POST", f"/api/MACHINES/{mac}/Offboard/", {"json": {"Comment": "mac"}}),
        ("reader", "POST", f"/api/machines/{finance}/offboard", {"json": {"Comment": "no permission"}}),
        ("user", "POST", f"/api/machines/{finance}/offboard", {"json": {"Comment": "viewer only"}}),
        ("none", "POST", f"/api/machines/{finance}/offboard", {"json": {"Comment": "anonymous"}}),
        ("app", "POST", f"/api/machines/{finance}/offboard", {"content": b"{not json", "headers": json_headers}),
        (
            "app",
            "POST",
            f"/api/machines/{finance}/offboard",
            {"content": b"Comment=x", "headers": {"Content-Type": "text/plain"}},
        ),
        ("app", "POST", f"/api/machines/{finance}/offboard", {"json": {"Comment": ""}}),
        ("app", "POST", f"/api/machines/{finance}/offboard", {"json": {"Comment": "x" * 70_000}}),
        ("app", "POST", f"/api/machines/{finance}/offboard", {"content": iter([b'{"Comment": "', b"y" * 70_000, b'"}'])}),
        ("app", "POST", "/api/machines/not-an-id/offboard", {"json": {"Comment": "bad id"}}),
        ("app", "POST", f"/api/v1.0/machines/{'f' * 40}/offboard", {"json": {"Comment": "nobody"}}),
        ("app", "GET", f"/api/machines/{win11}/offboard", {}),
        ("app", "HEAD", f"/api/machineactions/{ids['win11']}", {}),
        ("app", "GET", f"/api/machineactions/{ids['win11']}", {}),
        ("app", "GET", f"/api/MachineActions/{ids['win11'].upper()}/", {}),
        ("app", "GET", "/api/machineactions/not-a-guid", {}),
        ("user", "GET", f"/api/machineactions/{ids['win11']}", {}),
        ("none", "GET", f"/api/machineactions/{ids['win11']}", {}),
        # Past the per-operation budget of 3 a minute: 429 with Retry-After.
        ("app", "GET", f"/api/v1.0/machineactions/{ids['win11']}", {}),
        ("app", "GET", f"/api/machineactions/{ids['win11']}", {}),
        ("app", "GET", "/api/machines//offboard", {}),
    ]


def _send(server: Server, caller: str, method: str, path: str, options: dict[str, Any]) -> Any:
    options = dict(options)
    headers = {**server.headers[caller], **options.pop("headers", {})}
    return server.client.request(method, path, headers=headers, **options)


def test_hot_routes_answer_audit_count_and_log_exactly_as_the_router(
    servers: tuple[Server, Server], caplog: pytest.LogCaptureFixture
) -> None:
    hot, router = servers
    answers: dict[str, list[dict[str, Any]]] = {"hot": [], "router": []}
    logs: dict[str, list[str]] = {}
    win11 = f"{1:040x}"
    for name, server in (("hot", hot), ("router", router)):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="bulwark.access"):
            first = _send(server, "app", "POST", f"/api/machines/{win11}/offboard", {"json": {"Comment": "first"}})
            assert first.status_code == 201 or first.status_code == 200, first.text
            ids = {"win11": first.json()["id"]}
            for caller, method, path, options in _requests(ids):
                answers[name].append(
                    {"request": (caller, method, _normal(path)), **_answer(_send(server, caller, method, path, options))}
                )
        logs[name] = [
            _normal(re.sub(r" \d+\.\d+ms ", " <ms> ", record.getMessage()))
            for record in caplog.records
            if record.name == "bulwark.access"
        ]
    for hot_answer, router_answer in zip(answers["hot"], answers["router"], strict=True):
        assert hot_answer == router_answer
    statuses = {a["status"] for a in answers["hot"]}
    # The requests cover successes and every kind of refusal.
    assert {200, 400, 401, 403, 404, 405, 413, 415, 429} <= statuses
    assert logs["hot"] == logs["router"] and len(logs["hot"]) == len(answers["hot"]) + 1
    assert _audit(hot) == _audit(router)
    assert len(_audit(hot)) > 5
    assert _metrics(hot) == _metrics(router)
    # One action: the repeat and the macOS machine were refused.
    with hot.uow_factory(write=False) as uow:
        assert len(uow.conn.execute(select(machine_actions)).all()) == 1
