"""Offboard, cancel and sweep as use cases, against the in-memory unit of work (no database)."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

from bulwark.clock import FrozenClock
from bulwark.domain.actions import ActionStatus, ActionType
from bulwark.domain.errors import (
    ActiveRequestAlreadyExists,
    BadRequest,
    DisallowedOperation,
    Forbidden,
    InvalidInput,
    OsPlatformNotSupported,
    ResourceNotFound,
)
from bulwark.service.actions import ActionCannotBeCancelled, CancelAction, SweepPolicy, cancel_action, sweep
from bulwark.service.offboarding import OFFBOARD_AUDIT_ACTION, RequestOffboard, request_offboard
from tests.unit.fakes import FakeUnitOfWorkFactory
from tests.unit.use_case_support import APP, CONTEXT, TENANT, make_machine, user, with_tenant

MACHINE = make_machine(1)
OFFBOARD = RequestOffboard(machine_id=MACHINE.id, comment="Leaving the company", external_id="ext-1", title="Bye")


@pytest.fixture
def uow() -> FakeUnitOfWorkFactory:
    return with_tenant(FakeUnitOfWorkFactory(), MACHINE)


# --------------------------------------------------------------------------- request_offboard


def test_offboard_creates_a_pending_action_with_the_request_details(uow: FakeUnitOfWorkFactory, clock: FrozenClock) -> None:
    action = request_offboard(OFFBOARD, APP, uow(), clock, CONTEXT)

    assert (action.type, action.status, action.machine_id) == (ActionType.OFFBOARD, ActionStatus.PENDING, MACHINE.id)
    assert (action.requestor, action.requestor_comment, action.external_id, action.title) == (
        "Automation",
        "Leaving the company",
        "ext-1",
        "Bye",
    )
    assert action.computer_dns_name == MACHINE.computer_dns_name
    assert action.creation_date_time_utc == action.last_update_date_time_utc == clock.now()
    assert uow.db.actions[action.id].status is ActionStatus.PENDING


def test_offboard_writes_one_audit_event_with_who_what_and_why(uow: FakeUnitOfWorkFactory, clock: FrozenClock) -> None:
    action = request_offboard(OFFBOARD, APP, uow(), clock, CONTEXT)

    [event] = uow.db.audit
    assert event["action"] == OFFBOARD_AUDIT_ACTION
    assert (event["actor_id"], event["actor_name"], event["tenant_id"]) == ("app-1", "Automation", TENANT)
    assert (event["machine_id"], event["machine_action_id"], event["comment"]) == (MACHINE.id, action.id, "Leaving the company")
    assert (event["request_id"], event["client_ip"], event["outcome_status"]) == ("req-1", "192.0.2.10", 200)


def test_offboard_accepts_the_machine_id_in_any_case(uow: FakeUnitOfWorkFactory, clock: FrozenClock) -> None:
    action = request_offboard(RequestOffboard(MACHINE.id.upper(), "c"), APP, uow(), clock, CONTEXT)
    assert action.machine_id == MACHINE.id


def test_offboard_of_an_unknown_machine_is_not_found_and_changes_nothing(uow: FakeUnitOfWorkFactory, clock: FrozenClock) -> None:
    missing = make_machine(99).id
    with pytest.raises(ResourceNotFound) as caught:
        request_offboard(RequestOffboard(missing, "c"), APP, uow(), clock, CONTEXT)
    assert caught.value.message == f"Machine {missing} was not found"
    assert uow.db.actions == {} and uow.db.audit == []


def test_offboard_of_a_machine_hidden_by_device_groups_answers_like_a_missing_one(clock: FrozenClock) -> None:
    uow = FakeUnitOfWorkFactory()
    with_tenant(uow)
    with uow() as work:
        finance = work.device_groups.add(TENANT, "Finance")
        sales = work.device_groups.add(TENANT, "Sales")
        work.machines.add_many([make_machine(1, rbac_group_id=finance)])
        work.commit()

    with pytest.raises(ResourceNotFound) as caught:
        request_offboard(OFFBOARD, user(groups=frozenset({sales})), uow(), clock, CONTEXT)
    assert caught.value.message == f"Machine {MACHINE.id} was not found"
    assert uow.db.actions == {}


def test_offboard_needs_the_offboard_permission(uow: FakeUnitOfWorkFactory, clock: FrozenClock) -> None:
    reader = dataclasses.replace(APP, permissions=frozenset({"Machine.Read.All"}))
    with pytest.raises(Forbidden):
        request_offboard(OFFBOARD, reader, uow(), clock, CONTEXT)
    assert uow.db.actions == {}


def test_offboard_by_a_user_whose_role_cannot_manage_is_disallowed(uow: FakeUnitOfWorkFactory, clock: FrozenClock) -> None:
    with pytest.raises(DisallowedOperation):
        request_offboard(OFFBOARD, user(groups=None, can_manage=False), uow(), clock, CONTEXT)
    assert uow.db.actions == {}


def test_offboard_of_a_malformed_machine_id_is_invalid_input(uow: FakeUnitOfWorkFactory, clock: FrozenClock) -> None:
    with pytest.raises(InvalidInput):
        request_offboard(RequestOffboard("not-an-id", "c"), APP, uow(), clock, CONTEXT)


def test_offboard_of_an_unsupported_platform_is_refused_and_changes_nothing(clock: FrozenClock) -> None:
    mac = make_machine(2, os_platform="macOS", os_build=None)
    uow = with_tenant(FakeUnitOfWorkFactory(), mac)
    with pytest.raises(OsPlatformNotSupported):
        request_offboard(RequestOffboard(mac.id, "c"), APP, uow(), clock, CONTEXT)
    assert uow.db.actions == {} and uow.db.audit == []


def test_offboard_of_an_already_offboarded_machine_is_refused_and_changes_nothing(clock: FrozenClock) -> None:
    gone = make_machine(2, offboarded_at=clock.now() - timedelta(hours=1))
    uow = with_tenant(FakeUnitOfWorkFactory(), gone)
    with pytest.raises(BadRequest, match="already offboarded") as refused:
        request_offboard(RequestOffboard(gone.id, "again"), APP, uow(), clock, CONTEXT)
    assert refused.value.status == 400 and refused.value.code == "BadRequest"
    assert uow.db.actions == {} and uow.db.audit == []


def test_a_second_offboard_while_one_is_active_is_refused(uow: FakeUnitOfWorkFactory, clock: FrozenClock) -> None:
    first = request_offboard(OFFBOARD, APP, uow(), clock, CONTEXT)
    with pytest.raises(ActiveRequestAlreadyExists):
        request_offboard(OFFBOARD, APP, uow(), clock, CONTEXT)
    assert list(uow.db.actions) == [first.id]
    assert len(uow.db.audit) == 1


def test_a_new_offboard_is_accepted_once_the_previous_one_ended(uow: FakeUnitOfWorkFactory, clock: FrozenClock) -> None:
    first = request_offboard(OFFBOARD, APP, uow(), clock, CONTEXT)
    cancel_action(CancelAction(first.id, "wrong machine"), APP, uow(), clock, CONTEXT)
    second = request_offboard(OFFBOARD, APP, uow(), clock, CONTEXT)
    assert second.id != first.id and uow.db.actions[second.id].status is ActionStatus.PENDING


# --------------------------------------------------------------------------- cancel_action


def test_cancel_of_a_pending_action_ends_it_with_who_and_why(uow: FakeUnitOfWorkFactory, clock: FrozenClock) -> None:
    action = request_offboard(OFFBOARD, APP, uow(), clock, CONTEXT)
    clock.advance(60)

    cancelled = cancel_action(CancelAction(action.id, "changed my mind"), APP, uow(), clock, CONTEXT)

    assert cancelled.status is ActionStatus.CANCELLED
    assert (cancelled.cancellation_requestor, cancelled.cancellation_comment) == ("Automation", "changed my mind")
    assert cancelled.cancellation_date_time_utc == cancelled.last_update_date_time_utc == clock.now()
    assert uow.db.actions[action.id].status is ActionStatus.CANCELLED
    assert uow.db.audit[-1]["action"] == "machine_action.cancel.requested"
    assert uow.db.audit[-1]["comment"] == "changed my mind"


def test_cancel_of_an_action_its_device_is_carrying_out_is_refused(uow: FakeUnitOfWorkFactory, clock: FrozenClock) -> None:
    action = request_offboard(OFFBOARD, APP, uow(), clock, CONTEXT)
    with uow() as work:
        assert work.actions.transition(action.id, ActionStatus.IN_PROGRESS, at=clock.now())
        work.commit()

    with pytest.raises(ActionCannotBeCancelled) as caught:
        cancel_action(CancelAction(action.id, "too late"), APP, uow(), clock, CONTEXT)
    assert caught.value.message == f"Action {action.id} is InProgress: its device is already carrying it out."
    assert uow.db.actions[action.id].status is ActionStatus.IN_PROGRESS
    assert len(uow.db.audit) == 1


def test_cancel_of_a_final_action_is_refused(uow: FakeUnitOfWorkFactory, clock: FrozenClock) -> None:
    action = request_offboard(OFFBOARD, APP, uow(), clock, CONTEXT)
    cancel_action(CancelAction(action.id, "once"), APP, uow(), clock, CONTEXT)

    with pytest.raises(ActionCannotBeCancelled) as caught:
        cancel_action(CancelAction(action.id, "twice"), APP, uow(), clock, CONTEXT)
    assert caught.value.message == f"Action {action.id} is already in final state Cancelled."
    assert uow.db.actions[action.id].cancellation_comment == "once"


def test_cancel_of_an_unknown_action_is_not_found(uow: FakeUnitOfWorkFactory, clock: FrozenClock) -> None:
    with pytest.raises(ResourceNotFound):
        cancel_action(CancelAction("7b4b2f5e-7d6c-4b8e-9a51-0f6d2e3c4b5a", "c"), APP, uow(), clock, CONTEXT)


def test_cancel_of_an_action_on_a_hidden_machine_is_not_found(uow: FakeUnitOfWorkFactory, clock: FrozenClock) -> None:
    action = request_offboard(OFFBOARD, APP, uow(), clock, CONTEXT)
    with pytest.raises(ResourceNotFound):
        cancel_action(CancelAction(action.id, "c"), user(groups=frozenset()), uow(), clock, CONTEXT)
    assert uow.db.actions[action.id].status is ActionStatus.PENDING


def test_cancel_by_a_view_only_user_is_refused_and_changes_nothing(uow: FakeUnitOfWorkFactory, clock: FrozenClock) -> None:
    action = request_offboard(OFFBOARD, APP, uow(), clock, CONTEXT)
    viewer = user(groups=None, can_manage=False)
    with pytest.raises(DisallowedOperation):
        cancel_action(CancelAction(action.id, "not mine to cancel"), viewer, uow(), clock, CONTEXT)
    assert uow.db.actions[action.id].status is ActionStatus.PENDING
    assert len(uow.db.audit) == 1


# --------------------------------------------------------------------------- sweep

POLICY = SweepPolicy(
    pickup_timeout=timedelta(hours=1), in_progress_timeout=timedelta(minutes=10), inactive_after_offboard=timedelta(days=7)
)


def _offboard(uow: FakeUnitOfWorkFactory, clock: FrozenClock, index: int) -> str:
    machine = make_machine(index)
    with uow() as work:
        work.machines.add_many([machine])
        work.commit()
    return request_offboard(RequestOffboard(machine.id, "c"), APP, uow(), clock, CONTEXT).id


def test_sweep_times_out_actions_no_device_picked_up_in_time(uow: FakeUnitOfWorkFactory, clock: FrozenClock) -> None:
    old = request_offboard(OFFBOARD, APP, uow(), clock, CONTEXT).id
    clock.advance(30 * 60)
    young = _offboard(uow, clock, 2)
    clock.advance(31 * 60)

    result = sweep(POLICY, uow(), clock)

    assert (result.pending_timed_out, result.in_progress_timed_out) == (1, 0)
    # The result names what it ended, for the log and the finished-actions metric.
    assert [(t.action_id, t.type, t.previous_status) for t in result.timed_out] == [(old, "Offboard", ActionStatus.PENDING)]
    assert uow.db.actions[old].status is ActionStatus.TIMEOUT
    assert uow.db.actions[young].status is ActionStatus.PENDING
    [event] = [e for e in uow.db.audit if e["action"] == "machine_action.timed_out"]
    assert (event["machine_action_id"], event["details"]) == (old, {"from": "Pending"})


def test_sweep_times_out_actions_in_progress_too_long(uow: FakeUnitOfWorkFactory, clock: FrozenClock) -> None:
    action = request_offboard(OFFBOARD, APP, uow(), clock, CONTEXT).id
    with uow() as work:
        work.actions.transition(action, ActionStatus.IN_PROGRESS, at=clock.now())
        work.commit()
    clock.advance(9 * 60)
    assert sweep(POLICY, uow(), clock).in_progress_timed_out == 0
    clock.advance(2 * 60)

    result = sweep(POLICY, uow(), clock)

    assert (result.pending_timed_out, result.in_progress_timed_out) == (0, 1)
    assert uow.db.actions[action].status is ActionStatus.TIMEOUT


def test_sweep_works_through_more_overdue_actions_than_one_batch(uow: FakeUnitOfWorkFactory, clock: FrozenClock) -> None:
    ids = [_offboard(uow, clock, index) for index in range(2, 7)]
    clock.advance(2 * 3600)

    result = sweep(POLICY, uow(), clock, batch=2)

    assert result.pending_timed_out == 5
    assert sorted(t.action_id for t in result.timed_out) == sorted(ids)
    assert {uow.db.actions[i].status for i in ids} == {ActionStatus.TIMEOUT}


def test_sweep_turns_machines_inactive_a_while_after_their_offboard(clock: FrozenClock) -> None:
    long_ago = make_machine(1, offboarded_at=clock.now() - timedelta(days=8))
    recently = make_machine(2, offboarded_at=clock.now() - timedelta(days=1))
    onboarded = make_machine(3)
    uow = with_tenant(FakeUnitOfWorkFactory(), long_ago, recently, onboarded)

    result = sweep(POLICY, uow(), clock)

    assert result.machines_inactive == 1
    health = {m.id: m.health_status for m in uow.db.machines.values()}
    assert health == {long_ago.id: "Inactive", recently.id: "Active", onboarded.id: "Active"}


def test_a_sweep_with_nothing_overdue_changes_nothing(uow: FakeUnitOfWorkFactory, clock: FrozenClock) -> None:
    action = request_offboard(OFFBOARD, APP, uow(), clock, CONTEXT).id
    assert sweep(POLICY, uow(), clock) == sweep(POLICY, uow(), clock)
    assert uow.db.actions[action].status is ActionStatus.PENDING
    assert len(uow.db.audit) == 1
