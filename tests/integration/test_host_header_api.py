"""The Host header is never reflected: links come from the public base URL or an allowed host."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from bulwark.api.app import create_app
from bulwark.clock import FrozenClock
from bulwark.settings import Settings
from bulwark.store.uow import SqlUnitOfWorkFactory as UnitOfWorkFactory
from tests.conftest import TENANT, make_machine, seed
from tests.identity_support import ALL_APP_ROLES, app_token, bearer, register_app

MACHINES = [make_machine(i) for i in range(1, 4)]
PATHS = [
    "/api/machines",
    f"/{TENANT}/oauth2/v2.0/token",
    "/sensor/v1/checkin",
    "/healthz",
    f"/{TENANT}/v2.0/.well-known/openid-configuration",
]


def build(settings: Settings, clock: FrozenClock, uow_factory: UnitOfWorkFactory, base_url: str, **changes: object) -> TestClient:
    seed(uow_factory, MACHINES)
    client = TestClient(create_app(settings.model_copy(update=changes), clock=clock), base_url=base_url)
    return client


@pytest.fixture
def default_hosts(settings: Settings, clock: FrozenClock, uow_factory: UnitOfWorkFactory):
    """Nothing configured: the listening address (127.0.0.1) and the loopback names are allowed."""
    with build(settings, clock, uow_factory, "http://127.0.0.1:8000", allowed_hosts=[]) as client:
        client.headers.update(bearer(app_token(client, register_app(uow_factory, ALL_APP_ROLES))))
        yield client


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "127.0.0.1.evil.example", "localhost:x", "[::1", "a:b:c"])
def test_other_hosts_are_refused_on_every_route(default_hosts: TestClient, path: str, host: str) -> None:
    answer = default_hosts.get(path, headers={"Host": host})
    assert answer.status_code == 400, answer.text
    assert answer.json() == {
        "error": {
            "code": "InvalidHost",
            "message": "The Host header names a host this server does not answer for.",
            "target": answer.headers["request-id"],
        }
    }


@pytest.mark.parametrize("host", ["127.0.0.1:8000", "localhost:8000", "LOCALHOST", "[::1]:8000"])
def test_loopback_names_are_served_and_links_use_them(default_hosts: TestClient, host: str) -> None:
    answer = default_hosts.get("/api/machines?$top=1", headers={"Host": host})
    assert answer.status_code == 200, answer.text
    assert answer.json()["@odata.context"] == f"http://{host}/api/$metadata#Machines"
    assert answer.json()["@odata.nextLink"].startswith(f"http://{host}/api/machines?")


def test_configured_hosts_and_the_public_base_url(settings: Settings, clock: FrozenClock, uow_factory: UnitOfWorkFactory) -> None:
    changes = {"allowed_hosts": ["bulwark.contoso.com", "localhost"], "public_base_url": "https://defender.contoso.com"}
    with build(settings, clock, uow_factory, "http://bulwark.contoso.com", **changes) as client:
        client.headers.update(bearer(app_token(client, register_app(uow_factory, ALL_APP_ROLES))))
        listed = client.get("/api/machines?$top=1").json()
        assert listed["@odata.context"] == "https://defender.contoso.com/api/$metadata#Machines"
        assert listed["@odata.nextLink"].startswith("https://defender.contoso.com/api/machines?")
        package = client.get("/api/onboarding/package", headers={"Host": "localhost"}).json()
        assert package["serverUrl"] == "https://defender.contoso.com"
        # The listening address is no longer implied once hosts are configured.
        assert client.get("/api/machines", headers={"Host": "127.0.0.1"}).status_code == 400
        assert client.get("/api/machines", headers={"Host": "evil.example"}).json()["error"]["code"] == "InvalidHost"


def test_onboarding_package_server_url_is_never_a_callers_host(default_hosts: TestClient) -> None:
    assert default_hosts.get("/api/onboarding/package", headers={"Host": "attacker.example"}).status_code == 400
    package = default_hosts.get("/api/onboarding/package", headers={"Host": "localhost:8000"}).json()
    assert package["serverUrl"] == "http://localhost:8000"


def test_any_host_only_when_asked(settings: Settings, clock: FrozenClock, uow_factory: UnitOfWorkFactory) -> None:
    with build(
        settings, clock, uow_factory, "http://whatever.example", allowed_hosts=["*"], public_base_url="https://api.contoso.com"
    ) as client:
        client.headers.update(bearer(app_token(client, register_app(uow_factory, ALL_APP_ROLES))))
        answer = client.get("/api/machines?$top=1")
        assert answer.status_code == 200
        assert answer.json()["@odata.context"].startswith("https://api.contoso.com/")
