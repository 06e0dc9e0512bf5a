"""The offboard endpoint and action reads through the ASGI app, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import re

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text

from bulwark.api.app import create_app
from bulwark.clock import FrozenClock
from bulwark.settings import Settings
from bulwark.store.tables import audit_events, machine_actions
from bulwark.store.uow import SqlUnitOfWorkFactory
from tests.conftest import make_machine, seed
from tests.identity_support import auth_headers

WIN11 = make_machine(1)
MAC = make_machine(2, os_platform="macOS", os_build=None, agent_version="101.1")
LINUX = make_machine(3, os_platform="Linux", os_build=None)
OLD_WIN10 = make_machine(4, os_platform="Windows10", version="1607", os_build=14393)
SERVER2016_LEGACY = make_machine(5, os_platform="WindowsServer2016", os_build=14393, agent_version="10.3720.1")
SERVER2016_UNIFIED = make_machine(6, os_platform="WindowsServer2016", os_build=14393, agent_version="10.8760.1")
WIN10 = make_machine(7, os_platform="Windows10", version="1703", os_build=15063)

ACTION_FIELDS = [
    "@odata.context",
    "id",
    "type",
    "title",
    "requestor",
    "requestorComment",
    "status",
    "machineId",
    "computerDnsName",
    "creationDateTimeUtc",
    "lastUpdateDateTimeUtc",
    "cancellationRequestor",
    "cancellationComment",
    "cancellationDateTimeUtc",
    "errorHResult",
    "scope",
    "externalId",
    "requestSource",
    "relatedFileInfo",
    "commands",
    "troubleshootInfo",
]
GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@pytest.fixture
def client(settings: Settings, uow_factory: SqlUnitOfWorkFactory, clock: FrozenClock):
    seed(uow_factory, [WIN11, MAC, LINUX, OLD_WIN10, SERVER2016_LEGACY, SERVER2016_UNIFIED, WIN10])
    with TestClient(create_app(settings, clock=clock), raise_server_exceptions=False) as test_client:
        test_client.headers.update(auth_headers(test_client, uow_factory, name="SOAR playbook"))
        yield test_client


def action_count(uow_factory: SqlUnitOfWorkFactory) -> int:
    with uow_factory(write=False) as uow:
        return uow.conn.execute(select(func.count()).select_from(machine_actions)).scalar_one()


def offboard(client: TestClient, machine_id: str, body: object = None, **kwargs):
    payload = {"Comment": "Offboard machine by automation"} if body is None else body
    return client.post(f"/api/machines/{machine_id}/offboard", json=payload, **kwargs)


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert body["error"]["target"] == response.headers["request-id"]
    assert body["error"]["message"]
    return body["error"]


def test_offboard_answers_a_pending_action_with_every_field_in_order(client: TestClient, clock: FrozenClock) -> None:
    response = offboard(client, WIN11.id)
    assert response.status_code == 200
    body = response.json()
    assert list(body) == ACTION_FIELDS
    assert body["@odata.context"] == "http://testserver/api/$metadata#MachineActions/$entity"
    assert GUID.match(body["id"])
    assert body["type"] == "Offboard"
    assert body["status"] == "Pending"
    assert body["requestor"] == "SOAR playbook"
    assert body["requestorComment"] == "Offboard machine by automation"
    assert body["machineId"] == WIN11.id
    assert body["computerDnsName"] == "host-1.contoso.com"
    assert body["creationDateTimeUtc"] == "2026-03-01T09:30:00.123456Z"
    assert body["lastUpdateDateTimeUtc"] == "2026-03-01T09:30:00.123456Z"
    assert body["requestSource"] == "PublicApi"
    assert body["errorHResult"] == 0
    assert body["commands"] == []
    assert body["relatedFileInfo"] is None
    assert body["cancellationRequestor"] is None
    assert GUID.match(response.headers["request-id"])


def test_action_reads_back_identically(client: TestClient) -> None:
    created = offboard(client, WIN11.id).json()
    fetched = client.get(f"/api/machineactions/{created['id']}")
    assert fetched.status_code == 200
    assert fetched.json() == created
    upper = client.get(f"/api/machineactions/{created['id'].upper()}")
    assert upper.json()["id"] == created["id"]


def test_v1_prefix_serves_the_same_operations(client: TestClient) -> None:
    created = client.post(f"/api/v1.0/machines/{WIN11.id}/offboard", json={"Comment": "v1"})
    assert created.status_code == 200
    assert client.get(f"/api/v1.0/machineactions/{created.json()['id']}").json()["requestorComment"] == "v1"


def test_machine_id_is_matched_case_insensitively(client: TestClient) -> None:
    response = offboard(client, WIN11.id.upper())
    assert response.status_code == 200
    assert response.json()["machineId"] == WIN11.id


def test_optional_parameters_are_echoed_and_explicit_nulls_accepted(client: TestClient) -> None:
    response = offboard(client, WIN11.id, {"Comment": "c", "ExternalId": "ticket-42", "Title": "Leaver", "RequestSource": None})
    assert response.status_code == 200
    body = response.json()
    assert (body["externalId"], body["title"], body["requestSource"]) == ("ticket-42", "Leaver", "PublicApi")
    other = offboard(client, WIN10.id, {"Comment": "c", "ExternalId": None, "Title": None, "RequestSource": "BulkAction"})
    assert other.status_code == 200
    assert other.json()["requestSource"] == "BulkAction"


def test_status_code_setting_switches_to_201(settings: Settings, uow_factory: SqlUnitOfWorkFactory) -> None:
    seed(uow_factory, [WIN11])
    with TestClient(create_app(settings.model_copy(update={"offboard_status_code": 201}))) as client:
        client.headers.update(auth_headers(client, uow_factory))
        assert offboard(client, WIN11.id).status_code == 201


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"", "InvalidRequestBody"),
        (b"{not json", "InvalidRequestBody"),
        (b"[]", "InvalidRequestBody"),
        (b'"Comment"', "InvalidRequestBody"),
        (b'{"Comment": 5}', "InvalidRequestBody"),
        (b'{"Comment": ["a"]}', "InvalidRequestBody"),
        (b'{"Comment": "x", "ExternalId": 7}', "InvalidRequestBody"),
        (b"{}", "MissingRequiredParameter"),
        (b'{"Comment": null}', "MissingRequiredParameter"),
        (b'{"Comment": "   "}', "MissingRequiredParameter"),
        (b'{"comment": "lowercase name is not Comment"}', "MissingRequiredParameter"),
        (b'{"Comment": "x", "RequestSource": "Telepathy"}', "InvalidInput"),
    ],
)
def test_bad_bodies_are_refused_and_change_nothing(
    client: TestClient, uow_factory: SqlUnitOfWorkFactory, raw: bytes, code: str
) -> None:
    response = client.post(f"/api/machines/{WIN11.id}/offboard", content=raw, headers={"Content-Type": "application/json"})
    error = assert_error(response, 400, code)
    if code == "MissingRequiredParameter":
        assert error["message"] == "Parameter Comment is missing."
    assert action_count(uow_factory) == 0


def test_oversized_body_is_refused(client: TestClient, uow_factory: SqlUnitOfWorkFactory, settings: Settings) -> None:
    big = json.dumps({"Comment": "x" * (settings.max_body_bytes + 10)})
    assert_error(client.post(f"/api/machines/{WIN11.id}/offboard", content=big), 413, "PayloadTooLarge")
    assert action_count(uow_factory) == 0


def test_overlong_comment_is_refused(client: TestClient, uow_factory: SqlUnitOfWorkFactory, settings: Settings) -> None:
    response = offboard(client, WIN11.id, {"Comment": "x" * (settings.max_comment_length + 1)})
    assert_error(response, 400, "InvalidInput")
    assert action_count(uow_factory) == 0


@pytest.mark.parametrize("bad_id", ["abc", "1e5bc9d7e413ddd7902c2932e418702b84d0cc0!", "x" * 41, "%27%20or%201%3D1"])
def test_malformed_machine_id_is_invalid_input(client: TestClient, bad_id: str) -> None:
    assert_error(offboard(client, bad_id), 400, "InvalidInput")


def test_unknown_machine_is_resource_not_found(client: TestClient, uow_factory: SqlUnitOfWorkFactory) -> None:
    unknown = "f" * 40
    error = assert_error(offboard(client, unknown), 404, "ResourceNotFound")
    assert error["message"] == f"Machine {unknown} was not found"
    assert action_count(uow_factory) == 0


@pytest.mark.parametrize(
    ("machine", "code", "message"),
    [
        (MAC, "OsPlatformNotSupported", "OS Platform macOS isn't supported for this action."),
        (LINUX, "OsPlatformNotSupported", "OS Platform Linux isn't supported for this action."),
        (OLD_WIN10, "ClientVersionNotSupported", None),
        (SERVER2016_LEGACY, "ClientVersionNotSupported", None),
    ],
)
def test_platform_rules(client: TestClient, uow_factory: SqlUnitOfWorkFactory, machine, code: str, message: str | None) -> None:
    error = assert_error(offboard(client, machine.id), 400, code)
    if message:
        assert error["message"] == message
    assert action_count(uow_factory) == 0


def test_supported_servers_and_windows10_1703(client: TestClient) -> None:
    assert offboard(client, SERVER2016_UNIFIED.id).status_code == 200
    assert offboard(client, WIN10.id).status_code == 200


def test_second_offboard_while_pending_is_refused(client: TestClient, uow_factory: SqlUnitOfWorkFactory) -> None:
    assert offboard(client, WIN11.id).status_code == 200
    error = assert_error(offboard(client, WIN11.id), 400, "ActiveRequestAlreadyExists")
    assert error["message"] == "Action is already in progress"
    assert action_count(uow_factory) == 1


def test_offboard_of_an_already_offboarded_machine_is_a_bad_request(
    client: TestClient, uow_factory: SqlUnitOfWorkFactory, clock: FrozenClock
) -> None:
    with uow_factory() as uow:
        uow.machines.update_fields(WIN11.id, offboarded_at=clock.now())
        uow.commit()
    error = assert_error(offboard(client, WIN11.id), 400, "BadRequest")
    assert "already offboarded" in error["message"] and "sensor has stopped" in error["message"]
    assert action_count(uow_factory) == 0


def test_get_action_errors(client: TestClient) -> None:
    assert_error(client.get("/api/machineactions/not-a-guid"), 400, "InvalidInput")
    missing = "f123cb8d-1cee-4da9-8cd1-74b4d14f5dc2"
    error = assert_error(client.get(f"/api/machineactions/{missing}"), 404, "ResourceNotFound")
    assert error["message"] == f"MachineAction {missing} was not found"


def test_unknown_route_and_wrong_method_use_the_envelope(client: TestClient) -> None:
    assert_error(client.get("/api/nothing-here"), 404, "NotFound")
    assert_error(client.get(f"/api/machines/{WIN11.id}/offboard"), 405, "MethodNotAllowed")


def test_unexpected_failure_is_500_in_the_envelope(client: TestClient, uow_factory: SqlUnitOfWorkFactory, caplog) -> None:
    def rename(old: str, new: str) -> None:
        with uow_factory() as uow:
            uow.conn.execute(text(f"ALTER TABLE {old} RENAME TO {new}"))
            uow.commit()

    rename("machine_actions", "machine_actions_away")
    try:
        response = offboard(client, WIN11.id)
    finally:
        rename("machine_actions_away", "machine_actions")
    assert_error(response, 500, "InternalServerError")
    logged = [r for r in caplog.records if r.name == "bulwark.api"]
    assert logged and logged[-1].request_id == response.headers["request-id"]


def test_every_offboard_request_is_audited(client: TestClient, uow_factory: SqlUnitOfWorkFactory) -> None:
    ok = offboard(client, WIN11.id, {"Comment": "leaver"})
    refused = offboard(client, MAC.id, {"Comment": "try mac"})
    with uow_factory(write=False) as uow:
        rows = uow.conn.execute(select(audit_events).order_by(audit_events.c.id)).mappings().all()
    assert [(r["machine_id"], r["outcome_status"], r["outcome_code"], r["comment"]) for r in rows] == [
        (WIN11.id, 200, None, "leaver"),
        (MAC.id, 400, "OsPlatformNotSupported", "try mac"),
    ]
    assert rows[0]["machine_action_id"] == ok.json()["id"]
    assert rows[1]["request_id"] == refused.headers["request-id"]
    assert rows[0]["actor_name"] == rows[1]["actor_name"] == "SOAR playbook"
    assert rows[0]["actor_kind"] == "application"


def test_openapi_names_the_operation(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    operation = spec["paths"]["/api/machines/{id}/offboard"]["post"]
    assert operation["operationId"] == "offboardMachine"
    assert operation["tags"] == ["MachineAction"]
    assert operation["requestBody"]["content"]["application/json"]["schema"]["required"] == ["Comment"]
