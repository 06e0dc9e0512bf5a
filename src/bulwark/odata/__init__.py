"""OData system query options: a parser that validates them against entity descriptions.

Below the store: ``bulwark.store.odata_sql`` compiles the parsed query to SQL, and the API only turns
``ODataParseError`` into its error envelope. Nothing here knows about HTTP or a database.
"""

from bulwark.odata.entities import MACHINE_ACTION_SPEC, MACHINE_SPEC
from bulwark.odata.page import Page, StoredMachines
from bulwark.odata.parser import (
    DEFAULT_PAGE_SIZE,
    MAX_FILTER_DEPTH,
    MAX_TOP,
    And,
    CollectionAny,
    Comparison,
    ComparisonOperator,
    EntitySpec,
    Filter,
    In,
    Not,
    ODataParseError,
    ODataQuery,
    Or,
    OrderByItem,
    PropertySpec,
    PropertyType,
    QuerySource,
    StringFunction,
    StringMatch,
    Value,
    parse_filter,
    parse_query,
)

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MACHINE_ACTION_SPEC",
    "MACHINE_SPEC",
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
    "Page",
    "PropertySpec",
    "PropertyType",
    "QuerySource",
    "StoredMachines",
    "StringFunction",
    "StringMatch",
    "Value",
    "parse_filter",
    "parse_query",
]
