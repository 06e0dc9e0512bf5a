"""Group commit on a real database: each queued write gets its own outcome, and only durable ones succeed."""

from __future__ import annotations

import asyncio
import threading
import uuid
from functools import partial

import pytest

from bulwark.clock import FrozenClock
from bulwark.domain.access import Permission, Principal, PrincipalKind
from bulwark.domain.actions import ActionType, MachineAction
from bulwark.domain.errors import ActiveRequestAlreadyExists, ResourceNotFound, Unauthorized
from bulwark.domain.sensors import DeviceProperties
from bulwark.ids import new_uuid
from bulwark.service.audit_trail import RequestContext
from bulwark.service.offboarding import OFFBOARD_AUDIT_ACTION, RequestOffboard, request_offboard
from bulwark.service.sensors import (
    DeviceAlreadyEnrolled,
    Enrolment,
    EnrolSensor,
    authenticate_sensor,
    enrol_sensor,
    issue_onboarding_package,
)
from bulwark.store.group_commit import GroupCommitter
from bulwark.store.uow import SqlUnitOfWorkFactory as UnitOfWorkFactory
from tests.conftest import TENANT, make_machine, seed

CALLER = Principal(
    tenant_id=TENANT,
    kind=PrincipalKind.APPLICATION,
    id="app-1",
    name="automation",
    permissions=frozenset({Permission.MACHINE_OFFBOARD.value}),
)


def _offboard(machine_id: str, clock: FrozenClock, note: str):
    command = RequestOffboard(machine_id=machine_id, comment=note)
    return partial(request_offboard, command, CALLER, clock=clock, context=RequestContext(request_id=note))


def _audited(uow_factory: UnitOfWorkFactory) -> list[str]:
    with uow_factory(write=False) as uow:
        events = uow.audit.list(tenant_id=TENANT, limit=1000)
    return sorted(e["machine_action_id"] for e in events if e["action"] == OFFBOARD_AUDIT_ACTION)


def test_a_batch_keeps_each_outcome_and_a_duplicate_fails_alone(uow_factory: UnitOfWorkFactory, clock: FrozenClock) -> None:
    machines = [make_machine(i) for i in range(1, 21)]
    seed(uow_factory, machines)
    writer = GroupCommitter(uow_factory.engine)
    # Hold the writer on its first job so that everything else queues behind it and shares a batch.
    gate = threading.Event()

    def held(uow):
        gate.wait(10)
        return "first"

    async def scenario():
        first = asyncio.ensure_future(writer.run(held))
        await asyncio.sleep(0.05)
        jobs = [writer.run(_offboard(m.id, clock, f"req-{m.id}")) for m in machines]
        jobs.append(writer.run(_offboard(machines[0].id, clock, "duplicate")))
        jobs.append(writer.run(_offboard("f" * 40, clock, "unknown")))
        tasks = [asyncio.ensure_future(j) for j in jobs]
        await asyncio.sleep(0.05)
        gate.set()
        return await first, await asyncio.gather(*tasks, return_exceptions=True)

    try:
        first, outcomes = asyncio.run(scenario())
    finally:
        writer.stop()
    assert first == "first"
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


def test_a_failed_commit_acknowledges_nothing(uow_factory: UnitOfWorkFactory, clock: FrozenClock) -> None:
    machine = make_machine(30)
    seed(uow_factory, [machine])
    writer = GroupCommitter(uow_factory.engine)

    def poison(uow):
        # The connection is lost after both members ran but before the batch commits.
        uow.conn.connection.dbapi_connection.close()
        return "never durable"

    async def scenario():
        return await asyncio.gather(
            writer.run(_offboard(machine.id, clock, "with poison")), writer.run(poison), return_exceptions=True
        )

    try:
        outcomes = asyncio.run(scenario())
    finally:
        writer.stop()
    assert all(isinstance(o, Exception) for o in outcomes), outcomes
    with uow_factory(write=False) as uow:
        assert uow.actions.active_for(machine.id, ActionType.OFFBOARD) is None
    assert _audited(uow_factory) == []


def test_the_writer_recovers_from_a_lost_connection(uow_factory: UnitOfWorkFactory, clock: FrozenClock) -> None:
    first, second = make_machine(31), make_machine(32)
    seed(uow_factory, [first, second])
    writer = GroupCommitter(uow_factory.engine)

    def poison(uow):
        uow.conn.connection.dbapi_connection.close()
        return "never durable"

    async def scenario():
        lost = await asyncio.gather(writer.run(poison), writer.run(_offboard(first.id, clock, "lost")), return_exceptions=True)
        # The next batch runs on a good connection: later writes are not lost with the broken one.
        after = await writer.run(_offboard(second.id, clock, "after"))
        again = await writer.run(_offboard(first.id, clock, "again"))
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


@pytest.mark.parametrize("count", [1, 40])
def test_one_action_from_concurrent_offboards_of_one_machine(
    uow_factory: UnitOfWorkFactory, clock: FrozenClock, count: int
) -> None:
    machine = make_machine(40)
    seed(uow_factory, [machine])
    writer = GroupCommitter(uow_factory.engine)

    async def scenario():
        return await asyncio.gather(
            *(writer.run(_offboard(machine.id, clock, f"race-{i}")) for i in range(count)), return_exceptions=True
        )

    try:
        outcomes = asyncio.run(scenario())
    finally:
        writer.stop()
    won = [o for o in outcomes if isinstance(o, MachineAction)]
    assert len(won) == 1
    assert all(isinstance(o, ActiveRequestAlreadyExists) for o in outcomes if o is not won[0])
    assert _audited(uow_factory) == [won[0].id]


def test_enrolments_share_batches_and_a_refused_one_changes_nothing(uow_factory: UnitOfWorkFactory, clock: FrozenClock) -> None:
    seed(uow_factory, [])
    package = issue_onboarding_package(TENANT, "https://bulwark.example", None, uow_factory(), clock)
    writer = GroupCommitter(uow_factory.engine)
    gate = threading.Event()

    def held(uow):
        gate.wait(10)
        return "first"

    def enrol(identity: str, key: str = package["onboardingKey"]):
        properties = DeviceProperties(computer_dns_name=f"{identity}.contoso.com", os_platform="Windows11")
        command = EnrolSensor(TENANT, key, identity, properties)
        return lambda uow: enrol_sensor(command, uow, clock, client_ip="10.0.0.1")

    async def scenario():
        first = asyncio.ensure_future(writer.run(held))
        await asyncio.sleep(0.05)
        jobs = [writer.run(enrol(f"device-{i}")) for i in range(10)]
        # The same identity again without the device's proof, and a key that is no package's.
        jobs.append(writer.run(enrol("device-0")))
        jobs.append(writer.run(enrol("device-x", key="bwo_not-a-key")))
        tasks = [asyncio.ensure_future(j) for j in jobs]
        await asyncio.sleep(0.05)
        gate.set()
        return await first, await asyncio.gather(*tasks, return_exceptions=True)

    try:
        _, outcomes = asyncio.run(scenario())
    finally:
        writer.stop()
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
