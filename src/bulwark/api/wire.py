"""Rendering domain objects the way the live API writes them: field order, names, timestamps."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.responses import Response

from bulwark.domain.actions import MachineAction
from bulwark.domain.machines import Machine


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


def entity_response(context: str, body: dict[str, Any], status_code: int = 200) -> Response:
    """A single entity, bare, with ``@odata.context`` first."""
    return json_response({"@odata.context": context, **body}, status_code)


def json_response(body: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON response serialized with orjson (field order kept)."""
    return Response(orjson.dumps(body), status_code=status_code, media_type="application/json", headers=headers)
