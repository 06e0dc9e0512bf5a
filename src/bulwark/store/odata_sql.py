"""Compile validated OData queries to SQLAlchemy Core that returns the same rows on SQLite and PostgreSQL."""

from __future__ import annotations

import operator as py_operator
import re
import string
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, TypeAlias

from sqlalchemy import BigInteger, ColumnElement, Select, String, and_, exists, func, literal, not_, or_, select, true
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import operators
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import UnaryExpression
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import TypeDecorator

from bulwark.odata import (
    And,
    CollectionAny,
    Comparison,
    ComparisonOperator,
    EntitySpec,
    Filter,
    In,
    Not,
    ODataQuery,
    Or,
    OrderByItem,
    PropertyType,
    StringFunction,
    StringMatch,
    Value,
)

__all__ = [
    "CollectionSpec",
    "apply_filter",
    "apply_orderby",
    "apply_page",
    "apply_query",
    "compile_filter",
    "compile_orderby",
    "count_rows",
    "fold_ascii",
    "fold_case",
    "snake_case_columns",
]


@dataclass(frozen=True)
class CollectionSpec:
    """Where a string-collection property is stored: one row per element in a child table.

    For machine tags stored as ``machine_tags(machine_id, tag)``::

        CollectionSpec(element=machine_tags.c.tag, owner_key=machine_tags.c.machine_id,
                       parent_key=machines.c.id)

    ``any()`` compiles to ``EXISTS (SELECT 1 FROM machine_tags WHERE machine_id = machines.id AND ...)``.
    """

    element: ColumnElement[str]
    owner_key: ColumnElement
    parent_key: ColumnElement


Columns: TypeAlias = Mapping[str, ColumnElement]
Collections: TypeAlias = Mapping[str, CollectionSpec]
_NO_COLLECTIONS: Collections = MappingProxyType({})


# --------------------------------------------------------------------------- portable string handling


class _AsciiLower(FunctionElement[str]):
    """lower() folding ASCII letters only and yielding byte-wise collation, on every engine."""

    name = "ascii_lower"
    type = String()
    inherit_cache = True


@compiles(_AsciiLower)
def _ascii_lower_default(element: _AsciiLower, compiler: SQLCompiler, **kw: object) -> str:
    # SQLite's built-in lower() folds ASCII letters only (without the ICU extension).
    (argument,) = element.clauses.clauses
    return compiler.process(func.lower(argument), **kw)


@compiles(_AsciiLower, "postgresql")
def _ascii_lower_postgresql(element: _AsciiLower, compiler: SQLCompiler, **kw: object) -> str:
    # Under the "C" collation PostgreSQL's lower() touches ASCII letters only, as SQLite's does.
    (argument,) = element.clauses.clauses
    return compiler.process(func.lower(argument.collate("C")), **kw)


class _Bytewise(FunctionElement[str]):
    """The argument itself, compared byte-wise (SQLite's default; PostgreSQL needs COLLATE "C")."""

    name = "bytewise"
    inherit_cache = True

    def __init__(self, argument: ColumnElement) -> None:
        super().__init__(argument)
        self.type = argument.type


@compiles(_Bytewise)
def _bytewise_default(element: _Bytewise, compiler: SQLCompiler, **kw: object) -> str:
    (argument,) = element.clauses.clauses
    return compiler.process(argument, **kw)


@compiles(_Bytewise, "postgresql")
def _bytewise_postgresql(element: _Bytewise, compiler: SQLCompiler, **kw: object) -> str:
    (argument,) = element.clauses.clauses
    return compiler.process(argument.collate("C"), **kw)


_ASCII_FOLD_TABLE = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def fold_case(expression: ColumnElement) -> ColumnElement[str]:
    """The case-insensitive key used for string comparisons (also what to build expression indexes on)."""
    return _AsciiLower(expression)


def fold_ascii(value: str) -> str:
    """``value`` folded the way ``fold_case`` folds a column (ASCII letters only)."""
    return value.translate(_ASCII_FOLD_TABLE)


_fold_literal = fold_ascii


# --------------------------------------------------------------------------- $filter


# Any, Any: SQLAlchemy overloads the operators on its expressions, which typeshed's signatures do not know.
_OPERATORS: Mapping[ComparisonOperator, Callable[[Any, Any], ColumnElement[bool]]] = {
    ComparisonOperator.EQ: py_operator.eq,
    ComparisonOperator.NE: py_operator.ne,
    ComparisonOperator.GT: py_operator.gt,
    ComparisonOperator.GE: py_operator.ge,
    ComparisonOperator.LT: py_operator.lt,
    ComparisonOperator.LE: py_operator.le,
}


def _column(columns: Columns, name: str) -> ColumnElement:
    try:
        return columns[name]
    except KeyError:
        raise LookupError(f"no column is mapped for OData property {name!r}") from None


def _may_be_null(column: ColumnElement) -> bool:
    # Only real Column objects know; anything else (labels, expressions) is treated as nullable.
    return bool(getattr(column, "nullable", True))


def _known(column: ColumnElement, predicate: ColumnElement[bool]) -> ColumnElement[bool]:
    """`predicate`, but false rather than unknown when the column is null."""
    return and_(column.is_not(None), predicate) if _may_be_null(column) else predicate


def _column_time(value: datetime, column: ColumnElement) -> datetime:
    # Timezone-aware columns, and type decorators that convert aware values themselves (Bulwark's
    # UtcDateTime), take the aware value; plain naive columns get naive UTC.
    if getattr(column.type, "timezone", False) or isinstance(column.type, TypeDecorator):
        return value
    return value.astimezone(UTC).replace(tzinfo=None)


def _comparable(column: ColumnElement, property_type: PropertyType, value: Value) -> tuple[ColumnElement, object]:
    """The column-side expression and the parameter value to compare for one literal."""
    if property_type is PropertyType.STRING:
        assert isinstance(value, str)
        return fold_case(column), _fold_literal(value)
    if property_type is PropertyType.DATETIME:
        assert isinstance(value, datetime)
        return column, _column_time(value, column)
    if property_type is PropertyType.INT:
        # Bound as BIGINT: the parser allows any 64-bit value, and PostgreSQL would reject one
        # cast to the column's narrower INTEGER type instead of just finding no match.
        return column, literal(value, BigInteger())
    return column, value


def _stored_lowercase(column: ColumnElement, property_type: PropertyType) -> bool:
    # Columns marked info={"stored_lowercase": True} (ids) only ever hold lowercase ASCII, so
    # equality on the folded value equals equality on the column itself, which can use its index.
    return property_type is PropertyType.STRING and bool(getattr(column, "info", {}).get("stored_lowercase"))


def _compile_comparison(node: Comparison, columns: Columns) -> ColumnElement[bool]:
    column = _column(columns, node.property)
    if node.value is None:
        return column.is_(None) if node.operator is ComparisonOperator.EQ else column.is_not(None)
    left: ColumnElement
    right: object
    if node.operator in (ComparisonOperator.EQ, ComparisonOperator.NE) and _stored_lowercase(column, node.type):
        left, right = column, _fold_literal(str(node.value))
    else:
        left, right = _comparable(column, node.type, node.value)
    predicate = _OPERATORS[node.operator](left, right)
    if node.operator is ComparisonOperator.NE:
        return or_(column.is_(None), predicate) if _may_be_null(column) else predicate
    return _known(column, predicate)


def _compile_in(node: In, columns: Columns) -> ColumnElement[bool]:
    column = _column(columns, node.property)
    present = [value for value in node.values if value is not None]
    clauses: list[ColumnElement[bool]] = []
    if present and _stored_lowercase(column, node.type):
        clauses.append(_known(column, column.in_([_fold_literal(str(value)) for value in present])))
    elif present:
        pairs = [_comparable(column, node.type, value) for value in present]
        left = pairs[0][0]
        clauses.append(_known(column, left.in_([right for _, right in pairs])))
    if len(present) != len(node.values):
        clauses.append(column.is_(None))
    return or_(*clauses) if len(clauses) > 1 else clauses[0]


def _compile_string_match(node: StringMatch, columns: Columns) -> ColumnElement[bool]:
    column = _column(columns, node.property)
    folded = fold_case(column)
    value = _fold_literal(node.value)
    # autoescape escapes %, _ and the escape character itself, and keeps the value a bound parameter.
    if node.function is StringFunction.STARTSWITH:
        predicate = folded.startswith(value, autoescape=True)
        if value and ord(value[-1]) < 0x10FFFF:
            # The same prefix as a byte-wise range, which an index on fold_case(column) can serve
            # (LIKE alone cannot use an expression index); LIKE still decides the exact match.
            upper = value[:-1] + chr(ord(value[-1]) + 1)
            predicate = and_(folded >= value, folded < upper, predicate)
    elif node.function is StringFunction.ENDSWITH:
        predicate = folded.endswith(value, autoescape=True)
    else:
        predicate = folded.contains(value, autoescape=True)
    return _known(column, predicate)


def _compile_any(node: CollectionAny, collections: Collections) -> ColumnElement[bool]:
    try:
        collection = collections[node.collection]
    except KeyError:
        raise LookupError(f"no CollectionSpec is mapped for OData collection {node.collection!r}") from None
    conditions: list[ColumnElement[bool]] = [collection.owner_key == collection.parent_key]
    if node.predicate is not None:
        conditions.append(_compile(node.predicate, {node.collection: collection.element}, _NO_COLLECTIONS))
    element_exists = exists().where(*conditions)
    # Correlate everything but the child table, so the EXISTS refers to the outer query's row.
    owner_table = getattr(collection.owner_key, "table", None)
    if owner_table is not None:
        element_exists = element_exists.correlate_except(owner_table)
    return element_exists


def _compile(node: Filter, columns: Columns, collections: Collections) -> ColumnElement[bool]:
    if isinstance(node, Comparison):
        return _compile_comparison(node, columns)
    if isinstance(node, In):
        return _compile_in(node, columns)
    if isinstance(node, StringMatch):
        return _compile_string_match(node, columns)
    if isinstance(node, And):
        return and_(*(_compile(operand, columns, collections) for operand in node.operands))
    if isinstance(node, Or):
        return or_(*(_compile(operand, columns, collections) for operand in node.operands))
    if isinstance(node, Not):
        return not_(_compile(node.operand, columns, collections))
    if isinstance(node, CollectionAny):
        return _compile_any(node, collections)
    raise TypeError(f"not an OData filter node: {node!r}")


def compile_filter(
    query_filter: Filter | None,
    columns: Columns,
    collections: Collections = _NO_COLLECTIONS,
) -> ColumnElement[bool]:
    """Compile a parsed $filter to a boolean SQL expression (``true()`` when there is no filter).

    ``columns`` maps each wire property name the filter may use to its column (or any column
    expression); ``collections`` maps string-collection properties to where their elements live.
    A property missing from either mapping raises LookupError: that is a wiring bug, not a client error.

    Semantics, the same on SQLite and PostgreSQL:

    - String comparisons (eq, ne, gt, ge, lt, le, in, startswith, endswith, contains, also inside
      any()) ignore the case of ASCII letters; other characters compare exactly. Host names, UPNs,
      GUIDs and hex ids are case-insensitive by nature, so a client never misses a row for writing
      ``MyHost`` instead of ``myhost``. Both sides go through ``fold_case``: SQLite's ``lower()``
      folds ASCII only, and PostgreSQL's ``lower(x COLLATE "C")`` does the same and compares
      byte-wise rather than by the database locale. An expression index on ``fold_case(column)``
      serves these comparisons on PostgreSQL.
    - Enum properties compare exactly with the canonical spelling the parser normalised to.
    - LIKE wildcards (``%``, ``_``) and the escape character in user input are escaped, so
      ``contains(computerDnsName,'50%')`` matches a literal percent sign.
    - Nulls follow OData's two-valued logic: ``null eq 'x'`` is false and ``null ne 'x'`` is true,
      so ``healthStatus ne 'Active'`` includes rows without a health status and ``not (...)`` is the
      exact complement. Columns declared NOT NULL get no extra null tests.
    - Datetimes compare as naive UTC values unless the column is ``DateTime(timezone=True)``.
    - Integers are bound as BIGINT, so any 64-bit literal works against narrower columns.

    Every literal is a bound parameter; no client text is ever pasted into SQL.
    """
    if query_filter is None:
        return true()
    return _compile(query_filter, columns, collections)


def apply_filter(
    statement: Select,
    query_filter: Filter | None,
    columns: Columns,
    collections: Collections = _NO_COLLECTIONS,
) -> Select:
    """``statement`` with the compiled $filter added to its WHERE clause (unchanged without a filter)."""
    if query_filter is None:
        return statement
    return statement.where(compile_filter(query_filter, columns, collections))


# --------------------------------------------------------------------------- $orderby, $top, $skip


def _sort_keys(column: ColumnElement, property_type: PropertyType) -> list[ColumnElement]:
    if property_type is PropertyType.STRING:
        return [fold_case(column), _Bytewise(column)]
    if property_type is PropertyType.ENUM:
        return [_Bytewise(column)]
    return [column]


def compile_orderby(orderby: Iterable[OrderByItem], columns: Columns) -> list[UnaryExpression]:
    """ORDER BY clauses for parsed $orderby items.

    Nulls come first ascending and last descending (as OData specifies, on both engines); strings
    sort by their ``fold_case`` form and then byte-wise, enums byte-wise, so PostgreSQL's locale
    cannot order rows differently from SQLite.
    """
    clauses: list[UnaryExpression] = []
    for item in orderby:
        for key in _sort_keys(_column(columns, item.property), item.type):
            clauses.append(key.desc().nulls_last() if item.descending else key.asc().nulls_first())
    return clauses


def apply_orderby(
    statement: Select,
    orderby: Sequence[OrderByItem],
    columns: Columns,
    *,
    default: Sequence[ColumnElement] = (),
    tiebreakers: Sequence[ColumnElement] = (),
) -> Select:
    """Order ``statement`` by the client's $orderby, or by ``default`` when there is none.

    ``tiebreakers`` (normally the primary key, ascending) always come last, so that rows with equal
    sort keys keep one order and $skip/$top pages neither repeat nor miss rows.
    """
    clauses: list[ColumnElement] = list(compile_orderby(orderby, columns)) if orderby else list(default)
    clauses.extend(_tiebreaker(key) for key in tiebreakers)
    return statement.order_by(*clauses) if clauses else statement


def _tiebreaker(key: ColumnElement) -> ColumnElement:
    """``key`` (a column, or ``column.desc()``) made to sort identically on every engine.

    String keys sort byte-wise so that PostgreSQL's locale cannot reorder pages relative to SQLite,
    except ids stored lowercase (hex and GUIDs), which every collation orders alike: sorting them
    as they are lets the database walk an index instead of sorting every matching row.
    """
    column = key.element if isinstance(key, UnaryExpression) else key
    if not isinstance(column.type, String) or getattr(column, "info", {}).get("stored_lowercase"):
        return key
    bytewise = _Bytewise(column)
    descending = isinstance(key, UnaryExpression) and key.modifier is operators.desc_op
    return bytewise.desc() if descending else bytewise


def apply_page(statement: Select, query: ODataQuery) -> Select:
    """Apply $top (or the default page size) and $skip as LIMIT/OFFSET."""
    statement = statement.limit(query.page_size)
    return statement.offset(query.skip) if query.skip else statement


def apply_query(
    statement: Select,
    query: ODataQuery,
    columns: Columns,
    collections: Collections = _NO_COLLECTIONS,
    *,
    default_orderby: Sequence[ColumnElement] = (),
    tiebreakers: Sequence[ColumnElement] = (),
) -> Select:
    """Apply $filter, $orderby, $top and $skip of ``query`` to ``statement`` (one page of results).

    $select and $count are left to the caller: select shapes the response, and the count comes
    from ``count_rows`` over the filtered statement.
    """
    statement = apply_filter(statement, query.filter, columns, collections)
    statement = apply_orderby(statement, query.orderby, columns, default=default_orderby, tiebreakers=tiebreakers)
    return apply_page(statement, query)


def count_rows(statement: Select) -> Select:
    """A ``SELECT count(*)`` over ``statement`` without its ORDER BY, LIMIT and OFFSET ($count semantics)."""
    unpaged = statement.order_by(None).limit(None).offset(None)
    return select(func.count()).select_from(unpaged.subquery())


# --------------------------------------------------------------------------- wiring help

_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def snake_case_columns(table: object, spec: EntitySpec) -> dict[str, ColumnElement]:
    """Map every filterable or sortable scalar property of ``spec`` to the column of ``table`` named
    as its snake_case (``lastSeen`` -> ``last_seen``, ``rbacGroupId`` -> ``rbac_group_id``).

    ``table`` is a Table or an alias of one. Raises LookupError naming the properties with no column.
    """
    table_columns = table.c  # type: ignore[attr-defined]
    mapped: dict[str, ColumnElement] = {}
    missing: list[str] = []
    for wire, prop in spec.properties.items():
        queryable = prop.filterable or prop.sortable
        if not queryable or prop.type is PropertyType.STRING_COLLECTION:
            continue
        column_name = _CAMEL_BOUNDARY.sub("_", wire).lower()
        if column_name in table_columns:
            mapped[wire] = table_columns[column_name]
        else:
            missing.append(f"{wire} (expected column {column_name})")
    if missing:
        raise LookupError(f"{spec.name}: no column for " + ", ".join(missing))
    return mapped
