"""``/api/$metadata``: a CSDL document that declares every property the API returns, with its type."""

from __future__ import annotations

from xml.etree import ElementTree as ET

import pytest
from fastapi.testclient import TestClient

from bulwark.api.app import create_app
from bulwark.settings import Settings
from bulwark.store.uow import SqlUnitOfWorkFactory
from tests.conftest import make_machine, seed
from tests.identity_support import auth_headers

EDM = "{http://docs.oasis-open.org/odata/ns/edm}"
MACHINE = f"{0x51:040x}"


@pytest.fixture
def client(settings: Settings, uow_factory: SqlUnitOfWorkFactory):
    seed(uow_factory, [])
    (group,) = seed(uow_factory, [], groups=["Finance"])
    ips = [{"ipAddress": "10.1.2.3", "macAddress": "00155D000001", "type": "Ethernet", "operationalStatus": "Up"}]
    seed(uow_factory, [make_machine(0x51, rbac_group_id=group, machine_tags=["VIP"], ip_addresses=ips)])
    with TestClient(create_app(settings)) as test_client:
        test_client.headers.update(auth_headers(test_client, uow_factory))
        yield test_client


class Csdl:
    """The parts of a CSDL document a client resolves @odata.context and properties against."""

    def __init__(self, xml: bytes) -> None:
        root = ET.fromstring(xml)
        (schema,) = root.iter(f"{EDM}Schema")
        self.namespace = schema.get("Namespace")
        self.entity_types = {
            e.get("Name"): {p.get("Name"): p.attrib for p in e.findall(f"{EDM}Property")}
            for e in schema.findall(f"{EDM}EntityType")
        }
        self.keys = {
            e.get("Name"): [r.get("Name") for r in e.iter(f"{EDM}PropertyRef")] for e in schema.findall(f"{EDM}EntityType")
        }
        self.complex_types = {
            c.get("Name"): {p.get("Name"): p.attrib for p in c.findall(f"{EDM}Property")}
            for c in schema.findall(f"{EDM}ComplexType")
        }
        self.enum_types = {
            e.get("Name"): [m.get("Name") for m in e.findall(f"{EDM}Member")] for e in schema.findall(f"{EDM}EnumType")
        }
        (container,) = schema.iter(f"{EDM}EntityContainer")
        self.entity_sets = {s.get("Name"): s.get("EntityType") for s in container.findall(f"{EDM}EntitySet")}

    def local(self, qualified: str) -> str:
        assert qualified.startswith(f"{self.namespace}."), qualified
        return qualified.removeprefix(f"{self.namespace}.")

    def check_value(self, declared: dict[str, str], value: object, where: str) -> None:
        """Assert that a JSON value is an instance of a declared property type."""
        edm_type = declared["Type"]
        if value is None:
            assert declared.get("Nullable", "true") == "true", f"{where} is null but declared not nullable"
            return
        if edm_type.startswith("Collection("):
            assert isinstance(value, list), where
            element = {"Type": edm_type.removeprefix("Collection(").removesuffix(")"), "Nullable": "false"}
            for i, item in enumerate(value):
                self.check_value(element, item, f"{where}[{i}]")
            return
        simple = {"Edm.String": str, "Edm.Boolean": bool, "Edm.DateTimeOffset": str}
        if edm_type in simple:
            assert isinstance(value, simple[edm_type]), f"{where}: {value!r} is not {edm_type}"
        elif edm_type in ("Edm.Int32", "Edm.Int64"):
            assert isinstance(value, int) and not isinstance(value, bool), f"{where}: {value!r} is not {edm_type}"
            if edm_type == "Edm.Int32":
                assert -(2**31) <= value < 2**31, where
        elif self.local(edm_type) in self.enum_types:
            assert value in self.enum_types[self.local(edm_type)], f"{where}: {value!r} is no member of {edm_type}"
        else:
            members = self.complex_types[self.local(edm_type)]
            assert isinstance(value, dict), where
            assert set(value) <= set(members), f"{where} has undeclared members {set(value) - set(members)}"
            for name, item in value.items():
                self.check_value(members[name], item, f"{where}.{name}")

    def check_entity(self, context: str, body: dict) -> None:
        """Resolve ``@odata.context`` to an entity type; every property returned is declared, in order, and fits."""
        metadata_url, _, fragment = context.partition("#")
        assert metadata_url.endswith("/api/$metadata")
        entity_set = fragment.split("/")[0]
        entity_type = self.local(self.entity_sets[entity_set])
        declared = self.entity_types[entity_type]
        returned = [k for k in body if not k.startswith("@odata.")]
        assert returned == list(declared), f"{entity_type}: returned {returned} but declared {list(declared)}"
        for name in returned:
            self.check_value(declared[name], body[name], f"{entity_type}.{name}")


@pytest.fixture
def csdl(client: TestClient) -> Csdl:
    response = client.get("/api/$metadata", headers={"Authorization": ""})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/xml")
    assert response.headers["odata-version"] == "4.0"
    return Csdl(response.content)


def test_metadata_is_served_under_both_prefixes_without_a_token(client: TestClient) -> None:
    anonymous = {"Authorization": ""}
    first = client.get("/api/$metadata", headers=anonymous)
    assert first.status_code == 200
    assert client.get("/api/v1.0/$metadata", headers=anonymous).content == first.content
    assert client.get("/API/$Metadata/", headers=anonymous).content == first.content


def test_entity_sets_and_keys(csdl: Csdl) -> None:
    assert csdl.entity_sets == {"Machines": f"{csdl.namespace}.Machine", "MachineActions": f"{csdl.namespace}.MachineAction"}
    assert csdl.keys == {"Machine": ["id"], "MachineAction": ["id"]}


def test_every_property_a_machine_returns_is_declared(client: TestClient, csdl: Csdl) -> None:
    one = client.get(f"/api/machines/{MACHINE}").json()
    csdl.check_entity(one["@odata.context"], one)
    page = client.get("/api/machines").json()
    assert page["@odata.context"].endswith("/api/$metadata#Machines")
    for machine in page["value"]:
        csdl.check_entity(page["@odata.context"], machine)


def test_every_property_an_action_returns_is_declared(client: TestClient, csdl: Csdl) -> None:
    created = client.post(f"/api/machines/{MACHINE}/offboard", json={"Comment": "retire", "ExternalId": "x-1"}).json()
    csdl.check_entity(created["@odata.context"], created)
    cancelled = client.post(f"/api/machineactions/{created['id']}/cancel", json={"Comment": "wrong one"}).json()
    csdl.check_entity(cancelled["@odata.context"], cancelled)
    assert cancelled["cancellationDateTimeUtc"] is not None
    listed = client.get("/api/machineactions").json()
    for action in listed["value"]:
        csdl.check_entity(listed["@odata.context"], action)


def test_an_undeclared_property_would_be_caught(csdl: Csdl) -> None:
    with pytest.raises(AssertionError):
        csdl.check_entity("http://x/api/$metadata#Machines/$entity", {"id": "a", "notDeclared": 1})
