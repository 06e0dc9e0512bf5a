"""Use cases of the device side: packages, enrolment, check-in, claiming and finishing actions."""

from __future__ import annotations

import hmac
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from bulwark.clock import Clock
from bulwark.domain.access import Permission, Principal, WriteRule
from bulwark.domain.actions import ActionStatus, ActionType, MachineAction, normalize_action_id
from bulwark.domain.errors import DisallowedOperation, Forbidden, InvalidInput, MdeError, ResourceNotFound, Unauthorized
from bulwark.domain.machines import HealthStatus, Machine
from bulwark.domain.sensors import (
    REONBOARD_CANCEL_COMMENT,
    REONBOARD_CANCEL_REQUESTOR,
    SENSOR_CREDENTIAL_PREFIX,
    DeviceProperties,
    SensorIdentity,
    build_offboarding_package,
    build_onboarding_package,
    derive_machine_id,
    digest_credential,
    new_secret,
    new_signing_key,
)
from bulwark.service.audit_trail import RequestContext, audit_event
from bulwark.service.ports import UnitOfWork

log = logging.getLogger("bulwark.sensors")
# Proofs a device keeps (beyond offboarding) to show it is the device enrolled under its identity.
REONBOARDING_PROOF_PREFIX = "bwr_"

# Administrators who may manage devices may download packages: the write permissions on machines,
# and for offboarding packages also the offboard permission.
ONBOARDING_PACKAGE_PERMISSIONS = frozenset({Permission.MACHINE_READWRITE_ALL, Permission.MACHINE_READWRITE})
OFFBOARDING_PACKAGE_PERMISSIONS = ONBOARDING_PACKAGE_PERMISSIONS | {Permission.MACHINE_OFFBOARD}
ONBOARDING_PACKAGE_RULE = WriteRule(ONBOARDING_PACKAGE_PERMISSIONS, "onboarding or offboarding devices")
OFFBOARDING_PACKAGE_RULE = WriteRule(OFFBOARDING_PACKAGE_PERMISSIONS, "onboarding or offboarding devices")
_DEVICE_CONTEXT = RequestContext(request_id="")
ONBOARDING_PACKAGE_AUDIT_ACTION = "sensor.onboarding_package.issued"
DEFAULT_ONBOARDING_PACKAGE_VALIDITY = timedelta(days=30)
OFFBOARDING_PACKAGE_AUDIT_ACTION = "sensor.offboarding_package.issued"


def _require_admin(principal: Principal | None, tenant_id: str, rule: WriteRule) -> None:
    """A caller over the API needs a management permission and role; the local CLI (None) is trusted."""
    if principal is None:
        return
    rule.check_caller(principal)
    rule.check_role(principal)
    if principal.tenant_id != tenant_id:
        raise Forbidden("Packages can only be issued for the caller's own tenant.")


def _signing_key(uow: UnitOfWork, clock: Clock, tenant_id: str) -> tuple[str, str]:
    existing = uow.package_keys.get(tenant_id)
    if existing is None:
        private, public = new_signing_key()
        uow.package_keys.add_if_missing(tenant_id, private, public, clock.now())
        existing = uow.package_keys.get(tenant_id)
    assert existing is not None
    return existing


def issue_onboarding_package(
    tenant_id: str,
    server_url: str,
    principal: Principal | None,
    uow: UnitOfWork,
    clock: Clock,
    context: RequestContext = _DEVICE_CONTEXT,
    *,
    valid_for: timedelta = DEFAULT_ONBOARDING_PACKAGE_VALIDITY,
    replaces_sensors: bool = False,
) -> dict[str, Any]:
    """Mint an onboarding package for the tenant; its secret is returned once and stored hashed.

    It enrols devices until ``valid_for`` has passed or it is revoked. ``replaces_sensors`` is an
    operator's approval for devices to enrol over a sensor that is still active without that
    sensor's proof (a simulated fleet restarting); only the local commands (principal None) may
    grant it.
    """
    _require_admin(principal, tenant_id, ONBOARDING_PACKAGE_RULE)
    if replaces_sensors and principal is not None:
        raise Forbidden("Only an operator on the server may issue a package that replaces active sensors.")
    key = new_secret("bwo_")
    package_id = str(uuid.uuid4())
    with uow:
        if not uow.tenants.exists(tenant_id):
            raise ResourceNotFound("Tenant", tenant_id)
        _, public = _signing_key(uow, clock, tenant_id)
        now = clock.now()
        uow.onboarding_packages.add(
            package_id,
            tenant_id,
            digest_credential(key),
            now,
            principal.name if principal else None,
            expires_at=now + valid_for,
            replaces_sensors=replaces_sensors,
        )
        audit_event(
            uow,
            clock,
            action=ONBOARDING_PACKAGE_AUDIT_ACTION,
            principal=principal,
            tenant_id=tenant_id,
            context=context,
            outcome_status=200,
            details={"packageId": package_id, "expiresAt": (now + valid_for).isoformat(), "replacesSensors": replaces_sensors},
        )
        uow.commit()
    return build_onboarding_package(
        tenant_id=tenant_id,
        server_url=server_url,
        onboarding_key=key,
        signing_public_key=public,
        created_at=now,
        package_id=package_id,
        expires_at=now + valid_for,
    )


def revoke_onboarding_package(tenant_id: str, package_id: str, uow: UnitOfWork, clock: Clock) -> None:
    """Revoke an onboarding package: no device enrols with it any more (enrolled ones keep running)."""
    with uow:
        if not uow.onboarding_packages.revoke(tenant_id, package_id, clock.now()):
            raise ResourceNotFound("OnboardingPackage", package_id)
        audit_event(
            uow,
            clock,
            action="sensor.onboarding_package.revoked",
            principal=None,
            tenant_id=tenant_id,
            context=_DEVICE_CONTEXT,
            outcome_status=200,
            details={"packageId": package_id},
        )
        uow.commit()


def issue_offboarding_package(
    tenant_id: str,
    valid_for: timedelta,
    principal: Principal | None,
    uow: UnitOfWork,
    clock: Clock,
    context: RequestContext = _DEVICE_CONTEXT,
) -> dict[str, Any]:
    """Sign an offboarding package for the tenant's devices, valid for ``valid_for`` from now."""
    _require_admin(principal, tenant_id, OFFBOARDING_PACKAGE_RULE)
    with uow:
        if not uow.tenants.exists(tenant_id):
            raise ResourceNotFound("Tenant", tenant_id)
        private, _ = _signing_key(uow, clock, tenant_id)
        now = clock.now()
        package = build_offboarding_package(
            tenant_id=tenant_id, private_key=private, issued_at=now, expires_at=now + valid_for, package_id=str(uuid.uuid4())
        )
        audit_event(
            uow,
            clock,
            action=OFFBOARDING_PACKAGE_AUDIT_ACTION,
            principal=principal,
            tenant_id=tenant_id,
            context=context,
            outcome_status=200,
            details={"packageId": package["packageId"]},
        )
        uow.commit()
    return package


@dataclass(frozen=True, slots=True)
class EnrolSensor:
    """A device enrolling with the secret of its tenant's onboarding package."""

    tenant_id: str
    onboarding_key: str
    device_identity: str
    properties: DeviceProperties
    # Proof that the caller is the device already enrolled under this identity, if it is one.
    current_credential: str | None = None
    reonboarding_proof: str | None = None


@dataclass(frozen=True, slots=True)
class Enrolment:
    """What enrolment hands the device: its machine id, its own credential and its generation."""

    sensor: SensorIdentity
    credential: str
    closed_action_ids: list[str]
    reonboarding_proof: str = ""


class DeviceAlreadyEnrolled(MdeError):
    """Another enrolment of an identity whose sensor is active, without proof from that device."""

    code = "DeviceAlreadyEnrolled"
    status = 409
    default_message = (
        "This device identity already has an active sensor. Enrol from that device (it presents its current "
        "credential or re-onboarding proof), or have an operator offboard it or issue a package that replaces sensors."
    )


def _proves_device(command: EnrolSensor, current: dict[str, Any]) -> bool:
    """Whether the enrolment carries the current sensor's credential or re-onboarding proof."""
    offered = {digest_credential(s) for s in (command.current_credential, command.reonboarding_proof) if s}
    known = {current["credential_hash"], current.get("proof_hash")} - {None}
    return any(hmac.compare_digest(a, b) for a in offered for b in known)


def _apply_properties(machine: Machine, properties: DeviceProperties, *, complete: bool = False) -> dict[str, Any]:
    """Column values for the reported properties.

    A check-in updates only what it reports. An enrolment (``complete``) describes the device as it
    now is, so what it leaves out (a build, a version) is cleared rather than kept from before.
    """
    values: dict[str, Any] = {}
    for name in ("computer_dns_name", "os_platform", "version", "os_build", "agent_version", "os_processor"):
        value = getattr(properties, name)
        if value is not None or (complete and name not in ("computer_dns_name", "os_platform")):
            values[name] = value
    if complete and properties.ip_addresses is None:
        values["ip_addresses"] = []
    if properties.ip_addresses is not None:
        addresses = [a for a in properties.ip_addresses if a]
        values["ip_addresses"] = [
            {"ipAddress": a, "macAddress": None, "type": None, "operationalStatus": "Up"} for a in addresses
        ]
        if addresses:
            values["last_ip_address"] = addresses[0]
    return values


def enrol_sensor(command: EnrolSensor, uow: UnitOfWork, clock: Clock, client_ip: str | None = None) -> Enrolment:
    """Enrol a device: create or reuse its machine and issue a credential for a new generation.

    The machine id derives from the tenant and the device identity, so a re-onboarded device gets
    its id back. Every earlier credential of the machine is superseded. When the machine was
    offboarded, every action still active for it is closed (Pending ones Cancelled, InProgress ones
    TimeOut): actions queued before the device came back never run on it, yet still reach a final
    state. A device enrolling again without having been offboarded (a lost credential, a simulated
    fleet restarting) keeps its queue.
    """
    if not command.device_identity or len(command.device_identity) > 200:
        raise InvalidInput("Invalid input deviceIdentity: 1 to 200 characters.")
    machine_id = derive_machine_id(command.tenant_id, command.device_identity)
    credential = new_secret(SENSOR_CREDENTIAL_PREFIX)
    proof = new_secret(REONBOARDING_PROOF_PREFIX)
    now = clock.now()
    closed: list[str] = []
    with uow:
        package = uow.onboarding_packages.find_valid(command.tenant_id, digest_credential(command.onboarding_key), now)
        if package is None:
            raise Unauthorized("The onboarding package is not valid for this tenant (unknown, expired or revoked).")
        machine = uow.machines.get_in_tenant(command.tenant_id, machine_id)
        if machine is not None and machine.offboarded_at is None:
            # The identity's sensor is active: only that device, or an operator, may replace it.
            current = uow.sensors.current_for_machine(machine_id)
            if current is not None and not package["replaces_sensors"] and not _proves_device(command, current):
                log.warning("enrolment refused: machine %s already has an active sensor (from %s)", machine_id, client_ip)
                raise DeviceAlreadyEnrolled()
        props = command.properties
        if machine is None:
            if not props.computer_dns_name or not props.os_platform:
                raise InvalidInput("Invalid input: a new device must report computerDnsName and osPlatform.")
            machine = Machine(
                id=machine_id,
                tenant_id=command.tenant_id,
                computer_dns_name=props.computer_dns_name,
                first_seen=now,
                last_seen=now,
                os_platform=props.os_platform,
            )
            uow.machines.add_many([machine])
        # An enrolment that reports the device describes it anew; one that reports nothing (the
        # demo's simulated sensors) keeps what the inventory has.
        reported = props.computer_dns_name is not None or props.os_platform is not None
        values = _apply_properties(machine, props, complete=reported)
        values.update(
            last_seen=now,
            health_status=HealthStatus.ACTIVE.value,
            offboarded_at=None,
            onboarding_status="Onboarded",
            last_external_ip_address=client_ip or machine.last_external_ip_address,
        )
        uow.machines.update_fields(machine_id, **values)
        reonboarding = machine.offboarded_at is not None
        for action in uow.actions.active_for_machine(machine_id) if reonboarding else []:
            if action.status is ActionStatus.PENDING:
                won = uow.actions.transition(
                    action.id,
                    ActionStatus.CANCELLED,
                    at=now,
                    cancellation_requestor=REONBOARD_CANCEL_REQUESTOR,
                    cancellation_comment=REONBOARD_CANCEL_COMMENT,
                    cancellation_date_time_utc=now,
                )
            else:
                won = uow.actions.transition(action.id, ActionStatus.TIMEOUT, at=now, only_from=ActionStatus.IN_PROGRESS)
            if won:
                closed.append(action.id)
        generation = uow.sensors.latest_generation(machine_id) + 1
        uow.sensors.supersede(machine_id, now)
        sensor_id = str(uuid.uuid4())
        uow.sensors.add(
            sensor_id=sensor_id,
            tenant_id=command.tenant_id,
            machine_id=machine_id,
            credential_hash=digest_credential(credential),
            generation=generation,
            enrolled_at=now,
            proof_hash=digest_credential(proof),
        )
        audit_event(
            uow,
            clock,
            action="sensor.enrolled",
            principal=None,
            tenant_id=command.tenant_id,
            context=RequestContext(request_id="", client_ip=client_ip),
            outcome_status=200,
            machine_id=machine_id,
            details={"generation": generation, "sensorId": sensor_id, "closedActions": closed},
        )
        uow.commit()
    identity = SensorIdentity(sensor_id=sensor_id, tenant_id=command.tenant_id, machine_id=machine_id, generation=generation)
    return Enrolment(sensor=identity, credential=credential, closed_action_ids=closed, reonboarding_proof=proof)


def authenticate_sensor(credential: str, uow: UnitOfWork) -> SensorIdentity:
    """The sensor whose current credential this is; Unauthorized otherwise (user tokens never match)."""
    if not credential.startswith(SENSOR_CREDENTIAL_PREFIX):
        raise Unauthorized()
    with uow:
        row = uow.sensors.by_credential_hash(digest_credential(credential))
    if row is None:
        raise Unauthorized()
    return SensorIdentity(
        sensor_id=row["id"], tenant_id=row["tenant_id"], machine_id=row["machine_id"], generation=row["generation"]
    )


class PollingSensors:
    """Sensors by the credential of their long polls, remembered for ``ttl_seconds`` of ``clock``.

    A fleet renews its long polls all day (1,000 sensors polling for 25 s: 40 a second); each renewal
    read the sensor's credential from the database. Remembered, a renewal answers from memory. The
    bounds are the token cache's (``BULWARK_AUTH_CACHE_SECONDS``): a credential superseded by an
    enrolment in this process is forgotten at once; one superseded elsewhere (another server
    process) may still start a long poll for that long, whose claim is refused all the same (the
    claim reads the credential's state in its own transaction). Every method runs on the event
    loop's thread. Only the long poll uses it: check-ins, outcome reports and the current action
    read the credential every time.
    """

    def __init__(self, clock: Clock, ttl_seconds: float, max_entries: int = 100_000) -> None:
        self._clock = clock
        self._ttl = timedelta(seconds=ttl_seconds)
        self._max = max_entries
        # The credential's digest -> (remembered at, the sensor); and each machine's digests.
        self._entries: dict[str, tuple[datetime, SensorIdentity]] = {}
        self._by_machine: dict[str, set[str]] = {}

    def get(self, credential: str) -> SensorIdentity | None:
        """The sensor remembered for ``credential`` if remembered less than ``ttl_seconds`` ago."""
        if not self._entries:
            return None
        digest = digest_credential(credential)
        hit = self._entries.get(digest)
        if hit is None:
            return None
        if self._clock.now() - hit[0] < self._ttl:
            return hit[1]
        self._drop(digest)
        return None

    def remember(self, credential: str, sensor: SensorIdentity) -> None:
        """Remember that ``credential`` is ``sensor``'s current credential (just read from the database)."""
        if self._ttl <= timedelta(0):
            return
        if len(self._entries) >= self._max:
            self._entries.clear()
            self._by_machine.clear()
        digest = digest_credential(credential)
        self._entries[digest] = (self._clock.now(), sensor)
        self._by_machine.setdefault(sensor.machine_id, set()).add(digest)

    def forget_machine(self, machine_id: str) -> None:
        """Forget every credential of ``machine_id`` (an enrolment superseded them)."""
        for digest in self._by_machine.pop(machine_id, ()):
            self._entries.pop(digest, None)

    def _drop(self, digest: str) -> None:
        found = self._entries.pop(digest, None)
        if found is not None:
            digests = self._by_machine.get(found[1].machine_id)
            if digests is not None:
                digests.discard(digest)
                if not digests:
                    del self._by_machine[found[1].machine_id]

    def __len__(self) -> int:
        return len(self._entries)


def check_in(
    sensor: SensorIdentity, properties: DeviceProperties, uow: UnitOfWork, clock: Clock, client_ip: str | None = None
) -> None:
    """Record that the device is alive, with what it reports about itself."""
    with uow:
        machine = uow.machines.get_in_tenant(sensor.tenant_id, sensor.machine_id)
        if machine is None or not uow.sensors.is_current(sensor.sensor_id):
            raise Unauthorized()
        values = _apply_properties(machine, properties)
        values.update(last_seen=clock.now(), health_status=HealthStatus.ACTIVE.value)
        if client_ip:
            values["last_external_ip_address"] = client_ip
        uow.machines.update_fields(sensor.machine_id, **values)
        uow.commit()


class SensorOffboarded(DisallowedOperation):
    """The device was offboarded; it takes no actions until it is onboarded again."""

    code = "SensorOffboarded"
    default_message = "The device is offboarded; onboard it again before it takes actions."


def has_waiting_action(sensor: SensorIdentity, uow: UnitOfWork) -> bool:
    """Whether an action waits for the sensor's machine: a read, so idle polls never take a write lock.

    Raises SensorOffboarded once the machine is offboarded (the device should have stopped).
    """
    with uow:
        machine = uow.machines.get_in_tenant(sensor.tenant_id, sensor.machine_id, lock=False, with_tags=False)
        if machine is None:
            raise Unauthorized()
        if machine.offboarded_at is not None:
            raise SensorOffboarded()
        return bool(uow.actions.pending_for_machine(sensor.machine_id, limit=1))


def claim_next_action(sensor: SensorIdentity, uow: UnitOfWork, clock: Clock) -> MachineAction | None:
    """Move the machine's oldest Pending action to InProgress and return it (None when none is waiting).

    The claim is a guarded transition: against a racing cancel or a second sensor exactly one wins.
    It refuses before it writes and changes the action alone, never the machine (the group-commit
    writer runs it with ``savepoint=False, changes_machines=False``).
    """
    with uow:
        machine = uow.machines.get_in_tenant(sensor.tenant_id, sensor.machine_id, with_tags=False)
        if machine is None or not uow.sensors.is_current(sensor.sensor_id):
            raise Unauthorized()
        if machine.offboarded_at is not None:
            raise SensorOffboarded()
        now = clock.now()
        for action in uow.actions.pending_for_machine(sensor.machine_id):
            if uow.actions.transition(action.id, ActionStatus.IN_PROGRESS, at=now):
                uow.commit()
                action.status = ActionStatus.IN_PROGRESS
                action.last_update_date_time_utc = now
                return action
    return None


def current_action(sensor: SensorIdentity, uow: UnitOfWork) -> MachineAction | None:
    """The action the machine's sensor claimed and has not reported yet (the oldest), or None.

    A sensor that crashed after the server recorded its claim but before it noted the action
    locally asks for it on restart, and finishes or fails it instead of leaving it InProgress
    until the in-progress timeout.
    """
    with uow:
        if not uow.sensors.is_current(sensor.sensor_id):
            raise Unauthorized()
        claimed = [a for a in uow.actions.active_for_machine(sensor.machine_id) if a.status is ActionStatus.IN_PROGRESS]
    return min(claimed, key=lambda a: a.creation_date_time_utc) if claimed else None


@dataclass(frozen=True, slots=True)
class ReportOutcome:
    """A sensor's report that it finished (or failed) an action it claimed."""

    action_id: str
    status: ActionStatus
    error_h_result: int = 0


class OutcomeReport(NamedTuple):
    """What became of a sensor's report."""

    accepted: bool
    action: MachineAction
    finished_now: bool
    """This report moved the action to its final status (false for a repeated report)."""


def report_outcome(command: ReportOutcome, sensor: SensorIdentity, uow: UnitOfWork, clock: Clock) -> OutcomeReport:
    """Finish an InProgress action of the sensor's machine; say whether it was accepted, and the action as it now is.

    Reporting the status the action already has is accepted again (the sensor may retry after a
    lost answer), but it finishes nothing a second time. A finished offboard marks the machine
    offboarded; the sweeper turns it Inactive later. The sensor carries out an offboard for good only once its report is accepted.
    """
    if command.status not in (ActionStatus.SUCCEEDED, ActionStatus.FAILED):
        raise InvalidInput("Invalid input status: Succeeded or Failed.")
    action_id = normalize_action_id(command.action_id)
    with uow:
        action = uow.actions.get(sensor.tenant_id, action_id)
        if action is None or action.machine_id != sensor.machine_id:
            raise ResourceNotFound("MachineAction", command.action_id)
        now = clock.now()
        accepted = uow.actions.transition(
            action_id, command.status, at=now, machine_id=sensor.machine_id, error_h_result=command.error_h_result
        )
        if accepted:
            if action.type is ActionType.OFFBOARD and command.status is ActionStatus.SUCCEEDED:
                uow.machines.update_fields(sensor.machine_id, offboarded_at=now, last_seen=now)
            audit_event(
                uow,
                clock,
                action=f"machine_action.{action.type.value.lower()}.{command.status.value.lower()}",
                principal=None,
                tenant_id=sensor.tenant_id,
                context=_DEVICE_CONTEXT,
                outcome_status=200,
                machine_id=sensor.machine_id,
                machine_action_id=action_id,
                details={"sensorId": sensor.sensor_id, "errorHResult": command.error_h_result},
            )
        current = uow.actions.get(sensor.tenant_id, action_id)
        uow.commit()
    assert current is not None
    return OutcomeReport(accepted or current.status is command.status, current, accepted)
