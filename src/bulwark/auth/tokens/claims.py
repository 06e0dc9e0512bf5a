"""What Bulwark's access tokens are: audiences, limits, issuer URLs, discovery, and the verified claims."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, NamedTuple

from bulwark.auth.keys import SIGNING_ALGORITHM, KeyRing

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
