"""External OpenID Connect users over HTTP: matched by issuer and immutable oid, never by a name;
tokens that do not clearly say app or user are refused."""

from __future__ import annotations

import uuid
from typing import Any

import jwt
import pytest
from fastapi.testclient import TestClient

from bulwark.api.app import create_app
from bulwark.auth.keys import KeyRing, generate_signing_key
from bulwark.auth.tokens import DEFENDER_AUDIENCE, TokenIssuer, openid_configuration
from bulwark.clock import FrozenClock
from bulwark.service.identity import IdentityError, link_external_user
from bulwark.settings import ExternalIssuerSetting, Settings
from bulwark.store.uow import SqlUnitOfWorkFactory
from tests.conftest import TENANT, make_machine, seed
from tests.identity_support import bearer, register_user
from tests.unit.test_auth_tokens import running_provider

MACHINE = make_machine(9)
PROVIDER_TENANT = "0f0e0d0c-0b0a-4909-8807-060504030201"
APP_ID = "3f2504e0-4f89-41d3-9a0c-0305e82c3301"
SOC_OID = str(uuid.uuid4())


@pytest.fixture
def federated(settings: Settings, uow_factory: SqlUnitOfWorkFactory, clock: FrozenClock):
    seed(uow_factory, [MACHINE])
    key = generate_signing_key(clock.now())
    with running_provider() as provider:
        config = openid_configuration(provider.base_url, PROVIDER_TENANT)
        provider.routes[f"/{PROVIDER_TENANT}/v2.0/.well-known/openid-configuration"] = (200, config)
        provider.routes[f"/{PROVIDER_TENANT}/discovery/v2.0/keys"] = (200, KeyRing([key]).jwks())
        trusted = ExternalIssuerSetting(
            issuer_url=config["issuer"], audience=DEFENDER_AUDIENCE, tenant_id=TENANT, allow_http=True
        )
        app_settings = settings.model_copy(update={"external_issuers": [trusted]})
        with TestClient(create_app(app_settings, clock=clock)) as client:
            yield client, TokenIssuer(KeyRing([key]), provider.base_url, clock), config["issuer"], key


def read(client: TestClient, token: str) -> int:
    return client.get(f"/api/machines/{MACHINE.id}", headers=bearer(token)).status_code


def user_token(issuer: TokenIssuer, oid: str, upn: str) -> str:
    return issuer.issue_user_token(PROVIDER_TENANT, APP_ID, oid, upn, upn, ["Machine.Read"]).access_token


def test_an_external_user_is_matched_by_issuer_and_oid_not_by_name(federated, uow_factory, clock: FrozenClock) -> None:
    client, issuer, issuer_url, _ = federated
    register_user(uow_factory, "soc@fabrikam.com", capabilities=["ViewData"])
    # Not linked yet: a token naming the user's UPN is nobody in Bulwark and sees no machine.
    assert read(client, user_token(issuer, SOC_OID, "soc@fabrikam.com")) == 404
    link_external_user(uow_factory(), TENANT, "soc@fabrikam.com", issuer_url, SOC_OID)
    clock.advance(seconds=6)  # past the resolved-caller cache (auth_cache_seconds)
    assert read(client, user_token(issuer, SOC_OID, "soc@fabrikam.com")) == 200
    # Renamed at the provider: the same oid is still the same user.
    assert read(client, user_token(issuer, SOC_OID, "renamed@fabrikam.com")) == 200
    # Another account that took over the name (changeable upn) gets nothing of the user's.
    assert read(client, user_token(issuer, str(uuid.uuid4()), "soc@fabrikam.com")) == 404


def test_an_external_account_links_to_one_user_only(federated, uow_factory) -> None:
    _, _, issuer_url, _ = federated
    register_user(uow_factory, "a@fabrikam.com")
    register_user(uow_factory, "b@fabrikam.com")
    link_external_user(uow_factory(), TENANT, "a@fabrikam.com", issuer_url, SOC_OID)
    with pytest.raises(IdentityError, match="already linked to a@fabrikam.com"):
        link_external_user(uow_factory(), TENANT, "b@fabrikam.com", issuer_url, SOC_OID)


def _signed(key, claims: dict[str, Any]) -> str:
    return jwt.encode(claims, key.private_key, algorithm="RS256", headers={"kid": key.kid})


def test_a_token_neither_clearly_app_nor_user_is_refused(federated, clock: FrozenClock) -> None:
    client, _, issuer_url, key = federated
    now = int(clock.now().timestamp())
    base = {"iss": issuer_url, "aud": DEFENDER_AUDIENCE, "iat": now, "nbf": now, "exp": now + 600, "azp": APP_ID, "oid": SOC_OID}
    # Before, each of these acted as an application that no device group scopes.
    for claims in ({}, {"upn": "x@fabrikam.com"}, {"roles": ["Machine.Read.All"], "scope": "profile"}):
        response = client.get(f"/api/machines/{MACHINE.id}", headers=bearer(_signed(key, {**base, **claims})))
        assert response.status_code == 401, claims
        assert "does not say whether it is an application" in response.headers["WWW-Authenticate"]
    # A clear application token still works.
    assert read(client, _signed(key, {**base, "roles": ["Machine.Read.All"]})) == 200
