"""What the API sends (api/wire.py) and what OpenAPI says it sends (api/schemas.py) are the same shape."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import BaseModel, ValidationError

from bulwark.api.schemas import MachineActionOut, MachineOut
from bulwark.api.wire import action_to_wire, machine_to_wire
from bulwark.domain.actions import ActionStatus, ActionType, MachineAction
from bulwark.domain.machines import Machine

NOW = datetime(2025, 3, 1, 9, 0, 0, 120000, tzinfo=UTC)
MACHINE_ID = "1e5bc9d7e413ddd7902c2932e418702b84d0cc07"


def _wire_names(model: type[BaseModel]) -> list[str]:
    return [field.alias or name for name, field in model.model_fields.items()]


def _bare_action() -> MachineAction:
    return MachineAction(
        id="7f1d0b9e-5c1a-4b8e-9d0f-2a3b4c5d6e7f",
        tenant_id="t",
        type=ActionType.OFFBOARD,
        requestor="analyst@contoso.com",
        requestor_comment="lost laptop",
        status=ActionStatus.PENDING,
        machine_id=MACHINE_ID,
        computer_dns_name=None,
        creation_date_time_utc=NOW,
        last_update_date_time_utc=NOW,
    )


def _full_action() -> MachineAction:
    return MachineAction(
        id="7f1d0b9e-5c1a-4b8e-9d0f-2a3b4c5d6e7f",
        tenant_id="t",
        type=ActionType.OFFBOARD,
        requestor="analyst@contoso.com",
        requestor_comment="lost laptop",
        status=ActionStatus.CANCELLED,
        machine_id=MACHINE_ID,
        computer_dns_name="laptop-1.contoso.com",
        creation_date_time_utc=NOW,
        last_update_date_time_utc=NOW,
        title="Offboard laptop-1",
        cancellation_requestor="Bulwark",
        cancellation_comment="enrolled again",
        cancellation_date_time_utc=NOW,
        error_h_result=-2147467260,
        scope="Full",
        external_id="ticket-42",
        related_file_info={"fileIdentifier": "x"},
        commands=[{"index": 0}],
        troubleshoot_info={"a": 1},
    )


def _bare_machine() -> Machine:
    return Machine(
        id=MACHINE_ID, tenant_id="t", computer_dns_name="laptop-1", first_seen=NOW, last_seen=NOW, os_platform="Windows11"
    )


def _full_machine() -> Machine:
    return Machine(
        id=MACHINE_ID,
        tenant_id="t",
        computer_dns_name="laptop-1.contoso.com",
        first_seen=NOW,
        last_seen=NOW,
        os_platform="Windows11",
        os_processor=None,
        version="22H2",
        os_build=22621,
        last_ip_address="10.0.0.4",
        last_external_ip_address="203.0.113.9",
        agent_version="10.8750.22621.1000",
        rbac_group_id=3,
        rbac_group_name="Finance",
        is_aad_joined=True,
        aad_device_id="80fe8ff8-2624-418e-9591-41f0491218f9",
        machine_tags=["laptop"],
        ip_addresses=[{"ipAddress": "10.0.0.4", "macAddress": "001122334455", "type": "Ethernet"}],
        managed_by=None,
        managed_by_status=None,
    )


@pytest.mark.parametrize(
    ("model", "wire"),
    [
        (MachineActionOut, action_to_wire(_bare_action())),
        (MachineActionOut, action_to_wire(_full_action())),
        (MachineOut, machine_to_wire(_bare_machine())),
        (MachineOut, machine_to_wire(_full_machine())),
    ],
    ids=["action-bare", "action-full", "machine-bare", "machine-full"],
)
def test_the_schema_names_the_fields_sent_in_the_order_sent_with_their_types(model: type[BaseModel], wire: dict) -> None:
    sent = {"@odata.context": "https://bulwark.test/api/$metadata#Entity/$entity", **wire}
    assert _wire_names(model) == list(sent)
    # Strict: a field sent as a number while the schema says string (or the reverse) fails here.
    model.model_validate(sent, strict=True)


def test_a_field_sent_with_another_type_than_the_schema_says_is_noticed() -> None:
    sent = {"@odata.context": "c", **action_to_wire(_bare_action())}
    sent["errorHResult"] = "0"
    with pytest.raises(ValidationError):
        MachineActionOut.model_validate(sent, strict=True)
