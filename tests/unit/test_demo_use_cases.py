"""The demo fleet's use cases against the in-memory unit of work: which machines get simulated sensors."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from bulwark.clock import FrozenClock
from bulwark.domain.sensors import derive_machine_id
from bulwark.service.demo import DEMO_DOMAIN, demo_sensor_names, seed_demo_fleet
from tests.conftest import make_machine
from tests.unit.fakes import FakeUnitOfWorkFactory

TENANT = "11111111-1111-1111-1111-111111111111"


def test_simulated_sensors_go_to_the_active_demo_machines_only() -> None:
    uow = FakeUnitOfWorkFactory()
    fleet = seed_demo_fleet(uow(), FrozenClock(datetime(2026, 3, 1, tzinfo=UTC)), TENANT, count=40)
    active = sorted(
        m.computer_dns_name.removesuffix(f".{DEMO_DOMAIN}")
        for m in uow.db.machines.values()
        if m.health_status == "Active" and m.offboarded_at is None
    )
    # A machine of the tenant that is not one of the demo fleet's (its id is not derived from its name).
    stranger = dataclasses.replace(make_machine(7), tenant_id=TENANT, health_status="Active")
    uow.db.machines[stranger.id] = stranger
    # Devices enrolled by `sensor fleet` and `sensor run`: their ids derive from their names too.
    for name, dns in (("fleet-00003", "fleet-00003.fleet.example"), ("ws-00001", "ws-00001.contoso.com")):
        enrolled = dataclasses.replace(
            make_machine(8), id=derive_machine_id(TENANT, name), tenant_id=TENANT, computer_dns_name=dns, health_status="Active"
        )
        uow.db.machines[enrolled.id] = enrolled

    names = demo_sensor_names(uow(write=False), TENANT)

    assert fleet.created and names and sorted(names) == active
    assert stranger.computer_dns_name.split(".")[0] not in names
