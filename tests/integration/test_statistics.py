"""The query planner's statistics: taken when the data moved, and used to pick indexes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert

from bulwark.store.db import create_db_engine, refresh_statistics, upgrade_database
from bulwark.store.tables import machine_actions
from bulwark.store.uow import SqlUnitOfWorkFactory as UnitOfWorkFactory
from tests.conftest import TENANT, make_machine, seed


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'bulwark.db'}"
    upgrade_database(url)
    return url


def _actions(machine_ids: list[str], count: int, status: str, start: int) -> list[dict]:
    now = datetime(2026, 11, 1, tzinfo=UTC)
    return [
        {
            "id": f"00000000-0000-4000-8000-{start + n:012d}",
            "tenant_id": TENANT,
            "machine_id": machine_ids[n % len(machine_ids)],
            "type": ["Isolate", "Unisolate", "RunAntiVirusScan"][n % 3] if status != "Pending" else "Offboard",
            "requestor": "app",
            "requestor_comment": "stats",
            "status": status,
            "creation_date_time_utc": now - timedelta(seconds=start + n),
            "last_update_date_time_utc": now - timedelta(seconds=start + n),
            "error_h_result": 0,
            "request_source": "PublicApi",
            "commands": [],
        }
        for n in range(count)
    ]


def test_statistics_are_taken_when_the_data_moved(sqlite_url: str) -> None:
    engine = create_db_engine(sqlite_url, pool_size=1)
    uow = UnitOfWorkFactory(engine)
    try:
        seed(uow, [make_machine(i) for i in range(1, 401)])
        assert refresh_statistics(engine) is True
        with engine.connect() as conn:
            stats = dict(conn.exec_driver_sql("SELECT idx, stat FROM sqlite_stat1 WHERE tbl = 'machines'").all())
        assert stats["sqlite_autoindex_machines_1"].split()[0] == "400"
        # Unchanged data: nothing to do.
        assert refresh_statistics(engine) is False
        seed(uow, [make_machine(i) for i in range(401, 601)])
        assert refresh_statistics(engine) is True
        assert refresh_statistics(engine, force=True) is True
    finally:
        engine.dispose()


def test_a_rare_status_is_found_through_its_index(sqlite_url: str) -> None:
    engine = create_db_engine(sqlite_url, pool_size=1)
    try:
        with engine.connect() as conn:
            if "ENABLE_STAT4" not in {row[0] for row in conn.exec_driver_sql("PRAGMA compile_options")}:
                pytest.skip("this platform's SQLite has no STAT4 (no pysqlite3 wheel)")
        machine_ids = [m.id for m in (make_machine(i) for i in range(1, 201))]
        seed(UnitOfWorkFactory(engine), [make_machine(i) for i in range(1, 201)])
        with engine.begin() as conn:
            conn.execute(insert(machine_actions), _actions(machine_ids, 20_000, "Succeeded", 0))
            conn.execute(insert(machine_actions), _actions(machine_ids[:5], 5, "Pending", 50_000))
        refresh_statistics(engine)
        with engine.connect() as conn:
            plan = " | ".join(
                row[3]
                for row in conn.exec_driver_sql(
                    "EXPLAIN QUERY PLAN SELECT id FROM machine_actions WHERE tenant_id = ? AND status IN (?, ?) "
                    "ORDER BY creation_date_time_utc DESC, id DESC LIMIT 101",
                    (TENANT, "Pending", "InProgress"),
                )
            )
        # With value samples the planner knows Pending is rare: it seeks the status index instead
        # of walking 20,000 newest-first rows to find five.
        assert "ix_machine_actions_tenant_status" in plan, plan
    finally:
        engine.dispose()
