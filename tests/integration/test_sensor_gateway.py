"""The sensor gateway, cancel and the sweeper through the ASGI app, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from bulwark.api.app import create_app
from bulwark.api.deps import get_principal
from bulwark.bootstrap import stop_long_polls, sweep_policy
from bulwark.clock import FrozenClock
from bulwark.domain.access import Principal, PrincipalKind
from bulwark.domain.sensors import derive_machine_id
from bulwark.service.actions import sweep
from bulwark.service.sensors import issue_onboarding_package
from bulwark.settings import Settings
from bulwark.store.uow import SqlUnitOfWorkFactory
from tests.conftest import TENANT, make_machine, seed
from tests.identity_support import auth_headers

WINDOWS = {
    "computerDnsName": "laptop-7.contoso.com",
    "osPlatform": "Windows11",
    "version": "23H2",
    "osBuild": 22631,
    "agentVersion": "10.8800.0.1.0",
    "ipAddresses": ["10.1.2.3", "fe80::1"],
}


@pytest.fixture
def client(settings: Settings, uow_factory: SqlUnitOfWorkFactory, clock: FrozenClock):
    seed(uow_factory, [])
    with TestClient(create_app(settings, clock=clock), raise_server_exceptions=False) as test_client:
        # An application token with every role; sensor calls replace it with their own credential.
        test_client.headers.update(auth_headers(test_client, uow_factory, name="SOAR playbook"))
        yield test_client


@pytest.fixture
def package(client: TestClient) -> dict:
    response = client.get("/api/onboarding/package")
    assert response.status_code == 200, response.text
    assert "attachment" in response.headers["content-disposition"]
    return response.json()


def enrol(client: TestClient, package: dict, identity: str = "device-7", properties: dict | None = None, **proof: str) -> dict:
    response = client.post(
        "/sensor/v1/enrol",
        json={
            "tenantId": package["tenantId"],
            "onboardingKey": package["onboardingKey"],
            "deviceIdentity": identity,
            "properties": WINDOWS if properties is None else properties,
            **proof,
        },
    )
    assert response.status_code == 200, response.text
    return response.json()


def auth(enrolment: dict) -> dict[str, str]:
    return {"Authorization": f"Bearer {enrolment['credential']}"}


def offboard(client: TestClient, machine_id: str) -> dict:
    response = client.post(f"/api/machines/{machine_id}/offboard", json={"Comment": "leaving"})
    assert response.status_code == 200, response.text
    return response.json()


def advance(client: TestClient, clock: FrozenClock, uow_factory: SqlUnitOfWorkFactory, seconds: float) -> None:
    """Move the clock, and sign in again: tokens live one hour, and the app shares the frozen clock."""
    clock.advance(seconds)
    client.headers.update(auth_headers(client, uow_factory, name=f"SOAR playbook {clock.now().timestamp()}"))


def status_of(client: TestClient, action_id: str) -> str:
    return client.get(f"/api/machineactions/{action_id}").json()["status"]


def test_enrolment_creates_the_machine_with_a_stable_id(
    client: TestClient, package: dict, uow_factory: SqlUnitOfWorkFactory
) -> None:
    first = enrol(client, package)
    assert first["machineId"] == derive_machine_id(TENANT, "device-7")
    assert first["generation"] == 1
    with uow_factory(write=False) as uow:
        machine = uow.machines.get_in_tenant(TENANT, first["machineId"])
    assert machine is not None
    assert (machine.computer_dns_name, machine.os_platform, machine.os_build) == ("laptop-7.contoso.com", "Windows11", 22631)
    assert machine.last_ip_address == "10.1.2.3" and machine.health_status == "Active"

    # The same device enrols again (it proves it with its current credential).
    second = enrol(client, package, currentCredential=first["credential"])
    assert second["machineId"] == first["machineId"] and second["generation"] == 2
    # The earlier credential is superseded by the new enrolment.
    assert client.post("/sensor/v1/checkin", json={}, headers=auth(first)).status_code == 401
    assert client.post("/sensor/v1/checkin", json={}, headers=auth(second)).status_code == 200


def test_a_long_poll_takes_a_superseded_credential_within_the_cache_bounds_only(
    client: TestClient, package: dict, clock: FrozenClock, uow_factory: SqlUnitOfWorkFactory
) -> None:
    """Long polls remember a sensor's credential for BULWARK_AUTH_CACHE_SECONDS (5 s), as tokens are."""
    first = enrol(client, package)
    assert client.get("/sensor/v1/actions/next", headers=auth(first)).status_code == 204
    # Enrolled again through this server: the earlier credential is refused by the next poll at once.
    second = enrol(client, package, currentCredential=first["credential"])
    assert client.get("/sensor/v1/actions/next", headers=auth(first)).status_code == 401
    assert client.get("/sensor/v1/actions/next", headers=auth(second)).status_code == 204
    # Superseded by another server sharing the database: a poll may start for 5 s more (other calls
    # refuse the credential at once), then it is read again and refused.
    with uow_factory() as uow:
        uow.sensors.supersede(second["machineId"], clock.now())
        uow.commit()
    assert client.post("/sensor/v1/checkin", json={}, headers=auth(second)).status_code == 401
    assert client.get("/sensor/v1/actions/next", headers=auth(second)).status_code == 204
    clock.advance(5)
    assert client.get("/sensor/v1/actions/next", headers=auth(second)).status_code == 401
    # Within those 5 s such a poll claims nothing: the claim reads the credential's state itself.
    third = enrol(client, package, identity="device-8")
    assert client.get("/sensor/v1/actions/next", headers=auth(third)).status_code == 204
    action = offboard(client, third["machineId"])
    with uow_factory() as uow:
        uow.sensors.supersede(third["machineId"], clock.now())
        uow.commit()
    assert client.get("/sensor/v1/actions/next", headers=auth(third)).status_code == 401
    assert status_of(client, action["id"]) == "Pending"


def test_gateway_refuses_anything_but_a_sensor_credential(client: TestClient, package: dict) -> None:
    bad_key = client.post(
        "/sensor/v1/enrol", json={"tenantId": TENANT, "onboardingKey": "bwo_wrong", "deviceIdentity": "x", "properties": WINDOWS}
    )
    assert bad_key.status_code == 401 and bad_key.json()["error"]["code"] == "Unauthorized"
    # The client's default header is a valid application token: the gateway refuses it too.
    for headers in ({}, {"Authorization": "Bearer eyJhbGciOiJSUzI1NiJ9.e30.sig"}, {"Authorization": "Bearer bws_forged"}):
        response = client.get("/sensor/v1/actions/next", headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["target"] == response.headers["request-id"]


def test_check_in_updates_last_seen_health_and_addresses(
    client: TestClient, package: dict, clock: FrozenClock, uow_factory: SqlUnitOfWorkFactory
) -> None:
    enrolment = enrol(client, package)
    with uow_factory() as uow:
        uow.machines.update_fields(enrolment["machineId"], health_status="ImpairedCommunication")
        uow.commit()
    clock.advance(120)
    response = client.post(
        "/sensor/v1/checkin", json={"ipAddresses": ["192.168.7.7"], "version": "24H2"}, headers=auth(enrolment)
    )
    assert response.status_code == 200
    with uow_factory(write=False) as uow:
        machine = uow.machines.get_in_tenant(TENANT, enrolment["machineId"])
    assert machine.last_seen == clock.now()
    assert machine.health_status == "Active"
    assert (machine.last_ip_address, machine.version, machine.computer_dns_name) == (
        "192.168.7.7",
        "24H2",
        "laptop-7.contoso.com",
    )


def test_offboard_lifecycle_through_the_gateway(client: TestClient, package: dict, uow_factory: SqlUnitOfWorkFactory) -> None:
    enrolment = enrol(client, package)
    assert client.get("/sensor/v1/actions/next", headers=auth(enrolment)).status_code == 204
    action = offboard(client, enrolment["machineId"])

    claimed = client.get("/sensor/v1/actions/next", headers=auth(enrolment))
    assert claimed.status_code == 200
    assert claimed.json()["id"] == action["id"] and claimed.json()["status"] == "InProgress"
    assert status_of(client, action["id"]) == "InProgress"
    # Claimed once: the same action is not handed out again.
    assert client.get("/sensor/v1/actions/next", headers=auth(enrolment)).status_code == 204

    done = client.post(f"/sensor/v1/actions/{action['id']}/outcome", json={"status": "Succeeded"}, headers=auth(enrolment))
    assert done.status_code == 200 and done.json()["accepted"] is True
    assert status_of(client, action["id"]) == "Succeeded"
    # Retrying the same report is harmless; a different late report is not accepted.
    again = client.post(f"/sensor/v1/actions/{action['id']}/outcome", json={"status": "Succeeded"}, headers=auth(enrolment))
    assert again.json()["accepted"] is True
    late = client.post(f"/sensor/v1/actions/{action['id']}/outcome", json={"status": "Failed"}, headers=auth(enrolment))
    assert late.json()["accepted"] is False and late.json()["action"]["status"] == "Succeeded"

    # The machine stays in inventory, offboarded; its sensor takes no more actions.
    with uow_factory(write=False) as uow:
        machine = uow.machines.get_in_tenant(TENANT, enrolment["machineId"])
    assert machine is not None and machine.offboarded_at is not None and machine.health_status == "Active"
    refused = client.get("/sensor/v1/actions/next", headers=auth(enrolment))
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "SensorOffboarded"


def test_a_sensor_cannot_touch_another_machines_action(client: TestClient, package: dict) -> None:
    mine, other = enrol(client, package, "device-a"), enrol(client, package, "device-b")
    action = offboard(client, other["machineId"])
    assert client.get("/sensor/v1/actions/next", headers=auth(mine)).status_code == 204
    stolen = client.post(f"/sensor/v1/actions/{action['id']}/outcome", json={"status": "Succeeded"}, headers=auth(mine))
    assert stolen.status_code == 404
    assert status_of(client, action["id"]) == "Pending"


def test_a_sensor_learns_its_claimed_action_and_only_its_own(client: TestClient, package: dict) -> None:
    mine, other = enrol(client, package, "device-a"), enrol(client, package, "device-b")
    assert client.get("/sensor/v1/actions/current", headers=auth(mine)).status_code == 204
    action = offboard(client, mine["machineId"])
    offboard(client, other["machineId"])
    assert client.get("/sensor/v1/actions/current", headers=auth(mine)).status_code == 204  # Pending: not claimed
    assert client.get("/sensor/v1/actions/next", headers=auth(mine)).json()["id"] == action["id"]
    current = client.get("/sensor/v1/actions/current", headers=auth(mine))
    assert current.status_code == 200 and current.json()["id"] == action["id"] and current.json()["status"] == "InProgress"
    assert client.get("/sensor/v1/actions/current", headers=auth(other)).status_code == 204
    assert client.get("/sensor/v1/actions/current").status_code == 401


def _waiting_poll(client: TestClient, enrolment: dict, wait: float) -> tuple[threading.Thread, dict]:
    """A long poll of ``wait`` seconds started on another thread, returned once the server holds it;
    ``answer`` gets its status, headers, body (when 200) and how long it waited."""
    runtime = client.app.state.runtime
    answer: dict = {}

    def poll() -> None:
        started = time.monotonic()
        response = client.get("/sensor/v1/actions/next", params={"wait": wait}, headers=auth(enrolment))
        answer.update(status=response.status_code, headers=response.headers, waited=time.monotonic() - started)
        if response.status_code == 200:
            answer["body"] = response.json()

    poller = threading.Thread(target=poll)
    poller.start()
    deadline = time.monotonic() + 10
    while runtime.notifier.waiting == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    return poller, answer


def test_long_poll_wakes_when_an_action_is_created(client: TestClient, package: dict) -> None:
    enrolment = enrol(client, package)
    poller, answer = _waiting_poll(client, enrolment, 20)
    action = offboard(client, enrolment["machineId"])
    poller.join(timeout=15)
    assert answer["status"] == 200 and answer["body"]["id"] == action["id"]
    # Woken by the offboard, long before the 20 seconds the poll would otherwise wait.
    assert answer["waited"] < 10


def test_a_wake_up_with_nothing_to_claim_keeps_the_poll_waiting(client: TestClient, package: dict) -> None:
    """A wake-up for the machine goes straight to the claim; with nothing pending the poll waits on."""
    enrolment = enrol(client, package)
    runtime = client.app.state.runtime
    poller, answer = _waiting_poll(client, enrolment, 1.5)
    # What the control API sends when a machine's simulated behaviour changes: a wake-up, no action.
    client.portal.call(runtime.notifier.wake_local_waiters)
    runtime.notifier.publish(enrolment["machineId"])
    poller.join(timeout=15)
    assert answer["status"] == 204 and answer["waited"] >= 1.4
    # The next poll still gets the next action.
    action = offboard(client, enrolment["machineId"])
    claimed = client.get("/sensor/v1/actions/next", headers=auth(enrolment))
    assert claimed.status_code == 200 and claimed.json()["id"] == action["id"]


def test_a_stopping_server_answers_long_polls_at_once_and_claims_nothing(client: TestClient, package: dict) -> None:
    enrolment = enrol(client, package)
    runtime = client.app.state.runtime
    poller, answer = _waiting_poll(client, enrolment, 20)
    assert runtime.notifier.waiting == 1  # the poll is held
    # What a SIGINT or SIGTERM does in the event loop of a serving process.
    client.portal.call(stop_long_polls, runtime)
    poller.join(timeout=15)
    # Answered "no action, poll again in a second" long before the 20 s the poll would have waited.
    assert answer["status"] == 204 and answer["waited"] < 10
    assert answer["headers"]["retry-after"] == "1" and answer["headers"]["connection"] == "close"

    # A poll arriving meanwhile is answered alike, and leaves a waiting action to the next server.
    action = offboard(client, enrolment["machineId"])
    late = client.get("/sensor/v1/actions/next", params={"wait": 20}, headers=auth(enrolment))
    assert late.status_code == 204 and late.headers["retry-after"] == "1"
    assert status_of(client, action["id"]) == "Pending"


def test_reonboard_keeps_the_machine_id_and_nothing_is_queued_while_offboarded(client: TestClient, package: dict) -> None:
    first = enrol(client, package)
    action = offboard(client, first["machineId"])
    client.get("/sensor/v1/actions/next", headers=auth(first))
    client.post(f"/sensor/v1/actions/{action['id']}/outcome", json={"status": "Succeeded"}, headers=auth(first))
    # Nothing can be queued while the device is offboarded: the API refuses (nobody would carry it
    # out); actions queued some other way are closed at re-onboarding (the use-case tests).
    refused = client.post(f"/api/machines/{first['machineId']}/offboard", json={"Comment": "again"})
    assert refused.status_code == 400 and "already offboarded" in refused.json()["error"]["message"]

    second = enrol(client, package)
    assert second["machineId"] == first["machineId"]
    assert second["closedActions"] == []
    assert client.get("/sensor/v1/actions/next", headers=auth(second)).status_code == 204
    assert status_of(client, action["id"]) == "Succeeded"


def test_first_enrolment_keeps_actions_already_queued(
    client: TestClient, package: dict, uow_factory: SqlUnitOfWorkFactory
) -> None:
    machine = make_machine(40, id=derive_machine_id(TENANT, "ws-0040"))
    seed(uow_factory, [machine])
    action = offboard(client, machine.id)
    enrolment = enrol(client, package, "ws-0040", properties={})
    assert enrolment["machineId"] == machine.id and enrolment["closedActions"] == []
    assert client.get("/sensor/v1/actions/next", headers=auth(enrolment)).json()["id"] == action["id"]
    with uow_factory(write=False) as uow:
        kept = uow.machines.get_in_tenant(TENANT, machine.id)
    # Enrolling without properties keeps what the inventory has.
    assert (kept.computer_dns_name, kept.os_build) == (machine.computer_dns_name, machine.os_build)


def test_cancel_before_pickup(client: TestClient, package: dict, clock: FrozenClock) -> None:
    enrolment = enrol(client, package)
    action = offboard(client, enrolment["machineId"])
    clock.advance(5)
    response = client.post(f"/api/machineactions/{action['id']}/cancel", json={"Comment": "wrong device"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == action["id"] and body["status"] == "Cancelled"
    assert body["cancellationRequestor"] == "SOAR playbook"
    assert body["cancellationComment"] == "wrong device"
    assert body["cancellationDateTimeUtc"] == "2026-03-01T09:30:05.123456Z"
    assert list(body) == list(action)
    # The device never receives it, and a cancelled action stays cancelled.
    assert client.get("/sensor/v1/actions/next", headers=auth(enrolment)).status_code == 204
    again = client.post(f"/api/machineactions/{action['id']}/cancel", json={"Comment": "again"})
    assert again.status_code == 400 and again.json()["error"]["code"] == "BadRequest"


def test_cancel_refuses_claimed_and_unknown_actions_and_needs_an_action_permission(client: TestClient, package: dict) -> None:
    enrolment = enrol(client, package)
    action = offboard(client, enrolment["machineId"])
    assert (
        client.post(f"/api/machineactions/{action['id']}/cancel", json={}).json()["error"]["code"] == "MissingRequiredParameter"
    )
    client.get("/sensor/v1/actions/next", headers=auth(enrolment))
    claimed = client.post(f"/api/machineactions/{action['id']}/cancel", json={"Comment": "too late"})
    assert claimed.status_code == 400 and "InProgress" in claimed.json()["error"]["message"]
    assert status_of(client, action["id"]) == "InProgress"
    missing = client.post("/api/machineactions/8f8d5b8e-1b8b-4b2a-9c4d-1e1e1e1e1e1e/cancel", json={"Comment": "x"})
    assert missing.status_code == 404

    reader = Principal(TENANT, PrincipalKind.APPLICATION, "app", "reader", permissions=frozenset({"Machine.Read.All"}))
    isolator = Principal(TENANT, PrincipalKind.APPLICATION, "app2", "isolator", permissions=frozenset({"Machine.Isolate"}))
    second = enrol(client, package, "device-9")
    pending = offboard(client, second["machineId"])
    client.app.dependency_overrides[get_principal] = lambda: reader
    try:
        assert client.post(f"/api/machineactions/{pending['id']}/cancel", json={"Comment": "x"}).status_code == 403
        assert client.get("/api/onboarding/package").status_code == 403
        client.app.dependency_overrides[get_principal] = lambda: isolator
        assert client.post(f"/api/machineactions/{pending['id']}/cancel", json={"Comment": "x"}).status_code == 200
    finally:
        client.app.dependency_overrides.clear()


def test_cancel_and_claim_race_has_exactly_one_winner(client: TestClient, package: dict) -> None:
    enrolment = enrol(client, package)
    outcomes = []
    for _ in range(8):
        action = offboard(client, enrolment["machineId"])
        barrier = threading.Barrier(2)
        results: dict[str, int] = {}

        def claim() -> None:
            barrier.wait()
            results["claim"] = client.get("/sensor/v1/actions/next", headers=auth(enrolment)).status_code

        def cancel() -> None:
            barrier.wait()
            results["cancel"] = client.post(f"/api/machineactions/{action['id']}/cancel", json={"Comment": "race"}).status_code

        threads = [threading.Thread(target=claim), threading.Thread(target=cancel)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        final = status_of(client, action["id"])
        if results["claim"] == 200:
            assert (results["cancel"], final) == (400, "InProgress")
            client.post(f"/sensor/v1/actions/{action['id']}/outcome", json={"status": "Failed"}, headers=auth(enrolment))
        else:
            assert (results["claim"], results["cancel"], final) == (204, 200, "Cancelled")
        outcomes.append(final)
    assert len(outcomes) == 8


def test_sweeper_times_out_unclaimed_and_unfinished_actions(
    client: TestClient, package: dict, settings: Settings, clock: FrozenClock, uow_factory: SqlUnitOfWorkFactory
) -> None:
    policy = sweep_policy(settings)
    online, offline = enrol(client, package, "online"), enrol(client, package, "offline")
    unclaimed = offboard(client, offline["machineId"])
    crashed = offboard(client, online["machineId"])
    client.get("/sensor/v1/actions/next", headers=auth(online))  # claimed, then the sensor dies

    advance(client, clock, uow_factory, settings.action_in_progress_timeout_seconds - 1)
    assert sweep(policy, uow_factory(), clock).in_progress_timed_out == 0
    advance(client, clock, uow_factory, 2)
    result = sweep(policy, uow_factory(), clock)
    assert (result.pending_timed_out, result.in_progress_timed_out) == (0, 1)
    assert status_of(client, crashed["id"]) == "TimeOut"
    # A report arriving after the timeout does not change the final status.
    late = client.post(f"/sensor/v1/actions/{crashed['id']}/outcome", json={"status": "Succeeded"}, headers=auth(online))
    assert late.json()["accepted"] is False and status_of(client, crashed["id"]) == "TimeOut"

    assert status_of(client, unclaimed["id"]) == "Pending"
    advance(client, clock, uow_factory, timedelta(days=3).total_seconds())
    assert sweep(policy, uow_factory(), clock).pending_timed_out == 1
    assert status_of(client, unclaimed["id"]) == "TimeOut"
    assert sweep(policy, uow_factory(), clock) == type(result)(0, 0, 0)


def test_offboarded_machines_turn_inactive_after_seven_days(
    client: TestClient, package: dict, settings: Settings, clock: FrozenClock, uow_factory: SqlUnitOfWorkFactory
) -> None:
    enrolment = enrol(client, package)
    action = offboard(client, enrolment["machineId"])
    client.get("/sensor/v1/actions/next", headers=auth(enrolment))
    client.post(f"/sensor/v1/actions/{action['id']}/outcome", json={"status": "Succeeded"}, headers=auth(enrolment))
    policy = sweep_policy(settings)

    def health() -> str:
        with uow_factory(write=False) as uow:
            return uow.machines.get_in_tenant(TENANT, enrolment["machineId"]).health_status

    advance(client, clock, uow_factory, timedelta(days=7).total_seconds() - 60)
    sweep(policy, uow_factory(), clock)
    assert health() == "Active"
    advance(client, clock, uow_factory, 120)
    assert sweep(policy, uow_factory(), clock).machines_inactive == 1
    assert health() == "Inactive"
    # Re-onboarding brings it back.
    enrol(client, package)
    assert health() == "Active"


def test_onboarding_package_from_the_service_enrols_too(
    client: TestClient, uow_factory: SqlUnitOfWorkFactory, clock: FrozenClock
) -> None:
    package = issue_onboarding_package(TENANT, "http://bulwark.example", None, uow_factory(), clock)
    assert package["serverUrl"] == "http://bulwark.example"
    assert enrol(client, package, "cli-device")["machineId"] == derive_machine_id(TENANT, "cli-device")
