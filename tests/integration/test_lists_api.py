"""Inventory and action history lists with OData, over HTTP and with device-group scoping."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from bulwark.api.app import create_app
from bulwark.clock import FrozenClock
from bulwark.domain.access import Principal, PrincipalKind
from bulwark.odata import MACHINE_ACTION_SPEC, MACHINE_SPEC, parse_query
from bulwark.service.inventory import list_actions, list_machines
from bulwark.settings import Settings
from bulwark.store.odata_sql import apply_filter
from bulwark.store.queries import _MACHINE_COLUMNS
from bulwark.store.tables import machines
from bulwark.store.uow import SqlUnitOfWorkFactory
from tests.conftest import TENANT, make_machine, seed
from tests.identity_support import auth_headers

FLEET = 230


@pytest.fixture
def fleet(uow_factory: SqlUnitOfWorkFactory) -> list[int]:
    seed(uow_factory, [])
    groups = seed(uow_factory, [], groups=["Finance", "Servers"])
    machines = []
    for i in range(FLEET):
        machines.append(
            make_machine(
                i + 1,
                os_platform=["Windows11", "Windows10", "macOS"][i % 3],
                health_status="Active" if i % 4 else "Inactive",
                rbac_group_id=[groups[0], groups[1], None][i % 3],
                machine_tags=["VIP"] if i % 10 == 0 else [],
                computer_dns_name=f"{'fin' if i % 2 else 'eng'}-{i:03d}.contoso.com",
            )
        )
    seed(uow_factory, machines)
    return groups


@pytest.fixture
def client(settings: Settings, clock: FrozenClock, fleet: list[int], uow_factory: SqlUnitOfWorkFactory):
    unlimited = settings.model_copy(update={"rate_limit_enabled": False})
    with TestClient(create_app(unlimited, clock=clock)) as test_client:
        test_client.headers.update(auth_headers(test_client, uow_factory))
        yield test_client


def test_paging_through_every_machine_without_gaps_or_repeats(client: TestClient) -> None:
    seen: list[str] = []
    url = "/api/machines?$top=17&$select=id"
    pages = 0
    while url:
        body = client.get(url).json()
        seen.extend(m["id"] for m in body["value"])
        url = body.get("@odata.nextLink", "").replace("http://testserver", "")
        pages += 1
    assert pages == -(-FLEET // 17)
    assert len(seen) == FLEET
    assert len(set(seen)) == FLEET


def test_filter_count_and_select_as_clients_send_them(client: TestClient) -> None:
    response = client.get(
        "/api/machines?%24filter=healthStatus+ne+%27Active%27+and+startswith(computerDnsName,%27fin%27)"
        "&%24count=true&%24select=computerDnsName,healthStatus"
    )
    body = response.json()
    expected = sum(1 for i in range(FLEET) if i % 4 == 0 and i % 2 == 1)
    assert body["@odata.count"] == expected == len(body["value"])
    assert all(set(m) == {"computerDnsName", "healthStatus"} for m in body["value"])
    assert all(m["healthStatus"] == "Inactive" and m["computerDnsName"].startswith("fin") for m in body["value"])


def test_tags_any_and_orderby(client: TestClient) -> None:
    body = client.get(
        "/api/machines?$filter=machineTags/any(tag: tag eq 'vip')&$orderby=computerDnsName desc&$select=computerDnsName"
    ).json()
    names = [m["computerDnsName"] for m in body["value"]]
    assert len(names) == FLEET // 10
    assert names == sorted(names, reverse=True)


def test_invalid_queries_are_odata_errors(client: TestClient) -> None:
    for query in [
        "$filter=osBuild eq 1",
        "$filter=healthStatus eq",
        "$top=10001",
        "$skip=-1",
        "$orderby=nothing",
        "$frobnicate=1",
    ]:
        response = client.get(f"/api/machines?{query}")
        assert response.status_code == 400, query
        assert response.json()["error"]["code"] == "ODataError", query


def test_injection_attempt_is_just_a_value(client: TestClient) -> None:
    body = client.get("/api/machines?$filter=computerDnsName eq 'x'' or 1 eq 1 --'").json()
    assert body["value"] == []


def test_action_history_newest_first_and_per_machine(client: TestClient, clock: FrozenClock) -> None:
    ids = []
    for i in (1, 2, 4):
        clock.advance(5)
        ids.append(client.post(f"/api/machines/{i:040x}/offboard", json={"Comment": f"c{i}"}).json()["id"])
    listed = client.get("/api/machineactions").json()
    assert [a["id"] for a in listed["value"]] == list(reversed(ids))
    assert listed["@odata.context"].endswith("#MachineActions")
    since = (clock.now() - timedelta(seconds=7)).strftime("%Y-%m-%dT%H:%M:%SZ")
    recent = client.get(
        f"/api/machineactions?$filter=creationDateTimeUtc ge {since} and status in ('Pending','InProgress')"
    ).json()
    assert [a["id"] for a in recent["value"]] == list(reversed(ids[1:]))
    one = client.get(f"/api/machines/{2:040x}/machineactions").json()
    assert [a["id"] for a in one["value"]] == [ids[1]]
    by_name = client.get("/api/machines/eng-000.contoso.com/machineactions").json()
    assert [a["id"] for a in by_name["value"]] == [ids[0]]
    assert client.get("/api/machines/nobody/machineactions").status_code == 404


def _user(groups: frozenset[int]) -> Principal:
    return Principal(
        TENANT,
        PrincipalKind.USER,
        "u1",
        "analyst@contoso.com",
        frozenset({"Machine.Read", "Machine.Offboard"}),
        device_group_ids=groups,
    )


def test_group_scoping_applies_to_filters_counts_and_paging(uow_factory: SqlUnitOfWorkFactory, fleet: list[int]) -> None:
    finance = _user(frozenset({fleet[0]}))
    query = parse_query("$count=true&$top=5", MACHINE_SPEC)
    page = list_machines(query, finance, uow_factory(write=False))
    visible = sum(1 for i in range(FLEET) if i % 3 in (0, 2))  # Finance plus ungrouped
    assert page.total == visible
    assert all(m.rbac_group_id in (fleet[0], None) for m in page.items)
    servers = parse_query(f"$filter=rbacGroupId eq {fleet[1]}&$count=true", MACHINE_SPEC)
    assert list_machines(servers, finance, uow_factory(write=False)).total == 0
    actions = list_actions(parse_query("$count=true", MACHINE_ACTION_SPEC), finance, uow_factory(write=False))
    assert actions.total == 0


def test_id_filters_ignore_case_and_use_the_primary_key(client: TestClient, uow_factory: SqlUnitOfWorkFactory) -> None:
    seventh, eighth = f"{7:040x}", f"{8:040x}"
    body = client.get(f"/api/machines?$filter=id eq '{seventh.upper()}' or id in ('{eighth.upper()}')").json()
    assert sorted(m["id"] for m in body["value"]) == [seventh, eighth]
    query = parse_query(f"$filter=id eq '{'A' * 40}'", MACHINE_SPEC)
    statement = apply_filter(select(machines.c.id), query.filter, _MACHINE_COLUMNS)
    with uow_factory(write=False) as uow:
        if uow.conn.dialect.name == "sqlite":
            compiled = statement.compile(uow.conn, compile_kwargs={"literal_binds": True})
            plan = " ".join(str(r) for r in uow.conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}"))
            assert "USING" in plan and "INDEX" in plan, plan


def _follow(client: TestClient, url: str) -> tuple[list[dict], list[str]]:
    items, links = [], []
    while url:
        body = client.get(url).json()
        items.extend(body["value"])
        url = body.get("@odata.nextLink", "").replace("http://testserver", "")
        if url:
            links.append(url)
    return items, links


def test_next_links_carry_a_position_not_a_row_count(client: TestClient) -> None:
    everything = client.get(f"/api/machines?$top={FLEET}&$select=id&$filter=healthStatus ne 'Inactive'").json()["value"]
    items, links = _follow(client, "/api/machines?$top=40&$select=id&$filter=healthStatus ne 'Inactive'")
    assert items == everything and len(items) > 120
    assert links and all("$skiptoken=" in link and "$skip=" not in link for link in links)
    # The filter and the other options travel with the position.
    assert all("$filter=healthStatus" in link and "$top=40" in link for link in links)


def test_action_pages_keep_newest_first_through_equal_timestamps(client: TestClient, clock: FrozenClock) -> None:
    # Created at the same instant, so only the id orders them: pages must still neither repeat nor skip.
    windows = [n for n in range(1, FLEET + 1) if (n - 1) % 3 != 2][:30]  # macOS machines cannot be offboarded
    for i in windows[:25]:
        assert client.post(f"/api/machines/{i:040x}/offboard", json={"Comment": "same instant"}).status_code == 200
    clock.advance(1)
    for i in windows[25:]:
        assert client.post(f"/api/machines/{i:040x}/offboard", json={"Comment": "a second later"}).status_code == 200
    everything = client.get("/api/machineactions?$top=100").json()["value"]
    assert len(everything) == 30
    items, links = _follow(client, "/api/machineactions?$top=7")
    assert [a["id"] for a in items] == [a["id"] for a in everything]
    assert len(links) == 4


def test_explicit_skip_still_pages_by_count(client: TestClient) -> None:
    everything = [m["id"] for m in client.get(f"/api/machines?$top={FLEET}&$select=id").json()["value"]]
    body = client.get("/api/machines?$skip=20&$top=10&$select=id").json()
    assert [m["id"] for m in body["value"]] == everything[20:30]
    after = client.get(body["@odata.nextLink"].replace("http://testserver", "")).json()
    assert [m["id"] for m in after["value"]] == everything[30:40]
    # A client's own $orderby pages with $skip, as before.
    ordered = client.get("/api/machines?$orderby=computerDnsName desc&$top=50&$select=computerDnsName").json()
    assert "$skip=50" in ordered["@odata.nextLink"] and "$skiptoken" not in ordered["@odata.nextLink"]
    items, _ = _follow(client, "/api/machines?$orderby=computerDnsName desc&$top=50&$select=computerDnsName")
    names = [m["computerDnsName"] for m in items]
    assert len(names) == FLEET and names == sorted(names, reverse=True)


def _token(*values: object) -> str:
    import base64
    import json

    return base64.urlsafe_b64encode(json.dumps(list(values)).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    ("path", "token"),
    [
        ("/api/machines", "not base64 at all!"),
        ("/api/machines", "e30"),  # {}
        ("/api/machines", _token("machines.v1")),  # no position
        ("/api/machines", _token("machines.v1", "a", "b")),  # too many values
        ("/api/machines", _token("machines.v1", 5)),  # wrong type
        ("/api/machines", _token("machines.v0", "abc")),  # another version's token
        ("/api/machineactions", _token("machines.v1", "abc")),  # another list's token
        ("/api/machineactions", _token("machineactions.v1", "2026-03-01T09:30:00", "x")),  # no time zone
        ("/api/machineactions", _token("machineactions.v1", "yesterday", "x")),
        ("/api/machines", "A" * 600),
        ("/api/machines?$orderby=lastSeen", _token("machines.v1", "abc")),
    ],
)
def test_a_bad_skiptoken_is_an_odata_error_that_reads_nothing(client: TestClient, path: str, token: str) -> None:
    joiner = "&" if "?" in path else "?"
    response = client.get(f"{path}{joiner}$skiptoken={token}")
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "ODataError" and "skiptoken" in error["message"]


def test_a_skiptoken_value_is_only_ever_a_value(client: TestClient) -> None:
    everything = [m["id"] for m in client.get(f"/api/machines?$top={FLEET}&$select=id").json()["value"]]
    sneaky = "0' OR '1'='1"
    body = client.get(f"/api/machines?$top={FLEET}&$select=id&$skiptoken={_token('machines.v1', sneaky)}").json()
    assert [m["id"] for m in body["value"]] == [i for i in everything if i > sneaky]


@pytest.mark.parametrize("threads", [None, 3])
def test_list_pages_asked_at_once_answer_as_one_after_another(
    threads: int | None, settings: Settings, clock: FrozenClock, fleet: list[int], uow_factory: SqlUnitOfWorkFactory
) -> None:
    """Pages are built on the list threads (one on SQLite unless set): many at once change no page."""
    from concurrent.futures import ThreadPoolExecutor

    configured = settings.model_copy(update={"rate_limit_enabled": False, "list_threads": threads})
    urls = [
        "/api/machines?$top=7&$orderby=computerDnsName",
        "/api/machines?$filter=healthStatus ne 'Active' and startswith(computerDnsName,'fin')&$count=true",
        "/api/machines?$top=50&$skip=40&$select=id,osPlatform",
        "/api/v1.0/machines?$filter=osPlatform eq 'macOS'&$top=5",
    ]
    with TestClient(create_app(configured, clock=clock)) as client:
        client.headers.update(auth_headers(client, uow_factory))
        one_by_one = [(r.status_code, r.json()) for r in (client.get(url) for url in urls)]
        assert all(status == 200 for status, _ in one_by_one)
        with ThreadPoolExecutor(16) as pool:
            at_once = list(pool.map(lambda url: client.get(url), urls * 8))
    assert [(r.status_code, r.json()) for r in at_once] == one_by_one * 8
