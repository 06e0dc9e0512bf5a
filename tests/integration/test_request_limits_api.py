"""One request-size limit on every route, before parsing; capped and range-checked sensor payloads."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from bulwark.api.app import create_app
from bulwark.clock import FrozenClock
from bulwark.settings import Settings
from bulwark.store.tables import machine_actions, machines
from bulwark.store.uow import SqlUnitOfWorkFactory as UnitOfWorkFactory
from tests.conftest import TENANT, make_machine, seed
from tests.identity_support import ALL_APP_ROLES, app_token, bearer, register_app, token_endpoint
from tests.support import server_process

MACHINE = make_machine(1)
LIMIT = 4096
# One route of each kind: public API, OAuth token endpoint, sensor gateway, and no route at all.
ROUTES = [
    f"/api/machines/{MACHINE.id}/offboard",
    f"/api/machineactions/{'0' * 8}-0000-0000-0000-{'0' * 12}/cancel",
    f"/{TENANT}/oauth2/v2.0/token",
    "/sensor/v1/enrol",
    "/sensor/v1/checkin",
    f"/sensor/v1/actions/{'0' * 8}-0000-0000-0000-{'0' * 12}/outcome",
    "/no/such/route",
]


@pytest.fixture
def client(settings: Settings, uow_factory: UnitOfWorkFactory, clock: FrozenClock) -> Iterator[TestClient]:
    seed(uow_factory, [MACHINE])
    with TestClient(create_app(settings.model_copy(update={"max_body_bytes": LIMIT}), clock=clock)) as test_client:
        yield test_client


def assert_too_large(answer) -> None:
    assert answer.status_code == 413, answer.text
    assert answer.json() == {
        "error": {
            "code": "PayloadTooLarge",
            "message": f"The request body is larger than {LIMIT} bytes.",
            "target": answer.headers["request-id"],
        }
    }


@pytest.mark.parametrize("path", ROUTES)
def test_a_declared_length_over_the_limit_is_refused_on_every_route(client: TestClient, path: str) -> None:
    body = b'{"Comment": "' + b"x" * LIMIT + b'"}'
    assert_too_large(client.post(path, content=body, headers={"Content-Type": "application/json"}))


@pytest.mark.parametrize("path", ROUTES[:-1])
def test_a_body_without_a_length_is_counted_as_it_arrives(
    client: TestClient, uow_factory: UnitOfWorkFactory, onboarding_key: str, path: str
) -> None:
    # Authenticated, so that each route goes on to read the body.
    if path.startswith("/api/"):
        headers = bearer(app_token(client, register_app(uow_factory, ALL_APP_ROLES)))
    elif path.startswith("/sensor/v1/") and path != "/sensor/v1/enrol":
        headers = bearer(_enrol(client, onboarding_key).json()["credential"])
    else:
        headers = {}

    def chunks() -> Iterator[bytes]:
        yield b'{"Comment": "'
        for _ in range(8):
            yield b"x" * 1024
        yield b'"}'

    answer = client.post(path, content=chunks(), headers={**headers, "Content-Type": "application/json"})
    assert "content-length" not in {k.lower() for k in answer.request.headers}
    assert_too_large(answer)


def test_a_body_at_the_limit_is_served(client: TestClient, uow_factory: UnitOfWorkFactory) -> None:
    headers = bearer(app_token(client, register_app(uow_factory, ALL_APP_ROLES)))
    body = b'{"Comment": "' + b"x" * 3000 + b'", "Title": "' + b"t" * 200 + b'"}'
    body += b" " * (LIMIT - len(body))
    assert len(body) == LIMIT
    answer = client.post(
        f"/api/machines/{MACHINE.id}/offboard", content=body, headers={**headers, "Content-Type": "application/json"}
    )
    assert answer.status_code == 200, answer.text


def test_an_oversized_offboard_changes_nothing(client: TestClient, uow_factory: UnitOfWorkFactory) -> None:
    headers = bearer(app_token(client, register_app(uow_factory, ALL_APP_ROLES)))
    big = b'{"Comment": "' + b"x" * (LIMIT * 2) + b'"}'
    assert_too_large(client.post(f"/api/machines/{MACHINE.id}/offboard", content=big, headers=headers))
    with uow_factory(write=False) as uow:
        assert uow.conn.execute(select(machine_actions.c.id)).all() == []


def test_token_endpoint_refuses_an_oversized_form_with_413(client: TestClient) -> None:
    form = {"grant_type": "client_credentials", "client_id": "x" * LIMIT}
    assert_too_large(client.post(token_endpoint(), data=form))


def _enrol(client: TestClient, key: str, **properties: object):
    body = {
        "tenantId": TENANT,
        "onboardingKey": key,
        "deviceIdentity": "device-1",
        "properties": {"computerDnsName": "d1", "osPlatform": "Windows11", **properties},
    }
    return client.post("/sensor/v1/enrol", json=body)


@pytest.fixture
def onboarding_key(client: TestClient, uow_factory: UnitOfWorkFactory) -> str:
    headers = bearer(app_token(client, register_app(uow_factory, ALL_APP_ROLES)))
    return client.get("/api/onboarding/package", headers=headers).json()["onboardingKey"]


@pytest.mark.parametrize(
    ("properties", "field"),
    [
        ({"osBuild": 2**31}, "osBuild"),
        ({"osBuild": 10**30}, "osBuild"),
        ({"osBuild": -1}, "osBuild"),
        ({"ipAddresses": ["10.0.0.1"] * 65}, "ipAddresses"),
        ({"ipAddresses": ["1" * 65]}, "ipAddresses"),
        ({"computerDnsName": "a" * 256}, "computerDnsName"),
        ({"computerDnsName": "nul\x00name"}, "computerDnsName"),
        ({"osProcessor": "x" * 33}, "osProcessor"),
    ],
)
def test_sensor_properties_out_of_range_are_400_and_change_nothing(
    client: TestClient, uow_factory: UnitOfWorkFactory, onboarding_key: str, properties: dict, field: str
) -> None:
    answer = _enrol(client, onboarding_key, **properties)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == "InvalidInput"
    assert field in answer.json()["error"]["message"]
    with uow_factory(write=False) as uow:
        assert [r.id for r in uow.conn.execute(select(machines.c.id))] == [MACHINE.id]


def test_outcome_error_code_must_be_an_int32(client: TestClient, onboarding_key: str) -> None:
    enrolled = _enrol(client, onboarding_key, osBuild=22631)
    assert enrolled.status_code == 200, enrolled.text
    sensor = bearer(enrolled.json()["credential"])
    action = f"{'0' * 8}-0000-0000-0000-{'0' * 12}"
    for value in (2**31, -(2**31) - 1, 10**40):
        answer = client.post(
            f"/sensor/v1/actions/{action}/outcome", json={"status": "Failed", "errorHResult": value}, headers=sensor
        )
        assert answer.status_code == 400, answer.text
        assert "errorHResult" in answer.json()["error"]["message"]
    # In range it reaches the use case (no such action here).
    in_range = client.post(
        f"/sensor/v1/actions/{action}/outcome", json={"status": "Failed", "errorHResult": -(2**31)}, headers=sensor
    )
    assert in_range.status_code == 404
    for wait in ("nan", "inf", "1e9"):
        assert client.get(f"/sensor/v1/actions/next?wait={wait}", headers=sensor).status_code == 400


@pytest.mark.slow
def test_a_real_server_answers_a_huge_declared_body_before_it_arrives(database_url: str, tmp_path: Path) -> None:
    env = {"BULWARK_DATABASE_URL": database_url, "BULWARK_DATA_DIR": str(tmp_path), "BULWARK_DEFAULT_TENANT_ID": TENANT}
    with server_process(env=env) as base:
        host, port = base.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            # 200 MB announced, none of it sent: the answer must not wait for the body.
            sock.sendall(
                b"POST /sensor/v1/enrol HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Content-Length: 200000000\r\n\r\n"
            )
            received = b""
            while chunk := sock.recv(65536):
                received += chunk
            answer = received.decode()
        assert answer.startswith("HTTP/1.1 413"), answer
        assert '"code":"PayloadTooLarge"' in answer
