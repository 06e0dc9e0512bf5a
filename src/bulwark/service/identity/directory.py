"""The identity directory: tenants, app registrations, users, Defender RBAC roles and user groups."""

from __future__ import annotations

import enum
import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from bulwark.auth.secrets import hash_password, new_client_secret
from bulwark.clock import Clock
from bulwark.domain.access import Permission
from bulwark.domain.control import CONTROL_ROLE
from bulwark.service.ports import UnitOfWork

APPLICATION_PERMISSIONS = frozenset(
    p.value for p in Permission if p not in {Permission.MACHINE_READ, Permission.MACHINE_READWRITE}
)
# Application roles: the API permissions, plus Bulwark's own role for the control API of test servers.
APPLICATION_ROLES = APPLICATION_PERMISSIONS | {CONTROL_ROLE}
DELEGATED_PERMISSIONS = frozenset(
    p.value for p in Permission if p not in {Permission.MACHINE_READ_ALL, Permission.MACHINE_READWRITE_ALL}
)


class Capability(str, enum.Enum):
    """What a Defender RBAC role lets a user do (a small subset of the live role permissions)."""

    VIEW_DATA = "ViewData"
    ACTIVE_REMEDIATION_ACTIONS = "ActiveRemediationActions"
    MANAGE_SECURITY_SETTINGS = "ManageSecuritySettings"


class IdentityError(ValueError):
    """An administrative request that cannot be carried out (unknown name, bad permission, ...)."""


def _check_permissions(names: Iterable[str], allowed: frozenset[str], kind: str) -> list[str]:
    names = list(dict.fromkeys(names))
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise IdentityError(f"unknown {kind} permission(s): {', '.join(unknown)}; known: {', '.join(sorted(allowed))}")
    return names


def create_tenant(uow: UnitOfWork, clock: Clock, name: str, tenant_id: str | None = None) -> str:
    """Create a tenant and return its id."""
    tenant_id = tenant_id or str(uuid.uuid4())
    with uow:
        if uow.tenants.exists(tenant_id):
            raise IdentityError(f"tenant {tenant_id} already exists")
        uow.tenants.add(tenant_id, name, clock.now())
        uow.commit()
    return tenant_id


@dataclass(frozen=True)
class NewCredential:
    """A created application or user with its secret, shown once and stored only as a hash."""

    id: str
    secret: str


def create_application(
    uow: UnitOfWork,
    clock: Clock,
    tenant_id: str,
    display_name: str,
    *,
    roles: Iterable[str] = (),
    delegated_permissions: Iterable[str] = (),
    client_id: str | None = None,
    secret: str | None = None,
    fast_hash: bool = False,
    public_client: bool = False,
) -> NewCredential:
    """Register an application with a new client secret (returned once) and its permissions.

    ``fast_hash`` only for a secret kept in clear anyway (the demo's): see ``hash_password``.
    ``public_client``: the application runs where it cannot keep a secret (a script or tool on a
    user's machine), so users may sign in through it with the password grant without the client
    secret, as with an Entra ID app registration that allows public client flows. Confidential
    applications (the default) must send their secret with every grant.
    """
    role_names = _check_permissions(roles, APPLICATION_ROLES, "application")
    scope_names = _check_permissions(delegated_permissions, DELEGATED_PERMISSIONS, "delegated")
    client_id = client_id or str(uuid.uuid4())
    secret = secret or new_client_secret()
    secret_hash = hash_password(secret, fast=fast_hash)
    with uow:
        if not uow.tenants.exists(tenant_id):
            raise IdentityError(f"tenant {tenant_id} does not exist")
        if any(app["display_name"] == display_name for app in uow.identity.list_applications(tenant_id)):
            raise IdentityError(f"an application named {display_name!r} already exists in tenant {tenant_id}")
        uow.identity.add_application(
            client_id=client_id,
            tenant_id=tenant_id,
            display_name=display_name,
            secret_hash=secret_hash,
            roles=role_names,
            delegated_permissions=scope_names,
            created_at=clock.now(),
            public_client=public_client,
        )
        uow.commit()
    return NewCredential(client_id, secret)


def _application(uow: UnitOfWork, tenant_id: str, client_id_or_name: str) -> dict[str, Any]:
    app = uow.identity.find_application(tenant_id, client_id_or_name)
    if app is None:
        raise IdentityError(f"no application {client_id_or_name} in tenant {tenant_id}")
    return app


def set_application_enabled(uow: UnitOfWork, tenant_id: str, client_id_or_name: str, enabled: bool) -> str:
    """Enable or disable an application (a disabled one gets no tokens, and its tokens stop working)."""
    with uow:
        app = _application(uow, tenant_id, client_id_or_name)
        uow.identity.update_application(app["client_id"], enabled=enabled)
        uow.commit()
    return app["client_id"]


def grant_application_permissions(
    uow: UnitOfWork,
    tenant_id: str,
    client_id_or_name: str,
    *,
    roles: Iterable[str] = (),
    delegated_permissions: Iterable[str] = (),
    revoke: bool = False,
) -> dict[str, Any]:
    """Add (or with ``revoke`` remove) application roles and delegated permissions; return the application."""
    role_names = set(_check_permissions(roles, APPLICATION_ROLES, "application"))
    scope_names = set(_check_permissions(delegated_permissions, DELEGATED_PERMISSIONS, "delegated"))
    with uow:
        app = _application(uow, tenant_id, client_id_or_name)
        current_roles, current_scopes = set(app["roles"]), set(app["delegated_permissions"])
        new_roles = current_roles - role_names if revoke else current_roles | role_names
        new_scopes = current_scopes - scope_names if revoke else current_scopes | scope_names
        uow.identity.update_application(app["client_id"], roles=sorted(new_roles), delegated_permissions=sorted(new_scopes))
        uow.commit()
    return {**app, "roles": sorted(new_roles), "delegated_permissions": sorted(new_scopes)}


def reset_application_secret(uow: UnitOfWork, tenant_id: str, client_id_or_name: str, secret: str | None = None) -> NewCredential:
    """Replace an application's client secret; the new one is returned once."""
    secret = secret or new_client_secret()
    secret_hash = hash_password(secret)
    with uow:
        app = _application(uow, tenant_id, client_id_or_name)
        uow.identity.update_application(app["client_id"], secret_hash=secret_hash)
        uow.commit()
    return NewCredential(app["client_id"], secret)


def new_password() -> str:
    """A random password for a new user: 20 URL-safe characters."""
    return secrets.token_urlsafe(15)


def create_user(
    uow: UnitOfWork,
    clock: Clock,
    tenant_id: str,
    upn: str,
    display_name: str | None = None,
    *,
    password: str | None = None,
    user_id: str | None = None,
    fast_hash: bool = False,
) -> NewCredential:
    """Create a user who signs in with ``upn`` and a password (generated when not given, returned once)."""
    if "@" not in upn or any(ch.isspace() for ch in upn):
        raise IdentityError(f"a user principal name looks like name@domain, got {upn!r}")
    password = password or new_password()
    password_hash = hash_password(password, fast=fast_hash)
    user_id = user_id or str(uuid.uuid4())
    with uow:
        if not uow.tenants.exists(tenant_id):
            raise IdentityError(f"tenant {tenant_id} does not exist")
        if uow.identity.find_user(tenant_id, upn) is not None:
            raise IdentityError(f"user {upn} already exists")
        uow.identity.add_user(
            user_id=user_id,
            tenant_id=tenant_id,
            upn=upn,
            display_name=display_name or upn.split("@")[0],
            password_hash=password_hash,
            created_at=clock.now(),
        )
        uow.commit()
    return NewCredential(user_id, password)


def set_user_enabled(uow: UnitOfWork, tenant_id: str, upn: str, enabled: bool) -> None:
    """Enable or disable a user."""
    with uow:
        user = uow.identity.find_user(tenant_id, upn)
        if user is None:
            raise IdentityError(f"no user {upn} in tenant {tenant_id}")
        uow.identity.update_user(user["id"], enabled=enabled)
        uow.commit()


def link_external_user(
    uow: UnitOfWork, tenant_id: str, upn: str, issuer: str | None, object_id: str | None = None
) -> dict[str, Any]:
    """Link a user to an external provider's account (its issuer and immutable ``oid``), or unlink with None.

    Tokens of that issuer carrying that object id then act as this user, with their roles and
    device groups; names in the token (upn, preferred_username) are never used to match.
    """
    if (issuer is None) != (object_id is None):
        raise IdentityError("give both the issuer and the object id, or neither to unlink")
    if issuer is not None and object_id is not None:
        if not issuer.startswith(("https://", "http://")) or len(issuer) > 400:
            raise IdentityError(f"the issuer is the provider's issuer URL, exactly as in its tokens' iss, got {issuer!r}")
        if not object_id.strip() or len(object_id) > 64:
            raise IdentityError("the object id is the account's oid claim (at most 64 characters)")
    with uow:
        user = uow.identity.find_user(tenant_id, upn)
        if user is None:
            raise IdentityError(f"no user {upn} in tenant {tenant_id}")
        if issuer is not None and object_id is not None:
            other = uow.identity.find_external_user(tenant_id, issuer, object_id)
            if other is not None and other["id"] != user["id"]:
                raise IdentityError(f"that external account is already linked to {other['upn']}")
        uow.identity.update_user(user["id"], external_issuer=issuer, external_object_id=object_id)
        uow.commit()
    return {**user, "external_issuer": issuer, "external_object_id": object_id}


def reset_user_password(uow: UnitOfWork, tenant_id: str, upn: str, password: str | None = None) -> NewCredential:
    """Give a user a new password (generated when not given, returned once)."""
    password = password or new_password()
    password_hash = hash_password(password)
    with uow:
        user = uow.identity.find_user(tenant_id, upn)
        if user is None:
            raise IdentityError(f"no user {upn} in tenant {tenant_id}")
        uow.identity.update_user(user["id"], password_hash=password_hash)
        uow.commit()
    return NewCredential(user["id"], password)


def create_role(uow: UnitOfWork, tenant_id: str, name: str, capabilities: Iterable[str]) -> int:
    """Create a role granting ``capabilities`` (ViewData, ActiveRemediationActions, ManageSecuritySettings)."""
    known = {c.value for c in Capability}
    caps = list(dict.fromkeys(capabilities))
    unknown = [c for c in caps if c not in known]
    if unknown:
        raise IdentityError(f"unknown capability(ies): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    with uow:
        if not uow.tenants.exists(tenant_id):
            raise IdentityError(f"tenant {tenant_id} does not exist")
        if uow.identity.id_by_name("role", tenant_id, name) is not None:
            raise IdentityError(f"a role named {name!r} already exists in tenant {tenant_id}")
        role_id = uow.identity.add_role(tenant_id, name, caps)
        uow.commit()
    return role_id


def create_user_group(
    uow: UnitOfWork,
    tenant_id: str,
    name: str,
    *,
    members: Iterable[str] = (),
    roles: Iterable[str] = (),
    device_groups: Iterable[str] = (),
) -> int:
    """Create a user group with member UPNs, role names and the device groups it may reach."""
    with uow:
        if not uow.tenants.exists(tenant_id):
            raise IdentityError(f"tenant {tenant_id} does not exist")
        if uow.identity.id_by_name("user_group", tenant_id, name) is not None:
            raise IdentityError(f"a user group named {name!r} already exists in tenant {tenant_id}")
        group_id = uow.identity.add_user_group(tenant_id, name)
        _assign(uow, tenant_id, group_id, members, roles, device_groups)
        uow.commit()
    return group_id


def assign_to_user_group(
    uow: UnitOfWork,
    tenant_id: str,
    name: str,
    *,
    members: Iterable[str] = (),
    roles: Iterable[str] = (),
    device_groups: Iterable[str] = (),
) -> None:
    """Add members, roles or device groups to an existing user group."""
    with uow:
        group_id = uow.identity.id_by_name("user_group", tenant_id, name)
        if group_id is None:
            raise IdentityError(f"no user group {name} in tenant {tenant_id}")
        _assign(uow, tenant_id, group_id, members, roles, device_groups)
        uow.commit()


def _assign(
    uow: UnitOfWork, tenant_id: str, group_id: int, members: Iterable[str], roles: Iterable[str], device_groups: Iterable[str]
) -> None:
    for upn in members:
        user = uow.identity.find_user(tenant_id, upn)
        if user is None:
            raise IdentityError(f"no user {upn} in tenant {tenant_id}")
        uow.identity.add_member(group_id, user["id"])
    for role in roles:
        role_id = uow.identity.id_by_name("role", tenant_id, role)
        if role_id is None:
            raise IdentityError(f"no role {role} in tenant {tenant_id}")
        uow.identity.assign_role(group_id, role_id)
    for device_group in device_groups:
        device_group_id = uow.identity.id_by_name("device_group", tenant_id, device_group)
        if device_group_id is None:
            raise IdentityError(f"no device group {device_group} in tenant {tenant_id}")
        uow.identity.grant_device_group(device_group_id, group_id)
