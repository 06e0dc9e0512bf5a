"""Parsing and validation of OData query options into the query AST."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from starlette.datastructures import QueryParams

from bulwark.odata import (
    DEFAULT_PAGE_SIZE,
    MACHINE_ACTION_SPEC,
    MACHINE_SPEC,
    MAX_FILTER_DEPTH,
    MAX_TOP,
    And,
    CollectionAny,
    Comparison,
    ComparisonOperator,
    EntitySpec,
    In,
    Not,
    ODataParseError,
    ODataQuery,
    Or,
    OrderByItem,
    PropertySpec,
    PropertyType,
    StringFunction,
    StringMatch,
    parse_filter,
    parse_query,
)

S, I, D, B, E = (PropertyType.STRING, PropertyType.INT, PropertyType.DATETIME, PropertyType.BOOL, PropertyType.ENUM)
EQ, NE, GT, GE, LT, LE = (
    ComparisonOperator.EQ,
    ComparisonOperator.NE,
    ComparisonOperator.GT,
    ComparisonOperator.GE,
    ComparisonOperator.LT,
    ComparisonOperator.LE,
)

# A made-up entity covering every property type, with names that begin with filter keywords.
GADGET_SPEC = EntitySpec(
    "Gadget",
    {
        "name": PropertySpec(S, filterable=True, sortable=True),
        "notes": PropertySpec(S, filterable=True),
        "android": PropertySpec(S, filterable=True),
        "orbit": PropertySpec(S, filterable=True),
        "index": PropertySpec(I, filterable=True, sortable=True),
        "eqLevel": PropertySpec(I, filterable=True),
        "enabled": PropertySpec(B, filterable=True),
        "built": PropertySpec(D, filterable=True, sortable=True),
        "kind": PropertySpec(E, filterable=True, enum_values=("Small", "Large")),
        "labels": PropertySpec(PropertyType.STRING_COLLECTION, filterable=True),
        "secret": PropertySpec(S),
        "details": PropertySpec(PropertyType.COMPLEX),
    },
)


def machine(text: str):
    return parse_filter(text, MACHINE_SPEC)


def gadget(text: str):
    return parse_filter(text, GADGET_SPEC)


def error_of(text: str, spec: EntitySpec = MACHINE_SPEC) -> str:
    with pytest.raises(ODataParseError) as caught:
        parse_filter(text, spec)
    assert str(caught.value) == caught.value.message
    return caught.value.message


def query_error_of(source, spec: EntitySpec = MACHINE_SPEC) -> str:
    with pytest.raises(ODataParseError) as caught:
        parse_query(source, spec)
    return caught.value.message


# --------------------------------------------------------------------------- entity specs


def test_machine_spec_lists_every_contract_field_in_emission_order():
    assert list(MACHINE_SPEC.properties) == [
        "id", "computerDnsName", "firstSeen", "lastSeen", "osPlatform", "osProcessor", "version",
        "osBuild", "lastIpAddress", "lastExternalIpAddress", "agentVersion", "healthStatus",
        "deviceValue", "rbacGroupId", "rbacGroupName", "riskScore", "exposureLevel", "isAadJoined",
        "aadDeviceId", "machineTags", "onboardingStatus", "osArchitecture", "ipAddresses", "managedBy",
        "managedByStatus", "isPotentialDuplication", "isExcluded",
    ]  # fmt: skip


def test_machine_action_spec_lists_every_contract_field_in_emission_order():
    assert list(MACHINE_ACTION_SPEC.properties) == [
        "id", "type", "title", "requestor", "requestorComment", "status", "machineId",
        "computerDnsName", "creationDateTimeUtc", "lastUpdateDateTimeUtc", "cancellationRequestor",
        "cancellationComment", "cancellationDateTimeUtc", "errorHResult", "scope", "externalId",
        "requestSource", "relatedFileInfo", "commands", "troubleshootInfo",
    ]  # fmt: skip


def test_filterable_properties_are_exactly_those_the_contract_lists():
    assert set(MACHINE_SPEC.filterable_properties()) == {
        "computerDnsName", "id", "version", "deviceValue", "aadDeviceId", "machineTags", "lastSeen",
        "exposureLevel", "onboardingStatus", "lastIpAddress", "healthStatus", "osPlatform", "riskScore",
        "rbacGroupId",
    }  # fmt: skip
    assert set(MACHINE_ACTION_SPEC.filterable_properties()) == {
        "id",
        "status",
        "machineId",
        "type",
        "requestor",
        "creationDateTimeUtc",
    }


def test_sortable_properties_are_the_filterable_scalars():
    for spec in (MACHINE_SPEC, MACHINE_ACTION_SPEC):
        expected = {
            name for name, prop in spec.properties.items() if prop.filterable and prop.type is not PropertyType.STRING_COLLECTION
        }
        assert set(spec.sortable_properties()) == expected


def test_enum_values_follow_the_contract_spelling():
    assert MACHINE_ACTION_SPEC.properties["status"].enum_values == (
        "Pending", "InProgress", "Succeeded", "Failed", "TimeOut", "Cancelled",
    )  # fmt: skip
    assert MACHINE_SPEC.properties["onboardingStatus"].enum_values == (
        "Onboarded", "CanBeOnboarded", "Unsupported", "InsufficientInfo",
    )  # fmt: skip
    assert MACHINE_SPEC.properties["riskScore"].enum_values == ("None", "Informational", "Low", "Medium", "High")


def test_resolve_matches_names_case_insensitively():
    assert MACHINE_SPEC.resolve("COMPUTERDNSNAME") == "computerDnsName"
    assert MACHINE_SPEC.resolve("nosuch") is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"type": E},
        {"type": S, "enum_values": ("A",)},
        {"type": PropertyType.COMPLEX, "filterable": True},
        {"type": PropertyType.COMPLEX, "sortable": True},
        {"type": PropertyType.STRING_COLLECTION, "sortable": True},
    ],
)
def test_property_spec_rejects_contradictory_rules(kwargs):
    with pytest.raises(ValueError):
        PropertySpec(**kwargs)


def test_entity_spec_rejects_names_differing_only_in_case():
    with pytest.raises(ValueError):
        EntitySpec("Bad", {"name": PropertySpec(S), "Name": PropertySpec(S)})


# --------------------------------------------------------------------------- comparisons


@pytest.mark.parametrize("operator", list(ComparisonOperator))
def test_every_comparison_operator_on_strings(operator):
    assert machine(f"computerDnsName {operator} 'host'") == Comparison("computerDnsName", S, operator, "host")


@pytest.mark.parametrize("operator", list(ComparisonOperator))
def test_every_comparison_operator_on_integers(operator):
    assert machine(f"rbacGroupId {operator} -7") == Comparison("rbacGroupId", I, operator, -7)


@pytest.mark.parametrize("operator", list(ComparisonOperator))
def test_every_comparison_operator_on_datetimes(operator):
    assert machine(f"lastSeen {operator} 2018-08-01Z") == Comparison("lastSeen", D, operator, datetime(2018, 8, 1, tzinfo=UTC))


def test_keywords_and_property_names_are_case_insensitive_and_names_normalised():
    assert machine("HEALTHSTATUS Ne 'Active' AND NOT RbacGroupId EQ 3") == And(
        (
            Comparison("healthStatus", E, NE, "Active"),
            Not(Comparison("rbacGroupId", I, EQ, 3)),
        )
    )


def test_extra_whitespace_is_harmless():
    assert machine("  ( computerDnsName   eq\t'a' )  ") == Comparison("computerDnsName", S, EQ, "a")
    assert machine("startswith( computerDnsName , 'a' )") == StringMatch(StringFunction.STARTSWITH, "computerDnsName", "a")


def test_properties_starting_with_keywords_are_not_split():
    assert gadget("notes eq 'a' and android eq 'b' or orbit eq 'c' and eqLevel eq 1 and index in (2)") == Or(
        (
            And((Comparison("notes", S, EQ, "a"), Comparison("android", S, EQ, "b"))),
            And(
                (
                    Comparison("orbit", S, EQ, "c"),
                    Comparison("eqLevel", I, EQ, 1),
                    In("index", I, (2,)),
                )
            ),
        )
    )


def test_bool_comparisons():
    assert gadget("enabled eq true") == Comparison("enabled", B, EQ, True)
    assert gadget("enabled ne FALSE") == Comparison("enabled", B, NE, False)


@pytest.mark.parametrize("operator", ["eq", "ne"])
def test_null_comparisons(operator):
    assert machine(f"healthStatus {operator} null") == Comparison("healthStatus", E, ComparisonOperator(operator), None)
    assert machine(f"lastSeen {operator} NULL") == Comparison("lastSeen", D, ComparisonOperator(operator), None)


# --------------------------------------------------------------------------- literals


@pytest.mark.parametrize(
    ("literal", "expected"),
    [
        ("2018-08-01Z", datetime(2018, 8, 1, tzinfo=UTC)),
        ("2018-08-01", datetime(2018, 8, 1, tzinfo=UTC)),
        ("2024-01-01T00:00:00Z", datetime(2024, 1, 1, tzinfo=UTC)),
        ("2024-01-01t00:00:00z", datetime(2024, 1, 1, tzinfo=UTC)),
        ("2024-01-01T10:30Z", datetime(2024, 1, 1, 10, 30, tzinfo=UTC)),
        ("2024-01-01T10:30:05", datetime(2024, 1, 1, 10, 30, 5, tzinfo=UTC)),
        ("2021-01-26T20:33:57.7220239Z", datetime(2021, 1, 26, 20, 33, 57, 722023, tzinfo=UTC)),
        ("2021-01-26T20:33:59.2Z", datetime(2021, 1, 26, 20, 33, 59, 200000, tzinfo=UTC)),
        ("2024-01-01T02:00:00+02:00", datetime(2024, 1, 1, tzinfo=UTC)),
        ("2023-12-31T19:30:00-04:30", datetime(2024, 1, 1, tzinfo=UTC)),
        ("'2024-01-01T00:00:00Z'", datetime(2024, 1, 1, tzinfo=UTC)),
    ],
)
def test_datetime_literals_become_aware_utc(literal, expected):
    parsed = machine(f"lastSeen ge {literal}")
    assert parsed == Comparison("lastSeen", D, GE, expected)
    assert parsed.value.tzinfo is UTC


@pytest.mark.parametrize(
    ("literal", "expected"),
    [
        ("''", ""),
        ("'it''s'", "it's"),
        ("''''", "'"),
        ("'a''''b'", "a''b"),
        ("'with spaces and (parens), commas'", "with spaces and (parens), commas"),
        ("'eq and or not'", "eq and or not"),
        ("'ünïcødé'", "ünïcødé"),
    ],
)
def test_string_literals_unescape_doubled_quotes(literal, expected):
    assert machine(f"computerDnsName eq {literal}") == Comparison("computerDnsName", S, EQ, expected)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("computerDnsName eq 'x'' or 1 eq 1 --'", "x' or 1 eq 1 --"),
        ("computerDnsName eq '''; DROP TABLE machines; --'", "'; DROP TABLE machines; --"),
        ("computerDnsName eq 'a'' or computerDnsName ne ''b'", "a' or computerDnsName ne 'b"),
        ("computerDnsName eq '%'' OR ''1''=''1'", "%' OR '1'='1"),
    ],
)
def test_injection_attempts_stay_one_literal(text, value):
    assert machine(text) == Comparison("computerDnsName", S, EQ, value)


def test_injection_attempt_without_escaped_quote_is_a_syntax_error():
    assert error_of("computerDnsName eq 'x' or 1 eq 1 --'") == (
        "Syntax error at position 27 in $filter: unexpected '1'; expected '(' or 'not' or a function or a property name"
    )


def test_enum_values_match_case_insensitively_and_are_normalised():
    assert machine("healthStatus eq 'impairedcommunication'") == Comparison("healthStatus", E, EQ, "ImpairedCommunication")
    assert parse_filter("status in ('PENDING', 'inprogress', 'Pending')", MACHINE_ACTION_SPEC) == In(
        "status", E, ("Pending", "InProgress")
    )


# --------------------------------------------------------------------------- connectives and functions


def test_and_binds_tighter_than_or():
    a, b, c = (Comparison("rbacGroupId", I, EQ, n) for n in (1, 2, 3))
    assert machine("rbacGroupId eq 1 or rbacGroupId eq 2 and rbacGroupId eq 3") == Or((a, And((b, c))))
    assert machine("(rbacGroupId eq 1 or rbacGroupId eq 2) and rbacGroupId eq 3") == And((Or((a, b)), c))


def test_nested_groups_of_one_connective_are_flattened():
    a, b, c, d = (Comparison("rbacGroupId", I, EQ, n) for n in (1, 2, 3, 4))
    assert machine("(rbacGroupId eq 1 or rbacGroupId eq 2) or (rbacGroupId eq 3 or rbacGroupId eq 4)") == Or((a, b, c, d))
    assert machine("rbacGroupId eq 1 and (rbacGroupId eq 2 and rbacGroupId eq 3)") == And((a, b, c))


def test_not_applies_to_the_next_term_only():
    a, b = (Comparison("rbacGroupId", I, EQ, n) for n in (1, 2))
    assert machine("not rbacGroupId eq 1 and rbacGroupId eq 2") == And((Not(a), b))
    assert machine("not (rbacGroupId eq 1 and rbacGroupId eq 2)") == Not(And((a, b)))
    assert machine("not not rbacGroupId eq 1") == Not(Not(a))


def test_contract_example_filters():
    assert machine("(healthStatus eq 'Active' or healthStatus eq 'Inactive')") == Or(
        (Comparison("healthStatus", E, EQ, "Active"), Comparison("healthStatus", E, EQ, "Inactive"))
    )
    assert parse_filter("type in ('Offboard','Isolate')", MACHINE_ACTION_SPEC) == In("type", E, ("Offboard", "Isolate"))
    assert parse_filter("creationDateTimeUtc ge 2024-01-01T00:00:00Z", MACHINE_ACTION_SPEC) == Comparison(
        "creationDateTimeUtc", D, GE, datetime(2024, 1, 1, tzinfo=UTC)
    )


def test_in_keeps_distinct_values_in_order_including_null():
    assert machine("rbacGroupId in (3, 1, 3, null)") == In("rbacGroupId", I, (3, 1, None))
    assert machine("computerDnsName IN ('b','a')") == In("computerDnsName", S, ("b", "a"))


@pytest.mark.parametrize("function", list(StringFunction))
def test_string_functions(function):
    assert machine(f"{function.upper()}(computerDnsName,'my%_host')") == StringMatch(function, "computerDnsName", "my%_host")


def test_string_function_compared_with_booleans():
    match = StringMatch(StringFunction.STARTSWITH, "computerDnsName", "a")
    assert machine("startswith(computerDnsName,'a') eq true") == match
    assert machine("startswith(computerDnsName,'a') ne false") == match
    assert machine("startswith(computerDnsName,'a') eq false") == Not(match)
    assert machine("startswith(computerDnsName,'a') ne true") == Not(match)


def test_case_functions_are_accepted_and_change_nothing():
    # String comparisons are case-insensitive already; see bulwark.store.odata_sql.
    assert machine("tolower(computerDnsName) eq 'host'") == Comparison("computerDnsName", S, EQ, "host")
    assert machine("contains(toupper(computerDnsName),'HOST')") == StringMatch(StringFunction.CONTAINS, "computerDnsName", "HOST")


def test_any_with_a_comparison():
    assert machine("machineTags/any(tag: tag eq 'x')") == CollectionAny("machineTags", Comparison("machineTags", S, EQ, "x"))


def test_any_with_functions_connectives_and_in():
    assert machine("MachineTags/ANY(t: startswith(T,'fin') or not t in ('a','b') and tolower(t) ne 'c')") == (
        CollectionAny(
            "machineTags",
            Or(
                (
                    StringMatch(StringFunction.STARTSWITH, "machineTags", "fin"),
                    And(
                        (
                            Not(In("machineTags", S, ("a", "b"))),
                            Comparison("machineTags", S, NE, "c"),
                        )
                    ),
                )
            ),
        )
    )


def test_any_without_a_lambda_tests_for_a_non_empty_collection():
    assert machine("machineTags/any()") == CollectionAny("machineTags", None)
    assert machine("not machineTags/any() and healthStatus eq 'Active'") == And(
        (Not(CollectionAny("machineTags", None)), Comparison("healthStatus", E, EQ, "Active"))
    )


def test_lambda_variable_may_shadow_a_property_name():
    assert machine("machineTags/any(id: id eq 'x')") == CollectionAny("machineTags", Comparison("machineTags", S, EQ, "x"))


# --------------------------------------------------------------------------- filter errors


def test_unknown_property():
    assert error_of("foo eq 1") == (
        "Invalid filter clause: property 'foo' is not supported for filtering: Machine has no such property"
    )


def test_property_that_exists_but_is_not_filterable():
    message = error_of("osbuild eq 1")
    assert message.startswith("Invalid filter clause: property 'osBuild' is not supported for filtering;")
    assert "computerDnsName" in message


@pytest.mark.parametrize("text", ["ipAddresses eq 'x'", "secret eq 'x'", "details eq 'x'"])
def test_selectable_only_properties_cannot_be_filtered(text):
    spec = GADGET_SPEC if not text.startswith("ip") else MACHINE_SPEC
    assert "is not supported for filtering" in error_of(text, spec)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("rbacGroupId eq 'x'", "property 'rbacGroupId' is of type int; 'x' is not a valid int value"),
        ("rbacGroupId eq 1.5", "1.5 is not a valid int value"),
        ("rbacGroupId eq true", "true is not a valid int value"),
        ("rbacGroupId eq 2024-01-01Z", "2024-01-01Z is not a valid int value"),
        ("lastSeen gt 'yesterday'", "property 'lastSeen' is of type datetime; 'yesterday' is not a valid datetime"),
        ("lastSeen gt 20180801", "20180801 is not a valid datetime value"),
        ("lastSeen gt 2024-13-01Z", "2024-13-01Z is not a valid datetime value"),
        ("lastSeen gt 2024-02-30", "2024-02-30 is not a valid datetime value"),
        ("lastSeen gt 2024-01-01T25:00:00Z", "is not a valid datetime value"),
        ("lastSeen gt 2024-01-01T00:00:00+24:00", "is not a valid datetime value"),
        ("computerDnsName eq 1709", "property 'computerDnsName' is of type string; 1709 is not a valid string value"),
        ("version eq 1709", "put the value in single quotes"),
        ("computerDnsName eq 2024-01-01Z", "is not a valid string value"),
        ("computerDnsName eq true", "true is not a valid string value"),
        ("healthStatus eq 3", "3 is not a valid enum value"),
        ("enabled eq 'true'", "'true' is not a valid bool value"),
    ],
)
def test_literals_must_fit_the_property_type(text, fragment):
    spec = GADGET_SPEC if text.startswith("enabled") else MACHINE_SPEC
    message = error_of(text, spec)
    assert message.startswith("Invalid filter clause:")
    assert fragment in message


def test_integer_out_of_64_bit_range():
    assert error_of("rbacGroupId eq 9223372036854775808") == (
        "Invalid filter clause: 9223372036854775808 is out of range for property 'rbacGroupId'"
    )
    assert machine("rbacGroupId eq -9223372036854775808").value == -(2**63)


def test_unknown_enum_value_lists_the_valid_ones():
    assert error_of("healthStatus eq 'Activ'") == (
        "Invalid filter clause: 'Activ' is not a valid value for property 'healthStatus'; valid values: "
        "Active, Inactive, ImpairedCommunication, NoSensorData, NoSensorDataImpairedCommunication, Unknown"
    )
    assert "'Canceled' is not a valid value" in error_of("status eq 'Canceled'", MACHINE_ACTION_SPEC)
    assert "'Bogus' is not a valid value" in error_of("riskScore in ('Low', 'Bogus')")


@pytest.mark.parametrize("operator", ["gt", "ge", "lt", "le"])
def test_enums_and_bools_only_support_equality(operator):
    assert error_of(f"riskScore {operator} 'Low'") == (
        f"Invalid filter clause: operator '{operator}' is not supported for enum property 'riskScore'; use eq, ne or in"
    )
    assert f"operator '{operator}' is not supported for bool property 'enabled'" in error_of(
        f"enabled {operator} true", GADGET_SPEC
    )


def test_in_is_not_supported_for_bools():
    assert "'in' is not supported for bool property 'enabled'" in error_of("enabled in (true)", GADGET_SPEC)


@pytest.mark.parametrize("operator", ["gt", "ge", "lt", "le"])
def test_null_only_with_eq_and_ne(operator):
    assert error_of(f"lastSeen {operator} null") == (
        f"Invalid filter clause: null can only be compared with eq or ne, not {operator}"
    )


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("startswith(healthStatus,'Act')", "startswith() needs a string argument; property 'healthStatus' is of type"),
        ("contains(rbacGroupId,'1')", "contains() needs a string argument; property 'rbacGroupId' is of type int"),
        ("endswith(lastSeen,'Z')", "endswith() needs a string argument; property 'lastSeen' is of type datetime"),
        ("startswith(computerDnsName, 5)", "the second argument of startswith() must be a quoted string, not 5"),
        ("startswith(computerDnsName, null)", "must be a quoted string, not null"),
        ("tolower(rbacGroupId) eq 1", "tolower() needs a string argument; property 'rbacGroupId' is of type int"),
        ("startswith(computerDnsName,'a') eq 'yes'", "can only be compared with eq or ne to true or false"),
        ("startswith(computerDnsName,'a') gt true", "can only be compared with eq or ne to true or false"),
    ],
)
def test_string_function_misuse(text, fragment):
    assert fragment in error_of(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "machineTags eq 'x'",
            "Invalid filter clause: property 'machineTags' is a collection; "
            "test its elements with machineTags/any(t: t eq 'value')",
        ),
        (
            "startswith(machineTags,'x')",
            "Invalid filter clause: property 'machineTags' is a collection; "
            "test its elements with machineTags/any(t: t eq 'value')",
        ),
        ("machineTags/all(t: t eq 'x')", "Invalid filter clause: machineTags/all() is not supported; use any()"),
        (
            "machineTags/any(t: healthStatus eq 'Active')",
            "Invalid filter clause: inside machineTags/any() only the lambda variable 't' can be used, not 'healthStatus'",
        ),
        (
            "machineTags/any(t: machineTags/any(u: u eq 'x'))",
            "Invalid filter clause: machineTags/any() cannot be nested in another lambda",
        ),
        (
            "computerDnsName/any(t: t eq 'x')",
            "Invalid filter clause: any() needs a collection property; 'computerDnsName' is of type string",
        ),
        (
            "osBuild/any(t: t eq 1)",
            "Invalid filter clause: property 'osBuild' is not supported for filtering; filterable properties: "
            + ", ".join(MACHINE_SPEC.filterable_properties()),
        ),
        (
            "machineTags/any(t: t eq 'x') and t eq 'y'",
            "Invalid filter clause: property 't' is not supported for filtering: Machine has no such property",
        ),
        (
            "machineTags/any(t: t eq 5)",
            "Invalid filter clause: lambda variable 't' is of type string; 5 is not a valid string value; "
            "put the value in single quotes",
        ),
        (
            "machineTags/any(t: t gt null)",
            "Invalid filter clause: null can only be compared with eq or ne, not gt",
        ),
    ],
)
def test_collection_misuse(text, message):
    assert error_of(text) == message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "computerDnsName eq 'x",
            "Syntax error at position 20 in $filter: unterminated string literal (a quote inside a string is written as '')",
        ),
        (
            'computerDnsName eq "x"',
            "Syntax error at position 20 in $filter: string literals are written in single quotes",
        ),
        ("computerDnsName eq", "Syntax error at position 19 in $filter: unexpected end of filter; expected a value"),
        (
            "computerDnsName like 'x'",
            "Syntax error at position 17 in $filter: unexpected 'like'; expected "
            "'/' or 'in' or a comparison operator (eq, ne, gt, ge, lt, le)",
        ),
        (
            "computerDnsName eq 'a' and",
            "Syntax error at position 27 in $filter: unexpected end of filter; expected "
            "'(' or 'not' or a function or a property name",
        ),
        (
            "(computerDnsName eq 'a'",
            "Syntax error at position 24 in $filter: unexpected end of filter; expected ')'",
        ),
        (
            "computerDnsName eq 'a')",
            "Syntax error at position 23 in $filter: unexpected ')'; expected the end of the filter",
        ),
        ("rbacGroupId in (1 2)", "Syntax error at position 19 in $filter: unexpected '2'; expected ')' or ','"),
        ("machineTags/any(t t eq 'x')", "Syntax error at position 19 in $filter: unexpected 't'; expected ':'"),
        ("rbacGroupId in ()", "Syntax error at position 17 in $filter: unexpected ')'; expected a value"),
        (
            "lastSeen gt 2024-1-1",
            "Syntax error at position 13 in $filter: malformed number or date starting with '2' (dates look like 2024-01-01Z)",
        ),
        (
            "rbacGroupId eq 1e5",
            "Syntax error at position 16 in $filter: malformed number or date starting with '1' (dates look like 2024-01-01Z)",
        ),
        ("computerDnsName eq 'a' ; drop", "Syntax error at position 24 in $filter: unexpected character ';'"),
        (
            "computerDnsName eq 'a' -- comment",
            "Syntax error at position 24 in $filter: malformed number or date starting with '-' (dates look like 2024-01-01Z)",
        ),
    ],
)
def test_syntax_errors_name_the_position(text, message):
    assert error_of(text) == message


@pytest.mark.parametrize("text", ["", "   "])
def test_empty_filter(text):
    assert error_of(text) == "Invalid filter clause: the $filter option is empty"


def test_nesting_depth_is_bounded():
    condition = "rbacGroupId eq 1"
    allowed = "not " * MAX_FILTER_DEPTH + condition
    assert isinstance(machine(allowed), Not)
    too_deep = "not " * (MAX_FILTER_DEPTH + 1) + condition
    assert error_of(too_deep) == f"Invalid filter clause: nesting deeper than {MAX_FILTER_DEPTH} levels"
    alternating = condition
    for level in range(MAX_FILTER_DEPTH + 1):
        connective = "and" if level % 2 else "or"
        alternating = f"{condition} {connective} ({alternating})"
    assert "nesting deeper than" in error_of(alternating)


# --------------------------------------------------------------------------- whole query strings


def test_raw_query_string_is_percent_decoded():
    query = parse_query(
        "?%24filter=healthStatus+ne+%27Active%27+and+lastSeen+gt+2024-01-01T00%3A00%3A00%2B02%3A00"
        "&%24top=25&%24skip=50&%24orderby=lastSeen%20desc&%24select=id,computerDnsName&%24count=true",
        MACHINE_SPEC,
    )
    assert query == ODataQuery(
        filter=And(
            (
                Comparison("healthStatus", E, NE, "Active"),
                Comparison("lastSeen", D, GT, datetime(2023, 12, 31, 22, tzinfo=UTC)),
            )
        ),
        top=25,
        skip=50,
        orderby=(OrderByItem("lastSeen", D, descending=True),),
        select=("id", "computerDnsName"),
        count=True,
    )


def test_raw_query_string_with_unescaped_dollar_signs_and_quotes():
    query = parse_query("$filter=startswith(computerDnsName,'my')&$top=1", MACHINE_SPEC)
    assert query.filter == StringMatch(StringFunction.STARTSWITH, "computerDnsName", "my")
    assert query.top == 1


def test_plus_in_a_raw_query_string_is_a_space_but_percent_2b_is_a_plus():
    assert parse_query("$filter=computerDnsName+eq+'a+b%2Bc'", MACHINE_SPEC).filter == Comparison(
        "computerDnsName", S, EQ, "a b+c"
    )


def test_mapping_values_are_taken_as_already_decoded():
    query = parse_query({"$filter": "computerDnsName eq 'a+b%20c'", "$top": "3"}, MACHINE_SPEC)
    assert query.filter == Comparison("computerDnsName", S, EQ, "a+b%20c")
    assert query.top == 3


def test_pairs_and_starlette_query_params_are_accepted():
    expected = ODataQuery(filter=Comparison("rbacGroupId", I, EQ, 5), top=2)
    assert parse_query([("$filter", "rbacGroupId eq 5"), ("$top", "2")], MACHINE_SPEC) == expected
    assert parse_query(QueryParams("%24filter=rbacGroupId+eq+5&%24top=2"), MACHINE_SPEC) == expected


def test_repeated_options_are_rejected_in_every_input_form():
    message = "The query option '$top' was given more than once"
    assert query_error_of("$top=1&$top=2") == message
    assert query_error_of([("$top", "1"), ("$TOP", "2")]) == message
    assert query_error_of(QueryParams("$top=1&$top=2")) == message


def test_defaults_when_no_options_are_given():
    query = parse_query("", MACHINE_SPEC)
    assert query == ODataQuery(filter=None, top=None, skip=0, orderby=(), select=None, count=False)
    assert query.page_size == DEFAULT_PAGE_SIZE == MAX_TOP == 10_000


def test_option_names_are_case_insensitive_and_other_parameters_ignored():
    query = parse_query("$TOP=3&$Skip=4&api-version=1.0&filter=nonsense&top=x", MACHINE_SPEC)
    assert (query.top, query.skip, query.filter) == (3, 4, None)


@pytest.mark.parametrize("option", ["$expand", "$search", "$format", "$apply", "$"])
def test_unknown_dollar_options_are_errors(option):
    assert query_error_of({option: "x"}) == (
        f"The query option '{option}' is not supported; "
        "supported options: $filter, $top, $skip, $orderby, $select, $count, $skiptoken"
    )


def test_skiptoken_is_kept_opaque_for_the_store():
    # Its content is validated where it is decoded (store/keyset.py), against the list it continues.
    assert parse_query("$skiptoken=WyJtYWNoaW5lcy52MSIsImFiYyJd&$top=5", MACHINE_SPEC).skiptoken == "WyJtYWNoaW5lcy52MSIsImFiYyJd"


@pytest.mark.parametrize("option", ["$filter", "$top", "$skip", "$orderby", "$select", "$count", "$skiptoken"])
def test_empty_option_values_are_errors(option):
    assert query_error_of(f"{option}=") == f"The query option '{option}' has an empty value"
    assert query_error_of({option: "  "}) == f"The query option '{option}' has an empty value"


def test_invalid_utf8_in_a_raw_query_string():
    assert query_error_of("$filter=computerDnsName+eq+%27%FF%27") == (
        "Invalid query string: percent-encoded bytes are not valid UTF-8"
    )


def test_filter_errors_surface_through_parse_query():
    assert query_error_of("$filter=foo+eq+1").startswith("Invalid filter clause: property 'foo'")


def test_top_and_skip_bounds():
    assert parse_query("$top=0", MACHINE_SPEC).top == 0
    assert parse_query("$top=+10000", MACHINE_SPEC).top == 10_000  # '+' decodes to a space
    assert parse_query({"$top": " 7 "}, MACHINE_SPEC).page_size == 7
    assert parse_query("$skip=123456789", MACHINE_SPEC).skip == 123_456_789
    assert query_error_of("$top=10001") == "Invalid value for $top: 10001 exceeds the maximum of 10000"


@pytest.mark.parametrize("value", ["-1", "abc", "1.5", "1e3", "%D9%A3", "0x10"])
@pytest.mark.parametrize("option", ["$top", "$skip"])
def test_top_and_skip_must_be_non_negative_whole_numbers(option, value):
    message = query_error_of(f"{option}={value}")
    assert message.startswith(f"Invalid value for {option}: '")
    assert message.endswith("' is not a non-negative whole number")


def test_skip_beyond_64_bits():
    assert query_error_of("$skip=9223372036854775808") == (
        "Invalid value for $skip: 9223372036854775808 exceeds the maximum of 9223372036854775807"
    )


def test_orderby_items_and_directions():
    assert parse_query({"$orderby": " LastSeen  DESC , computerdnsname,rbacGroupId asc"}, MACHINE_SPEC).orderby == (
        OrderByItem("lastSeen", D, descending=True),
        OrderByItem("computerDnsName", S, descending=False),
        OrderByItem("rbacGroupId", I, descending=False),
    )
    assert parse_query("$orderby=creationDateTimeUtc+desc", MACHINE_ACTION_SPEC).orderby == (
        OrderByItem("creationDateTimeUtc", D, descending=True),
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("foo", "Invalid $orderby clause: property 'foo' is not supported for sorting: Machine has no such property"),
        (
            "osBuild",
            "Invalid $orderby clause: property 'osBuild' is not supported for sorting; sortable properties: "
            + ", ".join(MACHINE_SPEC.sortable_properties()),
        ),
        (
            "machineTags",
            "Invalid $orderby clause: property 'machineTags' is not supported for sorting; sortable properties: "
            + ", ".join(MACHINE_SPEC.sortable_properties()),
        ),
        ("lastSeen sideways", "Invalid $orderby clause: sort direction 'sideways' must be asc or desc"),
        (
            "lastSeen desc extra",
            "Invalid $orderby clause: 'lastSeen desc extra' is not of the form 'property' or 'property asc|desc'",
        ),
        ("lastSeen,", "Invalid $orderby clause: '' is not of the form 'property' or 'property asc|desc'"),
        ("lastSeen, LASTSEEN desc", "Invalid $orderby clause: property 'lastSeen' appears more than once"),
    ],
)
def test_orderby_errors(value, message):
    assert query_error_of({"$orderby": value}) == message


def test_select_uses_wire_names_in_emission_order_without_duplicates():
    query = parse_query({"$select": "healthStatus, ID ,computerDnsName,id, ipAddresses"}, MACHINE_SPEC)
    assert query.select == ("id", "computerDnsName", "healthStatus", "ipAddresses")


def test_every_property_is_selectable():
    for spec in (MACHINE_SPEC, MACHINE_ACTION_SPEC):
        assert parse_query({"$select": ",".join(spec.properties)}, spec).select == tuple(spec.properties)


def test_select_star_means_everything():
    assert parse_query("$select=*", MACHINE_SPEC).select is None
    assert parse_query("$select=id,*", MACHINE_SPEC).select is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("nosuch", "Invalid $select clause: Machine has no property 'nosuch'"),
        ("id,,computerDnsName", "Invalid $select clause: empty property name in 'id,,computerDnsName'"),
    ],
)
def test_select_errors(value, message):
    assert query_error_of({"$select": value}) == message


@pytest.mark.parametrize(("value", "expected"), [("true", True), ("TRUE", True), ("false", False), (" False ", False)])
def test_count(value, expected):
    assert parse_query({"$count": value}, MACHINE_SPEC).count is expected


@pytest.mark.parametrize("value", ["yes", "1", "t"])
def test_count_must_be_true_or_false(value):
    assert query_error_of({"$count": value}) == f"Invalid value for $count: '{value}'; expected true or false"


def test_query_objects_are_immutable_and_comparable():
    first = parse_query("$filter=machineTags/any(t:t eq 'x')&$orderby=lastSeen", MACHINE_SPEC)
    second = parse_query({"$filter": "machineTags/any(x: x eq 'x')", "$orderby": "lastSeen asc"}, MACHINE_SPEC)
    assert first == second
    assert hash(first) == hash(second)
    with pytest.raises(AttributeError):
        first.top = 5  # type: ignore[misc]
