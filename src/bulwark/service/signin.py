"""Interactive sign-in: the authorization code flow with PKCE, and the web console's sessions.

The authorization endpoint checks a user's password and hands the registered redirect URI a
short-lived, single-use code bound to the client, the redirect URI and the PKCE challenge; the
token endpoint trades that code (with the PKCE verifier) for a delegated access token. Codes and
session ids are stored only as sha256 digests, so a copy of the database redeems nothing.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError

from bulwark.auth.tokens import IssuedToken, TokenIssuer
from bulwark.clock import Clock
from bulwark.service.audit_trail import RequestContext, audit_event
from bulwark.service.identity import DELEGATED_PERMISSIONS, TokenRequestError
from bulwark.service.identity.grants import _check_scope, _verify
from bulwark.service.ports import UnitOfWork, UnitOfWorkFactory

log = logging.getLogger("bulwark.auth")

AUTHORIZATION_CODE_SECONDS = 120
CONSOLE_CLIENT_NAME = "Bulwark console"
CONSOLE_CALLBACK_PATH = "/console/callback"
MAX_STATE_LENGTH = 512
# RFC 7636: the verifier is 43 to 128 unreserved characters; an S256 challenge is 43 base64url characters.
_VERIFIER = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")
_CHALLENGE = re.compile(r"^[A-Za-z0-9\-_]{43}$")


def digest(secret: str) -> str:
    """The sha256 hex digest under which a code or session id is stored."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def s256_challenge(verifier: str) -> str:
    """The PKCE S256 challenge of ``verifier``: base64url(sha256(verifier)) without padding."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode("ascii")


# --- The console's own registration ---


def console_client_id(tenant_id: str) -> str:
    """The console's client id in a tenant: fixed, so that every process and restart agrees."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"urn:bulwark:console:{tenant_id}"))


def ensure_console_client(
    uow_factory: UnitOfWorkFactory, clock: Clock, tenant_id: str, redirect_uri: str, *, retry: bool = True
) -> str | None:
    """Register the console as a public client of the tenant with ``redirect_uri``; return its client id.

    Idempotent and safe when several processes start at once (the loser of the insert finds the
    winner's row). Returns None when the tenant does not exist (yet), or another application of the
    tenant already has the console's name: the console then has no one to sign in.
    """
    client_id = console_client_id(tenant_id)
    try:
        with uow_factory() as uow:
            if not uow.tenants.exists(tenant_id):
                return None
            app = uow.identity.get_application(client_id)
            if app is None:
                uow.identity.add_application(
                    client_id=client_id,
                    tenant_id=tenant_id,
                    display_name=CONSOLE_CLIENT_NAME,
                    secret_hash=None,  # a public client: it proves itself with PKCE, not a secret
                    public_client=True,
                    roles=[],
                    delegated_permissions=sorted(DELEGATED_PERMISSIONS),
                    created_at=clock.now(),
                )
            elif app.get("redirect_uris") == [redirect_uri]:
                return client_id
            uow.identity.update_application(client_id, redirect_uris=[redirect_uri])
            uow.commit()
    except IntegrityError:
        if retry:
            return ensure_console_client(uow_factory, clock, tenant_id, redirect_uri, retry=False)
        log.warning("could not register the console client in tenant %s: another application has its name", tenant_id)
        return None
    return client_id


# --- The authorization endpoint ---


class AuthorizeError(Exception):
    """A refused authorization request.

    ``redirectable`` errors go back to the (already validated) redirect URI as ``error=...``;
    the others (unknown client, unregistered redirect URI) are shown to the user and never
    redirected, so the endpoint cannot be used as an open redirector.
    """

    def __init__(self, error: str, aadsts: int, description: str, *, redirectable: bool) -> None:
        super().__init__(description)
        self.error = error
        self.aadsts = aadsts
        self.description = f"AADSTS{aadsts}: {description}"
        self.redirectable = redirectable


@dataclass(frozen=True, slots=True)
class AuthorizationRequest:
    """A checked authorization request: who asks, where the answer goes, and the PKCE challenge."""

    tenant_id: str
    client_id: str
    client_name: str
    redirect_uri: str
    state: str | None
    code_challenge: str
    scope: str


def check_authorization_request(uow_factory: UnitOfWorkFactory, tenant_id: str, params: dict[str, str]) -> AuthorizationRequest:
    """Validate the query (or form) of an authorization request; AuthorizeError when it cannot proceed."""
    client_id = params.get("client_id", "")
    redirect_uri = params.get("redirect_uri", "")
    with uow_factory(write=False) as uow:
        if not uow.tenants.exists(tenant_id):
            raise AuthorizeError("invalid_request", 90002, "The tenant was not found.", redirectable=False)
        app = uow.identity.get_application(client_id) if client_id else None
    if app is None or app["tenant_id"] != tenant_id or not app["enabled"]:
        raise AuthorizeError(
            "unauthorized_client",
            700016,
            "The application was not found in the directory, or is disabled.",
            redirectable=False,
        )
    if not redirect_uri or redirect_uri not in (app.get("redirect_uris") or []):
        raise AuthorizeError(
            "invalid_request",
            50011,
            "The redirect URI specified in the request does not match the redirect URIs configured for the application.",
            redirectable=False,
        )
    state = params.get("state")
    if state is not None and len(state) > MAX_STATE_LENGTH:
        raise AuthorizeError("invalid_request", 900144, "The state parameter is too long.", redirectable=False)
    if params.get("response_type") != "code":
        raise AuthorizeError("unsupported_response_type", 700054, "Only response_type 'code' is supported.", redirectable=True)
    challenge = params.get("code_challenge", "")
    if params.get("code_challenge_method") != "S256" or not _CHALLENGE.match(challenge):
        raise AuthorizeError(
            "invalid_request",
            9002325,
            "Proof Key for Code Exchange is required: send code_challenge with code_challenge_method S256.",
            redirectable=True,
        )
    scope = params.get("scope", "")
    try:
        _check_scope(scope)
    except TokenRequestError as error:
        raise AuthorizeError(error.error, error.aadsts, str(error), redirectable=True) from None
    return AuthorizationRequest(tenant_id, app["client_id"], app["display_name"], redirect_uri, state, challenge, scope)


class SignInFailed(Exception):
    """Wrong user name or password, or a disabled user: shown on the sign-in form."""

    def __init__(self, aadsts: int, message: str, reason: str) -> None:
        super().__init__(message)
        self.aadsts = aadsts
        self.message = message
        self.reason = reason


SIGNIN_FAILED_AUDIT_ACTION = "signin.failed"


def sign_in_for_code(
    uow_factory: UnitOfWorkFactory,
    clock: Clock,
    request: AuthorizationRequest,
    username: str,
    password: str,
    context: RequestContext,
) -> str:
    """Check the user's password and return a new authorization code for ``request``.

    A failed sign-in of a known user is audited with its reason (the user name a caller typed is
    never stored for unknown users, so that a flood cannot write arbitrary text).
    """
    with uow_factory(write=False) as uow:
        user = uow.identity.find_user(request.tenant_id, username) if username and len(username) <= 320 else None
    if not _verify(password or "", user["password_hash"] if user else None) or user is None or not password:
        reason = "wrong password" if user else "unknown user"
        _record_failure(uow_factory(), clock, request.tenant_id, user, reason, context)
        raise SignInFailed(50126, "Your user name or password is incorrect.", reason)
    if not user["enabled"]:
        _record_failure(uow_factory(), clock, request.tenant_id, user, "user disabled", context)
        raise SignInFailed(50057, "Your account is disabled. Ask an administrator.", "user disabled")
    code = secrets.token_urlsafe(32)
    now = clock.now()
    with uow_factory() as uow:
        uow.authorization_codes.purge_expired(now - timedelta(minutes=10))
        uow.authorization_codes.add(
            code_hash=digest(code),
            tenant_id=request.tenant_id,
            client_id=request.client_id,
            user_id=user["id"],
            redirect_uri=request.redirect_uri,
            code_challenge=request.code_challenge,
            created_at=now,
            expires_at=now + timedelta(seconds=AUTHORIZATION_CODE_SECONDS),
        )
        uow.commit()
    return code


def _record_failure(
    uow: UnitOfWork, clock: Clock, tenant_id: str, user: dict[str, Any] | None, reason: str, context: RequestContext
) -> None:
    log.info("sign-in refused: %s (user %s, from %s)", reason, user["upn"] if user else "-", context.client_ip)
    if user is None:
        return
    with uow:
        audit_event(
            uow,
            clock,
            action=SIGNIN_FAILED_AUDIT_ACTION,
            principal=None,
            tenant_id=tenant_id,
            context=context,
            outcome_status=400,
            outcome_code="invalid_grant",
            details={"reason": reason, "user_id": user["id"], "upn": user["upn"]},
        )
        uow.commit()


# --- The token endpoint's authorization_code grant ---


@dataclass(frozen=True, slots=True)
class RedeemedCode:
    """The token a code was traded for, and whose it is."""

    token: IssuedToken
    user_id: str
    upn: str


def redeem_authorization_code(
    uow_factory: UnitOfWorkFactory,
    issuer: TokenIssuer,
    clock: Clock,
    tenant_id: str,
    fields: dict[str, str],
    client_id: str | None,
    client_secret: str | None,
) -> RedeemedCode:
    """``grant_type=authorization_code``: trade a code and its PKCE verifier for a delegated token.

    The code is marked redeemed before anything else is compared, so a code presented with the
    wrong client, redirect URI or verifier is spent: whoever intercepted it gains nothing by trying.
    """
    with uow_factory(write=False) as uow:
        if not uow.tenants.exists(tenant_id):
            raise TokenRequestError("invalid_request", 90002, f"Tenant '{tenant_id}' not found.")
        app = uow.identity.get_application(client_id) if client_id else None
    if not client_id:
        raise TokenRequestError("invalid_request", 900144, "The request body must contain the following parameter: 'client_id'.")
    if app is None or app["tenant_id"] != tenant_id:
        raise TokenRequestError(
            "unauthorized_client", 700016, f"Application with identifier '{client_id}' was not found in the directory."
        )
    if not app["enabled"]:
        raise TokenRequestError("unauthorized_client", 7000112, f"Application '{client_id}' is disabled.")
    if app["secret_hash"] is not None:
        # A confidential client proves itself with its secret as well as with PKCE.
        if not client_secret:
            raise TokenRequestError(
                "invalid_client", 7000218, "The request body must contain the following parameter: 'client_secret'.", 401
            )
        if not _verify(client_secret, app["secret_hash"]):
            raise TokenRequestError("invalid_client", 7000215, "Invalid client secret provided.", 401)
    code = fields.get("code") or ""
    verifier = fields.get("code_verifier") or ""
    redirect_uri = fields.get("redirect_uri") or ""
    if not code or len(code) > 256:
        raise TokenRequestError("invalid_request", 900144, "The request body must contain the following parameter: 'code'.")
    if not verifier:
        raise TokenRequestError(
            "invalid_request", 900144, "The request body must contain the following parameter: 'code_verifier'."
        )
    now = clock.now()
    code_hash = digest(code)
    with uow_factory() as uow:
        row = uow.authorization_codes.redeem(code_hash, now)
        replayed = row is None and uow.authorization_codes.was_redeemed(code_hash)
        uow.commit()
    if row is None:
        if replayed:
            raise TokenRequestError(
                "invalid_grant", 54005, "OAuth2 Authorization code was already redeemed, please retry with a new valid code."
            )
        raise TokenRequestError("invalid_grant", 9002313, "Invalid request. The authorization code is malformed or unknown.")
    if row["expires_at"] <= now:
        raise TokenRequestError("invalid_grant", 70008, "The provided authorization code has expired.")
    if row["tenant_id"] != tenant_id or row["client_id"] != client_id:
        raise TokenRequestError("invalid_grant", 70000, "The authorization code was issued to another application.")
    if row["redirect_uri"] != redirect_uri:
        raise TokenRequestError(
            "invalid_grant", 50011, "The redirect URI does not match the one the authorization code was issued for."
        )
    if not _VERIFIER.match(verifier) or not secrets.compare_digest(s256_challenge(verifier), row["code_challenge"]):
        raise TokenRequestError(
            "invalid_grant", 501481, "The Code_Verifier does not match the code_challenge supplied in the authorization request."
        )
    _check_scope(fields.get("scope") or "https://api.securitycenter.microsoft.com/.default")
    with uow_factory(write=False) as uow:
        user = uow.identity.get_user(row["user_id"])
    if user is None or not user["enabled"]:
        raise TokenRequestError("invalid_grant", 50057, "The user account is disabled.")
    token = issuer.issue_user_token(
        tenant_id, app["client_id"], user["id"], user["upn"], user["display_name"], app["delegated_permissions"]
    )
    return RedeemedCode(token, user["id"], user["upn"])


# --- Console sessions ---


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    """A signed-in browser: the user, their access token, the CSRF token of its forms, and its end."""

    id_hash: str
    tenant_id: str
    user_id: str
    upn: str
    access_token: str
    csrf_token: str
    expires_at: datetime


def start_console_session(uow: UnitOfWork, clock: Clock, tenant_id: str, redeemed: RedeemedCode) -> tuple[str, ConsoleSession]:
    """Store a new session (a fresh id at every sign-in); return the id for the cookie, and the session.

    The session ends when the access token does: there are no refresh tokens, so signing in again
    is the way on.
    """
    session_id = secrets.token_urlsafe(32)
    now = clock.now()
    session = ConsoleSession(
        id_hash=digest(session_id),
        tenant_id=tenant_id,
        user_id=redeemed.user_id,
        upn=redeemed.upn,
        access_token=redeemed.token.access_token,
        csrf_token=secrets.token_urlsafe(32),
        expires_at=now + timedelta(seconds=redeemed.token.expires_in),
    )
    with uow:
        uow.console_sessions.purge_expired(now)
        uow.console_sessions.add(
            id_hash=session.id_hash,
            tenant_id=session.tenant_id,
            user_id=session.user_id,
            upn=session.upn,
            access_token=session.access_token,
            csrf_token=session.csrf_token,
            created_at=now,
            expires_at=session.expires_at,
        )
        uow.commit()
    return session_id, session


def load_console_session(uow: UnitOfWork, clock: Clock, session_id: str | None) -> ConsoleSession | None:
    """The live session with this id, or None (unknown, malformed or expired)."""
    if not session_id or len(session_id) > 128:
        return None
    with uow:
        row = uow.console_sessions.get(digest(session_id))
    if row is None or row["expires_at"] <= clock.now():
        return None
    return ConsoleSession(
        id_hash=row["id_hash"],
        tenant_id=row["tenant_id"],
        user_id=row["user_id"],
        upn=row["upn"],
        access_token=row["access_token"],
        csrf_token=row["csrf_token"],
        expires_at=row["expires_at"],
    )


def end_console_session(uow: UnitOfWork, session_id: str | None) -> None:
    """Forget the session (sign-out)."""
    if not session_id or len(session_id) > 128:
        return
    with uow:
        uow.console_sessions.delete(digest(session_id))
        uow.commit()
