"""Fast bulk seeding of benchmark fleets (executemany batches straight into the tables)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

from sqlalchemy import insert, select

from bulwark.store.db import create_db_engine
from bulwark.store.tables import device_groups, machine_tags, machines, tenants

DEMO_TENANT = "6f1c4d1e-2b43-4c7a-9d55-0b6a3c1e8f10"


def machine_id(index: int) -> str:
    """The id of benchmark machine ``index``."""
    return hashlib.sha1(f"bench/{index}".encode()).hexdigest()


def seed_machines(
    url: str, count: int, *, platforms: tuple[str, ...] = ("Windows11", "Windows10", "WindowsServer2022"), groups: int = 10
) -> list[str]:
    """Create the demo tenant, ``groups`` device groups and ``count`` machines; return their ids."""
    engine = create_db_engine(url)
    now = datetime(2026, 11, 1, tzinfo=UTC)
    with engine.begin() as conn:
        if conn.execute(select(tenants.c.id).where(tenants.c.id == DEMO_TENANT)).first() is None:
            conn.execute(insert(tenants), [{"id": DEMO_TENANT, "name": "Contoso", "created_at": now}])
        conn.execute(insert(device_groups), [{"tenant_id": DEMO_TENANT, "name": f"bench-group-{g}"} for g in range(groups)])
        group_ids = [r[0] for r in conn.execute(select(device_groups.c.id).where(device_groups.c.tenant_id == DEMO_TENANT))]
    ids = [machine_id(i) for i in range(count)]
    for start in range(0, count, 10_000):
        rows, tag_rows = [], []
        for i in range(start, min(count, start + 10_000)):
            rows.append(
                {
                    "id": ids[i],
                    "tenant_id": DEMO_TENANT,
                    "computer_dns_name": f"host-{i:06d}.contoso.com",
                    "first_seen": now - timedelta(days=400),
                    "last_seen": now - timedelta(minutes=i % 100_000),
                    "os_platform": platforms[i % len(platforms)],
                    "os_processor": "x64",
                    "version": "22H2",
                    "os_build": 19045,
                    "last_ip_address": f"10.{i % 250}.{(i // 250) % 250}.{i % 200 + 1}",
                    "last_external_ip_address": None,
                    "agent_version": "10.8760.1",
                    "health_status": "Active" if i % 10 else "Inactive",
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
    with engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")
    engine.dispose()
    return ids
