"""The authority and token verification over HTTP: discovery, grants, refusals, rotation, development mode."""

from __future__ import annotations

import base64
import json
import logging

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from fastapi.testclient import TestClient

from bulwark.api.app import create_app
from bulwark.auth.keys import generate_signing_key
from bulwark.auth.tokens import TokenIssuer
from bulwark.clock import FrozenClock
from bulwark.service.identity import retire_signing_key, rotate_signing_key, set_application_enabled
from bulwark.settings import Settings
from bulwark.store.uow import SqlUnitOfWorkFactory
from tests.conftest import TENANT, make_machine, seed
from tests.identity_support import (
    SCOPE,
    TEST_SECRET,
    app_token,
    bearer,
    register_app,
    token_endpoint,
)

MACHINE = make_machine(1)
OTHER_TENANT = "0b5a6c1e-1111-4c7a-9d55-0b6a3c1e8f10"


@pytest.fixture
def client(settings: Settings, uow_factory: SqlUnitOfWorkFactory, clock: FrozenClock):
    seed(uow_factory, [MACHINE])
    with TestClient(create_app(settings, clock=clock)) as test_client:
        yield test_client


def read(client: TestClient, token: str | None):
    headers = bearer(token) if token is not None else {}
    return client.get(f"/api/machines/{MACHINE.id}", headers=headers)


def assert_unauthorized(response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    error = response.json()["error"]
    assert error["code"] == "Unauthorized"
    assert error["message"] == "Unauthorized (invalid or expired authorization header)."
    assert error["target"] == response.headers["request-id"]


def active_key(client: TestClient):
    return client.app.state.runtime.auth.keyring().signing_key


def claims_of(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def resign(client: TestClient, token: str, **changes) -> str:
    """The token's claims with ``changes``, signed with the server's own key (so only the change is wrong)."""
    key = active_key(client)
    claims = {**claims_of(token), **changes}
    return jwt.encode(claims, key.private_key, algorithm="RS256", headers={"kid": key.kid})


def b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


# The authority


def test_discovery_document_names_the_endpoints_and_jwks_verifies_issued_tokens(client: TestClient, uow_factory) -> None:
    document = client.get(f"/{TENANT}/v2.0/.well-known/openid-configuration").json()
    base = "http://127.0.0.1:8000"
    assert document["issuer"] == f"{base}/{TENANT}/v2.0"
    assert document["token_endpoint"] == f"{base}/{TENANT}/oauth2/v2.0/token"
    assert document["jwks_uri"] == f"{base}/{TENANT}/discovery/v2.0/keys"
    token = app_token(client, register_app(uow_factory, ["Machine.Read.All"], name="Inventory sync"))
    keys = client.get(f"/{TENANT}/discovery/v2.0/keys").json()["keys"]
    jwk = next(k for k in keys if k["kid"] == jwt.get_unverified_header(token)["kid"])
    # The test clock is frozen in the past; expiry is checked against it elsewhere.
    claims = jwt.decode(
        token,
        jwt.PyJWK(jwk).key,
        algorithms=["RS256"],
        audience="https://api.securitycenter.microsoft.com",
        options={"verify_exp": False},
    )
    assert claims["iss"] == document["issuer"]
    assert claims["tid"] == TENANT
    assert claims["roles"] == ["Machine.Read.All"]
    assert claims["app_displayname"] == "Inventory sync"
    assert claims["exp"] - claims["iat"] == 3600 and claims["nbf"] == claims["iat"]


def test_unknown_tenant_has_no_authority(client: TestClient) -> None:
    for path in (f"/{OTHER_TENANT}/v2.0/.well-known/openid-configuration", f"/{OTHER_TENANT}/discovery/v2.0/keys"):
        response = client.get(path)
        assert response.status_code == 400
        assert response.json()["error_codes"] == [90002]


def test_client_credentials_answer_like_entra_id(client: TestClient, uow_factory) -> None:
    client_id = register_app(uow_factory, ["Machine.Offboard"])
    response = client.post(
        token_endpoint(),
        data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": TEST_SECRET, "scope": SCOPE},
    )
    assert response.status_code == 200
    body = response.json()
    assert list(body) == ["token_type", "expires_in", "ext_expires_in", "access_token"]
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600
    assert response.headers["Cache-Control"] == "no-store"
    # HTTP Basic client authentication works too.
    basic = base64.b64encode(f"{client_id}:{TEST_SECRET}".encode()).decode()
    response = client.post(
        token_endpoint(), data={"grant_type": "client_credentials", "scope": SCOPE}, headers={"Authorization": f"Basic {basic}"}
    )
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("form", "status", "error", "code"),
    [
        ({"client_secret": "wrong"}, 401, "invalid_client", 7000215),
        ({"client_id": "00000000-0000-0000-0000-000000000000"}, 400, "unauthorized_client", 700016),
        ({"scope": "https://graph.microsoft.com/.default"}, 400, "invalid_scope", 70011),
        ({"grant_type": "refresh_token"}, 400, "unsupported_grant_type", 70003),
        ({"client_secret": None}, 401, "invalid_client", 7000218),
    ],
)
def test_token_requests_refused(client: TestClient, uow_factory, form: dict, status: int, error: str, code: int) -> None:
    fields = {
        "grant_type": "client_credentials",
        "client_id": register_app(uow_factory),
        "client_secret": TEST_SECRET,
        "scope": SCOPE,
    }
    fields.update(form)
    response = client.post(token_endpoint(), data={k: v for k, v in fields.items() if v is not None})
    assert response.status_code == status
    assert response.json()["error"] == error
    assert response.json()["error_codes"] == [code]
    assert response.json()["error_description"].startswith(f"AADSTS{code}:")


def test_unknown_tenant_gets_no_token(client: TestClient, uow_factory) -> None:
    fields = {
        "grant_type": "client_credentials",
        "client_id": register_app(uow_factory),
        "client_secret": TEST_SECRET,
        "scope": SCOPE,
    }
    response = client.post(token_endpoint(OTHER_TENANT), data=fields)
    assert response.status_code == 400
    assert response.json()["error_codes"] == [90002]


# Verification of every call


def test_a_valid_token_is_served_and_no_token_is_not(client: TestClient, uow_factory) -> None:
    token = app_token(client, register_app(uow_factory, ["Machine.Read.All"]))
    assert read(client, token).status_code == 200
    missing = read(client, None)
    assert_unauthorized(missing)
    assert missing.headers["WWW-Authenticate"] == 'Bearer realm="bulwark"'
    assert_unauthorized(client.get(f"/api/machines/{MACHINE.id}", headers={"Authorization": f"Basic {token}"}))
    assert_unauthorized(read(client, "not-a-jwt"))


def test_forged_signature_is_refused(client: TestClient, uow_factory) -> None:
    token = app_token(client, register_app(uow_factory, ["Machine.Read.All"]))
    # Same header and claims, signed by a key the server never had, under the server's own kid.
    impostor = generate_signing_key()
    forged = jwt.encode(claims_of(token), impostor.private_key, algorithm="RS256", headers={"kid": active_key(client).kid})
    assert_unauthorized(read(client, forged))
    # A tampered payload under the original signature.
    header, _, signature = token.split(".")
    tampered = ".".join([header, b64({**claims_of(token), "roles": ["Machine.Offboard"]}), signature])
    assert_unauthorized(read(client, tampered))


def test_expiry_and_not_before_with_small_leeway(client: TestClient, uow_factory, clock: FrozenClock) -> None:
    token = app_token(client, register_app(uow_factory, ["Machine.Read.All"]))
    clock.advance(3600 + 30)
    assert read(client, token).status_code == 200, "30 s past exp is within the leeway"
    clock.advance(31)
    response = read(client, token)
    assert_unauthorized(response)
    assert "expired" in response.headers["WWW-Authenticate"]
    now = int(clock.now().timestamp())
    assert_unauthorized(read(client, resign(client, token, nbf=now + 120, iat=now, exp=now + 3600)))
    assert read(client, resign(client, token, nbf=now + 30, iat=now, exp=now + 3600)).status_code == 200


@pytest.mark.parametrize(
    "changes",
    [
        {"aud": "https://graph.microsoft.com"},
        {"iss": "https://login.microsoftonline.com/" + TENANT + "/v2.0"},
        {"iss": "http://127.0.0.1:8000/" + OTHER_TENANT + "/v2.0", "tid": OTHER_TENANT},
        {"tid": OTHER_TENANT},
    ],
    ids=["wrong-audience", "untrusted-issuer", "unknown-tenant", "tenant-not-matching-issuer"],
)
def test_claims_that_do_not_fit_are_refused(client: TestClient, uow_factory, changes: dict) -> None:
    token = app_token(client, register_app(uow_factory, ["Machine.Read.All"]))
    assert read(client, resign(client, token, **changes)).status_code == 401


def test_alg_none_is_refused(client: TestClient, uow_factory) -> None:
    token = app_token(client, register_app(uow_factory, ["Machine.Read.All"]))
    unsigned = f"{b64({'alg': 'none', 'typ': 'JWT', 'kid': active_key(client).kid})}.{b64(claims_of(token))}."
    assert_unauthorized(read(client, unsigned))


def test_hmac_signed_with_the_public_key_is_refused(client: TestClient, uow_factory) -> None:
    """Key confusion: the published RSA public key used as an HS256 secret must not verify."""
    import hashlib
    import hmac

    token = app_token(client, register_app(uow_factory, ["Machine.Read.All"]))
    key = active_key(client)
    public_pem = key.public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    signing_input = f"{b64({'alg': 'HS256', 'typ': 'JWT', 'kid': key.kid})}.{b64(claims_of(token))}"
    signature = base64.urlsafe_b64encode(hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()).rstrip(b"=")
    assert_unauthorized(read(client, f"{signing_input}.{signature.decode()}"))


def test_disabled_application_gets_no_token_and_its_tokens_stop_working(
    client: TestClient, uow_factory, clock: FrozenClock, settings: Settings
) -> None:
    client_id = register_app(uow_factory, ["Machine.Read.All"])
    token = app_token(client, client_id)
    assert read(client, token).status_code == 200
    set_application_enabled(uow_factory(), TENANT, client_id, False)
    clock.advance(settings.auth_cache_seconds)
    assert_unauthorized(read(client, token))
    refused = client.post(
        token_endpoint(),
        data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": TEST_SECRET, "scope": SCOPE},
    )
    assert refused.status_code == 400 and refused.json()["error_codes"] == [7000112]


def test_a_token_answered_from_memory_stops_working_like_any_other(
    client: TestClient, uow_factory, clock: FrozenClock, settings: Settings
) -> None:
    """Repeated calls with one token are answered from memory; disabling its application, retiring
    its key and its expiry still end it within the same bounds as for a token seen once."""
    disabled_id, retired_id, expiring_id = (register_app(uow_factory, ["Machine.Read.All"]) for _ in range(3))
    disabled, expiring = app_token(client, disabled_id), app_token(client, expiring_id)
    for token in (disabled, expiring):
        for _ in range(3):
            assert read(client, token).status_code == 200
    set_application_enabled(uow_factory(), TENANT, disabled_id, False)
    clock.advance(settings.auth_cache_seconds)
    assert_unauthorized(read(client, disabled))
    assert read(client, expiring).status_code == 200

    old = app_token(client, retired_id)
    for _ in range(3):
        assert read(client, old).status_code == 200
    rotate_signing_key(uow_factory(), clock)
    clock.advance(61)  # the key ring is re-read at most a minute later
    for _ in range(3):
        assert read(client, old).status_code == 200
    retire_signing_key(uow_factory(), clock, jwt.get_unverified_header(old)["kid"])
    clock.advance(61)
    assert_unauthorized(read(client, old))
    # Tokens of the new key, the same application's among them, still work.
    assert read(client, app_token(client, retired_id)).status_code == 200

    expiring = app_token(client, expiring_id)
    for _ in range(3):
        assert read(client, expiring).status_code == 200
    expires_at = claims_of(expiring)["exp"]
    clock.advance(expires_at - clock.now().timestamp() + settings.token_leeway_seconds)
    assert_unauthorized(read(client, expiring))


def test_token_of_an_application_that_does_not_exist_is_refused(client: TestClient, uow_factory) -> None:
    issuer = TokenIssuer(client.app.state.runtime.auth.keyring, "http://127.0.0.1:8000", client.app.state.runtime.clock)
    seed(uow_factory, [], tenant=OTHER_TENANT)
    ghost = issuer.issue_application_token(TENANT, "11111111-2222-3333-4444-555555555555", "Ghost", ["Machine.Read.All"])
    assert_unauthorized(read(client, ghost.access_token))


def test_rotated_key_keeps_verifying_until_retired(client: TestClient, uow_factory, clock: FrozenClock) -> None:
    client_id = register_app(uow_factory, ["Machine.Read.All"])
    old_token = app_token(client, client_id)
    old_kid = jwt.get_unverified_header(old_token)["kid"]
    new_key = rotate_signing_key(uow_factory(), clock)
    clock.advance(61)  # the key ring is re-read at most a minute later
    new_token = app_token(client, client_id)
    assert jwt.get_unverified_header(new_token)["kid"] == new_key.kid
    kids = [k["kid"] for k in client.get(f"/{TENANT}/discovery/v2.0/keys").json()["keys"]]
    assert kids == [new_key.kid, old_kid]
    assert read(client, old_token).status_code == 200
    assert read(client, new_token).status_code == 200
    retire_signing_key(uow_factory(), clock, old_kid)
    clock.advance(61)
    assert_unauthorized(read(client, old_token))
    assert read(client, new_token).status_code == 200


def test_authentication_off_only_when_set_and_then_said_on_every_response(
    settings: Settings, uow_factory: SqlUnitOfWorkFactory, caplog
) -> None:
    seed(uow_factory, [MACHINE])
    with caplog.at_level(logging.WARNING, logger="bulwark.auth"):
        app = create_app(settings.model_copy(update={"auth_enabled": False}))
    assert any("AUTHENTICATION IS DISABLED" in r.getMessage() for r in caplog.records)
    with TestClient(app) as client:
        served = read(client, None)
        assert served.status_code == 200
        assert served.headers["Bulwark-Warning"] == "authentication disabled"
        assert client.get("/healthz").headers["Bulwark-Warning"] == "authentication disabled"
    with TestClient(create_app(settings)) as client:
        assert "Bulwark-Warning" not in read(client, None).headers
        assert_unauthorized(read(client, None))
