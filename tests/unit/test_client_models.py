"""The SDK's entity models read the payloads the API sends."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bulwark.client import ActionStatus, Machine, MachineAction

# Field names in the order the live service emits them (see the MDE contract).
MACHINE_ACTION_WIRE_FIELDS = [
    "id", "type", "title", "requestor", "requestorComment", "status", "machineId", "computerDnsName",
    "creationDateTimeUtc", "lastUpdateDateTimeUtc", "cancellationRequestor", "cancellationComment",
    "cancellationDateTimeUtc", "errorHResult", "scope", "externalId", "requestSource", "relatedFileInfo",
    "commands", "troubleshootInfo",
]  # fmt: skip
MACHINE_WIRE_FIELDS = [
    "id", "computerDnsName", "firstSeen", "lastSeen", "osPlatform", "osProcessor", "version", "osBuild",
    "lastIpAddress", "lastExternalIpAddress", "agentVersion", "healthStatus", "deviceValue", "rbacGroupId",
    "rbacGroupName", "riskScore", "exposureLevel", "isAadJoined", "aadDeviceId", "machineTags",
    "onboardingStatus", "osArchitecture", "ipAddresses", "managedBy", "managedByStatus",
    "isPotentialDuplication", "isExcluded",
]  # fmt: skip

DOCUMENTED_OFFBOARD_RESPONSE = {
    "id": "f123cb8d-1cee-4da9-8cd1-74b4d14f5dc2",
    "type": "Offboard",
    "requestor": "admin@contoso.com",
    "requestorComment": "Offboard machine by automation",
    "status": "Pending",
    "machineId": "1e5bc9d7e413ddd7902c2932e418702b84d0cc07",
    "computerDnsName": "mymachine1.contoso.com",
    "creationDateTimeUtc": "2021-01-26T20:33:57.7220239Z",
    "lastUpdateDateTimeUtc": "2021-01-26T20:33:59.2Z",
    "relatedFileInfo": None,
}

FULL_MACHINE = {
    "id": "1e5bc9d7e413ddd7902c2932e418702b84d0cc07",
    "computerDnsName": "mymachine1.contoso.com",
    "firstSeen": "2018-08-02T14:55:03.7791856Z",
    "lastSeen": "2018-08-02T14:55:03.7791856Z",
    "osPlatform": "Windows10",
    "osProcessor": "x64",
    "version": "1709",
    "osBuild": 18209,
    "lastIpAddress": "172.17.230.209",
    "lastExternalIpAddress": "167.220.196.71",
    "agentVersion": "10.5830.18209.1001",
    "healthStatus": "Active",
    "deviceValue": "Normal",
    "rbacGroupId": 140,
    "rbacGroupName": "The-A-Team",
    "riskScore": "Low",
    "exposureLevel": "Medium",
    "isAadJoined": True,
    "aadDeviceId": "80fe8ff8-2624-418e-9591-41f0491218f9",
    "machineTags": ["test tag 1", "test tag 2"],
    "onboardingStatus": "Onboarded",
    "osArchitecture": "64-bit",
    "ipAddresses": [{"ipAddress": "172.17.230.209", "macAddress": "00155D9E8F2D", "type": "Ethernet"}],
    "managedBy": "MicrosoftDefenderForEndpoint",
    "managedByStatus": "Success",
    "isPotentialDuplication": False,
    "isExcluded": False,
}


def test_documented_offboard_response_reads_with_seven_fractional_digits() -> None:
    action = MachineAction.model_validate(DOCUMENTED_OFFBOARD_RESPONSE)

    assert action.id == "f123cb8d-1cee-4da9-8cd1-74b4d14f5dc2"
    assert action.status is ActionStatus.PENDING
    assert action.requestor_comment == "Offboard machine by automation"
    assert action.machine_id == "1e5bc9d7e413ddd7902c2932e418702b84d0cc07"
    assert action.creation_date_time_utc == datetime(2021, 1, 26, 20, 33, 57, 722023, tzinfo=UTC)
    assert action.last_update_date_time_utc == datetime(2021, 1, 26, 20, 33, 59, 200000, tzinfo=UTC)
    # Fields the document leaves out take their documented "nothing happened" values.
    assert action.error_h_result == 0
    assert action.commands == []
    assert action.cancellation_date_time_utc is None
    assert action.external_id is None


def test_machine_action_wire_names_are_exactly_the_live_ones() -> None:
    action = MachineAction.model_validate(
        {name: None for name in MACHINE_ACTION_WIRE_FIELDS}
        | {"id": "a", "type": "Offboard", "status": "Cancelled", "errorHResult": 0, "commands": []}
    )

    assert list(action.model_dump(by_alias=True)) == MACHINE_ACTION_WIRE_FIELDS
    assert set(MachineAction.model_fields) == {
        "id", "type", "title", "requestor", "requestor_comment", "status", "machine_id", "computer_dns_name",
        "creation_date_time_utc", "last_update_date_time_utc", "cancellation_requestor", "cancellation_comment",
        "cancellation_date_time_utc", "error_h_result", "scope", "external_id", "request_source",
        "related_file_info", "commands", "troubleshoot_info",
    }  # fmt: skip
    assert action.model_extra == {}


def test_machine_reads_every_contract_field() -> None:
    machine = Machine.model_validate(FULL_MACHINE)

    assert list(machine.model_dump(by_alias=True)) == MACHINE_WIRE_FIELDS
    assert machine.model_extra == {}
    assert machine.os_build == 18209
    assert machine.rbac_group_id == 140
    assert machine.is_aad_joined is True
    assert machine.machine_tags == ["test tag 1", "test tag 2"]
    assert machine.last_external_ip_address == "167.220.196.71"
    assert machine.first_seen == datetime(2018, 8, 2, 14, 55, 3, 779185, tzinfo=UTC)
    assert machine.ip_addresses[0]["macAddress"] == "00155D9E8F2D"


def test_models_accept_unknown_fields_and_keep_them() -> None:
    payload = DOCUMENTED_OFFBOARD_RESPONSE | {
        "@odata.context": "https://api.example/api/$metadata#MachineActions/$entity",
        "fileInstances": [],
    }

    action = MachineAction.model_validate(payload)

    assert action.model_extra == {
        "@odata.context": "https://api.example/api/$metadata#MachineActions/$entity",
        "fileInstances": [],
    }


def test_machine_needs_only_an_id_and_reads_null_arrays_as_empty() -> None:
    machine = Machine.model_validate({"id": "abc", "machineTags": None, "ipAddresses": None})

    assert machine.machine_tags == []
    assert machine.ip_addresses == []
    assert machine.health_status is None


def test_timestamps_without_offset_are_utc() -> None:
    machine = Machine.model_validate({"id": "abc", "lastSeen": "2024-03-01T10:00:00.1234567"})

    assert machine.last_seen == datetime(2024, 3, 1, 10, 0, 0, 123456, tzinfo=UTC)


def test_models_can_be_built_with_python_names() -> None:
    action = MachineAction(id="a", type="Offboard", status=ActionStatus.SUCCEEDED, machine_id="m1")

    assert action.model_dump(by_alias=True)["machineId"] == "m1"


def test_misspelt_status_is_rejected() -> None:
    with pytest.raises(ValueError):
        MachineAction.model_validate(DOCUMENTED_OFFBOARD_RESPONSE | {"status": "Canceled"})


@pytest.mark.parametrize(
    ("status", "final"),
    [
        ("Pending", False),
        ("InProgress", False),
        ("Succeeded", True),
        ("Failed", True),
        ("TimeOut", True),
        ("Cancelled", True),
    ],
)
def test_action_status_knows_which_states_are_final(status: str, final: bool) -> None:
    assert ActionStatus(status).is_final is final
