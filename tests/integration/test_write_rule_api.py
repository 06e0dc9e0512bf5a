"""One rule for every action-writing use case, over HTTP with real tokens: caller kind x operation.

For users the rule is: a delegated scope that allows the operation AND a role that may manage
devices AND access to the machine's device group. Applications need the permission as a role.
Each row is one kind of caller; each column one operation, with the status the caller observes.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from bulwark.api.app import create_app
from bulwark.clock import FrozenClock
from bulwark.service.identity import DELEGATED_PERMISSIONS
from bulwark.settings import Settings
from bulwark.store.uow import SqlUnitOfWorkFactory as UnitOfWorkFactory
from tests.conftest import make_machine, seed
from tests.identity_support import ALL_APP_ROLES, app_token, bearer, register_app, register_user, user_token

ADMIN = ("ViewData", "ActiveRemediationActions", "ManageSecuritySettings")
READER = ("ViewData",)
# Both machines are in Finance; WITH_ACTION has a Pending offboard made by an all-powerful application.
WITH_ACTION, TARGET = make_machine(11), make_machine(12)

OPERATIONS = (
    "getMachine",
    "listMachines",
    "getAction",
    "listActions",
    "cancel",
    "offboard",
    "onboardingPackage",
    "offboardingPackage",
)
# caller -> (kind, application roles or delegated scopes, user role, Finance access), expected statuses.
# For the lists, "200+" means the Finance machine (or its action) is listed, "200-" that it is not.
TABLE = {
    "app-all-permissions": (("app", ALL_APP_ROLES, (), True), ("200", "200+", "200", "200+", "200", "200", "200", "200")),
    "app-read-only": (("app", ("Machine.Read.All",), (), True), ("200", "200+", "200", "200+", "403", "403", "403", "403")),
    "user-admin": (
        ("user", tuple(sorted(DELEGATED_PERMISSIONS)), ADMIN, True),
        ("200", "200+", "200", "200+", "200", "200", "200", "200"),
    ),
    "user-reader": (
        ("user", tuple(sorted(DELEGATED_PERMISSIONS)), READER, True),
        ("200", "200+", "200", "200+", "403", "403", "403", "403"),
    ),
    # Packages concern no machine: an administrator outside Finance may still download them.
    "user-without-group": (
        ("user", tuple(sorted(DELEGATED_PERMISSIONS)), ADMIN, False),
        ("404", "200-", "404", "200-", "404", "404", "200", "200"),
    ),
    "user-read-scope-admin": (
        ("user", ("Machine.Read",), ADMIN, True),
        ("200", "200+", "200", "200+", "403", "403", "403", "403"),
    ),
}


@pytest.fixture
def world(settings: Settings, uow_factory: UnitOfWorkFactory, clock: FrozenClock):
    (finance,) = seed(uow_factory, [], groups=["Finance"])
    seed(uow_factory, [make_machine(11, rbac_group_id=finance), make_machine(12, rbac_group_id=finance)])
    # Assigning Finance to a user group closes it to everyone outside such a group.
    register_user(uow_factory, "finance.owner@contoso.com", capabilities=ADMIN, device_groups=[finance])
    with TestClient(create_app(settings, clock=clock)) as client:
        maker = bearer(app_token(client, register_app(uow_factory, ALL_APP_ROLES)))
        created = client.post(f"/api/machines/{WITH_ACTION.id}/offboard", json={"Comment": "setup"}, headers=maker)
        assert created.status_code == 200, created.text
        client.finance = finance  # type: ignore[attr-defined]
        client.action_id = created.json()["id"]  # type: ignore[attr-defined]
        yield client


def caller_headers(client: TestClient, uow_factory: UnitOfWorkFactory, name: str) -> dict[str, str]:
    (kind, permissions, role, finance_access), _ = TABLE[name]
    if kind == "app":
        return bearer(app_token(client, register_app(uow_factory, permissions, name=name)))
    upn = f"{name}@contoso.com"
    register_user(uow_factory, upn, capabilities=role, device_groups=[client.finance] if finance_access else [])  # type: ignore[attr-defined]
    return bearer(user_token(client, register_app(uow_factory, [], delegated=permissions), upn))


def observe(client: TestClient, headers: dict[str, str], operation: str) -> str:
    action_id = client.action_id  # type: ignore[attr-defined]
    if operation == "getMachine":
        answer = client.get(f"/api/machines/{WITH_ACTION.id}", headers=headers)
    elif operation == "listMachines":
        answer = client.get("/api/machines", headers=headers)
    elif operation == "getAction":
        answer = client.get(f"/api/machineactions/{action_id}", headers=headers)
    elif operation == "listActions":
        answer = client.get("/api/machineactions", headers=headers)
    elif operation == "cancel":
        answer = client.post(f"/api/machineactions/{action_id}/cancel", json={"Comment": "table"}, headers=headers)
    elif operation == "offboard":
        answer = client.post(f"/api/machines/{TARGET.id}/offboard", json={"Comment": "table"}, headers=headers)
    elif operation == "onboardingPackage":
        answer = client.get("/api/onboarding/package", headers=headers)
    else:
        answer = client.get("/api/offboarding/package", headers=headers)
    if answer.status_code != 200:
        assert set(answer.json()) == {"error"}, answer.text
        return str(answer.status_code)
    if operation == "listMachines":
        return "200+" if WITH_ACTION.id in {m["id"] for m in answer.json()["value"]} else "200-"
    if operation == "listActions":
        return "200+" if action_id in {a["id"] for a in answer.json()["value"]} else "200-"
    if operation == "cancel":
        assert answer.json()["status"] == "Cancelled"
    return "200"


@pytest.mark.parametrize("caller", list(TABLE))
def test_every_operation_for_each_kind_of_caller(world: TestClient, uow_factory: UnitOfWorkFactory, caller: str) -> None:
    headers = caller_headers(world, uow_factory, caller)
    observed = {operation: observe(world, headers, operation) for operation in OPERATIONS}
    assert observed == dict(zip(OPERATIONS, TABLE[caller][1], strict=True))


def test_a_view_only_user_cannot_cancel_another_analysts_offboard(world: TestClient, uow_factory: UnitOfWorkFactory) -> None:
    reader = caller_headers(world, uow_factory, "user-reader")
    answer = world.post(f"/api/machineactions/{world.action_id}/cancel", json={"Comment": "mine now"}, headers=reader)  # type: ignore[attr-defined]
    assert answer.status_code == 403
    assert answer.json()["error"] == {
        "code": "DisallowedOperation",
        "message": "The user's role does not allow cancelling machine actions.",
        "target": answer.headers["request-id"],
    }
    admin = caller_headers(world, uow_factory, "user-admin")
    after = world.get(f"/api/machineactions/{world.action_id}", headers=admin)  # type: ignore[attr-defined]
    assert after.json()["status"] == "Pending"
    assert after.json()["cancellationRequestor"] is None
