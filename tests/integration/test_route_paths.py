"""Routes match as the live service's do: literal segments in any case, with or without a trailing slash."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from bulwark.api.app import create_app
from bulwark.api.paths import PathTable
from bulwark.settings import Settings
from bulwark.store.uow import SqlUnitOfWorkFactory
from tests.conftest import make_machine, seed
from tests.identity_support import auth_headers

MACHINE = f"{0xABC:040x}"


@pytest.fixture
def client(settings: Settings, uow_factory: SqlUnitOfWorkFactory):
    seed(uow_factory, [make_machine(0xABC, computer_dns_name="MixedCase-Host.Contoso.com")])
    with TestClient(create_app(settings), follow_redirects=False) as test_client:
        test_client.headers.update(auth_headers(test_client, uow_factory))
        yield test_client


def test_machine_actions_of_a_machine_as_a_published_client_spells_it(client: TestClient) -> None:
    created = client.post(f"/api/machines/{MACHINE}/offboard", json={"Comment": "retire"}).json()
    for path in (f"/api/machines/{MACHINE}/machineActions", f"/API/Machines/{MACHINE}/MachineActions/"):
        response = client.get(path)
        assert response.status_code == 200, (path, response.text)
        assert [a["id"] for a in response.json()["value"]] == [created["id"]]


def test_trailing_slash_with_a_filter_is_served_directly_not_redirected(client: TestClient) -> None:
    created = client.post(f"/api/machines/{MACHINE}/offboard", json={"Comment": "retire"}).json()
    response = client.get("/api/machineactions/?$filter=status eq 'Pending'")
    assert response.status_code == 200
    assert [a["id"] for a in response.json()["value"]] == [created["id"]]
    # The query string reaches the route as sent: its camel-cased property names still name properties.
    selected = client.get("/api/MachineActions/?$select=requestorComment,machineId")
    assert selected.json()["value"] == [{"requestorComment": "retire", "machineId": MACHINE}]
    assert client.get("/api/v1.0/MachineActions/").status_code == 200


def test_ids_are_not_lower_cased(client: TestClient) -> None:
    # The DNS name keeps its case on its way to the route (which matches it case-insensitively itself).
    response = client.get("/API/MACHINES/MixedCase-Host.Contoso.com/")
    assert response.status_code == 200
    assert response.json()["computerDnsName"] == "MixedCase-Host.Contoso.com"
    offboard = client.post(f"/Api/Machines/{MACHINE}/Offboard/", json={"Comment": "retire"})
    assert offboard.status_code == 200
    assert offboard.json()["machineId"] == MACHINE
    # The action id in the path reaches the route exactly as sent.
    action = offboard.json()["id"]
    assert client.get(f"/api/MachineActions/{action}/").json()["id"] == action


def test_unknown_paths_stay_404_in_the_envelope(client: TestClient) -> None:
    for path in ("/api/machinez", "/api/machines/x/y/z", "/api/", "/nothing-here"):  # "/" leads to the console
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "NotFound"


def test_path_table_prefers_literal_segments() -> None:
    from starlette.routing import Route

    async def endpoint(_request):  # pragma: no cover - never called
        return None

    table = PathTable([Route("/api/machines/{id}", endpoint), Route("/api/machines/count", endpoint)])
    assert table.canonical("/API/machines/COUNT") == "/api/machines/count"
    assert table.canonical("/API/machines/Abc") == "/api/machines/Abc"
    assert table.canonical("/api/machines/count") is None  # already canonical: nothing to do
    assert table.canonical("/api/machines//") is None
