"""The sensor gateway (``/sensor/v1``): enrolment, check-in, long-polled actions and outcomes."""

from __future__ import annotations

import logging
import time
from functools import partial
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from bulwark.api.deps import RuntimeDep, point_read
from bulwark.api.schemas import SENSOR_RESPONSES, error_responses
from bulwark.api.unauthenticated import refuse_unauthenticated
from bulwark.api.wire import action_to_wire, json_response
from bulwark.bootstrap import Runtime
from bulwark.domain.actions import ActionStatus
from bulwark.domain.control import SimulatedOutcome
from bulwark.domain.errors import Unauthorized
from bulwark.domain.sensors import DeviceProperties, SensorIdentity
from bulwark.service.control import machine_behavior
from bulwark.service.sensors import (
    EnrolSensor,
    PollingSensors,
    ReportOutcome,
    authenticate_sensor,
    check_in,
    claim_next_action,
    current_action,
    enrol_sensor,
    has_waiting_action,
    report_outcome,
)

router = APIRouter(prefix="/sensor/v1", tags=["Sensor gateway"])
log = logging.getLogger("bulwark.actions")
# The field of a claimed action that carries a test server's simulated behaviour for the device.
SIMULATION_FIELD = "simulation"


INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
# A stopping server answers long polls at once with 204 and this Retry-After: the sensor polls
# again a moment later (this server after its restart, or another behind the same address).
POLL_AGAIN_AFTER_STOP_SECONDS = 1


def _printable(value: str) -> str:
    # NUL and other control characters have no place in device properties (and PostgreSQL
    # refuses NUL in text): 400 here rather than 500 from the database.
    if any(ord(ch) < 32 or ord(ch) == 127 or 0xD800 <= ord(ch) <= 0xDFFF for ch in value):
        raise ValueError("control characters and lone surrogates are not allowed")
    return value


_Printable = AfterValidator(_printable)
# Strings of at most so many printable characters.
Text32 = Annotated[str, StringConstraints(max_length=32), _Printable]
Text36 = Annotated[str, StringConstraints(max_length=36), _Printable]
Text64 = Annotated[str, StringConstraints(max_length=64), _Printable]
Text200 = Annotated[str, StringConstraints(max_length=200), _Printable]
Text255 = Annotated[str, StringConstraints(max_length=255), _Printable]


class PropertiesIn(BaseModel):
    """What a sensor reports about its device: every string and list is capped, integers range-checked."""

    model_config = ConfigDict(extra="ignore")

    computerDnsName: Text255 | None = None
    osPlatform: Text64 | None = None
    version: Text32 | None = None
    osBuild: int | None = Field(default=None, ge=0, le=INT32_MAX)
    agentVersion: Text64 | None = None
    ipAddresses: list[Text64] | None = Field(default=None, max_length=64)
    osProcessor: Text32 | None = None

    def to_domain(self) -> DeviceProperties:
        """The domain value."""
        return DeviceProperties(
            computer_dns_name=self.computerDnsName,
            os_platform=self.osPlatform,
            version=self.version,
            os_build=self.osBuild,
            agent_version=self.agentVersion,
            ip_addresses=self.ipAddresses,
            os_processor=self.osProcessor,
        )


class EnrolIn(BaseModel):
    """An enrolment: the onboarding package's tenant and secret, the device identity, its properties."""

    tenantId: Text36
    onboardingKey: Text200
    deviceIdentity: Text200
    properties: PropertiesIn = PropertiesIn()
    # Proof from a device already enrolled under this identity: its current credential, or the
    # re-onboarding proof its last enrolment gave it (kept through a local offboard).
    currentCredential: Text200 | None = None
    reonboardingProof: Text200 | None = None


class OutcomeIn(BaseModel):
    """A sensor's report on an action it claimed."""

    status: Literal["Succeeded", "Failed"]
    errorHResult: int = Field(default=0, ge=INT32_MIN, le=INT32_MAX)


async def _sensor(request: Request, runtime: Runtime, remembered: PollingSensors | None) -> SensorIdentity:
    """The sensor presenting its own credential as a bearer token, from ``remembered`` when it holds it."""
    scheme, _, credential = request.headers.get("authorization", "").partition(" ")
    credential = credential.strip()
    try:
        if scheme.lower() != "bearer" or not credential:
            raise Unauthorized()
        sensor = remembered.get(credential) if remembered is not None else None
        if sensor is not None:
            return sensor
        # Inline on SQLite (a read by key): thousands of sensors renewing their polls would otherwise
        # queue for the threadpool's few threads.
        sensor = await point_read(runtime, authenticate_sensor, credential)
    except Unauthorized as refused:
        raise await refuse_unauthenticated(request, runtime, refused) from None
    if remembered is not None:
        remembered.remember(credential, sensor)
    return sensor


async def current_sensor(request: Request, runtime: RuntimeDep) -> SensorIdentity:
    """The sensor presenting its own credential as a bearer token (user tokens are not accepted here).

    Refusals count against the source address's budget of unauthenticated requests.
    """
    return await _sensor(request, runtime, None)


CurrentSensor = Annotated[SensorIdentity, Depends(current_sensor)]


async def polling_sensor(request: Request, runtime: RuntimeDep) -> SensorIdentity:
    """``current_sensor`` for a long poll: a credential read within ``BULWARK_AUTH_CACHE_SECONDS`` is
    answered from memory (``PollingSensors`` says within which bounds)."""
    return await _sensor(request, runtime, runtime.polling_sensors)


PollingSensor = Annotated[SensorIdentity, Depends(polling_sensor)]


def _client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


@router.post(
    "/enrol",
    summary="Enrol a device with an onboarding package",
    responses={**SENSOR_RESPONSES, **error_responses(409)},
)
async def enrol(body: EnrolIn, request: Request, runtime: RuntimeDep) -> Response:
    """Create (or find) the device's machine and issue the sensor its own credential."""
    command = EnrolSensor(
        body.tenantId,
        body.onboardingKey,
        body.deviceIdentity,
        body.properties.to_domain(),
        current_credential=body.currentCredential,
        reonboarding_proof=body.reonboardingProof,
    )
    client_ip = _client_ip(request)
    try:
        # Committed together with the other writes queued meanwhile (store/group_commit.py): a
        # fleet enrolling at once shares its commits instead of taking the threadpool in turns.
        enrolment = await runtime.writer.run(partial(enrol_sensor, command, clock=runtime.clock, client_ip=client_ip))
    except Unauthorized as refused:
        raise await refuse_unauthenticated(request, runtime, refused) from None
    sensor = enrolment.sensor
    if runtime.polling_sensors is not None:
        # The machine's earlier credentials are superseded: no long poll of this process takes them now.
        runtime.polling_sensors.forget_machine(sensor.machine_id)
    return json_response(
        {
            "sensorId": sensor.sensor_id,
            "machineId": sensor.machine_id,
            "generation": sensor.generation,
            "credential": enrolment.credential,
            "reonboardingProof": enrolment.reonboarding_proof,
            "closedActions": enrolment.closed_action_ids,
            "pollSeconds": runtime.settings.sensor_poll_max_seconds,
        }
    )


@router.post("/checkin", summary="Report the device's properties and that it is alive", responses=SENSOR_RESPONSES)
async def checkin(body: PropertiesIn, request: Request, runtime: RuntimeDep, sensor: CurrentSensor) -> Response:
    """Update ``lastSeen``, ``healthStatus`` and the reported properties."""
    properties, client_ip = body.to_domain(), _client_ip(request)
    await runtime.writer.run(partial(check_in, sensor, properties, clock=runtime.clock, client_ip=client_ip))
    return json_response({"machineId": sensor.machine_id, "generation": sensor.generation})


@router.get(
    "/actions/next",
    summary="Claim the next action, waiting for one up to `wait` seconds",
    responses={
        **SENSOR_RESPONSES,
        **error_responses(403),
        204: {
            "description": "No action waiting. With `Retry-After`, the server is stopping: poll again after so many seconds.",
            "headers": {"Retry-After": {"description": "Seconds to wait before polling again.", "schema": {"type": "integer"}}},
        },
    },
)
async def next_action(
    runtime: RuntimeDep, sensor: PollingSensor, wait: Annotated[float, Query(ge=0, le=3600, allow_inf_nan=False)] = 0
) -> Response:
    """Long poll: answer 200 with a claimed (InProgress) action as soon as there is one, else 204.

    The waiter subscribes before it looks for work, so an action created in between still wakes it.
    With the control API on, an action carries its machine's simulated behaviour (``simulation``),
    which only simulated sensors follow. A stopping server answers 204 at once, with
    ``Retry-After``, and closes the connection.
    """
    deadline = time.monotonic() + min(wait, runtime.settings.sensor_poll_max_seconds)
    connected = runtime.metrics.sensors_connected
    connected.inc()
    try:
        async with runtime.notifier.subscribe(sensor.machine_id) as subscription:
            while True:
                if runtime.stopping.is_set():
                    # Nothing is claimed now: an action waiting goes to the sensor's next poll.
                    headers = {"Retry-After": str(POLL_AGAIN_AFTER_STOP_SECONDS), "Connection": "close"}
                    return Response(status_code=204, headers=headers)
                # A wake-up for this machine (an action committed for it, its simulated behaviour
                # changed) goes straight to the claim, which looks for the action itself; before the
                # first wait, and after a timeout or a wake-up sent to everyone, a read looks first,
                # so that idle polls never write.
                waiting = subscription.woken_for_key or await point_read(runtime, has_waiting_action, sensor)
                if waiting:
                    # On a test server the control API may say how this machine's simulated sensor
                    # behaves: "Never" holds its actions back (they time out by the normal rules).
                    behavior = None
                    if runtime.control is not None:
                        behavior = await run_in_threadpool(machine_behavior, sensor, runtime.uow(write=False))
                    if behavior is None or behavior.outcome is not SimulatedOutcome.NEVER:
                        # On the group-commit writer (store/group_commit.py): its connection is held, so
                        # no pool checkout, and claims made meanwhile share one commit. The claim
                        # refuses (an offboarded machine, a superseded credential) before it writes.
                        claim = partial(claim_next_action, sensor, clock=runtime.clock)
                        action = await runtime.writer.run(claim, savepoint=False, changes_machines=False)
                        if action is not None:
                            body = action_to_wire(action)
                            if behavior is not None:
                                body[SIMULATION_FIELD] = behavior.to_wire()
                            return json_response(body)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return Response(status_code=204)
                await subscription.wait(remaining)
    finally:
        connected.dec()


@router.get(
    "/actions/current",
    summary="The action this device claimed and has not reported yet",
    responses={**SENSOR_RESPONSES, 204: {"description": "No claimed action"}},
)
def current(runtime: RuntimeDep, sensor: CurrentSensor) -> Response:
    """200 with the InProgress action claimed for this device (a restarted sensor finishes it), else 204."""
    action = current_action(sensor, runtime.uow(write=False))
    return Response(status_code=204) if action is None else json_response(action_to_wire(action))


@router.post(
    "/actions/{action_id}/outcome",
    summary="Report how a claimed action ended",
    responses={**SENSOR_RESPONSES, **error_responses(404)},
)
def outcome(action_id: str, body: OutcomeIn, runtime: RuntimeDep, sensor: CurrentSensor) -> Response:
    """Finish the action; ``accepted`` is false when it already ended otherwise (e.g. TimeOut)."""
    command = ReportOutcome(action_id, ActionStatus(body.status), body.errorHResult)
    accepted, action, finished_now = report_outcome(command, sensor, runtime.uow(), runtime.clock)
    if finished_now:
        runtime.metrics.actions_finished.labels(action.type.value, action.status.value).inc()
        log.info(
            "action finished: %s %s on machine %s %s (errorHResult %s)",
            action.type.value,
            action.id,
            action.machine_id,
            action.status.value,
            action.error_h_result,
            extra={"action_id": action.id, "machine_id": action.machine_id, "status": action.status.value},
        )
    return json_response({"accepted": accepted, "action": action_to_wire(action)})
