"""The database schema as SQLAlchemy Core tables (migrations in store/migrations mirror it)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.types import TypeDecorator

from bulwark.store.odata_sql import fold_case

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UtcDateTime(TypeDecorator):
    """Timestamps stored as naive UTC, handed back timezone-aware, identically on every database."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are ambiguous; pass a timezone-aware UTC datetime")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


tenants = Table(
    "tenants",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
)

device_groups = Table(
    "device_groups",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("tenant_id", String(36), ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("description", Text, nullable=True),
    UniqueConstraint("tenant_id", "name", name="uq_device_groups_tenant_name"),
)

machines = Table(
    "machines",
    metadata,
    # Ids are stored lowercase (normalized on the way in), which OData equality relies on.
    Column("id", String(40), primary_key=True, info={"stored_lowercase": True}),
    Column("tenant_id", String(36), ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("computer_dns_name", String(255), nullable=False),
    Column("first_seen", UtcDateTime, nullable=False),
    Column("last_seen", UtcDateTime, nullable=False),
    Column("os_platform", String(64), nullable=False),
    Column("os_processor", String(32), nullable=True),
    Column("version", String(32), nullable=True),
    Column("os_build", BigInteger, nullable=True),
    Column("last_ip_address", String(64), nullable=True),
    Column("last_external_ip_address", String(64), nullable=True),
    Column("agent_version", String(64), nullable=True),
    Column("health_status", String(64), nullable=False),
    Column("device_value", String(16), nullable=False),
    Column("rbac_group_id", Integer, ForeignKey("device_groups.id", ondelete="SET NULL"), nullable=True),
    Column("risk_score", String(16), nullable=False),
    Column("exposure_level", String(16), nullable=False),
    Column("is_aad_joined", Boolean, nullable=False),
    Column("aad_device_id", String(36), nullable=True),
    Column("onboarding_status", String(32), nullable=False),
    Column("os_architecture", String(16), nullable=True),
    Column("ip_addresses", JSON, nullable=False),
    Column("managed_by", String(64), nullable=True),
    Column("managed_by_status", String(64), nullable=True),
    Column("is_potential_duplication", Boolean, nullable=False),
    Column("is_excluded", Boolean, nullable=False),
    Column("offboarded_at", UtcDateTime, nullable=True),
    Index("ix_machines_tenant_dns", "tenant_id", "computer_dns_name"),
    Index("ix_machines_tenant_last_seen", "tenant_id", "last_seen"),
    Index("ix_machines_tenant_group", "tenant_id", "rbac_group_id"),
    Index("ix_machines_tenant_health", "tenant_id", "health_status"),
    Index("ix_machines_tenant_platform", "tenant_id", "os_platform"),
)
# Case-insensitive DNS-name lookups and startswith filters compare fold_case(computer_dns_name);
# this index on exactly that expression serves them (migration 0004 writes it per dialect).
Index("ix_machines_tenant_dns_folded", machines.c.tenant_id, fold_case(machines.c.computer_dns_name))

# Tags live in their own table so that `machineTags/any(...)` filters compile to an indexed EXISTS.
machine_tags = Table(
    "machine_tags",
    metadata,
    Column("machine_id", String(40), ForeignKey("machines.id", ondelete="CASCADE"), primary_key=True),
    Column("tag", String(200), primary_key=True),
    Index("ix_machine_tags_tag", "tag"),
)

# The statuses of an active action (the one-active-action index's condition).
ACTIVE_ACTION = "status IN ('Pending', 'InProgress')"

machine_actions = Table(
    "machine_actions",
    metadata,
    Column("id", String(36), primary_key=True, info={"stored_lowercase": True}),
    Column("tenant_id", String(36), ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column(
        "machine_id",
        String(40),
        ForeignKey("machines.id", ondelete="CASCADE"),
        nullable=False,
        info={"stored_lowercase": True},
    ),
    Column("type", String(40), nullable=False),
    Column("title", String(400), nullable=True),
    Column("requestor", String(320), nullable=False),
    Column("requestor_id", String(64), nullable=True),
    Column("requestor_comment", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("computer_dns_name", String(255), nullable=True),
    Column("creation_date_time_utc", UtcDateTime, nullable=False),
    Column("last_update_date_time_utc", UtcDateTime, nullable=False),
    Column("cancellation_requestor", String(320), nullable=True),
    Column("cancellation_comment", Text, nullable=True),
    Column("cancellation_date_time_utc", UtcDateTime, nullable=True),
    Column("error_h_result", Integer, nullable=False, server_default=text("0")),
    Column("scope", String(40), nullable=True),
    Column("external_id", String(400), nullable=True),
    Column("request_source", String(40), nullable=False),
    Column("related_file_info", JSON, nullable=True),
    Column("commands", JSON, nullable=False),
    Column("troubleshoot_info", JSON, nullable=True),
    Index("ix_machine_actions_tenant_created", "tenant_id", "creation_date_time_utc", "id"),
    Index("ix_machine_actions_machine_created", "machine_id", "creation_date_time_utc"),
    Index("ix_machine_actions_tenant_status", "tenant_id", "status", "creation_date_time_utc"),
    # At most one active action of a type per machine, enforced by the database itself so that
    # concurrent requests (threads, processes or hosts) cannot create duplicates.
    Index(
        "uq_machine_actions_one_active",
        "machine_id",
        "type",
        unique=True,
        sqlite_where=text(ACTIVE_ACTION),
        postgresql_where=text(ACTIVE_ACTION),
    ),
)

# Append-only record of who asked for what, and what came of it.
audit_events = Table(
    "audit_events",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("occurred_at", UtcDateTime, nullable=False),
    Column("tenant_id", String(36), nullable=True),
    Column("actor_kind", String(16), nullable=True),
    Column("actor_id", String(64), nullable=True),
    Column("actor_name", String(320), nullable=True),
    Column("action", String(80), nullable=False),
    Column("machine_id", String(64), nullable=True),
    Column("machine_action_id", String(36), nullable=True),
    Column("outcome_status", Integer, nullable=False),
    Column("outcome_code", String(64), nullable=True),
    Column("comment", Text, nullable=True),
    Column("request_id", String(64), nullable=True),
    Column("client_ip", String(64), nullable=True),
    Column("details", JSON, nullable=True),
    Index("ix_audit_events_tenant_time", "tenant_id", "occurred_at"),
)

# Onboarding packages: each download mints a secret that any device of the tenant may use once to
# enrol; only its hash is kept.
onboarding_packages = Table(
    "onboarding_packages",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("tenant_id", String(36), ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("created_by", String(320), nullable=True),
    Column("revoked_at", UtcDateTime, nullable=True),
    # Migration 0005: packages expire (NULL: issued before expiries, never expire), and only a
    # package an operator issued for it may enrol a device over a sensor that is still active.
    Column("expires_at", UtcDateTime, nullable=True),
    Column("replaces_sensors", Boolean, nullable=False, server_default=false()),
)

# One Ed25519 key pair per tenant signs offboarding packages; devices learn the public half from
# their onboarding package and verify offboarding packages offline.
package_signing_keys = Table(
    "package_signing_keys",
    metadata,
    Column("tenant_id", String(36), ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True),
    Column("private_key", Text, nullable=False),
    Column("public_key", String(64), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
)

# Enrolled sensors: one row per enrolment ("generation") of a machine; a new enrolment supersedes
# the previous credential. Credentials are 256-bit random tokens, stored as their sha256.
sensors = Table(
    "sensors",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("tenant_id", String(36), ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("machine_id", String(40), ForeignKey("machines.id", ondelete="CASCADE"), nullable=False),
    Column("credential_hash", String(64), nullable=False, unique=True),
    Column("generation", Integer, nullable=False),
    Column("enrolled_at", UtcDateTime, nullable=False),
    Column("superseded_at", UtcDateTime, nullable=True),
    # Migration 0005: the sha256 of the re-onboarding proof this enrolment handed its device.
    Column("proof_hash", String(64), nullable=True),
    Index("ix_sensors_machine", "machine_id", "generation"),
)

# --- Identity: signing keys, applications, users and role-based access (migration 0003) ---

_ACTIVE_KEY = "active"

# Token signing keys, shared by every process and host that uses this database.
signing_keys = Table(
    "signing_keys",
    metadata,
    Column("kid", String(64), primary_key=True),
    Column("private_key_pem", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("retired_at", UtcDateTime, nullable=True),
    Column("active", Boolean, nullable=False),
    # One active key at a time, even when several processes generate the first key at once.
    Index(
        "uq_signing_keys_one_active",
        "active",
        unique=True,
        sqlite_where=text(_ACTIVE_KEY),
        postgresql_where=text(_ACTIVE_KEY),
    ),
)

# The token authority's own settings, one value per name, shared by every process (migration 0005):
# "issuer_base_url" is the base of every tenant's issuer, recorded once so that all agree on it.
authority_settings = Table(
    "authority_settings",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

# App registrations: client id, hashed secret, application roles and delegated permissions.
applications = Table(
    "applications",
    metadata,
    Column("client_id", String(36), primary_key=True),
    Column("tenant_id", String(36), ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("display_name", String(200), nullable=False),
    Column("secret_hash", Text, nullable=True),
    Column("roles", JSON, nullable=False),
    Column("delegated_permissions", JSON, nullable=False),
    Column("enabled", Boolean, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    # Where the authorization endpoint may send a signed-in user back (exact match); None: nowhere.
    Column("redirect_uris", JSON, nullable=True),
    # Public clients (migration 0006) may use the password grant without a client secret.
    Column("public_client", Boolean, nullable=False, server_default=false()),
    UniqueConstraint("tenant_id", "display_name", name="uq_applications_tenant_name"),
)

users = Table(
    "users",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("tenant_id", String(36), ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("upn", String(320), nullable=False),
    Column("display_name", String(200), nullable=False),
    Column("password_hash", Text, nullable=True),
    Column("enabled", Boolean, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    # An external provider's account linked to this user (migration 0006): its issuer and its
    # immutable object id (oid), never a changeable name.
    Column("external_issuer", String(400), nullable=True),
    Column("external_object_id", String(64), nullable=True),
    UniqueConstraint("tenant_id", "upn", name="uq_users_tenant_upn"),
    UniqueConstraint("external_issuer", "external_object_id", name="uq_users_external_identity"),
)

# Defender RBAC roles: named sets of capabilities (ViewData, ManageSecuritySettings, ...).
roles = Table(
    "roles",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("tenant_id", String(36), ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("capabilities", JSON, nullable=False),
    UniqueConstraint("tenant_id", "name", name="uq_roles_tenant_name"),
)

user_groups = Table(
    "user_groups",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("tenant_id", String(36), ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(200), nullable=False),
    UniqueConstraint("tenant_id", "name", name="uq_user_groups_tenant_name"),
)

user_group_members = Table(
    "user_group_members",
    metadata,
    Column("user_group_id", Integer, ForeignKey("user_groups.id", ondelete="CASCADE"), primary_key=True),
    Column("user_id", String(36), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Index("ix_user_group_members_user", "user_id"),
)

user_group_roles = Table(
    "user_group_roles",
    metadata,
    Column("user_group_id", Integer, ForeignKey("user_groups.id", ondelete="CASCADE"), primary_key=True),
    Column("role_id", Integer, ForeignKey("roles.id", ondelete="CASCADE"), primary_key=True),
)

# Which user groups may reach a device group; a device group with no rows here is open to all users.
device_group_access = Table(
    "device_group_access",
    metadata,
    Column("device_group_id", Integer, ForeignKey("device_groups.id", ondelete="CASCADE"), primary_key=True),
    Column("user_group_id", Integer, ForeignKey("user_groups.id", ondelete="CASCADE"), primary_key=True),
)


# Authorization codes of the sign-in flow (authorization code with PKCE): kept only as sha256,
# redeemable once, for minutes, by the client and redirect URI they were issued to.
authorization_codes = Table(
    "authorization_codes",
    metadata,
    Column("code_hash", String(64), primary_key=True),
    Column("tenant_id", String(36), nullable=False),
    Column("client_id", String(36), nullable=False),
    Column("user_id", String(36), nullable=False),
    Column("redirect_uri", Text, nullable=False),
    Column("code_challenge", String(128), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("redeemed_at", UtcDateTime, nullable=True),
    Index("ix_authorization_codes_expires_at", "expires_at"),
)

# Web console sessions: the browser holds a random id (stored here as sha256); the user's access
# token and the session's CSRF token never leave the server.
console_sessions = Table(
    "console_sessions",
    metadata,
    Column("id_hash", String(64), primary_key=True),
    Column("tenant_id", String(36), nullable=False),
    Column("user_id", String(36), nullable=False),
    Column("upn", String(320), nullable=False),
    Column("access_token", Text, nullable=False),
    Column("csrf_token", String(64), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Index("ix_console_sessions_expires_at", "expires_at"),
)


# --- The control plane of test servers (only used when the control API is on) ---

# One row (id 1): the clock offset every process applies, and the epoch a reset advances.
control_state = Table(
    "control_state",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("clock_offset_seconds", Float, nullable=False, default=0.0),
    Column("reset_epoch", Integer, nullable=False, default=0),
)

# What a machine's simulated sensor does with its next actions.
control_behaviors = Table(
    "control_behaviors",
    metadata,
    Column("machine_id", String(40), ForeignKey("machines.id", ondelete="CASCADE"), primary_key=True),
    Column("outcome", String(16), nullable=False),
    Column("delay_seconds", Float, nullable=False, default=0.0),
    Column("error_h_result", Integer, nullable=True),
    Column("updated_at", UtcDateTime, nullable=False),
)

# Faults injected into API calls.
control_faults = Table(
    "control_faults",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("operation", String(100), nullable=False),
    Column("status", Integer, nullable=True),
    Column("latency_ms", Integer, nullable=True),
    Column("retry_after_seconds", Integer, nullable=True),
    Column("remaining", Integer, nullable=True),
    Column("probability", Float, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
)

# The most recent API calls (a bounded buffer), so that a test can assert what its playbook sent.
control_requests = Table(
    "control_requests",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("occurred_at", UtcDateTime, nullable=False),
    Column("method", String(10), nullable=False),
    Column("path", String(2048), nullable=False),
    Column("operation", String(100), nullable=True),
    Column("status", Integer, nullable=False),
    Column("caller", JSON, nullable=True),
    Column("body", JSON, nullable=True),
    Index("ix_control_requests_operation", "operation", "id"),
)
