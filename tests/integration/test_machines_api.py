"""Reading machines by id or DNS name, with every field of the live entity."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from bulwark.api.app import create_app
from bulwark.settings import Settings
from bulwark.store.uow import SqlUnitOfWorkFactory
from tests.conftest import make_machine, seed
from tests.identity_support import auth_headers

MACHINE_FIELDS = [
    "@odata.context",
    "id",
    "computerDnsName",
    "firstSeen",
    "lastSeen",
    "osPlatform",
    "osProcessor",
    "version",
    "osBuild",
    "lastIpAddress",
    "lastExternalIpAddress",
    "agentVersion",
    "healthStatus",
    "deviceValue",
    "rbacGroupId",
    "rbacGroupName",
    "riskScore",
    "exposureLevel",
    "isAadJoined",
    "aadDeviceId",
    "machineTags",
    "onboardingStatus",
    "osArchitecture",
    "ipAddresses",
    "managedBy",
    "managedByStatus",
    "isPotentialDuplication",
    "isExcluded",
]


@pytest.fixture
def client(settings: Settings, uow_factory: SqlUnitOfWorkFactory):
    seed(uow_factory, [])
    (group,) = seed(uow_factory, [], groups=["Finance"])
    seed(uow_factory, [make_machine(1, rbac_group_id=group, machine_tags=["VIP", "Finance"])])
    with TestClient(create_app(settings)) as test_client:
        test_client.headers.update(auth_headers(test_client, uow_factory, ["Machine.Read.All"]))
        yield test_client


def test_machine_by_id_has_every_field_in_order(client: TestClient) -> None:
    response = client.get(f"/api/machines/{1:040x}")
    assert response.status_code == 200
    body = response.json()
    assert list(body) == MACHINE_FIELDS
    assert body["@odata.context"].endswith("/api/$metadata#Machines/$entity")
    assert body["rbacGroupName"] == "Finance"
    assert body["machineTags"] == ["Finance", "VIP"]
    assert body["firstSeen"] == "2026-02-01T00:00:00Z"


def test_machine_by_dns_name_case_insensitive(client: TestClient) -> None:
    response = client.get("/api/machines/HOST-1.contoso.com")
    assert response.status_code == 200
    assert response.json()["id"] == f"{1:040x}"


def test_unknown_machine(client: TestClient) -> None:
    response = client.get("/api/machines/nobody.contoso.com")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "ResourceNotFound"
    assert response.json()["error"]["message"] == "Machine nobody.contoso.com was not found"
