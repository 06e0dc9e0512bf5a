"""Compiled OData queries run against real SQLite and PostgreSQL and return the same rows on both."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    func,
    select,
    text,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import StaticPool

from bulwark.odata import (
    MACHINE_ACTION_SPEC,
    MACHINE_SPEC,
    Comparison,
    ComparisonOperator,
    PropertyType,
    parse_filter,
    parse_query,
)
from bulwark.store.odata_sql import (
    CollectionSpec,
    apply_filter,
    apply_orderby,
    apply_query,
    compile_filter,
    count_rows,
    fold_case,
    snake_case_columns,
)

POSTGRES_URL = os.environ.get("BULWARK_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _text(length: int):
    """A string column that, on PostgreSQL, sorts by an English locale as many production databases do.

    Results must not depend on it: comparisons and ordering use byte-wise collation explicitly.
    """
    return String(length).with_variant(String(length, collation="en-US-x-icu"), "postgresql")


metadata = MetaData()
machines = Table(
    "machines",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("computer_dns_name", _text(255), nullable=False),
    Column("first_seen", DateTime, nullable=False),
    Column("last_seen", DateTime),
    Column("os_platform", String(64), nullable=False),
    Column("version", String(32)),
    Column("last_ip_address", String(64)),
    Column("health_status", _text(64)),
    Column("device_value", String(16), nullable=False),
    Column("rbac_group_id", Integer),
    Column("risk_score", String(16), nullable=False),
    Column("exposure_level", String(16), nullable=False),
    Column("aad_device_id", String(36)),
    Column("onboarding_status", String(32), nullable=False),
)
machine_tags = Table(
    "machine_tags",
    metadata,
    Column("machine_id", ForeignKey("machines.id", ondelete="CASCADE"), primary_key=True),
    Column("tag", _text(200), primary_key=True),
)
machine_actions = Table(
    "machine_actions",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("type", String(32), nullable=False),
    Column("requestor", _text(255), nullable=False),
    Column("status", _text(16), nullable=False),
    Column("machine_id", String(40), nullable=False),
    Column("creation_date_time_utc", DateTime, nullable=False),
)

MACHINE_COLUMNS = snake_case_columns(machines, MACHINE_SPEC)
ACTION_COLUMNS = snake_case_columns(machine_actions, MACHINE_ACTION_SPEC)
MACHINE_COLLECTIONS = {
    "machineTags": CollectionSpec(element=machine_tags.c.tag, owner_key=machine_tags.c.machine_id, parent_key=machines.c.id)
}


def _machine(id_: str, name: str, **values: object) -> dict[str, object]:
    row: dict[str, object] = {
        "id": id_,
        "computer_dns_name": name,
        "first_seen": datetime(2020, 1, 1),
        "last_seen": None,
        "os_platform": "Windows11",
        "version": None,
        "last_ip_address": None,
        "health_status": None,
        "device_value": "Normal",
        "rbac_group_id": None,
        "risk_score": "None",
        "exposure_level": "None",
        "aad_device_id": None,
        "onboarding_status": "Onboarded",
    }
    row.update(values)
    return row


MACHINES = [
    _machine(
        "m1", "alpha.contoso.com", last_seen=datetime(2024, 1, 10, 12), health_status="Active", rbac_group_id=1,
        version="22H2", last_ip_address="10.0.0.1", device_value="High", risk_score="Low", exposure_level="Medium",
        aad_device_id="8f2c1a9e-0000-4000-8000-000000000001",
    ),
    _machine(
        "m2", "Beta.Contoso.COM", last_seen=datetime(2023, 6, 1), health_status="Inactive", rbac_group_id=2,
        os_platform="Windows10", version="1709", last_ip_address="10.0.0.2", risk_score="High",
    ),
    _machine("m3", "gamma_50%.lab", os_platform="Linux", onboarding_status="CanBeOnboarded"),
    _machine(
        "m4", "delta.contoso.com", last_seen=datetime(2024, 1, 10, 12, 0, 0, 500000),
        health_status="ImpairedCommunication", rbac_group_id=1, os_platform="macOS", last_ip_address="10.0.1.4",
        exposure_level="High",
    ),
    _machine("m5", "gammaa50x.lab", last_seen=datetime(2022, 3, 3), health_status="Active", rbac_group_id=3),
    _machine("m6", "ÉCOLE.example", last_seen=datetime(2024, 2, 1), health_status="Active", rbac_group_id=2),
    _machine("m7", "x' or 1 eq 1 --", health_status="Unknown", rbac_group_id=2),
]  # fmt: skip
TAGS = [
    ("m1", "Finance"),
    ("m1", "VIP"),
    ("m2", "finance"),
    ("m4", "Test_Tag"),
    ("m4", "100%"),
    ("m5", "TestXTag"),
]
ACTIONS = [
    {"id": "a1", "type": "Offboard", "requestor": "Admin@Contoso.com", "status": "Pending",
     "machine_id": "m1", "creation_date_time_utc": datetime(2024, 1, 1, 0, 0)},
    {"id": "a2", "type": "Isolate", "requestor": "app", "status": "InProgress",
     "machine_id": "m1", "creation_date_time_utc": datetime(2024, 1, 2)},
    {"id": "a3", "type": "Offboard", "requestor": "admin@contoso.com", "status": "Succeeded",
     "machine_id": "m2", "creation_date_time_utc": datetime(2023, 12, 31, 23, 59, 59, 999999)},
    {"id": "a4", "type": "RunAntiVirusScan", "requestor": "app", "status": "Cancelled",
     "machine_id": "m4", "creation_date_time_utc": datetime(2024, 1, 3)},
    {"id": "a5", "type": "Offboard", "requestor": "other@contoso.com", "status": "InProgress",
     "machine_id": "m5", "creation_date_time_utc": datetime(2024, 1, 2)},
]  # fmt: skip


@dataclass
class Database:
    """One engine with the test tables loaded; queries run inside the engine's schema."""

    name: str
    engine: Engine
    execution_options: dict[str, object]

    def rows(self, statement) -> list:
        with self.engine.connect() as connection:
            return list(connection.execution_options(**self.execution_options).execute(statement))

    def machine_ids(self, filter_text: str) -> set[str]:
        """The ids of machines matching a $filter."""
        statement = apply_filter(
            select(machines.c.id), parse_filter(filter_text, MACHINE_SPEC), MACHINE_COLUMNS, MACHINE_COLLECTIONS
        )
        return {row.id for row in self.rows(statement)}

    def machine_page(self, query_string: str) -> list[str]:
        """The ids of one page of machines for a raw query string, in order."""
        query = parse_query(query_string, MACHINE_SPEC)
        statement = apply_query(select(machines.c.id), query, MACHINE_COLUMNS, MACHINE_COLLECTIONS, tiebreakers=[machines.c.id])
        return [row.id for row in self.rows(statement)]

    def action_page(self, query_string: str) -> list[str]:
        """The ids of one page of machine actions, newest first unless $orderby says otherwise."""
        query = parse_query(query_string, MACHINE_ACTION_SPEC)
        statement = apply_query(
            select(machine_actions.c.id),
            query,
            ACTION_COLUMNS,
            default_orderby=[machine_actions.c.creation_date_time_utc.desc()],
            tiebreakers=[machine_actions.c.id],
        )
        return [row.id for row in self.rows(statement)]


def _load(engine: Engine, execution_options: dict[str, object]) -> None:
    with engine.begin() as connection:
        connection = connection.execution_options(**execution_options)
        metadata.create_all(connection)
        connection.execute(machines.insert(), MACHINES)
        connection.execute(machine_tags.insert(), [{"machine_id": m, "tag": t} for m, t in TAGS])
        connection.execute(machine_actions.insert(), ACTIONS)


@pytest.fixture(scope="module")
def sqlite_database() -> Iterator[Database]:
    engine = create_engine("sqlite+pysqlite://", poolclass=StaticPool)
    _load(engine, {})
    yield Database("sqlite", engine, {})
    engine.dispose()


@pytest.fixture(scope="module")
def postgresql_database() -> Iterator[Database]:
    engine = create_engine(POSTGRES_URL)
    try:
        with engine.connect():
            pass
    except OperationalError as error:
        engine.dispose()
        pytest.skip(f"PostgreSQL at BULWARK_TEST_POSTGRES_URL is unreachable: {error.orig}")
    schema = f"odata_test_{uuid.uuid4().hex[:12]}"
    options = {"schema_translate_map": {None: schema}}
    with engine.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        _load(engine, options)
        yield Database("postgresql", engine, options)
    finally:
        with engine.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest) -> Database:
    return request.getfixturevalue(f"{request.param}_database")


# Filters and the machines they select. Each runs on both engines.
MACHINE_FILTER_CASES = [
    # string equality and ordering ignore ASCII case
    ("computerDnsName eq 'beta.contoso.com'", {"m2"}),
    ("computerDnsName eq 'ALPHA.CONTOSO.COM'", {"m1"}),
    ("computerDnsName ne 'alpha.contoso.com'", {"m2", "m3", "m4", "m5", "m6", "m7"}),
    ("computerDnsName in ('BETA.contoso.com', 'delta.contoso.com', 'nowhere')", {"m2", "m4"}),
    ("computerDnsName gt 'delta.contoso.com'", {"m3", "m5", "m6", "m7"}),
    ("computerDnsName ge 'delta.contoso.com'", {"m3", "m4", "m5", "m6", "m7"}),
    ("computerDnsName lt 'beta'", {"m1"}),
    ("computerDnsName lt 'f'", {"m1", "m2", "m4"}),
    ("computerDnsName le 'beta.contoso.com'", {"m1", "m2"}),
    ("tolower(computerDnsName) eq 'beta.contoso.com'", {"m2"}),
    # only ASCII letters fold, identically on both engines
    ("startswith(computerDnsName,'école')", set()),
    ("startswith(computerDnsName,'École')", {"m6"}),
    ("startswith(computerDnsName,'ÉCOLE.EXAMPLE')", {"m6"}),
    # string functions, with LIKE wildcards in the input taken literally
    ("startswith(computerDnsName,'Gamma')", {"m3", "m5"}),
    ("startswith(computerDnsName,'gamma_')", {"m3"}),
    ("contains(computerDnsName,'a_50%')", {"m3"}),
    ("contains(computerDnsName,'%')", {"m3"}),
    ("contains(computerDnsName,'_')", {"m3"}),
    ("endswith(computerDnsName,'.CONTOSO.com')", {"m1", "m2", "m4"}),
    ("endswith(computerDnsName,'/')", set()),
    ("contains(computerDnsName,'')", {"m1", "m2", "m3", "m4", "m5", "m6", "m7"}),
    ("startswith(computerDnsName,'a') eq false", {"m2", "m3", "m4", "m5", "m6", "m7"}),
    ("not contains(computerDnsName,'contoso')", {"m3", "m5", "m6", "m7"}),
    ("startswith(version,'22')", {"m1"}),
    ("not startswith(version,'22')", {"m2", "m3", "m4", "m5", "m6", "m7"}),
    # injection attempts are literals: the only match is the machine literally named so
    ("computerDnsName eq 'x'' or 1 eq 1 --'", {"m7"}),
    ("computerDnsName eq '''; DROP TABLE machines; --'", set()),
    ("contains(computerDnsName,''' or ''1''=''1')", set()),
    # enums compare against their canonical spelling
    ("healthStatus eq 'active'", {"m1", "m5", "m6"}),
    ("healthStatus ne 'Active'", {"m2", "m3", "m4", "m7"}),
    ("healthStatus in ('Inactive', 'impairedcommunication')", {"m2", "m4"}),
    ("healthStatus eq null", {"m3"}),
    ("healthStatus ne null", {"m1", "m2", "m4", "m5", "m6", "m7"}),
    ("healthStatus in ('Unknown', null)", {"m3", "m7"}),
    ("not (healthStatus eq 'Active')", {"m2", "m3", "m4", "m7"}),
    ("deviceValue eq 'High'", {"m1"}),
    ("riskScore eq 'None'", {"m3", "m4", "m5", "m6", "m7"}),
    ("exposureLevel in ('Medium','High')", {"m1", "m4"}),
    ("onboardingStatus eq 'CanBeOnboarded'", {"m3"}),
    # integers, with nulls neither equal nor unequal to anything but null
    ("rbacGroupId eq 1", {"m1", "m4"}),
    ("rbacGroupId ne 1", {"m2", "m3", "m5", "m6", "m7"}),
    ("rbacGroupId gt 1", {"m2", "m5", "m6", "m7"}),
    ("rbacGroupId ge 2", {"m2", "m5", "m6", "m7"}),
    ("rbacGroupId lt 2", {"m1", "m4"}),
    ("rbacGroupId le 2", {"m1", "m2", "m4", "m6", "m7"}),
    ("rbacGroupId in (3, 1)", {"m1", "m4", "m5"}),
    ("not (rbacGroupId lt 2)", {"m2", "m3", "m5", "m6", "m7"}),
    # any 64-bit literal is fine, even against a 32-bit column
    ("rbacGroupId eq -9223372036854775808", set()),
    ("rbacGroupId lt 9223372036854775807", {"m1", "m2", "m4", "m5", "m6", "m7"}),
    ("rbacGroupId in (1, 9223372036854775807)", {"m1", "m4"}),
    # datetimes, stored naive UTC, compared after converting the literal's offset
    ("lastSeen gt 2018-08-01Z", {"m1", "m2", "m4", "m5", "m6"}),
    ("lastSeen eq 2024-01-10T12:00:00Z", {"m1"}),
    ("lastSeen gt 2024-01-10T12:00:00Z", {"m4", "m6"}),
    ("lastSeen ge 2024-01-10T12:00:00.5Z", {"m4", "m6"}),
    ("lastSeen ge 2024-01-10T14:00:00+02:00", {"m1", "m4", "m6"}),
    ("lastSeen lt 2024-01-10T07:00:00-05:00", {"m2", "m5"}),
    ("lastSeen le '2023-06-01'", {"m2", "m5"}),
    ("lastSeen ne 2024-01-10T12:00:00Z", {"m2", "m3", "m4", "m5", "m6", "m7"}),
    ("not (lastSeen lt 2024-01-01Z)", {"m1", "m3", "m4", "m6", "m7"}),
    ("lastSeen eq null", {"m3", "m7"}),
    # tags live in machine_tags and are reached through EXISTS
    ("machineTags/any(t: t eq 'finance')", {"m1", "m2"}),
    ("machineTags/any(t: t ne 'finance')", {"m1", "m4", "m5"}),
    ("machineTags/any()", {"m1", "m2", "m4", "m5"}),
    ("not machineTags/any()", {"m3", "m6", "m7"}),
    ("machineTags/any(t: t in ('vip', 'nothing'))", {"m1"}),
    ("machineTags/any(t: startswith(t,'test_'))", {"m4"}),
    ("machineTags/any(t: startswith(t,'test'))", {"m4", "m5"}),
    ("machineTags/any(t: contains(t,'0%'))", {"m4"}),
    ("machineTags/any(t: endswith(t,'%'))", {"m4"}),
    ("machineTags/any(t: t eq 'finance' and t eq 'vip')", set()),
    ("machineTags/any(t: t eq 'finance') and machineTags/any(t: t eq 'vip')", {"m1"}),
    ("machineTags/any(t: not (t eq 'finance'))", {"m1", "m4", "m5"}),
    ("not machineTags/any(t: t eq 'finance')", {"m3", "m4", "m5", "m6", "m7"}),
    # connectives
    ("machineTags/any(t: t eq 'finance') and healthStatus eq 'Active'", {"m1"}),
    ("(healthStatus eq 'Inactive' or healthStatus eq 'ImpairedCommunication') and rbacGroupId eq 1", {"m4"}),
    ("healthStatus eq 'Inactive' or healthStatus eq 'ImpairedCommunication' and rbacGroupId eq 1", {"m2", "m4"}),
    ("osPlatform eq 'linux' or lastIpAddress eq '10.0.0.1' or version eq '1709'", {"m1", "m2", "m3"}),
    ("startswith(lastIpAddress,'10.0.0.')", {"m1", "m2"}),
    ("aadDeviceId eq '8F2C1A9E-0000-4000-8000-000000000001'", {"m1"}),
    ("id in ('M1', 'm3')", {"m1", "m3"}),
]


@pytest.mark.parametrize(("filter_text", "expected"), MACHINE_FILTER_CASES)
def test_machine_filters(database: Database, filter_text: str, expected: set[str]):
    assert database.machine_ids(filter_text) == expected


def test_injection_attempt_leaves_the_tables_intact(database: Database):
    assert database.machine_ids("computerDnsName eq '''; DROP TABLE machine_tags; --'") == set()
    assert database.rows(select(func.count()).select_from(machine_tags))[0][0] == len(TAGS)


def test_every_literal_is_a_bound_parameter():
    statement = apply_filter(
        select(machines.c.id),
        parse_filter(
            "computerDnsName eq 'x'' or 1 eq 1 --' and machineTags/any(t: contains(t,'%')) "
            "and rbacGroupId in (7, 8) and lastSeen gt 2024-01-01Z",
            MACHINE_SPEC,
        ),
        MACHINE_COLUMNS,
        MACHINE_COLLECTIONS,
    )
    compiled = statement.compile(dialect=postgresql.dialect())
    assert "or 1 eq 1" not in str(compiled)
    assert "x' or 1 eq 1 --" in compiled.params.values()
    assert {7, 8} <= set(v for v in compiled.params.values() if isinstance(v, int))


# --------------------------------------------------------------------------- ordering and paging


@pytest.mark.parametrize(
    ("query_string", "expected"),
    [
        # folded, then byte-wise: '_' sorts before letters and non-ASCII after all ASCII
        ("$orderby=computerDnsName", ["m1", "m2", "m4", "m3", "m5", "m7", "m6"]),
        ("$orderby=computerDnsName desc", ["m6", "m7", "m5", "m3", "m4", "m2", "m1"]),
        # nulls first ascending, last descending; the id tiebreaker orders equal keys
        ("$orderby=lastSeen", ["m3", "m7", "m5", "m2", "m1", "m4", "m6"]),
        ("$orderby=lastSeen desc", ["m6", "m4", "m1", "m2", "m5", "m3", "m7"]),
        ("$orderby=healthStatus", ["m3", "m1", "m5", "m6", "m4", "m2", "m7"]),
        ("$orderby=rbacGroupId desc,computerDnsName", ["m5", "m2", "m7", "m6", "m1", "m4", "m3"]),
        ("$orderby=riskScore,lastSeen desc", ["m2", "m1", "m6", "m4", "m5", "m3", "m7"]),
        ("$filter=rbacGroupId ne null&$orderby=lastSeen desc&$top=2", ["m6", "m4"]),
        ("$filter=rbacGroupId ne null&$orderby=lastSeen desc&$top=2&$skip=2", ["m1", "m2"]),
        ("$filter=rbacGroupId ne null&$orderby=lastSeen desc&$skip=5", ["m7"]),
        ("$orderby=lastSeen&$top=0", []),
        ("$top=3", ["m1", "m2", "m3"]),
    ],
)
def test_machine_ordering_and_paging(database: Database, query_string: str, expected: list[str]):
    assert database.machine_page(query_string) == expected


def test_pages_cover_every_row_once(database: Database):
    pages = [database.machine_page(f"$orderby=healthStatus desc&$top=2&$skip={skip}") for skip in range(0, 8, 2)]
    assert [len(page) for page in pages] == [2, 2, 2, 1]
    assert sorted(sum(pages, [])) == sorted(row["id"] for row in MACHINES)


@pytest.mark.parametrize(
    ("query_string", "expected"),
    [
        ("", ["a4", "a2", "a5", "a1", "a3"]),
        ("$filter=type in ('Offboard','isolate')", ["a2", "a5", "a1", "a3"]),
        ("$filter=(status eq 'Pending' or status eq 'InProgress')", ["a2", "a5", "a1"]),
        ("$filter=creationDateTimeUtc ge 2024-01-01T00:00:00Z", ["a4", "a2", "a5", "a1"]),
        ("$filter=creationDateTimeUtc lt 2024-01-01T01:00:00%2B01:00", ["a3"]),
        ("$filter=requestor eq 'admin@contoso.com'", ["a1", "a3"]),
        ("$filter=machineId eq 'm1' and status ne 'Pending'", ["a2"]),
        ("$filter=id eq 'A4'", ["a4"]),
        ("$orderby=status", ["a4", "a2", "a5", "a1", "a3"]),
        ("$orderby=type desc,creationDateTimeUtc", ["a4", "a3", "a1", "a5", "a2"]),
        # equal when folded, then byte-wise: 'Admin@...' before 'admin@...' (a locale would swap them)
        ("$orderby=requestor&$top=3", ["a1", "a3", "a2"]),
        ("$top=2&$skip=1", ["a2", "a5"]),
    ],
)
def test_machine_action_queries(database: Database, query_string: str, expected: list[str]):
    assert database.action_page(query_string) == expected


def test_count_ignores_ordering_and_paging(database: Database):
    query = parse_query("$filter=rbacGroupId ne null&$orderby=lastSeen desc&$top=2&$skip=1&$count=true", MACHINE_SPEC)
    page = apply_query(select(machines.c.id), query, MACHINE_COLUMNS, tiebreakers=[machines.c.id])
    assert len(database.rows(page)) == 2
    assert database.rows(count_rows(page))[0][0] == 6


def test_filters_compose_with_access_rules_and_aliases(database: Database):
    # The caller's own conditions (device-group visibility) and aliased tables keep working.
    visible = machines.alias("visible")
    columns = snake_case_columns(visible, MACHINE_SPEC)
    collections = {"machineTags": CollectionSpec(machine_tags.c.tag, machine_tags.c.machine_id, visible.c.id)}
    statement = apply_filter(
        select(visible.c.id).where(visible.c.rbac_group_id.in_([1, 3])),
        parse_filter("machineTags/any(t: startswith(t, 'test'))", MACHINE_SPEC),
        columns,
        collections,
    )
    assert {row.id for row in database.rows(statement)} == {"m4", "m5"}


# --------------------------------------------------------------------------- both engines agree


def test_sqlite_and_postgresql_return_identical_results(sqlite_database: Database, postgresql_database: Database):
    for filter_text, _ in MACHINE_FILTER_CASES:
        assert sqlite_database.machine_ids(filter_text) == postgresql_database.machine_ids(filter_text), filter_text
    for order in ("computerDnsName", "computerDnsName desc", "lastSeen", "healthStatus desc", "riskScore"):
        query_string = f"$orderby={order}"
        assert sqlite_database.machine_page(query_string) == postgresql_database.machine_page(query_string), order


# --------------------------------------------------------------------------- wiring errors and helpers


def test_unmapped_property_is_a_wiring_error():
    with pytest.raises(LookupError, match="no column is mapped for OData property 'rbacGroupId'"):
        compile_filter(parse_filter("rbacGroupId eq 1", MACHINE_SPEC), {})
    with pytest.raises(LookupError, match="no CollectionSpec is mapped for OData collection 'machineTags'"):
        compile_filter(parse_filter("machineTags/any()", MACHINE_SPEC), MACHINE_COLUMNS)


def test_snake_case_columns_maps_queryable_properties_and_names_missing_columns():
    assert MACHINE_COLUMNS["rbacGroupId"] is machines.c.rbac_group_id
    assert MACHINE_COLUMNS["lastSeen"] is machines.c.last_seen
    assert ACTION_COLUMNS["creationDateTimeUtc"] is machine_actions.c.creation_date_time_utc
    assert "machineTags" not in MACHINE_COLUMNS
    assert "osBuild" not in MACHINE_COLUMNS
    sparse = Table("sparse", MetaData(), Column("id", String, primary_key=True), Column("status", String))
    with pytest.raises(LookupError, match=r"type \(expected column type\)"):
        snake_case_columns(sparse, MACHINE_ACTION_SPEC)


def test_no_filter_compiles_to_true_and_leaves_statements_alone():
    statement = select(machines.c.id)
    assert apply_filter(statement, None, MACHINE_COLUMNS) is statement
    assert str(compile_filter(None, MACHINE_COLUMNS)) == "true"
    assert apply_orderby(statement, (), MACHINE_COLUMNS) is statement


def test_timezone_aware_columns_receive_aware_datetimes():
    aware = Column("seen", DateTime(timezone=True))
    naive = Column("seen", DateTime())
    condition = Comparison("lastSeen", PropertyType.DATETIME, ComparisonOperator.GT, datetime(2024, 1, 1, tzinfo=UTC))
    assert list(compile_filter(condition, {"lastSeen": aware}).compile().params.values()) == [datetime(2024, 1, 1, tzinfo=UTC)]
    assert list(compile_filter(condition, {"lastSeen": naive}).compile().params.values()) == [datetime(2024, 1, 1)]


def test_fold_case_renders_per_dialect():
    from sqlalchemy.dialects import sqlite

    expression = fold_case(machines.c.computer_dns_name)
    assert str(expression.compile(dialect=sqlite.dialect())) == "lower(machines.computer_dns_name)"
    assert str(expression.compile(dialect=postgresql.dialect())) == 'lower(machines.computer_dns_name COLLATE "C")'
