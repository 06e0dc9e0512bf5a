"""Trusted external OpenID Connect issuers and their signing keys (discovery, JWKS, caching)."""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from bulwark.auth.keys import SIGNING_ALGORITHM
from bulwark.auth.tokens.claims import MIN_RSA_KEY_BITS, RSA_ALGORITHMS, SigningKeysUnavailable
from bulwark.clock import Clock

logger = logging.getLogger(__name__)


def _check_algorithms(algorithms: Iterable[str]) -> tuple[str, ...]:
    allowed = tuple(algorithms)
    if not allowed:
        raise ValueError("at least one signing algorithm must be allowed")
    refused = [alg for alg in allowed if alg not in RSA_ALGORITHMS]
    if refused:
        raise ValueError(f"only RSA signing algorithms may be allowed, not {', '.join(refused)}")
    return allowed


@dataclass(frozen=True)
class ExternalIssuer:
    """A trusted OpenID Connect provider whose access tokens Bulwark accepts.

    Keys come from `{issuer_url}/.well-known/openid-configuration` -> `jwks_uri` and are cached for
    `jwks_cache_seconds`; a token with an unknown `kid` triggers a refetch, at most once per
    `min_refresh_interval_seconds`. While the provider cannot be reached, expired keys keep
    working for `stale_keys_grace_seconds` more. `tenant_id`, when set, is the Bulwark tenant every token of this
    issuer belongs to; otherwise the token's `tid` claim names it.
    """

    issuer_url: str
    audience: str | Sequence[str]
    tenant_id: str | None = None
    algorithms: Sequence[str] = (SIGNING_ALGORITHM,)
    jwks_cache_seconds: float = 3600.0
    min_refresh_interval_seconds: float = 60.0
    stale_keys_grace_seconds: float = 3600.0
    timeout_seconds: float = 5.0
    ca_file: str | None = None
    allow_http: bool = False

    def __post_init__(self) -> None:
        audiences = (self.audience,) if isinstance(self.audience, str) else tuple(self.audience)
        if not audiences or not all(audiences):
            raise ValueError("an external issuer needs at least one accepted audience")
        object.__setattr__(self, "audience", audiences)
        object.__setattr__(self, "algorithms", _check_algorithms(self.algorithms))
        _require_secure_url(self.issuer_url, self.allow_http, "issuer URL")

    @property
    def audiences(self) -> tuple[str, ...]:
        """The accepted `aud` values."""
        return tuple(self.audience)

    @property
    def discovery_url(self) -> str:
        """Where the provider's OpenID configuration is published."""
        return self.issuer_url.rstrip("/") + "/.well-known/openid-configuration"


def _require_secure_url(url: str, allow_http: bool, what: str) -> None:
    if url.startswith("https://") or (allow_http and url.startswith("http://")):
        return
    raise ValueError(f"{what} must use https, got {url!r}")


class OidcKeySource:
    """The public signing keys of one external issuer, fetched through discovery and cached."""

    def __init__(self, issuer: ExternalIssuer, clock: Clock) -> None:
        self._issuer = issuer
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: dict[str, rsa.RSAPublicKey] | None = None
        self._expires_at: datetime | None = None
        self._last_attempt: datetime | None = None
        self._last_error = "not fetched yet"
        self._tls: ssl.SSLContext | bool = ssl.create_default_context(cafile=issuer.ca_file) if issuer.ca_file else True

    def signing_key(self, kid: str) -> rsa.RSAPublicKey | None:
        """Return the provider's key `kid`, refetching when the cache is stale or lacks it."""
        with self._lock:
            now = self._clock.now()
            stale = self._keys is None or self._expires_at is None or now >= self._expires_at
            if stale and self._may_fetch(now):
                self._refresh(now)
            if self._keys is None or self._past_grace(now):
                raise SigningKeysUnavailable(
                    f"signing keys of issuer {self._issuer.issuer_url} could not be fetched: {self._last_error}"
                )
            key = self._keys.get(kid)
            if key is None and self._may_fetch(now):
                # A provider rotates by publishing a new key; look again, but not on every bad token.
                self._refresh(now)
                key = self._keys.get(kid)
            return key

    def _past_grace(self, now: datetime) -> bool:
        # Keys the provider could not confirm are trusted a while longer, not for ever: a key it
        # withdrew while unreachable must stop working at some point.
        grace = timedelta(seconds=self._issuer.stale_keys_grace_seconds)
        return self._expires_at is not None and now >= self._expires_at + grace

    def _may_fetch(self, now: datetime) -> bool:
        if self._last_attempt is None:
            return True
        return now - self._last_attempt >= timedelta(seconds=self._issuer.min_refresh_interval_seconds)

    def _refresh(self, now: datetime) -> None:
        self._last_attempt = now
        try:
            keys = self._fetch_keys()
        except (httpx.HTTPError, ValueError) as error:
            self._last_error = str(error) or type(error).__name__
            logger.warning("could not fetch signing keys of %s: %s", self._issuer.issuer_url, self._last_error)
            return
        self._keys = keys
        self._expires_at = now + timedelta(seconds=self._issuer.jwks_cache_seconds)

    def _fetch_keys(self) -> dict[str, rsa.RSAPublicKey]:
        discovery = self._get_json(self._issuer.discovery_url)
        if discovery.get("issuer") != self._issuer.issuer_url:
            # OpenID Connect Discovery 1.0, section 4.3: the document must name the issuer it was asked for.
            raise ValueError(f"discovery document names issuer {discovery.get('issuer')!r}, not {self._issuer.issuer_url!r}")
        jwks_uri = discovery.get("jwks_uri")
        if not isinstance(jwks_uri, str):
            raise ValueError("discovery document has no jwks_uri")
        _require_secure_url(jwks_uri, self._issuer.allow_http, "jwks_uri")
        return _parse_jwks(self._get_json(jwks_uri), self._issuer.algorithms)

    def _get_json(self, url: str) -> dict[str, Any]:
        response = httpx.get(url, timeout=self._issuer.timeout_seconds, verify=self._tls, follow_redirects=False)
        response.raise_for_status()
        document = response.json()
        if not isinstance(document, dict):
            raise ValueError(f"{url} did not return a JSON object")
        return document


def _parse_jwks(document: Mapping[str, Any], algorithms: Sequence[str]) -> dict[str, rsa.RSAPublicKey]:
    entries = document.get("keys")
    if not isinstance(entries, list):
        raise ValueError("JWKS document has no keys list")
    keys: dict[str, rsa.RSAPublicKey] = {}
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("kty") != "RSA":
            continue
        kid = entry.get("kid")
        if not isinstance(kid, str) or entry.get("use", "sig") != "sig":
            continue
        if entry.get("alg") is not None and entry["alg"] not in algorithms:
            continue
        try:
            loaded = RSAAlgorithm.from_jwk(entry)
        except (jwt.PyJWTError, ValueError, TypeError, KeyError):
            logger.debug("skipping unreadable JWK %s", kid)
            continue
        public = loaded.public_key() if isinstance(loaded, rsa.RSAPrivateKey) else loaded
        if public.key_size < MIN_RSA_KEY_BITS:
            logger.debug("skipping JWK %s: %d-bit RSA is too weak", kid, public.key_size)
            continue
        keys[kid] = public
    return keys
