"""Test helpers for callers: register applications and users, and get real tokens from the token endpoint."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime

import httpx
from argon2 import PasswordHasher

from bulwark.service.identity import APPLICATION_PERMISSIONS
from bulwark.store.uow import SqlUnitOfWorkFactory
from tests.conftest import TENANT

SCOPE = "https://api.securitycenter.microsoft.com/.default"
TEST_SECRET = "test-client-secret-0123456789abcdefghij"
TEST_PASSWORD = "correct horse battery staple"
# Argon2id is slow on purpose; hashes carry their own parameters, so test callers get cheap ones
# and the real token endpoint verifies them quickly.
_cheap = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
_SECRET_HASH = _cheap.hash(TEST_SECRET)
_PASSWORD_HASH = _cheap.hash(TEST_PASSWORD)
_CREATED = datetime(2026, 1, 1, tzinfo=UTC)
ALL_APP_ROLES = tuple(sorted(APPLICATION_PERMISSIONS))


def ensure_tenant(uow_factory: SqlUnitOfWorkFactory, tenant: str = TENANT) -> None:
    """Create the tenant if it does not exist yet."""
    with uow_factory() as uow:
        if not uow.tenants.exists(tenant):
            uow.tenants.add(tenant, "Contoso", _CREATED)
            uow.commit()


def register_app(
    uow_factory: SqlUnitOfWorkFactory,
    roles: Iterable[str] = ALL_APP_ROLES,
    *,
    delegated: Iterable[str] = (),
    tenant: str = TENANT,
    name: str | None = None,
    enabled: bool = True,
    public_client: bool = False,
) -> str:
    """Register an application whose secret is TEST_SECRET; return its client id."""
    ensure_tenant(uow_factory, tenant)
    client_id = str(uuid.uuid4())
    with uow_factory() as uow:
        uow.identity.add_application(
            client_id=client_id,
            tenant_id=tenant,
            display_name=name or f"Test app {client_id[:8]}",
            secret_hash=_SECRET_HASH,
            roles=roles,
            delegated_permissions=delegated,
            created_at=_CREATED,
            enabled=enabled,
            public_client=public_client,
        )
        uow.commit()
    return client_id


def register_user(
    uow_factory: SqlUnitOfWorkFactory,
    upn: str,
    *,
    capabilities: Iterable[str] = (),
    device_groups: Iterable[int] = (),
    tenant: str = TENANT,
) -> str:
    """Create a user (password TEST_PASSWORD) in a user group of their own with a role of ``capabilities``
    and access to ``device_groups``; return the user's object id."""
    ensure_tenant(uow_factory, tenant)
    user_id = str(uuid.uuid4())
    with uow_factory() as uow:
        uow.identity.add_user(
            user_id=user_id,
            tenant_id=tenant,
            upn=upn,
            display_name=upn.split("@")[0],
            password_hash=_PASSWORD_HASH,
            created_at=_CREATED,
        )
        group = uow.identity.add_user_group(tenant, f"group of {upn}")
        uow.identity.add_member(group, user_id)
        caps = list(capabilities)
        if caps:
            role = uow.identity.add_role(tenant, f"role of {upn}", caps)
            uow.identity.assign_role(group, role)
        for device_group in device_groups:
            uow.identity.grant_device_group(device_group, group)
        uow.commit()
    return user_id


def token_endpoint(tenant: str = TENANT) -> str:
    """The token endpoint path of a tenant."""
    return f"/{tenant}/oauth2/v2.0/token"


def app_token(client: httpx.Client, client_id: str, *, tenant: str = TENANT, secret: str = TEST_SECRET) -> str:
    """An application token from the real token endpoint."""
    response = client.post(
        token_endpoint(tenant),
        data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret, "scope": SCOPE},
    )
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def user_token(
    client: httpx.Client,
    client_id: str,
    upn: str,
    *,
    tenant: str = TENANT,
    password: str = TEST_PASSWORD,
    client_secret: str | None = TEST_SECRET,
) -> str:
    """A delegated user token from the real token endpoint (password grant).

    Confidential applications authenticate with their secret; pass ``client_secret=None`` for a public client.
    """
    form = {"grant_type": "password", "client_id": client_id, "username": upn, "password": password, "scope": SCOPE}
    if client_secret is not None:
        form["client_secret"] = client_secret
    response = client.post(token_endpoint(tenant), data=form)
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def bearer(token: str) -> dict[str, str]:
    """The Authorization header for ``token``."""
    return {"Authorization": f"Bearer {token}"}


def auth_headers(
    client: httpx.Client, uow_factory: SqlUnitOfWorkFactory, roles: Iterable[str] = ALL_APP_ROLES, *, name: str | None = None
) -> dict[str, str]:
    """Headers of a new application holding ``roles``, with a token from the token endpoint."""
    return bearer(app_token(client, register_app(uow_factory, roles, name=name)))
