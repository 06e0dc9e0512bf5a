"""The control API over HTTP, against a real `bulwark serve --demo` started by the pytest plugin.

Every test gets the plugin's `bulwark_server`: one server process for the session, reset before
each test, with simulated sensors for the active demo machines.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

import httpx
import pytest

from bulwark.client import ActionStatus as MachineActionStatus
from bulwark.client import BulwarkClient
from bulwark.client.errors import ApiError
from bulwark.testing import BulwarkServer, ControlError

pytestmark = pytest.mark.slow

E_ACCESSDENIED = -2147024891
THREE_DAYS = 3 * 24 * 3600


def offboardable(server: BulwarkServer, count: int = 1) -> list[str]:
    """Ids of active Windows 11 demo machines: each has a simulated sensor and may be offboarded."""
    with server.client() as client:
        machines = client.list_machines(filter="healthStatus eq 'Active' and osPlatform eq 'Windows11'", top=count)
        ids = [machine.id for machine in machines]
    assert len(ids) == count
    return ids


def control_call(server: BulwarkServer, method: str, path: str, token: str | None, **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.request(method, f"{server.url}/_bulwark{path}", headers=headers, timeout=30, **kwargs)


def test_behavior_failed_ends_the_action_failed_with_its_hresult(bulwark_server: BulwarkServer) -> None:
    [machine] = offboardable(bulwark_server)
    answer = bulwark_server.control.set_behavior(machine, "Failed", delay_seconds=0.3, error_h_result=E_ACCESSDENIED)
    assert answer == {"machineId": machine, "outcome": "Failed", "delaySeconds": 0.3, "errorHResult": E_ACCESSDENIED}
    assert bulwark_server.control.get_behavior(machine)["outcome"] == "Failed"

    with bulwark_server.client() as client:
        action = client.wait(client.offboard(machine, "Retire"), timeout=30, poll_interval=0.1)
        assert action.status is MachineActionStatus.FAILED
        assert action.error_h_result == E_ACCESSDENIED
        # A failed offboard leaves the device running: after DELETE it takes the next one and succeeds.
        bulwark_server.control.clear_behavior(machine)
        assert bulwark_server.control.get_behavior(machine)["outcome"] is None
        again = client.wait(client.offboard(machine, "Retire, second try"), timeout=30, poll_interval=0.1)
        assert again.status is MachineActionStatus.SUCCEEDED


def test_never_and_three_days_later_the_action_times_out(bulwark_server: BulwarkServer) -> None:
    [machine] = offboardable(bulwark_server)
    bulwark_server.control.set_behavior(machine, "Never")
    with bulwark_server.client() as client:
        action = client.offboard(machine, "Device is offline")
        time.sleep(1.0)  # the device is connected, and still does not pick it up
        assert client.get_action(action.id).status is MachineActionStatus.PENDING

        before = bulwark_server.control.clock()
        advanced = bulwark_server.control.advance_clock(THREE_DAYS)
        assert advanced["offsetSeconds"] == THREE_DAYS
        assert advanced["swept"]["pendingTimedOut"] == 1
        assert bulwark_server.control.clock()["offsetSeconds"] == THREE_DAYS

        final = client.get_action(action.id)
        assert final.status is MachineActionStatus.TIME_OUT
        # The server's clock moved for the fleet: the action ended three days after it began.
        assert (final.last_update_date_time_utc - final.creation_date_time_utc).total_seconds() >= THREE_DAYS
        assert before["offsetSeconds"] == 0
        # Tokens keep real time: the same client (and its cached token) still works.
        assert client.get_machine(machine).id == machine


def test_two_429_faults_are_waited_out_by_the_sdk_then_the_offboard_succeeds(bulwark_server: BulwarkServer) -> None:
    [machine] = offboardable(bulwark_server)
    fault_id = bulwark_server.control.add_fault("offboardMachine", status=429, count=2, retry_after_seconds=1)
    assert [f["id"] for f in bulwark_server.control.faults()] == [fault_id]

    with bulwark_server.client() as client:
        started = time.monotonic()
        action = client.offboard(machine, "Throttled, then accepted")
        elapsed = time.monotonic() - started
        assert client.wait(action, timeout=30, poll_interval=0.1).status is MachineActionStatus.SUCCEEDED
    # Two waits of Retry-After: 1 second each.
    assert elapsed >= 2.0
    calls = bulwark_server.control.requests(operation="offboardMachine")
    assert [call["status"] for call in calls] == [200, 429, 429]
    assert bulwark_server.control.faults() == []  # spent


def test_a_faulted_call_changes_nothing(bulwark_server: BulwarkServer) -> None:
    [machine] = offboardable(bulwark_server)
    bulwark_server.control.add_fault("offboardMachine", status=503, count=1)
    with bulwark_server.client() as client:
        with pytest.raises(ApiError) as raised:
            client.offboard(machine, "Refused by the fault")  # a POST answered 503 is not retried
        assert (raised.value.status, raised.value.code) == (503, "ServiceUnavailable")
        assert list(client.list_actions(filter=f"machineId eq '{machine}'")) == []
        # The fault is spent: the next call goes through.
        assert client.offboard(machine, "Accepted").status is MachineActionStatus.PENDING


def test_fault_statuses_and_envelope_on_the_wire(bulwark_server: BulwarkServer) -> None:
    token = bulwark_server.token()
    headers = {"Authorization": f"Bearer {token}"}
    bulwark_server.control.add_fault("listMachines", status=429, count=1, retry_after_seconds=7)
    bulwark_server.control.add_fault("listMachines", status=500, count=1)
    bulwark_server.control.add_fault("*", status=503, count=1)
    answers = [httpx.get(f"{bulwark_server.url}/api/machines", headers=headers) for _ in range(4)]
    assert [a.status_code for a in answers] == [429, 500, 503, 200]
    assert answers[0].headers["Retry-After"] == "7"
    assert [a.json()["error"]["code"] for a in answers[:3]] == ["TooManyRequests", "InternalServerError", "ServiceUnavailable"]
    assert all(a.json()["error"]["target"] == a.headers["request-id"] for a in answers[:3])


def test_latency_and_probability_faults(bulwark_server: BulwarkServer) -> None:
    headers = {"Authorization": f"Bearer {bulwark_server.token()}"}
    fault = bulwark_server.control.add_fault("getMachine", latency_ms=600)
    [machine] = offboardable(bulwark_server)
    started = time.monotonic()
    assert httpx.get(f"{bulwark_server.url}/api/machines/{machine}", headers=headers).status_code == 200
    assert time.monotonic() - started >= 0.6
    bulwark_server.control.remove_fault(fault)
    bulwark_server.control.add_fault("getMachine", status=500, probability=0.5)
    statuses = {httpx.get(f"{bulwark_server.url}/api/machines/{machine}", headers=headers).status_code for _ in range(40)}
    assert statuses == {200, 500}  # (1/2)^40 odds of a false failure
    with pytest.raises(ControlError) as missing:
        bulwark_server.control.remove_fault("00000000-0000-0000-0000-000000000000")
    assert missing.value.status == 404


def test_reset_brings_back_the_fresh_fleet_and_keeps_tokens(bulwark_server: BulwarkServer) -> None:
    first, second = offboardable(bulwark_server, 2)
    control = bulwark_server.control
    with bulwark_server.client() as client:
        done = client.wait(client.offboard(first, "Before the reset"), timeout=30, poll_interval=0.1)
        assert done.status is MachineActionStatus.SUCCEEDED
        control.set_behavior(second, "Never")
        client.offboard(second, "Never picked up")
        control.add_fault("listMachines", status=500, count=5)
        control.advance_clock(3600)
        token_before = bulwark_server.token()

        control.reset()

        assert control.faults() == []
        assert control.clock()["offsetSeconds"] == 0
        assert control.get_behavior(second)["outcome"] is None
        assert list(client.list_actions()) == []
        assert [call["operation"] for call in control.requests()] == ["listMachineActions"]  # the log began again
        # The same token still works, and the offboarded machine is back with a working sensor.
        assert (
            httpx.get(
                f"{bulwark_server.url}/api/machines/{first}", headers={"Authorization": f"Bearer {token_before}"}
            ).status_code
            == 200
        )
        again = client.wait(client.offboard(first, "After the reset"), timeout=30, poll_interval=0.1)
        assert again.status is MachineActionStatus.SUCCEEDED


def test_request_log_records_calls_newest_first_without_secrets(bulwark_server: BulwarkServer) -> None:
    [machine] = offboardable(bulwark_server)
    app = bulwark_server.automation_app
    token_answer = httpx.post(
        bulwark_server.token_endpoint,
        data={
            "grant_type": "client_credentials",
            "client_id": app["client_id"],
            "client_secret": app["client_secret"],
            "scope": "https://api.securitycenter.microsoft.com/.default",
        },
    )
    token = token_answer.json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    httpx.post(f"{bulwark_server.url}/api/machines/{machine}/offboard", headers=headers, json={"Comment": "Logged"})
    httpx.get(f"{bulwark_server.url}/api/machines/{machine}", headers=headers)

    calls = bulwark_server.control.requests()
    assert [call["operation"] for call in calls[:3]] == ["getMachine", "offboardMachine", "token"]
    get_call, offboard_call, token_call = calls[:3]
    assert get_call["path"] == f"/api/machines/{machine}"
    assert offboard_call["method"] == "POST"
    assert offboard_call["path"] == f"/api/machines/{machine}/offboard"
    assert offboard_call["status"] == 200
    assert offboard_call["body"] == {"Comment": "Logged"}
    assert offboard_call["caller"]["name"] == "Bulwark Demo Automation"
    assert token_call["body"] == {
        "grant_type": "client_credentials",
        "client_id": app["client_id"],
        "client_secret": "[redacted]",
        "scope": "https://api.securitycenter.microsoft.com/.default",
    }
    everything = repr(bulwark_server.control.requests(limit=1000))
    assert app["client_secret"] not in everything
    assert token not in everything
    assert "Bearer" not in everything
    only = bulwark_server.control.requests(operation="offboardMachine")
    assert [call["operation"] for call in only] == ["offboardMachine"]


def test_control_changes_are_audited(bulwark_server: BulwarkServer) -> None:
    [machine] = offboardable(bulwark_server)
    bulwark_server.control.set_behavior(machine, "Never")
    fault = bulwark_server.control.add_fault("*", latency_ms=1, count=1)
    bulwark_server.control.remove_fault(fault)
    bulwark_server.control.clear_behavior(machine)
    bulwark_server.control.advance_clock(60)
    with sqlite3.connect(bulwark_server.data_dir / "bulwark.db") as db:
        rows = db.execute("SELECT action, actor_name FROM audit_events WHERE action LIKE 'control.%' ORDER BY id").fetchall()
    assert rows == [
        ("control.reset", "Bulwark Demo Automation"),
        ("control.behavior.set", "Bulwark Demo Automation"),
        ("control.fault.added", "Bulwark Demo Automation"),
        ("control.fault.removed", "Bulwark Demo Automation"),
        ("control.behavior.cleared", "Bulwark Demo Automation"),
        ("control.clock.advanced", "Bulwark Demo Automation"),
    ]


def test_who_may_call(bulwark_server: BulwarkServer) -> None:
    # No token: 401 with a challenge; a forged token: 401.
    bare = control_call(bulwark_server, "GET", "/clock", None)
    assert bare.status_code == 401
    assert bare.json()["error"]["code"] == "Unauthorized"
    assert "Bearer" in bare.headers["WWW-Authenticate"]
    assert control_call(bulwark_server, "POST", "/reset", "not-a-token").status_code == 401
    # An application without Bulwark.Control, and a user (even an administrator): 403.
    reader = control_call(bulwark_server, "POST", "/reset", bulwark_server.token("Bulwark Demo Reader"))
    assert reader.status_code == 403
    assert reader.json()["error"]["code"] == "Forbidden"
    analyst = bulwark_server.users["analyst@contoso.com"]
    user_token = httpx.post(
        bulwark_server.token_endpoint,
        data={
            "grant_type": "password",
            "client_id": bulwark_server.automation_app["client_id"],
            "client_secret": bulwark_server.automation_app["client_secret"],
            "username": analyst["username"],
            "password": analyst["password"],
            "scope": "https://api.securitycenter.microsoft.com/.default",
        },
    ).json()["access_token"]
    assert control_call(bulwark_server, "POST", "/reset", user_token).status_code == 403
    # The automation application holds the role.
    assert control_call(bulwark_server, "GET", "/clock", bulwark_server.token()).status_code == 200


BAD_BODIES = [
    ("PUT", "/machines/{m}/behavior", {"outcome": "Maybe"}),
    ("PUT", "/machines/{m}/behavior", {"outcome": "Failed", "delaySeconds": -1}),
    ("PUT", "/machines/{m}/behavior", {"outcome": "Failed", "delaySeconds": 100000}),
    ("PUT", "/machines/{m}/behavior", {"outcome": "Failed", "delaySeconds": "2"}),
    ("PUT", "/machines/{m}/behavior", {"outcome": "Failed", "errorHResult": 2**31}),
    ("PUT", "/machines/{m}/behavior", {"outcome": "Failed", "errorHResult": 1.5}),
    ("PUT", "/machines/{m}/behavior", {"outcome": "Succeeded", "errorHResult": -1}),
    ("PUT", "/machines/{m}/behavior", {"outcome": "Never", "extra": 1}),
    ("POST", "/faults", {"operation": "offboardMachine", "status": 404}),
    ("POST", "/faults", {"operation": "offboardMachine", "status": 429, "count": 0}),
    ("POST", "/faults", {"operation": "offboardMachine", "status": 429, "count": 10**6}),
    ("POST", "/faults", {"operation": "offboardMachine", "status": 429, "probability": 1.5}),
    ("POST", "/faults", {"operation": "offboardMachine", "status": 429, "probability": 0.5, "count": 2}),
    ("POST", "/faults", {"operation": "offboardMachine", "latencyMs": 10**7}),
    ("POST", "/faults", {"operation": "offboardMachine"}),
    ("POST", "/faults", {"operation": "offboardMachine", "status": 500, "latencyMs": 10}),
    ("POST", "/faults", {"operation": "offboardMachine", "status": 500, "retryAfterSeconds": 3}),
    ("POST", "/faults", {"operation": "noSuchOperation", "status": 500}),
    ("POST", "/faults", {"operation": "offboardMachine", "status": True}),
    ("POST", "/clock/advance", {"seconds": 0}),
    ("POST", "/clock/advance", {"seconds": -5}),
    ("POST", "/clock/advance", {"seconds": 10**12}),
    ("POST", "/clock/advance", {}),
    ("POST", "/clock/advance", [1]),
    ("POST", "/clock/advance", "not json"),
]


@pytest.mark.parametrize(("method", "path", "body"), BAD_BODIES, ids=[f"{i}" for i in range(len(BAD_BODIES))])
def test_bad_bodies_answer_400_and_change_nothing(bulwark_server: BulwarkServer, method: str, path: str, body: object) -> None:
    [machine] = offboardable(bulwark_server)
    kwargs: dict[str, Any] = {"content": body} if isinstance(body, str) else {"json": body}
    answer = control_call(bulwark_server, method, path.format(m=machine), bulwark_server.token(), **kwargs)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["code"] in {"InvalidInput", "InvalidRequestBody"}
    assert error["target"] == answer.headers["request-id"]
    assert bulwark_server.control.faults() == []
    assert bulwark_server.control.get_behavior(machine)["outcome"] is None
    assert bulwark_server.control.clock()["offsetSeconds"] == 0


def test_behavior_of_an_unknown_machine_is_404(bulwark_server: BulwarkServer) -> None:
    with pytest.raises(ControlError) as raised:
        bulwark_server.control.set_behavior("0" * 40, "Failed")
    assert (raised.value.status, raised.value.code) == (404, "ResourceNotFound")


def test_sdk_client_from_the_plugin(bulwark_server: BulwarkServer) -> None:
    assert bulwark_server.authority == f"{bulwark_server.url}/{bulwark_server.tenant_id}"
    assert {"Bulwark Demo Automation", "Bulwark Demo Reader"} <= set(bulwark_server.applications)
    assert "Bulwark.Control" in bulwark_server.automation_app["roles"]
    with bulwark_server.client() as client:
        assert isinstance(client, BulwarkClient)
        assert len(list(client.list_machines())) == 20
