"""Sign-in for people: the authorization endpoint, the authorization_code grant with PKCE, and console sessions.

Over HTTP against the real app and database; attacks first: open redirects, code replay and
interception, CSRF, session fixation, reflected input, framing, password guessing.
"""

from __future__ import annotations

import re
import secrets
import uuid
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from fastapi.testclient import TestClient

from bulwark.api.app import create_app
from bulwark.api.console.routes import _safe_next
from bulwark.clock import FrozenClock
from bulwark.domain.actions import ActionType
from bulwark.service.signin import s256_challenge
from bulwark.settings import Settings
from bulwark.store.uow import SqlUnitOfWorkFactory as UnitOfWorkFactory
from tests.conftest import TENANT, make_machine, seed
from tests.identity_support import SCOPE, TEST_PASSWORD, bearer, register_user, token_endpoint

REDIRECT = "https://app.example/callback"
AUTHORIZE = f"/{TENANT}/oauth2/v2.0/authorize"
ADMIN = "admin@contoso.com"
READER = "reader@contoso.com"
MACHINES = [make_machine(1, machine_tags=["VIP"]), make_machine(2, machine_tags=["Lab"]), make_machine(3, os_platform="macOS")]


@pytest.fixture
def console_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"public_base_url": "http://testserver"})


@pytest.fixture
def client(console_settings: Settings, uow_factory: UnitOfWorkFactory, clock: FrozenClock):
    seed(uow_factory, MACHINES)
    register_user(uow_factory, ADMIN, capabilities=["ViewData", "ManageSecuritySettings"])
    register_user(uow_factory, READER, capabilities=["ViewData"])
    with TestClient(create_app(console_settings, clock=clock), follow_redirects=False) as test_client:
        yield test_client


def public_client(uow_factory: UnitOfWorkFactory, redirect_uris: list[str] | None = None) -> str:
    client_id = str(uuid.uuid4())
    with uow_factory() as uow:
        uow.identity.add_application(
            client_id=client_id,
            tenant_id=TENANT,
            display_name=f"SPA {client_id[:8]}",
            secret_hash=None,
            roles=[],
            delegated_permissions=["Machine.Read", "Machine.Offboard"],
            created_at=FrozenClock().now(),
        )
        uow.identity.update_application(client_id, redirect_uris=redirect_uris or [REDIRECT])
        uow.commit()
    return client_id


def params_for(client_id: str, verifier: str, **overrides: str) -> dict[str, str]:
    params = {
        "client_id": client_id,
        "response_type": "code",
        "redirect_uri": REDIRECT,
        "scope": SCOPE,
        "state": "st-123",
        "code_challenge": s256_challenge(verifier),
        "code_challenge_method": "S256",
    }
    params.update(overrides)
    return {k: v for k, v in params.items() if v is not None}


def form_token(page_html: str) -> str:
    match = re.search(r'name="form_token" value="([^"]+)"', page_html)
    assert match, page_html
    return match.group(1)


def sign_in(client: TestClient, params: dict[str, str], upn: str = ADMIN, password: str = TEST_PASSWORD):
    form = client.get(AUTHORIZE, params=params)
    assert form.status_code == 200, form.text
    return client.post(AUTHORIZE, data={**params, "form_token": form_token(form.text), "username": upn, "password": password})


def code_of(response) -> str:
    assert response.status_code == 303, response.text
    location = response.headers["location"]
    assert location.startswith(REDIRECT + "?")
    query = parse_qs(urlsplit(location).query)
    assert query["state"] == ["st-123"]
    return query["code"][0]


def redeem(client: TestClient, client_id: str, code: str, verifier: str, redirect_uri: str = REDIRECT):
    return client.post(
        token_endpoint(),
        data={
            "grant_type": "authorization_code",
            "client_id": client_id,
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
            "scope": SCOPE,
        },
    )


def verifier() -> str:
    return secrets.token_urlsafe(48)


def test_discovery_document_advertises_what_exists(client: TestClient, uow_factory) -> None:
    document = client.get(f"/{TENANT}/v2.0/.well-known/openid-configuration").json()
    assert document["response_types_supported"] == ["code"]
    assert document["code_challenge_methods_supported"] == ["S256"]
    assert "authorization_code" in document["grant_types_supported"]
    path = urlsplit(document["authorization_endpoint"]).path
    shown = client.get(path, params=params_for(public_client(uow_factory), verifier()))
    assert shown.status_code == 200 and "<form" in shown.text


def test_code_flow_gives_a_delegated_token_the_api_accepts(client: TestClient, uow_factory) -> None:
    client_id, v = public_client(uow_factory), verifier()
    answer = sign_in(client, params_for(client_id, v))
    assert answer.headers["cache-control"] == "no-store"
    token = redeem(client, client_id, code_of(answer), v)
    assert token.status_code == 200, token.text
    body = token.json()
    assert body["token_type"] == "Bearer" and body["scope"] == SCOPE
    machines = client.get("/api/machines", headers=bearer(body["access_token"]))
    assert machines.status_code == 200 and len(machines.json()["value"]) == len(MACHINES)


def test_a_code_is_redeemed_once(client: TestClient, uow_factory) -> None:
    client_id, v = public_client(uow_factory), verifier()
    code = code_of(sign_in(client, params_for(client_id, v)))
    assert redeem(client, client_id, code, v).status_code == 200
    again = redeem(client, client_id, code, v)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    assert again.json()["error_codes"] == [54005]


@pytest.mark.parametrize("wrong", ["verifier", "client", "redirect_uri"])
def test_a_code_is_bound_to_its_verifier_client_and_redirect_uri_and_spent_by_a_wrong_try(
    client: TestClient, uow_factory, wrong: str
) -> None:
    client_id, v = public_client(uow_factory), verifier()
    other = public_client(uow_factory)
    code = code_of(sign_in(client, params_for(client_id, v)))
    if wrong == "verifier":
        refused = redeem(client, client_id, code, verifier())
    elif wrong == "client":
        refused = redeem(client, other, code, v)
    else:
        refused = redeem(client, client_id, code, v, redirect_uri="https://app.example/other")
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant", refused.text
    # Whoever intercepted the code gained nothing, and the code is gone for everyone.
    assert redeem(client, client_id, code, v).json()["error_codes"] == [54005]


def test_a_code_expires_in_minutes(client: TestClient, uow_factory, clock: FrozenClock) -> None:
    client_id, v = public_client(uow_factory), verifier()
    code = code_of(sign_in(client, params_for(client_id, v)))
    clock.advance(121)
    expired = redeem(client, client_id, code, v)
    assert expired.status_code == 400 and expired.json()["error_codes"] == [70008]


@pytest.mark.parametrize(
    "redirect_uri",
    ["https://evil.example/callback", REDIRECT + "/../x", REDIRECT + "?next=https://evil.example", "//evil.example", ""],
)
def test_an_unregistered_redirect_uri_is_never_redirected_to(client: TestClient, uow_factory, redirect_uri: str) -> None:
    params = params_for(public_client(uow_factory), verifier(), redirect_uri=redirect_uri)
    for answer in (client.get(AUTHORIZE, params=params), client.post(AUTHORIZE, data=params)):
        assert answer.status_code in (400, 403) and "location" not in answer.headers
    shown = client.get(AUTHORIZE, params=params)
    assert "AADSTS50011" in shown.text and "request id" in shown.text


def test_an_unknown_client_gets_a_page_not_a_redirect(client: TestClient) -> None:
    answer = client.get(AUTHORIZE, params=params_for(str(uuid.uuid4()), verifier()))
    assert answer.status_code == 400 and "location" not in answer.headers and "AADSTS700016" in answer.text


@pytest.mark.parametrize("change", [{"code_challenge": None}, {"code_challenge_method": "plain"}, {"response_type": "token"}])
def test_requests_without_s256_pkce_go_back_to_the_client_as_errors(client: TestClient, uow_factory, change) -> None:
    answer = client.get(AUTHORIZE, params=params_for(public_client(uow_factory), verifier(), **change))
    assert answer.status_code == 303
    query = parse_qs(urlsplit(answer.headers["location"]).query)
    assert answer.headers["location"].startswith(REDIRECT + "?")
    assert query["error"][0] in ("invalid_request", "unsupported_response_type") and query["state"] == ["st-123"]
    assert "code" not in query


def test_the_sign_in_form_cannot_be_framed_or_posted_from_elsewhere(client: TestClient, uow_factory) -> None:
    params = params_for(public_client(uow_factory), verifier())
    form = client.get(AUTHORIZE, params=params)
    assert form.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in form.headers["content-security-policy"]
    assert "form-action 'self' https://app.example" in form.headers["content-security-policy"]
    cookie = form.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    # Without the form's token (a login-CSRF attempt) nothing is signed in.
    forged = client.post(AUTHORIZE, data={**params, "username": ADMIN, "password": TEST_PASSWORD})
    assert forged.status_code == 403 and "CsrfTokenInvalid" in forged.text and "location" not in forged.headers


def test_password_guessing_is_throttled_per_user_and_audited(client: TestClient, uow_factory) -> None:
    params = params_for(public_client(uow_factory), verifier())
    for _ in range(5):
        wrong = sign_in(client, params, password="not the password")
        assert wrong.status_code == 400 and "AADSTS50126" in wrong.text
    locked = sign_in(client, params)  # the right password, too late
    assert locked.status_code == 429 and "AADSTS50053" in locked.text and "location" not in locked.headers
    # Another user from the same place is not locked out by the first one's budget.
    assert sign_in(client, params, upn=READER).status_code == 303
    with uow_factory(write=False) as uow:
        failures = [e for e in uow.audit.list(TENANT) if e["action"] == "signin.failed"]
    assert len(failures) == 5 and {e["details"]["reason"] for e in failures} == {"wrong password"}
    assert {e["details"]["upn"] for e in failures} == {ADMIN}


def test_password_guessing_is_throttled_per_source(
    console_settings: Settings, uow_factory: UnitOfWorkFactory, clock: FrozenClock
) -> None:
    seed(uow_factory, MACHINES)
    settings = console_settings.model_copy(update={"signin_rate_limit_per_source": "3/minute"})
    with TestClient(create_app(settings, clock=clock), follow_redirects=False) as client:
        params = params_for(public_client(uow_factory), verifier())
        answers = [sign_in(client, params, upn=f"guess{i}@contoso.com", password="x").status_code for i in range(4)]
        assert answers == [400, 400, 400, 429]
        with uow_factory(write=False) as uow:
            # Unknown user names are not written to the audit trail (a flood must not store its text).
            assert not [e for e in uow.audit.list(TENANT) if e["action"] == "signin.failed"]


# The console


def console_sign_in(
    client: TestClient, upn: str = ADMIN, start: str = "/console/devices", *, base: str = "http://testserver"
) -> str:
    """Walk the console's sign-in as a browser would; return the session cookie's value."""
    to_signin = client.get(start)
    if to_signin.status_code == 200:  # signed in already: sign in again, as the sign-in link does
        signin_url = f"/console/signin?{urlencode({'next': start})}"
    else:
        assert to_signin.status_code == 303 and to_signin.headers["location"].startswith("/console/signin?next=")
        signin_url = to_signin.headers["location"]
    to_authorize = client.get(signin_url)
    assert to_authorize.status_code == 303
    signin_cookie = to_authorize.headers["set-cookie"].lower()
    assert "httponly" in signin_cookie and "path=/console/callback" in signin_cookie
    form = client.get(to_authorize.headers["location"])
    params = {k: v[0] for k, v in parse_qs(urlsplit(to_authorize.headers["location"]).query).items()}
    back = client.post(
        AUTHORIZE, data={**params, "form_token": form_token(form.text), "username": upn, "password": TEST_PASSWORD}
    )
    assert back.status_code == 303 and back.headers["location"].startswith(f"{base}/console/callback?")
    landed = client.get(back.headers["location"])
    assert landed.status_code == 303, landed.text
    assert landed.headers["location"] == start
    session_cookie = landed.headers["set-cookie"]
    lowered = session_cookie.lower()
    assert "httponly" in lowered and "samesite=lax" in lowered and "path=/console" in lowered and "max-age=" in lowered
    assert ("secure" in lowered) == base.startswith("https://")  # Secure under TLS
    assert ("secure" in signin_cookie) == base.startswith("https://")
    return client.cookies.get("bulwark_session", domain="testserver.local", path="/console")


def csrf_of(page_html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page_html)
    assert match
    return match.group(1)


def test_console_sign_in_starts_a_new_session_whatever_the_browser_held(client: TestClient) -> None:
    client.cookies.set("bulwark_session", "planted-by-an-attacker", domain="testserver.local", path="/console")
    first = console_sign_in(client)
    assert first and first != "planted-by-an-attacker"
    page = client.get("/console/devices")
    assert page.status_code == 200 and ADMIN in page.text
    # Signing in again gives another id and ends the previous session.
    second = console_sign_in(client, start="/console/actions")
    assert second != first
    client.cookies.set("bulwark_session", first, domain="testserver.local", path="/console")
    assert client.get("/console/devices").status_code == 303


def test_console_cookies_are_secure_under_tls(settings: Settings, uow_factory: UnitOfWorkFactory, clock: FrozenClock) -> None:
    seed(uow_factory, MACHINES)
    register_user(uow_factory, ADMIN, capabilities=["ViewData", "ManageSecuritySettings"])
    https = settings.model_copy(update={"public_base_url": "https://testserver"})
    with TestClient(create_app(https, clock=clock), base_url="https://testserver", follow_redirects=False) as client:
        assert console_sign_in(client, base="https://testserver")
        assert client.get("/console/devices").status_code == 200


def test_console_callback_refuses_a_state_it_did_not_start(client: TestClient) -> None:
    answer = client.get("/console/callback", params={"code": "x", "state": "forged"})
    assert (
        answer.status_code == 400
        and "invalid_state" in answer.text
        and "bulwark_session" not in answer.headers.get("set-cookie", "")
    )


def test_console_sends_people_only_to_its_own_pages() -> None:
    for target in ("//evil.example/x", "https://evil.example", "/\\evil.example", "/api/machines", None):
        assert _safe_next(target) == "/console/devices"
    assert _safe_next("/console/actions?status=Pending") == "/console/actions?status=Pending"


def test_console_forms_need_the_session_csrf_token_and_this_origin(client: TestClient, uow_factory) -> None:
    console_sign_in(client)
    page = client.get(f"/console/devices/{MACHINES[0].id}")
    assert page.headers["x-frame-options"] == "DENY" and "frame-ancestors 'none'" in page.headers["content-security-policy"]
    token = csrf_of(page.text)
    url = f"/console/devices/{MACHINES[0].id}/offboard"
    missing = client.post(url, data={"comment": "no token"})
    assert missing.status_code == 403 and "CsrfTokenInvalid" in missing.text
    assert missing.headers["request-id"] in missing.text
    wrong = client.post(url, data={"comment": "wrong token", "csrf_token": "x" * 43})
    assert wrong.status_code == 403
    elsewhere = client.post(url, data={"comment": "other site", "csrf_token": token}, headers={"Origin": "https://evil.example"})
    assert elsewhere.status_code == 403
    with uow_factory(write=False) as uow:
        assert uow.actions.active_for(MACHINES[0].id, ActionType.OFFBOARD) is None
    done = client.post(url, data={"comment": "<script>alert(1)</script>", "csrf_token": token})
    assert done.status_code == 303
    shown = client.get(done.headers["location"])
    assert "<script>alert(1)</script>" not in shown.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in shown.text
    with uow_factory(write=False) as uow:
        action = uow.actions.active_for(MACHINES[0].id, ActionType.OFFBOARD)
        events = [e for e in uow.audit.list(TENANT) if e["action"] == "machine_action.offboard.requested"]
    assert action is not None and action.request_source == "Portal" and action.requestor == ADMIN
    assert [e["outcome_status"] for e in events] == [200] and events[0]["actor_name"] == ADMIN


def test_console_quick_filters_go_through_odata(client: TestClient) -> None:
    console_sign_in(client)
    page = client.get("/console/devices", params={"tag": "VIP"})
    names = re.findall(r'<a href="/console/devices/[0-9a-f]{40}">([^<]+)</a>', page.text)
    assert names == [MACHINES[0].computer_dns_name]
    assert '<option value="Lab" >Lab</option>' in page.text or 'value="Lab"' in page.text
    page = client.get("/console/devices", params={"platform": "macOS", "sort": "name_desc"})
    assert re.findall(r'<a href="/console/devices/[0-9a-f]{40}">([^<]+)</a>', page.text) == [MACHINES[2].computer_dns_name]
    # A quote in the search is an OData string literal, not a way out of one.
    page = client.get("/console/devices", params={"q": "host-1' or 'a' eq 'a"})
    assert page.status_code == 200 and "No device matches." in page.text


def test_console_reflects_search_text_escaped(client: TestClient) -> None:
    console_sign_in(client)
    page = client.get("/console/devices", params={"q": '"><script>alert(1)</script>'})
    assert page.status_code == 200
    assert "<script>alert(1)</script>" not in page.text and "&#34;&gt;&lt;script&gt;" in page.text


def test_console_refusals_carry_the_api_code_and_request_id(client: TestClient) -> None:
    console_sign_in(client)
    page = client.get(f"/console/devices/{MACHINES[2].id}")
    assert "OsPlatformNotSupported" in page.text and 'id="offboard-open"' not in page.text
    token = csrf_of(page.text)
    refused = client.post(f"/console/devices/{MACHINES[2].id}/offboard", data={"comment": "try", "csrf_token": token})
    assert refused.status_code == 400 and "OsPlatformNotSupported" in refused.text
    assert refused.headers["request-id"] in refused.text


def test_a_view_only_user_cannot_cancel_through_the_api_either(client: TestClient, uow_factory) -> None:
    console_sign_in(client)
    page = client.get(f"/console/devices/{MACHINES[1].id}")
    done = client.post(f"/console/devices/{MACHINES[1].id}/offboard", data={"comment": "go", "csrf_token": csrf_of(page.text)})
    action_id = parse_qs(urlsplit(done.headers["location"]).query)["requested"][0]
    client_id, v = public_client(uow_factory), verifier()
    reader_token = redeem(client, client_id, code_of(sign_in(client, params_for(client_id, v), upn=READER)), v).json()
    cancel = client.post(
        f"/api/machineactions/{action_id}/cancel", json={"Comment": "reader"}, headers=bearer(reader_token["access_token"])
    )
    assert cancel.status_code == 403 and cancel.json()["error"]["code"] == "DisallowedOperation"


def test_the_console_registers_itself_once_and_follows_its_address(uow_factory: UnitOfWorkFactory, clock: FrozenClock) -> None:
    from bulwark.service.signin import ensure_console_client

    assert ensure_console_client(uow_factory, clock, TENANT, "http://a.example/console/callback") is None  # no tenant yet
    seed(uow_factory, [])
    first = ensure_console_client(uow_factory, clock, TENANT, "http://a.example/console/callback")
    assert first is not None
    assert ensure_console_client(uow_factory, clock, TENANT, "http://b.example/console/callback") == first
    with uow_factory(write=False) as uow:
        app = uow.identity.get_application(first)
    assert app is not None and app["secret_hash"] is None and app["redirect_uris"] == ["http://b.example/console/callback"]


def test_the_console_loads_nothing_from_elsewhere(client: TestClient) -> None:
    console_sign_in(client)
    page = client.get("/console/devices")
    for url in re.findall(r'(?:src|href)="([^"]+)"', page.text):
        assert url.startswith(("/", "?", "#", "data:")), url
    htmx = client.get("/console/static/vendor/htmx/htmx.min.js")
    assert htmx.status_code == 200 and "htmx" in htmx.text
    licence = client.get("/console/static/vendor/htmx/LICENSE")
    assert licence.status_code == 200 and "BSD" in licence.text
    assert client.get("/", follow_redirects=False).headers["location"] == "/console/"
