"""Signing Entra-ID-style access tokens with the active key of the key ring."""

from __future__ import annotations

import base64
import hashlib
import secrets
import uuid
from collections.abc import Sequence
from typing import Any

import jwt

from bulwark.auth.keys import SIGNING_ALGORITHM
from bulwark.auth.tokens.claims import (
    _SERVICE_PRINCIPAL_NAMESPACE,
    DEFENDER_AUDIENCE,
    TOKEN_LIFETIME_SECONDS,
    IssuedToken,
    KeyRingSource,
    _normalise_base_url,
    _resolve_keyring,
    issuer_url,
)
from bulwark.clock import Clock


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
