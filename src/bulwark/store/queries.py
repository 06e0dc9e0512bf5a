"""List queries: OData options compiled to SQL, scoped to what the caller may see."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Select, select

from bulwark.domain.access import Principal
from bulwark.domain.actions import MachineAction
from bulwark.domain.errors import InvalidODataQuery
from bulwark.domain.machines import Machine
from bulwark.odata import MACHINE_ACTION_SPEC, MACHINE_SPEC, ODataQuery, Page, StoredMachines
from bulwark.store.compiled import CompiledSelect, direct_statements, driver_connection
from bulwark.store.keyset import SeekOrder, seek_order
from bulwark.store.odata_sql import CollectionSpec, apply_query, count_rows, snake_case_columns
from bulwark.store.repositories import MachineRepository, action_from_row, visibility_clause, visibility_key
from bulwark.store.tables import machine_actions, machine_tags, machines

_MACHINE_COLUMNS = snake_case_columns(machines, MACHINE_SPEC)
_MACHINE_COLLECTIONS = {"machineTags": CollectionSpec(machine_tags.c.tag, machine_tags.c.machine_id, machines.c.id)}
_ACTION_COLUMNS = snake_case_columns(machine_actions, MACHINE_ACTION_SPEC)


# The default orders as seek keys (store/keyset.py); each is the index order that serves it.
_MACHINE_SEEK = seek_order("machines.v1", [(machines.c.id, False, str)])
_ACTION_SEEK = seek_order(
    "machineactions.v1", [(machine_actions.c.creation_date_time_utc, True, datetime), (machine_actions.c.id, True, str)]
)


@dataclass(frozen=True, slots=True)
class _RawPage:
    keys: tuple[str, ...]
    rows: list[Any]  # converted values; as stored when asked for and run on the driver
    has_more: bool
    total: int | None
    token: str | None
    # The result processors of the columns, when ``rows`` are as stored (else None).
    processors: tuple[Callable[[Any], Any] | None, ...] | None = None


def _page(
    conn: Connection,
    key: Hashable,
    make_base: Callable[[], Select[Any]],
    query: ODataQuery,
    columns,
    collections,
    default_orderby,
    tiebreakers,
    seek: SeekOrder,
    *,
    stored: bool = False,
) -> _RawPage:
    """One page of ``make_base()`` under ``query``: its column keys, rows of values, whether more
    follow, the total ($count) and the next page's token.

    ``key`` names the caller's view of the list (its visibility); with the query it identifies the
    statements, which on SQLite are compiled once and reused for every request alike. With
    ``stored`` (SQLite only), the rows are the driver's values, left for the caller to convert with
    the page's ``processors``.
    """
    if query.skiptoken is not None and query.orderby:
        raise InvalidODataQuery("Invalid OData URI query: $skiptoken continues a list in its default order, without $orderby.")

    def paged() -> Select[Any]:
        base = make_base()
        if query.skiptoken is not None:
            base = base.where(seek.after(query.skiptoken))
        # One row past the page tells whether a next page exists without a second query.
        statement = apply_query(base, query, columns, collections, default_orderby=default_orderby, tiebreakers=tiebreakers)
        return statement.limit(query.page_size + 1)

    def counted() -> Select[Any]:
        return count_rows(apply_query(make_base(), query, columns, collections))

    direct = direct_statements(conn.dialect)
    total = None
    processors = None
    last: Callable[[Any], list[Any]] = list
    rows: list[Any]
    if direct is not None:
        driver = driver_connection(conn)
        statement = direct.get(("page", key, query), lambda: CompiledSelect(paged(), conn.dialect, {}))
        keys = statement.keys
        if stored:
            rows, processors, last = statement.stored_values(driver), statement.processors, statement.convert
        else:
            rows = statement.values(driver)
        if query.count:
            counter = direct.get(("count", key, query), lambda: CompiledSelect(counted(), conn.dialect, {}))
            total = int(counter.values(driver)[0][0])
    else:
        result = conn.execute(paged())
        keys, rows = tuple(result.keys()), [list(row) for row in result]
        if query.count:
            total = int(conn.execute(counted()).scalar_one())
    page, has_more = rows[: query.page_size], len(rows) > query.page_size
    token = None
    if has_more and page and not query.orderby:
        token = seek.position_of(dict(zip(keys, last(page[-1]), strict=True)))
    return _RawPage(keys, page, has_more, total, token, processors)


class ListQueries:
    """The list endpoints' queries, inside a unit of work's transaction."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def machines(self, principal: Principal, query: ODataQuery) -> Page[Machine]:
        """Machines the caller may see that match ``query``; ordered by $orderby, then id."""
        return list_machines(self.conn, principal, query)

    def stored_machines(self, principal: Principal, query: ODataQuery) -> StoredMachines | None:
        """``machines`` as stored values on SQLite (None elsewhere), for rendering without models."""
        return list_stored_machines(self.conn, principal, query)

    def actions(self, principal: Principal, query: ODataQuery, *, machine_id: str | None = None) -> Page[MachineAction]:
        """Actions on machines the caller may see, newest first unless $orderby says otherwise."""
        return list_actions(self.conn, principal, query, machine_id=machine_id)


def list_machines(conn: Connection, principal: Principal, query: ODataQuery) -> Page[Machine]:
    """Machines the caller may see that match ``query``; ordered by $orderby, then id."""
    raw = _machine_page(conn, principal, query, stored=False)
    return Page(MachineRepository(conn).hydrate_values(raw.keys, raw.rows), raw.has_more, raw.total, raw.token)


def _machine_page(conn: Connection, principal: Principal, query: ODataQuery, *, stored: bool) -> _RawPage:
    return _page(
        conn,
        ("machines", visibility_key(principal)),
        lambda: MachineRepository(conn).select_with_group().where(visibility_clause(principal)),
        query,
        _MACHINE_COLUMNS,
        _MACHINE_COLLECTIONS,
        (),
        (machines.c.id,),
        _MACHINE_SEEK,
        stored=stored,
    )


def list_stored_machines(conn: Connection, principal: Principal, query: ODataQuery) -> StoredMachines | None:
    """What ``list_machines`` finds, as stored values, for rendering without building machines;
    None where statements do not run on the driver (anything but SQLite)."""
    if direct_statements(conn.dialect) is None:
        return None
    raw = _machine_page(conn, principal, query, stored=True)
    id_at = raw.keys.index("id")
    tags: dict[str, list[str]] = {row[id_at]: [] for row in raw.rows}
    if tags:
        MachineRepository(conn).load_tags(list(tags), tags)
    assert raw.processors is not None
    return StoredMachines(raw.keys, raw.rows, raw.processors, tags, raw.has_more, raw.total, raw.token)


def list_actions(
    conn: Connection, principal: Principal, query: ODataQuery, *, machine_id: str | None = None
) -> Page[MachineAction]:
    """Actions on machines the caller may see, newest first unless $orderby says otherwise."""

    def base() -> Select[Any]:
        statement = select(machine_actions).where(machine_actions.c.tenant_id == principal.tenant_id)
        if principal.device_group_ids is not None:
            # Only a caller limited to device groups needs the machines: an action is always in its
            # machine's tenant, so for everyone else the join would only give the planner a worse order.
            statement = statement.select_from(
                machine_actions.join(machines, machines.c.id == machine_actions.c.machine_id)
            ).where(visibility_clause(principal))
        if machine_id is not None:
            statement = statement.where(machine_actions.c.machine_id == machine_id)
        return statement

    raw = _page(
        conn,
        ("actions", visibility_key(principal), machine_id),
        base,
        query,
        _ACTION_COLUMNS,
        {},
        (machine_actions.c.creation_date_time_utc.desc(),),
        # Descending like the default order, so (tenant_id, creation, id) serves it read backwards.
        (machine_actions.c.id.desc(),),
        _ACTION_SEEK,
    )
    actions = [action_from_row(dict(zip(raw.keys, row, strict=True))) for row in raw.rows]
    return Page(actions, raw.has_more, raw.total, raw.token)
