"""Refusals as a caller and an auditor see them: content types, the audit trail, unauthenticated floods."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from bulwark.api.app import create_app
from bulwark.clock import FrozenClock
from bulwark.service.identity import DELEGATED_PERMISSIONS
from bulwark.settings import Settings
from bulwark.store.tables import audit_events, machine_actions
from bulwark.store.uow import SqlUnitOfWorkFactory as UnitOfWorkFactory
from tests.conftest import make_machine, seed
from tests.identity_support import ALL_APP_ROLES, app_token, bearer, register_app, register_user, user_token

MACHINE, OTHER = make_machine(1), make_machine(2)


@pytest.fixture
def app_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"unauthenticated_rate_limit": "5/minute"})


@pytest.fixture
def client(app_settings: Settings, uow_factory: UnitOfWorkFactory, clock: FrozenClock):
    seed(uow_factory, [MACHINE, OTHER])
    with TestClient(create_app(app_settings, clock=clock)) as test_client:
        test_client.admin = bearer(app_token(test_client, register_app(uow_factory, ALL_APP_ROLES, name="automation")))  # type: ignore[attr-defined]
        yield test_client


def audit_rows(uow_factory: UnitOfWorkFactory) -> list[dict]:
    with uow_factory(write=False) as uow:
        return [dict(r) for r in uow.conn.execute(select(audit_events).order_by(audit_events.c.id)).mappings()]


def action_count(uow_factory: UnitOfWorkFactory) -> int:
    with uow_factory(write=False) as uow:
        return len(uow.conn.execute(select(machine_actions.c.id)).all())


# --- Content types of offboard and cancel ---


@pytest.mark.parametrize("content_type", [None, "application/json", "application/json; charset=utf-8", "Application/JSON"])
def test_offboard_and_cancel_accept_json_or_no_content_type(client: TestClient, content_type: str | None) -> None:
    headers = dict(client.admin)  # type: ignore[attr-defined]
    if content_type:
        headers["Content-Type"] = content_type
    offboard = client.post(f"/api/machines/{MACHINE.id}/offboard", content=b'{"Comment": "typed"}', headers=headers)
    assert offboard.status_code == 200, offboard.text
    cancel = client.post(f"/api/machineactions/{offboard.json()['id']}/cancel", content=b'{"Comment": "undo"}', headers=headers)
    assert cancel.status_code == 200, cancel.text
    assert cancel.json()["status"] == "Cancelled"


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/x-www-form-urlencoded", b'{"Comment": "curl without -H"}'),
        ("text/plain", b'{"Comment": "text"}'),
        ("multipart/form-data; boundary=x", b"--x--"),
        ("application/xml", b"<Comment>x</Comment>"),
    ],
)
def test_other_content_types_are_refused_with_415_saying_what_to_send(
    client: TestClient, uow_factory: UnitOfWorkFactory, content_type: str, body: bytes
) -> None:
    headers = {**client.admin, "Content-Type": content_type}  # type: ignore[attr-defined]
    offboard = client.post(f"/api/machines/{MACHINE.id}/offboard", content=body, headers=headers)
    assert offboard.status_code == 415
    error = offboard.json()["error"]
    assert error["code"] == "UnsupportedMediaType"
    assert content_type.split(";")[0] in error["message"]
    assert "Content-Type: application/json" in error["message"]
    assert error["target"] == offboard.headers["request-id"]
    assert action_count(uow_factory) == 0

    created = client.post(f"/api/machines/{OTHER.id}/offboard", json={"Comment": "to cancel"}, headers=client.admin)  # type: ignore[attr-defined]
    cancel = client.post(f"/api/machineactions/{created.json()['id']}/cancel", content=body, headers=headers)
    assert cancel.status_code == 415
    assert cancel.json()["error"]["code"] == "UnsupportedMediaType"
    still = client.get(f"/api/machineactions/{created.json()['id']}", headers=client.admin)  # type: ignore[attr-defined]
    assert still.json()["status"] == "Pending"


def test_curl_form_body_gets_415_not_a_parse_error(client: TestClient) -> None:
    # What `curl -d '{"Comment": "x"}'` sends without -H.
    answer = client.post(f"/api/machines/{MACHINE.id}/offboard", data={"Comment": "x"}, headers=client.admin)  # type: ignore[attr-defined]
    assert answer.status_code == 415
    assert "-H 'Content-Type: application/json'" in answer.json()["error"]["message"]


# --- Audit gaps ---


def test_refused_cancels_store_the_action_id_and_the_real_machine_id(client: TestClient, uow_factory: UnitOfWorkFactory) -> None:
    created = client.post(f"/api/machines/{MACHINE.id}/offboard", json={"Comment": "leaver"}, headers=client.admin)  # type: ignore[attr-defined]
    action_id = created.json()["id"]
    register_user(uow_factory, "reader@contoso.com", capabilities=["ViewData"])
    reader = bearer(
        user_token(client, register_app(uow_factory, [], delegated=sorted(DELEGATED_PERMISSIONS)), "reader@contoso.com")
    )
    refused = client.post(f"/api/machineactions/{action_id}/cancel", json={"Comment": "mine"}, headers=reader)
    assert refused.status_code == 403
    missing_id = "00000000-0000-0000-0000-00000000beef"
    missing = client.post(f"/api/machineactions/{missing_id}/cancel", json={"Comment": "ghost"}, headers=client.admin)  # type: ignore[attr-defined]
    assert missing.status_code == 404
    client.post(f"/api/machineactions/{action_id}/cancel", json={"Comment": "ok"}, headers=client.admin)  # type: ignore[attr-defined]
    final = client.post(f"/api/machineactions/{action_id}/cancel", json={"Comment": "again"}, headers=client.admin)  # type: ignore[attr-defined]
    assert final.status_code == 400
    cancels = [r for r in audit_rows(uow_factory) if r["action"] == "machine_action.cancel.requested"]
    assert [(r["outcome_status"], r["machine_action_id"], r["machine_id"], r["comment"]) for r in cancels] == [
        (403, action_id, MACHINE.id, "mine"),
        (404, missing_id, None, "ghost"),
        (200, action_id, MACHINE.id, "ok"),
        (400, action_id, MACHINE.id, "again"),
    ]
    assert cancels[0]["request_id"] == refused.headers["request-id"]


def test_package_issuance_is_audited_with_request_id_and_address_and_refusals_too(
    client: TestClient, uow_factory: UnitOfWorkFactory
) -> None:
    onboarding = client.get("/api/onboarding/package", headers=client.admin)  # type: ignore[attr-defined]
    offboarding = client.get("/api/offboarding/package", headers=client.admin)  # type: ignore[attr-defined]
    assert onboarding.status_code == offboarding.status_code == 200
    reader = bearer(app_token(client, register_app(uow_factory, ["Machine.Read.All"], name="reader")))
    refused = [
        client.get("/api/onboarding/package", headers=reader),
        client.get("/api/offboarding/package", headers=reader),
        client.get("/api/onboarding/package"),
    ]
    assert [r.status_code for r in refused] == [403, 403, 401]
    rows = [r for r in audit_rows(uow_factory) if r["action"].startswith("sensor.")]
    assert [(r["action"], r["outcome_status"], r["actor_name"], r["request_id"], r["client_ip"]) for r in rows] == [
        ("sensor.onboarding_package.issued", 200, "automation", onboarding.headers["request-id"], "testclient"),
        ("sensor.offboarding_package.issued", 200, "automation", offboarding.headers["request-id"], "testclient"),
        ("sensor.onboarding_package.issued", 403, "reader", refused[0].headers["request-id"], "testclient"),
        ("sensor.offboarding_package.issued", 403, "reader", refused[1].headers["request-id"], "testclient"),
        ("sensor.onboarding_package.issued", 401, None, refused[2].headers["request-id"], "testclient"),
    ]


# --- Unauthenticated floods ---


def test_unauthenticated_refusals_store_no_caller_text_and_are_limited_per_source(
    client: TestClient, uow_factory: UnitOfWorkFactory
) -> None:
    long_comment = "x" * 3900
    answers = [
        client.post(
            f"/api/machines/{MACHINE.id}/offboard", json={"Comment": long_comment}, headers={"Authorization": "Bearer nope"}
        )
        for _ in range(8)
    ]
    # The budget is 5 a minute in this test: then 429, with nothing more written.
    assert [a.status_code for a in answers] == [401] * 5 + [429] * 3
    assert answers[-1].json()["error"]["code"] == "TooManyRequests"
    assert "Retry-After" in answers[-1].headers
    rows = audit_rows(uow_factory)
    assert len(rows) == 5
    assert {(r["actor_kind"], r["comment"], r["machine_id"], r["outcome_status"]) for r in rows} == {
        (None, None, MACHINE.id, 401)
    }
    # A malformed id is caller text too: not stored.
    garbage = client.post("/api/machines/" + "z" * 60 + "/offboard", json={"Comment": "x"})
    assert garbage.status_code == 429
    # Authenticated callers keep their own budget.
    assert client.get(f"/api/machines/{MACHINE.id}", headers=client.admin).status_code == 200  # type: ignore[attr-defined]


def test_malformed_ids_from_unauthenticated_callers_are_not_stored(client: TestClient, uow_factory: UnitOfWorkFactory) -> None:
    answer = client.post("/api/machines/" + "<script>" * 5 + "/offboard", json={"Comment": "x"})
    assert answer.status_code == 401
    (row,) = audit_rows(uow_factory)
    assert (row["machine_id"], row["comment"], row["outcome_status"]) == (None, None, 401)


def test_sensor_gateway_refusals_share_the_source_budget(client: TestClient, uow_factory: UnitOfWorkFactory) -> None:
    statuses = [
        client.post("/sensor/v1/checkin", json={}, headers={"Authorization": "Bearer bws_forged"}).status_code for _ in range(4)
    ]
    statuses += [
        client.post(
            "/sensor/v1/enrol",
            json={"tenantId": MACHINE.tenant_id, "onboardingKey": "bwo_guess", "deviceIdentity": "d", "properties": {}},
        ).status_code
        for _ in range(3)
    ]
    assert statuses == [401] * 5 + [429] * 2
    assert audit_rows(uow_factory) == []
