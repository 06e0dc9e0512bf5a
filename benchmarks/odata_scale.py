"""Filtered inventory and action-history queries over 100,000 machines and 1,000,000 actions.

Seeds a scratch database (a SQLite file, or a scratch PostgreSQL database that is dropped after),
then times each query through the same code the API uses (store/queries.py), reporting the median
and 99th percentile, as a ratio of a primary-key lookup measured in the same run.

    python benchmarks/odata_scale.py --storage sqlite
    python benchmarks/odata_scale.py --storage postgres --postgres-url postgresql+psycopg://postgres@127.0.0.1/test
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine, insert, text
from sqlalchemy.engine import make_url

from bulwark.domain.access import Principal, PrincipalKind
from bulwark.odata import MACHINE_ACTION_SPEC, MACHINE_SPEC, parse_query
from bulwark.store.db import create_db_engine, upgrade_database
from bulwark.store.queries import list_actions, list_machines
from bulwark.store.repositories import MachineRepository
from bulwark.store.tables import device_groups, machine_actions, machine_tags, machines, tenants

TENANT = "6f1c4d1e-2b43-4c7a-9d55-0b6a3c1e8f10"
PLATFORMS = ["Windows11", "Windows10", "WindowsServer2022", "WindowsServer2019", "macOS", "Linux"]
HEALTH = ["Active"] * 8 + ["Inactive", "ImpairedCommunication"]
STATUSES = ["Succeeded"] * 7 + ["Failed", "TimeOut", "Cancelled"]
TYPES = ["Offboard", "Isolate", "Unisolate", "RunAntiVirusScan", "CollectInvestigationPackage"]


def seed(url: str, machine_count: int, action_count: int) -> list[str]:
    """Fill the database quickly with executemany batches; returns the machine ids."""
    engine = create_db_engine(url)
    now = datetime(2026, 11, 1, tzinfo=UTC)
    ids = [hashlib.sha1(f"scale/{i}".encode()).hexdigest() for i in range(machine_count)]
    with engine.begin() as conn:
        conn.execute(insert(tenants), [{"id": TENANT, "name": "Contoso", "created_at": now}])
        conn.execute(insert(device_groups), [{"tenant_id": TENANT, "name": f"group-{g}"} for g in range(10)])
        group_ids = [r[0] for r in conn.execute(text("SELECT id FROM device_groups ORDER BY id"))]
    batch = 10_000
    for start in range(0, machine_count, batch):
        rows, tag_rows = [], []
        for i in range(start, min(machine_count, start + batch)):
            rows.append(
                {
                    "id": ids[i],
                    "tenant_id": TENANT,
                    "computer_dns_name": f"host-{i:06d}.contoso.com",
                    "first_seen": now - timedelta(days=400),
                    "last_seen": now - timedelta(minutes=i % 100_000),
                    "os_platform": PLATFORMS[i % len(PLATFORMS)],
                    "os_processor": "x64",
                    "version": "22H2",
                    "os_build": 19045,
                    "last_ip_address": f"10.{i % 250}.{(i // 250) % 250}.{i % 200 + 1}",
                    "last_external_ip_address": None,
                    "agent_version": "10.8760.1",
                    "health_status": HEALTH[i % len(HEALTH)],
                    "device_value": "Normal",
                    "rbac_group_id": group_ids[i % len(group_ids)],
                    "risk_score": "Low",
                    "exposure_level": "Medium",
                    "is_aad_joined": True,
                    "aad_device_id": None,
                    "onboarding_status": "Onboarded",
                    "os_architecture": "64-bit",
                    "ip_addresses": [],
                    "managed_by": "MicrosoftDefenderForEndpoint",
                    "managed_by_status": "Success",
                    "is_potential_duplication": False,
                    "is_excluded": False,
                    "offboarded_at": None,
                }
            )
            if i % 20 == 0:
                tag_rows.append({"machine_id": ids[i], "tag": "VIP"})
        with engine.begin() as conn:
            conn.execute(insert(machines), rows)
            if tag_rows:
                conn.execute(insert(machine_tags), tag_rows)
    for start in range(0, action_count, batch):
        rows = []
        for n in range(start, min(action_count, start + batch)):
            created = now - timedelta(seconds=action_count - n)
            machine = ids[(n * 7919) % machine_count]
            rows.append(
                {
                    "id": str(uuid.UUID(int=n + 1)),
                    "tenant_id": TENANT,
                    "machine_id": machine,
                    "type": TYPES[n % len(TYPES)],
                    "title": None,
                    "requestor": f"app-{n % 5}",
                    "requestor_id": None,
                    "requestor_comment": "scale",
                    "status": STATUSES[n % len(STATUSES)],
                    "computer_dns_name": None,
                    "creation_date_time_utc": created,
                    "last_update_date_time_utc": created,
                    "cancellation_requestor": None,
                    "cancellation_comment": None,
                    "cancellation_date_time_utc": None,
                    "error_h_result": 0,
                    "scope": None,
                    "external_id": None,
                    "request_source": "PublicApi",
                    "related_file_info": None,
                    "commands": [],
                    "troubleshoot_info": None,
                }
            )
        with engine.begin() as conn:
            conn.execute(insert(machine_actions), rows)
    with engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")
    engine.dispose()
    return ids


def timed(fn, repeat: int) -> tuple[float, float]:
    """Median and 99th percentile of ``fn()`` in milliseconds (after two warm-up calls)."""
    fn()
    fn()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.99))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--storage", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--postgres-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--machines", type=int, default=100_000)
    parser.add_argument("--actions", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()

    scratch = None
    if args.storage == "sqlite":
        directory = Path(tempfile.mkdtemp(prefix="bulwark-scale-"))
        url = f"sqlite:///{directory / 'bulwark.db'}"
    else:
        scratch = f"bulwark_scale_{uuid.uuid4().hex[:8]}"
        admin = create_engine(args.postgres_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{scratch}"'))
        url = make_url(args.postgres_url).set(database=scratch).render_as_string(hide_password=False)
    try:
        upgrade_database(url)
        started = time.perf_counter()
        ids = seed(url, args.machines, args.actions)
        took = time.perf_counter() - started
        print(f"seeded {args.machines:,} machines and {args.actions:,} actions on {args.storage} in {took:.0f} s")
        engine = create_db_engine(url)
        app = Principal(TENANT, PrincipalKind.APPLICATION, "bench", "bench", frozenset({"Machine.Read.All"}))
        user = Principal(
            TENANT, PrincipalKind.USER, "u", "u@contoso.com", frozenset({"Machine.Read"}), device_group_ids=frozenset({1, 2, 3})
        )
        target = ids[len(ids) // 2]
        # The positions a client following next links from page 1 would hold at page 901.
        with engine.connect() as conn:
            machine_token = list_machines(conn, app, parse_query("$skip=89900&$top=100", MACHINE_SPEC)).next_token
            action_token = list_actions(conn, app, parse_query("$skip=89900&$top=100", MACHINE_ACTION_SPEC)).next_token
        cases = [
            ("machine by id (baseline)", lambda c: MachineRepository(c).get(app, target)),
            (
                "machines: healthStatus ne 'Active', top 50",
                lambda c: list_machines(c, app, parse_query("$filter=healthStatus ne 'Active'&$top=50", MACHINE_SPEC)),
            ),
            (
                "machines: startswith(computerDnsName), top 50",
                lambda c: list_machines(
                    c, app, parse_query("$filter=startswith(computerDnsName,'host-0999')&$top=50", MACHINE_SPEC)
                ),
            ),
            (
                "machines: lastSeen gt, osPlatform eq, top 100",
                lambda c: list_machines(
                    c,
                    app,
                    parse_query("$filter=lastSeen gt 2026-10-31T20:00:00Z and osPlatform eq 'Windows11'&$top=100", MACHINE_SPEC),
                ),
            ),
            (
                "machines: machineTags/any, top 100",
                lambda c: list_machines(c, app, parse_query("$filter=machineTags/any(t: t eq 'VIP')&$top=100", MACHINE_SPEC)),
            ),
            (
                "machines: user in 3 of 10 groups, $count, top 100",
                lambda c: list_machines(c, user, parse_query("$count=true&$top=100", MACHINE_SPEC)),
            ),
            (
                "machines: page at $skip=90000, top 100",
                lambda c: list_machines(c, app, parse_query("$skip=90000&$top=100", MACHINE_SPEC)),
            ),
            (
                "machines: page 901 by its next link ($skiptoken), top 100",
                lambda c: list_machines(c, app, parse_query(f"$skiptoken={machine_token}&$top=100", MACHINE_SPEC)),
            ),
            ("actions: newest 100", lambda c: list_actions(c, app, parse_query("$top=100", MACHINE_ACTION_SPEC))),
            (
                "actions: machineId eq, newest first",
                lambda c: list_actions(c, app, parse_query(f"$filter=machineId eq '{target}'", MACHINE_ACTION_SPEC)),
            ),
            (
                "actions: status in (Pending,InProgress)",
                lambda c: list_actions(
                    c, app, parse_query("$filter=status in ('Pending','InProgress')&$top=100", MACHINE_ACTION_SPEC)
                ),
            ),
            (
                "actions: type eq and creationDateTimeUtc ge, top 100",
                lambda c: list_actions(
                    c,
                    app,
                    parse_query(
                        "$filter=type eq 'Offboard' and creationDateTimeUtc ge 2026-10-31T12:00:00Z&$top=100", MACHINE_ACTION_SPEC
                    ),
                ),
            ),
            (
                "actions: page at $skip=90000, top 100",
                lambda c: list_actions(c, app, parse_query("$skip=90000&$top=100", MACHINE_ACTION_SPEC)),
            ),
            (
                "actions: page 901 by its next link ($skiptoken), top 100",
                lambda c: list_actions(c, app, parse_query(f"$skiptoken={action_token}&$top=100", MACHINE_ACTION_SPEC)),
            ),
            (
                "actions: one machine's history via machines/{id}",
                lambda c: list_actions(c, app, parse_query("$top=50", MACHINE_ACTION_SPEC), machine_id=target),
            ),
        ]
        results = []
        with engine.connect() as conn:
            for name, case in cases:
                median, p99 = timed(lambda case=case: case(conn), args.repeat)
                results.append((name, median, p99))
        base = results[0][1]
        print(f"\n{'query':55} {'median ms':>10} {'p99 ms':>8} {'x baseline':>10}")
        for name, median, p99 in results:
            print(f"{name:55} {median:10.2f} {p99:8.2f} {median / base:10.1f}")
        engine.dispose()
    finally:
        if scratch:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)'))


if __name__ == "__main__":
    main()
