"""The unit of work on the database: one transaction with the repositories that work inside it.

Implements ``bulwark.service.ports.UnitOfWork``; the composition root builds the factory once."""

from __future__ import annotations

import threading
from contextlib import nullcontext
from types import TracebackType
from typing import Any

from sqlalchemy import Connection, Engine

from bulwark.store.compiled import CompiledCache, direct_statements, driver_connection
from bulwark.store.control import ControlRepository
from bulwark.store.db import WRITE_OPTION, write_lock
from bulwark.store.identity import IdentityRepository, SigningKeyRepository
from bulwark.store.queries import ListQueries
from bulwark.store.repositories import (
    AuditRepository,
    DeviceGroupRepository,
    DirectActionReads,
    DirectMachineReads,
    DirectSensorReads,
    MachineActionRepository,
    MachineRepository,
    OnboardingPackageRepository,
    PackageSigningKeyRepository,
    SensorRepository,
    TenantRepository,
)
from bulwark.store.web import AuthorizationCodeRepository, ConsoleSessionRepository


class SqlUnitOfWork:
    """A unit of work on a SQLAlchemy engine; leaving without ``commit()`` rolls back."""

    def __init__(self, engine: Engine, *, write: bool = True) -> None:
        self.engine = engine
        self.write = write
        self.conn: Connection | None = None

    def __enter__(self) -> SqlUnitOfWork:
        self._lock = write_lock(self.engine) if self.write else nullcontext()
        self._lock.__enter__()
        self._driver = None
        try:
            conn = self.engine.connect()
            if self.write:
                conn.execution_options(**{WRITE_OPTION: True})
                conn.begin()
            elif direct_statements(self.engine.dialect) is not None:
                # A read on SQLite opens its transaction on the driver, as its statements run
                # there (store/compiled.py); one run through SQLAlchemy joins it.
                self._driver = driver_connection(conn)
                self._driver.execute("BEGIN")
            else:
                conn.begin()
        except BaseException:
            self._lock.__exit__(None, None, None)
            raise
        self.conn = conn
        self.tenants = TenantRepository(conn)
        self.device_groups = DeviceGroupRepository(conn)
        self.machines = MachineRepository(conn)
        self.actions = MachineActionRepository(conn)
        self.audit = AuditRepository(conn)
        self.sensors = SensorRepository(conn)
        self.onboarding_packages = OnboardingPackageRepository(conn)
        self.package_keys = PackageSigningKeyRepository(conn)
        self.lists = ListQueries(conn)
        self.identity = IdentityRepository(conn)
        self.signing_keys = SigningKeyRepository(conn)
        self.authorization_codes = AuthorizationCodeRepository(conn)
        self.console_sessions = ConsoleSessionRepository(conn)
        self.control = ControlRepository(conn)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        assert self.conn is not None
        try:
            if self.conn.in_transaction():
                self.conn.rollback()
            elif self._driver is not None and self._driver.in_transaction:
                self._driver.execute("ROLLBACK")
        finally:
            self.conn.close()
            self.conn = None
            self._lock.__exit__(None, None, None)

    def commit(self) -> None:
        """Make everything done in this unit of work durable."""
        assert self.conn is not None
        self.conn.commit()


class SqlUnitOfWorkFactory:
    """Makes units of work on one engine: ``uow_factory()`` to write, ``uow_factory(write=False)`` to read."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def __call__(self, *, write: bool = True) -> SqlUnitOfWork:
        return SqlUnitOfWork(self.engine, write=write)


class PointReadUnitOfWork:
    """Reads of single rows by key (an action, a machine, a sensor) on one driver connection, in one read transaction."""

    def __init__(self, direct: CompiledCache, engine: Engine, driver: Any) -> None:
        self._driver = driver
        self.actions = DirectActionReads(direct, engine.dialect, driver)
        self.machines = DirectMachineReads(direct, engine.dialect, driver)
        self.sensors = DirectSensorReads(direct, engine.dialect, driver)

    def __enter__(self) -> PointReadUnitOfWork:
        # One snapshot for the few statements of a read (a machine and its tags), as any unit of work has.
        self._driver.execute("BEGIN")
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._driver.execute("ROLLBACK")


class SqlitePointReads:
    """Units of work for reads by key on SQLite, each thread on a connection of its own, kept open.

    Point reads run inline on the event loop (``api.deps.point_read``): a primary-key read of a local
    file costs tens of microseconds, and taking a pooled connection, opening its transaction through
    SQLAlchemy and giving it back cost several times that. The connection is taken from the
    engine's pool once (with the pool's settings applied) and kept for this thread; under WAL a
    reader never blocks the writer and outside its short transaction holds nothing.
    """

    def __init__(self, engine: Engine) -> None:
        direct = direct_statements(engine.dialect)
        if direct is None:
            raise ValueError("point reads on the driver are for SQLite")
        self._direct = direct
        self._engine = engine
        self._local = threading.local()
        self._opened: list[Any] = []
        self._lock = threading.Lock()

    def __call__(self) -> PointReadUnitOfWork:
        driver = getattr(self._local, "driver", None)
        if driver is None:
            connection = self._engine.raw_connection()
            driver = connection.driver_connection
            # Out of the pool for good: this thread keeps it until close().
            connection.detach()
            with self._lock:
                self._opened.append(driver)
            self._local.driver = driver
        return PointReadUnitOfWork(self._direct, self._engine, driver)

    def close(self) -> None:
        """Close every thread's connection."""
        with self._lock:
            opened, self._opened = self._opened, []
            self._local = threading.local()
        for driver in opened:
            driver.close()
