"""``/docs`` works offline and its "Authorize" button gets a real token from Bulwark's own token endpoint."""

from __future__ import annotations

import base64
import re
from html.parser import HTMLParser
from urllib.parse import quote, urlsplit

import pytest
from fastapi.testclient import TestClient

from bulwark.api.app import create_app
from bulwark.settings import Settings
from bulwark.store.uow import SqlUnitOfWorkFactory
from tests.conftest import TENANT, make_machine, seed
from tests.identity_support import SCOPE, TEST_SECRET, register_app

ANONYMOUS = {"Authorization": ""}


class _References(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls.extend(value for name, value in attrs if name in ("src", "href") and value)


@pytest.fixture
def client(settings: Settings, uow_factory: SqlUnitOfWorkFactory):
    seed(uow_factory, [make_machine(7)])
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def test_docs_page_references_only_local_assets_and_they_are_served(client: TestClient) -> None:
    page = client.get("/docs", headers=ANONYMOUS)
    assert page.status_code == 200
    parser = _References()
    parser.feed(page.text)
    assert parser.urls, "the page loads its script and stylesheet"
    # Nothing on the page names another host (no CDN, no validator badge); the scope is a name, not a fetch.
    assert re.findall(r"(?:https?:)?//[A-Za-z0-9.-]+\.[A-Za-z]{2,}", page.text.replace(SCOPE, "")) == []
    for url in parser.urls:
        assert url.startswith("/docs/assets/"), url
        asset = client.get(url, headers=ANONYMOUS)
        assert asset.status_code == 200, url
        assert len(asset.content) > 500, url
    bundle = client.get("/docs/assets/swagger-ui-bundle.js", headers=ANONYMOUS)
    assert bundle.headers["content-type"].startswith("text/javascript")
    assert b"SwaggerUIBundle" in bundle.content
    assert "/docs/assets/swagger-ui-bundle.js" in parser.urls
    assert '"validatorUrl": null' in page.text
    assert f'ui.initOAuth({{"scopes": ["{SCOPE}"]}})' in page.text


def test_only_the_pages_assets_are_reachable(client: TestClient) -> None:
    for name in ("index.html", "swagger-initializer.js", "..%2F..%2F__init__.py", "swagger-ui-bundle.js.map"):
        assert client.get(f"/docs/assets/{name}", headers=ANONYMOUS).status_code == 404, name


def test_openapi_declares_client_credentials_against_bulwarks_token_endpoint(client: TestClient) -> None:
    spec = client.get("/openapi.json", headers=ANONYMOUS).json()
    schemes = spec["components"]["securitySchemes"]
    flow = schemes["oauth2"]["flows"]["clientCredentials"]
    assert schemes["oauth2"]["type"] == "oauth2"
    assert flow["tokenUrl"] == f"http://testserver/{TENANT}/oauth2/v2.0/token"
    assert list(flow["scopes"]) == [SCOPE]
    assert schemes["bearer"] == {**schemes["bearer"], "type": "http", "scheme": "bearer"}
    api_operations = [op for path, ops in spec["paths"].items() if path.startswith("/api/") for op in ops.values()]
    assert len(api_operations) >= 6
    for operation in api_operations:
        assert operation["security"] == [{"oauth2": [SCOPE]}, {"bearer": []}], operation["operationId"]
    # The token endpoint itself needs no token.
    assert "security" not in spec["paths"]["/{tenant}/oauth2/v2.0/token"]["post"]


def test_token_url_follows_the_public_base_url(settings: Settings) -> None:
    public = Settings(**{**settings.model_dump(), "public_base_url": "https://bulwark.example.com:8443/"})
    with TestClient(create_app(public)) as client:
        flow = client.get("/openapi.json").json()["components"]["securitySchemes"]["oauth2"]["flows"]["clientCredentials"]
    assert flow["tokenUrl"] == f"https://bulwark.example.com:8443/{TENANT}/oauth2/v2.0/token"


def test_a_token_got_as_swagger_ui_gets_it_works_on_an_operation(client: TestClient, uow_factory: SqlUnitOfWorkFactory) -> None:
    client_id = register_app(uow_factory, ["Machine.Read.All"])
    flow = client.get("/openapi.json").json()["components"]["securitySchemes"]["oauth2"]["flows"]["clientCredentials"]
    # Exactly Swagger UI's request for the clientCredentials flow: HTTP Basic client authentication,
    # the configured scopes in a form body, and its fixed headers.
    token = client.post(
        urlsplit(flow["tokenUrl"]).path,
        content=f"grant_type=client_credentials&scope={quote(SCOPE, safe='')}",
        headers={
            "Authorization": "Basic " + base64.b64encode(f"{client_id}:{TEST_SECRET}".encode()).decode(),
            "Accept": "application/json, text/plain, */*",
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Requested-With": "XMLHttpRequest",
        },
    )
    assert token.status_code == 200, token.text
    body = token.json()
    assert body["token_type"] == "Bearer"
    machines = client.get("/api/machines", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert machines.status_code == 200
    assert [m["id"] for m in machines.json()["value"]] == [f"{7:040x}"]
    assert client.get("/api/machines", headers=ANONYMOUS).status_code == 401
