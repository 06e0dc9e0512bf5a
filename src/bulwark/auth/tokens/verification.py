"""Checking bearer tokens of this server or a trusted external issuer, and reading who they speak for."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from bulwark.auth.keys import SIGNING_ALGORITHM, KeyRingCache
from bulwark.auth.tokens.claims import (
    _LATEST_TIMESTAMP,
    ACCEPTED_AUDIENCES,
    DEFAULT_LEEWAY_SECONDS,
    MAX_TOKEN_LENGTH,
    InvalidToken,
    KeyRingSource,
    TokenKind,
    VerifiedClaims,
    _normalise_base_url,
    _resolve_keyring,
)
from bulwark.auth.tokens.external import ExternalIssuer, OidcKeySource, _check_algorithms
from bulwark.clock import Clock


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


def _token_kind(claims: Mapping[str, Any], roles: tuple[str, ...]) -> TokenKind:
    """Whether the token speaks for an application or a user; refused when it does not say clearly.

    ``idtyp`` (Entra ID's optional claim; every token of this server has it) decides when present.
    Without it: Entra ID's ``scp`` only ever appears in delegated (user) tokens; otherwise roles
    without a ``scope`` mean an application, a ``scope`` without roles means a user. A token with
    neither, or with roles and a generic ``scope``, could be either: it is refused rather than
    treated as an application free of device-group scoping. A name claim (``upn``) decides nothing.
    """
    idtyp = claims.get("idtyp")
    if idtyp == "app":
        return "application"
    if idtyp == "user":
        return "user"
    if idtyp is not None:
        raise InvalidToken(f"token identity type {idtyp!r} is not app or user")
    if "scp" in claims:
        return "user"
    has_scope = bool(_string_list(claims, "scope"))
    if roles and not has_scope:
        return "application"
    if has_scope and not roles:
        return "user"
    raise InvalidToken(
        "token does not say whether it is an application's or a user's: no idtyp, and "
        + ("both roles and scope" if roles else "neither roles nor scp/scope")
    )


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

    kind = _token_kind(claims, roles)
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
