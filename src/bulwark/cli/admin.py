"""Administration by an operator with database access: identities, keys, tokens, the audit trail, device packages.

Tenants, applications, users, roles, user groups, signing keys, ``token`` and ``audit`` work straight
on the server's database, as does ``sensor package`` (issuing onboarding and offboarding packages).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from bulwark.cli.database import command_settings, with_database_options
from bulwark.cli.tables import emit

if TYPE_CHECKING:
    from bulwark.bootstrap import Store


console = Console()
err = Console(stderr=True)

tenants_app = typer.Typer(help="Tenants (directories).", no_args_is_help=True)
apps_app = typer.Typer(help="Applications (client-credentials callers).", no_args_is_help=True)
users_app = typer.Typer(help="Users (delegated callers).", no_args_is_help=True)
roles_app = typer.Typer(help="Roles: capabilities users get through their user groups.", no_args_is_help=True)
groups_app = typer.Typer(help="User groups: members, roles and the device groups they may reach.", no_args_is_help=True)
keys_app = typer.Typer(help="Token signing keys.", no_args_is_help=True)
audit_app = typer.Typer(help="The audit trail.", no_args_is_help=True)
package_app = typer.Typer(
    help="Onboarding and offboarding packages (run on the server, with database access).", no_args_is_help=True
)

TenantOpt = Annotated[str | None, typer.Option("--tenant", help="Tenant id (default: BULWARK_DEFAULT_TENANT_ID).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def register(app: typer.Typer, sensor_app: typer.Typer) -> None:
    """Add the administration commands to the main ``bulwark`` command, and ``package`` to ``bulwark sensor``."""
    app.add_typer(tenants_app, name="tenants")
    app.add_typer(apps_app, name="apps")
    app.add_typer(users_app, name="users")
    app.add_typer(roles_app, name="roles")
    app.add_typer(groups_app, name="groups")
    app.add_typer(keys_app, name="keys")
    app.add_typer(audit_app, name="audit")
    app.command("token")(with_database_options(token))
    sensor_app.add_typer(package_app, name="package")


@contextmanager
def _session() -> Iterator[Store]:
    """The database for one command, and every refusal or failure as a one-line error.

    No administration command creates or migrates a database: one that is missing or outdated is
    refused, naming where it was looked for (``bulwark db upgrade`` or ``bulwark serve`` makes it).
    A database error is reported by its kind only, never with the statement or its parameters
    (which may hold a secret's hash).
    """
    from sqlalchemy.exc import IntegrityError, SQLAlchemyError

    from bulwark.bootstrap import DatabaseNotReady, open_store
    from bulwark.domain.errors import MdeError
    from bulwark.service.identity import IdentityError

    try:
        with open_store(command_settings(), migrate=False) as store:
            yield store
    except (IdentityError, DatabaseNotReady) as error:
        err.print(f"[bold red]Error:[/] {error}", soft_wrap=True)
        raise typer.Exit(code=1) from None
    except MdeError as error:
        # A refusal from a use case (an unknown tenant, package or machine) is the user's answer, not a crash.
        err.print(f"[bold red]Error:[/] {error.message}", soft_wrap=True)
        raise typer.Exit(code=1) from None
    except IntegrityError:
        err.print("[bold red]Error:[/] refused by the database: a name or id that must be unique already exists", soft_wrap=True)
        raise typer.Exit(code=1) from None
    except SQLAlchemyError as error:
        err.print(f"[bold red]Error:[/] database error ({type(error).__name__}); nothing was changed", soft_wrap=True)
        raise typer.Exit(code=1) from None


def _print(rows: list[dict[str, Any]], columns: list[str], as_json: bool) -> None:
    if as_json:
        console.print_json(json.dumps(rows, default=str))
        return
    from rich.table import Table

    table = Table(*columns)
    for row in rows:
        table.add_row(*(", ".join(v) if isinstance(v := row.get(c), list) else "" if v is None else str(v) for c in columns))
    emit(table, console)


# Tenants


@tenants_app.command("create")
@with_database_options
def tenants_create(
    name: str, tenant_id: Annotated[str | None, typer.Option("--id", help="Tenant id (default: a new GUID).")] = None
) -> None:
    """Create a tenant."""
    from bulwark.service import identity

    with _session() as store:
        console.print(identity.create_tenant(store.uow(), store.clock, name, tenant_id))


@tenants_app.command("list")
@with_database_options
def tenants_list(as_json: JsonOpt = False) -> None:
    """List tenants."""
    with _session() as store, store.uow(write=False) as u:
        rows = u.tenants.list()
    _print(rows, ["id", "name", "created_at"], as_json)


# Applications


@apps_app.command("create")
@with_database_options
def apps_create(
    name: str,
    role: Annotated[
        list[str],
        typer.Option(
            "--role",
            help="Application role, e.g. Machine.Offboard, or Bulwark.Control for a test server's control API (repeatable).",
        ),
    ] = [],  # noqa: B006
    scope: Annotated[
        list[str], typer.Option("--delegated", help="Delegated permission for user sign-ins, e.g. Machine.Read.")
    ] = [],  # noqa: B006
    public_client: Annotated[
        bool,
        typer.Option(
            "--public-client",
            help="Users may sign in through it with the password grant without the client secret "
            "(a script or tool that cannot keep a secret). Default: confidential, the secret is required.",
        ),
    ] = False,
    tenant: TenantOpt = None,
) -> None:
    """Register an application; its client secret is shown once and stored only as a hash."""
    from bulwark.service import identity

    with _session() as store:
        created = identity.create_application(
            store.uow(),
            store.clock,
            tenant or store.settings.default_tenant_id,
            name,
            roles=role,
            delegated_permissions=scope,
            public_client=public_client,
        )
    console.print(f"client_id:     {created.id}")
    console.print(f"client_secret: {created.secret}")
    console.print("[yellow]Store the secret now: it cannot be shown again.[/]")


@apps_app.command("list")
@with_database_options
def apps_list(tenant: TenantOpt = None, as_json: JsonOpt = False) -> None:
    """List applications with their permissions."""
    with _session() as store, store.uow(write=False) as u:
        rows = u.identity.list_applications(tenant or store.settings.default_tenant_id)
    for row in rows:
        row.pop("secret_hash", None)
    _print(rows, ["client_id", "display_name", "enabled", "public_client", "roles", "delegated_permissions"], as_json)


@apps_app.command("disable")
@with_database_options
def apps_disable(app: Annotated[str, typer.Argument(help="Client id or display name.")], tenant: TenantOpt = None) -> None:
    """Disable an application: no new tokens, and its current tokens stop working within seconds."""
    from bulwark.service import identity

    with _session() as store:
        disabled = identity.set_application_enabled(store.uow(), tenant or store.settings.default_tenant_id, app, False)
    console.print(f"Disabled {disabled}")


@apps_app.command("enable")
@with_database_options
def apps_enable(app: Annotated[str, typer.Argument(help="Client id or display name.")], tenant: TenantOpt = None) -> None:
    """Enable a disabled application."""
    from bulwark.service import identity

    with _session() as store:
        enabled = identity.set_application_enabled(store.uow(), tenant or store.settings.default_tenant_id, app, True)
    console.print(f"Enabled {enabled}")


@apps_app.command("grant")
@with_database_options
def apps_grant(
    app: Annotated[str, typer.Argument(help="Client id or display name.")],
    role: Annotated[
        list[str], typer.Option("--role", help="Application role, e.g. Machine.Offboard or Bulwark.Control (repeatable).")
    ] = [],  # noqa: B006
    scope: Annotated[list[str], typer.Option("--delegated", help="Delegated permission (repeatable).")] = [],  # noqa: B006
    revoke: Annotated[bool, typer.Option("--revoke", help="Remove the permissions instead.")] = False,
    tenant: TenantOpt = None,
) -> None:
    """Grant (or revoke) permissions; new tokens carry them."""
    from bulwark.service import identity

    with _session() as store:
        row = identity.grant_application_permissions(
            store.uow(), tenant or store.settings.default_tenant_id, app, roles=role, delegated_permissions=scope, revoke=revoke
        )
    console.print(f"roles: {', '.join(row['roles']) or '-'}; delegated: {', '.join(row['delegated_permissions']) or '-'}")


@apps_app.command("reset-secret")
@with_database_options
def apps_reset_secret(app: Annotated[str, typer.Argument(help="Client id or display name.")], tenant: TenantOpt = None) -> None:
    """Replace an application's client secret (shown once)."""
    from bulwark.service import identity

    with _session() as store:
        created = identity.reset_application_secret(store.uow(), tenant or store.settings.default_tenant_id, app)
    console.print(f"client_secret: {created.secret}")


# Users


@users_app.command("create")
@with_database_options
def users_create(
    upn: str,
    name: Annotated[str | None, typer.Option(help="Display name.")] = None,
    password: Annotated[str | None, typer.Option(help="Password (default: generated and shown once).")] = None,
    tenant: TenantOpt = None,
) -> None:
    """Create a user who signs in with UPN and password."""
    from bulwark.service import identity

    with _session() as store:
        tenant_id = tenant or store.settings.default_tenant_id
        created = identity.create_user(store.uow(), store.clock, tenant_id, upn, name, password=password)
    console.print(f"user id:  {created.id}")
    if not password:
        console.print(f"password: {created.secret}")


@users_app.command("list")
@with_database_options
def users_list(tenant: TenantOpt = None, as_json: JsonOpt = False) -> None:
    """List users."""
    with _session() as store, store.uow(write=False) as u:
        rows = u.identity.list_users(tenant or store.settings.default_tenant_id)
    for row in rows:
        row.pop("password_hash", None)
    _print(rows, ["id", "upn", "display_name", "enabled", "external_issuer", "external_object_id"], as_json)


@users_app.command("link")
def users_link(
    upn: str,
    issuer: Annotated[
        str | None, typer.Option("--issuer", help="The external provider's issuer URL, exactly as its tokens' iss.")
    ] = None,
    object_id: Annotated[
        str | None, typer.Option("--object-id", help="The account's immutable object id (its tokens' oid claim).")
    ] = None,
    unlink: Annotated[bool, typer.Option("--unlink", help="Remove the link instead.")] = False,
    tenant: TenantOpt = None,
) -> None:
    """Link a user to an external provider's account: its tokens then act as this user (matched by issuer and oid)."""
    from bulwark.service import identity

    if unlink:
        issuer = object_id = None
    elif issuer is None or object_id is None:
        raise typer.BadParameter("give --issuer and --object-id (or --unlink)")
    with _session() as store:
        identity.link_external_user(store.uow(), tenant or store.settings.default_tenant_id, upn, issuer, object_id)
    console.print(f"Unlinked {upn}" if unlink else f"Linked {upn} to {object_id} of {issuer}")


@users_app.command("disable")
@with_database_options
def users_disable(upn: str, tenant: TenantOpt = None) -> None:
    """Disable a user."""
    from bulwark.service import identity

    with _session() as store:
        identity.set_user_enabled(store.uow(), tenant or store.settings.default_tenant_id, upn, False)
    console.print(f"Disabled {upn}")


# Roles and user groups


@roles_app.command("create")
@with_database_options
def roles_create(
    name: str,
    capability: Annotated[
        list[str], typer.Option("--capability", help="ViewData, ActiveRemediationActions or ManageSecuritySettings (repeatable).")
    ],
    tenant: TenantOpt = None,
) -> None:
    """Create a role."""
    from bulwark.service import identity

    with _session() as store:
        identity.create_role(store.uow(), tenant or store.settings.default_tenant_id, name, capability)
    console.print(f"Created role {name}")


@roles_app.command("list")
@with_database_options
def roles_list(tenant: TenantOpt = None, as_json: JsonOpt = False) -> None:
    """List roles."""
    with _session() as store, store.uow(write=False) as u:
        rows = u.identity.list_roles(tenant or store.settings.default_tenant_id)
    _print(rows, ["id", "name", "capabilities"], as_json)


_Members = Annotated[list[str] | None, typer.Option("--member", help="User UPN (repeatable).")]
_Roles = Annotated[list[str] | None, typer.Option("--role", help="Role name (repeatable).")]
_DeviceGroups = Annotated[
    list[str] | None, typer.Option("--device-group", help="Device group name the group may reach (repeatable).")
]


def _change_user_group(
    create: bool,
    name: str,
    members: list[str] | None,
    roles: list[str] | None,
    device_groups: list[str] | None,
    tenant: str | None,
) -> None:
    """Create a user group, or add to one, with the command's lists."""
    from bulwark.service import identity

    use_case = identity.create_user_group if create else identity.assign_to_user_group
    with _session() as store:
        use_case(
            store.uow(),
            tenant or store.settings.default_tenant_id,
            name,
            members=members or [],
            roles=roles or [],
            device_groups=device_groups or [],
        )


@groups_app.command("create")
@with_database_options
def groups_create(
    name: str, member: _Members = None, role: _Roles = None, device_group: _DeviceGroups = None, tenant: TenantOpt = None
) -> None:
    """Create a user group; a device group assigned to any user group is closed to users outside them."""
    _change_user_group(True, name, member, role, device_group, tenant)
    console.print(f"Created user group {name}")


@groups_app.command("assign")
@with_database_options
def groups_assign(
    name: str, member: _Members = None, role: _Roles = None, device_group: _DeviceGroups = None, tenant: TenantOpt = None
) -> None:
    """Add members, roles or device groups to a user group."""
    _change_user_group(False, name, member, role, device_group, tenant)
    console.print(f"Updated user group {name}")


@groups_app.command("list")
@with_database_options
def groups_list(tenant: TenantOpt = None, as_json: JsonOpt = False) -> None:
    """List user groups with members, roles and device groups."""
    with _session() as store, store.uow(write=False) as u:
        rows = u.identity.list_user_groups(tenant or store.settings.default_tenant_id)
    _print(rows, ["name", "members", "roles", "device_groups"], as_json)


# Signing keys


@keys_app.command("list")
@with_database_options
def keys_list(as_json: JsonOpt = False) -> None:
    """List signing keys (the active one signs; unretired ones verify)."""
    from bulwark.service import identity

    with _session() as store:
        rows = [
            {"kid": k.kid, "active": k.active, "created_at": k.created_at, "retired_at": k.retired_at}
            for k in identity.load_signing_keys(store.uow(write=False))
        ]
    _print(rows, ["kid", "active", "created_at", "retired_at"], as_json)


@keys_app.command("rotate")
@with_database_options
def keys_rotate() -> None:
    """Sign new tokens with a new key; the old key keeps verifying until retired."""
    from bulwark.service import identity

    with _session() as store:
        key = identity.rotate_signing_key(store.uow(), store.clock)
    console.print(f"Active signing key: {key.kid} (servers pick it up within a minute)")


@keys_app.command("retire")
@with_database_options
def keys_retire(kid: str) -> None:
    """Stop a rotated-out key from verifying tokens (wait an hour after rotating, so its tokens expire)."""
    from bulwark.service import identity

    with _session() as store:
        identity.retire_signing_key(store.uow(), store.clock, kid)
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
    from bulwark.service import identity

    with _session() as store:
        tenant_id = tenant or store.settings.default_tenant_id
        clock = store.clock
        base = identity.recorded_issuer_base_url(store.uow(write=False)) or store.settings.public_base_url
        if base is None:
            raise identity.IdentityError(
                "no token issuer is recorded for this database yet: start 'bulwark serve' once "
                "(or set BULWARK_PUBLIC_BASE_URL), so that tokens name the issuer the server verifies"
            )
        keys = identity.signing_keys_loader(store.settings.signing_key_file, store.uow)()
        if not any(key.active for key in keys):
            raise identity.IdentityError("no signing key yet: start 'bulwark serve' once")
        issuer = TokenIssuer(KeyRing(keys), base, clock)
        with store.uow(write=False) as u:
            row = u.identity.find_application(tenant_id, app)
            person = u.identity.find_user(tenant_id, user) if user else None
        if row is None or not row["enabled"]:
            raise identity.IdentityError(f"no enabled application {app} in tenant {tenant_id}")
        if user and (person is None or not person["enabled"]):
            raise identity.IdentityError(f"no enabled user {user} in tenant {tenant_id}")
        if person is not None:
            if not row["delegated_permissions"]:
                raise identity.IdentityError(
                    f"application {row['display_name']} has no delegated permissions, so a token for {user} would "
                    f"allow nothing: grant some with 'bulwark apps grant {row['display_name']!r} --delegated Machine.Read'"
                )
            issued = issuer.issue_user_token(
                tenant_id, row["client_id"], person["id"], person["upn"], person["display_name"], row["delegated_permissions"]
            )
        else:
            if not row["roles"]:
                raise identity.IdentityError(
                    f"application {row['display_name']} has no application permissions, so its token would allow nothing: "
                    f"grant some with 'bulwark apps grant {row['display_name']!r} --role Machine.Read.All'"
                )
            issued = issuer.issue_application_token(tenant_id, row["client_id"], row["display_name"], row["roles"])
    print(issued.access_token)


# Audit


_RELATIVE = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(value: str, now: datetime | None = None) -> datetime:
    """An instant from ISO 8601 (``2026-03-01``, ``2026-03-01T09:30Z``; UTC without an offset) or an age (``24h``, ``7d``)."""
    text = value.strip()
    if len(text) >= 2 and text[-1].lower() in _RELATIVE and text[:-1].isdigit():
        return (now or datetime.now(UTC)) - timedelta(seconds=int(text[:-1]) * _RELATIVE[text[-1].lower()])
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is neither an ISO 8601 date or time (2026-03-01, 2026-03-01T09:30:00Z) nor an age (90m, 24h, 7d)."
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def iso8601(value: object) -> object:
    """Datetimes as ISO 8601 in UTC (``2026-03-01T09:30:00.123456Z``); anything else unchanged."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return value


@audit_app.command("list")
@with_database_options
def audit_list(
    tenant: Annotated[
        str | None, typer.Option("--tenant", help="Only this tenant (default: all, unauthenticated refusals included).")
    ] = None,
    action: Annotated[
        str | None,
        typer.Option(help="Only this action, or actions under it: machine_action.offboard matches machine_action.offboard.*"),
    ] = None,
    machine: Annotated[str | None, typer.Option(help="Only events about this machine id.")] = None,
    caller: Annotated[str | None, typer.Option(help="Only events by this caller (application name or id, or user UPN).")] = None,
    since: Annotated[
        str | None,
        typer.Option(help="Only events from this time on: ISO 8601 (UTC unless it has an offset) or an age (24h, 7d)."),
    ] = None,
    limit: Annotated[int, typer.Option(help="How many of the newest matching events; 0 for all.")] = 50,
    as_json: JsonOpt = False,
    jsonl: Annotated[bool, typer.Option("--jsonl", help="Export as JSON lines: one event per line, for log tools.")] = False,
) -> None:
    """List audit events, newest first: who asked to offboard what, why, and the outcome."""
    from bulwark.service.audit_trail import AuditQuery, list_audit_events

    if limit < 0:
        raise typer.BadParameter("must be 0 (all) or more", param_hint="--limit")
    query = AuditQuery(
        tenant_id=tenant,
        action=action,
        machine_id=machine,
        caller=caller,
        since=parse_since(since) if since else None,
        limit=limit or None,
    )
    with _session() as store:
        rows = [{k: iso8601(v) for k, v in row.items()} for row in list_audit_events(store.uow(write=False), query)]
    if jsonl:
        for row in rows:
            typer.echo(json.dumps(row, default=str, separators=(",", ":")))
        return
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


# Device packages


def _write(package: dict, out: Path | None) -> None:
    text = json.dumps(package, indent=2)
    if out is None:
        typer.echo(text)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    out.chmod(0o600)
    err.print(f"Wrote {out}")


@package_app.command("onboarding")
@with_database_options
def onboarding_package(
    tenant: Annotated[str | None, typer.Option(help="Tenant id (default: the configured default tenant).")] = None,
    server_url: Annotated[str | None, typer.Option(help="URL devices reach the server on.")] = None,
    out: Annotated[Path | None, typer.Option(help="Write the package here (default: stdout).")] = None,
    valid_days: Annotated[float | None, typer.Option(help="Days devices may enrol with it (default: the setting, 30).")] = None,
    replace_sensors: Annotated[
        bool,
        typer.Option(
            "--replace-sensors",
            help="Let devices enrol over a sensor that is still active without its proof (e.g. a simulated fleet "
            "that keeps no state). Anyone holding this package can then take over a machine's identity.",
        ),
    ] = False,
) -> None:
    """Issue an onboarding package: devices use it to enrol until it expires or is revoked."""
    from bulwark.service.sensors import issue_onboarding_package

    with _session() as store:
        settings = store.settings
        url = server_url or settings.public_base_url or f"http://{settings.host}:{settings.port}"
        package = issue_onboarding_package(
            tenant or settings.default_tenant_id,
            url,
            None,
            store.uow(),
            store.clock,
            valid_for=timedelta(days=valid_days or settings.onboarding_package_valid_days),
            replaces_sensors=replace_sensors,
        )
    _write(package, out)


@package_app.command("revoke")
@with_database_options
def revoke_package(
    package_id: Annotated[str, typer.Argument(help="The packageId written in the onboarding package.")],
    tenant: Annotated[str | None, typer.Option(help="Tenant id (default: the configured default tenant).")] = None,
) -> None:
    """Revoke an onboarding package: no device can enrol with it any more (enrolled devices keep running)."""
    from bulwark.service.sensors import revoke_onboarding_package

    with _session() as store:
        revoke_onboarding_package(tenant or store.settings.default_tenant_id, package_id, store.uow(), store.clock)
    err.print(f"Revoked onboarding package {package_id}")


@package_app.command("offboarding")
@with_database_options
def offboarding_package(
    tenant: Annotated[str | None, typer.Option(help="Tenant id (default: the configured default tenant).")] = None,
    out: Annotated[Path | None, typer.Option(help="Write the package here (default: stdout).")] = None,
) -> None:
    """Issue an offboarding package (valid for BULWARK_OFFBOARDING_PACKAGE_VALID_DAYS, seven by default)."""
    from bulwark.service.sensors import issue_offboarding_package

    with _session() as store:
        settings = store.settings
        valid_for = timedelta(days=settings.offboarding_package_valid_days)
        package = issue_offboarding_package(tenant or settings.default_tenant_id, valid_for, None, store.uow(), store.clock)
    _write(package, out)
