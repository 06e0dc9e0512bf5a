"""OData query options ($filter, $top, $skip, $orderby, $select, $count) parsed into a validated AST.

Pure: no web framework, no database. The entity sets it validates against are in ``entities``."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from enum import StrEnum
from types import MappingProxyType
from typing import TypeAlias
from urllib.parse import parse_qsl

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_FILTER_DEPTH",
    "MAX_TOP",
    "And",
    "CollectionAny",
    "Comparison",
    "ComparisonOperator",
    "EntitySpec",
    "Filter",
    "In",
    "Not",
    "ODataParseError",
    "ODataQuery",
    "Or",
    "OrderByItem",
    "PropertySpec",
    "PropertyType",
    "QuerySource",
    "StringFunction",
    "StringMatch",
    "Value",
    "parse_filter",
    "parse_query",
]

MAX_TOP = 10_000
"""Largest $top the live service accepts."""

DEFAULT_PAGE_SIZE = MAX_TOP
"""Rows returned when the client gives no $top."""

MAX_FILTER_DEPTH = 64
"""Deepest nesting of parentheses, not, and any() accepted in $filter (keeps recursion bounded)."""

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_SUPPORTED_OPTIONS = ("$filter", "$top", "$skip", "$orderby", "$select", "$count", "$skiptoken")


class ODataParseError(ValueError):
    """A query option is invalid; `message` says exactly what is wrong and is safe to show the client."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# --------------------------------------------------------------------------- entity descriptions


class PropertyType(StrEnum):
    """The value type of an entity property, as far as querying is concerned."""

    STRING = "string"
    INT = "int"
    DATETIME = "datetime"
    BOOL = "bool"
    ENUM = "enum"
    STRING_COLLECTION = "string_collection"
    COMPLEX = "complex"
    """A structured JSON value (object or array of objects): selectable, never filterable or sortable."""


@dataclass(frozen=True)
class PropertySpec:
    """How one property may be queried."""

    type: PropertyType
    filterable: bool = False
    sortable: bool = False
    enum_values: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if (self.type is PropertyType.ENUM) != bool(self.enum_values):
            raise ValueError("enum_values must be given for enum properties and only for them")
        if self.type is PropertyType.COMPLEX and (self.filterable or self.sortable):
            raise ValueError("complex properties can be neither filtered nor sorted")
        if self.type is PropertyType.STRING_COLLECTION and self.sortable:
            raise ValueError("collections cannot be sorted")


@dataclass(frozen=True, eq=False)
class EntitySpec:
    """An entity set as the query layer sees it: wire property names (in emission order) and their rules."""

    name: str
    properties: Mapping[str, PropertySpec]
    _by_lower_name: Mapping[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "properties", MappingProxyType(dict(self.properties)))
        by_lower = {wire.lower(): wire for wire in self.properties}
        if len(by_lower) != len(self.properties):
            raise ValueError(f"{self.name} has property names that differ only in case")
        object.__setattr__(self, "_by_lower_name", MappingProxyType(by_lower))

    def resolve(self, name: str) -> str | None:
        """Return the wire spelling of a property named case-insensitively, or None when there is none."""
        return self._by_lower_name.get(name.lower())

    def filterable_properties(self) -> tuple[str, ...]:
        """Wire names of the properties $filter may use, in emission order."""
        return tuple(wire for wire, prop in self.properties.items() if prop.filterable)

    def sortable_properties(self) -> tuple[str, ...]:
        """Wire names of the properties $orderby may use, in emission order."""
        return tuple(wire for wire, prop in self.properties.items() if prop.sortable)


# --------------------------------------------------------------------------- the AST

Value: TypeAlias = str | int | bool | datetime | None
"""A literal after validation: datetimes are timezone-aware UTC; enum strings use the canonical spelling."""


class ComparisonOperator(StrEnum):
    """Binary comparison operators of $filter."""

    EQ = "eq"
    NE = "ne"
    GT = "gt"
    GE = "ge"
    LT = "lt"
    LE = "le"


class StringFunction(StrEnum):
    """Boolean string functions of $filter."""

    STARTSWITH = "startswith"
    ENDSWITH = "endswith"
    CONTAINS = "contains"


@dataclass(frozen=True)
class Comparison:
    """`property operator value`. `value` is None only with eq/ne (null tests).

    Inside `CollectionAny.predicate`, `property` is the collection's name and stands for one element.
    """

    property: str
    type: PropertyType
    operator: ComparisonOperator
    value: Value


@dataclass(frozen=True)
class In:
    """`property in (v1, v2, ...)`; the values are distinct and may include None."""

    property: str
    type: PropertyType
    values: tuple[Value, ...]


@dataclass(frozen=True)
class StringMatch:
    """`startswith|endswith|contains(property, 'value')` on a string property (or a collection element)."""

    function: StringFunction
    property: str
    value: str


@dataclass(frozen=True)
class And:
    """All operands hold (at least two, none of them an And)."""

    operands: tuple[Filter, ...]


@dataclass(frozen=True)
class Or:
    """At least one operand holds (at least two, none of them an Or)."""

    operands: tuple[Filter, ...]


@dataclass(frozen=True)
class Not:
    """The operand does not hold."""

    operand: Filter


@dataclass(frozen=True)
class CollectionAny:
    """`collection/any(x: predicate)`: some element satisfies the predicate.

    Without a predicate (`collection/any()`), the collection is not empty.
    """

    collection: str
    predicate: Filter | None


Filter: TypeAlias = Comparison | In | StringMatch | And | Or | Not | CollectionAny


@dataclass(frozen=True)
class OrderByItem:
    """One `$orderby` key."""

    property: str
    type: PropertyType
    descending: bool = False


@dataclass(frozen=True)
class ODataQuery:
    """All query options of one request, validated against an EntitySpec.

    `top` is None when the client gave none (use DEFAULT_PAGE_SIZE); `select` is None when all
    properties are wanted, otherwise the chosen wire names in the entity's emission order.
    """

    filter: Filter | None = None
    top: int | None = None
    skip: int = 0
    orderby: tuple[OrderByItem, ...] = ()
    select: tuple[str, ...] | None = None
    count: bool = False
    # An opaque position from a previous page's @odata.nextLink (decoded by the store).
    skiptoken: str | None = None

    @property
    def page_size(self) -> int:
        """How many rows to return: the client's $top, or the default page size."""
        return DEFAULT_PAGE_SIZE if self.top is None else self.top


# --------------------------------------------------------------------------- $filter grammar

# Keywords are case-insensitive and end at a word boundary, so properties such as `notes` or
# `android` are never split into a keyword and a rest; their priority beats IDENT on equal matches.
_FILTER_GRAMMAR = r"""
?start: or_expr

?or_expr: and_expr (_OR and_expr)*
?and_expr: unary (_AND unary)*
?unary: _NOT unary -> negation
      | primary
?primary: "(" or_expr ")"
        | comparison
        | membership
        | string_call
        | string_call_compared
        | lambda_call

comparison: operand COMPARE value
membership: operand _IN "(" value ("," value)* ")"
string_call: STRING_FUNCTION "(" operand "," value ")"
string_call_compared: string_call COMPARE value
lambda_call: IDENT "/" LAMBDA_OPERATOR "(" [IDENT ":" or_expr] ")"
operand: IDENT
       | CASE_FUNCTION "(" IDENT ")"
?value: STRING | DATETIME | NUMBER | TRUE | FALSE | NULL

COMPARE.2: /(eq|ne|gt|ge|lt|le)\b/i
_AND.2: /and\b/i
_OR.2: /or\b/i
_NOT.2: /not\b/i
_IN.2: /in\b/i
STRING_FUNCTION.2: /(startswith|endswith|contains)\b/i
CASE_FUNCTION.2: /(tolower|toupper)\b/i
LAMBDA_OPERATOR.2: /(any|all)\b/i
TRUE.2: /true\b/i
FALSE.2: /false\b/i
NULL.2: /null\b/i
IDENT: /[A-Za-z_][A-Za-z0-9_]*/
STRING: /'(?:[^']|'')*'/
DATETIME.3: /\d{4}-\d{2}-\d{2}(?:[Tt]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?(?:[Zz]|[+-]\d{2}:\d{2})?(?![\w.:-])/
NUMBER: /[+-]?\d+(?:\.\d+)?(?![\w.:-])/

%ignore /\s+/
"""

_FILTER_PARSER = Lark(_FILTER_GRAMMAR, parser="lalr", maybe_placeholders=True)

# How expected terminals are named in syntax errors.
_TERMINAL_DESCRIPTIONS = {
    "COMPARE": "a comparison operator (eq, ne, gt, ge, lt, le)",
    "IDENT": "a property name",
    "STRING": "a value",
    "DATETIME": "a value",
    "NUMBER": "a value",
    "TRUE": "a value",
    "FALSE": "a value",
    "NULL": "a value",
    "STRING_FUNCTION": "a function",
    "CASE_FUNCTION": "a function",
    "LAMBDA_OPERATOR": "'any'",
    "_AND": "'and'",
    "_OR": "'or'",
    "_NOT": "'not'",
    "_IN": "'in'",
    "LPAR": "'('",
    "RPAR": "')'",
    "COMMA": "','",
    "COLON": "':'",
    "SLASH": "'/'",
    "$END": "the end of the filter",
}

_DATETIME_PATTERN = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})"
    r"(?:[Tt](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?"
    r"([Zz]|[+-]\d{2}:\d{2})?"
)


def _syntax_error(text: str, error: UnexpectedInput) -> ODataParseError:
    """Turn a lark error into a message with a 1-based character position in the $filter text."""
    if isinstance(error, UnexpectedCharacters):
        position = error.pos_in_stream or 0
        char = text[position]
        if char == "'":
            detail = "unterminated string literal (a quote inside a string is written as '')"
        elif char == '"':
            detail = "string literals are written in single quotes"
        elif char.isdigit() or char in "+-":
            detail = f"malformed number or date starting with {char!r} (dates look like 2024-01-01Z)"
        else:
            detail = f"unexpected character {char!r}"
        return ODataParseError(f"Syntax error at position {position + 1} in $filter: {detail}")
    if isinstance(error, UnexpectedToken):
        token = error.token
        # accepts() replays the parser, so it lists only tokens that really continue the input
        # (error.expected can include ones that an LALR default reduction has already ruled out).
        acceptable = error.interactive_parser.accepts() if error.interactive_parser else error.expected
        expected = sorted({_TERMINAL_DESCRIPTIONS.get(name, name) for name in acceptable})
        if token.type == "$END":
            position, found = len(text.rstrip()), "end of filter"
        else:
            position, found = token.start_pos, repr(str(token))
        return ODataParseError(
            f"Syntax error at position {position + 1} in $filter: unexpected {found}; expected {' or '.join(expected)}"
        )
    return ODataParseError(f"Syntax error in $filter: {error}")  # pragma: no cover - lalr raises only the two above


def _parse_datetime(text: str) -> datetime | None:
    """Parse an OData date or date-time literal into an aware UTC datetime; None when it is not one.

    A missing offset means UTC. Fractional seconds beyond microseconds are truncated.
    """
    match = _DATETIME_PATTERN.fullmatch(text.strip())
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    tz = UTC
    if offset and offset not in "Zz":
        sign = -1 if offset[0] == "-" else 1
        hours, minutes = int(offset[1:3]), int(offset[4:6])
        if hours > 23 or minutes > 59:
            return None
        tz = timezone(sign * timedelta(hours=hours, minutes=minutes))
    try:
        parsed = datetime(
            int(year),
            int(month),
            int(day),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            int((fraction or "0")[:6].ljust(6, "0")),
            tzinfo=tz,
        )
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


@dataclass(frozen=True)
class _Target:
    """What an operand refers to after resolution."""

    property: str
    type: PropertyType
    label: str  # how messages name it: "property 'lastSeen'" or "lambda variable 't'"


@dataclass(frozen=True)
class _Scope:
    """The lambda variable in force inside any(), if any."""

    variable: str
    collection: str


class _FilterBuilder:
    """Walks the lark parse tree and builds the validated AST for one EntitySpec."""

    def __init__(self, spec: EntitySpec) -> None:
        self.spec = spec

    def build(self, node: Tree, scope: _Scope | None, depth: int) -> Filter:
        if depth > MAX_FILTER_DEPTH:
            raise ODataParseError(f"Invalid filter clause: nesting deeper than {MAX_FILTER_DEPTH} levels")
        kind = node.data
        if kind == "or_expr":
            return Or(self._flatten(Or, node.children, scope, depth))
        if kind == "and_expr":
            return And(self._flatten(And, node.children, scope, depth))
        if kind == "negation":
            return Not(self.build(node.children[0], scope, depth + 1))
        if kind == "comparison":
            return self._comparison(node, scope)
        if kind == "membership":
            return self._membership(node, scope)
        if kind == "string_call":
            return self._string_call(node, scope)
        if kind == "string_call_compared":
            return self._string_call_compared(node, scope)
        if kind == "lambda_call":
            return self._lambda(node, scope, depth)
        raise AssertionError(f"unhandled parse node {kind}")  # pragma: no cover - grammar and builder disagree

    def _flatten(self, kind: type[And] | type[Or], children: list, scope: _Scope | None, depth: int) -> tuple:
        operands: list[Filter] = []
        for child in children:
            built = self.build(child, scope, depth + 1)
            # Parenthesised groups of the same connective add nothing: (a or b) or c == a or b or c.
            operands.extend(built.operands if isinstance(built, kind) else (built,))
        return tuple(operands)

    # ---- operands

    def _operand(self, node: Tree, scope: _Scope | None) -> _Target:
        if len(node.children) == 1:
            (ident,) = node.children
            return self._resolve(_token(ident), scope)
        function, ident = (_token(child) for child in node.children)
        target = self._resolve(ident, scope)
        if target.type not in (PropertyType.STRING, PropertyType.ENUM):
            raise ODataParseError(
                f"Invalid filter clause: {function.lower()}() needs a string argument; {target.label} is of type {target.type}"
            )
        # Comparisons are case-insensitive already, so tolower()/toupper() change nothing.
        return target

    def _resolve(self, ident: Token, scope: _Scope | None) -> _Target:
        name = str(ident)
        if scope is not None:
            if name.lower() == scope.variable.lower():
                return _Target(scope.collection, PropertyType.STRING, f"lambda variable '{name}'")
            raise ODataParseError(
                f"Invalid filter clause: inside {scope.collection}/any() only the lambda variable "
                f"'{scope.variable}' can be used, not '{name}'"
            )
        wire = self._filterable_property(name)
        prop = self.spec.properties[wire]
        if prop.type is PropertyType.STRING_COLLECTION:
            raise ODataParseError(
                f"Invalid filter clause: property '{wire}' is a collection; test its elements with {wire}/any(t: t eq 'value')"
            )
        return _Target(wire, prop.type, f"property '{wire}'")

    def _filterable_property(self, name: str) -> str:
        wire = self.spec.resolve(name)
        if wire is None:
            raise ODataParseError(
                f"Invalid filter clause: property '{name}' is not supported for filtering: {self.spec.name} has no such property"
            )
        if not self.spec.properties[wire].filterable:
            allowed = ", ".join(self.spec.filterable_properties())
            raise ODataParseError(
                f"Invalid filter clause: property '{wire}' is not supported for filtering; filterable properties: {allowed}"
            )
        return wire

    # ---- literals

    def _value(self, token: Token, target: _Target) -> Value:
        """Convert a literal token to the target's type, or explain why it does not fit."""
        kind, text = token.type, str(token)
        if kind == "NULL":
            return None
        mismatch = ODataParseError(
            f"Invalid filter clause: {target.label} is of type {target.type}; "
            f"{text} is not a valid {target.type} value{_type_hint(target)}"
        )
        if target.type is PropertyType.STRING:
            if kind != "STRING":
                raise mismatch
            return _unquote(text)
        if target.type is PropertyType.ENUM:
            if kind != "STRING":
                raise mismatch
            return self._enum_value(_unquote(text), target)
        if target.type is PropertyType.INT:
            if kind != "NUMBER" or "." in text:
                raise mismatch
            number = int(text)
            if not _INT64_MIN <= number <= _INT64_MAX:
                raise ODataParseError(f"Invalid filter clause: {text} is out of range for {target.label}")
            return number
        if target.type is PropertyType.DATETIME:
            if kind not in ("DATETIME", "STRING"):
                raise mismatch
            parsed = _parse_datetime(_unquote(text) if kind == "STRING" else text)
            if parsed is None:
                raise mismatch
            return parsed
        if target.type is PropertyType.BOOL:
            if kind not in ("TRUE", "FALSE"):
                raise mismatch
            return kind == "TRUE"
        raise mismatch  # pragma: no cover - complex and collection properties never reach here

    def _enum_value(self, text: str, target: _Target) -> str:
        values = self.spec.properties[target.property].enum_values
        for canonical in values:
            if canonical.lower() == text.lower():
                return canonical
        raise ODataParseError(
            f"Invalid filter clause: '{text}' is not a valid value for {target.label}; valid values: {', '.join(values)}"
        )

    # ---- predicates

    def _comparison(self, node: Tree, scope: _Scope | None) -> Comparison:
        operand, operator_child, value_child = node.children
        operator_token, value_token = _token(operator_child), _token(value_child)
        target = self._operand(operand, scope)
        operator = ComparisonOperator(operator_token.lower())
        value = self._value(value_token, target)
        if value is None and operator not in (ComparisonOperator.EQ, ComparisonOperator.NE):
            raise ODataParseError(f"Invalid filter clause: null can only be compared with eq or ne, not {operator}")
        ordered = operator not in (ComparisonOperator.EQ, ComparisonOperator.NE)
        if ordered and target.type in (PropertyType.ENUM, PropertyType.BOOL):
            raise ODataParseError(
                f"Invalid filter clause: operator '{operator}' is not supported for {target.type} "
                f"{target.label}; use eq, ne or in"
            )
        return Comparison(target.property, target.type, operator, value)

    def _membership(self, node: Tree, scope: _Scope | None) -> In:
        operand, *value_tokens = node.children
        target = self._operand(operand, scope)
        if target.type is PropertyType.BOOL:
            raise ODataParseError(f"Invalid filter clause: 'in' is not supported for bool {target.label}")
        values = tuple(dict.fromkeys(self._value(_token(token), target) for token in value_tokens))
        return In(target.property, target.type, values)

    def _string_call(self, node: Tree, scope: _Scope | None) -> StringMatch:
        function_child, operand, value_child = node.children
        function_token, value_token = _token(function_child), _token(value_child)
        function = StringFunction(function_token.lower())
        target = self._operand(operand, scope)
        if target.type is not PropertyType.STRING:
            raise ODataParseError(
                f"Invalid filter clause: {function}() needs a string argument; {target.label} is of type {target.type}"
            )
        if value_token.type != "STRING":
            raise ODataParseError(
                f"Invalid filter clause: the second argument of {function}() must be a quoted string, not {value_token}"
            )
        return StringMatch(function, target.property, _unquote(str(value_token)))

    def _string_call_compared(self, node: Tree, scope: _Scope | None) -> Filter:
        call, operator_child, value_child = node.children
        operator_token, value_token = _token(operator_child), _token(value_child)
        match = self._string_call(call, scope)
        operator = operator_token.lower()
        if operator not in ("eq", "ne") or value_token.type not in ("TRUE", "FALSE"):
            raise ODataParseError(
                f"Invalid filter clause: the result of {match.function}() can only be compared with eq or ne to true or false"
            )
        wanted = (value_token.type == "TRUE") == (operator == "eq")
        return match if wanted else Not(match)

    def _lambda(self, node: Tree, scope: _Scope | None, depth: int) -> CollectionAny:
        collection_token, operator_child, variable, body = node.children
        operator_token = _token(operator_child)
        name = str(collection_token)
        if scope is not None:
            raise ODataParseError(f"Invalid filter clause: {name}/{operator_token.lower()}() cannot be nested in another lambda")
        wire = self._filterable_property(name)
        prop = self.spec.properties[wire]
        if prop.type is not PropertyType.STRING_COLLECTION:
            raise ODataParseError(
                f"Invalid filter clause: {operator_token.lower()}() needs a collection property; '{wire}' is of type {prop.type}"
            )
        if operator_token.lower() != "any":
            raise ODataParseError(f"Invalid filter clause: {wire}/{operator_token.lower()}() is not supported; use any()")
        if variable is None:
            return CollectionAny(wire, None)
        predicate = self.build(body, _Scope(str(variable), wire), depth + 1)
        return CollectionAny(wire, predicate)


def _token(child: Token | Tree[Token] | None) -> Token:
    """A leaf of the parse tree where the grammar puts one (a bug in the grammar if not)."""
    assert isinstance(child, Token), child
    return child


def _unquote(literal: str) -> str:
    """The text of a single-quoted OData string literal, with '' turned back into '."""
    return literal[1:-1].replace("''", "'")


def _type_hint(target: _Target) -> str:
    hints = {
        PropertyType.STRING: "; put the value in single quotes",
        PropertyType.ENUM: "; put the value in single quotes",
        PropertyType.INT: "; use a whole number",
        PropertyType.DATETIME: "; use a date such as 2024-01-01Z or 2024-01-01T00:00:00Z",
        PropertyType.BOOL: "; use true or false",
    }
    return hints.get(target.type, "")


def parse_filter(text: str, spec: EntitySpec) -> Filter:
    """Parse and validate a $filter expression for `spec`.

    Raises ODataParseError for syntax errors (with a 1-based character position), unknown or
    non-filterable properties, and literals that do not fit the property's type.
    """
    if not text.strip():
        raise ODataParseError("Invalid filter clause: the $filter option is empty")
    try:
        tree = _FILTER_PARSER.parse(text)
    except UnexpectedInput as error:
        raise _syntax_error(text, error) from None
    if isinstance(tree, Token):  # pragma: no cover - the grammar has no bare-token filters
        raise ODataParseError("Invalid filter clause: not a boolean expression")
    return _FilterBuilder(spec).build(tree, None, 0)


# --------------------------------------------------------------------------- the other options


def _parse_whole_number(text: str, option: str, maximum: int) -> int:
    stripped = text.strip()
    if not stripped.isascii() or not stripped.isdigit():
        raise ODataParseError(f"Invalid value for {option}: '{text}' is not a non-negative whole number")
    number = int(stripped)
    if number > maximum:
        raise ODataParseError(f"Invalid value for {option}: {number} exceeds the maximum of {maximum}")
    return number


def _parse_orderby(text: str, spec: EntitySpec) -> tuple[OrderByItem, ...]:
    items: list[OrderByItem] = []
    seen: set[str] = set()
    for raw_item in text.split(","):
        words = raw_item.split()
        if not words or len(words) > 2:
            raise ODataParseError(
                f"Invalid $orderby clause: '{raw_item.strip()}' is not of the form 'property' or 'property asc|desc'"
            )
        name = words[0]
        direction = words[1].lower() if len(words) == 2 else "asc"
        if direction not in ("asc", "desc"):
            raise ODataParseError(f"Invalid $orderby clause: sort direction '{words[1]}' must be asc or desc")
        wire = spec.resolve(name)
        if wire is None:
            raise ODataParseError(
                f"Invalid $orderby clause: property '{name}' is not supported for sorting: {spec.name} has no such property"
            )
        prop = spec.properties[wire]
        if not prop.sortable:
            allowed = ", ".join(spec.sortable_properties())
            raise ODataParseError(
                f"Invalid $orderby clause: property '{wire}' is not supported for sorting; sortable properties: {allowed}"
            )
        if wire in seen:
            raise ODataParseError(f"Invalid $orderby clause: property '{wire}' appears more than once")
        seen.add(wire)
        items.append(OrderByItem(wire, prop.type, descending=direction == "desc"))
    return tuple(items)


def _parse_select(text: str, spec: EntitySpec) -> tuple[str, ...] | None:
    chosen: set[str] = set()
    for raw_name in text.split(","):
        name = raw_name.strip()
        if not name:
            raise ODataParseError(f"Invalid $select clause: empty property name in '{text.strip()}'")
        if name == "*":
            return None
        wire = spec.resolve(name)
        if wire is None:
            raise ODataParseError(f"Invalid $select clause: {spec.name} has no property '{name}'")
        chosen.add(wire)
    return tuple(wire for wire in spec.properties if wire in chosen)


def _parse_bool_option(text: str, option: str) -> bool:
    value = text.strip().lower()
    if value not in ("true", "false"):
        raise ODataParseError(f"Invalid value for {option}: '{text}'; expected true or false")
    return value == "true"


QuerySource: TypeAlias = str | Mapping[str, str] | Iterable[tuple[str, str]]


def _option_pairs(source: QuerySource) -> list[tuple[str, str]]:
    if isinstance(source, str):
        try:
            return parse_qsl(source.removeprefix("?"), keep_blank_values=True, errors="strict")
        except UnicodeDecodeError:
            raise ODataParseError("Invalid query string: percent-encoded bytes are not valid UTF-8") from None
    multi_items = getattr(source, "multi_items", None)  # Starlette's QueryParams keeps repeated keys here
    if callable(multi_items):
        return list(multi_items())
    if isinstance(source, Mapping):
        return list(source.items())
    return list(source)


def parse_query(source: QuerySource, spec: EntitySpec) -> ODataQuery:
    """Parse and validate the OData system query options of one request for `spec`.

    `source` is the raw query string (percent-encoded, `+` for space, optional leading `?`), or
    already-decoded parameters: a mapping, Starlette's QueryParams (repeated keys are seen), or an
    iterable of (name, value) pairs. Option names are matched case-insensitively; parameters not
    starting with `$` are ignored (they belong to the endpoint); unknown `$` options, repeated
    options and empty values raise ODataParseError.
    """
    options: dict[str, str] = {}
    for raw_name, value in _option_pairs(source):
        name = raw_name.strip().lower()
        if not name.startswith("$"):
            continue
        if name not in _SUPPORTED_OPTIONS:
            raise ODataParseError(
                f"The query option '{raw_name.strip()}' is not supported; supported options: {', '.join(_SUPPORTED_OPTIONS)}"
            )
        if name in options:
            raise ODataParseError(f"The query option '{name}' was given more than once")
        if not value.strip():
            raise ODataParseError(f"The query option '{name}' has an empty value")
        options[name] = value

    query_filter = parse_filter(options["$filter"], spec) if "$filter" in options else None
    top = _parse_whole_number(options["$top"], "$top", MAX_TOP) if "$top" in options else None
    skip = _parse_whole_number(options["$skip"], "$skip", _INT64_MAX) if "$skip" in options else 0
    orderby = _parse_orderby(options["$orderby"], spec) if "$orderby" in options else ()
    select = _parse_select(options["$select"], spec) if "$select" in options else None
    count = _parse_bool_option(options["$count"], "$count") if "$count" in options else False
    skiptoken = options.get("$skiptoken")
    return ODataQuery(filter=query_filter, top=top, skip=skip, orderby=orderby, select=select, count=count, skiptoken=skiptoken)
