"""List queries: OData options compiled to SQL, scoped to what the caller may see."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Select, select

from bulwark.domain.access import Principal
from bulwark.domain.actions import MachineAction
from bulwark.domain.errors import InvalidODataQuery
from bulwark.domain.machines import Machine
from bulwark.odata import MACHINE_ACTION_SPEC, MACHINE_SPEC, ODataQuery, Page
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
):
    """One page of ``make_base()`` under ``query``: (column keys, rows of values, has_more, total, next token).

    ``key`` names the caller's view of the list (its visibility); with the query it identifies the
    statements, which on SQLite are compiled once and reused for every request alike.
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
    if direct is not None:
        driver = driver_connection(conn)
        statement = direct.get(("page", key, query), lambda: CompiledSelect(paged(), conn.dialect, {}))
        keys, rows = statement.keys, statement.values(driver)
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
        token = seek.position_of(dict(zip(keys, page[-1], strict=True)))
    return keys, page, has_more, total, token


class ListQueries:
    """The list endpoints' queries, inside a unit of work's transaction."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def machines(self, principal: Principal, query: ODataQuery) -> Page[Machine]:
        """Machines the caller may see that match ``query``; ordered by $orderby, then id."""
        return list_machines(self.conn, principal, query)

    def actions(self, principal: Principal, query: ODataQuery, *, machine_id: str | None = None) -> Page[MachineAction]:
        """Actions on machines the caller may see, newest first unless $orderby says otherwise."""
        return list_actions(self.conn, principal, query, machine_id=machine_id)


def list_machines(conn: Connection, principal: Principal, query: ODataQuery) -> Page[Machine]:
    """Machines the caller may see that match ``query``; ordered by $orderby, then id."""
    repo = MachineRepository(conn)
    keys, rows, has_more, total, token = _page(
        conn,
        ("machines", visibility_key(principal)),
        lambda: repo.select_with_group().where(visibility_clause(principal)),
        query,
        _MACHINE_COLUMNS,
        _MACHINE_COLLECTIONS,
        (),
        (machines.c.id,),
        _MACHINE_SEEK,
    )
    return Page(repo.hydrate_values(keys, rows), has_more, total, token)


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

    keys, rows, has_more, total, token = _page(
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
    return Page([action_from_row(dict(zip(keys, row, strict=True))) for row in rows], has_more, total, token)
