"""Group commit: one writer thread per process runs queued write use cases in one transaction.

Every write a request makes must be durable before it is answered, and on SQLite that is one
fsync per commit: with one transaction per request the disk, not the CPU, sets the pace. The
``GroupCommitter`` keeps the guarantee and shares the fsync. Requests queue a use case; the
writer thread takes everything queued, opens one transaction, runs each use case inside its own
SAVEPOINT (so one that fails, such as a duplicate offboard refused by the one-active-action
index, is rolled back alone and the others stand), commits once, and only then hands each request
its own outcome. If the commit fails, every request of the batch gets the error: nothing is
acknowledged that is not on disk.

The use cases are the same plain functions as elsewhere: they receive a unit of work whose
``with`` opens a savepoint and whose ``commit()`` releases it; the writer commits the batch.
Waiting requests are coroutines on the event loop, so this also takes the write off the
threadpool: the loop hands work to one thread that never competes with others for the write lock.

A use case whose every refusal comes before it writes, and whose database refusals are no errors
in the transaction (an offboard: ``INSERT ... ON CONFLICT DO NOTHING``), may run without a
savepoint (``savepoint=False``): on PostgreSQL each savepoint and its release are a network round
trip. Should such a member fail any other way (a database error, which on PostgreSQL spoils the
whole transaction), the batch is rolled back and run again with every member in its own savepoint,
so the others still stand; nothing of the first attempt was acknowledged.

On PostgreSQL a batch's statements one after the other (each a round trip, and a turn of the writer
thread at the GIL) set its pace, so offboards share them (``run(..., prepare=...,
defer_refusals=True)``, ``BatchStatements``): the machines every member announces are read by one
statement when the first member needs one, and the members' actions and audit events are written
by one statement once every member has run. A batch of offboards then runs the same four
statements (machines, inserts, wake-ups, commit) whatever its size; an action the
one-active-action index refused becomes its member's refusal once that statement has run.
Any other member runs as usual between them, and unless it says it changes no machine
(``changes_machines=False``) the machines read ahead are read anew after it. On SQLite, where a
statement costs no round trip, the batch shares the reads only.

Sensors are woken once their action is committed. With PostgreSQL's LISTEN/NOTIFY the wake-ups
are sent inside the batch's transaction (one statement for the batch): PostgreSQL delivers them
when it commits and drops them if it rolls back.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError

from bulwark.domain.errors import MdeError
from bulwark.notifier import Notifier, PostgresNotifier
from bulwark.store.compiled import BatchStatements, direct_statements, driver_connection
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

log = logging.getLogger("bulwark.store")

T = TypeVar("T")
# Enough to share one fsync among every request a busy process has in flight, small enough that
# one batch's transaction stays short.
MAX_BATCH = 256


class _Repositories:
    """Every repository on one connection, built once per batch and shared by its members."""

    def __init__(self, conn: Connection, shared: BatchStatements | None = None) -> None:
        self.tenants = TenantRepository(conn)
        self.device_groups = DeviceGroupRepository(conn)
        self.machines = MachineRepository(conn, shared)
        self.actions = MachineActionRepository(conn, shared)
        self.audit = AuditRepository(conn)
        self.sensors = SensorRepository(conn)
        self.onboarding_packages = OnboardingPackageRepository(conn)
        self.package_keys = PackageSigningKeyRepository(conn)
        self.lists = ListQueries(conn)
        self.identity = IdentityRepository(conn)
        self.signing_keys = SigningKeyRepository(conn)


_SAVEPOINT = "SAVEPOINT bulwark_member"
_RELEASE = "RELEASE SAVEPOINT bulwark_member"
_ROLLBACK = "ROLLBACK TO SAVEPOINT bulwark_member"


class BatchMemberUnitOfWork:
    """One use case's share of a batch: ``with`` opens a savepoint, ``commit()`` releases it.

    Leaving without ``commit()`` rolls back to the savepoint, undoing this use case's writes and
    nothing else. The batch's writer makes the released work durable with one commit. Members run
    one after the other on the writer's connection, so one fixed savepoint name serves them all,
    sent as plain SQL (SQLite and PostgreSQL spell it alike) rather than compiled per member.
    """

    def __init__(self, conn: Connection, repositories: _Repositories, *, savepoint: bool = True) -> None:
        self.conn = conn
        # On SQLite the savepoints go straight to the driver, like the use cases' statements.
        self._driver = driver_connection(conn) if direct_statements(conn.dialect) is not None else None
        # Without one (``GroupCommitter.run(..., savepoint=False)``) the use case itself guarantees
        # that it fails only before writing, leaving the transaction usable.
        self._savepoint = savepoint
        self._open = False
        self.tenants = repositories.tenants
        self.device_groups = repositories.device_groups
        self.machines = repositories.machines
        self.actions = repositories.actions
        self.audit = repositories.audit
        self.sensors = repositories.sensors
        self.onboarding_packages = repositories.onboarding_packages
        self.package_keys = repositories.package_keys
        self.lists = repositories.lists
        self.identity = repositories.identity
        self.signing_keys = repositories.signing_keys

    def _sql(self, statement: str) -> None:
        if self._driver is not None:
            self._driver.execute(statement)
        else:
            self.conn.exec_driver_sql(statement)

    def __enter__(self) -> BatchMemberUnitOfWork:
        if self._savepoint:
            self._sql(_SAVEPOINT)
        self._open = True
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._open:
            self._open = False
            if self._savepoint:
                self._sql(_ROLLBACK)
                self._sql(_RELEASE)

    def commit(self) -> None:
        """Keep this use case's writes in the batch (durable once the batch commits)."""
        assert self._open
        if self._savepoint:
            self._sql(_RELEASE)
        self._open = False


@dataclass
class _Job:
    work: Callable[[BatchMemberUnitOfWork], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    after_commit: Callable[[Any], None] | None = None
    wake: Callable[[Any], str] | None = None
    savepoint: bool = True
    prepare: Callable[[BatchMemberUnitOfWork], None] | None = None
    defer_refusals: bool = False
    changes_machines: bool = True
    outcome: tuple[bool, Any] = field(default=(False, None))


class _SpoiledBatch(Exception):
    """A member without a savepoint failed otherwise than by refusing before it wrote."""


def _transaction_usable(conn: Connection) -> bool:
    """Whether the open transaction can go on (a failed statement spoils it on PostgreSQL)."""
    driver = driver_connection(conn)
    if conn.dialect.name == "postgresql":
        from psycopg.pq import TransactionStatus

        return bool(driver.info.transaction_status == TransactionStatus.INTRANS)
    return bool(driver.in_transaction)


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    # Runs on the event loop; the request may have gone away (client disconnected) meanwhile.
    if future.done():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


def _settle_all(outcomes: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for future, ok, value in outcomes:
        _settle(future, ok, value)


_STOP = object()


class GroupCommitter:
    """This process's writer thread for ``engine``; ``await run(work)`` returns work's own outcome."""

    def __init__(self, engine: Engine, *, max_batch: int = MAX_BATCH, notifier: Notifier | None = None) -> None:
        self.engine = engine
        self.max_batch = max_batch
        # Who wakes sensors (``run(..., wake=...)``); PostgreSQL's NOTIFY is sent inside the batch.
        self.notifier = notifier
        self._notify_within = isinstance(notifier, PostgresNotifier) and engine.dialect.name == "postgresql"
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        # The connection the writer thread keeps between batches (``_connection``).
        self._held: Connection | None = None
        # Whether the batch running has asked for its commit (``_run_batch`` retries only before).
        self._committing = False
        # How many batches and members were committed (for benchmarks and tests).
        self.batches = 0
        self.members = 0

    async def run(
        self,
        work: Callable[[BatchMemberUnitOfWork], T],
        *,
        after_commit: Callable[[T], None] | None = None,
        wake: Callable[[T], str] | None = None,
        savepoint: bool = True,
        prepare: Callable[[BatchMemberUnitOfWork], None] | None = None,
        defer_refusals: bool = False,
        changes_machines: bool = True,
    ) -> T:
        """Run ``work`` in the next batch; return its result once the batch is durable, or raise its error.

        ``after_commit`` runs on the writer thread after the commit, for a successful ``work``
        only; its failures are logged, never reported to the caller. ``wake`` names, from a
        successful ``work``'s result, the key the notifier publishes once it is committed.
        ``savepoint=False`` runs ``work`` without a savepoint of its own: only for a use case that
        refuses (raises an ``MdeError``) before it writes and whose statements fail only
        unexpectedly; any other failure has the batch run again with a savepoint for every member.

        Two more promises let a batch's offboards share statements. ``prepare`` announces the reads
        ``work`` makes (``uow.machines.read_ahead``): the first member to read reads every member's
        machine with one statement. ``defer_refusals`` (with ``savepoint=False``) says ``work``'s
        writes come last and their refusal is not caught (``add_with_event``): on PostgreSQL they
        are written with the other members' by one statement and a refusal becomes this
        ``work``'s outcome, its return value dropped, once the batch has its answers.
        ``changes_machines=False`` says ``work`` changes no machine, so that the machines the batch
        read ahead still hold after it (any other member has the members after it read theirs anew).
        """
        if defer_refusals and savepoint:
            raise ValueError("defer_refusals needs savepoint=False")
        self._ensure_started()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Job(work, loop, future, after_commit, wake, savepoint, prepare, defer_refusals, changes_machines))
        return await future

    def stop(self, timeout: float = 10) -> None:
        """Finish what is queued and end the writer thread."""
        thread = self._thread
        if thread is None:
            return
        self._queue.put(_STOP)
        thread.join(timeout)
        self._thread = None
        held, self._held = self._held, None
        if held is not None and not thread.is_alive():
            held.close()

    def _ensure_started(self) -> None:
        if self._thread is not None:
            return
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._writer, name="bulwark-group-commit", daemon=True)
                self._thread.start()

    def _writer(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch: list[_Job] = [first]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)
            self._run_batch(batch)
            if stop:
                return

    def _connection(self) -> Connection:
        """The connection for the next batch: the writer keeps one for as long as it runs.

        On SQLite, because SQLite drops a connection's page cache whenever another connection
        changed the file: a pooled connection taken per batch would read the tables' pages again
        on every batch. On PostgreSQL, because the pool checks a connection is alive as it hands it
        out, a round trip per batch; a kept connection found dead before its batch commits is
        replaced and the batch run again (``_run_batch``).
        """
        if self._held is None:
            self._held = self.engine.connect()
            self._held.execution_options(**{WRITE_OPTION: True})
        return self._held

    def _release(self, conn: Connection, failed: bool) -> None:
        if conn is not self._held:
            conn.close()
        elif failed:
            # Whatever went wrong, the next batch starts on a fresh connection.
            self._held = None
            conn.close()

    def _run_batch(self, batch: list[_Job]) -> None:
        conn: Connection | None = None
        failed = True
        try:
            with write_lock(self.engine):
                for last_try in (False, True):
                    conn = self._connection()
                    conn.execution_options(**{WRITE_OPTION: True})
                    self._committing = False
                    try:
                        try:
                            self._run_members(conn, batch, savepoints=False)
                        except _SpoiledBatch:
                            # Rolled back, nothing acknowledged: again, with every member in its own savepoint.
                            log.debug("a member without a savepoint failed; the batch of %d runs again", len(batch))
                            self._committing = False
                            self._run_members(conn, batch, savepoints=True)
                        break
                    except DBAPIError as error:
                        if last_try or self._committing or not (error.connection_invalidated or conn.invalidated):
                            raise
                    # The kept connection was lost before the batch asked for its commit, so nothing
                    # of the batch can be durable: it runs again on a new connection.
                    log.warning("the writer's database connection was lost; the batch of %d runs again", len(batch))
                    self._release(conn, failed=True)
                    conn = None
                # Committed: every member that succeeded is durable.
            failed = False
            self.batches += 1
            self.members += len(batch)
        except Exception as error:
            log.exception("group commit of %d writes failed; none is acknowledged", len(batch))
            for job in batch:
                job.outcome = (False, error)
        finally:
            if conn is not None:
                self._release(conn, failed)
        # One wake-up per event loop for the whole batch, not one per request.
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
        for job in batch:
            by_loop.setdefault(job.loop, []).append((job.future, *job.outcome))
        for loop, outcomes in by_loop.items():
            loop.call_soon_threadsafe(_settle_all, outcomes)
        for job in batch:
            ok, value = job.outcome
            if not ok:
                continue
            try:
                if job.wake is not None and self.notifier is not None and not self._notify_within:
                    self.notifier.publish(job.wake(value))
                if job.after_commit is not None:
                    job.after_commit(value)
            except Exception:
                log.exception("after-commit step failed")

    def _run_members(self, conn: Connection, batch: list[_Job], *, savepoints: bool) -> None:
        """Run the batch's members in one transaction and commit it; each member's outcome in ``job.outcome``.

        ``savepoints`` gives every member a savepoint, whatever it asked for. Raises _SpoiledBatch,
        the transaction rolled back, when a member without one failed otherwise than by refusing.
        """
        with conn.begin():
            shared = None
            if not savepoints and conn.dialect.name in ("postgresql", "sqlite") and any(job.defer_refusals for job in batch):
                # On SQLite only the reads are shared: there a write costs no round trip.
                shared = BatchStatements()
            repositories = _Repositories(conn, shared)
            try:
                if shared is not None:
                    self._read_ahead(conn, repositories, shared, batch)
                for job in batch:
                    own = savepoints or job.savepoint
                    deferred = shared is not None and job.defer_refusals and not own
                    if shared is not None and not deferred:
                        # Anything else runs as usual, once the members before it are answered; and
                        # if it may change machines, their reads ahead are not used after it.
                        self._settle_batch(conn, shared)
                        if job.changes_machines:
                            shared.forget_reads()
                    if deferred:
                        assert shared is not None
                        shared.deferring = job
                    try:
                        job.outcome = (True, job.work(BatchMemberUnitOfWork(conn, repositories, savepoint=own)))
                    except Exception as error:
                        if isinstance(error, DBAPIError) and (error.connection_invalidated or conn.invalidated):
                            # The connection is lost, and the whole transaction with it.
                            raise
                        # With a savepoint, the member's ``with`` has rolled it back already; without
                        # one, a refusal wrote nothing (the use case's promise) and left the
                        # transaction usable (checked).
                        if not own and not (isinstance(error, MdeError) and _transaction_usable(conn)):
                            raise _SpoiledBatch() from error
                        job.outcome = (False, error)
                    finally:
                        if shared is not None:
                            shared.deferring = None
                if shared is not None:
                    self._settle_batch(conn, shared)
            except BaseException:
                if shared is not None:
                    shared.abandon()
                raise
            if self._notify_within:
                keys = [job.wake(job.outcome[1]) for job in batch if job.wake is not None and job.outcome[0]]
                if keys:
                    assert isinstance(self.notifier, PostgresNotifier)
                    self.notifier.publish_within(conn, keys)
            # Leaving the block commits: from here a lost connection may have committed or not.
            self._committing = True

    @staticmethod
    def _read_ahead(conn: Connection, repositories: _Repositories, shared: BatchStatements, batch: list[_Job]) -> None:
        """Collect the reads the batch's deferred members announce: the first of them to read one
        reads them all."""
        for job in batch:
            if job.prepare is None or not job.defer_refusals:
                continue
            try:
                job.prepare(BatchMemberUnitOfWork(conn, repositories, savepoint=False))
            except Exception:
                # Only a hint (a malformed id cannot be read ahead): the member itself refuses or
                # fails when it runs, alone.
                log.debug("a member's read ahead failed; it reads for itself", exc_info=True)
                continue

    @staticmethod
    def _settle_batch(conn: Connection, shared: BatchStatements) -> None:
        """Write what the members collected; a write refused becomes its member's outcome."""
        if not shared.unsettled:
            return
        try:
            refused = shared.settle()
        except DBAPIError as error:
            if error.connection_invalidated or conn.invalidated:
                raise
            # A collected row failed: whose is not known here, so every member of the batch runs
            # again, each in its own savepoint.
            raise _SpoiledBatch() from error
        for job, refusal in refused:
            job.outcome = (False, refusal)
