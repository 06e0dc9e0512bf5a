"""Repositories: the only code that reads and writes Bulwark's tables."""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    ColumnElement,
    Connection,
    Dialect,
    Select,
    Table,
    and_,
    any_,
    bindparam,
    column,
    delete,
    func,
    insert,
    or_,
    select,
    text,
    true,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.elements import BindParameter

from bulwark.domain.access import Principal
from bulwark.domain.actions import ActionStatus, ActionType, MachineAction, transition_sources
from bulwark.domain.errors import ActiveRequestAlreadyExists
from bulwark.domain.machines import Machine
from bulwark.store.compiled import (
    BatchStatements,
    CompiledCache,
    CompiledInsert,
    CompiledSelect,
    compiled_statements,
    direct_statements,
    driver_connection,
    run_on_driver,
)
from bulwark.store.odata_sql import fold_ascii, fold_case
from bulwark.store.tables import (
    ACTIVE_ACTION,
    audit_events,
    device_groups,
    machine_actions,
    machine_tags,
    machines,
    onboarding_packages,
    package_signing_keys,
    sensors,
    tenants,
)

_MACHINE_COLUMNS = [c.name for c in machines.columns]
_ACTION_FIELDS = [f.name for f in dataclasses.fields(MachineAction)]


def visibility_clause(principal: Principal) -> ColumnElement[bool]:
    """The SQL condition for machines ``principal`` may see, applied in the query itself."""
    clause = machines.c.tenant_id == principal.tenant_id
    if principal.device_group_ids is None:
        return clause
    allowed: list[ColumnElement[bool]] = []
    if principal.device_group_ids:
        allowed.append(machines.c.rbac_group_id.in_(sorted(principal.device_group_ids)))
    if principal.include_ungrouped:
        allowed.append(machines.c.rbac_group_id.is_(None))
    return and_(clause, or_(*allowed) if allowed else ~true())


# The hot point reads are built once per visibility shape, with the caller's tenant and groups as
# bound parameters: building a Core statement and its cache key per request cost more than running it.
_VISIBLE_TENANT: BindParameter[str] = bindparam("visible_tenant_id")
_VISIBLE_GROUPS: BindParameter[list[int]] = bindparam("visible_group_ids", expanding=True)


def _visibility_shape(principal: Principal) -> tuple[bool, bool, bool]:
    restricted = principal.device_group_ids is not None
    return restricted, bool(principal.device_group_ids), restricted and principal.include_ungrouped


def _visibility_params(principal: Principal) -> dict[str, Any]:
    params: dict[str, Any] = {"visible_tenant_id": principal.tenant_id}
    if principal.device_group_ids:
        params["visible_group_ids"] = sorted(principal.device_group_ids)
    return params


def _bound_visibility(shape: tuple[bool, bool, bool]) -> ColumnElement[bool]:
    """``visibility_clause`` with the caller's values as bound parameters, for one shape of caller."""
    restricted, has_groups, include_ungrouped = shape
    clause = machines.c.tenant_id == _VISIBLE_TENANT
    if not restricted:
        return clause
    allowed: list[ColumnElement[bool]] = []
    if has_groups:
        allowed.append(machines.c.rbac_group_id.in_(_VISIBLE_GROUPS))
    if include_ungrouped:
        allowed.append(machines.c.rbac_group_id.is_(None))
    return and_(clause, or_(*allowed) if allowed else ~true())


@functools.cache
def _visible_machine_by_id(shape: tuple[bool, bool, bool]) -> Select[Any]:
    return (
        select(machines, device_groups.c.name.label("rbac_group_name"))
        .select_from(machines.outerjoin(device_groups, machines.c.rbac_group_id == device_groups.c.id))
        .where(machines.c.id == bindparam("machine_id"), _bound_visibility(shape))
    )


@functools.cache
def _visible_machines_by_ids(shape: tuple[bool, bool, bool], dialect_name: str) -> Select[Any]:
    """``_visible_machine_by_id`` for a list of ids at once: on PostgreSQL ``machines.id = ANY
    (:machine_ids)`` (an array), on SQLite ``machines.id IN (SELECT value FROM json_each(:machine_ids))``
    (the ids as a JSON array)."""
    if dialect_name == "postgresql":
        among = machines.c.id == any_(bindparam("machine_ids", type_=postgresql.ARRAY(machines.c.id.type)))
    else:
        ids = select(column("value")).select_from(func.json_each(bindparam("machine_ids"))).scalar_subquery()
        among = machines.c.id.in_(ids)
    return (
        select(machines, device_groups.c.name.label("rbac_group_name"))
        .select_from(machines.outerjoin(device_groups, machines.c.rbac_group_id == device_groups.c.id))
        .where(among, _bound_visibility(shape))
    )


def visibility_key(principal: Principal) -> tuple[str, frozenset[int] | None, bool]:
    """What decides which machines ``principal`` sees: the statements compiled for one caller serve all alike."""
    return principal.tenant_id, principal.device_group_ids, principal.include_ungrouped


@functools.cache
def _visible_action_by_id(shape: tuple[bool, bool, bool]) -> Select[Any]:
    return (
        select(machine_actions)
        .select_from(machine_actions.join(machines, machines.c.id == machine_actions.c.machine_id))
        .where(machine_actions.c.id == bindparam("action_id"), machine_actions.c.tenant_id == _VISIBLE_TENANT)
        .where(_bound_visibility(shape))
    )


# A machine's tags, and those of a page of machines (their ids as one JSON array, so that one
# compiled statement serves any number of them): SQLite only, run by ``CompiledSelect``.
_TAGS_OF_MACHINE = (
    select(machine_tags.c.tag).where(machine_tags.c.machine_id == bindparam("machine_id")).order_by(machine_tags.c.tag)
)
_TAGS_OF_MACHINES = (
    select(machine_tags.c.machine_id, machine_tags.c.tag)
    .where(machine_tags.c.machine_id.in_(select(column("value")).select_from(func.json_each(bindparam("ids"))).scalar_subquery()))
    .order_by(machine_tags.c.machine_id, machine_tags.c.tag)
)


def _select_with_group() -> Select[Any]:
    return select(machines, device_groups.c.name.label("rbac_group_name")).select_from(
        machines.outerjoin(device_groups, machines.c.rbac_group_id == device_groups.c.id)
    )


@functools.cache
def _visible_machine_by_dns_name(shape: tuple[bool, bool, bool]) -> Select[Any]:
    return (
        _select_with_group()
        .where(fold_case(machines.c.computer_dns_name) == bindparam("dns_name"), _bound_visibility(shape))
        .order_by(machines.c.last_seen.desc())
        .limit(1)
    )


# Reads straight on SQLite's driver (store/compiled.py), shared by the repositories below and by
# the point reads of ``store.uow.SqlitePointReads``; ``direct`` holds the dialect's compiled statements.


def _direct_by_key(
    direct: CompiledCache,
    dialect: Dialect,
    driver: Any,
    name: str,
    statement: Select[Any],
    principal: Principal,
    key: str,
    value: str,
) -> dict[str, Any] | None:
    """The first row of ``statement`` (built for the caller's visibility shape), ``key`` given per call."""
    return _compiled_by_key(direct, dialect, name, statement, principal, key, value).first(driver, **{key: value})


def _compiled_by_key(
    direct: CompiledCache, dialect: Dialect, name: str, statement: Select[Any], principal: Principal, key: str, value: str
) -> CompiledSelect:
    """``statement`` compiled for the caller's visibility (fixed values) with ``key`` given per call."""
    params = _visibility_params(principal)
    params[key] = value
    return direct.get((name, visibility_key(principal)), lambda: CompiledSelect(statement, dialect, params, (key,)))


def _direct_tags(direct: CompiledCache, dialect: Dialect, driver: Any, ids: list[str], tags: dict[str, list[str]]) -> None:
    """Add the tags of the machines ``ids`` to ``tags``, in tag order."""
    if len(ids) == 1:
        one = direct.get(
            "tags_of_machine", lambda: CompiledSelect(_TAGS_OF_MACHINE, dialect, {"machine_id": ""}, ("machine_id",))
        )
        tags[ids[0]].extend(row["tag"] for row in one.rows(driver, machine_id=ids[0]))
        return
    many = direct.get("tags_of_machines", lambda: CompiledSelect(_TAGS_OF_MACHINES, dialect, {"ids": "[]"}, ("ids",)))
    for machine_id, tag in many.values(driver, ids=json.dumps(ids)):
        tags[machine_id].append(tag)


def _machines_of_rows(rows: Sequence[Any], tags: dict[str, list[str]]) -> list[Machine]:
    # A row of ``_select_with_group`` holds exactly the machine's fields but its tags.
    return [Machine(**r, machine_tags=tags[r["id"]]) for r in rows]


_MACHINE_FIELDS = tuple(f.name for f in dataclasses.fields(Machine))


@functools.cache
def _machine_layout(keys: tuple[str, ...]) -> tuple[tuple[int, ...], int, int]:
    """For rows of ``keys`` (a ``_select_with_group`` result): where each Machine field is, where the
    tags go among the fields, and where the id is in a row."""
    where = {key: position for position, key in enumerate(keys)}
    tags_at = _MACHINE_FIELDS.index("machine_tags")
    # The tags' place takes the id for now; the tags replace it.
    order = tuple(where["id"] if name == "machine_tags" else where[name] for name in _MACHINE_FIELDS)
    return order, tags_at, where["id"]


def _machines_of_values(keys: tuple[str, ...], rows: Sequence[Sequence[Any]], tags: dict[str, list[str]]) -> list[Machine]:
    """Machines from rows of values in ``keys``' order: positionally, the cheapest way to build them."""
    order, tags_at, id_at = _machine_layout(keys)
    machines_: list[Machine] = []
    for row in rows:
        fields = [row[position] for position in order]
        fields[tags_at] = tags[row[id_at]]
        machines_.append(Machine(*fields))
    return machines_


class DirectMachineReads:
    """A visible machine by id or DNS name, straight on the driver (SQLite's; psycopg's for ``get``)."""

    def __init__(self, direct: CompiledCache, dialect: Dialect, driver: Any) -> None:
        self._direct, self._dialect, self._driver = direct, dialect, driver

    def _machine(self, row: dict[str, Any] | None, with_tags: bool) -> Machine | None:
        if row is None:
            return None
        tags: dict[str, list[str]] = {row["id"]: []}
        if with_tags:
            _direct_tags(self._direct, self._dialect, self._driver, [row["id"]], tags)
        return _machines_of_rows([row], tags)[0]

    def _by_id(self, principal: Principal, machine_id: str) -> CompiledSelect:
        statement = _visible_machine_by_id(_visibility_shape(principal))
        return _compiled_by_key(self._direct, self._dialect, "machine_by_id", statement, principal, "machine_id", machine_id)

    def get(self, principal: Principal, machine_id: str, *, with_tags: bool = True) -> Machine | None:
        """The machine with ``machine_id`` if ``principal`` may see it."""
        return self._machine(self._by_id(principal, machine_id).first(self._driver, machine_id=machine_id), with_tags)

    def read_ahead(self, batch: BatchStatements, principal: Principal, machine_id: str) -> None:
        """Want ``get(principal, machine_id, with_tags=False)``'s machine on ``batch``: every machine
        wanted by callers who see alike is read by one statement (PostgreSQL's ``= ANY``), for ``taken``."""
        batch.want(("machines", visibility_key(principal)), machine_id, functools.partial(self._many, principal))

    def _many(self, principal: Principal, machine_ids: list[str]) -> dict[str, dict[str, Any]]:
        params = _visibility_params(principal)
        ids: list[str] | str = machine_ids if self._dialect.name == "postgresql" else json.dumps(machine_ids)
        params["machine_ids"] = ids
        statement = _visible_machines_by_ids(_visibility_shape(principal), self._dialect.name)
        compiled = self._direct.get(
            ("machines_by_ids", visibility_key(principal)),
            lambda: CompiledSelect(statement, self._dialect, params, ("machine_ids",)),
        )
        return {row["id"]: row for row in compiled.rows(self._driver, machine_ids=ids)}

    def taken(self, batch: BatchStatements, principal: Principal, machine_id: str) -> tuple[bool, Machine | None]:
        """(True, the machine or None) if ``read_ahead`` wanted it, else (False, None)."""
        taken, row = batch.take(("machines", visibility_key(principal)), machine_id)
        return taken, self._machine(row, False) if taken else None

    def get_in_tenant(self, tenant_id: str, machine_id: str, *, lock: bool = True, with_tags: bool = True) -> Machine | None:
        """The machine with ``machine_id`` in ``tenant_id``, for callers that are devices.

        ``lock`` locks the row on PostgreSQL (SQLite locks no rows).
        """
        locked = lock and self._dialect.name == "postgresql"
        compiled = self._direct.get(
            ("machine_in_tenant", locked),
            lambda: CompiledSelect(
                _MACHINE_IN_TENANT.with_for_update(of=machines) if locked else _MACHINE_IN_TENANT,
                self._dialect,
                {"machine_id": "", "tenant_id": ""},
                ("machine_id", "tenant_id"),
            ),
        )
        return self._machine(compiled.first(self._driver, machine_id=machine_id, tenant_id=tenant_id), with_tags)

    def find_by_dns_name(self, principal: Principal, dns_name: str) -> Machine | None:
        """The visible machine whose DNS name is ``dns_name`` (case-insensitive), most recently seen first."""
        statement = _visible_machine_by_dns_name(_visibility_shape(principal))
        row = _direct_by_key(
            self._direct,
            self._dialect,
            self._driver,
            "machine_by_dns_name",
            statement,
            principal,
            "dns_name",
            fold_ascii(dns_name),
        )
        return self._machine(row, True)


class DirectActionReads:
    """A visible action by id (SQLite and PostgreSQL) and a machine's pending actions (SQLite), straight on the driver."""

    def __init__(self, direct: CompiledCache, dialect: Dialect, driver: Any) -> None:
        self._direct, self._dialect, self._driver = direct, dialect, driver

    def get_visible(self, principal: Principal, action_id: str) -> MachineAction | None:
        """The action if ``principal`` may see its machine."""
        statement = _visible_action_by_id(_visibility_shape(principal))
        row = _direct_by_key(
            self._direct, self._dialect, self._driver, "action_by_id", statement, principal, "action_id", action_id
        )
        return action_from_row(row) if row else None

    def pending_for_machine(self, machine_id: str, limit: int = 10) -> list[MachineAction]:
        """The machine's Pending actions, oldest first (the order a sensor carries them out in)."""
        compiled = self._direct.get(
            ("pending_of_machine", limit),
            lambda: CompiledSelect(_pending_of_machine(limit), self._dialect, {"machine_id": ""}, ("machine_id",)),
        )
        return [action_from_row(row) for row in compiled.rows(self._driver, machine_id=machine_id)]


# A device's own reads on its long poll: its credential, its machine, whether an action waits.
_SENSOR_BY_CREDENTIAL = select(sensors).where(
    sensors.c.credential_hash == bindparam("credential_hash"), sensors.c.superseded_at.is_(None)
)
_SENSOR_SUPERSEDED_AT = select(sensors.c.superseded_at).where(sensors.c.id == bindparam("sensor_id"))
_MACHINE_IN_TENANT = _select_with_group().where(
    machines.c.id == bindparam("machine_id"), machines.c.tenant_id == bindparam("tenant_id")
)


@functools.cache
def _pending_of_machine(limit: int) -> Select[Any]:
    return (
        select(machine_actions)
        .where(machine_actions.c.machine_id == bindparam("machine_id"), machine_actions.c.status == ActionStatus.PENDING.value)
        .order_by(machine_actions.c.creation_date_time_utc, machine_actions.c.id)
        .limit(limit)
    )


class DirectSensorReads:
    """A sensor by its credential, and whether a sensor is current, straight on the driver (SQLite's or psycopg)."""

    def __init__(self, direct: CompiledCache, dialect: Dialect, driver: Any) -> None:
        self._direct, self._dialect, self._driver = direct, dialect, driver

    def by_credential_hash(self, credential_hash: str) -> dict[str, Any] | None:
        """The current (not superseded) sensor with this credential, or None."""
        compiled = self._direct.get(
            "sensor_by_credential",
            lambda: CompiledSelect(_SENSOR_BY_CREDENTIAL, self._dialect, {"credential_hash": ""}, ("credential_hash",)),
        )
        return compiled.first(self._driver, credential_hash=credential_hash)

    def is_current(self, sensor_id: str) -> bool:
        """Whether the sensor's credential has not been superseded."""
        compiled = self._direct.get(
            "sensor_superseded_at",
            lambda: CompiledSelect(_SENSOR_SUPERSEDED_AT, self._dialect, {"sensor_id": ""}, ("sensor_id",)),
        )
        row = compiled.first(self._driver, sensor_id=sensor_id)
        return row is not None and row["superseded_at"] is None


def _on_driver(conn: Connection) -> tuple[CompiledCache, Dialect, Any] | None:
    """Compiled statements, dialect and DB-API connection for the statements a sensor's poll and claim
    run straight on the driver (SQLite and PostgreSQL), or None on another database."""
    dialect = conn.dialect
    if dialect.name not in ("sqlite", "postgresql"):
        return None
    return compiled_statements(dialect), dialect, driver_connection(conn)


@functools.cache
def _transition(target: ActionStatus, only_from: ActionStatus | None, of_machine: bool, names: tuple[str, ...]) -> Any:
    """The guarded UPDATE of ``MachineActionRepository.transition`` for one shape of call, its values as
    bound parameters: ``action_id``, ``at``, ``of_machine_id`` and ``set_<column>`` for ``names``."""
    allowed = [s.value for s in transition_sources(target, only_from)]
    statement = update(machine_actions).where(
        machine_actions.c.id == bindparam("action_id"), machine_actions.c.status.in_(allowed)
    )
    if of_machine:
        statement = statement.where(machine_actions.c.machine_id == bindparam("of_machine_id"))
    return statement.values(
        status=target.value,
        last_update_date_time_utc=bindparam("at", type_=machine_actions.c.last_update_date_time_utc.type),
        **{name: bindparam(f"set_{name}", type_=machine_actions.c[name].type) for name in names},
    )


class TenantRepository:
    """Tenants (directories) known to this Bulwark."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def exists(self, tenant_id: str) -> bool:
        """Whether ``tenant_id`` is a known tenant."""
        return self.conn.execute(select(tenants.c.id).where(tenants.c.id == tenant_id)).first() is not None

    def add(self, tenant_id: str, name: str, created_at: datetime) -> None:
        """Create a tenant."""
        self.conn.execute(insert(tenants).values(id=tenant_id, name=name, created_at=created_at))

    def list(self) -> list[dict[str, Any]]:
        """Every tenant, oldest first."""
        rows = self.conn.execute(select(tenants).order_by(tenants.c.created_at)).mappings()
        return [dict(r) for r in rows]


class DeviceGroupRepository:
    """Device groups (rbac groups) of a tenant."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def add(self, tenant_id: str, name: str, description: str | None = None) -> int:
        """Create a device group and return its id (the machines' ``rbacGroupId``)."""
        result = self.conn.execute(
            insert(device_groups).values(tenant_id=tenant_id, name=name, description=description).returning(device_groups.c.id)
        )
        return int(result.scalar_one())

    def list(self, tenant_id: str) -> list[dict[str, Any]]:
        """The tenant's device groups by id."""
        rows = self.conn.execute(
            select(device_groups).where(device_groups.c.tenant_id == tenant_id).order_by(device_groups.c.id)
        ).mappings()
        return [dict(r) for r in rows]


class MachineRepository:
    """Machines and their tags."""

    def __init__(self, conn: Connection, batch: BatchStatements | None = None) -> None:
        self.conn = conn
        # What a group-commit batch's members share (``read_ahead``), else None.
        self.batch = batch

    def select_with_group(self):
        """A SELECT of machines with their device group's name (``rbac_group_name``)."""
        return _select_with_group()

    def _direct(self) -> DirectMachineReads | None:
        direct = direct_statements(self.conn.dialect)
        return None if direct is None else DirectMachineReads(direct, self.conn.dialect, driver_connection(self.conn))

    def _direct_by_id(self) -> DirectMachineReads | None:
        """Reads of a machine by id on the driver: on SQLite, and on PostgreSQL (the offboard's read)."""
        dialect = self.conn.dialect
        if dialect.name not in ("sqlite", "postgresql"):
            return None
        return DirectMachineReads(compiled_statements(dialect), dialect, driver_connection(self.conn))

    def hydrate(self, rows: Sequence[Any], *, with_tags: bool = True) -> list[Machine]:
        """Machines from rows of ``select_with_group``, with their tags (one query per 1,000 machines)."""
        if not rows:
            return []
        ids = [r["id"] for r in rows]
        tags: dict[str, list[str]] = {i: [] for i in ids}
        if with_tags:
            self.load_tags(ids, tags)
        return _machines_of_rows(rows, tags)

    def hydrate_values(self, keys: tuple[str, ...], rows: Sequence[Sequence[Any]]) -> list[Machine]:
        """Machines, with their tags, from rows of ``select_with_group`` as values in ``keys``' order."""
        if not rows:
            return []
        id_at = keys.index("id")
        ids = [row[id_at] for row in rows]
        tags: dict[str, list[str]] = {i: [] for i in ids}
        self.load_tags(ids, tags)
        return _machines_of_values(keys, rows, tags)

    def load_tags(self, ids: list[str], tags: dict[str, list[str]]) -> None:
        """Add the tags of the machines ``ids`` to ``tags`` (a list for each), in tag order."""
        direct = direct_statements(self.conn.dialect)
        if direct is not None:
            _direct_tags(direct, self.conn.dialect, driver_connection(self.conn), ids, tags)
            return
        for start in range(0, len(ids), 1000):
            for machine_id, tag in self.conn.execute(
                select(machine_tags.c.machine_id, machine_tags.c.tag)
                .where(machine_tags.c.machine_id.in_(ids[start : start + 1000]))
                .order_by(machine_tags.c.machine_id, machine_tags.c.tag)
            ):
                tags[machine_id].append(tag)

    def read_ahead(self, principal: Principal, machine_id: str) -> None:
        """Announce that ``get(principal, machine_id, with_tags=False)`` follows in this unit of work.

        In a group-commit batch on PostgreSQL the machines its members announce are read together
        (one statement for every caller who sees alike) and ``get`` takes its answer; elsewhere this
        does nothing.
        """
        batch = self.batch
        if batch is None:
            return
        direct = self._direct_by_id()
        if direct is not None:
            direct.read_ahead(batch, principal, machine_id)

    def get(self, principal: Principal, machine_id: str, *, with_tags: bool = True) -> Machine | None:
        """The machine with ``machine_id`` if ``principal`` may see it (tags left empty unless ``with_tags``)."""
        direct = self._direct_by_id()
        if direct is not None:
            if self.batch is not None and not with_tags:
                taken, machine = direct.taken(self.batch, principal, machine_id)
                if taken:
                    return machine
            return direct.get(principal, machine_id, with_tags=with_tags)
        params = _visibility_params(principal)
        params["machine_id"] = machine_id
        row = self.conn.execute(_visible_machine_by_id(_visibility_shape(principal)), params).mappings().first()
        if row is None:
            return None
        return self.hydrate([row], with_tags=with_tags)[0]

    def get_for_update(self, principal: Principal, machine_id: str) -> Machine | None:
        """Like ``get``, locking the row on databases that lock rows (serializes writers per machine)."""
        stmt = self.select_with_group().where(machines.c.id == machine_id, visibility_clause(principal))
        if self.conn.dialect.name == "postgresql":
            stmt = stmt.with_for_update(of=machines)
        row = self.conn.execute(stmt).mappings().first()
        return self.hydrate([row])[0] if row else None

    def find_by_dns_name(self, principal: Principal, dns_name: str) -> Machine | None:
        """The visible machine whose DNS name is ``dns_name`` (case-insensitive), most recently seen first."""
        direct = self._direct()
        if direct is not None:
            return direct.find_by_dns_name(principal, dns_name)
        params = _visibility_params(principal)
        params["dns_name"] = fold_ascii(dns_name)
        row = self.conn.execute(_visible_machine_by_dns_name(_visibility_shape(principal)), params).mappings().first()
        return self.hydrate([row])[0] if row else None

    def add_many(self, items: Iterable[Machine]) -> None:
        """Insert machines with their tags."""
        items = list(items)
        if not items:
            return
        self.conn.execute(insert(machines), [{k: getattr(m, k) for k in _MACHINE_COLUMNS} for m in items])
        tag_rows = [{"machine_id": m.id, "tag": t} for m in items for t in dict.fromkeys(m.machine_tags)]
        if tag_rows:
            self.conn.execute(insert(machine_tags), tag_rows)

    def update_fields(self, machine_id: str, **values: Any) -> None:
        """Set columns of one machine."""
        self.conn.execute(update(machines).where(machines.c.id == machine_id).values(**values))

    def set_tags(self, machine_id: str, tags: Iterable[str]) -> None:
        """Replace a machine's tags."""
        self.conn.execute(delete(machine_tags).where(machine_tags.c.machine_id == machine_id))
        rows = [{"machine_id": machine_id, "tag": t} for t in dict.fromkeys(tags)]
        if rows:
            self.conn.execute(insert(machine_tags), rows)

    def get_in_tenant(self, tenant_id: str, machine_id: str, *, lock: bool = True, with_tags: bool = True) -> Machine | None:
        """The machine with ``machine_id`` in ``tenant_id``, for callers that are devices, not users.

        ``lock`` locks the row on PostgreSQL, serializing a device's writes with other writers;
        without ``with_tags`` its tags are left empty (one query fewer). On SQLite and PostgreSQL
        compiled once and run on the driver (a sensor's poll and claim read it).
        """
        direct = self._direct_by_id()
        if direct is not None:
            return direct.get_in_tenant(tenant_id, machine_id, lock=lock, with_tags=with_tags)
        stmt = self.select_with_group().where(machines.c.id == machine_id, machines.c.tenant_id == tenant_id)
        if lock and self.conn.dialect.name == "postgresql":
            stmt = stmt.with_for_update(of=machines)
        row = self.conn.execute(stmt).mappings().first()
        return self.hydrate([row], with_tags=with_tags)[0] if row else None

    def mark_inactive_offboarded_before(self, cutoff: datetime) -> int:
        """Turn machines offboarded at or before ``cutoff`` Inactive; return how many changed."""
        result = self.conn.execute(
            update(machines)
            .where(machines.c.offboarded_at.is_not(None), machines.c.offboarded_at <= cutoff)
            .where(machines.c.health_status != "Inactive")
            .values(health_status="Inactive")
        )
        return result.rowcount

    def ids_and_dns_names(self, tenant_id: str, health_status: str) -> list[tuple[str, str]]:
        """(id, DNS name) of the tenant's machines in ``health_status`` that are not offboarded."""
        stmt = select(machines.c.id, machines.c.computer_dns_name).where(
            machines.c.tenant_id == tenant_id,
            machines.c.health_status == health_status,
            machines.c.offboarded_at.is_(None),
        )
        return [(r[0], r[1]) for r in self.conn.execute(stmt.order_by(machines.c.computer_dns_name))]

    def tags(self, principal: Principal, limit: int = 200) -> list[str]:
        """The distinct tags of machines ``principal`` may see, alphabetically (for filters)."""
        stmt = (
            select(machine_tags.c.tag)
            .join(machines, machines.c.id == machine_tags.c.machine_id)
            .where(visibility_clause(principal))
            .distinct()
            .order_by(machine_tags.c.tag)
            .limit(limit)
        )
        return list(self.conn.execute(stmt).scalars())

    def count(self, tenant_id: str | None = None) -> int:
        """How many machines there are (in ``tenant_id`` when given)."""
        stmt = select(func.count()).select_from(machines)
        if tenant_id:
            stmt = stmt.where(machines.c.tenant_id == tenant_id)
        return int(self.conn.execute(stmt).scalar_one())


_INSERT_ACTION = insert(machine_actions)
_INSERT_AUDIT = insert(audit_events)
_ACTION_COLUMNS = (*_ACTION_FIELDS, "requestor_id")
# The audit event's columns, in the table's order, but its id (the database numbers it).
_EVENT_COLUMNS = tuple(c.name for c in audit_events.columns if c.name != "id")


def _refuse_second_active(statement: Any) -> Any:
    """``statement`` (a dialect's INSERT INTO machine_actions) with ``ON CONFLICT DO NOTHING`` on the one-active-action index.

    A row the index refuses is then skipped, not an error: the transaction stays usable without a
    savepoint, and the caller learns of it from the row count (or the rows returned). Any other
    violation (such as of the primary key) is still an error.
    """
    return statement.on_conflict_do_nothing(
        index_elements=[machine_actions.c.machine_id, machine_actions.c.type], index_where=text(ACTIVE_ACTION)
    )


@functools.cache
def _action_with_event_postgresql() -> Any:
    """One statement inserting an action and, only if the action was inserted, its audit event.

    ``WITH created AS (INSERT INTO machine_actions ... ON CONFLICT ... DO NOTHING RETURNING id)
    INSERT INTO audit_events (...) SELECT ..., created.id FROM created RETURNING id``: no row back
    means the one-active-action index refused the action, and then nothing was written. The
    parameters are ``a_<column>`` for the action and ``e_<column>`` for the event, each bound
    through its column's type as a plain INSERT binds it; psycopg's dialect sends each with its
    type (``%(e_details)s::JSON``), so the SELECT's values need no CAST of their own (a CAST to
    ``VARCHAR(n)`` would silently cut an over-long value that the INSERT refuses).
    """
    created = (
        _refuse_second_active(
            postgresql.insert(machine_actions).values(
                {name: bindparam(f"a_{name}", type_=machine_actions.c[name].type) for name in _ACTION_COLUMNS}
            )
        )
        .returning(machine_actions.c.id)
        .cte("created")
    )
    event = [
        created.c.id if name == "machine_action_id" else bindparam(f"e_{name}", type_=audit_events.c[name].type)
        for name in _EVENT_COLUMNS
    ]
    return insert(audit_events).from_select(list(_EVENT_COLUMNS), select(*event)).returning(audit_events.c.id)


def _json_ready(value: Any) -> Any:
    """A column's value as the JSON document of ``_actions_with_events_postgresql`` carries it:
    timestamps as the naive UTC text ``UtcDateTime`` stores, everything else as it is."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetimes are ambiguous; pass a timezone-aware UTC datetime")
        return value.astimezone(UTC).replace(tzinfo=None).isoformat()
    return value


@functools.cache
def _actions_with_events_postgresql() -> str:
    """Actions and their audit events, as many as given, in one statement: each action inserted
    unless the one-active-action index refuses it, and the events of the inserted ones; returns the
    inserted actions' ids. A JSON column's None is JSON ``null``, as SQLAlchemy stores it."""

    def columns(table: Table, names: tuple[str, ...], source: str) -> str:
        return ", ".join(
            f"COALESCE({source}.\"{name}\", 'null'::json)" if isinstance(table.c[name].type, JSON) else f'{source}."{name}"'
            for name in names
        )

    action_names = ", ".join(f'"{name}"' for name in _ACTION_COLUMNS)
    event_names = ", ".join(f'"{name}"' for name in _EVENT_COLUMNS)
    return (
        "WITH given AS (SELECT * FROM json_populate_recordset(NULL::machine_actions, %(actions)s::json) WITH ORDINALITY), "
        f"created AS (INSERT INTO machine_actions ({action_names}) "
        f"SELECT {columns(machine_actions, _ACTION_COLUMNS, 'given')} FROM given ORDER BY given.ordinality "
        f"ON CONFLICT (machine_id, type) WHERE {ACTIVE_ACTION} DO NOTHING RETURNING id), "
        "events AS (SELECT * FROM json_populate_recordset(NULL::audit_events, %(events)s::json) WITH ORDINALITY), "
        f"recorded AS (INSERT INTO audit_events ({event_names}) "
        f"SELECT {columns(audit_events, _EVENT_COLUMNS, 'events')} FROM events "
        "WHERE events.machine_action_id IN (SELECT id FROM created) ORDER BY events.ordinality "
        "RETURNING machine_action_id) "
        "SELECT machine_action_id FROM recorded"
    )


_INSERT_ACTIVE_ACTION_SQLITE = _refuse_second_active(sqlite.insert(machine_actions))


def _insert(conn: Connection, table: Table, statement: Any, values: dict[str, Any]) -> None:
    """Insert one row: on SQLite straight on the driver (compiled once per set of columns), elsewhere through SQLAlchemy."""
    direct = direct_statements(conn.dialect)
    if direct is None:
        # Parameters go to execute() so the compiled INSERT is cached, not rebuilt per call.
        conn.execute(statement, values)
        return
    columns = tuple(values)
    compiled = direct.get(("insert", table.name, columns), lambda: CompiledInsert(table, conn.dialect, columns))
    compiled.run(driver_connection(conn), values)


def _is_one_active_violation(exc: IntegrityError) -> bool:
    text = str(exc.orig)
    # PostgreSQL names the index; SQLite names its columns.
    return "uq_machine_actions_one_active" in text or "machine_actions.machine_id, machine_actions.type" in text


def action_from_row(row: Any) -> MachineAction:
    """A MachineAction from a row of ``machine_actions``."""
    values = {k: row[k] for k in _ACTION_FIELDS}
    values["type"] = ActionType(values["type"])
    values["status"] = ActionStatus(values["status"])
    values["commands"] = values["commands"] or []
    return MachineAction(**values)


class MachineActionRepository:
    """Machine actions, with lifecycle transitions guarded in SQL."""

    def __init__(self, conn: Connection, batch: BatchStatements | None = None) -> None:
        self.conn = conn
        # What a group-commit batch's members share (``add_with_event`` collected), else None.
        self.batch = batch

    def add(self, action: MachineAction, *, requestor_id: str | None = None) -> None:
        """Insert ``action``; a concurrent active action of the same type loses to the first one.

        Raises ActiveRequestAlreadyExists when the database's one-active-action index refuses it;
        the transaction is then unusable on PostgreSQL, so callers insert before other writes or
        give up the unit of work (request_offboard does both).
        """
        values = {k: getattr(action, k) for k in _ACTION_FIELDS}
        values["type"] = action.type.value
        values["status"] = action.status.value
        values["requestor_id"] = requestor_id
        try:
            _insert(self.conn, machine_actions, _INSERT_ACTION, values)
        except IntegrityError as exc:
            if _is_one_active_violation(exc):
                raise ActiveRequestAlreadyExists() from exc
            raise

    def add_with_event(self, action: MachineAction, event: dict[str, Any], *, requestor_id: str | None = None) -> None:
        """Insert ``action`` and its audit ``event`` (the columns of ``AuditRepository.append``), or neither.

        Raises ActiveRequestAlreadyExists, having written nothing, when an action of the same type is
        already active on the machine. Unlike ``add``, that refusal is no error in the database (the
        insert skips the row the one-active-action index refuses), so the transaction stays usable
        and the caller needs no savepoint to go on. On PostgreSQL both rows are written by one
        statement (one round trip); on SQLite by two. Either way compiled once and run on the driver.
        In a group-commit batch that defers its members' refusals (PostgreSQL), the rows are only
        collected, written with the batch's others by one statement, and the refusal becomes the
        member's outcome once it has run: so it must be the use case's last step, its refusal not
        caught.
        """
        if event.get("machine_action_id") != action.id:
            raise ValueError("the audit event must name the action it records")
        values = {k: getattr(action, k) for k in _ACTION_FIELDS}
        values["type"] = action.type.value
        values["status"] = action.status.value
        values["requestor_id"] = requestor_id
        dialect = self.conn.dialect
        if dialect.name == "postgresql":
            params = {f"a_{name}": values[name] for name in _ACTION_COLUMNS}
            params.update({f"e_{name}": event.get(name) for name in _EVENT_COLUMNS if name != "machine_action_id"})
            compiled = compiled_statements(dialect).get(
                "action_with_event",
                lambda: CompiledSelect(_action_with_event_postgresql(), dialect, dict.fromkeys(params), tuple(params)),
            )
            batch = self.batch
            if batch is not None and batch.deferring is not None:
                # Written with the batch's other offboards by one statement; a refusal becomes the
                # member's outcome once it has run (the batch's ``defer_refusals``).
                action_id = action.id
                batch.collect(
                    "actions_with_events",
                    (values, event),
                    self._add_many_with_events,
                    lambda written: None if action_id in written["actions_with_events"] else ActiveRequestAlreadyExists(),
                )
                return
            if compiled.first(driver_connection(self.conn), **params) is None:
                raise ActiveRequestAlreadyExists()
            return
        direct = direct_statements(self.conn.dialect)
        if direct is None:
            raise NotImplementedError(f"add_with_event on {self.conn.dialect.name}")
        driver = driver_connection(self.conn)
        insert_active = direct.get(
            ("insert-active", machine_actions.name, _ACTION_COLUMNS),
            lambda: CompiledInsert(machine_actions, self.conn.dialect, _ACTION_COLUMNS, _INSERT_ACTIVE_ACTION_SQLITE),
        )
        if insert_active.run(driver, values) != 1:
            raise ActiveRequestAlreadyExists()
        _insert(self.conn, audit_events, _INSERT_AUDIT, event)

    def _add_many_with_events(self, items: list[tuple[dict[str, Any], dict[str, Any]]]) -> set[str]:
        """Insert every (action values, event) of ``items`` with one statement (PostgreSQL); return the
        ids of the actions inserted, whose events were inserted with them.

        The rows go as two JSON documents expanded by ``json_populate_recordset`` into the tables'
        own row types, so PostgreSQL converts each value as an INSERT of it would (a value longer
        than its column is an error, not cut). In the order given, so that of two offboards of one
        machine the first wins, as one after the other.
        """
        actions = [{name: _json_ready(values[name]) for name in _ACTION_COLUMNS} for values, _ in items]
        events = [{name: _json_ready(event.get(name)) for name in _EVENT_COLUMNS} for _, event in items]
        serialize = getattr(self.conn.dialect, "_json_serializer", None) or json.dumps
        cursor = run_on_driver(
            self.conn, _actions_with_events_postgresql(), {"actions": serialize(actions), "events": serialize(events)}
        )
        return {row[0] for row in cursor.fetchall()}

    def get(self, tenant_id: str, action_id: str) -> MachineAction | None:
        """The action with ``action_id`` in ``tenant_id``, or None."""
        row = (
            self.conn.execute(
                select(machine_actions).where(machine_actions.c.id == action_id, machine_actions.c.tenant_id == tenant_id)
            )
            .mappings()
            .first()
        )
        return action_from_row(row) if row else None

    def get_visible(self, principal: Principal, action_id: str) -> MachineAction | None:
        """The action if ``principal`` may see its machine (on the driver on SQLite and PostgreSQL, as machines by id)."""
        dialect = self.conn.dialect
        if dialect.name in ("sqlite", "postgresql"):
            reads = DirectActionReads(compiled_statements(dialect), dialect, driver_connection(self.conn))
            return reads.get_visible(principal, action_id)
        params = _visibility_params(principal)
        params["action_id"] = action_id
        row = self.conn.execute(_visible_action_by_id(_visibility_shape(principal)), params).mappings().first()
        return action_from_row(row) if row else None

    def active_for(self, machine_id: str, action_type: ActionType) -> MachineAction | None:
        """The pending or in-progress action of ``action_type`` on the machine, if any."""
        row = (
            self.conn.execute(
                select(machine_actions).where(
                    machine_actions.c.machine_id == machine_id,
                    machine_actions.c.type == action_type.value,
                    machine_actions.c.status.in_([ActionStatus.PENDING.value, ActionStatus.IN_PROGRESS.value]),
                )
            )
            .mappings()
            .first()
        )
        return action_from_row(row) if row else None

    def transition(
        self,
        action_id: str,
        target: ActionStatus,
        *,
        at: datetime,
        only_from: ActionStatus | None = None,
        machine_id: str | None = None,
        **values: Any,
    ) -> bool:
        """Move an action to ``target`` if the lifecycle allows it from the action's current status.

        The allowed-from statuses come from the domain's table (``transition_sources``), narrowed to
        ``only_from`` when given; ``machine_id`` also requires the action to be that machine's. The
        guard is part of the UPDATE, so of two racing transitions exactly one wins; returns whether
        this one did.
        """
        on_driver = _on_driver(self.conn)
        if on_driver is not None:
            direct, dialect, driver = on_driver
            names = tuple(sorted(values))
            variables = ("action_id", "at", *(("of_machine_id",) if machine_id is not None else ()), *(f"set_{n}" for n in names))
            compiled = direct.get(
                ("transition", target, only_from, machine_id is not None, names),
                lambda: CompiledSelect(
                    _transition(target, only_from, machine_id is not None, names),
                    dialect,
                    {"action_id": "", "at": None, "of_machine_id": "", **{f"set_{n}": None for n in names}},
                    variables,
                ),
            )
            given = {f"set_{n}": v for n, v in values.items()}
            if machine_id is not None:
                given["of_machine_id"] = machine_id
            return compiled.rowcount(driver, action_id=action_id, at=at, **given) == 1
        allowed = [s.value for s in transition_sources(target, only_from)]
        stmt = update(machine_actions).where(machine_actions.c.id == action_id, machine_actions.c.status.in_(allowed))
        if machine_id is not None:
            stmt = stmt.where(machine_actions.c.machine_id == machine_id)
        result = self.conn.execute(stmt.values(status=target.value, last_update_date_time_utc=at, **values))
        return result.rowcount == 1

    def pending_for_machine(self, machine_id: str, limit: int = 10) -> list[MachineAction]:
        """The machine's Pending actions, oldest first (the order a sensor carries them out in)."""
        on_driver = _on_driver(self.conn)
        if on_driver is not None:
            return DirectActionReads(*on_driver).pending_for_machine(machine_id, limit)
        rows = self.conn.execute(
            select(machine_actions)
            .where(machine_actions.c.machine_id == machine_id, machine_actions.c.status == ActionStatus.PENDING.value)
            .order_by(machine_actions.c.creation_date_time_utc, machine_actions.c.id)
            .limit(limit)
        ).mappings()
        return [action_from_row(r) for r in rows]

    def active_for_machine(self, machine_id: str) -> list[MachineAction]:
        """Every Pending or InProgress action on the machine."""
        rows = self.conn.execute(
            select(machine_actions).where(
                machine_actions.c.machine_id == machine_id,
                machine_actions.c.status.in_([ActionStatus.PENDING.value, ActionStatus.IN_PROGRESS.value]),
            )
        ).mappings()
        return [action_from_row(r) for r in rows]

    def overdue(
        self,
        status: ActionStatus,
        *,
        created_before: datetime | None = None,
        updated_before: datetime | None = None,
        limit: int = 500,
    ) -> list[tuple[str, str]]:
        """Ids and types of actions in ``status`` created (or last updated) before the given instants."""
        stmt = select(machine_actions.c.id, machine_actions.c.type).where(machine_actions.c.status == status.value)
        if created_before is not None:
            stmt = stmt.where(machine_actions.c.creation_date_time_utc < created_before)
        if updated_before is not None:
            stmt = stmt.where(machine_actions.c.last_update_date_time_utc < updated_before)
        return [(r[0], r[1]) for r in self.conn.execute(stmt.limit(limit))]


class OnboardingPackageRepository:
    """Onboarding package secrets (hashed) per tenant."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def add(
        self,
        package_id: str,
        tenant_id: str,
        key_hash: str,
        created_at: datetime,
        created_by: str | None,
        *,
        expires_at: datetime | None = None,
        replaces_sensors: bool = False,
    ) -> None:
        """Record a newly issued package."""
        self.conn.execute(
            insert(onboarding_packages).values(
                id=package_id,
                tenant_id=tenant_id,
                key_hash=key_hash,
                created_at=created_at,
                created_by=created_by,
                expires_at=expires_at,
                replaces_sensors=replaces_sensors,
            )
        )

    def find_valid(self, tenant_id: str, key_hash: str, now: datetime) -> dict[str, Any] | None:
        """The unrevoked, unexpired package of ``tenant_id`` with this key, or None."""
        row = (
            self.conn.execute(
                select(onboarding_packages).where(
                    onboarding_packages.c.key_hash == key_hash,
                    onboarding_packages.c.tenant_id == tenant_id,
                    onboarding_packages.c.revoked_at.is_(None),
                    or_(onboarding_packages.c.expires_at.is_(None), onboarding_packages.c.expires_at > now),
                )
            )
            .mappings()
            .first()
        )
        return dict(row) if row else None

    def is_valid(self, tenant_id: str, key_hash: str, now: datetime) -> bool:
        """Whether an unrevoked, unexpired package of ``tenant_id`` has this key."""
        return self.find_valid(tenant_id, key_hash, now) is not None

    def revoke(self, tenant_id: str, package_id: str, at: datetime) -> bool:
        """Revoke a package; False when the tenant has no such unrevoked package."""
        result = self.conn.execute(
            update(onboarding_packages)
            .where(
                onboarding_packages.c.id == package_id,
                onboarding_packages.c.tenant_id == tenant_id,
                onboarding_packages.c.revoked_at.is_(None),
            )
            .values(revoked_at=at)
        )
        return result.rowcount == 1


class PackageSigningKeyRepository:
    """Each tenant's key pair for signing offboarding packages."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def get(self, tenant_id: str) -> tuple[str, str] | None:
        """The tenant's (private, public) key, or None."""
        row = self.conn.execute(
            select(package_signing_keys.c.private_key, package_signing_keys.c.public_key).where(
                package_signing_keys.c.tenant_id == tenant_id
            )
        ).first()
        return (row[0], row[1]) if row else None

    def add_if_missing(self, tenant_id: str, private_key: str, public_key: str, created_at: datetime) -> None:
        """Store a key pair unless the tenant already has one (a concurrent creator may win)."""
        try:
            with self.conn.begin_nested():
                self.conn.execute(
                    insert(package_signing_keys).values(
                        tenant_id=tenant_id, private_key=private_key, public_key=public_key, created_at=created_at
                    )
                )
        except IntegrityError:
            pass


class SensorRepository:
    """Enrolled sensors and their hashed credentials."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def add(
        self,
        *,
        sensor_id: str,
        tenant_id: str,
        machine_id: str,
        credential_hash: str,
        generation: int,
        enrolled_at: datetime,
        proof_hash: str | None = None,
    ) -> None:
        """Record an enrolment."""
        self.conn.execute(
            insert(sensors).values(
                id=sensor_id,
                tenant_id=tenant_id,
                machine_id=machine_id,
                credential_hash=credential_hash,
                generation=generation,
                enrolled_at=enrolled_at,
                proof_hash=proof_hash,
            )
        )

    def latest_generation(self, machine_id: str) -> int:
        """The machine's newest onboarding generation (0 when never enrolled)."""
        value = self.conn.execute(select(func.max(sensors.c.generation)).where(sensors.c.machine_id == machine_id)).scalar()
        return int(value or 0)

    def current_for_machine(self, machine_id: str) -> dict[str, Any] | None:
        """The machine's current (not superseded) sensor, or None."""
        row = (
            self.conn.execute(select(sensors).where(sensors.c.machine_id == machine_id, sensors.c.superseded_at.is_(None)))
            .mappings()
            .first()
        )
        return dict(row) if row else None

    def supersede(self, machine_id: str, at: datetime) -> None:
        """Retire every current credential of the machine."""
        self.conn.execute(
            update(sensors).where(sensors.c.machine_id == machine_id, sensors.c.superseded_at.is_(None)).values(superseded_at=at)
        )

    def by_credential_hash(self, credential_hash: str) -> dict[str, Any] | None:
        """The current (not superseded) sensor with this credential, or None."""
        on_driver = _on_driver(self.conn)
        if on_driver is not None:
            return DirectSensorReads(*on_driver).by_credential_hash(credential_hash)
        row = (
            self.conn.execute(
                select(sensors).where(sensors.c.credential_hash == credential_hash, sensors.c.superseded_at.is_(None))
            )
            .mappings()
            .first()
        )
        return dict(row) if row else None

    def is_current(self, sensor_id: str) -> bool:
        """Whether the sensor's credential has not been superseded."""
        on_driver = _on_driver(self.conn)
        if on_driver is not None:
            return DirectSensorReads(*on_driver).is_current(sensor_id)
        row = self.conn.execute(select(sensors.c.superseded_at).where(sensors.c.id == sensor_id)).first()
        return row is not None and row[0] is None


class AuditRepository:
    """The append-only audit log: rows are inserted and listed, never updated or deleted."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def append(self, **event: Any) -> None:
        """Record one event."""
        _insert(self.conn, audit_events, _INSERT_AUDIT, event)

    def search(
        self,
        principal: Principal,
        *,
        action: str | None = None,
        actor: str | None = None,
        machine_id: str | None = None,
        outcome: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        """Events of the caller's tenant, newest first, on machines the caller may see (or on none).

        ``actor`` matches the start of the actor's name, case-insensitively; ``outcome`` is
        "success" (status below 400) or "refused".
        """
        visible = select(machines.c.id).where(visibility_clause(principal))
        stmt = (
            select(audit_events)
            .where(
                audit_events.c.tenant_id == principal.tenant_id,
                or_(audit_events.c.machine_id.is_(None), audit_events.c.machine_id.in_(visible)),
            )
            .order_by(audit_events.c.id.desc())
            .limit(limit)
            .offset(offset)
        )
        if action:
            stmt = stmt.where(audit_events.c.action == action)
        if actor:
            escaped = actor.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            stmt = stmt.where(func.lower(audit_events.c.actor_name).like(f"{escaped}%", escape="\\"))
        if machine_id:
            stmt = stmt.where(audit_events.c.machine_id == machine_id)
        if outcome == "success":
            stmt = stmt.where(audit_events.c.outcome_status < 400)
        elif outcome == "refused":
            stmt = stmt.where(audit_events.c.outcome_status >= 400)
        if since:
            stmt = stmt.where(audit_events.c.occurred_at >= since)
        if until:
            stmt = stmt.where(audit_events.c.occurred_at <= until)
        return [dict(r) for r in self.conn.execute(stmt).mappings()]

    def action_names(self, tenant_id: str) -> list[str]:
        """The distinct event names recorded in a tenant, for filters."""
        stmt = (
            select(audit_events.c.action).where(audit_events.c.tenant_id == tenant_id).distinct().order_by(audit_events.c.action)
        )
        return list(self.conn.execute(stmt).scalars())

    def list(
        self,
        tenant_id: str | None = None,
        limit: int | None = 100,
        *,
        action: str | None = None,
        machine_id: str | None = None,
        caller: str | None = None,
        since: datetime | None = None,
    ) -> list[dict[str, Any]]:
        """The newest events, newest first, that match every filter given.

        ``action`` matches the action name or a dotted prefix of it (``machine_action.offboard``
        matches ``machine_action.offboard.requested``); ``machine_id`` and ``caller`` (the actor's
        name or id) match whole values in any case; ``since`` keeps events at or after that instant.
        ``limit`` None means every match.
        """
        c = audit_events.c
        stmt = select(audit_events).order_by(c.id.desc())
        if tenant_id:
            stmt = stmt.where(c.tenant_id == tenant_id)
        if action:
            prefix = action.rstrip(".").replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + ".%"
            stmt = stmt.where(or_(c.action == action, c.action.like(prefix, escape="\\")))
        if machine_id:
            stmt = stmt.where(func.lower(c.machine_id) == machine_id.lower())
        if caller:
            stmt = stmt.where(or_(func.lower(c.actor_name) == caller.lower(), func.lower(c.actor_id) == caller.lower()))
        if since is not None:
            stmt = stmt.where(c.occurred_at >= since)
        if limit is not None:
            stmt = stmt.limit(limit)
        return [dict(r) for r in self.conn.execute(stmt).mappings()]
