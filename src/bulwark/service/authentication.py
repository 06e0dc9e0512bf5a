"""Authentication of API calls: bearer tokens verified against Bulwark's keys or a trusted provider.

A service of its own (no HTTP here): the API layer hands it the ``Authorization`` header and gets
the caller back, or ``Unauthorized``.
"""

from __future__ import annotations

import logging
import string
from datetime import datetime, timedelta

from bulwark.auth.hashing import SecretVerifier
from bulwark.auth.keys import KeyRingCache
from bulwark.auth.tokens import ExternalIssuer, InvalidToken, TokenIssuer, TokenVerifier, VerifiedClaims
from bulwark.clock import Clock
from bulwark.domain.access import Permission, Principal, PrincipalKind
from bulwark.domain.control import CONTROL_ROLE
from bulwark.domain.errors import Forbidden, Unauthorized
from bulwark.ratelimit import RateLimiter, RateLimitPolicy, create_rate_limiter
from bulwark.service.identity import PrincipalResolver, TokenService, TtlCache, signing_keys_loader
from bulwark.service.identity.grants import (
    FAILURES_PER_SOURCE,
    FAILURES_PER_USER,
    TOKEN_PER_CLIENT,
    TOKEN_PER_SOURCE,
    TOKEN_PER_USER,
)
from bulwark.service.ports import UnitOfWorkFactory
from bulwark.settings import Settings

log = logging.getLogger("bulwark.auth")

_SAFE = set(string.ascii_letters + string.digits + " .,:;()[]{}'_-/+=@!?<>*#&%$~^|")


VERIFIED_TOKEN_CACHE_SECONDS = 60
MAX_CACHED_CALLERS = 10_000


def _bearer_token(authorization: str | None) -> str | None:
    scheme, _, token = (authorization or "").strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _header_safe(text: str, limit: int = 300) -> str:
    # error_description is a quoted-string; token-derived text must not break out of it.
    return "".join(ch if ch in _SAFE else "?" for ch in text)[:limit]


def build_token_limiter(settings: Settings) -> RateLimiter:
    """The token endpoint's budgets, in Redis when configured (shared by every process), else in memory.

    They apply even when API rate limits are turned off (``rate_limit_enabled``): they guard
    unauthenticated work and sign-in guessing, not fair use. Each one may be set to "off". They fail
    open when Redis is unreachable.
    """
    policy = RateLimitPolicy.parse(
        "off",
        {
            TOKEN_PER_SOURCE: settings.token_rate_limit_per_source,
            TOKEN_PER_CLIENT: settings.token_rate_limit_per_client,
            TOKEN_PER_USER: settings.token_rate_limit_per_user,
            FAILURES_PER_USER: settings.sign_in_failures_per_user,
            FAILURES_PER_SOURCE: settings.sign_in_failures_per_source,
        },
    )
    return create_rate_limiter(
        settings.redis_url,
        policy,
        # Open whatever rate_limit_fail_mode says: while Redis is unreachable, tokens are still
        # issued (refusing them would stop every caller), and the hashing pool's bound, which
        # needs no Redis, still caps what unauthenticated requests cost. The outage is logged.
        fail_mode="open",
        key_prefix=f"{settings.rate_limit_key_prefix}:token",
    )


class Authenticator:
    """Everything tokens need, built once per app: keys, issuer, verifier, principal resolution, grants.

    Building it reads and writes nothing; the server stores the first signing key when it starts
    (``bootstrap.start_runtime``), and keys are loaded on first use.
    """

    def __init__(
        self, settings: Settings, uow_factory: UnitOfWorkFactory, clock: Clock, token_limiter: RateLimiter | None = None
    ) -> None:
        self.settings = settings
        self._uow_factory = uow_factory
        self._clock = clock
        self.keyring = KeyRingCache(signing_keys_loader(settings.signing_key_file, uow_factory), clock)
        # The token endpoint's own budgets (per source, client id and user name, failed sign-ins)
        # and its own hashing pool, so that unauthenticated token requests cannot starve API calls.
        # Real time, not the domain clock: these windows are about wall-clock abuse, and the limit store
        # measures them in real time.
        self.token_limiter = token_limiter or build_token_limiter(settings)
        self.hashing = SecretVerifier(settings.hashing_workers, settings.hashing_queue)
        # Until the server starts and reads the recorded issuer (``use_issuer_base_url``).
        self.use_issuer_base_url(settings.issuer_base_url())
        # Tokens whose signature and claims were checked, so a client reusing its token (as they
        # all do, for an hour) costs one RSA verification a minute rather than one per call. The
        # minute bounds how long a retired key's tokens could still pass, as the key ring's does.
        self._leeway = timedelta(seconds=settings.token_leeway_seconds)
        self._verified: TtlCache[str, VerifiedClaims] = TtlCache(clock, VERIFIED_TOKEN_CACHE_SECONDS)

    def use_issuer_base_url(self, base_url: str) -> None:
        """Issue and verify tokens for ``{base_url}/{tenant}/v2.0`` (the issuer recorded with the data)."""
        settings, clock, uow_factory = self.settings, self._clock, self._uow_factory
        # The caller of each recently seen token, until the first of: the token's verification, its
        # caller's resolution or the token itself expires; one lookup answers a repeated token.
        # Emptied here: callers were resolved for the previous issuer.
        self._callers: dict[str, tuple[datetime, Principal]] = {}
        self.base_url = base_url
        self.issuer = TokenIssuer(self.keyring, self.base_url, clock)
        local_prefix = self.base_url + "/"
        self.resolver = PrincipalResolver(
            uow_factory, clock, settings.auth_cache_seconds, local_issuer=lambda iss: iss.startswith(local_prefix)
        )
        external = [
            ExternalIssuer(
                issuer_url=item.issuer_url,
                audience=item.audience,
                tenant_id=item.tenant_id,
                ca_file=item.ca_file,
                allow_http=item.allow_http,
            )
            for item in settings.external_issuers
        ]
        self.verifier = TokenVerifier(
            self.keyring,
            self.base_url,
            self.resolver.tenant_exists,
            clock,
            settings.token_leeway_seconds,
            external,
        )
        self.tokens = TokenService(
            uow_factory,
            self.issuer,
            clock,
            self.hashing,
            self.token_limiter,
            limiter_blocks=settings.redis_url is not None,
            secret_cache_seconds=settings.client_secret_cache_seconds,
        )

    def close(self) -> None:
        """Stop the hashing pool and release the token limiter's connections."""
        self.hashing.close()
        self.token_limiter.close()

    def authenticate_cached(self, authorization: str | None) -> Principal | None:
        """The caller if this exact token was verified and its caller resolved recently, else None.

        Never blocks, so it can run on the event loop; a miss means: call ``authenticate``.
        """
        if not self.settings.auth_enabled:
            return self.development_principal()
        token = _bearer_token(authorization)
        if not token:
            return None
        now = self._clock.now()
        known = self._callers.get(token)
        if known is not None and now < known[0]:
            return known[1]
        verified = self._verified.peek_until(token)
        if verified is None:
            return None
        claims, verified_until = verified
        token_until = claims.expires_at + self._leeway
        if now >= token_until:
            return None
        resolved = self.resolver.resolve_cached_until(claims)
        if resolved is None:
            return None
        principal, resolved_until = resolved
        if len(self._callers) >= MAX_CACHED_CALLERS:
            self._callers.clear()
        self._callers[token] = (min(verified_until, token_until, resolved_until), principal)
        return principal

    def authenticate(self, authorization: str | None) -> Principal:
        """The caller named by an ``Authorization: Bearer`` header; Unauthorized otherwise.

        Blocking (database, and key fetches for external issuers): call it from a worker thread.
        """
        if not self.settings.auth_enabled:
            return self.development_principal()
        token = _bearer_token(authorization)
        if not token:
            raise Unauthorized(headers={"WWW-Authenticate": 'Bearer realm="bulwark"'})
        try:
            claims = self.verifier.verify(token)
            self._verified.get_or_load(token, lambda: claims)
            return self.resolver.resolve(claims)
        except InvalidToken as error:
            log.info("bearer token refused: %s", error.reason)
            description = _header_safe(error.reason)
            raise Unauthorized(
                headers={"WWW-Authenticate": f'Bearer realm="bulwark", error="invalid_token", error_description="{description}"'}
            ) from None

    def authenticate_control(self, authorization: str | None) -> Principal:
        """A caller of the control API: an application token of Bulwark's own authority holding ``Bulwark.Control``.

        Unlike ``authenticate`` this always verifies the token, even with authentication turned
        off, and refuses external issuers' tokens (403). Blocking: call it from a worker thread.
        """
        token = _bearer_token(authorization)
        if not token:
            raise Unauthorized(headers={"WWW-Authenticate": 'Bearer realm="bulwark"'})
        try:
            claims = self.verifier.verify(token)
            if not claims.issuer.startswith(self.base_url + "/"):
                raise Forbidden(f"The control API accepts only tokens of this server's own authority ({CONTROL_ROLE}).")
            principal = self.resolver.resolve(claims)
        except InvalidToken as error:
            log.info("bearer token refused: %s", error.reason)
            description = _header_safe(error.reason)
            raise Unauthorized(
                headers={"WWW-Authenticate": f'Bearer realm="bulwark", error="invalid_token", error_description="{description}"'}
            ) from None
        if principal.kind is not PrincipalKind.APPLICATION or CONTROL_ROLE not in principal.permissions:
            raise Forbidden(
                f"The control API needs an application token holding the application role {CONTROL_ROLE}; "
                f"{'a user token never qualifies' if principal.is_user else 'this application does not hold it'}."
            )
        return principal

    def development_principal(self) -> Principal:
        """The caller when authentication is turned off: every permission, every device group."""
        return Principal(
            tenant_id=self.settings.default_tenant_id,
            kind=PrincipalKind.USER,
            id="authentication-disabled",
            name=self.settings.default_requestor,
            permissions=frozenset(p.value for p in Permission),
        )
