"""The unit of work on the database: one transaction with the repositories that work inside it.

Implements ``bulwark.service.ports.UnitOfWork``; the composition root builds the factory once."""

from __future__ import annotations

from contextlib import nullcontext
from types import TracebackType

from sqlalchemy import Connection, Engine

from bulwark.store.db import WRITE_OPTION, write_lock
from bulwark.store.identity import IdentityRepository, SigningKeyRepository
from bulwark.store.queries import ListQueries
from bulwark.store.repositories import (
    AuditRepository,
    DeviceGroupRepository,
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
        try:
            conn = self.engine.connect()
            if self.write:
                conn.execution_options(**{WRITE_OPTION: True})
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
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        assert self.conn is not None
        try:
            if self.conn.in_transaction():
                self.conn.rollback()
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
