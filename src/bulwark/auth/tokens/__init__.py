"""Entra-ID-style access tokens: issuing ours, verifying ours and those of trusted OpenID Connect providers.

- ``claims``: constants, issuer URLs, discovery document, ``VerifiedClaims`` and ``InvalidToken``.
- ``issuing``: ``TokenIssuer``.
- ``external``: ``ExternalIssuer`` and ``OidcKeySource`` (JWKS fetching and caching).
- ``verification``: ``TokenVerifier``.
"""

from bulwark.auth.tokens.claims import (
    ACCEPTED_AUDIENCES,
    DEFAULT_LEEWAY_SECONDS,
    DEFENDER_APP_ID,
    DEFENDER_AUDIENCE,
    MAX_TOKEN_LENGTH,
    MIN_RSA_KEY_BITS,
    RSA_ALGORITHMS,
    TOKEN_LIFETIME_SECONDS,
    InvalidToken,
    IssuedToken,
    KeyRingSource,
    SigningKeysUnavailable,
    TokenKind,
    VerifiedClaims,
    issuer_url,
    openid_configuration,
)
from bulwark.auth.tokens.external import ExternalIssuer, OidcKeySource
from bulwark.auth.tokens.issuing import TokenIssuer
from bulwark.auth.tokens.verification import TokenVerifier

__all__ = [
    "ACCEPTED_AUDIENCES",
    "DEFAULT_LEEWAY_SECONDS",
    "DEFENDER_APP_ID",
    "DEFENDER_AUDIENCE",
    "MAX_TOKEN_LENGTH",
    "MIN_RSA_KEY_BITS",
    "RSA_ALGORITHMS",
    "TOKEN_LIFETIME_SECONDS",
    "ExternalIssuer",
    "InvalidToken",
    "IssuedToken",
    "KeyRingSource",
    "OidcKeySource",
    "SigningKeysUnavailable",
    "TokenIssuer",
    "TokenKind",
    "TokenVerifier",
    "VerifiedClaims",
    "issuer_url",
    "openid_configuration",
]
