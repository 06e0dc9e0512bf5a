"""The token endpoint against abuse, over HTTP with real tokens: public and confidential clients,
per-source/client/user budgets, the bounded hashing pool, and brute-force lockout with an audit trail."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

import httpx
import jwt
import pytest
from fastapi.testclient import TestClient

from bulwark.api.app import create_app
from bulwark.auth.hashing import HashingBusy, SecretVerifier
from bulwark.clock import FrozenClock
from bulwark.service.identity import SIGN_IN_FAILED_AUDIT_ACTION
from bulwark.settings import Settings
from bulwark.store.uow import SqlUnitOfWorkFactory
from tests.conftest import TENANT, make_machine, seed
from tests.identity_support import (
    SCOPE,
    TEST_PASSWORD,
    TEST_SECRET,
    bearer,
    register_app,
    register_user,
    token_endpoint,
    user_token,
)

MACHINE = make_machine(7)
ANALYST = "analyst@contoso.com"


def _client(settings: Settings, clock: FrozenClock, **overrides: object) -> TestClient:
    return TestClient(create_app(settings.model_copy(update=overrides), clock=clock))


@pytest.fixture
def client(settings: Settings, uow_factory: SqlUnitOfWorkFactory, clock: FrozenClock):
    seed(uow_factory, [MACHINE])
    with _client(settings, clock) as test_client:
        yield test_client


def password_grant(client: TestClient, client_id: str, *, username: str = ANALYST, password: str = TEST_PASSWORD, **extra: str):
    form = {"grant_type": "password", "client_id": client_id, "username": username, "password": password, "scope": SCOPE}
    return client.post(token_endpoint(), data={**form, **extra})


def client_credentials(client: TestClient, client_id: str, secret: str = TEST_SECRET):
    form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret, "scope": SCOPE}
    return client.post(token_endpoint(), data=form)


def assert_oauth_error(response: httpx.Response, status: int, error: str, aadsts: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == error and body["error_codes"] == [aadsts], body
    assert body["error_description"].startswith(f"AADSTS{aadsts}:")
    return body


def sign_in_failures(uow_factory: SqlUnitOfWorkFactory) -> list[dict]:
    with uow_factory(write=False) as uow:
        return [e for e in uow.audit.list(limit=1000) if e["action"] == SIGN_IN_FAILED_AUDIT_ACTION]


# Item 2: only public clients may use the password grant without their secret


def test_a_confidential_application_cannot_lend_its_permissions_without_its_secret(client: TestClient, uow_factory) -> None:
    confidential = register_app(uow_factory, delegated=["Machine.Read", "Machine.Offboard"])
    register_user(uow_factory, ANALYST, capabilities=["ViewData", "ManageSecuritySettings"])
    body = assert_oauth_error(password_grant(client, confidential), 401, "invalid_client", 7000218)
    assert "'client_assertion' or 'client_secret'" in body["error_description"]
    assert_oauth_error(password_grant(client, confidential, client_secret="wrong-secret"), 401, "invalid_client", 7000215)
    # With its secret, the user signs in through it.
    token = user_token(client, confidential, ANALYST)
    assert client.get(f"/api/machines/{MACHINE.id}", headers=bearer(token)).status_code == 200


def test_a_public_client_signs_users_in_without_a_secret(client: TestClient, uow_factory) -> None:
    public = register_app(uow_factory, delegated=["Machine.Read"], public_client=True)
    register_user(uow_factory, ANALYST, capabilities=["ViewData"])
    token = user_token(client, public, ANALYST, client_secret=None)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["upn"] == ANALYST and claims["azp"] == public
    # A public client that sends a secret must send the right one.
    assert_oauth_error(password_grant(client, public, client_secret="wrong-secret"), 401, "invalid_client", 7000215)
    # Being public does not open the client-credentials grant without a secret.
    response = client.post(token_endpoint(), data={"grant_type": "client_credentials", "client_id": public, "scope": SCOPE})
    assert_oauth_error(response, 401, "invalid_client", 7000218)


# Item 7: brute force is throttled, and every failed sign-in is traced with its reason


def test_wrong_passwords_lock_the_user_then_even_the_right_one_is_refused(
    settings: Settings, uow_factory, clock: FrozenClock, caplog: pytest.LogCaptureFixture
) -> None:
    app = register_app(uow_factory, delegated=["Machine.Read"], public_client=True)
    register_user(uow_factory, ANALYST, capabilities=["ViewData"])
    with _client(settings, clock, sign_in_failures_per_user="5/3seconds") as client, caplog.at_level(logging.WARNING):
        for _ in range(5):
            assert_oauth_error(password_grant(client, app, password="guess-123"), 400, "invalid_grant", 50126)
        locked = password_grant(client, app)
        body = assert_oauth_error(locked, 400, "invalid_grant", 50053)
        assert int(locked.headers["Retry-After"]) > 0 and "locked" in body["error_description"]
        # The lock lifts when the oldest failure leaves the window.
        time.sleep(int(locked.headers["Retry-After"]) + 0.2)
        assert password_grant(client, app).status_code == 200
    failures = sign_in_failures(uow_factory)
    assert [f["details"]["reason"] for f in failures].count("wrong_password") == 5
    assert [f["details"]["reason"] for f in failures].count("locked") == 1
    assert all(f["details"]["username"] == ANALYST and f["client_ip"] == "testclient" for f in failures)
    assert all(f["outcome_code"] in {"AADSTS50126", "AADSTS50053"} for f in failures)
    # The attempted password is stored nowhere and logged nowhere.
    assert "guess-123" not in repr(failures) and "guess-123" not in caplog.text
    assert "sign-in failed: wrong_password" in caplog.text


def test_unknown_and_disabled_users_are_audited_with_their_reason(client: TestClient, uow_factory, caplog) -> None:
    app = register_app(uow_factory, delegated=["Machine.Read"], public_client=True)
    register_user(uow_factory, ANALYST, capabilities=["ViewData"])
    with uow_factory() as uow:
        user = uow.identity.find_user(TENANT, ANALYST)
        uow.identity.update_user(user["id"], enabled=False)
        uow.commit()
    assert_oauth_error(password_grant(client, app, username="nobody@contoso.com"), 400, "invalid_grant", 50126)
    assert_oauth_error(password_grant(client, app), 400, "invalid_grant", 50057)
    reasons = {(f["details"]["username"], f["details"]["reason"]) for f in sign_in_failures(uow_factory)}
    assert reasons == {("nobody@contoso.com", "unknown_user"), (ANALYST, "disabled")}


def test_one_source_guessing_many_users_is_locked_out(settings: Settings, uow_factory, clock: FrozenClock) -> None:
    app = register_app(uow_factory, delegated=["Machine.Read"], public_client=True)
    register_user(uow_factory, ANALYST, capabilities=["ViewData"])
    with _client(settings, clock, sign_in_failures_per_source="4/15minutes") as client:
        for n in range(4):
            password_grant(client, app, username=f"user{n}@contoso.com", password="Winter2026!")
        # Password spraying: the source is locked, whichever user it names next.
        assert_oauth_error(password_grant(client, app), 400, "invalid_grant", 50053)


# Item 3: token requests are budgeted per source, client id and user name


def test_token_requests_are_limited_per_client_per_user_and_per_source(settings: Settings, uow_factory, clock) -> None:
    app = register_app(uow_factory, delegated=["Machine.Read"], public_client=True)
    register_user(uow_factory, ANALYST, capabilities=["ViewData"])
    limits = {"token_rate_limit_per_client": "3/minute", "token_rate_limit_per_user": "2/minute"}
    with _client(settings, clock, **limits) as client:
        assert [client_credentials(client, app).status_code for _ in range(3)] == [200, 200, 200]
        refused = client_credentials(client, app)
        assert_oauth_error(refused, 429, "temporarily_unavailable", 90055)
        assert int(refused.headers["Retry-After"]) >= 1
        other = register_app(uow_factory, name="other")
        assert client_credentials(client, other).status_code == 200
        # Per user name, whichever application the user signs in through.
        third = register_app(uow_factory, name="third", delegated=["Machine.Read"], public_client=True)
        assert password_grant(client, third).status_code == 200
        assert password_grant(client, other, client_secret=TEST_SECRET).status_code == 200
        assert_oauth_error(password_grant(client, third), 429, "temporarily_unavailable", 90055)
    with _client(settings, clock, token_rate_limit_per_source="5/minute") as client:
        statuses = [client_credentials(client, str(uuid.uuid4())).status_code for _ in range(7)]
        # Made-up client ids: refused as unknown, then the source's budget is spent.
        assert statuses == [400] * 5 + [429] * 2


def test_the_hashing_pool_refuses_beyond_its_queue_instead_of_waiting() -> None:
    verifier = SecretVerifier(workers=1, queue=1)
    from bulwark.auth.secrets import hash_password

    stored = hash_password("s3cret")

    async def flood() -> list[object]:
        return await asyncio.gather(*(verifier.verify("s3cret", stored) for _ in range(6)), return_exceptions=True)

    try:
        outcomes = asyncio.run(flood())
    finally:
        verifier.close()
    assert outcomes.count(True) == 2  # one running, one queued
    assert sum(isinstance(o, HashingBusy) for o in outcomes) == 4


def test_a_full_hashing_pool_answers_503_with_retry_after(settings: Settings, uow_factory, clock) -> None:
    app = register_app(uow_factory)
    with _client(settings, clock, hashing_workers=1, hashing_queue=0) as client:
        pool = client.app.state.runtime.auth.hashing
        assert pool._slots.acquire(blocking=False)  # the only slot is taken by another sign-in
        try:
            busy = client_credentials(client, app)
        finally:
            pool._slots.release()
        assert_oauth_error(busy, 503, "temporarily_unavailable", 90055)
        assert busy.headers["Retry-After"] == "1"
        assert client_credentials(client, app).status_code == 200


def test_a_verified_client_secret_is_remembered_until_it_is_reset(client: TestClient, uow_factory) -> None:
    app = register_app(uow_factory)
    assert client_credentials(client, app).status_code == 200
    pool = client.app.state.runtime.auth.hashing
    # Every hashing slot taken: only a remembered secret can still get a token.
    taken = 0
    while pool._slots.acquire(blocking=False):
        taken += 1
    try:
        assert client_credentials(client, app).status_code == 200
        assert client_credentials(client, app, secret="not-the-secret").status_code == 503
        with uow_factory() as uow:
            from argon2 import PasswordHasher

            uow.identity.update_application(app, secret_hash=PasswordHasher(time_cost=1, memory_cost=1024).hash("new"))
            uow.commit()
        # The old secret's entry no longer matches the stored hash: it must be verified again.
        assert client_credentials(client, app).status_code == 503
    finally:
        for _ in range(taken):
            pool._slots.release()
    assert_oauth_error(client_credentials(client, app), 401, "invalid_client", 7000215)
