"""The token endpoint's grants: client credentials for applications, password for users.

The endpoint answers callers nobody has authenticated yet, so what each request may cost is bounded
here: budgets per source address, per client id and per user name (checked before anything else);
Argon2id runs on the ``SecretVerifier``'s own bounded pool (refused with 503 when it is full);
failed sign-ins lock the user name and the source for a while (AADSTS50053) and are audited and
logged with their reason, never with the attempted password.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass
from typing import Any

import anyio.to_thread

from bulwark.auth.hashing import HashingBusy, SecretVerifier, dummy_hash
from bulwark.auth.secrets import verify_password
from bulwark.auth.tokens import DEFENDER_APP_ID, DEFENDER_AUDIENCE, IssuedToken, TokenIssuer
from bulwark.clock import Clock
from bulwark.ratelimit import RateLimitDecision, RateLimiter
from bulwark.service.audit_trail import RequestContext, audit_event
from bulwark.service.identity.principals import TtlCache
from bulwark.service.ports import UnitOfWorkFactory

log = logging.getLogger("bulwark.signin")

DEFENDER_SCOPES = frozenset({f"{DEFENDER_AUDIENCE}/.default", f"{DEFENDER_APP_ID}/.default"})
# MSAL adds these to user sign-ins; they ask for an id token and a refresh token, which Bulwark
# does not issue, so they are accepted and ignored.
OIDC_SCOPES = frozenset({"openid", "profile", "offline_access", "email"})

SIGN_IN_FAILED_AUDIT_ACTION = "user.sign_in.failed"

# Budget names (operations of the token endpoint's limiter).
TOKEN_PER_SOURCE = "token-per-source"
TOKEN_PER_CLIENT = "token-per-client"
TOKEN_PER_USER = "token-per-user"
FAILURES_PER_USER = "sign-in-failures-per-user"
FAILURES_PER_SOURCE = "sign-in-failures-per-source"

_MAX_NAME = 320  # the longest user principal name; longer input is cut before it is stored or keyed


class TokenRequestError(Exception):
    """A refused token request, in Entra ID's terms: OAuth error, AADSTS code and description."""

    def __init__(self, error: str, aadsts: int, description: str, status: int = 400, retry_after: int | None = None) -> None:
        super().__init__(description)
        self.error = error
        self.aadsts = aadsts
        self.description = f"AADSTS{aadsts}: {description}"
        self.status = status
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class TokenRequest:
    """One request to the token endpoint, as the form and the connection gave it."""

    tenant_id: str
    client_id: str | None
    client_secret: str | None
    scope: str | None
    source: str
    request_id: str = ""
    username: str | None = None
    password: str | None = None


# For synchronous callers already on a worker thread (the authorization endpoint's sign-in and
# code redemption): a few checks at a time, each against a dummy hash when nothing is stored.
# The token endpoint uses the SecretVerifier's own bounded pool instead.
_SYNC_HASH_SLOTS = threading.BoundedSemaphore(2)


def _verify(secret: str, secret_hash: str | None) -> bool:
    with _SYNC_HASH_SLOTS:
        return verify_password(secret, secret_hash or dummy_hash()) and secret_hash is not None


def _check_scope(scope: str | None) -> None:
    requested = set((scope or "").split())
    if not requested & DEFENDER_SCOPES or requested - DEFENDER_SCOPES - OIDC_SCOPES:
        raise TokenRequestError(
            "invalid_scope",
            70011,
            f"The provided value for the input parameter 'scope' is not valid. Request {DEFENDER_AUDIENCE}/.default.",
        )


def _throttled(decision: RateLimitDecision) -> TokenRequestError:
    if decision.storage_failed:
        return TokenRequestError(
            "temporarily_unavailable", 90055, "The rate-limit store is unavailable; try again shortly.", 503, retry_after=1
        )
    return TokenRequestError(
        "temporarily_unavailable",
        90055,
        f"Too many token requests. Try again in {decision.retry_after} seconds.",
        429,
        retry_after=decision.retry_after,
    )


def _missing_secret() -> TokenRequestError:
    return TokenRequestError(
        "invalid_client",
        7000218,
        "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        401,
    )


def _bad_secret() -> TokenRequestError:
    return TokenRequestError(
        "invalid_client",
        7000215,
        "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value.",
        401,
    )


class TokenService:
    """The grants of the token endpoint: client credentials for applications, password for users.

    ``limiter`` holds the token endpoint's budgets (``TOKEN_PER_*`` and ``FAILURES_PER_*``);
    ``limiter_blocks`` says that its checks do I/O (Redis) and run in a worker thread.
    ``secret_cache_seconds``: how long a verified client secret is remembered (see ``_secret_matches``).
    """

    def __init__(
        self,
        uow_factory: UnitOfWorkFactory,
        issuer: TokenIssuer,
        clock: Clock,
        verifier: SecretVerifier,
        limiter: RateLimiter,
        *,
        limiter_blocks: bool = False,
        secret_cache_seconds: float = 300,
    ) -> None:
        self._uow = uow_factory
        self._issuer = issuer
        self._clock = clock
        self._verifier = verifier
        self._limiter = limiter
        self._limiter_blocks = limiter_blocks
        self._verified_secrets: TtlCache[str, bool] = TtlCache(clock, secret_cache_seconds)

    # Budgets

    async def _limit(self, caller: str, operation: str, *, count: bool = True) -> RateLimitDecision:
        check = self._limiter.check if count else self._limiter.peek
        if self._limiter_blocks:
            return await anyio.to_thread.run_sync(check, caller, operation)
        return check(caller, operation)

    async def _spend(self, request: TokenRequest, username: str | None) -> None:
        # The source first: a flood of made-up client ids or user names from one address is
        # stopped there before it creates a budget per name.
        budgets = [(f"source:{request.source}", TOKEN_PER_SOURCE)]
        if request.client_id:
            budgets.append((f"{request.tenant_id}:client:{request.client_id[:_MAX_NAME]}", TOKEN_PER_CLIENT))
        if username:
            budgets.append((f"{request.tenant_id}:user:{username}", TOKEN_PER_USER))
        for caller, operation in budgets:
            decision = await self._limit(caller, operation)
            if not decision.allowed:
                raise _throttled(decision)

    # Lookups and checks

    async def _verify(self, secret: str, secret_hash: str | None) -> bool:
        try:
            return await self._verifier.verify(secret, secret_hash)
        except HashingBusy:
            raise TokenRequestError(
                "temporarily_unavailable",
                90055,
                "The service is busy verifying other sign-ins; try again shortly.",
                503,
                retry_after=1,
            ) from None

    async def _secret_matches(self, client_id: str, secret: str, secret_hash: str | None) -> bool:
        """Verify a client secret; a match is remembered for a short while.

        The cache key is a SHA-256 of the client id, the stored hash and the secret: only a caller
        that sends the right secret finds an entry; resetting the secret (a new stored hash) misses
        at once; the secret itself is not kept. Client secrets are 240-bit random values, so a fast
        hash of one in memory cannot be reversed, which is why user passwords are never cached.
        Disabling the application still applies at once: it is read from the database every time.
        """
        if secret_hash is None:
            await self._verify(secret, None)
            return False
        key = hashlib.sha256(f"{client_id}\0{secret_hash}\0{secret}".encode()).hexdigest()
        if self._verified_secrets.peek(key):
            return True
        matched = await self._verify(secret, secret_hash)
        if matched:
            self._verified_secrets.get_or_load(key, lambda: True)
        return matched

    def _lookup(
        self, tenant_id: str, client_id: str | None, username: str | None
    ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        with self._uow(write=False) as uow:
            if not uow.tenants.exists(tenant_id):
                raise TokenRequestError("invalid_request", 90002, f"Tenant '{tenant_id}' not found.")
            app = uow.identity.get_application(client_id) if client_id else None
            if app is not None and app["tenant_id"] != tenant_id:
                app = None
            user = uow.identity.find_user(tenant_id, username) if username else None
        return app, user

    @staticmethod
    def _usable(app: dict[str, Any] | None, tenant_id: str, client_id: str) -> dict[str, Any]:
        if app is None:
            raise TokenRequestError(
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id[:100]}' was not found in the directory '{tenant_id}'.",
            )
        if not app["enabled"]:
            raise TokenRequestError(
                "unauthorized_client", 7000112, f"Application '{client_id}'({app['display_name']}) is disabled."
            )
        return app

    @staticmethod
    def _require_client_id(client_id: str | None) -> str:
        if not client_id:
            raise TokenRequestError(
                "invalid_request", 900144, "The request body must contain the following parameter: 'client_id'."
            )
        return client_id

    # Grants

    async def client_credentials(self, request: TokenRequest) -> IssuedToken:
        """An application token carrying the application's roles."""
        await self._spend(request, None)
        app, _ = await anyio.to_thread.run_sync(self._lookup, request.tenant_id, request.client_id, None)
        client_id = self._require_client_id(request.client_id)
        if not request.client_secret:
            raise _missing_secret()
        _check_scope(request.scope)
        # An unknown client id is checked against a dummy hash: it costs what a known one costs.
        if not await self._secret_matches(client_id, request.client_secret, app["secret_hash"] if app else None):
            if app is not None:
                log.info("client authentication failed: wrong secret for %s", client_id)
            self._usable(app, request.tenant_id, client_id)
            raise _bad_secret()
        app = self._usable(app, request.tenant_id, client_id)
        return await anyio.to_thread.run_sync(
            self._issuer.issue_application_token, request.tenant_id, app["client_id"], app["display_name"], app["roles"]
        )

    async def password(self, request: TokenRequest) -> IssuedToken:
        """A delegated token for a user signing in through an application (resource-owner password grant).

        Only public clients may leave out the client secret; a confidential application must
        authenticate, or any user could borrow its delegated permissions by naming its client id.
        """
        username = request.username.strip().lower()[:_MAX_NAME] if request.username else None
        await self._spend(request, username)
        app, user = await anyio.to_thread.run_sync(self._lookup, request.tenant_id, request.client_id, username)
        client_id = self._require_client_id(request.client_id)
        app = self._usable(app, request.tenant_id, client_id)
        if request.client_secret:
            if not await self._secret_matches(client_id, request.client_secret, app["secret_hash"]):
                raise _bad_secret()
        elif not app.get("public_client"):
            raise _missing_secret()
        if not username or not request.password:
            raise TokenRequestError(
                "invalid_request", 900144, "The request body must contain the following parameters: 'username' and 'password'."
            )
        _check_scope(request.scope)

        user_key, source_key = f"{request.tenant_id}:user:{username}", f"source:{request.source}"
        for caller, operation in ((user_key, FAILURES_PER_USER), (source_key, FAILURES_PER_SOURCE)):
            locked = await self._limit(caller, operation, count=False)
            if not locked.allowed:
                retry = locked.retry_after or 1
                await self._sign_in_failed(request, username, user, "locked", 50053, 400)
                raise TokenRequestError(
                    "invalid_grant",
                    50053,
                    "Your account is locked because you tried to sign in too many times with an incorrect user ID or "
                    f"password. Try again in {retry} seconds.",
                    retry_after=retry,
                )

        # An unknown user is checked against a dummy hash: it costs what a known one costs.
        if not await self._verify(request.password, user["password_hash"] if user else None) or user is None:
            await self._limit(user_key, FAILURES_PER_USER)
            await self._limit(source_key, FAILURES_PER_SOURCE)
            await self._sign_in_failed(request, username, user, "unknown_user" if user is None else "wrong_password", 50126, 400)
            raise TokenRequestError("invalid_grant", 50126, "Error validating credentials due to invalid username or password.")
        if not user["enabled"]:
            await self._sign_in_failed(request, username, user, "disabled", 50057, 400)
            raise TokenRequestError("invalid_grant", 50057, "The user account is disabled.")
        return await anyio.to_thread.run_sync(
            lambda: self._issuer.issue_user_token(
                request.tenant_id, app["client_id"], user["id"], user["upn"], user["display_name"], app["delegated_permissions"]
            )
        )

    async def _sign_in_failed(
        self, request: TokenRequest, username: str, user: dict[str, Any] | None, reason: str, aadsts: int, status: int
    ) -> None:
        """Log and audit a failed sign-in with its reason; the attempted password is never stored."""
        log.warning(
            "sign-in failed: %s (user %r, client %s, source %s)",
            reason,
            username,
            request.client_id,
            request.source,
            extra={"request_id": request.request_id, "reason": reason},
        )

        def record() -> None:
            uow = self._uow()
            with uow:
                audit_event(
                    uow,
                    self._clock,
                    action=SIGN_IN_FAILED_AUDIT_ACTION,
                    principal=None,
                    context=RequestContext(request_id=request.request_id, client_ip=request.source),
                    outcome_status=status,
                    outcome_code=f"AADSTS{aadsts}",
                    tenant_id=request.tenant_id,
                    details={
                        "reason": reason,
                        "username": username,
                        "user_id": user["id"] if user else None,
                        "client_id": (request.client_id or "")[:64],
                    },
                )
                uow.commit()

        try:
            await anyio.to_thread.run_sync(record)
        except Exception:
            log.exception("could not audit a failed sign-in", extra={"request_id": request.request_id})
