"""The control plane's use cases against the in-memory unit of work (no database)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bulwark.clock import FrozenClock, OffsetClock
from bulwark.domain.actions import ActionStatus
from bulwark.domain.control import MAX_CLOCK_OFFSET_SECONDS, SimulatedOutcome
from bulwark.domain.errors import InvalidInput, ResourceNotFound
from bulwark.service import control
from bulwark.service.actions import SweepPolicy
from bulwark.service.offboarding import RequestOffboard, request_offboard
from tests.unit.fakes import FakeUnitOfWorkFactory
from tests.unit.use_case_support import APP, CONTEXT, TENANT, make_machine, with_tenant

MACHINE = make_machine(1)
POLICY = SweepPolicy(timedelta(days=3), timedelta(hours=1), timedelta(days=7))


@pytest.fixture
def uow() -> FakeUnitOfWorkFactory:
    return with_tenant(FakeUnitOfWorkFactory(), MACHINE)


def test_a_behaviour_is_set_read_and_cleared_for_a_machine_of_the_callers_tenant(
    uow: FakeUnitOfWorkFactory, clock: FrozenClock
) -> None:
    command = control.SetBehavior(MACHINE.id.upper(), SimulatedOutcome.FAILED, 1.5, -2147024891)
    behavior = control.set_behavior(command, APP, uow(), clock, CONTEXT)
    assert behavior.machine_id == MACHINE.id
    assert control.get_behavior(MACHINE.id, APP, uow(write=False)) == behavior
    assert control.clear_behavior(MACHINE.id, APP, uow(), clock, CONTEXT) == MACHINE.id
    assert control.get_behavior(MACHINE.id, APP, uow(write=False)) is None
    assert [e["action"] for e in uow.db.audit] == ["control.behavior.set", "control.behavior.cleared"]
    with pytest.raises(ResourceNotFound):
        control.set_behavior(control.SetBehavior("f" * 40, SimulatedOutcome.NEVER), APP, uow(), clock, CONTEXT)


def test_faults_match_by_operation_count_and_chance(uow: FakeUnitOfWorkFactory, clock: FrozenClock) -> None:
    counted = control.add_fault(control.AddFault("offboardMachine", status=429, count=2), APP, uow(), clock, CONTEXT)
    clock.advance(1)
    chancy = control.add_fault(control.AddFault("*", status=500, probability=0.25), APP, uow(), clock, CONTEXT)

    def choose(operation: str, draw: float) -> str | None:
        snapshot = control.load_snapshot(uow(write=False))
        fault = control.choose_fault(snapshot, operation, uow(), chance=lambda: draw)
        return fault.id if fault else None

    assert choose("getMachine", 0.9) is None  # the chance fault's draw misses
    assert choose("getMachine", 0.1) == chancy.id
    assert choose("offboardMachine", 0.9) == counted.id
    assert choose("offboardMachine", 0.9) == counted.id
    assert choose("offboardMachine", 0.9) is None  # spent, and gone
    assert [f.id for f in control.list_faults(uow(write=False))] == [chancy.id]


def test_a_counted_fault_already_spent_elsewhere_is_passed_over(uow: FakeUnitOfWorkFactory, clock: FrozenClock) -> None:
    control.add_fault(control.AddFault("getMachine", status=503, count=1), APP, uow(), clock, CONTEXT)
    stale = control.load_snapshot(uow(write=False))
    assert control.choose_fault(stale, "getMachine", uow()) is not None
    # Another process read the same snapshot before the fault was spent: it does not fault again.
    assert control.choose_fault(stale, "getMachine", uow()) is None


def test_advancing_the_clock_sweeps_at_the_new_time(uow: FakeUnitOfWorkFactory, clock: FrozenClock) -> None:
    moved = OffsetClock(clock)
    action = request_offboard(RequestOffboard(MACHINE.id, "offline"), APP, uow(), moved, CONTEXT)
    result = control.advance_clock(
        3 * 24 * 3600 + 1, APP, uow(), moved, CONTEXT, policy=POLICY, apply_offset=lambda s: setattr(moved, "offset_seconds", s)
    )
    assert result.offset_seconds == 3 * 24 * 3600 + 1
    assert result.swept.pending_timed_out == 1
    assert uow.db.actions[action.id].status is ActionStatus.TIMEOUT
    with pytest.raises(InvalidInput):
        control.advance_clock(MAX_CLOCK_OFFSET_SECONDS, APP, uow(), moved, CONTEXT, policy=POLICY, apply_offset=lambda s: None)


def test_reset_wipes_the_fleet_and_seeds_the_demo_again(uow: FakeUnitOfWorkFactory, clock: FrozenClock) -> None:
    request_offboard(RequestOffboard(MACHINE.id, "before"), APP, uow(), clock, CONTEXT)
    control.add_fault(control.AddFault("*", latency_ms=5), APP, uow(), clock, CONTEXT)
    offsets: list[float] = []
    epoch = control.reset_fleet(
        APP, uow(), clock, CONTEXT, demo_tenant_id=TENANT, demo_machine_count=7, apply_offset=offsets.append
    )
    assert epoch == 1 and offsets == [0.0]
    assert uow.db.actions == {} and uow.db.faults == {}
    assert len(uow.db.machines) == 7 and MACHINE.id not in uow.db.machines
    assert [e["action"] for e in uow.db.audit] == ["control.reset"]
    # The same demo machines every time.
    first = sorted(uow.db.machines)
    control.reset_fleet(APP, uow(), clock, CONTEXT, demo_tenant_id=TENANT, demo_machine_count=7, apply_offset=offsets.append)
    assert sorted(uow.db.machines) == first
