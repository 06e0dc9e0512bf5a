"""The sensor program against a scripted server: a server that stops and comes back."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from bulwark.sensor import agent
from bulwark.sensor.agent import DeviceProfile, Outcome, Sensor, SensorOptions
from bulwark.sensor.state import RUNNING, MemoryState

SERVER = "http://bulwark.test"
ENROLMENT = {"sensorId": "s-1", "machineId": "m-1", "credential": "bws_secret", "generation": 1}
ACTION = {"id": "a-1", "type": "Offboard", "status": "InProgress"}


def enrolled_state() -> dict[str, Any]:
    return {
        "deviceIdentity": "device-1",
        "onboarding": {"serverUrl": SERVER, "tenantId": "t-1", "onboardingKey": "k"},
        "enrolment": dict(ENROLMENT),
        "service": RUNNING,
        "currentAction": None,
    }


def scripted(answers: list[Callable[[httpx.Request], httpx.Response]], seen: list[str]) -> httpx.AsyncClient:
    """A client whose server gives ``answers`` in turn, recording each request as "METHOD path"."""

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path}")
        return answers.pop(0)(request)

    return httpx.AsyncClient(transport=httpx.MockTransport(handle))


def answer(status: int, body: Any = None, headers: dict[str, str] | None = None) -> Callable[[httpx.Request], httpx.Response]:
    return lambda request: httpx.Response(status, json=body, headers=headers)


def unreachable(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


async def test_a_sensor_told_the_server_is_stopping_checks_in_again_quietly_and_keeps_its_enrolment(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[str] = []
    client = scripted(
        [
            answer(204),  # no action claimed before a restart
            answer(200, {"machineId": "m-1", "generation": 1}),  # check-in
            answer(204, headers={"Retry-After": "1", "Connection": "close"}),  # the server is stopping
            unreachable,  # ... and is down for a while
            unreachable,
            answer(200, {"machineId": "m-1", "generation": 1}),  # back: the check-in goes through
            answer(200, ACTION),  # the next poll claims an offboard
            answer(200, {"accepted": True, "action": {**ACTION, "status": "Succeeded"}}),
        ],
        seen,
    )
    store = MemoryState(enrolled_state())
    options = SensorOptions(check_in_interval=600, poll_wait=20, retry_delay=0.01, max_retry_delay=0.02)
    sensor = Sensor(store, DeviceProfile("device-1.contoso.com", "Windows11"), client=client, options=options)
    with caplog.at_level(logging.INFO, logger="bulwark.sensor"):
        outcome = await sensor.run()

    assert outcome is Outcome.OFFBOARDED
    # After the stop notice the sensor checks in (answered at once) before it long-polls again,
    # and never enrols again: its credential and machine are the same.
    assert seen == [
        "GET /sensor/v1/actions/current",
        "POST /sensor/v1/checkin",
        "GET /sensor/v1/actions/next",
        "POST /sensor/v1/checkin",
        "POST /sensor/v1/checkin",
        "POST /sensor/v1/checkin",
        "GET /sensor/v1/actions/next",
        "POST /sensor/v1/actions/a-1/outcome",
    ]
    assert store.load()["enrolment"] == ENROLMENT
    messages = [(record.levelno, record.getMessage()) for record in caplog.records]
    assert (logging.INFO, "the server is stopping; polling again in 0.02 s") in messages  # Retry-After, capped
    assert (logging.INFO, "reconnected to the server (/sensor/v1/checkin answered 200)") in messages
    # An announced restart is no cause for alarm: nothing above INFO.
    assert [message for level, message in messages if level > logging.INFO] == []


async def test_an_unannounced_outage_is_a_warning_and_a_204_without_retry_after_polls_again_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[str] = []
    client = scripted(
        [
            answer(204),
            answer(200, {"machineId": "m-1", "generation": 1}),
            answer(204, headers={"Retry-After": "soon"}),  # not a number of seconds: an ordinary "no action"
            unreachable,
            answer(200, ACTION),
            answer(200, {"accepted": True, "action": {**ACTION, "status": "Succeeded"}}),
        ],
        seen,
    )
    options = SensorOptions(check_in_interval=600, poll_wait=20, retry_delay=0.01, max_retry_delay=0.02)
    sensor = Sensor(
        MemoryState(enrolled_state()), DeviceProfile("device-1.contoso.com", "Windows11"), client=client, options=options
    )
    with caplog.at_level(logging.INFO, logger="bulwark.sensor"):
        assert await sensor.run() is Outcome.OFFBOARDED

    assert seen[2:] == [
        "GET /sensor/v1/actions/next",
        "GET /sensor/v1/actions/next",
        "GET /sensor/v1/actions/next",
        "POST /sensor/v1/actions/a-1/outcome",
    ]
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert warnings == ["server unreachable (ConnectError) for /sensor/v1/actions/next; retrying"]
    assert "reconnected to the server (/sensor/v1/actions/next answered 200)" in caplog.messages


async def test_a_restart_that_takes_too_long_is_warned_about(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(agent, "RESTART_PATIENCE_SECONDS", 0.0)
    client = scripted(
        [
            answer(204),
            answer(200, {"machineId": "m-1", "generation": 1}),
            answer(204, headers={"Retry-After": "1"}),
            unreachable,
            answer(200, {"machineId": "m-1", "generation": 1}),
            answer(200, ACTION),
            answer(200, {"accepted": True, "action": {**ACTION, "status": "Succeeded"}}),
        ],
        [],
    )
    options = SensorOptions(check_in_interval=600, poll_wait=20, retry_delay=0.01, max_retry_delay=0.02)
    sensor = Sensor(
        MemoryState(enrolled_state()), DeviceProfile("device-1.contoso.com", "Windows11"), client=client, options=options
    )
    with caplog.at_level(logging.INFO, logger="bulwark.sensor"):
        assert await sensor.run() is Outcome.OFFBOARDED
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert warnings == ["server unreachable (ConnectError) for /sensor/v1/checkin; retrying"]
