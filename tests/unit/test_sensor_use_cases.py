"""Enrolment, re-onboarding, claiming and reporting as use cases, against the in-memory unit of work."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from bulwark.clock import FrozenClock
from bulwark.domain.actions import ActionStatus, ActionType
from bulwark.domain.errors import DisallowedOperation, InvalidInput, ResourceNotFound, Unauthorized
from bulwark.domain.machines import HealthStatus
from bulwark.domain.sensors import (
    REONBOARD_CANCEL_COMMENT,
    REONBOARD_CANCEL_REQUESTOR,
    DeviceProperties,
    SensorIdentity,
    derive_machine_id,
    verify_offboarding_package,
)
from bulwark.service.offboarding import RequestOffboard, request_offboard
from bulwark.service.sensors import (
    DeviceAlreadyEnrolled,
    Enrolment,
    EnrolSensor,
    ReportOutcome,
    SensorOffboarded,
    authenticate_sensor,
    claim_next_action,
    enrol_sensor,
    issue_offboarding_package,
    issue_onboarding_package,
    report_outcome,
)
from tests.unit.fakes import FakeUnitOfWorkFactory
from tests.unit.use_case_support import APP, CONTEXT, TENANT, user, with_tenant

DEVICE = DeviceProperties(
    computer_dns_name="laptop-7.contoso.com",
    os_platform="Windows11",
    version="23H2",
    os_build=22631,
    ip_addresses=["10.1.2.3", ""],
)


@pytest.fixture
def uow() -> FakeUnitOfWorkFactory:
    return with_tenant(FakeUnitOfWorkFactory())


@pytest.fixture
def onboarding_key(uow: FakeUnitOfWorkFactory, clock: FrozenClock) -> str:
    package = issue_onboarding_package(TENANT, "https://bulwark.example", None, uow(), clock)
    return str(package["onboardingKey"])


def enrol(
    uow: FakeUnitOfWorkFactory, clock: FrozenClock, key: str, identity: str = "laptop-7", *, proof_from: Enrolment | None = None
) -> Enrolment:
    """Enrol; ``proof_from``: the same device enrolling again, presenting its current credential."""
    credential = proof_from.credential if proof_from else None
    command = EnrolSensor(TENANT, key, identity, DEVICE, current_credential=credential)
    return enrol_sensor(command, uow(), clock, client_ip="198.51.100.7")


def offboard(uow: FakeUnitOfWorkFactory, clock: FrozenClock, machine_id: str) -> str:
    return request_offboard(RequestOffboard(machine_id, "retire"), APP, uow(), clock, CONTEXT).id


# --------------------------------------------------------------------------- packages


def test_an_onboarding_package_is_refused_for_an_unknown_tenant(uow: FakeUnitOfWorkFactory, clock: FrozenClock) -> None:
    with pytest.raises(ResourceNotFound):
        issue_onboarding_package("no-such-tenant", "https://bulwark.example", None, uow(), clock)
    assert uow.db.onboarding_packages == {}


def test_a_user_whose_role_cannot_manage_gets_no_package(uow: FakeUnitOfWorkFactory, clock: FrozenClock) -> None:
    caller = dataclasses.replace(user(groups=None, can_manage=False), permissions=frozenset({"Machine.ReadWrite.All"}))
    with pytest.raises(DisallowedOperation):
        issue_onboarding_package(TENANT, "https://bulwark.example", caller, uow(), clock)


def test_offboarding_packages_are_signed_with_the_key_onboarding_packages_publish(
    uow: FakeUnitOfWorkFactory, clock: FrozenClock, onboarding_key: str
) -> None:
    onboarding = issue_onboarding_package(TENANT, "https://bulwark.example", None, uow(), clock)
    package = issue_offboarding_package(TENANT, timedelta(days=1), None, uow(), clock)
    verify_offboarding_package(package, tenant_id=TENANT, public_key=onboarding["packageSigningKey"], now=clock.now())
    assert len(uow.db.package_keys) == 1


# --------------------------------------------------------------------------- enrol_sensor


def test_enrolment_creates_the_machine_from_what_the_device_reports(
    uow: FakeUnitOfWorkFactory, clock: FrozenClock, onboarding_key: str
) -> None:
    enrolment = enrol(uow, clock, onboarding_key)

    machine_id = derive_machine_id(TENANT, "laptop-7")
    assert enrolment.sensor == SensorIdentity(enrolment.sensor.sensor_id, TENANT, machine_id, 1)
    machine = uow.db.machines[machine_id]
    assert (machine.computer_dns_name, machine.os_platform, machine.os_build) == ("laptop-7.contoso.com", "Windows11", 22631)
    assert (machine.last_ip_address, machine.last_external_ip_address) == ("10.1.2.3", "198.51.100.7")
    assert machine.health_status == HealthStatus.ACTIVE.value
    assert uow.db.audit[-1]["action"] == "sensor.enrolled"


def test_the_credential_enrolment_returns_authenticates_the_sensor(
    uow: FakeUnitOfWorkFactory, clock: FrozenClock, onboarding_key: str
) -> None:
    enrolment = enrol(uow, clock, onboarding_key)
    assert authenticate_sensor(enrolment.credential, uow(write=False)) == enrolment.sensor
    assert enrolment.credential not in str(uow.db.sensors)  # stored only as a hash


def test_enrolment_with_a_wrong_onboarding_key_is_unauthorized_and_creates_nothing(
    uow: FakeUnitOfWorkFactory, clock: FrozenClock, onboarding_key: str
) -> None:
    with pytest.raises(Unauthorized):
        enrol(uow, clock, onboarding_key + "x")
    assert uow.db.machines == {} and uow.db.sensors == {}


def test_a_new_device_must_report_its_name_and_platform(
    uow: FakeUnitOfWorkFactory, clock: FrozenClock, onboarding_key: str
) -> None:
    with pytest.raises(InvalidInput):
        enrol_sensor(EnrolSensor(TENANT, onboarding_key, "bare", DeviceProperties(os_platform="Windows11")), uow(), clock)
    assert uow.db.machines == {}


def test_enrolling_again_supersedes_the_previous_credential(
    uow: FakeUnitOfWorkFactory, clock: FrozenClock, onboarding_key: str
) -> None:
    first = enrol(uow, clock, onboarding_key)
    second = enrol(uow, clock, onboarding_key, proof_from=first)

    assert (second.sensor.machine_id, second.sensor.generation) == (first.sensor.machine_id, 2)
    with pytest.raises(Unauthorized):
        authenticate_sensor(first.credential, uow(write=False))
    assert authenticate_sensor(second.credential, uow(write=False)) == second.sensor


def test_enrolling_over_an_active_sensor_without_its_proof_is_refused(
    uow: FakeUnitOfWorkFactory, clock: FrozenClock, onboarding_key: str
) -> None:
    first = enrol(uow, clock, onboarding_key)
    with pytest.raises(DeviceAlreadyEnrolled):
        enrol(uow, clock, onboarding_key)
    assert authenticate_sensor(first.credential, uow(write=False)) == first.sensor
    by_proof = enrol_sensor(
        EnrolSensor(TENANT, onboarding_key, "laptop-7", DEVICE, reonboarding_proof=first.reonboarding_proof), uow(), clock
    )
    assert by_proof.sensor.generation == 2


def test_enrolling_again_without_an_offboard_keeps_the_queue(
    uow: FakeUnitOfWorkFactory, clock: FrozenClock, onboarding_key: str
) -> None:
    first = enrol(uow, clock, onboarding_key)
    action = offboard(uow, clock, first.sensor.machine_id)

    second = enrol(uow, clock, onboarding_key, proof_from=first)

    assert second.closed_action_ids == []
    assert uow.db.actions[action].status is ActionStatus.PENDING


# --------------------------------------------------------------------------- re-onboarding


def test_re_onboarding_an_offboarded_device_closes_the_actions_queued_before(
    uow: FakeUnitOfWorkFactory, clock: FrozenClock, onboarding_key: str
) -> None:
    first = enrol(uow, clock, onboarding_key)
    machine_id = first.sensor.machine_id
    running = offboard(uow, clock, machine_id)
    assert claim_next_action(first.sensor, uow(), clock) is not None
    with uow() as work:  # an action of another type still waiting, and the machine offboarded meanwhile
        queued = work.actions.get(TENANT, running)
        assert queued is not None
        work.actions.add(
            dataclasses.replace(
                queued, id="00000000-0000-4000-8000-000000000001", type=ActionType.ISOLATE, status=ActionStatus.PENDING
            )
        )
        work.machines.update_fields(machine_id, offboarded_at=clock.now())
        work.commit()
    clock.advance(60)

    again = enrol(uow, clock, onboarding_key)

    assert sorted(again.closed_action_ids) == sorted([running, "00000000-0000-4000-8000-000000000001"])
    assert uow.db.actions[running].status is ActionStatus.TIMEOUT
    cancelled = uow.db.actions["00000000-0000-4000-8000-000000000001"]
    assert cancelled.status is ActionStatus.CANCELLED
    assert (cancelled.cancellation_requestor, cancelled.cancellation_comment) == (
        REONBOARD_CANCEL_REQUESTOR,
        REONBOARD_CANCEL_COMMENT,
    )
    machine = uow.db.machines[machine_id]
    assert machine.offboarded_at is None and machine.health_status == HealthStatus.ACTIVE.value


def test_reonboarding_refreshes_the_machine_from_the_new_enrolment(
    uow: FakeUnitOfWorkFactory, clock: FrozenClock, onboarding_key: str
) -> None:
    machine_id = enrol(uow, clock, onboarding_key).sensor.machine_id
    with uow() as work:
        work.machines.update_fields(machine_id, offboarded_at=clock.now())
        work.commit()
    rebuilt = DeviceProperties(computer_dns_name="laptop-7b.contoso.com", os_platform="Windows10", version="22H2", os_build=None)
    enrol_sensor(EnrolSensor(TENANT, onboarding_key, "laptop-7", rebuilt), uow(), clock)
    machine = uow.db.machines[machine_id]
    assert (machine.computer_dns_name, machine.os_platform, machine.version, machine.os_build) == (
        "laptop-7b.contoso.com",
        "Windows10",
        "22H2",
        None,
    )


# --------------------------------------------------------------------------- claim_next_action


def test_a_claim_hands_out_the_oldest_pending_action_in_progress(
    uow: FakeUnitOfWorkFactory, clock: FrozenClock, onboarding_key: str
) -> None:
    sensor = enrol(uow, clock, onboarding_key).sensor
    action = offboard(uow, clock, sensor.machine_id)
    clock.advance(5)

    claimed = claim_next_action(sensor, uow(), clock)

    assert claimed is not None and claimed.id == action
    assert (claimed.status, claimed.last_update_date_time_utc) == (ActionStatus.IN_PROGRESS, clock.now())
    assert uow.db.actions[action].status is ActionStatus.IN_PROGRESS


def test_a_claim_with_nothing_waiting_returns_none(uow: FakeUnitOfWorkFactory, clock: FrozenClock, onboarding_key: str) -> None:
    sensor = enrol(uow, clock, onboarding_key).sensor
    assert claim_next_action(sensor, uow(), clock) is None


def test_a_claimed_action_is_not_handed_out_twice(uow: FakeUnitOfWorkFactory, clock: FrozenClock, onboarding_key: str) -> None:
    sensor = enrol(uow, clock, onboarding_key).sensor
    offboard(uow, clock, sensor.machine_id)
    assert claim_next_action(sensor, uow(), clock) is not None
    assert claim_next_action(sensor, uow(), clock) is None


def test_a_superseded_sensor_cannot_claim(uow: FakeUnitOfWorkFactory, clock: FrozenClock, onboarding_key: str) -> None:
    first = enrol(uow, clock, onboarding_key)
    old = first.sensor
    enrol(uow, clock, onboarding_key, proof_from=first)
    offboard(uow, clock, old.machine_id)
    with pytest.raises(Unauthorized):
        claim_next_action(old, uow(), clock)


def test_an_offboarded_machine_takes_no_more_actions(uow: FakeUnitOfWorkFactory, clock: FrozenClock, onboarding_key: str) -> None:
    sensor = enrol(uow, clock, onboarding_key).sensor
    with uow() as work:
        work.machines.update_fields(sensor.machine_id, offboarded_at=clock.now())
        work.commit()
    with pytest.raises(SensorOffboarded):
        claim_next_action(sensor, uow(), clock)


# --------------------------------------------------------------------------- report_outcome


@pytest.fixture
def claimed(uow: FakeUnitOfWorkFactory, clock: FrozenClock, onboarding_key: str) -> tuple[SensorIdentity, str]:
    sensor = enrol(uow, clock, onboarding_key).sensor
    action = offboard(uow, clock, sensor.machine_id)
    assert claim_next_action(sensor, uow(), clock) is not None
    clock.advance(30)
    return sensor, action


def test_a_successful_offboard_report_ends_the_action_and_marks_the_machine_offboarded(
    uow: FakeUnitOfWorkFactory, clock: FrozenClock, claimed: tuple[SensorIdentity, str]
) -> None:
    sensor, action = claimed

    accepted, current, finished_now = report_outcome(ReportOutcome(action, ActionStatus.SUCCEEDED), sensor, uow(), clock)

    assert accepted and finished_now and current.status is ActionStatus.SUCCEEDED
    assert uow.db.machines[sensor.machine_id].offboarded_at == clock.now()
    assert uow.db.audit[-1]["action"] == "machine_action.offboard.succeeded"


def test_a_failed_report_ends_the_action_and_leaves_the_machine_onboarded(
    uow: FakeUnitOfWorkFactory, clock: FrozenClock, claimed: tuple[SensorIdentity, str]
) -> None:
    sensor, action = claimed

    accepted, current, _ = report_outcome(ReportOutcome(action, ActionStatus.FAILED, error_h_result=-5), sensor, uow(), clock)

    assert accepted and (current.status, current.error_h_result) == (ActionStatus.FAILED, -5)
    assert uow.db.machines[sensor.machine_id].offboarded_at is None


def test_repeating_a_report_is_accepted_without_a_second_event(
    uow: FakeUnitOfWorkFactory, clock: FrozenClock, claimed: tuple[SensorIdentity, str]
) -> None:
    sensor, action = claimed
    report_outcome(ReportOutcome(action, ActionStatus.SUCCEEDED), sensor, uow(), clock)
    events = len(uow.db.audit)

    accepted, current, finished_now = report_outcome(ReportOutcome(action, ActionStatus.SUCCEEDED), sensor, uow(), clock)

    # Accepted again, but it finishes nothing a second time (no second event, no second count).
    assert accepted and not finished_now and current.status is ActionStatus.SUCCEEDED
    assert len(uow.db.audit) == events


def test_a_report_contradicting_the_final_status_is_not_accepted(
    uow: FakeUnitOfWorkFactory, clock: FrozenClock, claimed: tuple[SensorIdentity, str]
) -> None:
    sensor, action = claimed
    report_outcome(ReportOutcome(action, ActionStatus.SUCCEEDED), sensor, uow(), clock)

    accepted, current, _ = report_outcome(ReportOutcome(action, ActionStatus.FAILED), sensor, uow(), clock)

    assert not accepted and current.status is ActionStatus.SUCCEEDED


def test_a_report_on_an_action_never_claimed_is_not_accepted(
    uow: FakeUnitOfWorkFactory, clock: FrozenClock, onboarding_key: str
) -> None:
    sensor = enrol(uow, clock, onboarding_key).sensor
    action = offboard(uow, clock, sensor.machine_id)

    accepted, current, _ = report_outcome(ReportOutcome(action, ActionStatus.SUCCEEDED), sensor, uow(), clock)

    assert not accepted and current.status is ActionStatus.PENDING


def test_a_report_on_another_machines_action_is_not_found(
    uow: FakeUnitOfWorkFactory, clock: FrozenClock, onboarding_key: str, claimed: tuple[SensorIdentity, str]
) -> None:
    _, action = claimed
    stranger = enrol(uow, clock, onboarding_key, identity="desktop-9").sensor
    with pytest.raises(ResourceNotFound):
        report_outcome(ReportOutcome(action, ActionStatus.SUCCEEDED), stranger, uow(), clock)
    assert uow.db.actions[action].status is ActionStatus.IN_PROGRESS


@pytest.mark.parametrize("status", [ActionStatus.CANCELLED, ActionStatus.TIMEOUT, ActionStatus.PENDING])
def test_a_sensor_may_report_only_success_or_failure(
    uow: FakeUnitOfWorkFactory, clock: FrozenClock, claimed: tuple[SensorIdentity, str], status: ActionStatus
) -> None:
    sensor, action = claimed
    with pytest.raises(InvalidInput):
        report_outcome(ReportOutcome(action, status), sensor, uow(), clock)
    assert uow.db.actions[action].status is ActionStatus.IN_PROGRESS


def test_polling_sensors_remember_for_their_time_to_live_and_forget_a_machine() -> None:
    from bulwark.domain.sensors import SensorIdentity
    from bulwark.service.sensors import PollingSensors

    clock = FrozenClock(datetime(2026, 3, 1, tzinfo=UTC))
    one = SensorIdentity(sensor_id="s1", tenant_id="t", machine_id="m1", generation=1)
    two = SensorIdentity(sensor_id="s2", tenant_id="t", machine_id="m2", generation=1)
    remembered = PollingSensors(clock, 5, max_entries=2)
    remembered.remember("bws_one", one)
    remembered.remember("bws_two", two)
    assert remembered.get("bws_one") == one and remembered.get("bws_two") == two and remembered.get("bws_x") is None
    remembered.forget_machine("m1")
    assert remembered.get("bws_one") is None and remembered.get("bws_two") == two
    clock.advance(5)
    assert remembered.get("bws_two") is None and len(remembered) == 0
    # Full: it starts over rather than grow.
    for index in range(3):
        remembered.remember(f"bws_{index}", one)
    assert len(remembered) == 1
    # A time to live of 0 (the auth cache turned off) remembers nothing.
    off = PollingSensors(clock, 0)
    off.remember("bws_one", one)
    assert off.get("bws_one") is None
