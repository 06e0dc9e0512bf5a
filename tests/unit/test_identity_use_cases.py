"""Identity administration as use cases (tenants, applications, users, roles, user groups), without a database."""

from __future__ import annotations

import pytest

from bulwark.clock import FrozenClock
from bulwark.service import identity
from bulwark.service.identity import IdentityError
from tests.unit.fakes import FakeUnitOfWorkFactory
from tests.unit.use_case_support import TENANT, with_tenant


@pytest.fixture
def uow() -> FakeUnitOfWorkFactory:
    return with_tenant(FakeUnitOfWorkFactory())


# --------------------------------------------------------------------------- tenants


def test_a_tenant_is_created_with_the_id_asked_for(clock: FrozenClock) -> None:
    uow = FakeUnitOfWorkFactory()
    assert identity.create_tenant(uow(), clock, "Fabrikam", tenant_id="fabrikam") == "fabrikam"
    assert uow.db.tenants["fabrikam"]["name"] == "Fabrikam"


def test_a_tenant_id_cannot_be_taken_twice(uow: FakeUnitOfWorkFactory, clock: FrozenClock) -> None:
    with pytest.raises(IdentityError, match="already exists"):
        identity.create_tenant(uow(), clock, "Again", tenant_id=TENANT)
    assert uow.db.tenants[TENANT]["name"] == "Contoso"


# --------------------------------------------------------------------------- applications


def test_an_application_is_registered_with_its_permissions_and_a_hashed_secret(
    uow: FakeUnitOfWorkFactory, clock: FrozenClock
) -> None:
    created = identity.create_application(
        uow(), clock, TENANT, "SOAR", roles=["Machine.Offboard", "Machine.Read.All", "Machine.Offboard"]
    )

    app = uow.db.applications[created.id]
    assert (app["tenant_id"], app["display_name"], app["enabled"]) == (TENANT, "SOAR", True)
    assert app["roles"] == ["Machine.Offboard", "Machine.Read.All"]
    assert created.secret and app["secret_hash"] and created.secret not in app["secret_hash"]


def test_an_application_needs_an_existing_tenant(uow: FakeUnitOfWorkFactory, clock: FrozenClock) -> None:
    with pytest.raises(IdentityError, match="does not exist"):
        identity.create_application(uow(), clock, "no-such-tenant", "SOAR")
    assert uow.db.applications == {}


def test_an_application_cannot_be_given_an_unknown_permission(uow: FakeUnitOfWorkFactory, clock: FrozenClock) -> None:
    with pytest.raises(IdentityError, match="unknown application permission"):
        identity.create_application(uow(), clock, TENANT, "SOAR", roles=["Machine.Read"])
    assert uow.db.applications == {}


def test_permissions_are_granted_and_revoked_by_application_name(uow: FakeUnitOfWorkFactory, clock: FrozenClock) -> None:
    created = identity.create_application(uow(), clock, TENANT, "SOAR", roles=["Machine.Read.All"])

    identity.grant_application_permissions(uow(), TENANT, "SOAR", roles=["Machine.Offboard"])
    assert uow.db.applications[created.id]["roles"] == ["Machine.Offboard", "Machine.Read.All"]
    identity.grant_application_permissions(uow(), TENANT, created.id, roles=["Machine.Read.All"], revoke=True)
    assert uow.db.applications[created.id]["roles"] == ["Machine.Offboard"]


def test_a_disabled_application_stays_registered(uow: FakeUnitOfWorkFactory, clock: FrozenClock) -> None:
    created = identity.create_application(uow(), clock, TENANT, "SOAR")
    assert identity.set_application_enabled(uow(), TENANT, "SOAR", False) == created.id
    assert uow.db.applications[created.id]["enabled"] is False


def test_resetting_a_secret_replaces_the_stored_hash(uow: FakeUnitOfWorkFactory, clock: FrozenClock) -> None:
    created = identity.create_application(uow(), clock, TENANT, "SOAR")
    before = uow.db.applications[created.id]["secret_hash"]

    reset = identity.reset_application_secret(uow(), TENANT, "SOAR")

    assert reset.id == created.id and reset.secret != created.secret
    assert uow.db.applications[created.id]["secret_hash"] != before


# --------------------------------------------------------------------------- users


def test_a_user_is_created_with_a_generated_password_stored_hashed(uow: FakeUnitOfWorkFactory, clock: FrozenClock) -> None:
    created = identity.create_user(uow(), clock, TENANT, "Ana@Contoso.com")

    stored = uow.db.users[created.id]
    assert (stored["upn"], stored["display_name"], stored["enabled"]) == ("ana@contoso.com", "Ana", True)
    assert len(created.secret) == 20 and created.secret not in stored["password_hash"]


def test_a_user_principal_name_cannot_be_taken_twice_in_any_case(uow: FakeUnitOfWorkFactory, clock: FrozenClock) -> None:
    identity.create_user(uow(), clock, TENANT, "ana@contoso.com")
    with pytest.raises(IdentityError, match="user ANA@contoso.com already exists"):
        identity.create_user(uow(), clock, TENANT, "ANA@contoso.com")
    assert len(uow.db.users) == 1


@pytest.mark.parametrize("upn", ["ana", "ana @contoso.com", ""])
def test_a_user_principal_name_must_look_like_name_at_domain(uow: FakeUnitOfWorkFactory, clock: FrozenClock, upn: str) -> None:
    with pytest.raises(IdentityError, match="name@domain"):
        identity.create_user(uow(), clock, TENANT, upn)
    assert uow.db.users == {}


def test_a_user_needs_an_existing_tenant(uow: FakeUnitOfWorkFactory, clock: FrozenClock) -> None:
    with pytest.raises(IdentityError, match="does not exist"):
        identity.create_user(uow(), clock, "no-such-tenant", "ana@contoso.com")


def test_an_unknown_user_cannot_be_disabled(uow: FakeUnitOfWorkFactory) -> None:
    with pytest.raises(IdentityError, match="no user ghost@contoso.com"):
        identity.set_user_enabled(uow(), TENANT, "ghost@contoso.com", False)


# --------------------------------------------------------------------------- roles and user groups


def test_a_role_grants_known_capabilities_only(uow: FakeUnitOfWorkFactory) -> None:
    role_id = identity.create_role(uow(), TENANT, "Responders", ["ViewData", "ActiveRemediationActions", "ViewData"])
    assert uow.db.roles[role_id]["capabilities"] == ["ActiveRemediationActions", "ViewData"]

    with pytest.raises(IdentityError, match="unknown capability"):
        identity.create_role(uow(), TENANT, "Admins", ["Everything"])
    assert [r["name"] for r in uow.db.roles.values()] == ["Responders"]


def test_a_user_group_gets_its_members_roles_and_device_groups(uow: FakeUnitOfWorkFactory, clock: FrozenClock) -> None:
    identity.create_user(uow(), clock, TENANT, "ana@contoso.com")
    identity.create_role(uow(), TENANT, "Responders", ["ViewData"])
    with uow() as work:
        work.device_groups.add(TENANT, "Finance")
        work.commit()

    identity.create_user_group(
        uow(), TENANT, "Tier 1", members=["ana@contoso.com"], roles=["Responders"], device_groups=["Finance"]
    )

    with uow(write=False) as work:
        [group] = work.identity.list_user_groups(TENANT)
    assert (group["name"], group["members"], group["roles"], group["device_groups"]) == (
        "Tier 1",
        ["ana@contoso.com"],
        ["Responders"],
        ["Finance"],
    )


def test_a_user_group_naming_an_unknown_member_is_not_created_at_all(uow: FakeUnitOfWorkFactory) -> None:
    with pytest.raises(IdentityError, match="no user ghost@contoso.com"):
        identity.create_user_group(uow(), TENANT, "Tier 1", members=["ghost@contoso.com"])
    assert uow.db.user_groups == {}


@pytest.mark.parametrize(("field", "name"), [("roles", "Nobody"), ("device_groups", "Nowhere")])
def test_assigning_an_unknown_role_or_device_group_changes_nothing(
    uow: FakeUnitOfWorkFactory, clock: FrozenClock, field: str, name: str
) -> None:
    identity.create_user(uow(), clock, TENANT, "ana@contoso.com")
    identity.create_user_group(uow(), TENANT, "Tier 1")

    with pytest.raises(IdentityError, match=f"no {field.removesuffix('s').replace('_', ' ')} {name}"):
        identity.assign_to_user_group(uow(), TENANT, "Tier 1", members=["ana@contoso.com"], **{field: [name]})
    [group] = uow.db.user_groups.values()
    assert group["members"] == set() and group["roles"] == set() and group["device_groups"] == set()


def test_members_are_added_to_an_existing_user_group(uow: FakeUnitOfWorkFactory, clock: FrozenClock) -> None:
    created = identity.create_user(uow(), clock, TENANT, "ana@contoso.com")
    group_id = identity.create_user_group(uow(), TENANT, "Tier 1")

    identity.assign_to_user_group(uow(), TENANT, "Tier 1", members=["ana@contoso.com"])

    assert uow.db.user_groups[group_id]["members"] == {created.id}


def test_assigning_to_an_unknown_user_group_is_refused(uow: FakeUnitOfWorkFactory) -> None:
    with pytest.raises(IdentityError, match="no user group Ghosts"):
        identity.assign_to_user_group(uow(), TENANT, "Ghosts")


@pytest.mark.parametrize("kind", ["application", "role", "user group"])
def test_a_duplicate_name_is_refused_with_a_clear_error(uow: FakeUnitOfWorkFactory, clock: FrozenClock, kind: str) -> None:
    create = {
        "application": lambda: identity.create_application(uow(), clock, TENANT, "Tier 1"),
        "role": lambda: identity.create_role(uow(), TENANT, "Tier 1", ["ViewData"]),
        "user group": lambda: identity.create_user_group(uow(), TENANT, "Tier 1"),
    }[kind]
    create()
    with pytest.raises(IdentityError, match="already exists"):
        create()
