"""The control plane through the ASGI app and the store, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading

import pytest
from fastapi.testclient import TestClient

from bulwark.api.app import create_app
from bulwark.clock import FrozenClock
from bulwark.domain.control import CONTROL_ROLE
from bulwark.service.ports import UnitOfWorkFactory
from bulwark.settings import Settings
from tests.conftest import make_machine, seed
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
