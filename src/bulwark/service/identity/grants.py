"""The token endpoint's grants: client credentials for applications, password for users."""

from __future__ import annotations

import functools
import secrets
import threading
from typing import Any

from bulwark.auth.secrets import hash_password, verify_password
from bulwark.auth.tokens import DEFENDER_APP_ID, DEFENDER_AUDIENCE, IssuedToken, TokenIssuer
from bulwark.service.ports import UnitOfWork, UnitOfWorkFactory

DEFENDER_SCOPES = frozenset({f"{DEFENDER_AUDIENCE}/.default", f"{DEFENDER_APP_ID}/.default"})
# MSAL adds these to user sign-ins; they ask for an id token and a refresh token, which Bulwark
# does not issue, so they are accepted and ignored.
OIDC_SCOPES = frozenset({"openid", "profile", "offline_access", "email"})


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


@functools.cache
def _dummy_hash() -> str:
    """Compared against when a client or user does not exist, so that timing does not tell which.

    Made on first use, not at import: an Argon2id hash costs about a second of CPU and 64 MiB, which
    every process importing this module (each command-line start, the sensor's included) would pay.
    """
    return hash_password(secrets.token_urlsafe(16))


def _verify(secret: str, secret_hash: str | None) -> bool:
    with _HASH_SLOTS:
        return verify_password(secret, secret_hash or _dummy_hash()) and secret_hash is not None


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
        # Made now, so that the first request naming an unknown client takes no longer than the rest.
        _dummy_hash()

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
