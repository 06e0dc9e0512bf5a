"""``/healthz`` and ``/readyz``: unauthenticated, cheap, and saying only what an operator needs."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bulwark import __version__
from bulwark.api.app import create_app
from bulwark.api.health import DATABASE_NOT_MIGRATED, DATABASE_UNREACHABLE, REDIS_UNREACHABLE
from bulwark.settings import Settings
from bulwark.store.db import downgrade_database, upgrade_database
from tests.conftest import POSTGRES_URL, TENANT
from tests.support import free_port

ANONYMOUS = {"Authorization": ""}


def _ready(client: TestClient) -> tuple[int, dict]:
    response = client.get("/readyz", headers=ANONYMOUS)
    assert response.headers["cache-control"] == "no-store"
    return response.status_code, response.json()


def test_ready_on_a_migrated_database(settings: Settings) -> None:
    with TestClient(create_app(settings)) as client:
        assert _ready(client) == (200, {"status": "ready"})
        health = client.get("/healthz", headers=ANONYMOUS)
        assert health.json() == {"status": "ok", "version": __version__}


def test_not_ready_until_migrated_to_head_and_says_so(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'bulwark.db'}"
    upgrade_database(url)
    with TestClient(
        create_app(Settings(data_dir=tmp_path, database_url=url, default_tenant_id=TENANT, allowed_hosts=["testserver"]))
    ) as client:
        assert _ready(client)[0] == 200
        downgrade_database(url, "-1")
        time.sleep(1.1)  # the last answer is reused for a second
        status, body = _ready(client)
        assert (status, body) == (503, {"status": "unavailable", "reason": DATABASE_NOT_MIGRATED})
        upgrade_database(url)
        time.sleep(1.1)
        assert _ready(client)[0] == 200


@pytest.mark.postgres
def test_not_ready_when_the_database_is_gone(postgres_database: str, tmp_path: Path) -> None:
    name = f"bulwark_ready_{uuid.uuid4().hex[:8]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade_database(url)
        settings = Settings(
            data_dir=tmp_path, database_url=url, default_tenant_id=TENANT, notifier="memory", allowed_hosts=["testserver"]
        )
        with TestClient(create_app(settings)) as client:
            assert _ready(client)[0] == 200
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
            time.sleep(1.1)
            status, body = _ready(client)
            # The reason names the dependency, never the driver's message, host or database name.
            assert (status, body) == (503, {"status": "unavailable", "reason": DATABASE_UNREACHABLE})
            assert name not in str(body)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.mark.redis
def test_redis_is_checked_when_configured(settings: Settings, redis_url: str) -> None:
    reachable = settings.model_copy(update={"redis_url": redis_url, "rate_limit_key_prefix": f"t:{uuid.uuid4().hex}"})
    with TestClient(create_app(reachable)) as client:
        assert _ready(client)[0] == 200
    unreachable = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0", "notifier": "memory"})
    with TestClient(create_app(unreachable)) as client:
        assert _ready(client) == (503, {"status": "unavailable", "reason": REDIS_UNREACHABLE})
        # Liveness is not readiness: the process still answers.
        assert client.get("/healthz", headers=ANONYMOUS).status_code == 200


def test_many_readiness_calls_share_one_check(settings: Settings) -> None:
    app = create_app(settings)
    with TestClient(app) as client:
        engine = app.state.runtime.engine
        from sqlalchemy import event

        checks: list[str] = []
        event.listen(
            engine,
            "before_cursor_execute",
            lambda _c, _cur, sql, *_: (
                checks.append(sql) if "alembic_version" in sql and sql.lstrip().upper().startswith("SELECT") else None
            ),
        )
        started = time.monotonic()
        for _ in range(50):
            assert _ready(client)[0] == 200
        elapsed = time.monotonic() - started
        # One check per second at most, however many calls: an unauthenticated caller cannot load the database.
        assert 1 <= len(checks) <= int(elapsed) + 1, (len(checks), elapsed)
