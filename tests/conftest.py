"""Shared fixtures: real databases (SQLite and PostgreSQL), the app, and seeded machines."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from bulwark.clock import FrozenClock
from bulwark.domain.machines import Machine
from bulwark.settings import Settings
from bulwark.store.db import create_db_engine, upgrade_database
from bulwark.store.tables import metadata
from bulwark.store.uow import SqlUnitOfWorkFactory

POSTGRES_URL = os.environ.get("BULWARK_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("BULWARK_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
# Under CI a missing PostgreSQL or Redis is a failure, not a skip.
REQUIRE_SERVICES = os.environ.get("BULWARK_REQUIRE_SERVICES", "") not in ("", "0", "false")
TENANT = "6f1c4d1e-2b43-4c7a-9d55-0b6a3c1e8f10"


def unavailable(reason: str) -> None:
    """Skip with ``reason``, or fail when the run requires every service."""
    if REQUIRE_SERVICES:
        pytest.fail(f"required service unavailable: {reason}")
    pytest.skip(reason)


def _postgres_reachable() -> str | None:
    try:
        engine = create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
        return None
    except Exception as exc:
        return (
            f"PostgreSQL at {make_url(POSTGRES_URL).render_as_string(hide_password=True)} unreachable: {exc.__class__.__name__}"
        )


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this test run, dropped at the end."""
    problem = _postgres_reachable()
    if problem:
        unavailable(problem)
    name = f"bulwark_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    upgrade_database(url)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The test Redis, checked reachable (skipped, or failed under CI, when it is not)."""
    import redis

    try:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
        client.ping()
        client.close()
    except redis.RedisError as exc:
        unavailable(f"Redis at {REDIS_URL} unreachable: {exc.__class__.__name__}")
    return REDIS_URL


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file that each test copies (migrating once keeps the suite fast)."""
    path = tmp_path_factory.mktemp("template") / "bulwark.db"
    upgrade_database(f"sqlite:///{path}")
    return path


@pytest.fixture
def sqlite_engine(sqlite_template: Path, tmp_path: Path) -> Iterator[Engine]:
    """An engine on a fresh, migrated SQLite file of this test's own (a copy of the template)."""
    path = tmp_path / "bulwark.db"
    path.write_bytes(sqlite_template.read_bytes())
    upgrade_database(f"sqlite:///{path}")
    engine = create_db_engine(f"sqlite:///{path}", pool_size=2)
    yield engine
    engine.dispose()


def _truncate(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        names = ", ".join(f'"{t.name}"' for t in reversed(metadata.sorted_tables))
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database: a SQLite file, or the run's PostgreSQL database emptied."""
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "bulwark.db"
        path.write_bytes(template.read_bytes())
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("postgres_database")
    _truncate(url)
    return url


@pytest.fixture
def clock() -> FrozenClock:
    """A clock that moves only when a test says so."""
    return FrozenClock(datetime(2026, 3, 1, 9, 30, 0, 123456, tzinfo=UTC))


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """Settings pointing at the test database, independent of the environment."""
    # TestClient addresses the app as "testserver".
    return Settings(data_dir=tmp_path / "data", database_url=database_url, default_tenant_id=TENANT, allowed_hosts=["testserver"])


@pytest.fixture
def uow_factory(database_url: str) -> Iterator[SqlUnitOfWorkFactory]:
    """Units of work on the test database."""
    engine = create_db_engine(database_url, pool_size=2)
    yield SqlUnitOfWorkFactory(engine)
    engine.dispose()


def make_machine(index: int, **overrides: object) -> Machine:
    """A supported Windows 11 machine unless ``overrides`` say otherwise."""
    now = datetime(2026, 2, 1, tzinfo=UTC)
    values: dict[str, object] = {
        "id": f"{index:040x}",
        "tenant_id": TENANT,
        "computer_dns_name": f"host-{index}.contoso.com",
        "first_seen": now,
        "last_seen": now,
        "os_platform": "Windows11",
        "version": "23H2",
        "os_build": 22631,
        "agent_version": "10.8760.22631.1000",
        "last_ip_address": f"10.0.0.{index % 250 + 1}",
    }
    values.update(overrides)
    return Machine(**values)  # type: ignore[arg-type]


def seed(
    uow_factory: SqlUnitOfWorkFactory, machines: list[Machine], *, tenant: str = TENANT, groups: list[str] = ()
) -> list[int]:
    """Create the tenant (if needed), device groups and machines; return the group ids."""
    with uow_factory() as uow:
        if not uow.tenants.exists(tenant):
            uow.tenants.add(tenant, "Contoso", datetime(2026, 1, 1, tzinfo=UTC))
        group_ids = [uow.device_groups.add(tenant, g) for g in groups]
        uow.machines.add_many(machines)
        uow.commit()
    return group_ids
