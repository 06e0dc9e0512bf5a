"""Identity use cases: signing keys, app registrations, users and RBAC, token grants, and who a token speaks for."""

from __future__ import annotations

import enum
import secrets
import threading
import uuid
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from bulwark.auth.keys import SigningKey, generate_signing_key, load_signing_key_file
from bulwark.auth.secrets import hash_secret, new_client_secret, verify_secret
from bulwark.auth.tokens import DEFENDER_APP_ID, DEFENDER_AUDIENCE, InvalidToken, IssuedToken, TokenIssuer, VerifiedClaims
from bulwark.clock import Clock
from bulwark.domain.access import Permission, Principal, PrincipalKind
from bulwark.service.ports import UnitOfWork, UnitOfWorkFactory
from bulwark.settings import Settings

DEFENDER_SCOPES = frozenset({f"{DEFENDER_AUDIENCE}/.default", f"{DEFENDER_APP_ID}/.default"})
# MSAL adds these to user sign-ins; they ask for an id token and a refresh token, which Bulwark
# does not issue, so they are accepted and ignored.
OIDC_SCOPES = frozenset({"openid", "profile", "offline_access", "email"})

APPLICATION_PERMISSIONS = frozenset(
    p.value for p in Permission if p not in {Permission.MACHINE_READ, Permission.MACHINE_READWRITE}
)
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


# --- Signing keys ---


def ensure_signing_key(uow: UnitOfWork, clock: Clock) -> None:
    """Generate and store the first signing key if there is none; safe when several processes race."""
    with uow:
        if any(key.active for key in uow.signing_keys.list()):
            return
        uow.signing_keys.add_first(generate_signing_key(clock.now()))
        uow.commit()


def load_signing_keys(uow: UnitOfWork) -> list[SigningKey]:
    """Every stored signing key."""
    with uow:
        return uow.signing_keys.list()


def signing_keys_loader(settings: Settings, uow_factory: UnitOfWorkFactory, clock: Clock) -> Callable[[], list[SigningKey]]:
    """Where token-signing keys come from: the key file when one is configured, else the database.

    With the database, the first start generates the key and later starts (and other hosts) reuse
    it. A key file is read again whenever the key ring reloads (each minute), so replacing the
    file rotates the key; tokens signed by the previous key stop verifying then.
    """
    if settings.signing_key_file is not None:
        path = settings.signing_key_file
        load_signing_key_file(path)  # fail at start, not at the first token
        return lambda: [load_signing_key_file(path)]
    ensure_signing_key(uow_factory(), clock)
    return lambda: load_signing_keys(uow_factory(write=False))


def rotate_signing_key(uow: UnitOfWork, clock: Clock) -> SigningKey:
    """Make a new key the signer; the previous one keeps verifying until it is retired."""
    key = generate_signing_key(clock.now())
    with uow:
        uow.signing_keys.replace_active(key)
        uow.commit()
    return key


def retire_signing_key(uow: UnitOfWork, clock: Clock, kid: str) -> None:
    """Stop a rotated-out key from verifying anything."""
    with uow:
        if not uow.signing_keys.retire(kid, clock.now()):
            raise IdentityError(f"no inactive, unretired signing key {kid} (rotate before retiring the active key)")
        uow.commit()


# --- Administration ---


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
) -> NewCredential:
    """Register an application with a new client secret (returned once) and its permissions."""
    role_names = _check_permissions(roles, APPLICATION_PERMISSIONS, "application")
    scope_names = _check_permissions(delegated_permissions, DELEGATED_PERMISSIONS, "delegated")
    client_id = client_id or str(uuid.uuid4())
    secret = secret or new_client_secret()
    secret_hash = hash_secret(secret)
    with uow:
        if not uow.tenants.exists(tenant_id):
            raise IdentityError(f"tenant {tenant_id} does not exist")
        uow.identity.add_application(
            client_id=client_id,
            tenant_id=tenant_id,
            display_name=display_name,
            secret_hash=secret_hash,
            roles=role_names,
            delegated_permissions=scope_names,
            created_at=clock.now(),
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
    role_names = set(_check_permissions(roles, APPLICATION_PERMISSIONS, "application"))
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
    secret_hash = hash_secret(secret)
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
) -> NewCredential:
    """Create a user who signs in with ``upn`` and a password (generated when not given, returned once)."""
    if "@" not in upn or any(ch.isspace() for ch in upn):
        raise IdentityError(f"a user principal name looks like name@domain, got {upn!r}")
    password = password or new_password()
    password_hash = hash_secret(password)
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


def reset_user_password(uow: UnitOfWork, tenant_id: str, upn: str, password: str | None = None) -> NewCredential:
    """Give a user a new password (generated when not given, returned once)."""
    password = password or new_password()
    password_hash = hash_secret(password)
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


# --- Token grants ---


class TokenRequestError(Exception):
    """A refused token request, in Entra ID's terms: OAuth error, AADSTS code and description."""

    def __init__(self, error: str, aadsts: int, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.aadsts = aadsts
        self.description = f"AADSTS{aadsts}: {description}"
        self.status = status


# Hashing runs Argon2id with 64 MiB of memory; a few at a time keep a burst of token requests
# from exhausting memory while still using several cores.
_HASH_SLOTS = threading.BoundedSemaphore(4)
# Compared against when a client or user does not exist, so that timing does not tell which.
_DUMMY_HASH = hash_secret(secrets.token_urlsafe(16))


def _verify(secret: str, secret_hash: str | None) -> bool:
    with _HASH_SLOTS:
        return verify_secret(secret, secret_hash or _DUMMY_HASH) and secret_hash is not None


def _check_scope(scope: str | None) -> None:
    requested = set((scope or "").split())
    if not requested & DEFENDER_SCOPES or requested - DEFENDER_SCOPES - OIDC_SCOPES:
        raise TokenRequestError(
            "invalid_scope",
            70011,
            f"The provided value for the input parameter 'scope' is not valid. Request {DEFENDER_AUDIENCE}/.default.",
        )


class TokenService:
    """The grants of the token endpoint: client credentials for applications, password for users."""

    def __init__(self, uow_factory: UnitOfWorkFactory, issuer: TokenIssuer) -> None:
        self._uow = uow_factory
        self._issuer = issuer

    def _tenant_and_app(self, uow: UnitOfWork, tenant_id: str, client_id: str | None) -> dict[str, Any] | None:
        if not uow.tenants.exists(tenant_id):
            raise TokenRequestError("invalid_request", 90002, f"Tenant '{tenant_id}' not found.")
        if not client_id:
            raise TokenRequestError(
                "invalid_request", 900144, "The request body must contain the following parameter: 'client_id'."
            )
        app = uow.identity.get_application(client_id)
        return app if app is not None and app["tenant_id"] == tenant_id else None

    @staticmethod
    def _usable(app: dict[str, Any] | None, tenant_id: str, client_id: str) -> dict[str, Any]:
        if app is None:
            raise TokenRequestError(
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory '{tenant_id}'.",
            )
        if not app["enabled"]:
            raise TokenRequestError(
                "unauthorized_client", 7000112, f"Application '{client_id}'({app['display_name']}) is disabled."
            )
        return app

    def client_credentials(
        self, tenant_id: str, client_id: str | None, client_secret: str | None, scope: str | None
    ) -> IssuedToken:
        """An application token carrying the application's roles."""
        with self._uow(write=False) as uow:
            app = self._tenant_and_app(uow, tenant_id, client_id)
        assert client_id
        if not client_secret:
            raise TokenRequestError(
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
                401,
            )
        _check_scope(scope)
        if not _verify(client_secret, app["secret_hash"] if app else None):
            if app is None:
                self._usable(app, tenant_id, client_id)
            raise TokenRequestError(
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value.",
                401,
            )
        app = self._usable(app, tenant_id, client_id)
        return self._issuer.issue_application_token(tenant_id, app["client_id"], app["display_name"], app["roles"])

    def password(
        self,
        tenant_id: str,
        client_id: str | None,
        client_secret: str | None,
        username: str | None,
        password: str | None,
        scope: str | None,
    ) -> IssuedToken:
        """A delegated token for a user signing in through an application (resource-owner password grant)."""
        with self._uow(write=False) as uow:
            app = self._tenant_and_app(uow, tenant_id, client_id)
            user = uow.identity.find_user(tenant_id, username) if username else None
        assert client_id
        app = self._usable(app, tenant_id, client_id)
        if client_secret is not None and not _verify(client_secret, app["secret_hash"]):
            raise TokenRequestError("invalid_client", 7000215, "Invalid client secret provided.", 401)
        if not username or not password:
            raise TokenRequestError(
                "invalid_request", 900144, "The request body must contain the following parameters: 'username' and 'password'."
            )
        _check_scope(scope)
        if not _verify(password, user["password_hash"] if user else None) or user is None:
            raise TokenRequestError("invalid_grant", 50126, "Error validating credentials due to invalid username or password.")
        if not user["enabled"]:
            raise TokenRequestError("invalid_grant", 50057, "The user account is disabled.")
        return self._issuer.issue_user_token(
            tenant_id, app["client_id"], user["id"], user["upn"], user["display_name"], app["delegated_permissions"]
        )


# --- Who a verified token speaks for ---

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    """A small in-process cache whose entries expire after ``ttl_seconds`` of the given clock."""

    def __init__(self, clock: Clock, ttl_seconds: float, max_entries: int = 10_000) -> None:
        self._clock = clock
        self._ttl = ttl_seconds
        self._max = max_entries
        self._entries: dict[K, tuple[datetime, V]] = {}
        self._lock = threading.Lock()

    def peek(self, key: K) -> V | None:
        """The cached value of ``key`` if present and fresh, without loading (never blocks on I/O)."""
        with self._lock:
            hit = self._entries.get(key)
        if hit is not None and (self._clock.now() - hit[0]).total_seconds() < self._ttl:
            return hit[1]
        return None

    def get_or_load(self, key: K, load: Callable[[], V]) -> V:
        """The cached value of ``key``, loaded again once it is older than the time to live."""
        now = self._clock.now()
        with self._lock:
            hit = self._entries.get(key)
        if hit is not None and (now - hit[0]).total_seconds() < self._ttl:
            return hit[1]
        value = load()
        if self._ttl > 0:
            with self._lock:
                if len(self._entries) >= self._max:
                    self._entries.clear()
                self._entries[key] = (now, value)
        return value


class PrincipalResolver:
    """Turns verified claims into a Principal, with one short-lived cache entry per caller.

    Applications: the token's roles are their permissions; the application must exist here
    (tokens of external issuers excepted) and be enabled. Users: the token's scopes are their
    permissions; their roles' capabilities and their user groups' device groups come from the
    directory (external users are matched by UPN). Entries live ``ttl_seconds`` of the clock,
    so a disabled caller is refused within that time on every process.
    """

    def __init__(
        self, uow_factory: UnitOfWorkFactory, clock: Clock, ttl_seconds: float, local_issuer: Callable[[str], bool]
    ) -> None:
        self._uow = uow_factory
        self._is_local = local_issuer
        self._tenants: TtlCache[str, bool] = TtlCache(clock, ttl_seconds)
        self._callers: TtlCache[tuple[str, str, str, str], Principal | str] = TtlCache(clock, ttl_seconds)

    def tenant_exists(self, tenant_id: str) -> bool:
        """Whether the tenant is known (cached)."""

        def load() -> bool:
            with self._uow(write=False) as uow:
                return uow.tenants.exists(tenant_id)

        return self._tenants.get_or_load(tenant_id, load)

    def _key(self, claims: VerifiedClaims, local: bool) -> tuple[str, str, str, str]:
        subject = claims.app_id if claims.kind == "application" else claims.object_id
        return (claims.tenant_id, claims.kind, subject, "local" if local else claims.upn or "")

    def resolve_cached(self, claims: VerifiedClaims) -> Principal | None:
        """The caller if its resolution is cached (no database access), else None."""
        resolved = self._callers.peek(self._key(claims, self._is_local(claims.issuer)))
        if resolved is None or isinstance(resolved, str):
            return None
        return _with_permissions(resolved, claims.permissions)

    def resolve(self, claims: VerifiedClaims) -> Principal:
        """The caller; raise InvalidToken when the application or user is unknown or disabled."""
        local = self._is_local(claims.issuer)
        key = self._key(claims, local)
        resolved = self._callers.get_or_load(key, lambda: self._load(claims, local))
        if isinstance(resolved, str):
            raise InvalidToken(resolved)
        return _with_permissions(resolved, claims.permissions)

    def _load(self, claims: VerifiedClaims, local: bool) -> Principal | str:
        with self._uow(write=False) as uow:
            if claims.kind == "application":
                return self._application(uow, claims, local)
            return self._user(uow, claims, local)

    @staticmethod
    def _application(uow: UnitOfWork, claims: VerifiedClaims, local: bool) -> Principal | str:
        app = uow.identity.get_application(claims.app_id)
        if app is not None and app["tenant_id"] != claims.tenant_id:
            app = None
        if app is None and local:
            return f"application {claims.app_id} does not exist"
        if app is not None and not app["enabled"]:
            return f"application {claims.app_id} is disabled"
        name = app["display_name"] if app else claims.requestor
        return Principal(tenant_id=claims.tenant_id, kind=PrincipalKind.APPLICATION, id=claims.app_id, name=name)

    @staticmethod
    def _user(uow: UnitOfWork, claims: VerifiedClaims, local: bool) -> Principal | str:
        if local:
            user = uow.identity.get_user(claims.object_id)
            if user is None or user["tenant_id"] != claims.tenant_id:
                return f"user {claims.object_id} does not exist"
        else:
            user = uow.identity.find_user(claims.tenant_id, claims.upn) if claims.upn else None
        if user is not None and not user["enabled"]:
            return f"user {user['upn']} is disabled"
        if user is None:
            # An external user Bulwark has no record of holds no role: they see no machine.
            return Principal(
                tenant_id=claims.tenant_id,
                kind=PrincipalKind.USER,
                id=claims.object_id,
                name=claims.requestor,
                device_group_ids=frozenset(),
                include_ungrouped=False,
                can_manage=False,
            )
        capabilities = uow.identity.capabilities_of(user["id"])
        sees = Capability.VIEW_DATA.value in capabilities
        groups = uow.identity.reachable_device_groups(claims.tenant_id, user["id"]) if sees else set()
        return Principal(
            tenant_id=claims.tenant_id,
            kind=PrincipalKind.USER,
            id=user["id"],
            name=user["upn"],
            device_group_ids=frozenset(groups),
            include_ungrouped=sees,
            can_manage=Capability.MANAGE_SECURITY_SETTINGS.value in capabilities,
        )


def _with_permissions(principal: Principal, permissions: Iterable[str]) -> Principal:
    from dataclasses import replace

    return replace(principal, permissions=frozenset(permissions))


# --- Demo identities ---

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

    Secrets are stored hashed, so ``known`` (the credentials written at an earlier start) is
    reused when it still matches; otherwise the demo secrets and passwords are reset.
    """
    known = dict(known or {})
    fresh_secrets: dict[str, str] = {}
    full_id, reader_id = _demo_id(tenant_id, DEMO_FULL_APP), _demo_id(tenant_id, DEMO_READER_APP)
    with uow_factory(write=False) as uow:
        exists = uow.identity.get_application(full_id) is not None
    if not exists:
        for created in (
            create_application(
                uow_factory(),
                clock,
                tenant_id,
                DEMO_FULL_APP,
                client_id=full_id,
                roles=sorted(APPLICATION_PERMISSIONS),
                delegated_permissions=sorted(DELEGATED_PERMISSIONS),
            ),
            create_application(
                uow_factory(),
                clock,
                tenant_id,
                DEMO_READER_APP,
                client_id=reader_id,
                roles=[Permission.MACHINE_READ_ALL.value],
                delegated_permissions=[Permission.MACHINE_READ.value],
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
                uow_factory(), clock, tenant_id, upn, name, user_id=_demo_id(tenant_id, key), password=new_password()
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
        secret = fresh_secrets.get(row["client_id"]) or known_apps.get(row["client_id"])
        if row["client_id"] not in fresh_secrets and (not secret or not verify_secret(secret, row["secret_hash"] or "")):
            secret = reset_application_secret(uow_factory(), tenant_id, row["client_id"]).secret
        app_out.append(
            {
                "name": name,
                "client_id": row["client_id"],
                "client_secret": secret,
                "roles": row["roles"],
                "delegated_permissions": row["delegated_permissions"],
            }
        )
    for upn, row in user_rows.items():
        assert row is not None
        password = fresh_secrets.get(upn) or known_users.get(upn)
        if upn not in fresh_secrets and (not password or not verify_secret(password, row["password_hash"] or "")):
            password = reset_user_password(uow_factory(), tenant_id, upn).secret
        user_out.append({"username": upn, "password": password, "access": descriptions[upn]})
    return {"tenant_id": tenant_id, "applications": app_out, "users": user_out}
