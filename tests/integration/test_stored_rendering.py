"""Machines rendered straight from their stored values (SQLite) are byte for byte what rendering
the built machines gives: every field, nulls, tags, unicode, odd timestamps and JSON."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from sqlalchemy import Engine, text

from bulwark.api.wire import (
    MACHINE_WIRE_FIELDS,
    _stored_json,
    _stored_timestamp,
    format_timestamp,
    machine_to_wire,
    stored_machines_to_wire,
)
from bulwark.domain.access import Principal, PrincipalKind
from bulwark.odata import MACHINE_SPEC, StoredMachines, parse_query
from bulwark.store.queries import list_machines, list_stored_machines
from bulwark.store.tables import machines
from bulwark.store.uow import SqlUnitOfWorkFactory
from tests.conftest import TENANT, make_machine, seed

APP = Principal(tenant_id=TENANT, kind=PrincipalKind.APPLICATION, id="app", name="app")
BASE = datetime(2026, 3, 1, 9, 30, 0, tzinfo=UTC)


@pytest.fixture
def engine(sqlite_engine: Engine) -> Engine:
    return sqlite_engine


@pytest.fixture
def fleet(engine: Engine) -> dict[str, int]:
    """Machines that between them hold every field in every shape a stored value can take."""
    factory = SqlUnitOfWorkFactory(engine)
    open_group, finance = seed(factory, [], groups=["Workstations", "Fïnance ✓"])
    east = timezone(timedelta(hours=5, minutes=30))
    seed(
        factory,
        [
            make_machine(
                1,
                rbac_group_id=open_group,
                machine_tags=["b-tag", "a-tag", "ünïcode 標籤", 'quote " back \\ slash'],
                is_aad_joined=True,
                aad_device_id="80fe8ff8-2624-418e-9591-41f0491218f9",
                ip_addresses=[{"ipAddress": "10.1.1.1", "macAddress": "001122334455", "type": "Ethernet"}],
            ),
            make_machine(
                2,
                rbac_group_id=finance,
                computer_dns_name="hôst-2.contoso.com",
                # Microseconds with trailing zeros, and a time given in another zone.
                first_seen=datetime(2025, 1, 2, 3, 4, 5, 120000, tzinfo=UTC),
                last_seen=datetime(2026, 2, 3, 4, 5, 6, 1, tzinfo=east),
                ip_addresses=[{"ipAddress": "fe80::1", "note": "naïve\u2028line", "nested": {"n": [1, 2.5, None, True]}}],
                is_potential_duplication=True,
                is_excluded=True,
            ),
            make_machine(
                3,
                os_processor=None,
                version=None,
                os_build=None,
                last_ip_address=None,
                last_external_ip_address=None,
                agent_version=None,
                os_architecture=None,
                managed_by=None,
                managed_by_status=None,
                ip_addresses=[],
                offboarded_at=BASE,
                last_seen=BASE + timedelta(microseconds=999999),
            ),
            make_machine(
                4,
                computer_dns_name="ctrl\t\n\x01\x7f.contoso.com",
                os_platform="WindowsServer2022",
                health_status="Inactive",
                device_value="High",
                risk_score="High",
                exposure_level="Low",
                onboarding_status="CanBeOnboarded",
                # Ordered by code point, as SQLite orders UTF-8 text (not as UTF-16 would order it).
                machine_tags=["😀", "\x1f", "\uffff", "\ue000", "Zulu", "alpha"],
                ip_addresses=[{"value": 12345678901234567, "float": 1e-7, "unicode": "\u00e9\U0001f600"}],
                os_build=2**62,
                first_seen=datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC),
            ),
            make_machine(5, ip_addresses=[{"nan": math.nan, "inf": math.inf}]),
        ],
    )
    return {"open": open_group, "finance": finance}


def _both(engine: Engine, principal: Principal, query_text: str) -> tuple[bytes, bytes, StoredMachines]:
    query = parse_query(query_text, MACHINE_SPEC)
    with SqlUnitOfWorkFactory(engine)(write=False) as uow:
        built = list_machines(uow.conn, principal, query)
        stored = list_stored_machines(uow.conn, principal, query)
    assert stored is not None
    assert (stored.has_more, stored.total, stored.next_token) == (built.has_more, built.total, built.next_token)
    expected = orjson.dumps([machine_to_wire(machine) for machine in built.items])
    return orjson.dumps(stored_machines_to_wire(stored)), expected, stored


def test_every_machine_renders_byte_for_byte_as_its_model(engine: Engine, fleet: dict[str, int]) -> None:
    got, expected, stored = _both(engine, APP, "$top=100")
    assert len(stored.rows) == 5
    assert got == expected
    # What the comparison covers: unicode, escapes, nulls, every field in the model's order.
    rendered = orjson.loads(got)
    assert [list(machine) for machine in rendered] == [[name for name, _ in MACHINE_WIRE_FIELDS]] * 5
    by_id = {machine["id"]: machine for machine in rendered}
    assert by_id[f"{1:040x}"]["machineTags"] == ["a-tag", "b-tag", 'quote " back \\ slash', "ünïcode 標籤"]
    assert by_id[f"{2:040x}"]["lastSeen"] == "2026-02-02T22:35:06.000001Z"
    assert by_id[f"{2:040x}"]["firstSeen"] == "2025-01-02T03:04:05.12Z"
    assert by_id[f"{2:040x}"]["rbacGroupName"] == "Fïnance ✓"
    assert by_id[f"{3:040x}"]["osBuild"] is None and by_id[f"{3:040x}"]["ipAddresses"] == []
    assert by_id[f"{3:040x}"]["lastSeen"] == "2026-03-01T09:30:00.999999Z"
    assert by_id[f"{4:040x}"]["firstSeen"] == "1999-12-31T23:59:59Z"
    assert by_id[f"{4:040x}"]["machineTags"] == ["\x1f", "Zulu", "alpha", "\ue000", "\uffff", "😀"]
    assert by_id[f"{5:040x}"]["ipAddresses"] == [{"nan": None, "inf": None}]


@pytest.mark.parametrize(
    "query_text",
    [
        "$top=2",
        "$top=2&$skip=1&$count=true",
        "$filter=startswith(computerDnsName,'host-')&$orderby=lastSeen desc",
        "$filter=machineTags/any(t: t eq 'a-tag') or riskScore eq 'High'",
        "$filter=healthStatus ne 'Active'",
        "$filter=version eq null",
    ],
)
def test_pages_render_alike_for_any_query_and_caller(engine: Engine, fleet: dict[str, int], query_text: str) -> None:
    user = Principal(tenant_id=TENANT, kind=PrincipalKind.USER, id="u", name="u", device_group_ids=frozenset({fleet["open"]}))
    for principal in (APP, user):
        got, expected, _ = _both(engine, principal, query_text)
        assert got == expected


def test_timestamps_stored_in_other_shapes_render_as_the_model_does(engine: Engine, fleet: dict[str, int]) -> None:
    # Written by hand rather than by the store: no fraction, a short fraction, a date alone.
    with engine.begin() as conn:
        conn.execute(text("UPDATE machines SET last_seen = '2026-03-01 09:30:00' WHERE id = :id"), {"id": f"{1:040x}"})
        conn.execute(text("UPDATE machines SET last_seen = '2026-03-01 09:30:00.5' WHERE id = :id"), {"id": f"{2:040x}"})
        conn.execute(text("UPDATE machines SET first_seen = '2026-03-01' WHERE id = :id"), {"id": f"{3:040x}"})
    got, expected, _ = _both(engine, APP, "$top=100")
    assert got == expected
    by_id = {machine["id"]: machine for machine in orjson.loads(got)}
    assert by_id[f"{1:040x}"]["lastSeen"] == "2026-03-01T09:30:00Z"
    assert by_id[f"{3:040x}"]["firstSeen"] == "2026-03-01T00:00:00Z"


def test_an_empty_page_renders_empty(engine: Engine, fleet: dict[str, int]) -> None:
    got, expected, stored = _both(engine, APP, "$filter=computerDnsName eq 'nobody'")
    assert got == expected == b"[]"
    assert stored.rows == [] and stored.tags == {}


def _outcome(render: Callable[[], Any]) -> object:
    try:
        return orjson.dumps(render())
    except Exception as error:  # what the model path would answer: an error, of this kind
        return type(error)


@pytest.mark.parametrize(
    "stored",
    [
        "[]",
        '[{"ipAddress": "10.0.0.1", "type": "Ethernet"}]',
        "[9223372036854775807, 18446744073709551615, -9223372036854775808]",
        # Beyond 64 bits: Python's json keeps the integer (which cannot be rendered); orjson would
        # have read a float.
        "[18446744073709551616]",
        "[-9223372036854775809]",
        '["12345678901234567890"]',
        "[1e400, NaN, Infinity, -Infinity]",
        "[-0, -0.0, 1.0, 1E5, 5e-324, 2.5e-7, 123456789012345678901234567890.5]",
        '["\\ud83d\\ude00", "\\u00e9", "\\u0000"]',
        '["\\ud800"]',
        '{"a": 1, "a": 2}',
        "  [1]  ",
        "[1,]",
    ],
)
def test_stored_json_reads_as_the_columns_processor_reads_it(engine: Engine, stored: str) -> None:
    processor = machines.c.ip_addresses.type.dialect_impl(engine.dialect).result_processor(engine.dialect, None)
    assert processor is not None
    assert _outcome(lambda: _stored_json(stored, processor)) == _outcome(lambda: processor(stored))


@pytest.mark.parametrize(
    "stored",
    [
        "2026-03-01 09:30:00.000000",
        "2026-03-01 09:30:00.120000",
        "2026-03-01 09:30:00.000001",
        "0999-12-31 23:59:59.999999",
        "2026-03-01 09:30:00",
        "2026-03-01 09:30:00.5",
        "2026-03-01",
        # Digits other than ASCII ones are not the stored shape: the processor reads them.
        "\uff12\uff10\uff12\uff16-03-01 09:30:00.000000",
    ],
)
def test_stored_timestamps_render_as_the_columns_processor_reads_them(engine: Engine, stored: str) -> None:
    processor = machines.c.last_seen.type.dialect_impl(engine.dialect).result_processor(engine.dialect, None)
    assert processor is not None
    assert _outcome(lambda: _stored_timestamp(stored, processor)) == _outcome(lambda: format_timestamp(processor(stored)))
