"""Entra-ID-style access tokens: issuing ours, verifying ours and those of trusted OpenID Connect providers."""

from __future__ import annotations

import base64
import hashlib
import logging
import secrets
import ssl
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any, Literal, NamedTuple

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from bulwark.auth.keys import SIGNING_ALGORITHM, KeyRing, KeyRingCache
from bulwark.clock import Clock

logger = logging.getLogger(__name__)

# Issued tokens carry the App ID URI in aud, as Entra ID does for the scope
# https://api.securitycenter.microsoft.com/.default. Verification also accepts the Defender resource
# application id: Entra ID puts that in aud when a client asks for the scope by application id, and
# in every v2-format token, so both name the same API.
DEFENDER_AUDIENCE = "https://api.securitycenter.microsoft.com"
DEFENDER_APP_ID = "fc780465-2017-40d4-a0c5-307022471b92"
ACCEPTED_AUDIENCES: tuple[str, ...] = (DEFENDER_AUDIENCE, DEFENDER_APP_ID)
TOKEN_LIFETIME_SECONDS = 3600
DEFAULT_LEEWAY_SECONDS = 60
# Tokens are read from a header; anything this long is not one of ours and is refused before parsing.
MAX_TOKEN_LENGTH = 16 * 1024
# Only asymmetric RSA algorithms may ever be allowed: an HMAC algorithm would let a public key
# (which anyone can fetch) serve as the shared secret.
RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
MIN_RSA_KEY_BITS = 2048
# 9999-12-31T23:59:59Z: later (or NaN, which JSON parsing lets through) cannot be a real time.
_LATEST_TIMESTAMP = 253402300799

_SERVICE_PRINCIPAL_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:bulwark:service-principal")

TokenKind = Literal["application", "user"]
KeyRingSource = KeyRing | Callable[[], KeyRing]


class InvalidToken(Exception):
    """A bearer token was refused; `reason` says why in words a person can act on."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SigningKeysUnavailable(InvalidToken):
    """The signing keys of an external issuer could not be fetched, so its tokens cannot be checked."""


class IssuedToken(NamedTuple):
    """A signed access token and its lifetime in seconds (the OAuth `expires_in`)."""

    access_token: str
    expires_in: int


@dataclass(frozen=True)
class VerifiedClaims:
    """Who a verified token speaks for, in Entra ID terms."""

    tenant_id: str
    app_id: str
    object_id: str
    kind: TokenKind
    roles: tuple[str, ...]
    scopes: tuple[str, ...]
    upn: str | None
    name: str | None
    issuer: str
    expires_at: datetime
    token_id: str | None
    raw_claims: Mapping[str, Any] = field(hash=False, repr=False)

    @property
    def permissions(self) -> tuple[str, ...]:
        """Application roles for an application token, delegated scopes for a user token."""
        return self.roles if self.kind == "application" else self.scopes

    @property
    def requestor(self) -> str:
        """The name Defender records as `requestor`: the user's UPN, or the application's display name."""
        if self.kind == "user":
            return self.upn or self.name or self.object_id
        return self.name or self.app_id


def _resolve_keyring(source: KeyRingSource) -> Callable[[], KeyRing]:
    if isinstance(source, KeyRing):
        return lambda: source
    return source


def _normalise_base_url(issuer_base_url: str) -> str:
    base = issuer_base_url.rstrip("/")
    if not base.startswith(("https://", "http://")):
        raise ValueError(f"issuer base URL must be an http(s) URL, got {issuer_base_url!r}")
    return base


def _check_tenant_id(tenant_id: str) -> None:
    if not tenant_id or "/" in tenant_id or any(ch.isspace() for ch in tenant_id):
        raise ValueError(f"tenant id must be a non-empty string without '/' or spaces, got {tenant_id!r}")


def issuer_url(issuer_base_url: str, tenant_id: str) -> str:
    """Return the `iss` of tokens this server issues for a tenant: `{issuer_base_url}/{tenant_id}/v2.0`.

    This is Entra ID's v2 issuer shape (`https://login.microsoftonline.com/{tenant_id}/v2.0`) with
    the server's public base URL in place of the Microsoft host, so discovery sits at
    `{issuer}/.well-known/openid-configuration` where Entra ID clients look for it.
    """
    _check_tenant_id(tenant_id)
    return f"{_normalise_base_url(issuer_base_url)}/{tenant_id}/v2.0"


def openid_configuration(issuer_base_url: str, tenant_id: str) -> dict[str, Any]:
    """Return the OpenID discovery document for a tenant, with Entra ID's endpoint paths.

    Serve it at `{base}/{tenant}/v2.0/.well-known/openid-configuration`; it names the token
    endpoint `{base}/{tenant}/oauth2/v2.0/token` and the JWKS at `{base}/{tenant}/discovery/v2.0/keys`.
    MSAL reads `authorization_endpoint` and `token_endpoint` from it.
    """
    base = _normalise_base_url(issuer_base_url)
    tenant_root = f"{base}/{tenant_id}"
    return {
        "issuer": issuer_url(base, tenant_id),
        "authorization_endpoint": f"{tenant_root}/oauth2/v2.0/authorize",
        "token_endpoint": f"{tenant_root}/oauth2/v2.0/token",
        "jwks_uri": f"{tenant_root}/discovery/v2.0/keys",
        "response_types_supported": ["code", "token"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": [SIGNING_ALGORITHM],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
        "grant_types_supported": ["client_credentials"],
        "scopes_supported": [f"{DEFENDER_AUDIENCE}/.default"],
        "claims_supported": [
            "aud",
            "iss",
            "iat",
            "nbf",
            "exp",
            "tid",
            "appid",
            "azp",
            "oid",
            "sub",
            "roles",
            "scp",
            "upn",
            "preferred_username",
            "name",
            "idtyp",
            "ver",
            "uti",
        ],
    }


class TokenIssuer:
    """Signs Entra-ID-style access tokens with the active key of a key ring."""

    def __init__(
        self,
        keyring: KeyRingSource,
        issuer_base_url: str,
        clock: Clock,
        *,
        lifetime_seconds: int = TOKEN_LIFETIME_SECONDS,
    ) -> None:
        """`keyring` is a KeyRing or a zero-argument callable returning the current one."""
        self._keyring = _resolve_keyring(keyring)
        self._base_url = _normalise_base_url(issuer_base_url)
        self._clock = clock
        self._lifetime = lifetime_seconds

    def issuer_for(self, tenant_id: str) -> str:
        """Return the `iss` of tokens issued for `tenant_id`."""
        return issuer_url(self._base_url, tenant_id)

    def issue_application_token(
        self,
        tenant_id: str,
        app_id: str,
        app_display_name: str,
        roles: Sequence[str],
        *,
        object_id: str | None = None,
    ) -> IssuedToken:
        """Issue an app-only token (client-credentials flow) carrying application `roles`.

        `object_id` is the application's service principal id; by default a stable UUID derived
        from tenant and application, so the same caller always has the same `oid`.
        """
        oid = object_id or str(uuid.uuid5(_SERVICE_PRINCIPAL_NAMESPACE, f"{tenant_id}/{app_id}"))
        claims: dict[str, Any] = {
            "app_displayname": app_display_name,
            "appid": app_id,
            "azp": app_id,
            "idtyp": "app",
            "oid": oid,
            # Entra ID sets sub to the service principal's object id for app-only tokens.
            "sub": oid,
        }
        if roles:
            claims["roles"] = list(roles)
        return self._sign(tenant_id, claims)

    def issue_user_token(
        self,
        tenant_id: str,
        app_id: str,
        user_object_id: str,
        upn: str,
        name: str,
        scopes: Sequence[str],
    ) -> IssuedToken:
        """Issue a delegated token: user `upn` acting through application `app_id` with `scopes`.

        Scopes are short permission names (`Machine.Offboard`), joined by spaces into `scp`.
        """
        for scope in scopes:
            if not scope or any(ch.isspace() for ch in scope):
                raise ValueError(f"scope must be a non-empty word, got {scope!r}")
        claims: dict[str, Any] = {
            "appid": app_id,
            "azp": app_id,
            "idtyp": "user",
            "name": name,
            "oid": user_object_id,
            "preferred_username": upn,
            "scp": " ".join(scopes),
            "sub": _pairwise_subject(tenant_id, app_id, user_object_id),
            "upn": upn,
        }
        return self._sign(tenant_id, claims)

    def _sign(self, tenant_id: str, claims: dict[str, Any]) -> IssuedToken:
        issued_at = int(self._clock.now().timestamp())
        token_id = secrets.token_urlsafe(16)
        payload = {
            "aud": DEFENDER_AUDIENCE,
            "iss": self.issuer_for(tenant_id),
            "iat": issued_at,
            "nbf": issued_at,
            "exp": issued_at + self._lifetime,
            **claims,
            "tid": tenant_id,
            "uti": token_id,
            "jti": token_id,
            "ver": "2.0",
        }
        key = self._keyring().signing_key
        token = jwt.encode(
            payload,
            key.private_key,
            algorithm=SIGNING_ALGORITHM,
            headers={"kid": key.kid, "typ": "JWT"},
        )
        return IssuedToken(access_token=token, expires_in=self._lifetime)


def _pairwise_subject(tenant_id: str, app_id: str, object_id: str) -> str:
    # Entra ID gives each application its own subject for the same user, so sub is not oid.
    digest = hashlib.sha256(f"{tenant_id}|{app_id}|{object_id}".encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


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


def _timestamp(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= _LATEST_TIMESTAMP:
        raise InvalidToken(f"claim {name} must be a number of seconds since the epoch")
    return float(value)


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


class TokenVerifier:
    """Checks bearer tokens from this server or a trusted external issuer and says who they speak for.

    Verification is synchronous; for an external issuer the first token (and a stale cache) costs
    an HTTP fetch, so async callers should run `verify` in a worker thread.
    """

    def __init__(
        self,
        keyring_provider: KeyRingSource,
        issuer_base_url: str,
        known_tenant: Callable[[str], bool],
        clock: Clock,
        leeway_seconds: float = DEFAULT_LEEWAY_SECONDS,
        external_issuers: Sequence[ExternalIssuer] = (),
        *,
        audiences: Sequence[str] = ACCEPTED_AUDIENCES,
        algorithms: Sequence[str] = (SIGNING_ALGORITHM,),
    ) -> None:
        """`keyring_provider` is a KeyRing, a KeyRingCache, or a cheap callable returning the current ring.

        `known_tenant(tenant_id)` says whether a tenant exists; tokens of other tenants are refused.
        """
        self._keyring = _resolve_keyring(keyring_provider)
        # A shared key store may have rotated in another process; a cache can look again for a new kid.
        self._refresh_keyring = keyring_provider.refresh_for if isinstance(keyring_provider, KeyRingCache) else None
        self._base_url = _normalise_base_url(issuer_base_url)
        self._known_tenant = known_tenant
        self._clock = clock
        self._leeway = float(leeway_seconds)
        self._audiences = tuple(audiences)
        self._algorithms = _check_algorithms(algorithms)
        self._external: dict[str, tuple[ExternalIssuer, OidcKeySource]] = {}
        for issuer in external_issuers:
            if self._local_tenant(issuer.issuer_url) is not None:
                raise ValueError(f"external issuer {issuer.issuer_url} collides with this server's issuers")
            self._external[issuer.issuer_url] = (issuer, OidcKeySource(issuer, clock))

    def _local_tenant(self, iss: str) -> str | None:
        prefix, suffix = self._base_url + "/", "/v2.0"
        if not (iss.startswith(prefix) and iss.endswith(suffix)):
            return None
        tenant = iss[len(prefix) : -len(suffix)]
        return tenant if tenant and "/" not in tenant else None

    def verify(self, token: str) -> VerifiedClaims:
        """Return the claims of a valid token; raise InvalidToken saying why otherwise."""
        if not isinstance(token, str) or not token:
            raise InvalidToken("no bearer token was given")
        if len(token) > MAX_TOKEN_LENGTH:
            raise InvalidToken(f"token is longer than {MAX_TOKEN_LENGTH} characters")
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as error:
            raise InvalidToken(f"token is not a well-formed JWT: {error}") from None
        # Values read before the signature is checked are quoted with !r in reasons, since they
        # may carry control characters meant for whoever reads the logs.
        iss = unverified.get("iss")
        if not isinstance(iss, str) or not iss:
            raise InvalidToken("token has no issuer (iss) claim")

        local_tenant = self._local_tenant(iss)
        external: ExternalIssuer | None = None
        if local_tenant is not None:
            algorithms, audiences = self._algorithms, self._audiences
        elif iss in self._external:
            external, key_source = self._external[iss]
            algorithms, audiences = tuple(external.algorithms), external.audiences
        else:
            raise InvalidToken(f"issuer {iss!r} is not trusted")

        alg = header.get("alg")
        if alg not in algorithms:
            raise InvalidToken(f"signing algorithm {alg!r} is not allowed; expected {' or '.join(algorithms)}")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise InvalidToken("token header names no signing key (kid)")
        if external is None:
            key = self._keyring().verification_key(kid)
            if key is None and self._refresh_keyring is not None:
                key = self._refresh_keyring(kid).verification_key(kid)
        else:
            key = key_source.signing_key(kid)
        if key is None:
            raise InvalidToken(f"signing key {kid!r} is not known to issuer {iss}")

        claims = self._decode(token, key, algorithms, audiences, iss)
        self._check_times(claims)
        tenant_id = self._tenant_of(claims, local_tenant, external)
        if not self._known_tenant(tenant_id):
            raise InvalidToken(f"tenant {tenant_id} is not known")
        return _to_verified_claims(claims, tenant_id, iss)

    def _decode(
        self,
        token: str,
        key: rsa.RSAPublicKey,
        algorithms: Sequence[str],
        audiences: Sequence[str],
        iss: str,
    ) -> dict[str, Any]:
        try:
            return jwt.decode(
                token,
                key,
                # Pinned by configuration, never taken from the token header (RFC 8725, section 2.1).
                algorithms=list(algorithms),
                audience=list(audiences),
                issuer=iss,
                options={
                    # Times are checked against the injected clock instead, in _check_times.
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "require": ["exp", "aud", "iss"],
                },
            )
        except jwt.InvalidSignatureError:
            raise InvalidToken("token signature does not verify") from None
        except jwt.InvalidAudienceError:
            raise InvalidToken(f"token audience is not accepted; expected {' or '.join(audiences)}") from None
        except jwt.MissingRequiredClaimError as error:
            raise InvalidToken(f"token has no {error.claim} claim") from None
        except jwt.PyJWTError as error:
            raise InvalidToken(f"token is not valid: {error}") from None

    def _check_times(self, claims: Mapping[str, Any]) -> None:
        now = self._clock.now().timestamp()
        expires = _timestamp(claims, "exp")
        if expires is None:
            raise InvalidToken("token has no exp claim")
        if expires <= now - self._leeway:
            raise InvalidToken(f"token expired at {_iso(expires)}")
        not_before = _timestamp(claims, "nbf")
        if not_before is not None and not_before > now + self._leeway:
            raise InvalidToken(f"token is not valid before {_iso(not_before)}")
        issued = _timestamp(claims, "iat")
        if issued is not None and issued > now + self._leeway:
            raise InvalidToken(f"token claims to be issued in the future, at {_iso(issued)}")

    @staticmethod
    def _tenant_of(claims: Mapping[str, Any], local_tenant: str | None, external: ExternalIssuer | None) -> str:
        tid = claims.get("tid")
        if local_tenant is not None:
            if tid != local_tenant:
                raise InvalidToken("token tenant (tid) does not match its issuer")
            return local_tenant
        if external is not None and external.tenant_id:
            return external.tenant_id
        if not isinstance(tid, str) or not tid:
            raise InvalidToken("token names no tenant (tid)")
        return tid


def _string_list(claims: Mapping[str, Any], name: str) -> tuple[str, ...]:
    value = claims.get(name)
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(value.split())
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return tuple(value)
    raise InvalidToken(f"claim {name} must be a string or a list of strings")


def _first_string(claims: Mapping[str, Any], *names: str) -> str | None:
    for name in names:
        value = claims.get(name)
        if isinstance(value, str) and value:
            return value
    return None


def _to_verified_claims(claims: dict[str, Any], tenant_id: str, issuer: str) -> VerifiedClaims:
    # azp/appid are Entra ID's (v2/v1) names for the client; client_id is RFC 9068's.
    app_id = _first_string(claims, "azp", "appid", "client_id")
    if app_id is None:
        raise InvalidToken("token names no client application (azp or appid)")
    object_id = _first_string(claims, "oid", "sub")
    if object_id is None:
        raise InvalidToken("token names no subject (oid or sub)")
    roles = _string_list(claims, "roles")
    # scp is Entra ID's delegated-permission claim; scope is what other providers call it.
    scopes = _string_list(claims, "scp") if "scp" in claims else _string_list(claims, "scope")
    upn = _first_string(claims, "upn", "preferred_username")

    idtyp = claims.get("idtyp")
    kind: TokenKind
    if idtyp == "app":
        kind = "application"
    elif idtyp == "user":
        kind = "user"
    elif idtyp is not None:
        raise InvalidToken(f"token identity type {idtyp!r} is not app or user")
    elif "scp" in claims or upn is not None:
        kind = "user"
    else:
        kind = "application"

    name = _first_string(claims, "app_displayname" if kind == "application" else "name")
    return VerifiedClaims(
        tenant_id=tenant_id,
        app_id=app_id,
        object_id=object_id,
        kind=kind,
        roles=roles,
        scopes=scopes,
        upn=upn if kind == "user" else None,
        name=name,
        issuer=issuer,
        expires_at=datetime.fromtimestamp(float(claims["exp"]), UTC),
        token_id=_first_string(claims, "uti", "jti"),
        raw_claims=MappingProxyType(claims),
    )
