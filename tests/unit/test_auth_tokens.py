"""Issuing and verifying Entra-ID-style access tokens, including tokens of external OpenID providers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from bulwark.auth.keys import (
    KeyRing,
    KeyRingCache,
    SigningKey,
    generate_signing_key,
    retire,
    rotate,
)
from bulwark.auth.tls import TlsFiles, ensure_local_tls
from bulwark.auth.tokens import (
    DEFENDER_APP_ID,
    DEFENDER_AUDIENCE,
    ExternalIssuer,
    InvalidToken,
    SigningKeysUnavailable,
    TokenIssuer,
    TokenVerifier,
    openid_configuration,
)
from bulwark.clock import FrozenClock

NOW = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
BASE_URL = "https://bulwark.test"
TENANT = "6a1b4f3e-2c7d-4e8f-9a0b-1c2d3e4f5a6b"
OTHER_TENANT = "0f0e0d0c-0b0a-4909-8807-060504030201"
APP_ID = "3f2504e0-4f89-41d3-9a0c-0305e82c3301"
USER_OID = "9c8b7a69-5847-4362-a1b0-c9d8e7f6a5b4"


@pytest.fixture(scope="module")
def key_pool() -> list[SigningKey]:
    """RSA keys generated once for the module; generation is the slow part of these tests."""
    return [generate_signing_key(NOW, active=False) for _ in range(4)]


@pytest.fixture
def signing_key(key_pool: list[SigningKey]) -> SigningKey:
    return replace(key_pool[0], active=True)


@pytest.fixture
def stranger_key(key_pool: list[SigningKey]) -> SigningKey:
    """A key nobody trusts."""
    return key_pool[1]


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(NOW)


@pytest.fixture
def issuer(signing_key: SigningKey, clock: FrozenClock) -> TokenIssuer:
    return TokenIssuer(KeyRing([signing_key]), BASE_URL, clock)


@pytest.fixture
def verifier(signing_key: SigningKey, clock: FrozenClock) -> TokenVerifier:
    return TokenVerifier(lambda: KeyRing([signing_key]), BASE_URL, {TENANT}.__contains__, clock)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unsigned_parts(header: dict[str, Any], claims: dict[str, Any]) -> str:
    return f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"


def claims_of(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


def app_claims(**overrides: Any) -> dict[str, Any]:
    """Claims of a valid application token at NOW, to sign by hand in attack tests."""
    claims = {
        "aud": DEFENDER_AUDIENCE,
        "iss": f"{BASE_URL}/{TENANT}/v2.0",
        "iat": int(NOW.timestamp()),
        "nbf": int(NOW.timestamp()),
        "exp": int(NOW.timestamp()) + 3600,
        "tid": TENANT,
        "appid": APP_ID,
        "azp": APP_ID,
        "oid": APP_ID,
        "sub": APP_ID,
        "idtyp": "app",
        "roles": ["Machine.Offboard"],
        "ver": "2.0",
    }
    claims.update(overrides)
    return claims


def sign(key: SigningKey, claims: dict[str, Any], *, alg: str = "RS256", kid: str | None = None) -> str:
    return jwt.encode(claims, key.private_key, algorithm=alg, headers={"kid": kid or key.kid})


# --- issuing and the happy path ---------------------------------------------------------------


def test_application_token_round_trip(issuer: TokenIssuer, verifier: TokenVerifier) -> None:
    token, expires_in = issuer.issue_application_token(
        TENANT, APP_ID, "Offboarding automation", ["Machine.Offboard", "Machine.Read.All"]
    )
    verified = verifier.verify(token)

    assert expires_in == 3600
    assert verified.kind == "application"
    assert verified.tenant_id == TENANT
    assert verified.app_id == APP_ID
    assert verified.roles == ("Machine.Offboard", "Machine.Read.All")
    assert verified.permissions == verified.roles
    assert verified.scopes == ()
    assert verified.upn is None
    assert verified.name == "Offboarding automation"
    assert verified.requestor == "Offboarding automation"
    assert verified.issuer == f"{BASE_URL}/{TENANT}/v2.0"
    assert verified.expires_at == NOW + timedelta(hours=1)


def test_application_token_carries_entra_claims_and_header(issuer: TokenIssuer, signing_key: SigningKey) -> None:
    token, _ = issuer.issue_application_token(TENANT, APP_ID, "Automation", ["Machine.Offboard"])
    header = jwt.get_unverified_header(token)
    claims = claims_of(token)

    assert header == {"alg": "RS256", "typ": "JWT", "kid": signing_key.kid}
    assert claims["aud"] == "https://api.securitycenter.microsoft.com"
    assert claims["iss"] == f"https://bulwark.test/{TENANT}/v2.0"
    assert claims["tid"] == TENANT
    assert claims["appid"] == claims["azp"] == APP_ID
    assert claims["oid"] == claims["sub"]
    assert claims["roles"] == ["Machine.Offboard"]
    assert claims["idtyp"] == "app"
    assert claims["ver"] == "2.0"
    assert claims["app_displayname"] == "Automation"
    assert claims["iat"] == claims["nbf"] == int(NOW.timestamp())
    assert claims["exp"] == int(NOW.timestamp()) + 3600
    assert claims["uti"] == claims["jti"]
    assert "scp" not in claims


def test_application_object_id_is_stable_per_tenant_and_application(issuer: TokenIssuer) -> None:
    first = claims_of(issuer.issue_application_token(TENANT, APP_ID, "A", []).access_token)
    second = claims_of(issuer.issue_application_token(TENANT, APP_ID, "A", []).access_token)
    elsewhere = claims_of(issuer.issue_application_token(OTHER_TENANT, APP_ID, "A", []).access_token)
    assert first["oid"] == second["oid"] != elsewhere["oid"]


def test_every_token_has_its_own_id(issuer: TokenIssuer) -> None:
    ids = {claims_of(issuer.issue_application_token(TENANT, APP_ID, "A", []).access_token)["uti"] for _ in range(20)}
    assert len(ids) == 20


def test_user_token_round_trip(issuer: TokenIssuer, verifier: TokenVerifier) -> None:
    token, expires_in = issuer.issue_user_token(
        TENANT,
        APP_ID,
        USER_OID,
        "admin@contoso.com",
        "Ada Admin",
        ["Machine.Offboard", "Machine.Read"],
    )
    verified = verifier.verify(token)
    claims = claims_of(token)

    assert expires_in == 3600
    assert verified.kind == "user"
    assert verified.object_id == USER_OID
    assert verified.app_id == APP_ID
    assert verified.scopes == ("Machine.Offboard", "Machine.Read")
    assert verified.permissions == verified.scopes
    assert verified.roles == ()
    assert verified.upn == "admin@contoso.com"
    assert verified.name == "Ada Admin"
    assert verified.requestor == "admin@contoso.com"
    assert claims["scp"] == "Machine.Offboard Machine.Read"
    assert claims["preferred_username"] == claims["upn"] == "admin@contoso.com"
    assert claims["idtyp"] == "user"
    # Entra ID subjects are per application, so they differ from the user's object id.
    assert claims["sub"] != USER_OID


def test_scopes_with_spaces_are_refused(issuer: TokenIssuer) -> None:
    with pytest.raises(ValueError):
        issuer.issue_user_token(TENANT, APP_ID, USER_OID, "a@b.c", "A", ["Machine.Read Machine.Offboard"])


def test_discovery_document_names_the_issuer_of_issued_tokens(issuer: TokenIssuer) -> None:
    config = openid_configuration(BASE_URL + "/", TENANT)
    token = issuer.issue_application_token(TENANT, APP_ID, "A", []).access_token
    assert config["issuer"] == claims_of(token)["iss"]
    assert config["token_endpoint"] == f"{BASE_URL}/{TENANT}/oauth2/v2.0/token"
    assert config["jwks_uri"] == f"{BASE_URL}/{TENANT}/discovery/v2.0/keys"
    assert config["id_token_signing_alg_values_supported"] == ["RS256"]


# --- time -------------------------------------------------------------------------------------


def test_expired_token_is_refused(issuer: TokenIssuer, verifier: TokenVerifier, clock: FrozenClock) -> None:
    token = issuer.issue_application_token(TENANT, APP_ID, "A", []).access_token
    clock.advance(3600 + 61)
    with pytest.raises(InvalidToken, match="expired at 2025-03-01T10:00:00Z"):
        verifier.verify(token)


def test_expiry_allows_the_leeway(issuer: TokenIssuer, verifier: TokenVerifier, clock: FrozenClock) -> None:
    token = issuer.issue_application_token(TENANT, APP_ID, "A", []).access_token
    clock.advance(3600 + 59)
    assert verifier.verify(token).app_id == APP_ID


def test_leeway_is_configurable(signing_key: SigningKey, issuer: TokenIssuer, clock: FrozenClock) -> None:
    strict = TokenVerifier(KeyRing([signing_key]), BASE_URL, {TENANT}.__contains__, clock, leeway_seconds=0)
    token = issuer.issue_application_token(TENANT, APP_ID, "A", []).access_token
    clock.advance(3600)
    with pytest.raises(InvalidToken, match="expired"):
        strict.verify(token)


def test_token_from_the_future_is_refused(signing_key: SigningKey, verifier: TokenVerifier) -> None:
    ahead = TokenIssuer(KeyRing([signing_key]), BASE_URL, FrozenClock(NOW + timedelta(seconds=120)))
    token = ahead.issue_application_token(TENANT, APP_ID, "A", []).access_token
    with pytest.raises(InvalidToken, match="not valid before 2025-03-01T09:02:00Z"):
        verifier.verify(token)


def test_small_clock_skew_is_within_leeway(signing_key: SigningKey, verifier: TokenVerifier) -> None:
    ahead = TokenIssuer(KeyRing([signing_key]), BASE_URL, FrozenClock(NOW + timedelta(seconds=30)))
    token = ahead.issue_application_token(TENANT, APP_ID, "A", []).access_token
    assert verifier.verify(token).tenant_id == TENANT


def test_token_without_expiry_is_refused(signing_key: SigningKey, verifier: TokenVerifier) -> None:
    claims = app_claims()
    del claims["exp"]
    with pytest.raises(InvalidToken, match="no exp claim"):
        verifier.verify(sign(signing_key, claims))


def test_non_numeric_expiry_is_refused(signing_key: SigningKey, verifier: TokenVerifier) -> None:
    with pytest.raises(InvalidToken, match="exp must be a number"):
        verifier.verify(sign(signing_key, app_claims(exp="tomorrow")))


# --- audience, issuer, tenant -----------------------------------------------------------------


def test_foreign_audience_is_refused(signing_key: SigningKey, verifier: TokenVerifier) -> None:
    token = sign(signing_key, app_claims(aud="https://graph.microsoft.com"))
    with pytest.raises(InvalidToken, match="audience is not accepted"):
        verifier.verify(token)


def test_defender_application_id_is_accepted_as_audience(signing_key: SigningKey, verifier: TokenVerifier) -> None:
    token = sign(signing_key, app_claims(aud=DEFENDER_APP_ID))
    assert verifier.verify(token).roles == ("Machine.Offboard",)


def test_missing_audience_is_refused(signing_key: SigningKey, verifier: TokenVerifier) -> None:
    claims = app_claims()
    del claims["aud"]
    with pytest.raises(InvalidToken, match="no aud claim"):
        verifier.verify(sign(signing_key, claims))


def test_untrusted_issuer_is_refused(signing_key: SigningKey, verifier: TokenVerifier) -> None:
    token = sign(signing_key, app_claims(iss=f"https://login.example.net/{TENANT}/v2.0"))
    with pytest.raises(InvalidToken, match="issuer 'https://login.example.net/.*' is not trusted"):
        verifier.verify(token)


def test_issuer_must_have_the_v2_shape(signing_key: SigningKey, verifier: TokenVerifier) -> None:
    token = sign(signing_key, app_claims(iss=f"{BASE_URL}/{TENANT}/"))
    with pytest.raises(InvalidToken, match="not trusted"):
        verifier.verify(token)


def test_tenant_claim_must_match_the_issuer(signing_key: SigningKey, verifier: TokenVerifier) -> None:
    token = sign(signing_key, app_claims(tid=OTHER_TENANT))
    with pytest.raises(InvalidToken, match="does not match its issuer"):
        verifier.verify(token)


def test_unknown_tenant_is_refused(issuer: TokenIssuer, verifier: TokenVerifier) -> None:
    token = issuer.issue_application_token(OTHER_TENANT, APP_ID, "A", ["Machine.Offboard"]).access_token
    with pytest.raises(InvalidToken, match=f"tenant {OTHER_TENANT} is not known"):
        verifier.verify(token)


# --- signatures and algorithms ----------------------------------------------------------------


def test_token_signed_by_another_key_under_a_trusted_kid_is_refused(
    signing_key: SigningKey, stranger_key: SigningKey, verifier: TokenVerifier
) -> None:
    forged = sign(stranger_key, app_claims(), kid=signing_key.kid)
    with pytest.raises(InvalidToken, match="signature does not verify"):
        verifier.verify(forged)


def test_altered_claims_break_the_signature(issuer: TokenIssuer, verifier: TokenVerifier) -> None:
    token = issuer.issue_application_token(TENANT, APP_ID, "A", ["Machine.Read.All"]).access_token
    header, _, signature = token.split(".")
    widened = b64url(json.dumps({**claims_of(token), "roles": ["Machine.Offboard"]}).encode())
    with pytest.raises(InvalidToken, match="signature does not verify"):
        verifier.verify(f"{header}.{widened}.{signature}")


def test_unknown_kid_is_refused(stranger_key: SigningKey, verifier: TokenVerifier) -> None:
    with pytest.raises(InvalidToken, match=f"signing key '{stranger_key.kid}' is not known"):
        verifier.verify(sign(stranger_key, app_claims()))


def test_missing_kid_is_refused(signing_key: SigningKey, verifier: TokenVerifier) -> None:
    token = jwt.encode(app_claims(), signing_key.private_key, algorithm="RS256")
    with pytest.raises(InvalidToken, match="no signing key"):
        verifier.verify(token)


def test_alg_none_is_refused(signing_key: SigningKey, verifier: TokenVerifier) -> None:
    token = unsigned_parts({"alg": "none", "typ": "JWT", "kid": signing_key.kid}, app_claims()) + "."
    with pytest.raises(InvalidToken, match="algorithm 'none' is not allowed"):
        verifier.verify(token)


def test_hs256_signed_with_the_public_key_is_refused(signing_key: SigningKey, verifier: TokenVerifier) -> None:
    # The key-confusion attack: the public key (published in the JWKS) used as an HMAC secret.
    public_pem = signing_key.public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    signing_input = unsigned_parts({"alg": "HS256", "typ": "JWT", "kid": signing_key.kid}, app_claims())
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    with pytest.raises(InvalidToken, match="algorithm 'HS256' is not allowed; expected RS256"):
        verifier.verify(f"{signing_input}.{b64url(mac)}")


def test_rs512_is_refused_unless_allowed(signing_key: SigningKey, clock: FrozenClock) -> None:
    token = sign(signing_key, app_claims(), alg="RS512")
    pinned = TokenVerifier(KeyRing([signing_key]), BASE_URL, {TENANT}.__contains__, clock)
    with pytest.raises(InvalidToken, match="algorithm 'RS512' is not allowed"):
        pinned.verify(token)
    widened = TokenVerifier(
        KeyRing([signing_key]),
        BASE_URL,
        {TENANT}.__contains__,
        clock,
        algorithms=("RS256", "RS512"),
    )
    assert widened.verify(token).app_id == APP_ID


def test_symmetric_algorithms_cannot_be_configured(signing_key: SigningKey, clock: FrozenClock) -> None:
    with pytest.raises(ValueError, match="only RSA signing algorithms"):
        TokenVerifier(KeyRing([signing_key]), BASE_URL, {TENANT}.__contains__, clock, algorithms=("HS256",))
    with pytest.raises(ValueError, match="only RSA signing algorithms"):
        ExternalIssuer("https://idp.example", "api://bulwark", algorithms=("RS256", "HS256"))


@pytest.mark.parametrize("garbage", ["", "not-a-token", "a.b.c", "eyJhbGciOiJSUzI1NiJ9.e30", "x" * 20_000])
def test_malformed_tokens_are_refused(verifier: TokenVerifier, garbage: str) -> None:
    with pytest.raises(InvalidToken):
        verifier.verify(garbage)


# --- rotation ---------------------------------------------------------------------------------


def test_rotation_keeps_old_tokens_valid_until_the_old_key_is_retired(signing_key: SigningKey, clock: FrozenClock) -> None:
    store = {"keys": [signing_key]}
    current = lambda: KeyRing(store["keys"])  # noqa: E731 - stands in for the key store
    issuer = TokenIssuer(current, BASE_URL, clock)
    verifier = TokenVerifier(current, BASE_URL, {TENANT}.__contains__, clock)
    before = issuer.issue_application_token(TENANT, APP_ID, "A", []).access_token

    store["keys"] = rotate(store["keys"], clock.now())
    after = issuer.issue_application_token(TENANT, APP_ID, "A", []).access_token
    assert jwt.get_unverified_header(after)["kid"] != signing_key.kid
    assert verifier.verify(before).app_id == APP_ID
    assert verifier.verify(after).app_id == APP_ID

    store["keys"] = retire(store["keys"], signing_key.kid, clock.now())
    with pytest.raises(InvalidToken, match=f"signing key '{signing_key.kid}' is not known"):
        verifier.verify(before)
    assert verifier.verify(after).app_id == APP_ID


# --- external OpenID Connect providers --------------------------------------------------------


@dataclass
class FakeProvider:
    """A tiny OpenID provider on 127.0.0.1 serving discovery and JWKS documents."""

    base_url: str
    routes: dict[str, tuple[int, Any]] = field(default_factory=dict)
    hits: list[str] = field(default_factory=list)

    def count(self, path: str) -> int:
        return self.hits.count(path)


@contextmanager
def running_provider(tls: TlsFiles | None = None) -> Iterator[FakeProvider]:
    """Serve a FakeProvider on 127.0.0.1 over HTTP, or over HTTPS with `tls`'s certificate."""
    state: dict[str, FakeProvider] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            fake = state["provider"]
            fake.hits.append(self.path)
            status, body = fake.routes.get(self.path, (404, {"error": "not found"}))
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    scheme = "http"
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tls.cert, tls.key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    state["provider"] = FakeProvider(base_url=f"{scheme}://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield state["provider"]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def provider() -> Iterator[FakeProvider]:
    with running_provider() as fake:
        yield fake


@dataclass
class Federation:
    """An external Entra-like tenant served by the fake provider, and a verifier that trusts it."""

    provider: FakeProvider
    issuer_url: str
    key: SigningKey
    issuer: TokenIssuer
    verifier: TokenVerifier
    discovery_path: str
    jwks_path: str

    def publish(self, *keys: SigningKey) -> None:
        self.provider.routes[self.jwks_path] = (200, KeyRing(keys).jwks())


@pytest.fixture
def federation(provider: FakeProvider, key_pool: list[SigningKey], signing_key: SigningKey, clock: FrozenClock) -> Federation:
    # The provider is itself an Entra-style authority: another Bulwark serves the same documents.
    external_key = replace(key_pool[2], active=True)
    config = openid_configuration(provider.base_url, OTHER_TENANT)
    discovery_path = f"/{OTHER_TENANT}/v2.0/.well-known/openid-configuration"
    jwks_path = f"/{OTHER_TENANT}/discovery/v2.0/keys"
    provider.routes[discovery_path] = (200, config)
    trusted = ExternalIssuer(config["issuer"], DEFENDER_AUDIENCE, allow_http=True)
    verifier = TokenVerifier(
        KeyRing([signing_key]),
        BASE_URL,
        {TENANT, OTHER_TENANT}.__contains__,
        clock,
        external_issuers=[trusted],
    )
    fed = Federation(
        provider=provider,
        issuer_url=config["issuer"],
        key=external_key,
        issuer=TokenIssuer(KeyRing([external_key]), provider.base_url, clock),
        verifier=verifier,
        discovery_path=discovery_path,
        jwks_path=jwks_path,
    )
    fed.publish(external_key)
    return fed


def test_external_token_is_verified_with_keys_from_discovery(federation: Federation) -> None:
    token = federation.issuer.issue_user_token(
        OTHER_TENANT, APP_ID, USER_OID, "soc@fabrikam.com", "SOC Analyst", ["Machine.Offboard"]
    ).access_token
    verified = federation.verifier.verify(token)
    assert verified.issuer == federation.issuer_url
    assert verified.tenant_id == OTHER_TENANT
    assert verified.kind == "user"
    assert verified.upn == "soc@fabrikam.com"
    assert verified.scopes == ("Machine.Offboard",)
    assert federation.provider.count(federation.discovery_path) == 1
    assert federation.provider.count(federation.jwks_path) == 1


def test_external_keys_are_fetched_once_for_many_tokens(federation: Federation, clock: FrozenClock) -> None:
    for index in range(25):
        token = federation.issuer.issue_application_token(OTHER_TENANT, APP_ID, f"App {index}", ["Machine.Offboard"]).access_token
        assert federation.verifier.verify(token).name == f"App {index}"
        clock.advance(60)
    assert federation.provider.count(federation.discovery_path) == 1
    assert federation.provider.count(federation.jwks_path) == 1


def test_external_keys_are_fetched_again_when_the_cache_expires(federation: Federation, clock: FrozenClock) -> None:
    federation.verifier.verify(federation.issuer.issue_application_token(OTHER_TENANT, APP_ID, "A", []).access_token)
    clock.advance(3601)
    federation.verifier.verify(federation.issuer.issue_application_token(OTHER_TENANT, APP_ID, "A", []).access_token)
    assert federation.provider.count(federation.jwks_path) == 2


def test_provider_key_rotation_is_picked_up_on_an_unknown_kid(
    federation: Federation, key_pool: list[SigningKey], clock: FrozenClock
) -> None:
    federation.verifier.verify(federation.issuer.issue_application_token(OTHER_TENANT, APP_ID, "A", []).access_token)
    new_key = replace(key_pool[3], active=True)
    federation.publish(new_key, replace(federation.key, active=False))
    clock.advance(120)
    rotated = TokenIssuer(KeyRing([new_key]), federation.provider.base_url, clock)
    token = rotated.issue_application_token(OTHER_TENANT, APP_ID, "A", []).access_token
    assert federation.verifier.verify(token).app_id == APP_ID
    assert federation.provider.count(federation.jwks_path) == 2


def test_unknown_kid_refetches_at_most_once_a_minute(
    federation: Federation, stranger_key: SigningKey, clock: FrozenClock
) -> None:
    federation.verifier.verify(federation.issuer.issue_application_token(OTHER_TENANT, APP_ID, "A", []).access_token)
    clock.advance(61)
    forged = sign(stranger_key, app_claims(iss=federation.issuer_url, tid=OTHER_TENANT))
    for _ in range(10):
        with pytest.raises(InvalidToken, match="is not known to issuer"):
            federation.verifier.verify(forged)
    assert federation.provider.count(federation.jwks_path) == 2
    clock.advance(61)
    with pytest.raises(InvalidToken, match="is not known to issuer"):
        federation.verifier.verify(forged)
    assert federation.provider.count(federation.jwks_path) == 3


def test_external_token_for_another_audience_is_refused(federation: Federation) -> None:
    token = sign(federation.key, app_claims(iss=federation.issuer_url, tid=OTHER_TENANT, aud="api://other"))
    with pytest.raises(InvalidToken, match="audience is not accepted"):
        federation.verifier.verify(token)


def test_external_token_key_confusion_is_refused(federation: Federation) -> None:
    public_pem = federation.key.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input = unsigned_parts(
        {"alg": "HS256", "kid": federation.key.kid},
        app_claims(iss=federation.issuer_url, tid=OTHER_TENANT),
    )
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    with pytest.raises(InvalidToken, match="'HS256' is not allowed"):
        federation.verifier.verify(f"{signing_input}.{b64url(mac)}")
    # Refused on the header alone: no key fetch for a token that cannot be valid.
    assert federation.provider.count(federation.jwks_path) == 0


def test_generic_oidc_claims_are_mapped(
    provider: FakeProvider, federation: Federation, signing_key: SigningKey, clock: FrozenClock
) -> None:
    # A provider that knows nothing of Entra: no tid, idtyp or azp; RFC 9068 client_id and scope.
    trusted = ExternalIssuer(federation.issuer_url, "api://bulwark", tenant_id=TENANT, allow_http=True)
    verifier = TokenVerifier(KeyRing([signing_key]), BASE_URL, {TENANT}.__contains__, clock, external_issuers=[trusted])
    claims = {
        "iss": federation.issuer_url,
        "aud": ["api://bulwark", "account"],
        "exp": int(NOW.timestamp()) + 300,
        "iat": int(NOW.timestamp()),
        "sub": "f:1234:alice",
        "client_id": "soar-connector",
        "scope": "Machine.Read Machine.Offboard",
        "preferred_username": "alice@example.org",
        "name": "Alice",
    }
    verified = verifier.verify(sign(federation.key, claims))
    assert verified.tenant_id == TENANT
    assert verified.kind == "user"
    assert verified.app_id == "soar-connector"
    assert verified.object_id == "f:1234:alice"
    assert verified.scopes == ("Machine.Read", "Machine.Offboard")
    assert verified.requestor == "alice@example.org"


def test_external_tenant_must_be_known(federation: Federation, clock: FrozenClock, signing_key: SigningKey) -> None:
    trusted = ExternalIssuer(federation.issuer_url, DEFENDER_AUDIENCE, allow_http=True)
    verifier = TokenVerifier(KeyRing([signing_key]), BASE_URL, {TENANT}.__contains__, clock, external_issuers=[trusted])
    token = federation.issuer.issue_application_token(OTHER_TENANT, APP_ID, "A", []).access_token
    with pytest.raises(InvalidToken, match=f"tenant {OTHER_TENANT} is not known"):
        verifier.verify(token)


def test_discovery_naming_another_issuer_makes_keys_unavailable(federation: Federation) -> None:
    config = dict(federation.provider.routes[federation.discovery_path][1])
    config["issuer"] = "https://impostor.example/v2.0"
    federation.provider.routes[federation.discovery_path] = (200, config)
    token = federation.issuer.issue_application_token(OTHER_TENANT, APP_ID, "A", []).access_token
    with pytest.raises(SigningKeysUnavailable, match="names issuer 'https://impostor.example/v2.0'"):
        federation.verifier.verify(token)
    assert federation.provider.count(federation.jwks_path) == 0


def test_unreachable_provider_makes_keys_unavailable_and_is_not_hammered(federation: Federation, clock: FrozenClock) -> None:
    federation.provider.routes[federation.jwks_path] = (503, {"error": "down"})
    token = federation.issuer.issue_application_token(OTHER_TENANT, APP_ID, "A", []).access_token
    for _ in range(5):
        with pytest.raises(SigningKeysUnavailable, match="could not be fetched"):
            federation.verifier.verify(token)
    assert federation.provider.count(federation.jwks_path) == 1

    federation.publish(federation.key)
    clock.advance(61)
    assert federation.verifier.verify(token).tenant_id == OTHER_TENANT


def test_stale_keys_keep_working_for_an_hour_while_the_provider_is_down(federation: Federation, clock: FrozenClock) -> None:
    federation.verifier.verify(federation.issuer.issue_application_token(OTHER_TENANT, APP_ID, "A", []).access_token)
    federation.provider.routes[federation.jwks_path] = (500, {"error": "down"})
    clock.advance(3601)
    token = federation.issuer.issue_application_token(OTHER_TENANT, APP_ID, "A", []).access_token
    assert federation.verifier.verify(token).app_id == APP_ID
    assert federation.provider.count(federation.jwks_path) == 2

    clock.advance(3600)
    token = federation.issuer.issue_application_token(OTHER_TENANT, APP_ID, "A", []).access_token
    with pytest.raises(SigningKeysUnavailable, match="could not be fetched"):
        federation.verifier.verify(token)


def test_external_issuer_over_https_is_trusted_through_its_ca_file(
    tmp_path: Path, key_pool: list[SigningKey], signing_key: SigningKey, clock: FrozenClock
) -> None:
    tls = ensure_local_tls(tmp_path)
    external_key = replace(key_pool[2], active=True)
    with running_provider(tls) as https_provider:
        config = openid_configuration(https_provider.base_url, OTHER_TENANT)
        https_provider.routes[f"/{OTHER_TENANT}/v2.0/.well-known/openid-configuration"] = (
            200,
            config,
        )
        https_provider.routes[f"/{OTHER_TENANT}/discovery/v2.0/keys"] = (
            200,
            KeyRing([external_key]).jwks(),
        )
        token = (
            TokenIssuer(KeyRing([external_key]), https_provider.base_url, clock)
            .issue_application_token(OTHER_TENANT, APP_ID, "A", ["Machine.Offboard"])
            .access_token
        )

        def verifier_trusting(ca_file: str | None) -> TokenVerifier:
            issuer = ExternalIssuer(config["issuer"], DEFENDER_AUDIENCE, ca_file=ca_file)
            known = {OTHER_TENANT}.__contains__
            return TokenVerifier(KeyRing([signing_key]), BASE_URL, known, clock, external_issuers=[issuer])

        assert verifier_trusting(str(tls.ca_cert)).verify(token).roles == ("Machine.Offboard",)
        # Without the local CA the provider's certificate is not trusted, so no keys are had.
        with pytest.raises(SigningKeysUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
            verifier_trusting(None).verify(token)


def test_external_issuers_must_use_https_unless_told_otherwise() -> None:
    with pytest.raises(ValueError, match="must use https"):
        ExternalIssuer("http://idp.example/v2.0", DEFENDER_AUDIENCE)


def test_external_issuer_cannot_impersonate_local_issuers(signing_key: SigningKey, clock: FrozenClock) -> None:
    with pytest.raises(ValueError, match="collides"):
        TokenVerifier(
            KeyRing([signing_key]),
            BASE_URL,
            {TENANT}.__contains__,
            clock,
            external_issuers=[ExternalIssuer(f"{BASE_URL}/{TENANT}/v2.0", DEFENDER_AUDIENCE)],
        )


def test_a_rotation_in_another_process_is_seen_on_the_first_token_with_the_new_key(
    signing_key: SigningKey, clock: FrozenClock
) -> None:
    shared_store = {"keys": [signing_key], "reads": 0}

    def load() -> list[SigningKey]:
        shared_store["reads"] += 1
        return list(shared_store["keys"])

    this_process = KeyRingCache(load, clock, max_age_seconds=300)
    verifier = TokenVerifier(this_process, BASE_URL, {TENANT}.__contains__, clock)
    assert verifier.verify(
        TokenIssuer(this_process, BASE_URL, clock).issue_application_token(TENANT, APP_ID, "A", []).access_token
    )

    # Another process rotates the shared store and signs with the new key at once.
    shared_store["keys"] = rotate(shared_store["keys"], clock.now())
    clock.advance(10)
    other_process = TokenIssuer(KeyRing(shared_store["keys"]), BASE_URL, clock)
    token = other_process.issue_application_token(TENANT, APP_ID, "A", []).access_token
    assert verifier.verify(token).app_id == APP_ID
    assert shared_store["reads"] == 2


@pytest.mark.parametrize(
    ("extra", "kind"),
    [
        pytest.param({"idtyp": "app", "roles": ["Machine.Read.All"]}, "application", id="idtyp-app"),
        pytest.param({"idtyp": "user", "upn": "a@fabrikam.com"}, "user", id="idtyp-user"),
        pytest.param({"roles": ["Machine.Read.All"]}, "application", id="roles-without-scope"),
        pytest.param({"scp": "Machine.Read", "roles": ["Reader"]}, "user", id="entra-scp-with-user-roles"),
        pytest.param({"scope": "Machine.Read"}, "user", id="generic-scope"),
    ],
)
def test_external_token_kind_is_read_from_clear_claims(federation: Federation, extra: dict[str, Any], kind: str) -> None:
    claims = {k: v for k, v in app_claims(iss=federation.issuer_url, tid=OTHER_TENANT).items() if k not in {"idtyp", "roles"}}
    claims.update(extra)
    assert federation.verifier.verify(sign(federation.key, claims)).kind == kind


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param({}, id="no-idtyp-roles-or-scope"),
        pytest.param({"upn": "admin@fabrikam.com"}, id="only-a-name"),
        pytest.param({"roles": ["Machine.Offboard"], "scope": "profile email"}, id="roles-and-generic-scope"),
    ],
)
def test_external_token_that_is_neither_clearly_app_nor_user_is_refused(federation: Federation, extra: dict[str, Any]) -> None:
    # Before: such a token counted as an application, which no device group scopes.
    claims = {k: v for k, v in app_claims(iss=federation.issuer_url, tid=OTHER_TENANT).items() if k not in {"idtyp", "roles"}}
    claims.update(extra)
    with pytest.raises(InvalidToken, match="does not say whether it is an application's or a user's"):
        federation.verifier.verify(sign(federation.key, claims))
