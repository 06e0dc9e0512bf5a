"""Statements compiled once and run on SQLite's driver return exactly what SQLAlchemy returns, and
never serve one caller's view of the fleet to another."""

from __future__ import annotations

import contextlib
import dataclasses
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, select, update
from sqlalchemy.exc import IntegrityError

from bulwark.domain.access import Principal, PrincipalKind
from bulwark.domain.actions import ActionStatus, ActionType, MachineAction
from bulwark.domain.errors import ActiveRequestAlreadyExists
from bulwark.odata import MACHINE_ACTION_SPEC, MACHINE_SPEC, parse_query
from bulwark.store import queries, repositories
from bulwark.store.compiled import CompiledCache, CompiledSelect, direct_statements, driver_connection
from bulwark.store.db import create_db_engine
from bulwark.store.queries import list_actions, list_machines
from bulwark.store.repositories import (
    _MACHINE_IN_TENANT,
    _SENSOR_BY_CREDENTIAL,
    MachineRepository,
    _pending_of_machine,
    _visible_action_by_id,
    _visible_machine_by_id,
    action_from_row,
)
from bulwark.store.tables import machine_actions, machines
from bulwark.store.uow import SqlitePointReads, SqlUnitOfWorkFactory
from tests.conftest import TENANT, make_machine, seed

OTHER_TENANT = "0d9c1a3e-1111-4c7a-9d55-0b6a3c1e8f10"
WHEN = datetime(2026, 3, 1, 9, 30, 0, 123456, tzinfo=UTC)


@pytest.fixture
def engine(sqlite_engine: Engine) -> Engine:
    return sqlite_engine


@pytest.fixture
def fleet(engine: Engine) -> dict[str, int]:
    """Machines in two groups, ungrouped, tagged and not, with and without nullable values; and their actions."""
    return _seed_fleet(engine)


def _seed_fleet(engine: Engine) -> dict[str, int]:
    factory = SqlUnitOfWorkFactory(engine)
    seed(factory, [], tenant=OTHER_TENANT)
    open_group, finance = seed(factory, [], groups=["Workstations", "Finance"])
    seed(
        factory,
        [
            make_machine(1, rbac_group_id=open_group, machine_tags=["b-tag", "a-tag"], is_aad_joined=True),
            make_machine(2, rbac_group_id=finance, ip_addresses=[{"ipAddress": "10.1.1.1", "type": "Ethernet"}]),
            make_machine(3, os_build=None, version=None, offboarded_at=WHEN, last_seen=WHEN),
            make_machine(4, computer_dns_name="other-tenant.contoso.com", tenant_id=OTHER_TENANT),
        ],
        groups=[],
    )
    with factory() as uow:
        for index in (1, 2, 3):
            uow.actions.add(
                MachineAction(
                    id=f"00000000-0000-0000-0000-00000000000{index}",
                    tenant_id=TENANT,
                    type=ActionType.OFFBOARD,
                    requestor="someone",
                    requestor_comment="why",
                    status=ActionStatus.PENDING if index != 2 else ActionStatus.CANCELLED,
                    machine_id=f"{index:040x}",
                    computer_dns_name=f"host-{index}.contoso.com",
                    creation_date_time_utc=WHEN,
                    last_update_date_time_utc=WHEN,
                    cancellation_date_time_utc=WHEN if index == 2 else None,
                    commands=[{"type": "x"}] if index == 1 else [],
                )
            )
        uow.commit()
    return {"open": open_group, "finance": finance}


APP = Principal(tenant_id=TENANT, kind=PrincipalKind.APPLICATION, id="app", name="app")
OTHER_APP = Principal(tenant_id=OTHER_TENANT, kind=PrincipalKind.APPLICATION, id="app", name="app")


def open_user(groups: dict[str, int]) -> Principal:
    return Principal(tenant_id=TENANT, kind=PrincipalKind.USER, id="u", name="u", device_group_ids=frozenset({groups["open"]}))


def test_rows_equal_sqlalchemys_for_every_column_type(engine: Engine, fleet: dict[str, int]) -> None:
    _assert_rows_equal_sqlalchemys(engine, fleet)


@pytest.mark.postgres
def test_rows_read_on_psycopg_equal_sqlalchemys(postgres_database: str) -> None:
    """PostgreSQL runs the reads by id of a machine (the offboard's) and of an action compiled on psycopg: the same rows."""
    from tests.conftest import _truncate

    _truncate(postgres_database)
    postgres = create_db_engine(postgres_database, pool_size=1)
    try:
        fleet = _seed_fleet(postgres)
        _assert_rows_equal_sqlalchemys(postgres, fleet)
        factory = SqlUnitOfWorkFactory(postgres)
        # Through the repository too, for an unrestricted caller and one restricted to a group.
        restricted = dataclasses.replace(APP, device_group_ids=frozenset({fleet["open"]}))
        with factory(write=False) as uow:
            for principal in (APP, restricted):
                for index in (1, 2, 3, 4):
                    got = uow.machines.get(principal, f"{index:040x}")
                    with postgres.connect() as conn:
                        row = (
                            conn.execute(
                                _visible_machine_by_id(repositories._visibility_shape(principal)),
                                {**repositories._visibility_params(principal), "machine_id": f"{index:040x}"},
                            )
                            .mappings()
                            .first()
                        )
                        expected = None if row is None else uow.machines.hydrate([row])[0]
                    assert got == expected
            # GET /api/machineactions/{id} reads the same way.
            for principal in (APP, restricted, OTHER_APP):
                for index in (1, 2, 3, 9):
                    action_id = f"00000000-0000-0000-0000-00000000000{index}"
                    got_action = uow.actions.get_visible(principal, action_id)
                    with postgres.connect() as conn:
                        row = (
                            conn.execute(
                                _visible_action_by_id(repositories._visibility_shape(principal)),
                                {**repositories._visibility_params(principal), "action_id": action_id},
                            )
                            .mappings()
                            .first()
                        )
                    assert got_action == (None if row is None else action_from_row(row))
            assert uow.actions.get_visible(APP, "00000000-0000-0000-0000-000000000001") is not None
            assert uow.actions.get_visible(restricted, "00000000-0000-0000-0000-000000000002") is None
    finally:
        postgres.dispose()


def _assert_rows_equal_sqlalchemys(engine: Engine, fleet: dict[str, int]) -> None:
    shapes = [
        (_visible_machine_by_id((False, False, False)), {"visible_tenant_id": TENANT}, "machine_id", machines.c.id),
        (
            _visible_machine_by_id((True, True, True)),
            {"visible_tenant_id": TENANT, "visible_group_ids": [fleet["open"]]},
            "machine_id",
            machines.c.id,
        ),
        (_visible_action_by_id((False, False, False)), {"visible_tenant_id": TENANT}, "action_id", machine_actions.c.id),
    ]
    with engine.connect() as conn:
        for statement, values, variable, key in shapes:
            ids = [row[0] for row in conn.execute(select(key))]
            compiled = CompiledSelect(statement, engine.dialect, {**values, variable: ""}, (variable,))
            found = 0
            for ident in ids:
                expected = conn.execute(statement, {**values, variable: ident}).mappings().first()
                got = compiled.first(driver_connection(conn), **{variable: ident})
                assert (dict(expected) if expected is not None else None) == got
                if got is not None:
                    found += 1
                    assert [type(value) for value in got.values()] == [type(value) for value in expected.values()]
            assert found >= 1


def test_list_pages_equal_sqlalchemys(engine: Engine, fleet: dict[str, int], monkeypatch: pytest.MonkeyPatch) -> None:
    machine_queries = [
        "$top=2",
        "$filter=lastSeen ge 2026-03-01T09:30:00.123456Z",
        "$filter=startswith(computerDnsName,'host-')&$count=true&$orderby=computerDnsName desc",
        "$filter=machineTags/any(t: t eq 'a-tag')",
        "$filter=version eq null or aadDeviceId ne null or riskScore eq 'None'",
        "$filter=rbacGroupId in (1, 2)",
    ]
    action_queries = [
        "$top=1",
        "$filter=status eq 'Cancelled'",
        "$filter=creationDateTimeUtc ge 2026-03-01T00:00:00Z&$count=true",
    ]
    factory = SqlUnitOfWorkFactory(engine)

    def run_all() -> list[object]:
        pages: list[object] = []
        with factory(write=False) as uow:
            for text in machine_queries:
                for principal in (APP, open_user(fleet)):
                    pages.append(list_machines(uow.conn, principal, parse_query(text, MACHINE_SPEC)))
            for text in action_queries:
                pages.append(list_actions(uow.conn, APP, parse_query(text, MACHINE_ACTION_SPEC)))
        return pages

    direct = run_all()
    # The same queries through SQLAlchemy, as on PostgreSQL.
    monkeypatch.setattr(queries, "direct_statements", lambda dialect: None)
    monkeypatch.setattr(repositories, "direct_statements", lambda dialect: None)
    expected = run_all()
    assert direct == expected
    assert any(page.items for page in expected)  # type: ignore[attr-defined]
    assert any(page.total for page in expected)  # type: ignore[attr-defined]


def test_a_statement_compiled_for_one_caller_never_serves_another(engine: Engine, fleet: dict[str, int]) -> None:
    factory = SqlUnitOfWorkFactory(engine)
    finance_machine = f"{2:040x}"
    with factory(write=False) as uow:
        # The unrestricted application sees the Finance machine and compiles its statements first.
        assert uow.machines.get(APP, finance_machine) is not None
        assert uow.actions.get_visible(APP, "00000000-0000-0000-0000-000000000002") is not None
        everything = list_machines(uow.conn, APP, parse_query("$top=10", MACHINE_SPEC))
        # A user of the open group, and an application of another tenant, ask for the same.
        user = open_user(fleet)
        assert uow.machines.get(user, finance_machine) is None
        assert uow.actions.get_visible(user, "00000000-0000-0000-0000-000000000002") is None
        assert uow.machines.get(OTHER_APP, finance_machine) is None
        seen = list_machines(uow.conn, user, parse_query("$top=10", MACHINE_SPEC))
        other = list_machines(uow.conn, OTHER_APP, parse_query("$top=10", MACHINE_SPEC))
    assert {m.id for m in everything.items} == {f"{i:040x}" for i in (1, 2, 3)}
    assert {m.id for m in seen.items} == {f"{1:040x}", f"{3:040x}"}
    assert {m.id for m in other.items} == {f"{4:040x}"}


def test_tags_come_in_order_for_one_machine_and_for_a_page(engine: Engine, fleet: dict[str, int]) -> None:
    factory = SqlUnitOfWorkFactory(engine)
    with factory(write=False) as uow:
        one = uow.machines.get(APP, f"{1:040x}")
        page = list_machines(uow.conn, APP, parse_query("$top=10", MACHINE_SPEC))
        rows = uow.conn.execute(MachineRepository(uow.conn).select_with_group()).mappings().all()
        hydrated = MachineRepository(uow.conn).hydrate(rows)
    assert one is not None and one.machine_tags == ["a-tag", "b-tag"]
    assert [m.machine_tags for m in page.items] == [["a-tag", "b-tag"], [], []]
    assert sorted(m.machine_tags for m in hydrated) == [[], [], [], ["a-tag", "b-tag"]]


def test_the_cache_keeps_at_most_its_size_and_drops_the_least_recently_used(engine: Engine) -> None:
    cache = CompiledCache(2)
    built: list[str] = []

    def build(name: str):
        def make() -> CompiledSelect:
            built.append(name)
            return CompiledSelect(select(machines.c.id).where(machines.c.computer_dns_name == name), engine.dialect, {})

        return make

    for name in ("a", "b", "a", "c", "a", "b"):
        cache.get(name, build(name))
    # "b" was the least recently used when "c" came, so it was compiled again; "a" never was.
    assert built == ["a", "b", "c", "b"]


@pytest.mark.postgres
def test_only_sqlite_runs_statements_directly(engine: Engine, postgres_database: str) -> None:
    postgres = create_db_engine(postgres_database, pool_size=1)
    try:
        assert direct_statements(engine.dialect) is direct_statements(engine.dialect) is not None
        assert direct_statements(postgres.dialect) is None
    finally:
        postgres.dispose()


def test_direct_inserts_store_what_sqlalchemy_stores(
    engine: Engine, fleet: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    factory = SqlUnitOfWorkFactory(engine)
    machine = f"{4:040x}"

    def write(suffix: str) -> None:
        with factory() as uow:
            uow.actions.add(
                MachineAction(
                    id=f"00000000-0000-0000-0000-0000000000{suffix}",
                    tenant_id=OTHER_TENANT,
                    type=ActionType.OFFBOARD,
                    requestor="someone",
                    requestor_comment="why \u00e9",
                    status=ActionStatus.CANCELLED,
                    machine_id=machine,
                    computer_dns_name=None,
                    creation_date_time_utc=WHEN,
                    last_update_date_time_utc=WHEN.replace(microsecond=0),
                    related_file_info={"sha1": None},
                ),
                requestor_id=None,
            )
            uow.audit.append(
                occurred_at=WHEN,
                tenant_id=None,
                actor_kind=None,
                actor_id=None,
                actor_name=None,
                action=f"test.{suffix}",
                machine_id=None,
                machine_action_id=None,
                outcome_status=201,
                outcome_code=None,
                comment=None,
                request_id=suffix,
                client_ip=None,
                details=None,
            )
            uow.commit()

    write("a1")
    monkeypatch.setattr(repositories, "direct_statements", lambda dialect: None)
    write("b2")
    with engine.connect() as conn:
        # The stored values themselves, as text: timestamps' format, JSON null for None, NULLs.
        actions = conn.exec_driver_sql("SELECT * FROM machine_actions WHERE id LIKE '%a1' OR id LIKE '%b2' ORDER BY id").all()
        events = conn.exec_driver_sql("SELECT * FROM audit_events WHERE action LIKE 'test.%' ORDER BY id").all()
    assert len(actions) == 2 and len(events) == 2
    assert actions[0][1:] == actions[1][1:]
    # All but the id, the action name and the request id, which differ on purpose.
    assert events[0][1:6] + events[0][7:12] + events[0][13:] == events[1][1:6] + events[1][7:12] + events[1][13:]
    # As SQLAlchemy stores them: None in a JSON column is JSON null.
    assert (actions[0][19], actions[0][20], actions[0][21], events[0][14]) == ('{"sha1": null}', "[]", "null", "null")
    assert actions[0][10:12] == ("2026-03-01 09:30:00.123456", "2026-03-01 09:30:00.000000")


def test_a_refused_duplicate_is_told_apart_from_other_integrity_errors(engine: Engine, fleet: dict[str, int]) -> None:
    factory = SqlUnitOfWorkFactory(engine)
    duplicate = MachineAction(
        id="00000000-0000-0000-0000-0000000000d1",
        tenant_id=TENANT,
        type=ActionType.OFFBOARD,
        requestor="someone",
        requestor_comment="again",
        status=ActionStatus.PENDING,
        machine_id=f"{1:040x}",
        computer_dns_name=None,
        creation_date_time_utc=WHEN,
        last_update_date_time_utc=WHEN,
    )
    with factory() as uow, pytest.raises(ActiveRequestAlreadyExists):
        uow.actions.add(duplicate)
    unknown_machine = dataclasses.replace(duplicate, id="00000000-0000-0000-0000-0000000000d2", machine_id="f" * 40)
    with factory() as uow, pytest.raises(IntegrityError):
        uow.actions.add(unknown_machine)


def test_a_sensors_poll_reads_equal_sqlalchemys(engine: Engine, fleet: dict[str, int]) -> None:
    _assert_poll_and_claim_equal_sqlalchemys(engine)


@pytest.mark.postgres
def test_a_sensors_poll_and_claim_on_psycopg_equal_sqlalchemys(postgres_database: str) -> None:
    """PostgreSQL runs a sensor's reads and its claim compiled on psycopg: the same rows, the same writes."""
    from tests.conftest import _truncate

    _truncate(postgres_database)
    postgres = create_db_engine(postgres_database, pool_size=2)
    try:
        _seed_fleet(postgres)
        _assert_poll_and_claim_equal_sqlalchemys(postgres)
    finally:
        postgres.dispose()


def _assert_poll_and_claim_equal_sqlalchemys(engine: Engine) -> None:
    """A sensor's reads (its credential, its machine, pending actions) and the claim's guarded UPDATE,
    each compared with the same statement executed by SQLAlchemy."""
    factory = SqlUnitOfWorkFactory(engine)
    with factory() as uow:
        for index, credential in ((1, "h-current"), (3, "h-superseded")):
            uow.sensors.add(
                sensor_id=f"sensor-{index}",
                tenant_id=TENANT,
                machine_id=f"{index:040x}",
                credential_hash=credential,
                generation=1,
                enrolled_at=WHEN,
                proof_hash=f"p-{index}",
            )
        uow.sensors.supersede(f"{3:040x}", WHEN)
        uow.commit()
    point_reads = SqlitePointReads(engine) if engine.dialect.name == "sqlite" else None
    try:
        with factory(write=False) as uow, engine.connect() as conn:
            readers = [uow] + ([point_reads()] if point_reads is not None else [])
            for reader in readers:
                with reader if reader is not uow else contextlib.nullcontext():
                    for credential in ("h-current", "h-superseded", "h-unknown"):
                        row = conn.execute(_SENSOR_BY_CREDENTIAL, {"credential_hash": credential}).mappings().first()
                        assert reader.sensors.by_credential_hash(credential) == (None if row is None else dict(row))
                    assert reader.sensors.by_credential_hash("h-current") is not None
                    found = 0
                    for index in (1, 2, 3, 4, 5):
                        machine_id = f"{index:040x}"
                        for tenant in (TENANT, OTHER_TENANT):
                            row = (
                                conn.execute(_MACHINE_IN_TENANT, {"machine_id": machine_id, "tenant_id": tenant})
                                .mappings()
                                .first()
                            )
                            expected = None if row is None else MachineRepository(conn).hydrate([row])[0]
                            assert reader.machines.get_in_tenant(tenant, machine_id, lock=False) == expected
                            found += expected is not None
                            untagged = reader.machines.get_in_tenant(tenant, machine_id, lock=False, with_tags=False)
                            assert untagged == (None if expected is None else dataclasses.replace(expected, machine_tags=[]))
                        for limit in (1, 10):
                            rows = conn.execute(_pending_of_machine(limit), {"machine_id": machine_id}).mappings()
                            assert reader.actions.pending_for_machine(machine_id, limit) == [action_from_row(r) for r in rows]
                    assert found == 4
                    pending = reader.actions.pending_for_machine(f"{1:040x}", 1)
                    assert [a.id for a in pending] == ["00000000-0000-0000-0000-000000000001"]
            for sensor_id, current in (("sensor-1", True), ("sensor-3", False), ("sensor-unknown", False)):
                assert uow.sensors.is_current(sensor_id) is current
        # The claim's read locks the machine's row on PostgreSQL, and reads it alike.
        with factory() as uow:
            locked = uow.machines.get_in_tenant(TENANT, f"{1:040x}", with_tags=False)
            assert locked is not None and locked.id == f"{1:040x}"
            assert uow.machines.get_in_tenant(OTHER_TENANT, f"{1:040x}") is None
    finally:
        if point_reads is not None:
            point_reads.close()
    _assert_transitions_write_what_sqlalchemy_writes(engine)


def _assert_transitions_write_what_sqlalchemy_writes(engine: Engine) -> None:
    """The guarded UPDATE compiled once stores what SQLAlchemy's own UPDATE stores, and guards alike."""
    factory = SqlUnitOfWorkFactory(engine)
    later = datetime(2026, 3, 2, 10, 0, 0, 654321, tzinfo=UTC)
    with factory() as uow:
        for index, action_type in (
            (5, ActionType.RUN_ANTIVIRUS_SCAN),
            (6, ActionType.ISOLATE),
            (7, ActionType.UNISOLATE),
            (8, ActionType.LIVE_RESPONSE),
        ):
            uow.actions.add(
                MachineAction(
                    id=f"00000000-0000-0000-0000-00000000000{index}",
                    tenant_id=TENANT,
                    type=action_type,
                    requestor="someone",
                    requestor_comment="why",
                    status=ActionStatus.PENDING,
                    machine_id=f"{1:040x}",
                    computer_dns_name="host-1.contoso.com",
                    creation_date_time_utc=WHEN,
                    last_update_date_time_utc=WHEN,
                )
            )
        uow.commit()
    ours, theirs = "00000000-0000-0000-0000-000000000005", "00000000-0000-0000-0000-000000000006"
    cancelled = {"cancellation_requestor": "r\u00e9", "cancellation_comment": "c", "cancellation_date_time_utc": later}
    with factory() as uow:
        # Not this machine's: refused by the guard.
        assert uow.actions.transition(ours, ActionStatus.IN_PROGRESS, at=later, machine_id=f"{2:040x}") is False
        assert uow.actions.transition(ours, ActionStatus.IN_PROGRESS, at=later) is True
        # Already InProgress: of two claims only one wins.
        assert uow.actions.transition(ours, ActionStatus.IN_PROGRESS, at=later) is False
        assert uow.actions.transition(ours, ActionStatus.SUCCEEDED, at=later, machine_id=f"{1:040x}", error_h_result=-5)
        # A Pending action cancelled, with the cancellation's values; then nothing moves it.
        assert uow.actions.transition("00000000-0000-0000-0000-000000000007", ActionStatus.CANCELLED, at=later, **cancelled)
        assert uow.actions.transition("00000000-0000-0000-0000-000000000007", ActionStatus.IN_PROGRESS, at=later) is False
        uow.commit()
    with engine.begin() as conn:
        for action_id, status, values in (
            (theirs, ActionStatus.IN_PROGRESS, {}),
            (theirs, ActionStatus.SUCCEEDED, {"error_h_result": -5}),
            ("00000000-0000-0000-0000-000000000008", ActionStatus.CANCELLED, cancelled),
        ):
            conn.execute(
                update(machine_actions)
                .where(machine_actions.c.id == action_id)
                .values(status=status.value, last_update_date_time_utc=later, **values)
            )
    with engine.connect() as conn:
        # As stored, not as read back: the same text for timestamps on SQLite.
        stored = {
            row[0][-1]: tuple(row[1:])
            for row in conn.exec_driver_sql(
                "SELECT id, status, CAST(last_update_date_time_utc AS TEXT), error_h_result, cancellation_requestor, "
                "cancellation_comment, CAST(cancellation_date_time_utc AS TEXT) FROM machine_actions WHERE id > "
                "'00000000-0000-0000-0000-000000000004'"
            )
        }
    assert stored["5"] == stored["6"]
    assert stored["5"][0] == ActionStatus.SUCCEEDED.value
    assert stored["7"] == stored["8"]
    assert stored["7"][0] == ActionStatus.CANCELLED.value
