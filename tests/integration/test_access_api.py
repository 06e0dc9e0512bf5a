"""Who may do what, over HTTP with real tokens: caller kind x permission x device-group access x endpoint."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from bulwark.api.app import create_app
from bulwark.clock import FrozenClock
from bulwark.settings import Settings
from bulwark.store.tables import audit_events
from bulwark.store.uow import SqlUnitOfWorkFactory
from tests.conftest import make_machine, seed
from tests.identity_support import ALL_APP_ROLES, app_token, bearer, register_app, register_user, user_token

ADMIN = ["ViewData", "ActiveRemediationActions", "ManageSecuritySettings"]
USER_SCOPES = ["Machine.Offboard", "Machine.Read"]
OPEN, FINANCE, UNGROUPED = make_machine(1), make_machine(2), make_machine(3)


@dataclass(frozen=True)
class Caller:
    """A kind of caller: an application with roles, or a user with scopes, a role and device-group access."""

    kind: str
    permissions: tuple[str, ...]
    capabilities: tuple[str, ...] = ()
    finance_access: bool = False


CALLERS = {
    "app-offboard": Caller("app", ("Machine.Offboard",)),
    "app-read": Caller("app", ("Machine.Read.All",)),
    "app-readwrite": Caller("app", ("Machine.ReadWrite.All",)),
    "app-none": Caller("app", ()),
    "user-admin": Caller("user", tuple(USER_SCOPES), tuple(ADMIN)),
    "user-finance-admin": Caller("user", tuple(USER_SCOPES), tuple(ADMIN), finance_access=True),
    "user-viewer": Caller("user", tuple(USER_SCOPES), ("ViewData",)),
    "user-no-role": Caller("user", tuple(USER_SCOPES), ()),
    "user-read-scope": Caller("user", ("Machine.Read",), tuple(ADMIN)),
}


@pytest.fixture
def world(settings: Settings, uow_factory: SqlUnitOfWorkFactory, clock: FrozenClock):
    """Machines in an open group, in Finance (closed to all but Finance admins), and ungrouped."""
    open_group, finance_group = seed(uow_factory, [], groups=["Workstations", "Finance"])
    seed(
        uow_factory,
        [
            make_machine(1, rbac_group_id=open_group),
            make_machine(2, rbac_group_id=finance_group),
            make_machine(3),
        ],
    )
    # Assigning Finance to a user group closes it to everyone outside that group.
    register_user(uow_factory, "someone.in.finance@contoso.com", capabilities=ADMIN, device_groups=[finance_group])
    with TestClient(create_app(settings, clock=clock)) as client:
        client.finance_group = finance_group  # type: ignore[attr-defined]
        yield client


def headers_for(client: TestClient, uow_factory: SqlUnitOfWorkFactory, name: str) -> dict[str, str]:
    caller = CALLERS[name]
    if caller.kind == "app":
        return bearer(app_token(client, register_app(uow_factory, caller.permissions, name=name)))
    upn = f"{name}@contoso.com"
    groups = [client.finance_group] if caller.finance_access else []  # type: ignore[attr-defined]
    register_user(uow_factory, upn, capabilities=caller.capabilities, device_groups=groups)
    return bearer(user_token(client, register_app(uow_factory, [], delegated=caller.permissions), upn))


def call(client: TestClient, headers: dict[str, str], endpoint: str, machine_id: str, uow_factory: SqlUnitOfWorkFactory):
    if endpoint == "offboard":
        return client.post(f"/api/machines/{machine_id}/offboard", json={"Comment": "matrix"}, headers=headers)
    if endpoint == "getMachine":
        return client.get(f"/api/machines/{machine_id}", headers=headers)
    # An action made by an all-powerful application, read by the caller under test.
    maker = bearer(app_token(client, register_app(uow_factory, ALL_APP_ROLES)))
    created = client.post(f"/api/machines/{machine_id}/offboard", json={"Comment": "setup"}, headers=maker)
    assert created.status_code == 200, created.text
    return client.get(f"/api/machineactions/{created.json()['id']}", headers=headers)


MISSING_OFFBOARD = "Missing application roles. API required roles: Machine.Offboard, application roles: {held}."
MISSING_READ = (
    "Missing application roles. API required roles: Machine.Read, Machine.Read.All, Machine.ReadWrite, "
    "Machine.ReadWrite.All, application roles: {held}."
)

# (caller, endpoint, machine, status, code, message)
MATRIX = [
    ("app-offboard", "offboard", OPEN, 200, None, None),
    ("app-offboard", "offboard", FINANCE, 200, None, None),
    ("app-offboard", "offboard", UNGROUPED, 200, None, None),
    ("app-offboard", "getMachine", OPEN, 403, "Forbidden", MISSING_READ.format(held="Machine.Offboard")),
    ("app-offboard", "getMachineAction", FINANCE, 200, None, None),
    ("app-read", "offboard", OPEN, 403, "Forbidden", MISSING_OFFBOARD.format(held="Machine.Read.All")),
    ("app-read", "getMachine", FINANCE, 200, None, None),
    ("app-read", "getMachineAction", FINANCE, 200, None, None),
    ("app-readwrite", "offboard", OPEN, 403, "Forbidden", MISSING_OFFBOARD.format(held="Machine.ReadWrite.All")),
    ("app-readwrite", "getMachine", UNGROUPED, 200, None, None),
    ("app-none", "offboard", OPEN, 403, "Forbidden", MISSING_OFFBOARD.format(held="none")),
    ("app-none", "getMachine", OPEN, 403, "Forbidden", None),
    ("app-none", "getMachineAction", OPEN, 403, "Forbidden", None),
    ("user-admin", "offboard", OPEN, 200, None, None),
    ("user-admin", "offboard", UNGROUPED, 200, None, None),
    ("user-admin", "offboard", FINANCE, 404, "ResourceNotFound", f"Machine {FINANCE.id} was not found"),
    ("user-admin", "getMachine", OPEN, 200, None, None),
    ("user-admin", "getMachine", FINANCE, 404, "ResourceNotFound", f"Machine {FINANCE.id} was not found"),
    ("user-admin", "getMachineAction", OPEN, 200, None, None),
    ("user-admin", "getMachineAction", FINANCE, 404, "ResourceNotFound", None),
    ("user-finance-admin", "offboard", FINANCE, 200, None, None),
    ("user-finance-admin", "getMachine", FINANCE, 200, None, None),
    ("user-finance-admin", "getMachineAction", FINANCE, 200, None, None),
    ("user-viewer", "offboard", OPEN, 403, "DisallowedOperation", "The user's role does not allow offboarding devices."),
    ("user-viewer", "offboard", FINANCE, 404, "ResourceNotFound", f"Machine {FINANCE.id} was not found"),
    ("user-viewer", "getMachine", OPEN, 200, None, None),
    ("user-viewer", "getMachine", UNGROUPED, 200, None, None),
    ("user-no-role", "offboard", OPEN, 404, "ResourceNotFound", None),
    ("user-no-role", "getMachine", UNGROUPED, 404, "ResourceNotFound", None),
    (
        "user-read-scope",
        "offboard",
        OPEN,
        403,
        "Forbidden",
        "Missing user permissions. API required roles: Machine.Offboard, user permissions: Machine.Read.",
    ),
    ("user-read-scope", "getMachine", OPEN, 200, None, None),
]


@pytest.mark.parametrize(
    ("caller", "endpoint", "machine", "status", "code", "message"),
    MATRIX,
    ids=[f"{c}-{e}-{m.id[-1]}" for c, e, m, *_ in MATRIX],
)
def test_access_matrix(
    world: TestClient, uow_factory: SqlUnitOfWorkFactory, caller: str, endpoint: str, machine, status: int, code, message
) -> None:
    response = call(world, headers_for(world, uow_factory, caller), endpoint, machine.id, uow_factory)
    assert response.status_code == status, response.text
    if code:
        assert response.json()["error"]["code"] == code
    if message:
        assert response.json()["error"]["message"] == message
    if status == 200 and endpoint == "offboard":
        # requestor: the user's UPN, or the application's display name.
        expected = f"{caller}@contoso.com" if caller.startswith("user") else caller
        assert response.json()["requestor"] == expected


def test_invisible_machine_answers_exactly_like_a_missing_one(world: TestClient, uow_factory: SqlUnitOfWorkFactory) -> None:
    headers = headers_for(world, uow_factory, "user-admin")
    hidden = world.post(f"/api/machines/{FINANCE.id}/offboard", json={"Comment": "x"}, headers=headers).json()
    missing_id = "e" * 40
    missing = world.post(f"/api/machines/{missing_id}/offboard", json={"Comment": "x"}, headers=headers).json()
    assert hidden["error"]["message"].replace(FINANCE.id, "<id>") == missing["error"]["message"].replace(missing_id, "<id>")
    assert hidden["error"]["code"] == missing["error"]["code"] == "ResourceNotFound"


def test_every_refused_offboard_is_audited_with_caller_machine_comment_and_request_id(
    world: TestClient, uow_factory: SqlUnitOfWorkFactory
) -> None:
    reader = headers_for(world, uow_factory, "app-read")
    user = headers_for(world, uow_factory, "user-admin")
    answers = [
        world.post(f"/api/machines/{OPEN.id}/offboard", json={"Comment": "no token"}),
        world.post(f"/api/machines/{OPEN.id}/offboard", json={"Comment": "reader"}, headers=reader),
        world.post(f"/api/machines/{FINANCE.id}/offboard", json={"Comment": "hidden"}, headers=user),
        world.post(f"/api/machines/{OPEN.id}/offboard", json={"Comment": "allowed"}, headers=user),
    ]
    assert [a.status_code for a in answers] == [401, 403, 404, 200]
    with uow_factory(write=False) as uow:
        rows = uow.conn.execute(select(audit_events).order_by(audit_events.c.id)).mappings().all()
    assert [
        (r["actor_kind"], r["actor_name"], r["machine_id"], r["comment"], r["outcome_status"], r["request_id"]) for r in rows
    ] == [
        # An unauthenticated caller's text (its comment) is never stored.
        (None, None, OPEN.id, None, 401, answers[0].headers["request-id"]),
        ("application", "app-read", OPEN.id, "reader", 403, answers[1].headers["request-id"]),
        ("user", "user-admin@contoso.com", FINANCE.id, "hidden", 404, answers[2].headers["request-id"]),
        ("user", "user-admin@contoso.com", OPEN.id, "allowed", 200, answers[3].headers["request-id"]),
    ]
