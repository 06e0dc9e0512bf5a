"""Identity repositories: signing keys, applications, users, roles, user groups and device-group access."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, exists, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from bulwark.auth.keys import SigningKey
from bulwark.store.tables import (
    applications,
    authority_settings,
    device_group_access,
    device_groups,
    roles,
    signing_keys,
    user_group_members,
    user_group_roles,
    user_groups,
    users,
)


class SigningKeyRepository:
    """Token signing keys, shared by every process using the database."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def list(self) -> list[SigningKey]:
        """Every stored key, oldest first (retired ones included)."""
        rows = self.conn.execute(select(signing_keys).order_by(signing_keys.c.created_at)).mappings()
        return [
            SigningKey(
                kid=r["kid"],
                private_key_pem=r["private_key_pem"],
                created_at=r["created_at"],
                retired_at=r["retired_at"],
                active=bool(r["active"]),
            )
            for r in rows
        ]

    def add_first(self, key: SigningKey) -> bool:
        """Insert ``key`` as the active key unless another process just did; return whether it was stored."""
        try:
            with self.conn.begin_nested():
                self.conn.execute(insert(signing_keys).values(**_key_values(key)))
        except IntegrityError:
            return False
        return True

    def replace_active(self, new_key: SigningKey) -> None:
        """Demote the active key (it keeps verifying) and make ``new_key`` the active one."""
        self.conn.execute(update(signing_keys).where(signing_keys.c.active.is_(True)).values(active=False))
        self.conn.execute(insert(signing_keys).values(**_key_values(new_key)))

    def retire(self, kid: str, at: datetime) -> bool:
        """Retire an inactive key; return whether such a key existed."""
        result = self.conn.execute(
            update(signing_keys)
            .where(signing_keys.c.kid == kid, signing_keys.c.active.is_(False), signing_keys.c.retired_at.is_(None))
            .values(retired_at=at)
        )
        return result.rowcount == 1

    def setting(self, name: str) -> str | None:
        """A recorded authority setting (e.g. ``issuer_base_url``), or None."""
        return self.conn.execute(select(authority_settings.c.value).where(authority_settings.c.name == name)).scalar()

    def record_setting(self, name: str, value: str, *, replace: bool) -> str:
        """Record ``value`` (keeping another process's if it won the race, unless ``replace``); return what is recorded."""
        if replace and self.setting(name) is not None:
            self.conn.execute(update(authority_settings).where(authority_settings.c.name == name).values(value=value))
            return value
        try:
            with self.conn.begin_nested():
                self.conn.execute(insert(authority_settings).values(name=name, value=value))
        except IntegrityError:
            pass
        return self.setting(name) or value


def _key_values(key: SigningKey) -> dict[str, Any]:
    return {
        "kid": key.kid,
        "private_key_pem": key.private_key_pem,
        "created_at": key.created_at,
        "retired_at": key.retired_at,
        "active": key.active,
    }


class IdentityRepository:
    """Applications, users and Defender-style RBAC (roles, user groups, device-group access)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    # Applications

    def add_application(
        self,
        *,
        client_id: str,
        tenant_id: str,
        display_name: str,
        secret_hash: str | None,
        roles: Iterable[str],
        delegated_permissions: Iterable[str],
        created_at: datetime,
        enabled: bool = True,
        public_client: bool = False,
    ) -> None:
        """Register an application (``public_client``: may use the password grant without a secret)."""
        self.conn.execute(
            insert(applications).values(
                client_id=client_id,
                tenant_id=tenant_id,
                display_name=display_name,
                secret_hash=secret_hash,
                roles=sorted(set(roles)),
                delegated_permissions=sorted(set(delegated_permissions)),
                enabled=enabled,
                created_at=created_at,
                public_client=public_client,
            )
        )

    def get_application(self, client_id: str) -> dict[str, Any] | None:
        """One application by client id."""
        row = self.conn.execute(select(applications).where(applications.c.client_id == client_id)).mappings().first()
        return dict(row) if row else None

    def find_application(self, tenant_id: str, client_id_or_name: str) -> dict[str, Any] | None:
        """An application of the tenant by client id or display name."""
        row = (
            self.conn.execute(
                select(applications).where(
                    applications.c.tenant_id == tenant_id,
                    or_(applications.c.client_id == client_id_or_name, applications.c.display_name == client_id_or_name),
                )
            )
            .mappings()
            .first()
        )
        return dict(row) if row else None

    def list_applications(self, tenant_id: str | None = None) -> list[dict[str, Any]]:
        """Applications, oldest first."""
        stmt = select(applications).order_by(applications.c.created_at, applications.c.display_name)
        if tenant_id:
            stmt = stmt.where(applications.c.tenant_id == tenant_id)
        return [dict(r) for r in self.conn.execute(stmt).mappings()]

    def update_application(self, client_id: str, **values: Any) -> bool:
        """Set columns of one application; return whether it exists."""
        result = self.conn.execute(update(applications).where(applications.c.client_id == client_id).values(**values))
        return result.rowcount == 1

    # Users

    def add_user(
        self,
        *,
        user_id: str,
        tenant_id: str,
        upn: str,
        display_name: str,
        password_hash: str | None,
        created_at: datetime,
        enabled: bool = True,
    ) -> None:
        """Create a user; UPNs are stored lower-case so that sign-in is case-insensitive."""
        self.conn.execute(
            insert(users).values(
                id=user_id,
                tenant_id=tenant_id,
                upn=upn.lower(),
                display_name=display_name,
                password_hash=password_hash,
                enabled=enabled,
                created_at=created_at,
            )
        )

    def get_user(self, user_id: str) -> dict[str, Any] | None:
        """One user by object id."""
        row = self.conn.execute(select(users).where(users.c.id == user_id)).mappings().first()
        return dict(row) if row else None

    def find_user(self, tenant_id: str, upn: str) -> dict[str, Any] | None:
        """A user of the tenant by UPN, case-insensitively."""
        row = (
            self.conn.execute(select(users).where(users.c.tenant_id == tenant_id, users.c.upn == upn.lower())).mappings().first()
        )
        return dict(row) if row else None

    def find_external_user(self, tenant_id: str, issuer: str, object_id: str) -> dict[str, Any] | None:
        """The user of the tenant linked to the external account ``object_id`` (oid) of ``issuer``."""
        row = (
            self.conn.execute(
                select(users).where(
                    users.c.tenant_id == tenant_id, users.c.external_issuer == issuer, users.c.external_object_id == object_id
                )
            )
            .mappings()
            .first()
        )
        return dict(row) if row else None

    def list_users(self, tenant_id: str | None = None) -> list[dict[str, Any]]:
        """Users by UPN."""
        stmt = select(users).order_by(users.c.upn)
        if tenant_id:
            stmt = stmt.where(users.c.tenant_id == tenant_id)
        return [dict(r) for r in self.conn.execute(stmt).mappings()]

    def update_user(self, user_id: str, **values: Any) -> bool:
        """Set columns of one user; return whether they exist."""
        return self.conn.execute(update(users).where(users.c.id == user_id).values(**values)).rowcount == 1

    # Roles, user groups, device-group access

    def add_role(self, tenant_id: str, name: str, capabilities: Iterable[str]) -> int:
        """Create a role and return its id."""
        result = self.conn.execute(
            insert(roles).values(tenant_id=tenant_id, name=name, capabilities=sorted(set(capabilities))).returning(roles.c.id)
        )
        return int(result.scalar_one())

    def add_user_group(self, tenant_id: str, name: str) -> int:
        """Create a user group and return its id."""
        result = self.conn.execute(insert(user_groups).values(tenant_id=tenant_id, name=name).returning(user_groups.c.id))
        return int(result.scalar_one())

    def id_by_name(self, kind: str, tenant_id: str, name: str) -> int | None:
        """The id of the role, user group or device group called ``name`` in the tenant."""
        table = {"role": roles, "user_group": user_groups, "device_group": device_groups}[kind]
        return self.conn.execute(
            select(table.c.id).where(table.c.tenant_id == tenant_id, table.c.name == name)
        ).scalar_one_or_none()

    def add_member(self, user_group_id: int, user_id: str) -> None:
        """Put a user in a user group."""
        self.conn.execute(insert(user_group_members).values(user_group_id=user_group_id, user_id=user_id))

    def assign_role(self, user_group_id: int, role_id: int) -> None:
        """Give a user group a role."""
        self.conn.execute(insert(user_group_roles).values(user_group_id=user_group_id, role_id=role_id))

    def grant_device_group(self, device_group_id: int, user_group_id: int) -> None:
        """Let a user group reach a device group (which then is closed to other user groups)."""
        self.conn.execute(insert(device_group_access).values(device_group_id=device_group_id, user_group_id=user_group_id))

    def list_roles(self, tenant_id: str) -> list[dict[str, Any]]:
        """Roles of the tenant by name."""
        return [
            dict(r)
            for r in self.conn.execute(select(roles).where(roles.c.tenant_id == tenant_id).order_by(roles.c.name)).mappings()
        ]

    def list_user_groups(self, tenant_id: str) -> list[dict[str, Any]]:
        """User groups of the tenant with their members, roles and device groups."""
        groups = [
            dict(r)
            for r in self.conn.execute(
                select(user_groups).where(user_groups.c.tenant_id == tenant_id).order_by(user_groups.c.name)
            ).mappings()
        ]
        for group in groups:
            gid = group["id"]
            group["members"] = list(
                self.conn.execute(
                    select(users.c.upn)
                    .join(user_group_members, user_group_members.c.user_id == users.c.id)
                    .where(user_group_members.c.user_group_id == gid)
                    .order_by(users.c.upn)
                ).scalars()
            )
            group["roles"] = list(
                self.conn.execute(
                    select(roles.c.name)
                    .join(user_group_roles, user_group_roles.c.role_id == roles.c.id)
                    .where(user_group_roles.c.user_group_id == gid)
                    .order_by(roles.c.name)
                ).scalars()
            )
            group["device_groups"] = list(
                self.conn.execute(
                    select(device_groups.c.name)
                    .join(device_group_access, device_group_access.c.device_group_id == device_groups.c.id)
                    .where(device_group_access.c.user_group_id == gid)
                    .order_by(device_groups.c.name)
                ).scalars()
            )
        return groups

    def capabilities_of(self, user_id: str) -> set[str]:
        """Every capability the user's roles (through their user groups) grant."""
        rows = self.conn.execute(
            select(roles.c.capabilities)
            .join(user_group_roles, user_group_roles.c.role_id == roles.c.id)
            .join(user_group_members, user_group_members.c.user_group_id == user_group_roles.c.user_group_id)
            .where(user_group_members.c.user_id == user_id)
        ).scalars()
        return {capability for capabilities in rows for capability in (capabilities or [])}

    def reachable_device_groups(self, tenant_id: str, user_id: str) -> set[int]:
        """Device groups the user may reach: open ones (no user group assigned) and those of their user groups."""
        assigned = exists().where(device_group_access.c.device_group_id == device_groups.c.id)
        mine = exists().where(
            and_(
                device_group_access.c.device_group_id == device_groups.c.id,
                device_group_access.c.user_group_id == user_group_members.c.user_group_id,
                user_group_members.c.user_id == user_id,
            )
        )
        stmt = select(device_groups.c.id).where(device_groups.c.tenant_id == tenant_id, or_(~assigned, mine))
        return set(self.conn.execute(stmt).scalars())

    def count_users(self, tenant_id: str) -> int:
        """How many users the tenant has."""
        return int(self.conn.execute(select(func.count()).select_from(users).where(users.c.tenant_id == tenant_id)).scalar_one())
