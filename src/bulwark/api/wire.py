"""Rendering domain objects the way the live API writes them: field order, names, timestamps."""

from __future__ import annotations

import functools
import operator
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.responses import Response

from bulwark.domain.actions import MachineAction
from bulwark.domain.machines import Machine
from bulwark.odata import StoredMachines


def format_timestamp(value: datetime | None) -> str | None:
    """UTC with up to 7 fractional digits, trailing zeros dropped: ``2021-01-26T20:33:59.2Z``."""
    if value is None:
        return None
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    text = value.replace(tzinfo=None).isoformat()
    # isoformat writes six fractional digits when there are microseconds, none otherwise.
    return (text.rstrip("0") if value.microsecond else text) + "Z"


def action_to_wire(action: MachineAction) -> dict[str, Any]:
    """A MachineAction with every field, in the order the live service emits them."""
    return {
        "id": action.id,
        "type": action.type.value,
        "title": action.title,
        "requestor": action.requestor,
        "requestorComment": action.requestor_comment,
        "status": action.status.value,
        "machineId": action.machine_id,
        "computerDnsName": action.computer_dns_name,
        "creationDateTimeUtc": format_timestamp(action.creation_date_time_utc),
        "lastUpdateDateTimeUtc": format_timestamp(action.last_update_date_time_utc),
        "cancellationRequestor": action.cancellation_requestor,
        "cancellationComment": action.cancellation_comment,
        "cancellationDateTimeUtc": format_timestamp(action.cancellation_date_time_utc),
        "errorHResult": action.error_h_result,
        "scope": action.scope,
        "externalId": action.external_id,
        "requestSource": action.request_source,
        "relatedFileInfo": action.related_file_info,
        "commands": action.commands,
        "troubleshootInfo": action.troubleshoot_info,
    }


def machine_to_wire(machine: Machine) -> dict[str, Any]:
    """A Machine with every field of the live entity, in its order."""
    return {
        "id": machine.id,
        "computerDnsName": machine.computer_dns_name,
        "firstSeen": format_timestamp(machine.first_seen),
        "lastSeen": format_timestamp(machine.last_seen),
        "osPlatform": machine.os_platform,
        "osProcessor": machine.os_processor,
        "version": machine.version,
        "osBuild": machine.os_build,
        "lastIpAddress": machine.last_ip_address,
        "lastExternalIpAddress": machine.last_external_ip_address,
        "agentVersion": machine.agent_version,
        "healthStatus": machine.health_status,
        "deviceValue": machine.device_value,
        "rbacGroupId": machine.rbac_group_id,
        "rbacGroupName": machine.rbac_group_name,
        "riskScore": machine.risk_score,
        "exposureLevel": machine.exposure_level,
        "isAadJoined": machine.is_aad_joined,
        "aadDeviceId": machine.aad_device_id,
        "machineTags": list(machine.machine_tags),
        "onboardingStatus": machine.onboarding_status,
        "osArchitecture": machine.os_architecture,
        "ipAddresses": machine.ip_addresses,
        "managedBy": machine.managed_by,
        "managedByStatus": machine.managed_by_status,
        "isPotentialDuplication": machine.is_potential_duplication,
        "isExcluded": machine.is_excluded,
    }


# The fields of ``machine_to_wire`` in its order, each with the column (or, for the tags, the
# collection) it comes from.
MACHINE_WIRE_FIELDS: tuple[tuple[str, str], ...] = (
    ("id", "id"),
    ("computerDnsName", "computer_dns_name"),
    ("firstSeen", "first_seen"),
    ("lastSeen", "last_seen"),
    ("osPlatform", "os_platform"),
    ("osProcessor", "os_processor"),
    ("version", "version"),
    ("osBuild", "os_build"),
    ("lastIpAddress", "last_ip_address"),
    ("lastExternalIpAddress", "last_external_ip_address"),
    ("agentVersion", "agent_version"),
    ("healthStatus", "health_status"),
    ("deviceValue", "device_value"),
    ("rbacGroupId", "rbac_group_id"),
    ("rbacGroupName", "rbac_group_name"),
    ("riskScore", "risk_score"),
    ("exposureLevel", "exposure_level"),
    ("isAadJoined", "is_aad_joined"),
    ("aadDeviceId", "aad_device_id"),
    ("machineTags", "machine_tags"),
    ("onboardingStatus", "onboarding_status"),
    ("osArchitecture", "os_architecture"),
    ("ipAddresses", "ip_addresses"),
    ("managedBy", "managed_by"),
    ("managedByStatus", "managed_by_status"),
    ("isPotentialDuplication", "is_potential_duplication"),
    ("isExcluded", "is_excluded"),
)
_MACHINE_WIRE_NAMES = tuple(name for name, _ in MACHINE_WIRE_FIELDS)

# How SQLAlchemy stores a timestamp in SQLite (naive UTC here, store/tables.py: UtcDateTime).
_STORED_TIMESTAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}")
# Digits enough for an integer beyond 64 bits, which orjson would read as a float.
_LONG_NUMBER = re.compile(r"[0-9]{19}")


def _stored_timestamp(value: Any, processor: Callable[[Any], Any]) -> str | None:
    """``format_timestamp`` of a stored timestamp, straight from its text when stored as SQLAlchemy
    stores it on SQLite (``2021-01-26 20:33:59.200000``), else through the column's processor."""
    if type(value) is str and _STORED_TIMESTAMP.fullmatch(value):
        fraction = value[20:].rstrip("0")
        return f"{value[:10]}T{value[11:19]}.{fraction}Z" if fraction else f"{value[:10]}T{value[11:19]}Z"
    return format_timestamp(processor(value))


def _stored_json(value: Any, processor: Callable[[Any], Any]) -> Any:
    """A JSON column's value: its text parsed by orjson where that gives what the column's processor
    gives (Python's ``json``), else by the processor: orjson refuses ``NaN`` and reads integers
    beyond 64 bits as floats, where ``json`` takes both."""
    if type(value) is str and _LONG_NUMBER.search(value) is None:
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            pass
    return processor(value)


def _processed(value: Any, processor: Callable[[Any], Any]) -> Any:
    return processor(value)


_STORED_CONVERSIONS: dict[str, Callable[[Any, Callable[[Any], Any]], Any]] = {
    "first_seen": _stored_timestamp,
    "last_seen": _stored_timestamp,
    "ip_addresses": _stored_json,
}


_Layout = tuple[Callable[[Any], tuple[Any, ...]], tuple[tuple[int, int, str], ...], int]


@functools.lru_cache(maxsize=16)
def _stored_machine_layout(keys: tuple[str, ...]) -> _Layout:
    """For rows of ``keys``: a getter of the wire fields' values in wire order (the id where the tags
    go), each wire field's (wire position, row position, column), and where the tags go."""
    where = {key: position for position, key in enumerate(keys)}
    positions = tuple(where["id" if column == "machine_tags" else column] for _, column in MACHINE_WIRE_FIELDS)
    fields = tuple(
        (wire_at, positions[wire_at], column)
        for wire_at, (_, column) in enumerate(MACHINE_WIRE_FIELDS)
        if column != "machine_tags"
    )
    return operator.itemgetter(*positions), fields, _MACHINE_WIRE_NAMES.index("machineTags")


def stored_machines_to_wire(page: StoredMachines) -> list[dict[str, Any]]:
    """The machines of ``page`` as ``machine_to_wire`` renders them, without building each machine:
    only the columns whose stored value is not already the field's are converted."""
    pick, fields, tags_at = _stored_machine_layout(page.keys)
    conversions = [
        (wire_at, _STORED_CONVERSIONS.get(column, _processed), processor)
        for wire_at, row_at, column in fields
        if (processor := page.processors[row_at]) is not None
    ]
    tags, names = page.tags, _MACHINE_WIRE_NAMES
    rendered: list[dict[str, Any]] = []
    for row in page.rows:
        values = list(pick(row))
        for wire_at, convert, processor in conversions:
            value = values[wire_at]
            # Every processor leaves None as it is.
            if value is not None:
                values[wire_at] = convert(value, processor)
        values[tags_at] = list(tags[values[tags_at]])
        rendered.append(dict(zip(names, values, strict=True)))
    return rendered


def entity_response(context: str, body: dict[str, Any], status_code: int = 200) -> Response:
    """A single entity, bare, with ``@odata.context`` first."""
    return json_response({"@odata.context": context, **body}, status_code)


def json_response(body: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON response serialized with orjson (field order kept)."""
    return Response(orjson.dumps(body), status_code=status_code, media_type="application/json", headers=headers)
