"""Group commit on a real database: each queued write gets its own outcome, and only durable ones succeed."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import uuid
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import pytest
from sqlalchemy import make_url, select
from sqlalchemy.exc import DBAPIError

from bulwark.clock import FrozenClock
from bulwark.domain.access import Permission, Principal, PrincipalKind
from bulwark.domain.actions import ActionStatus, ActionType, MachineAction, RequestSource
from bulwark.domain.errors import ActiveRequestAlreadyExists, MdeError, ResourceNotFound, Unauthorized
from bulwark.domain.sensors import DeviceProperties
from bulwark.ids import new_uuid
from bulwark.service.audit_trail import RequestContext, audit_values
from bulwark.service.offboarding import OFFBOARD_AUDIT_ACTION, RequestOffboard, prepare_offboard, request_offboard
from bulwark.service.sensors import (
    DeviceAlreadyEnrolled,
    Enrolment,
    EnrolSensor,
    authenticate_sensor,
    enrol_sensor,
    issue_onboarding_package,
)
from bulwark.store.compiled import BatchStatements
from bulwark.store.group_commit import GroupCommitter
from bulwark.store.repositories import MachineActionRepository
from bulwark.store.tables import audit_events, machine_actions
from bulwark.store.uow import SqlUnitOfWorkFactory as UnitOfWorkFactory
from tests.conftest import TENANT, make_machine, seed

CALLER = Principal(
    tenant_id=TENANT,
    kind=PrincipalKind.APPLICATION,
    id="app-1",
    name="automation",
    permissions=frozenset({Permission.MACHINE_OFFBOARD.value}),
)


def _offboard(machine_id: str, clock: FrozenClock, note: str, caller: Principal = CALLER, request_source: str | None = None):
    command = RequestOffboard(machine_id=machine_id, comment=note, request_source=request_source)
    return partial(request_offboard, command, caller, clock=clock, context=RequestContext(request_id=note))


# How an offboard runs in a batch. "route": as the offboard route runs it (no savepoint, its read
# announced and its refusal deferred: the batch reads its machines with one statement and, on
# PostgreSQL, writes its actions with one); "no-savepoint": without a savepoint, each statement run
# at once; "savepoint": as any other use case runs.
MODES = {
    "route": {"savepoint": False, "defer_refusals": True},
    "no-savepoint": {"savepoint": False},
    "savepoint": {"savepoint": True},
}
SAVEPOINT = pytest.mark.parametrize("savepoint", list(MODES))


def _run(
    writer: GroupCommitter,
    machine_id: str,
    clock: FrozenClock,
    note: str,
    mode: str,
    caller: Principal = CALLER,
    request_source: str | None = None,
    **more,
):
    """Queue one offboard on ``writer`` the way ``mode`` (a key of MODES) runs it."""
    options = dict(MODES[mode], **more)
    if options.get("defer_refusals"):
        command = RequestOffboard(machine_id=machine_id, comment=note, request_source=request_source)
        options["prepare"] = partial(prepare_offboard, command, caller)
    return writer.run(_offboard(machine_id, clock, note, caller, request_source), **options)


def _as_one_batch(writer: GroupCommitter, queue: Callable[[], list[Awaitable[Any]]]) -> list[Any]:
    """The outcomes (errors included) of the writes ``queue()`` makes on ``writer``, all queued while
    the writer is held on a first job, so that they share a batch; the writer is stopped after."""
    gate = threading.Event()

    def held(uow):
        gate.wait(10)
        return "first"

    async def scenario():
        first = asyncio.ensure_future(writer.run(held))
        await asyncio.sleep(0.05)
        tasks = [asyncio.ensure_future(job) for job in queue()]
        await asyncio.sleep(0.05)
        gate.set()
        assert await first == "first"
        return await asyncio.gather(*tasks, return_exceptions=True)

    try:
        return asyncio.run(scenario())
    finally:
        writer.stop()


def _audited(uow_factory: UnitOfWorkFactory) -> list[str]:
    with uow_factory(write=False) as uow:
        events = uow.audit.list(tenant_id=TENANT, limit=1000)
    return sorted(e["machine_action_id"] for e in events if e["action"] == OFFBOARD_AUDIT_ACTION)


@SAVEPOINT
def test_a_batch_keeps_each_outcome_and_a_duplicate_fails_alone(
    uow_factory: UnitOfWorkFactory, clock: FrozenClock, savepoint: str
) -> None:
    machines = [make_machine(i) for i in range(1, 21)]
    seed(uow_factory, machines)
    writer = GroupCommitter(uow_factory.engine)

    def queue():
        jobs = [_run(writer, m.id, clock, f"req-{m.id}", savepoint) for m in machines]
        jobs.append(_run(writer, machines[0].id, clock, "duplicate", savepoint))
        jobs.append(_run(writer, "f" * 40, clock, "unknown", savepoint))
        return jobs

    outcomes = _as_one_batch(writer, queue)
    created, duplicate, unknown = outcomes[:20], outcomes[20], outcomes[21]
    assert all(isinstance(a, MachineAction) for a in created)
    assert isinstance(duplicate, ActiveRequestAlreadyExists)
    assert isinstance(unknown, ResourceNotFound)
    # 23 writes, far fewer commits: the queued ones shared a transaction.
    assert writer.members == 23 and writer.batches <= 3
    # Every acknowledged action is stored with its audit event; the refused ones left nothing.
    with uow_factory(write=False) as uow:
        for action in created:
            assert isinstance(action, MachineAction)
            stored = uow.actions.active_for(action.machine_id, ActionType.OFFBOARD)
            assert stored is not None and stored.id == action.id
    assert _audited(uow_factory) == sorted(a.id for a in created if isinstance(a, MachineAction))


@SAVEPOINT
def test_a_failed_commit_acknowledges_nothing(uow_factory: UnitOfWorkFactory, clock: FrozenClock, savepoint: str) -> None:
    machine = make_machine(30)
    seed(uow_factory, [machine])
    writer = GroupCommitter(uow_factory.engine)

    def poison(uow):
        # The connection is lost after both members ran but before the batch commits.
        uow.conn.connection.dbapi_connection.close()
        return "never durable"

    async def scenario():
        return await asyncio.gather(
            _run(writer, machine.id, clock, "with poison", savepoint),
            writer.run(poison),
            return_exceptions=True,
        )

    try:
        outcomes = asyncio.run(scenario())
    finally:
        writer.stop()
    assert all(isinstance(o, Exception) for o in outcomes), outcomes
    with uow_factory(write=False) as uow:
        assert uow.actions.active_for(machine.id, ActionType.OFFBOARD) is None
    assert _audited(uow_factory) == []


@SAVEPOINT
def test_the_writer_recovers_from_a_lost_connection(uow_factory: UnitOfWorkFactory, clock: FrozenClock, savepoint: str) -> None:
    first, second = make_machine(31), make_machine(32)
    seed(uow_factory, [first, second])
    writer = GroupCommitter(uow_factory.engine)

    def poison(uow):
        uow.conn.connection.dbapi_connection.close()
        return "never durable"

    async def scenario():
        lost = await asyncio.gather(writer.run(poison), _run(writer, first.id, clock, "lost", savepoint), return_exceptions=True)
        # The next batch runs on a good connection: later writes are not lost with the broken one.
        after = await _run(writer, second.id, clock, "after", savepoint)
        again = await _run(writer, first.id, clock, "again", savepoint)
        return lost, after, again

    try:
        lost, after, again = asyncio.run(scenario())
    finally:
        writer.stop()
    assert all(isinstance(o, Exception) for o in lost), lost
    assert isinstance(after, MachineAction) and isinstance(again, MachineAction)
    assert _audited(uow_factory) == sorted([after.id, again.id])


def test_new_uuid_is_a_random_version_4_uuid() -> None:
    ids = [new_uuid() for _ in range(5000)]
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text and parsed.version == 4 and parsed.variant == uuid.RFC_4122


@SAVEPOINT
@pytest.mark.parametrize("count", [1, 40])
def test_one_action_from_concurrent_offboards_of_one_machine(
    uow_factory: UnitOfWorkFactory, clock: FrozenClock, count: int, savepoint: str
) -> None:
    machine = make_machine(40)
    seed(uow_factory, [machine])
    writer = GroupCommitter(uow_factory.engine)

    async def scenario():
        return await asyncio.gather(
            *(_run(writer, machine.id, clock, f"race-{i}", savepoint) for i in range(count)),
            return_exceptions=True,
        )

    try:
        outcomes = asyncio.run(scenario())
    finally:
        writer.stop()
    won = [o for o in outcomes if isinstance(o, MachineAction)]
    assert len(won) == 1
    assert all(isinstance(o, ActiveRequestAlreadyExists) for o in outcomes if o is not won[0])
    assert _audited(uow_factory) == [won[0].id]


@pytest.mark.parametrize("mode", ["route", "no-savepoint"])
def test_a_member_without_savepoint_failing_unexpectedly_fails_alone(
    uow_factory: UnitOfWorkFactory, clock: FrozenClock, mode: str
) -> None:
    """Members that break the promise of ``savepoint=False`` (a failed statement, which spoils a
    PostgreSQL transaction; a failure after writing) fail alone, leave nothing, and the others stand."""
    machines = [make_machine(i) for i in range(50, 56)]
    seed(uow_factory, machines)
    writer = GroupCommitter(uow_factory.engine)

    def failed_statement(uow):
        with uow:
            uow.conn.exec_driver_sql("SELECT no_such_column FROM audit_events")
            uow.commit()

    def refusal_after_failed_statement(uow):
        with uow:
            try:
                uow.conn.exec_driver_sql("SELECT no_such_column FROM audit_events")
            except Exception:
                raise ResourceNotFound("Machine", "x") from None

    def failure_after_writing(uow):
        with uow:
            uow.audit.append(
                occurred_at=clock.now(), action="written then failed", outcome_status=200, request_id="after-writing"
            )
            raise RuntimeError("failed after writing")

    def queue():
        jobs = [_run(writer, m.id, clock, f"req-{m.id}", mode) for m in machines[:3]]
        jobs.append(writer.run(failed_statement, savepoint=False))
        jobs.append(writer.run(refusal_after_failed_statement, savepoint=False))
        jobs.append(writer.run(failure_after_writing, savepoint=False))
        jobs += [_run(writer, m.id, clock, f"req-{m.id}", mode) for m in machines[3:]]
        jobs.append(_run(writer, machines[0].id, clock, "duplicate", mode))
        return jobs

    outcomes = _as_one_batch(writer, queue)
    created = outcomes[:3] + outcomes[6:9]
    assert all(isinstance(a, MachineAction) for a in created), outcomes
    assert isinstance(outcomes[3], DBAPIError)
    assert isinstance(outcomes[4], ResourceNotFound)
    assert isinstance(outcomes[5], RuntimeError)
    assert isinstance(outcomes[9], ActiveRequestAlreadyExists)
    # Only the offboards were written: each action with its audit event, nothing of the failed members.
    assert _audited(uow_factory) == sorted(a.id for a in created if isinstance(a, MachineAction))
    with uow_factory(write=False) as uow:
        assert [e["action"] for e in uow.audit.list(limit=1000)] == [OFFBOARD_AUDIT_ACTION] * 6


def test_an_action_and_its_event_are_stored_as_the_separate_inserts_store_them(
    uow_factory: UnitOfWorkFactory, clock: FrozenClock
) -> None:
    """``add_with_event`` writes the same rows as ``add`` followed by ``AuditRepository.append``, run
    at once or collected in a batch (on PostgreSQL one statement writes a batch's rows)."""
    machines = [make_machine(i) for i in range(60, 66)]
    seed(uow_factory, machines)
    context = RequestContext(request_id="same-rows", client_ip="203.0.113.7")

    def action_of(machine_id: str) -> MachineAction:
        return MachineAction(
            id=new_uuid(),
            tenant_id=TENANT,
            type=ActionType.OFFBOARD,
            title="t",
            requestor=CALLER.name,
            requestor_comment="c",
            status=ActionStatus.PENDING,
            machine_id=machine_id,
            computer_dns_name=f"{machine_id}.contoso.com",
            creation_date_time_utc=clock.now(),
            last_update_date_time_utc=clock.now(),
            external_id="ext",
            request_source=RequestSource.PUBLIC_API.value,
            commands=["a", {"b": 1}],
        )

    stored = []
    cases = (
        (0, "combined", {"k": [1, "two"]}),
        (1, "separate", {"k": [1, "two"]}),
        (2, "combined", None),
        (3, "separate", None),
        (4, "batched", {"k": [1, "two"]}),
        (5, "batched", None),
    )
    for index, how, details in cases:
        machine = machines[index]
        action = action_of(machine.id)
        event = audit_values(
            clock,
            action=OFFBOARD_AUDIT_ACTION,
            principal=CALLER,
            context=context,
            outcome_status=200,
            machine_id=machine.id,
            machine_action_id=action.id,
            comment="c",
            details=details,
        )
        with uow_factory() as uow:
            if how == "combined":
                uow.actions.add_with_event(action, event, requestor_id=CALLER.id)
            elif how == "batched":
                batch = BatchStatements()
                batch.deferring = "member"
                MachineActionRepository(uow.conn, batch).add_with_event(action, event, requestor_id=CALLER.id)
                assert batch.settle() == []
            else:
                uow.actions.add(action, requestor_id=CALLER.id)
                uow.audit.append(**event)
            uow.commit()
        with uow_factory(write=False) as uow:
            # Each value as read back, and whether it is SQL NULL (None in a JSON column is stored as JSON null).
            row = dict(
                uow.conn.execute(select(machine_actions, *_nulls(machine_actions)).where(machine_actions.c.id == action.id))
                .mappings()
                .one()
            )
            audit = dict(
                uow.conn.execute(select(audit_events, *_nulls(audit_events)).where(audit_events.c.machine_action_id == action.id))
                .mappings()
                .one()
            )
        for values in (row, audit):
            for key in ("id", "machine_id", "machine_action_id", "computer_dns_name"):
                values.pop(key, None)
        stored.append((row, audit))
    assert stored[0] == stored[1] == stored[4] and stored[2] == stored[3] == stored[5]
    assert stored[0][0]["null_troubleshoot_info"] is False and stored[0][0]["null_scope"] is True
    assert stored[2][1]["null_details"] is False  # JSON null, as SQLAlchemy stores None
    # And stored as SQLAlchemy reads them back: JSON and timestamps round-trip.
    assert stored[0][1]["details"] == {"k": [1, "two"]} and stored[0][1]["occurred_at"] == clock.now()


def _nulls(table):
    return [column.is_(None).label(f"null_{column.name}") for column in table.columns]


@pytest.mark.postgres
def test_wake_ups_are_sent_with_the_commit_and_only_for_committed_actions(postgres_database: str, clock: FrozenClock) -> None:
    """With LISTEN/NOTIFY the batch's wake-ups are part of its transaction: a committed action's
    machine is woken, a refused offboard and a batch that failed to commit wake nobody."""
    import psycopg

    from bulwark.notifier import CHANNEL, PostgresNotifier
    from bulwark.store.db import create_db_engine
    from tests.conftest import _truncate

    _truncate(postgres_database)
    engine = create_db_engine(postgres_database, pool_size=2)
    uow_factory = UnitOfWorkFactory(engine)
    good, other = make_machine(70), make_machine(71)
    seed(uow_factory, [good, other])
    notifier = PostgresNotifier(postgres_database, engine)
    writer = GroupCommitter(engine, notifier=notifier)
    dsn = make_url(postgres_database).set(drivername="postgresql").render_as_string(hide_password=False)

    def poison(uow):
        uow.conn.connection.dbapi_connection.close()
        return "never durable"

    async def scenario():
        created = await asyncio.gather(
            _run(writer, good.id, clock, "first", "route", wake=lambda a: a.machine_id),
            _run(writer, good.id, clock, "again", "route", wake=lambda a: a.machine_id),
            return_exceptions=True,
        )
        lost = await asyncio.gather(
            _run(writer, other.id, clock, "lost", "route", wake=lambda a: a.machine_id),
            writer.run(poison),
            return_exceptions=True,
        )
        return created, lost

    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute(f"LISTEN {CHANNEL}")
        try:
            created, lost = asyncio.run(scenario())
        finally:
            writer.stop()
            engine.dispose()
        woken = [n.payload for n in listener.notifies(timeout=1)]
    assert isinstance(created[0], MachineAction) and isinstance(created[1], ActiveRequestAlreadyExists)
    assert all(isinstance(o, Exception) for o in lost), lost
    assert woken == [good.id]


@pytest.mark.postgres
def test_a_connection_lost_between_batches_loses_no_write(postgres_database: str, clock: FrozenClock) -> None:
    """The writer keeps its PostgreSQL connection between batches; when the server drops it (a
    restart, an idle timeout), the next batch runs on a new one instead of failing."""
    from bulwark.store.db import create_db_engine
    from tests.conftest import _truncate

    _truncate(postgres_database)
    engine = create_db_engine(postgres_database, pool_size=2)
    uow_factory = UnitOfWorkFactory(engine)
    first, second, third = make_machine(80), make_machine(81), make_machine(82)
    seed(uow_factory, [first, second, third])
    writer = GroupCommitter(engine)

    def backend_pid(uow):
        return uow.conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()

    def terminate(pid: int) -> None:
        with engine.connect() as other:
            assert other.exec_driver_sql(f"SELECT pg_terminate_backend({int(pid)})").scalar_one() is True
            other.commit()

    async def scenario():
        done = [await _run(writer, first.id, clock, "before", "route")]
        terminate(await writer.run(backend_pid))
        done.append(await _run(writer, second.id, clock, "after", "route"))
        terminate(await writer.run(backend_pid))
        done.append(await writer.run(_offboard(third.id, clock, "with a savepoint")))
        return done

    try:
        done = asyncio.run(scenario())
    finally:
        writer.stop()
    try:
        assert all(isinstance(a, MachineAction) for a in done), done
        assert _audited(uow_factory) == sorted(a.id for a in done)
    finally:
        engine.dispose()


def test_enrolments_share_batches_and_a_refused_one_changes_nothing(uow_factory: UnitOfWorkFactory, clock: FrozenClock) -> None:
    seed(uow_factory, [])
    package = issue_onboarding_package(TENANT, "https://bulwark.example", None, uow_factory(), clock)
    writer = GroupCommitter(uow_factory.engine)

    def enrol(identity: str, key: str = package["onboardingKey"]):
        properties = DeviceProperties(computer_dns_name=f"{identity}.contoso.com", os_platform="Windows11")
        command = EnrolSensor(TENANT, key, identity, properties)
        return lambda uow: enrol_sensor(command, uow, clock, client_ip="10.0.0.1")

    def queue():
        jobs = [writer.run(enrol(f"device-{i}")) for i in range(10)]
        # The same identity again without the device's proof, and a key that is no package's.
        jobs.append(writer.run(enrol("device-0")))
        jobs.append(writer.run(enrol("device-x", key="bwo_not-a-key")))
        return jobs

    outcomes = _as_one_batch(writer, queue)
    enrolled, again, unknown = outcomes[:10], outcomes[10], outcomes[11]
    assert all(isinstance(e, Enrolment) for e in enrolled), enrolled
    assert isinstance(again, DeviceAlreadyEnrolled)
    assert isinstance(unknown, Unauthorized)
    assert writer.members == 13 and writer.batches <= 3
    # Each acknowledged enrolment is stored: its credential works, its machine is in the inventory.
    for enrolment in enrolled:
        assert isinstance(enrolment, Enrolment)
        identity = authenticate_sensor(enrolment.credential, uow_factory(write=False))
        assert identity.machine_id == enrolment.sensor.machine_id and identity.generation == 1
    with uow_factory(write=False) as uow:
        assert uow.machines.count(TENANT) == 10
        events = [e for e in uow.audit.list(tenant_id=TENANT, limit=1000) if e["action"] == "sensor.enrolled"]
    assert sorted(e["machine_id"] for e in events) == sorted(e.sensor.machine_id for e in enrolled if isinstance(e, Enrolment))


def test_a_shared_batch_refuses_each_request_as_one_at_a_time_would(uow_factory: UnitOfWorkFactory, clock: FrozenClock) -> None:
    """In the offboard route's mode (every member's machine read by one statement, on PostgreSQL
    the inserts written by one) each request gets what it would get alone:
    visibility is the caller's, a malformed id is refused, and a machine changed by a member that is
    not an offboard is read again after it, not from before it."""
    machines = [make_machine(i, rbac_group_id=None) for i in range(90, 96)]
    group_ids = seed(uow_factory, [], groups=["Tier0"])
    grouped = make_machine(96, rbac_group_id=group_ids[0])
    seed(uow_factory, [*machines, grouped])
    writer = GroupCommitter(uow_factory.engine)
    # A user who reaches only the Tier0 group; an application of another tenant.
    tier0_user = dataclasses.replace(
        CALLER,
        kind=PrincipalKind.USER,
        id="user-1",
        name="alice@contoso.com",
        device_group_ids=frozenset(group_ids),
        include_ungrouped=False,
    )
    stranger = dataclasses.replace(CALLER, tenant_id=str(uuid.UUID(int=7)), id="app-2")
    offboarded_meanwhile = machines[5]

    def offboarded_by_its_sensor(uow):
        with uow:
            uow.machines.update_fields(offboarded_meanwhile.id, offboarded_at=clock.now())
            uow.commit()
        return "offboarded"

    def queue():
        jobs = [
            _run(writer, machines[0].id, clock, "ok", "route"),
            _run(writer, machines[1].id, clock, "not the user's group", "route", caller=tier0_user),
            _run(writer, grouped.id, clock, "the user's group", "route", caller=tier0_user),
            _run(writer, machines[2].id, clock, "another tenant", "route", caller=stranger),
            _run(writer, "not-an-id", clock, "malformed", "route"),
            _run(writer, machines[0].id, clock, "duplicate", "route"),
            writer.run(offboarded_by_its_sensor),
            _run(writer, offboarded_meanwhile.id, clock, "after the change", "route"),
            _run(writer, machines[3].id, clock, "after the change too", "route"),
        ]
        return jobs

    outcomes = _as_one_batch(writer, queue)
    assert writer.batches == 2, writer.batches
    ok, foreign_group, own_group, foreign_tenant, malformed, duplicate, change, after, later = outcomes
    assert isinstance(ok, MachineAction) and ok.machine_id == machines[0].id
    assert isinstance(foreign_group, ResourceNotFound)
    assert isinstance(own_group, MachineAction) and own_group.requestor == "alice@contoso.com"
    assert isinstance(foreign_tenant, ResourceNotFound)
    assert isinstance(malformed, MdeError) and (malformed.status, malformed.code) == (400, "InvalidInput")
    assert isinstance(duplicate, ActiveRequestAlreadyExists)
    # Its read was sent before the batch's members ran; the change came first in the batch's order,
    # so the offboard after it is refused: its machine was read anew.
    assert change == "offboarded"
    assert isinstance(after, MdeError) and "already offboarded" in after.message
    assert isinstance(later, MachineAction)
    created = [ok, own_group, later]
    assert _audited(uow_factory) == sorted(a.id for a in created if isinstance(a, MachineAction))


def _round_trips(trace: str) -> int:
    """Round trips in a libpq protocol trace: the client's messages that ask for answers."""
    return sum(1 for line in trace.splitlines() if line.split("\t")[1:2] == ["F"] and line.split("\t")[3:4][0] in SYNCING)


SYNCING = ("Sync", "Flush", "Query")


@pytest.mark.postgres
@pytest.mark.parametrize("size", [5, 30])
def test_a_shared_batch_costs_the_same_round_trips_whatever_its_size(
    postgres_database: str, clock: FrozenClock, tmp_path, size: int
) -> None:
    """On PostgreSQL a batch of offboards in the route's mode waits on the database a fixed number
    of times (machine reads, inserts, commit), where one at a time it waits twice per offboard."""
    import os

    from bulwark.store.db import create_db_engine
    from tests.conftest import _truncate

    _truncate(postgres_database)
    engine = create_db_engine(postgres_database, pool_size=2)
    uow_factory = UnitOfWorkFactory(engine)
    machines = [make_machine(200 + i) for i in range(size)]
    seed(uow_factory, machines)
    counted = {}
    try:
        for mode in ("route", "no-savepoint"):
            writer = GroupCommitter(engine)
            gate = threading.Event()
            path = tmp_path / f"{mode}.trace"

            def traced(uow, path=path, gate=gate):
                # Trace the writer's connection from here: this batch's commit, then the next batch.
                descriptor = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
                uow.conn.connection.driver_connection.pgconn.trace(descriptor)
                gate.wait(10)

            async def scenario(mode=mode, writer=writer, gate=gate):
                first = asyncio.ensure_future(writer.run(traced))
                await asyncio.sleep(0.05)
                tasks = [asyncio.ensure_future(_run(writer, m.id, clock, mode, mode)) for m in machines]
                await asyncio.sleep(0.05)
                gate.set()
                await first
                return await asyncio.gather(*tasks, return_exceptions=True)

            try:
                outcomes = asyncio.run(scenario())
            finally:
                writer.stop()
            assert writer.batches == 2
            if mode == "route":
                assert all(isinstance(o, MachineAction) for o in outcomes), outcomes
            else:
                assert all(isinstance(o, ActiveRequestAlreadyExists) for o in outcomes), outcomes
            counted[mode] = _round_trips(path.read_text())
    finally:
        engine.dispose()
    # The traced batch's own commit, then the batch of offboards.
    assert counted["route"] <= 6, counted
    assert counted["no-savepoint"] >= 2 * size, counted


def test_a_collected_insert_failing_fails_alone(uow_factory: UnitOfWorkFactory, clock: FrozenClock) -> None:
    """A collected insert that PostgreSQL rejects (a value longer than its column) fails the
    batch's one statement: the batch runs again, each member in a savepoint, so that member fails
    alone and the others stand."""
    machines = [make_machine(i) for i in range(300, 306)]
    seed(uow_factory, machines)
    writer = GroupCommitter(uow_factory.engine)

    def queue():
        jobs = [_run(writer, m.id, clock, f"req-{m.id}", "route") for m in machines[:2]]
        # Longer than the column (40): PostgreSQL refuses it, SQLite keeps it.
        jobs.append(_run(writer, machines[2].id, clock, "overlong", "route", request_source="x" * 41))
        jobs += [_run(writer, m.id, clock, f"req-{m.id}", "route") for m in machines[3:]]
        jobs.append(_run(writer, machines[0].id, clock, "duplicate", "route"))
        return jobs

    outcomes = _as_one_batch(writer, queue)
    created = outcomes[:2] + outcomes[3:6]
    assert all(isinstance(a, MachineAction) for a in created), outcomes
    assert isinstance(outcomes[6], ActiveRequestAlreadyExists)
    if uow_factory.engine.dialect.name == "postgresql":
        assert isinstance(outcomes[2], DBAPIError), outcomes[2]
    else:
        # SQLite keeps a value longer than its declared length.
        assert isinstance(outcomes[2], MachineAction)
        created.append(outcomes[2])
    assert _audited(uow_factory) == sorted(a.id for a in created if isinstance(a, MachineAction))


def test_reads_ahead_hold_across_a_member_that_changes_no_machine(uow_factory: UnitOfWorkFactory, clock: FrozenClock) -> None:
    """A member run with ``changes_machines=False`` (a sensor's claim) leaves the batch's machines
    read ahead in use for the offboards after it; shown here by a member that breaks that promise:
    the offboard after it still sees the machine as it was read before the batch's members ran."""
    machines = [make_machine(i) for i in range(320, 323)]
    seed(uow_factory, machines)
    writer = GroupCommitter(uow_factory.engine)

    def offboarded(uow):
        with uow:
            uow.machines.update_fields(machines[1].id, offboarded_at=clock.now())
            uow.commit()
        return "changed"

    def queue():
        jobs = [
            _run(writer, machines[0].id, clock, "before", "route"),
            writer.run(offboarded, savepoint=False, changes_machines=False),
            _run(writer, machines[1].id, clock, "after", "route"),
        ]
        return jobs

    before, changed, after = _as_one_batch(writer, queue)
    assert isinstance(before, MachineAction) and changed == "changed"
    # The promise broken, the read from before the change was used: the machine looked onboarded.
    assert isinstance(after, MachineAction)
