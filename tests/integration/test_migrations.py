"""Migrations: they go all the way down and up again, and end where the table definitions say."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from bulwark.store.db import downgrade_database, upgrade_database
from bulwark.store.tables import metadata
from tests.conftest import POSTGRES_URL

# Autogenerate cannot reflect expression indexes and says so; the comparison below leaves them out.
pytestmark = [
    pytest.mark.filterwarnings("ignore:.*expression-based index.*"),
]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    request.getfixturevalue("postgres_database")  # skips (or fails under CI) without PostgreSQL
    name = f"bulwark_migrate_{tmp_path.name[-8:].replace('-', '_').lower()}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_downgrade_to_base_and_upgrade_again(empty_database: str) -> None:
    upgrade_database(empty_database)
    downgrade_database(empty_database, "base")
    engine = create_engine(empty_database)
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    engine.dispose()
    upgrade_database(empty_database)
    engine = create_engine(empty_database)
    assert {t.name for t in metadata.sorted_tables} <= set(inspect(engine).get_table_names())
    engine.dispose()


def test_migrated_schema_matches_the_table_definitions(empty_database: str) -> None:
    upgrade_database(empty_database)
    engine = create_engine(empty_database)
    with engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), metadata)
    engine.dispose()
    # Expression indexes cannot be reflected and compared; everything else must match exactly.
    relevant = [
        d for d in differences if not (d[0] in ("add_index", "remove_index") and d[1].name == "ix_machines_tenant_dns_folded")
    ]
    assert relevant == []
