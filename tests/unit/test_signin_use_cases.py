"""Sign-in use cases against the in-memory unit of work: codes, their binding, sessions."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bulwark.auth.keys import KeyRingCache, generate_signing_key
from bulwark.auth.tokens import TokenIssuer
from bulwark.clock import FrozenClock
from bulwark.service.identity import TokenRequestError
from bulwark.service.signin import (
    AuthorizeError,
    SignInFailed,
    check_authorization_request,
    digest,
    end_console_session,
    ensure_console_client,
    load_console_session,
    redeem_authorization_code,
    s256_challenge,
    sign_in_for_code,
    start_console_session,
)
from tests.identity_support import _PASSWORD_HASH, SCOPE, TEST_PASSWORD
from tests.unit.fakes import FakeUnitOfWorkFactory
from tests.unit.use_case_support import CONTEXT, TENANT, with_tenant

REDIRECT = "https://console.example/console/callback"
VERIFIER = "v" * 43


@pytest.fixture
def uow(clock: FrozenClock) -> FakeUnitOfWorkFactory:
    factory = with_tenant(FakeUnitOfWorkFactory())
    with factory() as work:
        work.identity.add_user(
            user_id="user-1",
            tenant_id=TENANT,
            upn="pat@contoso.com",
            display_name="Pat",
            password_hash=_PASSWORD_HASH,
            created_at=clock.now(),
        )
        work.commit()
    return factory


@pytest.fixture
def issuer(clock: FrozenClock) -> TokenIssuer:
    key = generate_signing_key(clock.now())
    return TokenIssuer(KeyRingCache(lambda: [key], clock), "https://bulwark.example", clock)


def _code(uow: FakeUnitOfWorkFactory, clock: FrozenClock) -> tuple[str, str]:
    client_id = ensure_console_client(uow, clock, TENANT, REDIRECT)
    assert client_id is not None
    params = {
        "client_id": client_id,
        "redirect_uri": REDIRECT,
        "response_type": "code",
        "scope": SCOPE,
        "code_challenge": s256_challenge(VERIFIER),
        "code_challenge_method": "S256",
    }
    request = check_authorization_request(uow, TENANT, params)
    return client_id, sign_in_for_code(uow, clock, request, "PAT@contoso.com", TEST_PASSWORD, CONTEXT)


def test_a_code_is_stored_only_as_its_digest(uow: FakeUnitOfWorkFactory, clock: FrozenClock) -> None:
    _, code = _code(uow, clock)
    assert list(uow.db.authorization_codes) == [digest(code)]
    assert code not in str(uow.db.authorization_codes)


def test_a_code_trades_once_for_a_token_of_its_user(uow: FakeUnitOfWorkFactory, clock: FrozenClock, issuer: TokenIssuer) -> None:
    client_id, code = _code(uow, clock)
    fields = {"code": code, "code_verifier": VERIFIER, "redirect_uri": REDIRECT}
    redeemed = redeem_authorization_code(uow, issuer, clock, TENANT, fields, client_id, None)
    assert (redeemed.user_id, redeemed.upn) == ("user-1", "pat@contoso.com")
    with pytest.raises(TokenRequestError) as again:
        redeem_authorization_code(uow, issuer, clock, TENANT, fields, client_id, None)
    assert again.value.aadsts == 54005


def test_a_wrong_password_gets_no_code_and_is_audited(uow: FakeUnitOfWorkFactory, clock: FrozenClock) -> None:
    client_id = ensure_console_client(uow, clock, TENANT, REDIRECT)
    params = {
        "client_id": client_id or "",
        "redirect_uri": REDIRECT,
        "response_type": "code",
        "scope": SCOPE,
        "code_challenge": s256_challenge(VERIFIER),
        "code_challenge_method": "S256",
    }
    request = check_authorization_request(uow, TENANT, params)
    with pytest.raises(SignInFailed):
        sign_in_for_code(uow, clock, request, "pat@contoso.com", "wrong", CONTEXT)
    assert not uow.db.authorization_codes
    [event] = uow.db.audit
    assert event["action"] == "signin.failed" and event["details"]["reason"] == "wrong password"


def test_an_unregistered_redirect_uri_is_not_redirectable(uow: FakeUnitOfWorkFactory, clock: FrozenClock) -> None:
    client_id = ensure_console_client(uow, clock, TENANT, REDIRECT) or ""
    with pytest.raises(AuthorizeError) as refused:
        check_authorization_request(uow, TENANT, {"client_id": client_id, "redirect_uri": "https://evil.example/"})
    assert refused.value.redirectable is False and refused.value.aadsts == 50011


def test_a_session_ends_with_its_token_or_at_sign_out(
    uow: FakeUnitOfWorkFactory, clock: FrozenClock, issuer: TokenIssuer
) -> None:
    client_id, code = _code(uow, clock)
    fields = {"code": code, "code_verifier": VERIFIER, "redirect_uri": REDIRECT}
    redeemed = redeem_authorization_code(uow, issuer, clock, TENANT, fields, client_id, None)
    session_id, session = start_console_session(uow(), clock, TENANT, redeemed)
    assert session_id not in uow.db.console_sessions and digest(session_id) in uow.db.console_sessions
    assert load_console_session(uow(write=False), clock, session_id) == session
    clock.advance(redeemed.token.expires_in)
    assert load_console_session(uow(write=False), clock, session_id) is None
    clock.advance(-timedelta(seconds=10).total_seconds())
    end_console_session(uow(), session_id)
    assert load_console_session(uow(write=False), clock, session_id) is None
