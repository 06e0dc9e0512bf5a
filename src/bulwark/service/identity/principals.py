"""Who a verified token speaks for: claims to a Principal, with a short-lived per-caller cache."""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Iterable
from datetime import datetime, timedelta
from typing import Generic, TypeVar

from bulwark.auth.tokens import InvalidToken, VerifiedClaims
from bulwark.clock import Clock
from bulwark.domain.access import Principal, PrincipalKind
from bulwark.service.identity.directory import Capability
from bulwark.service.ports import UnitOfWork, UnitOfWorkFactory

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
        found = self.peek_until(key)
        return None if found is None else found[0]

    def peek_until(self, key: K) -> tuple[V, datetime] | None:
        """The cached value of ``key`` if present and fresh, and the moment it stops being fresh."""
        with self._lock:
            hit = self._entries.get(key)
        if hit is None:
            return None
        until = hit[0] + timedelta(seconds=self._ttl)
        # The same test as ``get_or_load`` makes: fresh while younger than the time to live.
        if (self._clock.now() - hit[0]).total_seconds() < self._ttl:
            return hit[1], until
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
    directory (external users are matched by their issuer and immutable object id, as linked by
    ``link_external_user``). Entries live ``ttl_seconds`` of the clock,
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
        return (claims.tenant_id, claims.kind, subject, "local" if local else claims.issuer)

    def resolve_cached(self, claims: VerifiedClaims) -> Principal | None:
        """The caller if its resolution is cached (no database access), else None."""
        found = self.resolve_cached_until(claims)
        return None if found is None else found[0]

    def resolve_cached_until(self, claims: VerifiedClaims) -> tuple[Principal, datetime] | None:
        """The caller if its resolution is cached, and the moment that resolution must be made again."""
        found = self._callers.peek_until(self._key(claims, self._is_local(claims.issuer)))
        if found is None:
            return None
        resolved, until = found
        if isinstance(resolved, str):
            return None
        return _with_permissions(resolved, claims.permissions), until

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
            # By the provider's immutable object id, never by a name the provider lets change
            # (upn, preferred_username): a renamed or recycled account must not inherit roles.
            user = uow.identity.find_external_user(claims.tenant_id, claims.issuer, claims.object_id)
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
