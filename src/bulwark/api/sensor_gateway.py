"""The sensor gateway (``/sensor/v1``): enrolment, check-in, long-polled actions and outcomes."""

from __future__ import annotations

import logging
import time
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from bulwark.api.deps import RuntimeDep
from bulwark.api.wire import action_to_wire, json_response
from bulwark.domain.actions import ActionStatus
from bulwark.domain.errors import Unauthorized
from bulwark.domain.sensors import DeviceProperties, SensorIdentity
from bulwark.service.sensors import (
    EnrolSensor,
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


class PropertiesIn(BaseModel):
    """What a sensor reports about its device."""

    model_config = ConfigDict(extra="ignore")

    computerDnsName: str | None = Field(default=None, max_length=255)
    osPlatform: str | None = Field(default=None, max_length=64)
    version: str | None = Field(default=None, max_length=32)
    osBuild: int | None = None
    agentVersion: str | None = Field(default=None, max_length=64)
    ipAddresses: list[str] | None = Field(default=None, max_length=64)
    osProcessor: str | None = Field(default=None, max_length=32)

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

    tenantId: str = Field(max_length=36)
    onboardingKey: str = Field(max_length=200)
    deviceIdentity: str = Field(max_length=200)
    properties: PropertiesIn = PropertiesIn()


class OutcomeIn(BaseModel):
    """A sensor's report on an action it claimed."""

    status: Literal["Succeeded", "Failed"]
    errorHResult: int = 0


def current_sensor(request: Request, runtime: RuntimeDep) -> SensorIdentity:
    """The sensor presenting its own credential as a bearer token (user tokens are not accepted here)."""
    header = request.headers.get("authorization", "")
    scheme, _, credential = header.partition(" ")
    if scheme.lower() != "bearer" or not credential:
        raise Unauthorized()
    return authenticate_sensor(credential.strip(), runtime.uow(write=False))


CurrentSensor = Annotated[SensorIdentity, Depends(current_sensor)]


def _client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


@router.post("/enrol", summary="Enrol a device with an onboarding package")
def enrol(body: EnrolIn, request: Request, runtime: RuntimeDep) -> Response:
    """Create (or find) the device's machine and issue the sensor its own credential."""
    command = EnrolSensor(body.tenantId, body.onboardingKey, body.deviceIdentity, body.properties.to_domain())
    enrolment = enrol_sensor(command, runtime.uow(), runtime.clock, client_ip=_client_ip(request))
    sensor = enrolment.sensor
    return json_response(
        {
            "sensorId": sensor.sensor_id,
            "machineId": sensor.machine_id,
            "generation": sensor.generation,
            "credential": enrolment.credential,
            "closedActions": enrolment.closed_action_ids,
            "pollSeconds": runtime.settings.sensor_poll_max_seconds,
        }
    )


@router.post("/checkin", summary="Report the device's properties and that it is alive")
def checkin(body: PropertiesIn, request: Request, runtime: RuntimeDep, sensor: CurrentSensor) -> Response:
    """Update ``lastSeen``, ``healthStatus`` and the reported properties."""
    check_in(sensor, body.to_domain(), runtime.uow(), runtime.clock, client_ip=_client_ip(request))
    return json_response({"machineId": sensor.machine_id, "generation": sensor.generation})


@router.get("/actions/next", summary="Claim the next action, waiting for one up to `wait` seconds")
async def next_action(runtime: RuntimeDep, sensor: CurrentSensor, wait: Annotated[float, Query(ge=0)] = 0) -> Response:
    """Long poll: answer 200 with a claimed (InProgress) action as soon as there is one, else 204.

    The waiter subscribes before it looks for work, so an action created in between still wakes it.
    """
    deadline = time.monotonic() + min(wait, runtime.settings.sensor_poll_max_seconds)
    connected = runtime.metrics.sensors_connected
    connected.inc()
    try:
        async with runtime.notifier.subscribe(sensor.machine_id) as subscription:
            while True:
                if await run_in_threadpool(has_waiting_action, sensor, runtime.uow(write=False)):
                    action = await run_in_threadpool(claim_next_action, sensor, runtime.uow(), runtime.clock)
                    if action is not None:
                        return json_response(action_to_wire(action))
                remaining = deadline - time.monotonic()
                if remaining <= 0 or runtime.stopping.is_set():
                    return Response(status_code=204)
                await subscription.wait(remaining)
    finally:
        connected.dec()


@router.get("/actions/current", summary="The action this device claimed and has not reported yet")
def current(runtime: RuntimeDep, sensor: CurrentSensor) -> Response:
    """200 with the InProgress action claimed for this device (a restarted sensor finishes it), else 204."""
    action = current_action(sensor, runtime.uow(write=False))
    return Response(status_code=204) if action is None else json_response(action_to_wire(action))


@router.post("/actions/{action_id}/outcome", summary="Report how a claimed action ended")
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
