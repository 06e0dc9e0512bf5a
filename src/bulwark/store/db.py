"""Engines for SQLite (one host) and PostgreSQL (many), and running migrations."""

from __future__ import annotations

import threading
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from weakref import WeakKeyDictionary

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

from bulwark.datadir import create_private_file

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
WRITE_OPTION = "bulwark_write"

# SQLite allows one writer at a time. Threads of one process queue on this lock, which wakes the
# next writer the moment the last one commits; without it they would poll SQLite's busy handler,
# which sleeps in growing steps and turns a queue of writers into seconds of latency. Writers in
# other processes still meet at SQLite's own lock (busy_timeout).
_WRITE_LOCKS: WeakKeyDictionary[Engine, threading.RLock] = WeakKeyDictionary()


def write_lock(engine: Engine) -> AbstractContextManager[object]:
    """The lock a write transaction on ``engine`` holds: one per SQLite engine, none elsewhere."""
    return _WRITE_LOCKS.get(engine) or nullcontext()


def _prepare_sqlite_file(url: str) -> None:
    """Create a SQLite database file 0600 in a 0700 directory before SQLite creates it 0644.

    SQLite gives the WAL and SHM files the database file's mode, so they are private too.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        create_private_file(Path(parsed.database))


def create_db_engine(url: str, *, pool_size: int = 20) -> Engine:
    """Create the engine for ``url``, tuned for concurrent use by the server's threads.

    SQLite gets WAL (readers never block the writer), a generous busy timeout, foreign keys, and
    ``BEGIN IMMEDIATE`` for write transactions so that two writers queue instead of failing
    when one upgrades its read lock.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        _prepare_sqlite_file(url)
        engine = create_engine(
            url,
            # Errors and logs never carry parameter values (comments, secrets' digests, caller text).
            hide_parameters=True,
            connect_args={"timeout": 30, "check_same_thread": False},
            pool_size=pool_size,
            max_overflow=pool_size,
        )

        @event.listens_for(engine, "connect")
        def _configure(dbapi_conn, _record) -> None:
            # Take transaction control from the driver so that BEGIN is ours to write.
            dbapi_conn.isolation_level = None
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            # FULL: a commit is on disk before it is acknowledged, even across a power loss.
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        _WRITE_LOCKS[engine] = threading.RLock()

        @event.listens_for(engine, "begin")
        def _begin(conn) -> None:
            immediate = conn.get_execution_options().get(WRITE_OPTION, False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine
    return create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True, hide_parameters=True)


def alembic_config(url: str) -> Config:
    """An Alembic configuration pointing at Bulwark's migrations and ``url``."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade_database(url: str, revision: str = "head") -> None:
    """Apply migrations up to ``revision`` (safe to run on every start)."""
    _prepare_sqlite_file(url)
    command.upgrade(alembic_config(url), revision)


def downgrade_database(url: str, revision: str) -> None:
    """Revert migrations down to ``revision``."""
    command.downgrade(alembic_config(url), revision)


def schema_revisions(engine: Engine) -> tuple[str | None, str | None]:
    """The database's migration revision (None when it has none) and the newest this code knows."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config(engine.url.render_as_string(hide_password=False))).get_current_head()
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    return current, head
