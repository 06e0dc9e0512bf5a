"""The demo tenant's applications, users, roles and user groups, created or refreshed at demo start."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from bulwark.auth.secrets import verify_password
from bulwark.clock import Clock
from bulwark.domain.access import Permission
from bulwark.domain.control import CONTROL_ROLE
from bulwark.service.identity.directory import (
    APPLICATION_ROLES,
    DELEGATED_PERMISSIONS,
    Capability,
    create_application,
    create_role,
    create_user,
    create_user_group,
    grant_application_permissions,
    new_password,
    reset_application_secret,
    reset_user_password,
)
from bulwark.service.ports import UnitOfWorkFactory

# The demo's full application is also a public client ("Allow public client flows" in Entra ID):
# users sign in through it with the password grant without its secret, as the README shows and
# as MSAL's PublicClientApplication does. The reader application is confidential.
DEMO_FULL_APP = "Bulwark Demo Automation"
DEMO_READER_APP = "Bulwark Demo Reader"


@dataclass(frozen=True)
class DemoUser:
    """A demo user: UPN, password, and what they may do."""

    upn: str
    password: str
    description: str


def _demo_id(tenant_id: str, name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"urn:bulwark:demo:{tenant_id}:{name}"))


def seed_demo_identities(
    uow_factory: UnitOfWorkFactory, clock: Clock, tenant_id: str, known: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Create (or refresh) the demo applications, users, roles and user groups; return their credentials.

    Their secrets are written in clear to demo-credentials.json, so they are hashed with the fast
    Argon2id profile: a slow hash of a secret kept beside the database protects nothing, and
    would cost every demo start (and every test server) more than a second.

    Secrets are stored hashed, so ``known`` (the credentials written at an earlier start) is
    reused when it still matches; otherwise the demo secrets and passwords are reset.
    """
    known = dict(known or {})
    fresh_secrets: dict[str, str] = {}
    full_id, reader_id = _demo_id(tenant_id, DEMO_FULL_APP), _demo_id(tenant_id, DEMO_READER_APP)
    with uow_factory(write=False) as uow:
        existing = uow.identity.get_application(full_id)
    exists = existing is not None
    if existing is not None and CONTROL_ROLE not in existing["roles"]:
        # Seeded before the control API existed: the demo automation application holds its role too.
        grant_application_permissions(uow_factory(), tenant_id, full_id, roles=[CONTROL_ROLE])
    if not exists:
        for created in (
            create_application(
                uow_factory(),
                clock,
                tenant_id,
                DEMO_FULL_APP,
                client_id=full_id,
                roles=sorted(APPLICATION_ROLES),
                delegated_permissions=sorted(DELEGATED_PERMISSIONS),
                fast_hash=True,
                public_client=True,
            ),
            create_application(
                uow_factory(),
                clock,
                tenant_id,
                DEMO_READER_APP,
                client_id=reader_id,
                roles=[Permission.MACHINE_READ_ALL.value],
                delegated_permissions=[Permission.MACHINE_READ.value],
                fast_hash=True,
            ),
        ):
            fresh_secrets[created.id] = created.secret
        create_role(uow_factory(), tenant_id, "Security administrator", [c.value for c in Capability])
        create_role(uow_factory(), tenant_id, "Security reader", [Capability.VIEW_DATA.value])
        users = {
            "analyst": ("analyst@contoso.com", "Alex Analyst"),
            "reader": ("reader@contoso.com", "Riley Reader"),
            "finance": ("finance.admin@contoso.com", "Fin Admin"),
        }
        for key, (upn, name) in users.items():
            fresh_secrets[upn] = create_user(
                uow_factory(),
                clock,
                tenant_id,
                upn,
                name,
                user_id=_demo_id(tenant_id, key),
                password=new_password(),
                fast_hash=True,
            ).secret
        create_user_group(
            uow_factory(), tenant_id, "SOC analysts", members=["analyst@contoso.com"], roles=["Security administrator"]
        )
        create_user_group(uow_factory(), tenant_id, "Auditors", members=["reader@contoso.com"], roles=["Security reader"])
        # Only Finance admins reach the Finance device group; every other demo group stays open.
        # (A database seeded by other means may have no Finance group; then nothing is closed.)
        with uow_factory(write=False) as uow:
            has_finance = any(g["name"] == "Finance" for g in uow.device_groups.list(tenant_id))
        create_user_group(
            uow_factory(),
            tenant_id,
            "Finance admins",
            members=["finance.admin@contoso.com"],
            roles=["Security administrator"],
            device_groups=["Finance"] if has_finance else [],
        )
    apps = {DEMO_FULL_APP: full_id, DEMO_READER_APP: reader_id}
    descriptions = {
        "analyst@contoso.com": "Security administrator; every device group except Finance",
        "reader@contoso.com": "Security reader (view only); every device group except Finance",
        "finance.admin@contoso.com": "Security administrator; every device group, Finance included",
    }
    known_apps = {a.get("client_id"): a.get("client_secret") for a in known.get("applications", [])}
    known_users = {u.get("username"): u.get("password") for u in known.get("users", [])}
    app_out, user_out = [], []
    with uow_factory(write=False) as uow:
        app_rows = {name: uow.identity.get_application(cid) for name, cid in apps.items()}
        user_rows = {upn: uow.identity.find_user(tenant_id, upn) for upn in descriptions}
    for name, row in app_rows.items():
        assert row is not None
        if name == DEMO_FULL_APP and not row.get("public_client"):
            # A demo database from before public clients existed: users sign in through this app.
            with uow_factory() as uow:
                uow.identity.update_application(row["client_id"], public_client=True)
                uow.commit()
            row["public_client"] = True
        secret = fresh_secrets.get(row["client_id"]) or known_apps.get(row["client_id"])
        if row["client_id"] not in fresh_secrets and (not secret or not verify_password(secret, row["secret_hash"] or "")):
            secret = reset_application_secret(uow_factory(), tenant_id, row["client_id"]).secret
        app_out.append(
            {
                "name": name,
                "client_id": row["client_id"],
                "client_secret": secret,
                "roles": row["roles"],
                "delegated_permissions": row["delegated_permissions"],
                "public_client": bool(row.get("public_client")),
            }
        )
    for upn, row in user_rows.items():
        assert row is not None
        password = fresh_secrets.get(upn) or known_users.get(upn)
        if upn not in fresh_secrets and (not password or not verify_password(password, row["password_hash"] or "")):
            password = reset_user_password(uow_factory(), tenant_id, upn).secret
        user_out.append({"username": upn, "password": password, "access": descriptions[upn]})
    return {"tenant_id": tenant_id, "applications": app_out, "users": user_out}
