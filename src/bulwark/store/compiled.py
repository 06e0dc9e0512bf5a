"""SELECTs compiled once and run straight on SQLite's driver: the busiest reads without per-call overhead.

A Core statement executed through SQLAlchemy is, on every call, walked for its cache key, given an
execution context and its rows wrapped and processed; for a primary-key read of one row on a local
SQLite file that costs four times what SQLite spends answering it. ``CompiledSelect`` does that work
once: the statement is compiled for the engine's dialect with SQLAlchemy's own compiler, the bound
values are converted by their types' bind processors, and each result column keeps its type's result
processor, so the rows are exactly what SQLAlchemy would return (the tests compare them). Calls then
cost one driver ``execute`` and the value conversions.

On SQLite every such read and insert runs this way (``direct_statements``). On PostgreSQL the
offboard's write path does (the machine read and the one statement inserting the action with its
audit event), and so do a sensor's poll and claim (its credential, its machine, its pending actions
and the claiming UPDATE), on psycopg, which also prepares a statement it has run a few times; other
statements go through SQLAlchemy.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from threading import Lock
from typing import Any, TypeVar
from weakref import WeakKeyDictionary

from sqlalchemy import Connection, Dialect, Table, insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import Insert, Select, Update

_Processor = Callable[[Any], Any] | None


def _execute(dialect: Dialect, driver: Any, sql: str, params: Any) -> Any:
    """``driver.execute``, its errors raised as SQLAlchemy raises them (``IntegrityError`` and so on,
    parameters hidden as the engines are configured, saying whether the connection was lost)."""
    try:
        return driver.execute(sql, params)
    except dialect.loaded_dbapi.Error as error:
        lost = dialect.is_disconnect(error, driver, None)
        raise DBAPIError.instance(
            sql, params, error, dialect.loaded_dbapi.Error, hide_parameters=True, connection_invalidated=lost, dialect=dialect
        ) from error


def run_on_driver(conn: Connection, sql: str, params: Any) -> Any:
    """``sql`` (in the driver's own parameter style) run straight on ``conn``'s driver; its cursor."""
    return _execute(conn.dialect, driver_connection(conn), sql, params)


T = TypeVar("T", "CompiledSelect", "CompiledInsert")


class CompiledSelect:
    """One SELECT compiled for one dialect; ``rows(driver, **variables)`` runs it on a DB-API connection.

    ``values`` holds the statement's named bound parameters; those named in ``variables`` change per
    call (such as an id), the others are fixed. Expanding (``IN``) parameters must be fixed. Also
    serves a statement returning rows that is not a SELECT (``INSERT ... RETURNING``), and drivers
    taking named parameters (psycopg) as well as positional ones (SQLite).
    """

    __slots__ = ("_dialect", "_names", "_processors", "_slots", "_values", "keys", "processors", "sql")

    def __init__(
        self,
        statement: Select[Any] | Insert | Update,
        dialect: Dialect,
        values: Mapping[str, Any],
        variables: tuple[str, ...] = (),
    ):
        compiled = statement.compile(dialect=dialect)
        self._dialect = dialect
        state = compiled.construct_expanded_state(dict(values))
        self.sql: str = state.statement
        if compiled.positional:
            # Names in the order the driver takes the values; None: the driver takes a tuple.
            self._names: tuple[str, ...] | None = None
            ordered = list(zip(state.positiontup or (), state.positional_parameters, strict=True))
        else:
            ordered = list(state.parameters.items())
            self._names = tuple(name for name, _ in ordered)
        processed: list[Any] = []
        # (position, variable name, bind processor) for the values given per call.
        self._slots: list[tuple[int, str, _Processor]] = []
        for position, (name, value) in enumerate(ordered):
            bind = compiled.binds.get(name)
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect) if bind is not None else None
            processor = processor or state.processors.get(name)
            if name in variables:
                self._slots.append((position, name, processor))
            processed.append(processor(value) if processor is not None else value)
        self._values = tuple(processed)
        columns = compiled._result_columns  # (keyname, name, objects, type), in the SELECT's order
        self.keys: tuple[str, ...] = tuple(column.keyname for column in columns)
        processors = [column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns]
        # Each column's result processor (None where the driver's value is already the column's).
        self.processors: tuple[_Processor, ...] = tuple(processors)
        # Only the columns whose type converts what the driver returns (timestamps, JSON, booleans).
        self._processors: tuple[tuple[int, Callable[[Any], Any]], ...] = tuple(
            (position, processor) for position, processor in enumerate(processors) if processor is not None
        )

    def _params(self, variables: Mapping[str, Any]) -> tuple[Any, ...] | dict[str, Any]:
        if not self._slots:
            params: Any = self._values
        else:
            params = list(self._values)
            for position, name, processor in self._slots:
                value = variables[name]
                params[position] = processor(value) if processor is not None else value
        if self._names is not None:
            return dict(zip(self._names, params, strict=True))
        return tuple(params)

    def values(self, driver: Any, **variables: Any) -> list[list[Any]]:
        """Every row as a list of values in ``keys``' order, converted by their types.

        ``driver`` is a DB-API connection (``driver_connection(conn)`` of a SQLAlchemy one).
        """
        cursor = _execute(self._dialect, driver, self.sql, self._params(variables))
        return [self._convert(row) for row in cursor.fetchall()]

    def stored_values(self, driver: Any, **variables: Any) -> list[tuple[Any, ...]]:
        """Every row as the driver returns it, unconverted: what ``processors`` turn into ``values``."""
        return _execute(self._dialect, driver, self.sql, self._params(variables)).fetchall()

    def convert(self, row: tuple[Any, ...]) -> list[Any]:
        """One row of ``stored_values`` converted as ``values`` converts it."""
        return self._convert(row)

    def rows(self, driver: Any, **variables: Any) -> list[dict[str, Any]]:
        """Every row, as dicts keyed like SQLAlchemy's mappings."""
        keys = self.keys
        return [dict(zip(keys, values, strict=True)) for values in self.values(driver, **variables)]

    def rowcount(self, driver: Any, **variables: Any) -> int:
        """Run a statement that returns no rows (an UPDATE); how many rows it changed."""
        cursor = _execute(self._dialect, driver, self.sql, self._params(variables))
        count = int(cursor.rowcount)
        cursor.close()
        return count

    def first(self, driver: Any, **variables: Any) -> dict[str, Any] | None:
        """The first row, or None."""
        cursor = _execute(self._dialect, driver, self.sql, self._params(variables))
        row = cursor.fetchone()
        cursor.close()
        return None if row is None else dict(zip(self.keys, self._convert(row), strict=True))

    def _convert(self, row: tuple[Any, ...]) -> list[Any]:
        values = list(row)
        for position, processor in self._processors:
            value = values[position]
            if value is not None:
                values[position] = processor(value)
        return values


class CompiledInsert:
    """``INSERT INTO table (columns...)`` compiled once for one dialect; ``run(driver, values)`` inserts one row.

    The values are converted by their columns' bind processors, as SQLAlchemy would (a JSON column's
    None is stored as JSON ``null``); errors are raised as SQLAlchemy's (``IntegrityError`` and so on).
    """

    __slots__ = ("_columns", "_dialect", "sql")

    def __init__(self, table: Table, dialect: Dialect, columns: tuple[str, ...], statement: Insert | None = None) -> None:
        # ``statement``: an INSERT INTO ``table`` with clauses of its own (such as ON CONFLICT).
        compiled = (statement if statement is not None else insert(table)).compile(dialect=dialect, column_keys=list(columns))
        if not compiled.positional or set(compiled.positiontup or ()) != set(columns):
            raise ValueError(f"cannot run INSERT INTO {table.name} positionally on {dialect.name}")
        self.sql: str = compiled.string
        self._dialect = dialect
        self._columns: tuple[tuple[str, _Processor], ...] = tuple(
            (name, compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)) for name in compiled.positiontup or ()
        )

    def run(self, driver: Any, values: Mapping[str, Any]) -> int:
        """Insert one row; return how many rows were inserted (0 when an ON CONFLICT clause skipped it)."""
        params = [values[name] if processor is None else processor(values[name]) for name, processor in self._columns]
        return int(_execute(self._dialect, driver, self.sql, params).rowcount)


MAX_CACHED_SQL = 16 * 1024


class CompiledCache:
    """Compiled statements by key (a statement's shape and fixed values), the least recently used dropped first."""

    # Statements: CompiledSelect, or CompiledInsert (whose key names its table and columns).

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = Lock()

    def get(self, key: Hashable, build: Callable[[], T]) -> T:
        """The statement compiled for ``key``, compiled with ``build`` on a miss."""
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
                return found
        compiled = build()
        if len(compiled.sql) > MAX_CACHED_SQL:
            # A statement this long comes from a query no client repeats; keeping it would only
            # let long query strings fill memory.
            return compiled
        with self._lock:
            self._entries[key] = compiled
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)
        return compiled


# Enough for every visibility shape and list query a busy server sees in a while; each entry is
# one SQL string and its parameters.
CACHE_SIZE = 1024
_CACHES: WeakKeyDictionary[Dialect, CompiledCache] = WeakKeyDictionary()


def compiled_statements(dialect: Dialect) -> CompiledCache:
    """The statements compiled for ``dialect`` (on PostgreSQL, only the few its callers run on the driver)."""
    cache = _CACHES.get(dialect)
    if cache is None:
        cache = _CACHES[dialect] = CompiledCache(CACHE_SIZE)
    return cache


def direct_statements(dialect: Dialect) -> CompiledCache | None:
    """The compiled statements of ``dialect`` if it runs its reads and inserts directly (SQLite), else None."""
    if dialect.name != "sqlite":
        return None
    return compiled_statements(dialect)


def driver_connection(conn: Connection) -> Any:
    """The DB-API connection under a SQLAlchemy connection (inside its transaction, if one is open)."""
    return conn.connection.driver_connection


class BatchStatements:
    """What the members of one group-commit batch share: statements that serve all of them at once.

    Reads: the machines a batch's offboards will read are announced before its members run
    (``want``) and read with one statement when the first member needs one (``take``). Writes: a
    member's insert may be collected (``collect``) instead of run, and the batch's collected rows are
    written by one statement when the batch asks for their outcome (``settle``), each member's
    ``check`` then saying whether its own row was refused. Used on PostgreSQL, where a batch's
    statements one after the other, each a round trip, set its pace; on SQLite only the reads.
    A collected statement that fails makes ``settle()`` raise (as SQLAlchemy's error): the
    transaction is then spoiled and the writer rolls it back.
    """

    __slots__ = ("_checks", "_collected", "_reads", "_wanted", "deferring")

    def __init__(self) -> None:
        # Reads wanted (group: fetch, items) and fetched ((group, item): row or None).
        self._wanted: dict[Hashable, tuple[Callable[[list[Any]], Mapping[Any, Any]], list[Any]]] = {}
        self._reads: dict[tuple[Hashable, Hashable], Any] = {}
        # Writes collected (key: write, items), and each member's check of its outcome.
        self._collected: dict[Hashable, tuple[Callable[[list[Any]], Any], list[Any]]] = {}
        self._checks: list[tuple[Any, Callable[[Mapping[Hashable, Any]], BaseException | None]]] = []
        # The member whose writes may be collected now (``collect``); None: writes run at once.
        self.deferring: Any = None

    @property
    def unsettled(self) -> bool:
        """Whether writes were collected whose outcome is not known yet."""
        return bool(self._collected or self._checks)

    def want(self, group: Hashable, item: Hashable, fetch: Callable[[list[Any]], Mapping[Any, Any]]) -> None:
        """Ask for ``item`` of ``group``: the first ``take`` of the group fetches every item wanted of
        it with one call of ``fetch`` (given the items, returning each found item's row)."""
        if (group, item) in self._reads:
            return
        pending = self._wanted.get(group)
        if pending is None:
            self._wanted[group] = (fetch, [item])
        elif item not in pending[1]:
            pending[1].append(item)

    def take(self, group: Hashable, item: Hashable) -> tuple[bool, Any]:
        """(True, the row or None) if ``item`` of ``group`` was wanted, else (False, None)."""
        pending = self._wanted.pop(group, None)
        if pending is not None:
            fetch, items = pending
            found = fetch(items)
            for each in items:
                self._reads[(group, each)] = found.get(each)
        key = (group, item)
        if key not in self._reads:
            return False, None
        return True, self._reads[key]

    def forget_reads(self) -> None:
        """Drop the reads wanted or fetched: what they read may have changed since."""
        self._wanted.clear()
        self._reads.clear()

    def collect(
        self,
        key: Hashable,
        item: Any,
        write: Callable[[list[Any]], Any],
        check: Callable[[Mapping[Hashable, Any]], BaseException | None],
    ) -> None:
        """Collect ``item`` for ``write`` (called once with every item collected under ``key``); once
        written, ``check`` gets every key's result and returns the refusal of the member collecting
        now (``deferring``), or None."""
        if self.deferring is None:
            raise RuntimeError("no write may be collected now")
        entry = self._collected.get(key)
        if entry is None:
            self._collected[key] = (write, [item])
        else:
            entry[1].append(item)
        self._checks.append((self.deferring, check))

    def settle(self) -> list[tuple[Any, BaseException]]:
        """Write what was collected; return (member, refusal) for each member whose check refused."""
        collected, self._collected = self._collected, {}
        checks, self._checks = self._checks, []
        results = {key: write(items) for key, (write, items) in collected.items()}
        refused: list[tuple[Any, BaseException]] = []
        for owner, check in checks:
            refusal = check(results)
            if refusal is not None:
                refused.append((owner, refusal))
        return refused

    def abandon(self) -> None:
        """Drop everything collected and read (the batch's transaction is given up)."""
        self._collected.clear()
        self._checks.clear()
        self.forget_reads()
