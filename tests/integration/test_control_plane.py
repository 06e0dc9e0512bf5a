"""The control plane through the ASGI app and the store, on SQLite and PostgreSQL."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from bulwark.api.app import create_app
from bulwark.cli import app as cli
from bulwark.clock import FrozenClock
from bulwark.domain.control import CONTROL_ROLE
from bulwark.service.ports import UnitOfWorkFactory
from bulwark.settings import Settings
from tests.conftest import TENANT, make_machine, seed
from tests.identity_support import ALL_APP_ROLES, app_token, register_app


def _client(settings: Settings, clock: FrozenClock, **overrides: object) -> TestClient:
    return TestClient(create_app(settings.model_copy(update=overrides), clock=clock), raise_server_exceptions=False)


def test_without_the_setting_there_is_no_control_api(
    settings: Settings, uow_factory: UnitOfWorkFactory, clock: FrozenClock
) -> None:
    client_id = register_app(uow_factory, [*ALL_APP_ROLES, CONTROL_ROLE])
    with _client(settings, clock) as client:
        token = app_token(client, client_id)
        for method, path in [("GET", "/_bulwark/clock"), ("POST", "/_bulwark/reset"), ("GET", "/_bulwark/requests")]:
            answer = client.request(method, path, headers={"Authorization": f"Bearer {token}"})
            assert answer.status_code == 404
            assert answer.json()["error"]["code"] == "NotFound"
        assert not [path for path in client.get("/openapi.json").json()["paths"] if path.startswith("/_bulwark")]


def test_with_authentication_off_the_control_api_still_needs_a_token(
    settings: Settings, uow_factory: UnitOfWorkFactory, clock: FrozenClock
) -> None:
    client_id = register_app(uow_factory, [*ALL_APP_ROLES, CONTROL_ROLE])
    with _client(settings, clock, control_api=True, auth_enabled=False) as client:
        assert client.get("/api/machines").status_code == 200  # everyone is let in here ...
        assert client.post("/_bulwark/reset").status_code == 401  # ... but not here
        token = app_token(client, client_id)
        assert client.get("/_bulwark/clock", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_the_control_role_can_be_granted_like_any_application_role(uow_factory: UnitOfWorkFactory, clock: FrozenClock) -> None:
    from bulwark.service.identity import IdentityError, create_application, create_tenant

    tenant = create_tenant(uow_factory(), clock, "Lab")
    created = create_application(uow_factory(), clock, tenant, "Test harness", roles=[CONTROL_ROLE])
    with uow_factory(write=False) as uow:
        application = uow.identity.get_application(created.id)
    assert application is not None and application["roles"] == [CONTROL_ROLE]
    with pytest.raises(IdentityError):
        create_application(uow_factory(), clock, tenant, "Typo", roles=["Bulwark.Contrl"])


def test_the_request_log_keeps_only_the_newest(uow_factory: UnitOfWorkFactory, clock: FrozenClock) -> None:
    from bulwark.service.control import list_requests, record_request

    for index in range(25):
        record_request(uow_factory(), clock, keep=10, method="GET", path=f"/api/{index}", operation="op", status=200)
    rows = list_requests(uow_factory(write=False), None, 100)
    assert [row["path"] for row in rows] == [f"/api/{index}" for index in range(24, 14, -1)]


def test_a_counted_fault_faults_exactly_that_many_of_racing_calls(
    settings: Settings, uow_factory: UnitOfWorkFactory, clock: FrozenClock
) -> None:
    seed(uow_factory, [make_machine(1)])
    client_id = register_app(uow_factory, [*ALL_APP_ROLES, CONTROL_ROLE])
    with _client(settings, clock, control_api=True) as client:
        headers = {"Authorization": f"Bearer {app_token(client, client_id)}"}
        added = client.post("/_bulwark/faults", json={"operation": "listMachines", "status": 503, "count": 5}, headers=headers)
        assert added.status_code == 201, added.text
        statuses: list[int] = []

        def call() -> None:
            statuses.append(client.get("/api/machines", headers=headers).status_code)

        threads = [threading.Thread(target=call) for _ in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(statuses) == [200] * 7 + [503] * 5
        assert client.get("/_bulwark/faults", headers=headers).json() == {"value": []}


def test_apps_create_with_the_control_role_reaches_the_control_api(
    settings: Settings, uow_factory: UnitOfWorkFactory, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("BULWARK_DATABASE_URL", settings.resolved_database_url())
    monkeypatch.setenv("BULWARK_DATA_DIR", str(tmp_path / "cli"))
    monkeypatch.setenv("BULWARK_DEFAULT_TENANT_ID", TENANT)
    seed(uow_factory, [])
    created = CliRunner().invoke(cli, ["apps", "create", "Test harness", "--role", "Bulwark.Control"])
    assert created.exit_code == 0, created.output
    client_id = re.search(r"client_id:\s+(\S+)", created.output).group(1)  # type: ignore[union-attr]
    secret = re.search(r"client_secret:\s+(\S+)", created.output).group(1)  # type: ignore[union-attr]
    plain = CliRunner().invoke(cli, ["apps", "create", "Playbook", "--role", "Machine.Offboard"])
    plain_id = re.search(r"client_id:\s+(\S+)", plain.output).group(1)  # type: ignore[union-attr]
    plain_secret = re.search(r"client_secret:\s+(\S+)", plain.output).group(1)  # type: ignore[union-attr]
    with _client(settings, clock, control_api=True) as client:
        harness = app_token(client, client_id, secret=secret)
        playbook = app_token(client, plain_id, secret=plain_secret)
        assert client.get("/_bulwark/clock", headers={"Authorization": f"Bearer {harness}"}).status_code == 200
        refused = client.get("/_bulwark/clock", headers={"Authorization": f"Bearer {playbook}"})
        assert refused.status_code == 403
        assert "Bulwark.Control" in refused.json()["error"]["message"]
