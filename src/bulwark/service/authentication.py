"""Authentication of API calls: bearer tokens verified against Bulwark's keys or a trusted provider.

A service of its own (no HTTP here): the API layer hands it the ``Authorization`` header and gets
the caller back, or ``Unauthorized``.
"""

from __future__ import annotations

import logging
import string
from datetime import timedelta

from bulwark.auth.keys import KeyRingCache
from bulwark.auth.tokens import ExternalIssuer, InvalidToken, TokenIssuer, TokenVerifier, VerifiedClaims
from bulwark.clock import Clock
from bulwark.domain.access import Permission, Principal, PrincipalKind
from bulwark.domain.errors import Unauthorized
from bulwark.service.identity import PrincipalResolver, TokenService, TtlCache, load_signing_keys
from bulwark.service.ports import UnitOfWorkFactory
from bulwark.settings import Settings

log = logging.getLogger("bulwark.auth")

_SAFE = set(string.ascii_letters + string.digits + " .,:;()[]{}'_-/+=@!?<>*#&%$~^|")


VERIFIED_TOKEN_CACHE_SECONDS = 60


def _bearer_token(authorization: str | None) -> str | None:
    scheme, _, token = (authorization or "").strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _header_safe(text: str, limit: int = 300) -> str:
    # error_description is a quoted-string; token-derived text must not break out of it.
    return "".join(ch if ch in _SAFE else "?" for ch in text)[:limit]


class Authenticator:
    """Everything tokens need, built once per app: keys, issuer, verifier, principal resolution, grants.

    Building it reads and writes nothing; the server stores the first signing key when it starts
    (``bootstrap.start_runtime``), and keys are loaded on first use.
    """

    def __init__(self, settings: Settings, uow_factory: UnitOfWorkFactory, clock: Clock) -> None:
        self.settings = settings
        self._uow_factory = uow_factory
        self._clock = clock
        self.keyring = KeyRingCache(lambda: load_signing_keys(uow_factory(write=False)), clock)
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
        self.tokens = TokenService(uow_factory, self.issuer)

    def authenticate_cached(self, authorization: str | None) -> Principal | None:
        """The caller if this exact token was verified and its caller resolved recently, else None.

        Never blocks, so it can run on the event loop; a miss means: call ``authenticate``.
        """
        if not self.settings.auth_enabled:
            return self.development_principal()
        token = _bearer_token(authorization)
        claims = self._verified.peek(token) if token else None
        if claims is None or self._clock.now() >= claims.expires_at + self._leeway:
            return None
        return self.resolver.resolve_cached(claims)

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

    def development_principal(self) -> Principal:
        """The caller when authentication is turned off: every permission, every device group."""
        return Principal(
            tenant_id=self.settings.default_tenant_id,
            kind=PrincipalKind.USER,
            id="authentication-disabled",
            name=self.settings.default_requestor,
            permissions=frozenset(p.value for p in Permission),
        )
