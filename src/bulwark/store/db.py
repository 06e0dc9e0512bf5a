"""Engines for SQLite (one host) and PostgreSQL (many), and running migrations."""

from __future__ import annotations

import threading
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any
from weakref import WeakKeyDictionary

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, text
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


def _sqlite_module() -> Any:
    """The SQLite driver: pysqlite3 (a current SQLite built with STAT4 value statistics) where its
    wheel exists, else Python's own ``sqlite3``. Without STAT4 the planner knows only averages and
    cannot tell a rare status or a narrow time range from a common one."""
    try:
        import pysqlite3.dbapi2 as module
    except ImportError:
        import sqlite3 as module
    return module


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
            module=_sqlite_module(),
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
            if conn.connection.driver_connection.in_transaction:
                # A read unit of work began it on the driver (store/uow.py): SQLAlchemy joins it.
                return
            immediate = conn.get_execution_options().get(WRITE_OPTION, False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine
    return create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True, hide_parameters=True)


# Tables whose statistics steer the list queries' plans, and how far their row counts may move
# before the statistics are taken again.
_PLANNED_TABLES = ("machines", "machine_actions", "machine_tags", "audit_events")
STALE_FRACTION = 0.2


def _sqlite_row_counts(conn: Connection) -> tuple[dict[str, int], dict[str, int]]:
    """(row counts now, row counts when ANALYZE last ran) of the planned tables."""
    now = {t: int(conn.exec_driver_sql(f"SELECT count(*) FROM {t}").scalar_one()) for t in _PLANNED_TABLES}
    analyzed: dict[str, int] = {}
    has_stats = conn.exec_driver_sql("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'").first()
    if has_stats:
        for table, stat in conn.exec_driver_sql("SELECT tbl, stat FROM sqlite_stat1"):
            if table in now and stat:
                analyzed[table] = max(analyzed.get(table, 0), int(str(stat).split()[0]))
    return now, analyzed


def refresh_statistics(engine: Engine, *, force: bool = False) -> bool:
    """Take the planner's statistics again if a table grew or shrank by a fifth since they were
    taken (or ``force``); return whether they were.

    SQLite's planner knows only what ``ANALYZE`` recorded (``sqlite_stat1``, and the per-value
    samples of ``sqlite_stat4`` that tell a rare status or a narrow time range from a common one);
    without them it guesses, and at a million actions a guess costs hundreds of milliseconds per
    list query. A full ANALYZE reads every index (seconds at a million rows, readers unaffected),
    so it runs when the data has moved enough to matter: after migrations, after seeding and from
    the sweeper. PostgreSQL's autovacuum keeps its own statistics; this runs ANALYZE there only
    when forced (after seeding), since its statistics views answer a different question.
    """
    if engine.dialect.name == "postgresql":
        if force:
            with engine.connect() as conn:
                conn.execute(text("ANALYZE"))
                conn.commit()
        return force
    if engine.dialect.name != "sqlite":
        return False
    with engine.connect() as conn:
        now, analyzed = _sqlite_row_counts(conn)
    stale = force or any(
        count >= 100 and abs(count - analyzed.get(table, 0)) > STALE_FRACTION * max(analyzed.get(table, 0), 1)
        for table, count in now.items()
    )
    if stale:
        # A write transaction of its own, queued like any other writer.
        with write_lock(engine), engine.connect() as conn:
            conn.execution_options(**{WRITE_OPTION: True})
            conn.exec_driver_sql("PRAGMA analysis_limit=0")
            conn.exec_driver_sql("ANALYZE")
            conn.commit()
    return stale


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
