"""``bulwark`` administration of identities: tenants, applications, users, roles, user groups, keys, tokens, audit."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from bulwark.clock import SystemClock
from bulwark.datadir import PROCESS_UMASK, secure_data_dir
from bulwark.service import identity
from bulwark.settings import Settings
from bulwark.store.uow import SqlUnitOfWorkFactory as UnitOfWorkFactory

console = Console()
err = Console(stderr=True)

tenants_app = typer.Typer(help="Tenants (directories).", no_args_is_help=True)
apps_app = typer.Typer(help="Applications (client-credentials callers).", no_args_is_help=True)
users_app = typer.Typer(help="Users (delegated callers).", no_args_is_help=True)
roles_app = typer.Typer(help="Roles: capabilities users get through their user groups.", no_args_is_help=True)
groups_app = typer.Typer(help="User groups: members, roles and the device groups they may reach.", no_args_is_help=True)
keys_app = typer.Typer(help="Token signing keys.", no_args_is_help=True)
audit_app = typer.Typer(help="The audit trail.", no_args_is_help=True)

TenantOpt = Annotated[str | None, typer.Option("--tenant", help="Tenant id (default: BULWARK_DEFAULT_TENANT_ID).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def register(app: typer.Typer) -> None:
    """Add the identity commands to the main ``bulwark`` command."""
    app.add_typer(tenants_app, name="tenants")
    app.add_typer(apps_app, name="apps")
    app.add_typer(users_app, name="users")
    app.add_typer(roles_app, name="roles")
    app.add_typer(groups_app, name="groups")
    app.add_typer(keys_app, name="keys")
    app.add_typer(audit_app, name="audit")
    app.command("token")(token)


@contextmanager
def _session() -> Iterator[tuple[Settings, UnitOfWorkFactory]]:
    from bulwark.store.db import create_db_engine, upgrade_database

    settings = Settings()
    os.umask(PROCESS_UMASK)
    secure_data_dir(settings.data_dir)
    url = settings.resolved_database_url()
    upgrade_database(url)
    engine = create_db_engine(url, pool_size=1)
    try:
        yield settings, UnitOfWorkFactory(engine)
    except identity.IdentityError as error:
        err.print(f"[bold red]Error:[/] {error}", soft_wrap=True)
        raise typer.Exit(code=1) from None
    finally:
        engine.dispose()


def _print(rows: list[dict[str, Any]], columns: list[str], as_json: bool) -> None:
    if as_json:
        console.print_json(json.dumps(rows, default=str))
        return
    table = Table(*columns)
    for row in rows:
        table.add_row(*(", ".join(v) if isinstance(v := row.get(c), list) else "" if v is None else str(v) for c in columns))
    console.print(table)


# Tenants


@tenants_app.command("create")
def tenants_create(
    name: str, tenant_id: Annotated[str | None, typer.Option("--id", help="Tenant id (default: a new GUID).")] = None
) -> None:
    """Create a tenant."""
    with _session() as (_, uow):
        console.print(identity.create_tenant(uow(), SystemClock(), name, tenant_id))


@tenants_app.command("list")
def tenants_list(as_json: JsonOpt = False) -> None:
    """List tenants."""
    with _session() as (_, uow), uow(write=False) as u:
        rows = u.tenants.list()
    _print(rows, ["id", "name", "created_at"], as_json)


# Applications


@apps_app.command("create")
def apps_create(
    name: str,
    role: Annotated[list[str], typer.Option("--role", help="Application permission, e.g. Machine.Offboard (repeatable).")] = [],  # noqa: B006
    scope: Annotated[
        list[str], typer.Option("--delegated", help="Delegated permission for user sign-ins, e.g. Machine.Read.")
    ] = [],  # noqa: B006
    tenant: TenantOpt = None,
) -> None:
    """Register an application; its client secret is shown once and stored only as a hash."""
    with _session() as (settings, uow):
        created = identity.create_application(
            uow(), SystemClock(), tenant or settings.default_tenant_id, name, roles=role, delegated_permissions=scope
        )
    console.print(f"client_id:     {created.id}")
    console.print(f"client_secret: {created.secret}")
    console.print("[yellow]Store the secret now: it cannot be shown again.[/]")


@apps_app.command("list")
def apps_list(tenant: TenantOpt = None, as_json: JsonOpt = False) -> None:
    """List applications with their permissions."""
    with _session() as (settings, uow), uow(write=False) as u:
        rows = u.identity.list_applications(tenant or settings.default_tenant_id)
    for row in rows:
        row.pop("secret_hash", None)
    _print(rows, ["client_id", "display_name", "enabled", "roles", "delegated_permissions"], as_json)


@apps_app.command("disable")
def apps_disable(app: Annotated[str, typer.Argument(help="Client id or display name.")], tenant: TenantOpt = None) -> None:
    """Disable an application: no new tokens, and its current tokens stop working within seconds."""
    with _session() as (settings, uow):
        console.print(f"Disabled {identity.set_application_enabled(uow(), tenant or settings.default_tenant_id, app, False)}")


@apps_app.command("enable")
def apps_enable(app: Annotated[str, typer.Argument(help="Client id or display name.")], tenant: TenantOpt = None) -> None:
    """Enable a disabled application."""
    with _session() as (settings, uow):
        console.print(f"Enabled {identity.set_application_enabled(uow(), tenant or settings.default_tenant_id, app, True)}")


@apps_app.command("grant")
def apps_grant(
    app: Annotated[str, typer.Argument(help="Client id or display name.")],
    role: Annotated[list[str], typer.Option("--role", help="Application permission (repeatable).")] = [],  # noqa: B006
    scope: Annotated[list[str], typer.Option("--delegated", help="Delegated permission (repeatable).")] = [],  # noqa: B006
    revoke: Annotated[bool, typer.Option("--revoke", help="Remove the permissions instead.")] = False,
    tenant: TenantOpt = None,
) -> None:
    """Grant (or revoke) permissions; new tokens carry them."""
    with _session() as (settings, uow):
        row = identity.grant_application_permissions(
            uow(), tenant or settings.default_tenant_id, app, roles=role, delegated_permissions=scope, revoke=revoke
        )
    console.print(f"roles: {', '.join(row['roles']) or '-'}; delegated: {', '.join(row['delegated_permissions']) or '-'}")


@apps_app.command("reset-secret")
def apps_reset_secret(app: Annotated[str, typer.Argument(help="Client id or display name.")], tenant: TenantOpt = None) -> None:
    """Replace an application's client secret (shown once)."""
    with _session() as (settings, uow):
        created = identity.reset_application_secret(uow(), tenant or settings.default_tenant_id, app)
    console.print(f"client_secret: {created.secret}")


# Users


@users_app.command("create")
def users_create(
    upn: str,
    name: Annotated[str | None, typer.Option(help="Display name.")] = None,
    password: Annotated[str | None, typer.Option(help="Password (default: generated and shown once).")] = None,
    tenant: TenantOpt = None,
) -> None:
    """Create a user who signs in with UPN and password."""
    with _session() as (settings, uow):
        created = identity.create_user(uow(), SystemClock(), tenant or settings.default_tenant_id, upn, name, password=password)
    console.print(f"user id:  {created.id}")
    if not password:
        console.print(f"password: {created.secret}")


@users_app.command("list")
def users_list(tenant: TenantOpt = None, as_json: JsonOpt = False) -> None:
    """List users."""
    with _session() as (settings, uow), uow(write=False) as u:
        rows = u.identity.list_users(tenant or settings.default_tenant_id)
    for row in rows:
        row.pop("password_hash", None)
    _print(rows, ["id", "upn", "display_name", "enabled"], as_json)


@users_app.command("disable")
def users_disable(upn: str, tenant: TenantOpt = None) -> None:
    """Disable a user."""
    with _session() as (settings, uow):
        identity.set_user_enabled(uow(), tenant or settings.default_tenant_id, upn, False)
    console.print(f"Disabled {upn}")


# Roles and user groups


@roles_app.command("create")
def roles_create(
    name: str,
    capability: Annotated[
        list[str], typer.Option("--capability", help="ViewData, ActiveRemediationActions or ManageSecuritySettings (repeatable).")
    ],
    tenant: TenantOpt = None,
) -> None:
    """Create a role."""
    with _session() as (settings, uow):
        identity.create_role(uow(), tenant or settings.default_tenant_id, name, capability)
    console.print(f"Created role {name}")


@roles_app.command("list")
def roles_list(tenant: TenantOpt = None, as_json: JsonOpt = False) -> None:
    """List roles."""
    with _session() as (settings, uow), uow(write=False) as u:
        rows = u.identity.list_roles(tenant or settings.default_tenant_id)
    _print(rows, ["id", "name", "capabilities"], as_json)


_Members = Annotated[list[str] | None, typer.Option("--member", help="User UPN (repeatable).")]
_Roles = Annotated[list[str] | None, typer.Option("--role", help="Role name (repeatable).")]
_DeviceGroups = Annotated[
    list[str] | None, typer.Option("--device-group", help="Device group name the group may reach (repeatable).")
]


@groups_app.command("create")
def groups_create(
    name: str, member: _Members = None, role: _Roles = None, device_group: _DeviceGroups = None, tenant: TenantOpt = None
) -> None:
    """Create a user group; a device group assigned to any user group is closed to users outside them."""
    with _session() as (settings, uow):
        identity.create_user_group(
            uow(),
            tenant or settings.default_tenant_id,
            name,
            members=member or [],
            roles=role or [],
            device_groups=device_group or [],
        )
    console.print(f"Created user group {name}")


@groups_app.command("assign")
def groups_assign(
    name: str, member: _Members = None, role: _Roles = None, device_group: _DeviceGroups = None, tenant: TenantOpt = None
) -> None:
    """Add members, roles or device groups to a user group."""
    with _session() as (settings, uow):
        identity.assign_to_user_group(
            uow(),
            tenant or settings.default_tenant_id,
            name,
            members=member or [],
            roles=role or [],
            device_groups=device_group or [],
        )
    console.print(f"Updated user group {name}")


@groups_app.command("list")
def groups_list(tenant: TenantOpt = None, as_json: JsonOpt = False) -> None:
    """List user groups with members, roles and device groups."""
    with _session() as (settings, uow), uow(write=False) as u:
        rows = u.identity.list_user_groups(tenant or settings.default_tenant_id)
    _print(rows, ["name", "members", "roles", "device_groups"], as_json)


# Signing keys


@keys_app.command("list")
def keys_list(as_json: JsonOpt = False) -> None:
    """List signing keys (the active one signs; unretired ones verify)."""
    with _session() as (_, uow):
        rows = [
            {"kid": k.kid, "active": k.active, "created_at": k.created_at, "retired_at": k.retired_at}
            for k in identity.load_signing_keys(uow(write=False))
        ]
    _print(rows, ["kid", "active", "created_at", "retired_at"], as_json)


@keys_app.command("rotate")
def keys_rotate() -> None:
    """Sign new tokens with a new key; the old key keeps verifying until retired."""
    with _session() as (_, uow):
        key = identity.rotate_signing_key(uow(), SystemClock())
    console.print(f"Active signing key: {key.kid} (servers pick it up within a minute)")


@keys_app.command("retire")
def keys_retire(kid: str) -> None:
    """Stop a rotated-out key from verifying tokens (wait an hour after rotating, so its tokens expire)."""
    with _session() as (_, uow):
        identity.retire_signing_key(uow(), SystemClock(), kid)
    console.print(f"Retired {kid}")


# Tokens


def token(
    app: Annotated[str, typer.Option("--app", help="Client id or display name of the application.")],
    user: Annotated[str | None, typer.Option("--user", help="Issue a delegated token for this user UPN instead.")] = None,
    tenant: TenantOpt = None,
) -> None:
    """Print an access token for quick use with curl: TOKEN=$(bulwark token --app NAME)."""
    from bulwark.auth.keys import KeyRing
    from bulwark.auth.tokens import TokenIssuer

    with _session() as (settings, uow):
        tenant_id = tenant or settings.default_tenant_id
        clock = SystemClock()
        issuer = TokenIssuer(KeyRing(identity.signing_keys_loader(settings, uow, clock)()), settings.issuer_base_url(), clock)
        with uow(write=False) as u:
            row = u.identity.find_application(tenant_id, app)
            person = u.identity.find_user(tenant_id, user) if user else None
        if row is None or not row["enabled"]:
            raise identity.IdentityError(f"no enabled application {app} in tenant {tenant_id}")
        if user and (person is None or not person["enabled"]):
            raise identity.IdentityError(f"no enabled user {user} in tenant {tenant_id}")
        if person is not None:
            issued = issuer.issue_user_token(
                tenant_id, row["client_id"], person["id"], person["upn"], person["display_name"], row["delegated_permissions"]
            )
        else:
            issued = issuer.issue_application_token(tenant_id, row["client_id"], row["display_name"], row["roles"])
    print(issued.access_token)


# Audit


@audit_app.command("list")
def audit_list(
    tenant: Annotated[
        str | None, typer.Option("--tenant", help="Only this tenant (default: all, unauthenticated refusals included).")
    ] = None,
    limit: Annotated[int, typer.Option(help="How many of the newest events.")] = 50,
    as_json: JsonOpt = False,
) -> None:
    """List the newest audit events: who asked to offboard what, why, and the outcome."""
    from bulwark.service.audit import list_audit_events

    with _session() as (_, uow):
        rows = list_audit_events(uow(write=False), tenant_id=tenant, limit=limit)
    _print(
        rows,
        [
            "occurred_at",
            "actor_kind",
            "actor_name",
            "action",
            "machine_id",
            "outcome_status",
            "outcome_code",
            "comment",
            "request_id",
        ],
        as_json,
    )
