"""The composition root: every entry point builds its parts here, from Settings, and nowhere else.

The server calls ``build_runtime`` (engine, unit-of-work factory, clock, authenticator, rate
limiter, notifier) and, once it starts, ``start_runtime``; commands call ``open_store`` for an
engine and a unit-of-work factory held for one command. Building anything here writes nothing:
what must be written at start (the first signing key) is an explicit step. Every entry point that
touches the data directory makes it private first (``prepare_data_dir``).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

from bulwark.clock import Clock, OffsetClock, SystemClock
from bulwark.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from bulwark.metrics import Metrics
    from bulwark.notifier import InProcessNotifier
    from bulwark.ratelimit import RateLimiter
    from bulwark.service.actions import SweepPolicy
    from bulwark.service.authentication import Authenticator
    from bulwark.service.control import ControlPlane
    from bulwark.service.ports import PointReads, UnitOfWorkFactory
    from bulwark.service.sensors import PollingSensors
    from bulwark.store.group_commit import GroupCommitter

# Operations of the sign-in limiter (see ``signin_limiter``).
SIGNIN_PER_USER = "signin.user"
SIGNIN_PER_SOURCE = "signin.source"

# A command does one thing at a time; the server's threads share a larger pool (the engine's default).
COMMAND_POOL_SIZE = 1


class DatabaseNotReady(RuntimeError):
    """A command that does not migrate found no database, or one at another schema revision."""


@dataclass
class Store:
    """What a command needs to use the database: the engine and units of work on it, and the clock."""

    settings: Settings
    engine: Engine
    uow: UnitOfWorkFactory
    clock: Clock


@dataclass
class Runtime:
    """Everything the server wires once per process, handed to routes and background tasks."""

    settings: Settings
    engine: Engine
    uow: UnitOfWorkFactory
    clock: Clock
    limiter: RateLimiter
    auth: Authenticator
    notifier: InProcessNotifier
    metrics: Metrics
    # Sign-in attempts at the authorization endpoint, per user name and per client address.
    signin_limiter: RateLimiter
    # The process's writer for offboards: requests queued meanwhile share one commit (store/group_commit.py).
    writer: GroupCommitter
    # Reads of one row by key, inline on the event loop: on SQLite a thread's own connection
    # (store.uow.SqlitePointReads); None elsewhere, where they take a unit of work in the threadpool.
    point_reads: Callable[[], PointReads] | None = None
    # The control plane of a test server; None (and no /_bulwark routes) unless turned on.
    control: ControlPlane | None = None
    # Set at shutdown so that long polls answer at once (``stop_long_polls``).
    stopping: threading.Event = field(default_factory=threading.Event)
    # Sensors by the credential of their long polls, remembered for BULWARK_AUTH_CACHE_SECONDS.
    polling_sensors: PollingSensors | None = None
    # The threads that build list pages of machines (``Settings.list_threads``), apart from the
    # threadpool: on SQLite one thread, since pages are CPU work and threads would only trade the GIL.
    lists: ThreadPoolExecutor | None = None


def build_engine(settings: Settings, *, pool_size: int | None = None) -> Engine:
    """The database engine the settings name (the only place an engine is made, migrations aside)."""
    from bulwark.store.db import create_db_engine

    url = settings.resolved_database_url()
    return create_db_engine(url) if pool_size is None else create_db_engine(url, pool_size=pool_size)


def _unit_of_work_factory(engine: Engine) -> UnitOfWorkFactory:
    from bulwark.store.uow import SqlUnitOfWorkFactory

    return SqlUnitOfWorkFactory(engine)


def _point_reads(engine: Engine) -> Callable[[], PointReads] | None:
    from bulwark.store.uow import SqlitePointReads

    return SqlitePointReads(engine) if engine.dialect.name == "sqlite" else None


def migrate_database(settings: Settings, revision: str = "head") -> None:
    """Apply migrations up to ``revision`` (the data directory is created first for SQLite), then
    bring the query planner's statistics up to date if the data moved since they were taken."""
    from bulwark.store.db import refresh_statistics, upgrade_database

    prepare_data_dir(settings)
    upgrade_database(settings.resolved_database_url(), revision)
    if revision == "head":
        engine = build_engine(settings, pool_size=1)
        try:
            refresh_statistics(engine)
        finally:
            engine.dispose()


def prepare_data_dir(settings: Settings) -> None:
    """Make files this process creates private (umask 077), and create or tighten the data directory."""
    from bulwark.datadir import PROCESS_UMASK, secure_data_dir

    os.umask(PROCESS_UMASK)
    secure_data_dir(settings.data_dir)


def _safe_url(settings: Settings) -> str:
    from sqlalchemy.engine import make_url

    return make_url(settings.resolved_database_url()).render_as_string(hide_password=True)


def _missing(settings: Settings) -> str:
    return f"no Bulwark database at {_safe_url(settings)}: run 'bulwark db upgrade' (or 'bulwark serve') first"


def _check_sqlite_file(settings: Settings) -> None:
    from sqlalchemy.engine import make_url

    url = make_url(settings.resolved_database_url())
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return
    from pathlib import Path

    # Connecting would create an empty file; say what is missing instead.
    if not Path(url.database).exists():
        raise DatabaseNotReady(_missing(settings))


def _check_schema(settings: Settings, engine: Engine) -> None:
    from sqlalchemy.exc import OperationalError

    from bulwark.store.db import schema_revisions

    try:
        current, head = schema_revisions(engine)
    except OperationalError as error:
        raise DatabaseNotReady(f"cannot open the database at {_safe_url(settings)}: {error.orig}") from None
    if current is None:
        raise DatabaseNotReady(_missing(settings))
    if current != head:
        raise DatabaseNotReady(
            f"the database at {_safe_url(settings)} is at schema revision {current}, this Bulwark needs {head}: "
            "run 'bulwark db upgrade'"
        )


@contextmanager
def open_store(
    settings: Settings | None = None, *, migrate: bool, must_exist: bool = True, clock: Clock | None = None
) -> Iterator[Store]:
    """The database for one command, closed when the command ends.

    ``migrate=True`` applies migrations first (commands that create things on a fresh server);
    otherwise nothing is changed, and with ``must_exist`` a missing or outdated database raises
    ``DatabaseNotReady`` instead of being created or half-read.
    """
    settings = settings or Settings()
    if migrate:
        migrate_database(settings)
    else:
        prepare_data_dir(settings)
    if not migrate and must_exist:
        _check_sqlite_file(settings)
    engine = build_engine(settings, pool_size=COMMAND_POOL_SIZE)
    try:
        if must_exist and not migrate:
            _check_schema(settings, engine)
        yield Store(settings=settings, engine=engine, uow=_unit_of_work_factory(engine), clock=clock or SystemClock())
    finally:
        engine.dispose()


def database_revisions(engine: Engine) -> tuple[str | None, str | None]:
    """The database's migration revision (None when it has none) and the newest this code knows.

    Raises when the database does not answer.
    """
    from bulwark.store.db import schema_revisions

    return schema_revisions(engine)


def sweep_policy(settings: Settings) -> SweepPolicy:
    """The sweeper's limits, from the settings."""
    from bulwark.service.actions import SweepPolicy

    return SweepPolicy(
        pickup_timeout=timedelta(seconds=settings.action_pickup_timeout_seconds),
        in_progress_timeout=timedelta(seconds=settings.action_in_progress_timeout_seconds),
        inactive_after_offboard=timedelta(days=settings.inactive_after_offboard_days),
    )


def build_runtime(settings: Settings, clock: Clock | None = None) -> Runtime:
    """The server's parts for one process. Writes nothing: call ``start_runtime`` when serving starts."""
    from bulwark.metrics import Metrics
    from bulwark.notifier import create_notifier
    from bulwark.ratelimit import UNAUTHENTICATED_OPERATION, RateLimitPolicy, create_rate_limiter
    from bulwark.service.authentication import Authenticator
    from bulwark.service.control import ControlPlane
    from bulwark.service.sensors import PollingSensors
    from bulwark.store.group_commit import GroupCommitter

    clock = clock or SystemClock()
    # A test server's control API moves the fleet's clock (timestamps, timeouts, the sweeper);
    # tokens and rate limits keep the real one, so callers' tokens stay valid.
    control = ControlPlane(OffsetClock(clock), settings.control_request_log_size) if settings.control_api_enabled else None
    engine = build_engine(settings)
    limiter = create_rate_limiter(
        settings.redis_url,
        RateLimitPolicy.parse(
            settings.rate_limit, {UNAUTHENTICATED_OPERATION: settings.unauthenticated_rate_limit, **settings.rate_limit_overrides}
        ),
        fail_mode=settings.rate_limit_fail_mode,
        enabled=settings.rate_limit_enabled,
        key_prefix=settings.rate_limit_key_prefix,
        clock=lambda: clock.now().timestamp(),
    )
    signin_limiter = create_rate_limiter(
        settings.redis_url,
        RateLimitPolicy.parse(
            "off",
            {
                SIGNIN_PER_USER: settings.signin_rate_limit_per_user,
                SIGNIN_PER_SOURCE: settings.signin_rate_limit_per_source,
            },
        ),
        fail_mode=settings.rate_limit_fail_mode,
        enabled=settings.rate_limit_enabled,
        key_prefix=f"{settings.rate_limit_key_prefix}:signin",
        clock=lambda: clock.now().timestamp(),
    )
    uow = _unit_of_work_factory(engine)
    notifier = create_notifier(settings.notifier, settings.resolved_database_url(), settings.redis_url, engine)
    return Runtime(
        settings=settings,
        engine=engine,
        uow=uow,
        clock=control.clock if control is not None else clock,
        limiter=limiter,
        auth=Authenticator(settings, uow, clock),
        notifier=notifier,
        metrics=Metrics.for_process(),
        signin_limiter=signin_limiter,
        writer=GroupCommitter(engine, notifier=notifier),
        point_reads=_point_reads(engine),
        control=control,
        lists=ThreadPoolExecutor(_list_threads(settings, engine), thread_name_prefix="bulwark-lists"),
        polling_sensors=PollingSensors(control.clock if control is not None else clock, settings.auth_cache_seconds),
    )


def _list_threads(settings: Settings, engine: Engine) -> int:
    if settings.list_threads is not None:
        return settings.list_threads
    return 1 if engine.dialect.name == "sqlite" else settings.threadpool_size


def start_runtime(runtime: Runtime) -> None:
    """What the server writes before it serves (safe when processes race): the first signing key,
    the issuer, and the web console's client registration with this server's redirect URI."""
    from bulwark.service.identity import ensure_signing_key
    from bulwark.service.signin import CONSOLE_CALLBACK_PATH, ensure_console_client

    if runtime.settings.signing_key_file is None:
        ensure_signing_key(runtime.uow(), runtime.clock)
    settings = runtime.settings
    runtime.auth.use_issuer_base_url(settle_issuer(settings, runtime.uow))
    redirect_uri = settings.issuer_base_url() + CONSOLE_CALLBACK_PATH
    if ensure_console_client(runtime.uow, runtime.clock, settings.default_tenant_id, redirect_uri) is None:
        logging.getLogger("bulwark.console").info(
            "tenant %s does not exist (yet): nobody can sign in to the console", settings.default_tenant_id
        )


def settle_issuer(settings: Settings, uow: UnitOfWorkFactory) -> str:
    """The issuer base recorded with the data: BULWARK_PUBLIC_BASE_URL when set, else the first server's base."""
    from bulwark.service.identity import settle_issuer_base_url

    return settle_issuer_base_url(uow(), settings.public_base_url, settings.issuer_base_url())


def stop_long_polls(runtime: Runtime) -> None:
    """The server is stopping: every long poll of this process answers now, and any new one at once.

    Runs in the event loop's thread. Only this process's waiters are woken: other servers sharing
    the database keep their sensors.
    """
    runtime.stopping.set()
    runtime.notifier.wake_local_waiters()


def close_runtime(runtime: Runtime) -> None:
    """Release what ``build_runtime`` opened."""
    runtime.writer.stop()
    if runtime.lists is not None:
        runtime.lists.shutdown(wait=True, cancel_futures=True)
    close_point_reads = getattr(runtime.point_reads, "close", None)
    if close_point_reads is not None:
        close_point_reads()
    runtime.limiter.close()
    runtime.signin_limiter.close()
    runtime.auth.close()
    runtime.engine.dispose()


def reset_epoch_reader(settings: Settings) -> Callable[[], int]:
    """For the demo fleet of a test server: a function reading the control plane's reset epoch.

    Holds its own small engine for as long as the server runs (the fleet polls it).
    """
    from bulwark.service.control import clock_state

    uow = _unit_of_work_factory(build_engine(settings, pool_size=COMMAND_POOL_SIZE))
    return lambda: clock_state(uow(write=False))[1]
