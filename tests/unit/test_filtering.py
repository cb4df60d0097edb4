"""FilterCriteria: every operator and combination of ESM-SPEC.md §6, per-source rules, validation.

The module also holds `reference_matches`, a deliberately plain interpreter that walks the JSON
pattern for every record; a Hypothesis property checks that the compiled closures agree with it on
random patterns and records (and `benchmarks/filtering.py` measures the compiled filters against it).
"""

from __future__ import annotations

import base64
import json
import operator
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from esm.arns import SourceKind
from esm.filtering import (
    INVALID_PATTERN_MESSAGE,
    CompiledFilter,
    FilterPatternError,
    compile_filters,
    filter_problems,
)
from esm.filtering.syntax import loads_strict

SQS, KINESIS, DYNAMODB = SourceKind.SQS, SourceKind.KINESIS, SourceKind.DYNAMODB

# --------------------------------------------------------------------------------------------
# The reference interpreter: reads the parsed JSON pattern for every record, no compilation.
# --------------------------------------------------------------------------------------------

_ABSENT = object()
_NOT_JSON = object()
_DATA_KEY = {SQS: "body", KINESIS: "data", DYNAMODB: "dynamodb"}


def reference_matches(patterns: Sequence[Mapping[str, Any]], record: Mapping[str, Any], source: SourceKind) -> bool:
    """True if `record` matches any of the parsed `patterns`, by direct interpretation."""
    if not patterns:
        return True
    view: Any = record
    if source is KINESIS:
        view = record.get("kinesis")
        if not isinstance(view, dict):
            view = {}
    return any(_ref_object(p, view, source) for p in patterns)


def _ref_object(pattern: Mapping[str, Any], value: Any, top: SourceKind | None) -> bool:
    if isinstance(value, list) and value:
        return any(_ref_object(pattern, element, top) for element in value)
    if not isinstance(value, dict):
        value = {}  # nothing below a missing field, a scalar or an empty array
    for key, sub in pattern.items():
        if key == "$or":
            ok = any(_ref_object(alt, value, top) for alt in sub)
        elif top is not None and top is not DYNAMODB and key == _DATA_KEY[top]:
            ok = _ref_data(sub, value, top)
        elif isinstance(sub, dict):
            ok = _ref_object(sub, value.get(key, _ABSENT), None)
        else:
            ok = _ref_values(sub, value.get(key, _ABSENT))
        if not ok:
            return False
    return True


def _ref_data(sub: Any, view: Mapping[str, Any], source: SourceKind) -> bool:
    raw = view.get(_DATA_KEY[source], _ABSENT)
    if raw is _ABSENT:
        return _ref_object(sub, _ABSENT, None) if isinstance(sub, dict) else _ref_values(sub, _ABSENT)
    decoded = _ref_decode(raw, source)
    if isinstance(sub, dict):
        return decoded is not _NOT_JSON and _ref_object(sub, decoded, None)
    return decoded is _NOT_JSON and _ref_values(sub, raw)


def _no_constants(name: str) -> Any:
    raise ValueError(name)


def _ref_decode(raw: Any, source: SourceKind) -> Any:
    if source is KINESIS:
        try:
            raw = base64.b64decode(raw, validate=True).decode("utf-8")
        except (TypeError, ValueError):
            return _NOT_JSON
    elif not isinstance(raw, str):
        return raw
    try:
        return ref_loads(raw)
    except ValueError:
        return _NOT_JSON


def _leaves(value: Any) -> list[Any]:
    if value is _ABSENT or isinstance(value, dict):
        return []
    if isinstance(value, list):
        return [leaf for element in value for leaf in _leaves(element)]
    return [value]


def _ref_values(wanted: list[Any], value: Any) -> bool:
    leaves = _leaves(value)
    for w in wanted:
        if isinstance(w, dict) and "exists" in w:
            if w["exists"] == bool(leaves):
                return True
        elif any(_ref_value(w, leaf) for leaf in leaves):
            return True
    return False


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


class _RefInt(int):
    text: str


class _RefFloat(float):
    text: str


def _ref_number(cls: type[Any], text: str) -> Any:
    number = cls(text)
    number.text = text
    return number


def ref_loads(text: str) -> Any:
    """The reference's JSON reader: numbers keep the text they were written with (ESM-SPEC.md §6.2)."""
    return json.loads(
        text,
        parse_constant=_no_constants,
        parse_int=lambda t: _ref_number(_RefInt, t),
        parse_float=lambda t: _ref_number(_RefFloat, t),
    )


def _num_text(v: Any) -> str:
    """A number as written: as read from JSON, else as json.dumps writes it."""
    return getattr(v, "text", None) or json.dumps(v)


def _ref_value(w: Any, v: Any) -> bool:
    if not isinstance(w, dict):
        if _is_num(w):
            return _is_num(v) and _num_text(v) == _num_text(w)
        return type(v) is type(w) and v == w
    ((op, arg),) = w.items()
    if op in ("prefix", "suffix"):
        if not isinstance(v, str):
            return False
        folded = isinstance(arg, dict)
        text, target = (v.lower(), arg["equals-ignore-case"].lower()) if folded else (v, arg)
        return text.startswith(target) if op == "prefix" else text.endswith(target)
    if op == "equals-ignore-case":
        return isinstance(v, str) and v.lower() == arg.lower()
    if op == "anything-but":
        excluded = arg if isinstance(arg, list) else [arg]
        if isinstance(v, str):
            return v not in [x for x in excluded if isinstance(x, str)]
        if _is_num(v):
            return not any(_is_num(x) and _num_text(x) == _num_text(v) for x in excluded)
        return True
    if op == "numeric":
        if not _is_num(v):
            return False
        compare = {"=": operator.eq, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
        return all(compare[o](v, n) for o, n in zip(arg[0::2], arg[1::2], strict=True))
    raise AssertionError(f"the reference does not know {op}")


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def matches(pattern: Any, record: dict[str, Any], source: SourceKind = DYNAMODB) -> bool:
    """Compile one pattern (a dict is JSON-encoded) and match `record`; checks the reference agrees."""
    text = pattern if isinstance(pattern, str) else json.dumps(pattern)
    compiled = compile_filters([text], source)
    result = compiled.matches(record)
    assert result == reference_matches([ref_loads(text)], record, source), "reference disagrees"
    raw = _raw_data(record) if source is KINESIS else None
    if raw is not None:
        assert compiled.matches(record, raw) is result, "the raw data bytes changed the verdict"
    return result


def _raw_data(record: Mapping[str, Any]) -> bytes | None:
    """The bytes a Kinesis record's base64 `data` stands for (what the stream source hands the filter), if any."""
    data = record.get("kinesis", {}).get("data")
    try:
        return base64.b64decode(data, validate=True) if isinstance(data, str) else None
    except ValueError:
        return None


def sqs(body: Any, **metadata: Any) -> dict[str, Any]:
    """An SQS record whose body is `body` (a str as is, anything else as JSON text)."""
    text = body if isinstance(body, str) else json.dumps(body)
    return {"messageId": "m1", "body": text, "attributes": {"ApproximateReceiveCount": "1"}, **metadata}


def kinesis(data: Any, *, raw: bytes | None = None, **metadata: Any) -> dict[str, Any]:
    """A Kinesis record whose data is `data` as JSON (or the `raw` bytes), base64-encoded."""
    payload = raw if raw is not None else json.dumps(data).encode()
    inner = {"partitionKey": "pk-1", "sequenceNumber": "1", "data": base64.b64encode(payload).decode(), **metadata}
    return {"kinesis": inner, "eventName": "aws:kinesis:record", "eventSource": "aws:kinesis"}


def ddb(new_image: dict[str, Any], event_name: str = "INSERT", **dynamodb: Any) -> dict[str, Any]:
    """A DynamoDB stream record with the given NewImage (DynamoDB JSON)."""
    body = {"ApproximateCreationDateTime": 1764072000.0, "Keys": {"id": {"S": "1"}}, "NewImage": new_image}
    return {"eventName": event_name, "eventSource": "aws:dynamodb", "dynamodb": {**body, **dynamodb}}


def invalid_detail(pattern: str, source: SourceKind = DYNAMODB) -> str:
    """The esm detail of the FilterPatternError that `pattern` raises (asserting AWS's text)."""
    with pytest.raises(FilterPatternError) as info:
        compile_filters([pattern], source)
    assert str(info.value) == INVALID_PATTERN_MESSAGE
    return info.value.detail


# --------------------------------------------------------------------------------------------
# Operators (ESM-SPEC.md §6.2)
# --------------------------------------------------------------------------------------------


class TestEquals:
    """Exact values: strings, numbers, booleans, null and the empty string (FILT table)."""

    def test_string_equals(self) -> None:
        """`"Name": ["Alice"]` matches exactly "Alice"."""
        assert matches({"Name": ["Alice"]}, {"Name": "Alice"})
        assert not matches({"Name": ["Alice"]}, {"Name": "Bob"})

    def test_strings_are_case_sensitive(self) -> None:
        """No case folding or normalization (FILT note)."""
        assert not matches({"Name": ["Alice"]}, {"Name": "alice"})

    def test_or_of_values(self) -> None:
        """Several values for one field are ORed."""
        pattern = {"PaymentType": ["Credit", "Debit"]}
        assert matches(pattern, {"PaymentType": "Debit"})
        assert not matches(pattern, {"PaymentType": "Cash"})

    def test_null_matches_json_null_only(self) -> None:
        """`[null]` matches a null value, not a missing field or the string "null"."""
        assert matches({"UserID": [None]}, {"UserID": None})
        assert not matches({"UserID": [None]}, {})
        assert not matches({"UserID": [None]}, {"UserID": "null"})

    def test_empty_string(self) -> None:
        """`[""]` matches the empty string only, not null or a missing field."""
        assert matches({"LastName": [""]}, {"LastName": ""})
        assert not matches({"LastName": [""]}, {"LastName": None})
        assert not matches({"LastName": [""]}, {})

    def test_numbers_equal_only_as_written(self) -> None:
        """300, 300.0 and 3.0e2 are three values for equality (ESM-SPEC.md §6.2, FILT)."""
        assert matches('{"Price": [300]}', {"Price": 300})
        for text in ("300.0", "3.0e2"):
            assert not matches('{"Price": [300]}', {"Price": json.loads(text)}), text
            assert not matches('{"Price": [' + text + "]}", {"Price": 300}), text
        assert matches('{"body": {"Price": [3.0e2]}}', {"body": '{"Price": 3.0e2}'}, SQS)
        assert not matches('{"body": {"Price": [3.0e2]}}', {"body": '{"Price": 300.0}'}, SQS)

    def test_numeric_compares_by_value(self) -> None:
        """`numeric` = 300 matches every spelling of three hundred."""
        for text in ("300", "300.0", "3.0e2"):
            assert matches('{"body": {"Price": [{"numeric": ["=", 300]}]}}', {"body": '{"Price": ' + text + "}"}, SQS)

    def test_numbers_and_strings_differ(self) -> None:
        """The number 300 does not match the string "300", nor the reverse."""
        assert not matches({"Price": [300]}, {"Price": "300"})
        assert not matches({"Price": ["300"]}, {"Price": 300})

    def test_booleans(self) -> None:
        """true and false match booleans only, never 1 or 0."""
        assert matches({"ok": [True]}, {"ok": True})
        assert not matches({"ok": [True]}, {"ok": 1})
        assert not matches({"ok": [1]}, {"ok": True})
        assert not matches({"ok": [False]}, {"ok": 0})

    def test_missing_field_never_equals(self) -> None:
        """A record must contain every field the pattern names (FILT)."""
        assert not matches({"Name": ["Alice"], "Day": ["Monday"]}, {"Name": "Alice"})

    def test_unnamed_fields_are_ignored(self) -> None:
        """Fields the pattern does not name do not matter."""
        assert matches({"Name": ["Alice"]}, {"Name": "Alice", "Other": {"deep": [1, 2]}})


class TestEqualsIgnoreCase:
    """`equals-ignore-case` (FILT table)."""

    def test_matches_any_case(self) -> None:
        """`{"equals-ignore-case": "alice"}` matches "ALICE" and "Alice"."""
        pattern = {"Name": [{"equals-ignore-case": "alice"}]}
        assert matches(pattern, {"Name": "ALICE"})
        assert matches(pattern, {"Name": "Alice"})
        assert not matches(pattern, {"Name": "Alicia"})

    def test_only_strings(self) -> None:
        """Numbers, booleans and null never match it."""
        assert not matches({"n": [{"equals-ignore-case": "1"}]}, {"n": 1})
        assert not matches({"n": [{"equals-ignore-case": "true"}]}, {"n": True})


class TestPrefixAndSuffix:
    """`prefix`, `suffix` and their equals-ignore-case forms (FILT, EB-OPS Pipe support: Yes)."""

    def test_prefix(self) -> None:
        """`{"prefix": "us-"}` matches strings starting with "us-", case-sensitively."""
        pattern = {"Region": [{"prefix": "us-"}]}
        assert matches(pattern, {"Region": "us-east-1"})
        assert not matches(pattern, {"Region": "US-east-1"})
        assert not matches(pattern, {"Region": "eu-west-1"})

    def test_prefix_ignoring_case(self) -> None:
        """`{"prefix": {"equals-ignore-case": "eventb"}}` ignores case."""
        pattern = {"service": [{"prefix": {"equals-ignore-case": "eventb"}}]}
        assert matches(pattern, {"service": "EventBridge"})
        assert not matches(pattern, {"service": "Lambda"})

    def test_suffix(self) -> None:
        """`{"suffix": ".png"}` matches strings ending with ".png"."""
        pattern = {"FileName": [{"suffix": ".png"}]}
        assert matches(pattern, {"FileName": "cat.png"})
        assert not matches(pattern, {"FileName": "cat.PNG"})

    def test_suffix_ignoring_case(self) -> None:
        """`{"suffix": {"equals-ignore-case": "tBridge"}}` ignores case."""
        assert matches({"s": [{"suffix": {"equals-ignore-case": "tBridge"}}]}, {"s": "EVENTBRIDGE"})

    def test_empty_prefix_matches_every_string(self) -> None:
        """An empty prefix matches any string, and still no number."""
        assert matches({"s": [{"prefix": ""}]}, {"s": "anything"})
        assert not matches({"s": [{"prefix": ""}]}, {"s": 5})

    def test_not_on_numbers(self) -> None:
        """Prefix and suffix apply to strings only: 123 has no prefix "1"."""
        assert not matches({"n": [{"prefix": "1"}]}, {"n": 123})
        assert not matches({"n": [{"suffix": "3"}]}, {"n": 123})

    def test_several_prefixes_are_ored(self) -> None:
        """Several prefix operators for one field are ORed like values."""
        pattern = {"s": [{"prefix": "a"}, {"prefix": "b"}, {"suffix": "z"}, "exact"]}
        for value, expected in (("ax", True), ("bx", True), ("xz", True), ("exact", True), ("cx", False)):
            assert matches(pattern, {"s": value}) is expected, value


class TestAnythingBut:
    """`anything-but` with a single value or a list of strings or numbers (FILT "Not", EB-OPS)."""

    def test_list_of_strings(self) -> None:
        """`{"anything-but": ["Raining"]}` matches any other weather."""
        pattern = {"Weather": [{"anything-but": ["Raining", "Snowing"]}]}
        assert matches(pattern, {"Weather": "Sunny"})
        assert not matches(pattern, {"Weather": "Raining"})
        assert not matches(pattern, {"Weather": "Snowing"})

    def test_single_string(self) -> None:
        """A single excluded string works like a one-element list."""
        assert matches({"state": [{"anything-but": "initializing"}]}, {"state": "running"})
        assert not matches({"state": [{"anything-but": "initializing"}]}, {"state": "initializing"})

    def test_numbers_as_written(self) -> None:
        """Excluded numbers compare as written: 100 excludes 100 but not 100.0 (ESM-SPEC.md §6.2)."""
        pattern = {"x": [{"anything-but": [100, 200]}]}
        assert matches(pattern, {"x": 150})
        assert not matches(pattern, {"x": 100})
        assert matches(pattern, {"x": 100.0})
        assert matches({"x": [{"anything-but": 5}]}, {"x": 6})

    def test_missing_field_does_not_match(self) -> None:
        """anything-but needs the field to be present (decision 5)."""
        assert not matches({"Weather": [{"anything-but": ["Raining"]}]}, {})

    def test_other_types_pass(self) -> None:
        """A number, boolean or null is not among excluded strings, so it matches (decision 5)."""
        pattern = {"v": [{"anything-but": ["a"]}]}
        for value in (1, True, None):
            assert matches(pattern, {"v": value}), value
        assert matches({"v": [{"anything-but": [1]}]}, {"v": "1"})

    def test_array_passes_if_any_value_is_not_excluded(self) -> None:
        """For an array, one value outside the excluded set is enough."""
        assert matches({"v": [{"anything-but": ["a"]}]}, {"v": ["a", "b"]})
        assert not matches({"v": [{"anything-but": ["a"]}]}, {"v": ["a", "a"]})


class TestNumeric:
    """`numeric` comparisons and ranges, by value, JSON numbers only (FILT table)."""

    @pytest.mark.parametrize(
        ("op", "value", "expected"),
        [
            ("=", 100, True),
            ("=", 100.0, True),
            ("=", 101, False),
            ("<", 99.5, True),
            ("<", 100, False),
            ("<=", 100, True),
            ("<=", 100.01, False),
            (">", 100.01, True),
            (">", 100, False),
            (">=", 100, True),
            (">=", 99, False),
        ],
        ids=lambda v: str(v),
    )
    def test_single_comparison(self, op: str, value: float, expected: bool) -> None:
        """Each operator compares the record's number with 100."""
        assert matches({"Price": [{"numeric": [op, 100]}]}, {"Price": value}) is expected

    @pytest.mark.parametrize(
        ("value", "expected"), [(10, False), (10.5, True), (20, True), (20.001, False)], ids=lambda v: str(v)
    )
    def test_range(self, value: float, expected: bool) -> None:
        """`[">", 10, "<=", 20]` is an open-closed range."""
        assert matches({"Price": [{"numeric": [">", 10, "<=", 20]}]}, {"Price": value}) is expected

    def test_numeric_never_matches_strings_or_booleans(self) -> None:
        """A string that looks like a number, or a boolean, is not a JSON number."""
        assert not matches({"n": [{"numeric": [">", 0]}]}, {"n": "5"})
        assert not matches({"n": [{"numeric": [">", 0]}]}, {"n": True})

    def test_negative_and_fractional_operands(self) -> None:
        """Operands may be negative or fractional."""
        assert matches({"t": [{"numeric": [">=", -1.5, "<", 0]}]}, {"t": -1.5})

    def test_any_array_element(self) -> None:
        """For an array of numbers, one element in range is enough."""
        assert matches({"n": [{"numeric": [">", 10]}]}, {"n": [1, 2, 30]})


class TestExists:
    """`exists` true/false, on leaf values only (FILT, ESM-SPEC.md §6.2)."""

    def test_exists_true(self) -> None:
        """`{"exists": true}` matches a field with any value."""
        pattern = {"ProductName": [{"exists": True}]}
        assert matches(pattern, {"ProductName": "x"})
        assert matches(pattern, {"ProductName": ""})
        assert not matches(pattern, {})

    def test_null_counts_as_present(self) -> None:
        """A null value exists (decision 6)."""
        assert matches({"p": [{"exists": True}]}, {"p": None})
        assert not matches({"p": [{"exists": False}]}, {"p": None})

    def test_exists_false(self) -> None:
        """`{"exists": false}` matches a record without the field."""
        pattern = {"ProductName": [{"exists": False}]}
        assert matches(pattern, {"Other": 1})
        assert not matches(pattern, {"ProductName": "x"})

    def test_object_is_not_a_leaf(self) -> None:
        """An object value is not a leaf: exists true fails and exists false matches."""
        record = {"c-count": {"c1": 100}}
        assert not matches({"c-count": [{"exists": True}]}, record)
        assert matches({"c-count": [{"exists": False}]}, record)

    def test_empty_array_has_no_value(self) -> None:
        """An empty array holds no leaf value (decision 7)."""
        assert matches({"tags": [{"exists": False}]}, {"tags": []})
        assert not matches({"tags": [{"exists": True}]}, {"tags": []})

    def test_exists_false_in_nested_pattern_matches_missing_parent(self) -> None:
        """A nested exists false also matches when the parent object is missing or a scalar."""
        pattern = {"detail": {"c-count": [{"exists": False}]}}
        assert matches(pattern, {})
        assert matches(pattern, {"detail": "text"})
        assert matches(pattern, {"detail": {"d": 1}})
        assert not matches(pattern, {"detail": {"c-count": 5}})

    def test_exists_with_other_values(self) -> None:
        """exists false ORed with a value: absent or equal to it."""
        pattern = {"v": [{"exists": False}, "x"]}
        assert matches(pattern, {})
        assert matches(pattern, {"v": "x"})
        assert not matches(pattern, {"v": "y"})


class TestAndOr:
    """AND across keys, OR across values, and `$or` across sub-patterns (FILT table)."""

    def test_and_across_keys(self) -> None:
        """Every key must match."""
        pattern = {"Location": ["New York"], "Day": ["Monday"]}
        assert matches(pattern, {"Location": "New York", "Day": "Monday"})
        assert not matches(pattern, {"Location": "New York", "Day": "Tuesday"})

    def test_or_across_fields(self) -> None:
        """`$or` matches if any alternative does."""
        pattern = {"$or": [{"Location": ["New York"]}, {"Day": ["Monday"]}]}
        assert matches(pattern, {"Location": "Boston", "Day": "Monday"})
        assert matches(pattern, {"Location": "New York"})
        assert not matches(pattern, {"Location": "Boston", "Day": "Friday"})

    def test_or_with_and_inside_and_beside(self) -> None:
        """`source && (metricName || (metricType && namespace))`, as EventBridge documents."""
        pattern = {
            "source": ["aws.cloudwatch"],
            "$or": [{"metricName": ["CPUUtilization"]}, {"metricType": ["MetricType"], "namespace": ["AWS/EC2"]}],
        }
        assert matches(pattern, {"source": "aws.cloudwatch", "metricName": "CPUUtilization"})
        assert matches(pattern, {"source": "aws.cloudwatch", "metricType": "MetricType", "namespace": "AWS/EC2"})
        assert not matches(pattern, {"source": "aws.cloudwatch", "metricType": "MetricType"})
        assert not matches(pattern, {"source": "aws.ec2", "metricName": "CPUUtilization"})

    def test_nested_or(self) -> None:
        """A `$or` inside an alternative and inside a nested object."""
        pattern = {
            "detail": {"$or": [{"a": [1]}, {"b": [2], "$or": [{"c": [3]}, {"d": [4]}]}]},
        }
        assert matches(pattern, {"detail": {"a": 1}})
        assert matches(pattern, {"detail": {"b": 2, "d": 4}})
        assert not matches(pattern, {"detail": {"b": 2}})

    def test_parallel_or_groups(self) -> None:
        """Two `$or` groups at different levels must both be satisfied."""
        pattern = {
            "$or": [{"m": ["x"]}, {"n": ["y"]}],
            "detail": {"$or": [{"s": ["p"]}, {"t": ["q"]}]},
        }
        assert matches(pattern, {"n": "y", "detail": {"t": "q"}})
        assert not matches(pattern, {"n": "y", "detail": {"t": "z"}})

    def test_duplicate_keys_last_wins(self) -> None:
        """With a key given twice, the last value is used (OLD-DG)."""
        assert matches('{"a": ["x"], "a": ["y"]}', {"a": "y"})
        assert not matches('{"a": ["x"], "a": ["y"]}', {"a": "x"})


class TestNestingAndArrays:
    """Nested objects, arrays of values and arrays of objects in records."""

    def test_nested_objects(self) -> None:
        """A nested pattern object follows the record's nesting."""
        pattern = {"order": {"type": ["buy"], "detail": {"qty": [{"numeric": [">=", 10]}]}}}
        assert matches(pattern, {"order": {"type": "buy", "detail": {"qty": 10}}})
        assert not matches(pattern, {"order": {"type": "buy", "detail": {"qty": 9}}})
        assert not matches(pattern, {"order": {"type": "buy"}})
        assert not matches(pattern, {"order": "buy"})

    def test_array_of_values(self) -> None:
        """A pattern value matches if any element of a record array matches."""
        assert matches({"resources": ["arn:b"]}, {"resources": ["arn:a", "arn:b"]})
        assert not matches({"resources": ["arn:c"]}, {"resources": ["arn:a", "arn:b"]})

    def test_nested_arrays_are_flattened(self) -> None:
        """Arrays within arrays are searched too."""
        assert matches({"v": [3]}, {"v": [[1, 2], [3]]})

    def test_array_of_objects(self) -> None:
        """`{"employees": {"firstName": ["Anna"]}}` finds Anna in an array of objects."""
        record = {"employees": [{"firstName": "John", "lastName": "Doe"}, {"firstName": "Anna", "lastName": "Smith"}]}
        assert matches({"employees": {"firstName": ["Anna"]}}, record)

    def test_array_consistency(self) -> None:
        """Fields of one object pattern must match within the same array element (event-ruler)."""
        record = {
            "employees": [{"firstName": "Anna", "lastName": "Smith"}, {"firstName": "Peter", "lastName": "Jones"}]
        }
        assert matches({"employees": {"firstName": ["Anna"], "lastName": ["Smith"]}}, record)
        assert not matches({"employees": {"firstName": ["Anna"], "lastName": ["Jones"]}}, record)

    def test_scalar_elements_of_an_object_array(self) -> None:
        """Non-object elements of an array have no fields."""
        assert not matches({"a": {"b": ["x"]}}, {"a": ["x", 1]})
        assert matches({"a": {"b": [{"exists": False}]}}, {"a": ["x"]})


class TestMultipleFilters:
    """Filters are ORed; none means every record passes (ESM-SPEC.md §6.1)."""

    def test_filters_are_ored(self) -> None:
        """A record matching any filter is kept."""
        compiled = compile_filters(['{"a": ["1"]}', '{"b": ["2"]}'], DYNAMODB)
        assert compiled.matches({"b": "2"})
        assert compiled.matches({"a": "1"})
        assert not compiled.matches({"a": "2", "b": "1"})
        assert compiled.matching_filters({"a": "1", "b": "2"}) == [0, 1]

    def test_no_filters_keep_everything(self) -> None:
        """An empty FilterCriteria filters nothing."""
        compiled = compile_filters([], SQS)
        assert not compiled.active
        assert compiled.matches({"body": "anything"})
        assert compiled.explain({"body": "x"}) == []

    def test_partition_keeps_order(self) -> None:
        """partition() splits records into kept and filtered-out, in order."""
        compiled = compile_filters(['{"k": [1]}'], DYNAMODB)
        records = [{"k": 1, "i": 0}, {"k": 2, "i": 1}, {"k": 1, "i": 2}]
        kept, dropped = compiled.partition(records)
        assert [r["i"] for r in kept] == [0, 2]
        assert [r["i"] for r in dropped] == [1]

    def test_compiled_filter_describes_itself(self) -> None:
        """The repr names the source and the number of filters."""
        compiled = compile_filters(['{"a": [1]}'], KINESIS)
        assert isinstance(compiled, CompiledFilter)
        assert repr(compiled) == "CompiledFilter(source='kinesis', filters=1)"
        assert compiled.patterns == ('{"a": [1]}',)


# --------------------------------------------------------------------------------------------
# Per-source semantics (ESM-SPEC.md §6.3)
# --------------------------------------------------------------------------------------------


class TestSqsBody:
    """The SQS body: JSON vs plain string, and the format-mismatch rules (OLD-DG table)."""

    def test_json_body_json_pattern(self) -> None:
        """A JSON body is filtered on its fields."""
        assert matches({"body": {"RequestCode": ["BBBB"]}}, sqs({"RequestCode": "BBBB"}), SQS)
        assert not matches({"body": {"RequestCode": ["BBBB"]}}, sqs({"RequestCode": "AAAA"}), SQS)

    def test_plain_body_plain_pattern(self) -> None:
        """A plain-string body is matched as a value by a list pattern."""
        assert matches({"body": [{"prefix": "ERROR"}]}, sqs("ERROR: disk full"), SQS)
        assert matches({"body": ["hello"]}, sqs("hello"), SQS)
        assert not matches({"body": ["hello"]}, sqs("bye"), SQS)

    def test_plain_body_json_pattern_is_dropped(self) -> None:
        """Plain-string body, JSON pattern: no match (recorded, LS valid-json-filter)."""
        assert not matches({"body": {"my-key": ["my-value"]}}, sqs("plain-string"), SQS)

    def test_json_pattern_with_only_exists_false_still_needs_json(self) -> None:
        """Even a pattern that needs nothing present does not match a plain body (format mismatch)."""
        assert not matches({"body": {"k": [{"exists": False}]}}, sqs("plain"), SQS)
        assert matches({"body": {"k": [{"exists": False}]}}, sqs({"other": 1}), SQS)

    def test_json_body_plain_pattern_is_dropped(self) -> None:
        """JSON body, plain-string pattern: no match, even with exists true."""
        assert not matches({"body": [{"exists": True}]}, sqs({"a": 1}), SQS)
        assert not matches({"body": ['{"a": 1}']}, sqs({"a": 1}), SQS)

    def test_scalar_json_body(self) -> None:
        """A body that is a bare JSON number or string is JSON (decision 4)."""
        assert not matches({"body": ["123"]}, sqs("123"), SQS)
        assert not matches({"body": {"a": ["1"]}}, sqs("123"), SQS)
        assert matches({"body": ["12 apples"]}, sqs("12 apples"), SQS)

    def test_nan_is_not_json(self) -> None:
        """NaN and Infinity are not JSON, so such a body is a plain string."""
        assert matches({"body": ["NaN"]}, sqs("NaN"), SQS)

    def test_metadata_only(self) -> None:
        """Without a body key, only metadata is evaluated, whatever the body."""
        pattern = {"attributes": {"ApproximateReceiveCount": ["1"]}}
        assert matches(pattern, sqs("plain"), SQS)
        assert matches(pattern, sqs({"a": 1}), SQS)
        assert not matches({"messageId": ["other"]}, sqs("plain"), SQS)

    def test_body_and_metadata(self) -> None:
        """Body and metadata conditions are ANDed."""
        pattern = {"messageId": ["m1"], "body": {"a": [1]}}
        assert matches(pattern, sqs({"a": 1}), SQS)
        assert not matches(pattern, sqs({"a": 1}, messageId="m2"), SQS)

    def test_body_inside_top_level_or(self) -> None:
        """The body rules apply inside a top-level `$or` too."""
        pattern = {"$or": [{"body": {"a": [1]}}, {"body": ["plain"]}]}
        assert matches(pattern, sqs({"a": 1}), SQS)
        assert matches(pattern, sqs("plain"), SQS)
        assert not matches(pattern, sqs({"a": 2}), SQS)

    def test_nested_key_named_body_is_an_ordinary_field(self) -> None:
        """Only the top-level body is parsed; a nested `body` field is matched as is."""
        assert matches({"body": {"body": ["x"]}}, sqs({"body": "x"}), SQS)

    def test_body_decoded_once_for_all_filters(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The body is parsed at most once per record, however many filters read it."""
        calls: list[str] = []
        real = loads_strict

        def counting(text: str) -> Any:
            calls.append(text)
            return real(text)

        monkeypatch.setattr("esm.filtering.compiler.loads_strict", counting)
        compiled = compile_filters(['{"body": {"a": [1]}}', '{"body": {"a": [2]}}', '{"body": {"a": [3]}}'], SQS)
        assert compiled.matches(sqs({"a": 3}))
        assert len(calls) == 1

    def test_body_not_decoded_when_metadata_fails(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Metadata conditions run before the body is parsed, so a failing one skips the parse."""
        calls: list[str] = []
        monkeypatch.setattr("esm.filtering.compiler.loads_strict", lambda text: calls.append(text))
        compiled = compile_filters(['{"body": {"a": [1]}, "messageId": ["nope"]}'], SQS)
        assert not compiled.matches(sqs({"a": 1}))
        assert calls == []

    def test_already_parsed_body(self) -> None:
        """A body given as an object (as in recordings) counts as JSON."""
        assert compile_filters(['{"body": {"a": [1]}}'], SQS).matches({"body": {"a": 1}})


class TestKinesisData:
    """Kinesis: `data` base64-decoded and parsed; patterns see the `kinesis` object (KIN-FILT)."""

    def test_data_json(self) -> None:
        """A data pattern filters the decoded JSON (KIN-FILT example)."""
        pattern = {"data": {"order": {"type": ["buy"]}}}
        assert matches(pattern, kinesis({"record": 12345, "order": {"type": "buy"}}), KINESIS)
        assert not matches(pattern, kinesis({"order": {"type": "sell"}}), KINESIS)

    @pytest.mark.parametrize(
        "raw", [b"plain text", b"\xff\xfe not utf-8", b'{"broken": '], ids=["plain", "not-utf8", "truncated-json"]
    )
    def test_non_json_data_is_dropped(self, raw: bytes) -> None:
        """Data that is not JSON never matches a data pattern, not even exists false."""
        assert not matches({"data": {"a": [{"exists": False}]}}, kinesis(None, raw=raw), KINESIS)

    @pytest.mark.parametrize(
        "data",
        [
            "not base64!",
            "eyJhIjoxfQ",  # {"a":1} without its padding
            "eyJhIjoxfQ==eyJhIjoxfQ==",  # data after the padding
            "eyJhIjox\nfQ==",  # a line break
            "eyJhIjoxfQ===",  # too much padding
            "ëyJhIjoxfQ==",  # not ASCII
        ],
    )
    def test_invalid_base64_is_dropped(self, data: str) -> None:
        """Data that is not canonical base64 never matches a data pattern; canonical base64 does."""
        pattern = {"data": {"a": [1]}}
        assert not matches(pattern, {"kinesis": {"partitionKey": "p", "data": data}}, KINESIS)
        assert matches(pattern, {"kinesis": {"partitionKey": "p", "data": "eyJhIjoxfQ=="}}, KINESIS)

    def test_metadata_keys(self) -> None:
        """partitionKey and the other `kinesis` fields sit at the top of the pattern (OLD-DG example)."""
        record = kinesis({"Location": "Los Angeles"})
        assert matches({"partitionKey": ["pk-1"], "data": {"Location": ["Los Angeles"]}}, record, KINESIS)
        assert not matches({"partitionKey": ["pk-2"]}, record, KINESIS)
        assert matches({"partitionKey": ["pk-1"]}, kinesis(None, raw=b"plain"), KINESIS)

    def test_outer_record_fields_are_not_visible(self) -> None:
        """eventName and other outer fields are outside the Kinesis view (decision 9)."""
        assert not matches({"eventName": ["aws:kinesis:record"]}, kinesis({}), KINESIS)
        assert not matches({"kinesis": {"partitionKey": ["pk-1"]}}, kinesis({}), KINESIS)

    def test_record_without_kinesis_object(self) -> None:
        """A record without a `kinesis` object has no fields at all."""
        assert matches({"partitionKey": [{"exists": False}]}, {"eventName": "x"}, KINESIS)


class TestDynamoDb:
    """DynamoDB: DynamoDB JSON under `dynamodb`, and top-level keys (DDB-FILT, §9)."""

    def test_type_key_required(self) -> None:
        """`{"S": ["v"]}` matches; leaving out the type key does not (recorded, content_filter_type)."""
        record = ddb({"presentKey": {"S": "presentValue"}})
        assert matches({"dynamodb": {"NewImage": {"presentKey": {"S": ["presentValue"]}}}}, record)
        assert not matches({"dynamodb": {"NewImage": {"presentKey": ["presentValue"]}}}, record)

    def test_numeric_never_matches_n_values(self) -> None:
        """`N` values are strings, so numeric fails and anything-but decides (recorded, numeric_filter)."""
        pattern = {"dynamodb": {"NewImage": {"n": {"N": [{"numeric": [">", 100]}, {"anything-but": "101"}]}}}}
        assert matches(pattern, ddb({"n": {"N": "42"}}))
        assert not matches(pattern, ddb({"n": {"N": "101"}}))
        assert not matches(
            {"dynamodb": {"NewImage": {"n": {"N": [{"numeric": [">", 100]}]}}}}, ddb({"n": {"N": "200"}})
        )

    def test_approximate_creation_time_is_numeric(self) -> None:
        """ApproximateCreationDateTime is a number (recorded, date_time_conversion)."""
        assert matches({"dynamodb": {"ApproximateCreationDateTime": [{"numeric": [">", 0]}]}}, ddb({}))

    def test_event_name_at_top_level(self) -> None:
        """Top-level eventName is filterable, as real AWS showed (§9)."""
        assert matches({"eventName": ["INSERT", "MODIFY"]}, ddb({}, "MODIFY"))
        assert not matches({"eventName": ["INSERT"]}, ddb({}, "REMOVE"))

    def test_exists_false_on_typed_attribute(self) -> None:
        """exists false on the attribute name matches with or without it (recorded, exists_false_filter)."""
        pattern = {"dynamodb": {"NewImage": {"presentKey": [{"exists": False}]}}}
        assert matches(pattern, ddb({"id": {"S": "1"}}))
        assert matches(pattern, ddb({"presentKey": {"S": "presentValue"}}))
        assert not matches(
            {"dynamodb": {"NewImage": {"presentKey": {"S": [{"exists": False}]}}}}, ddb({"presentKey": {"S": "v"}})
        )

    def test_list_attribute(self) -> None:
        """A DynamoDB list (L) of maps is searched element by element."""
        image = {"tags": {"L": [{"S": "red"}, {"S": "blue"}]}}
        assert matches({"dynamodb": {"NewImage": {"tags": {"L": {"S": ["blue"]}}}}}, ddb(image))


# --------------------------------------------------------------------------------------------
# Validation (ESM-SPEC.md §1.1, §6)
# --------------------------------------------------------------------------------------------

INVALID = [
    ("null", "null", "must be a JSON object"),
    ("plain-string", '"simple string"', "must be a JSON object"),
    ("bare-word", "single-string", "not valid JSON"),
    ("malformed", '[{"eventName": ["INSERT"=123}]', "not valid JSON"),
    ("empty-text", "", "not valid JSON"),
    ("array", '[{"a": ["b"]}]', "must be a JSON object"),
    ("value-not-array", '{"eventSource": "aws:sqs"}', "eventSource: must be an object or an array"),
    ("number-value", '{"a": 5}', "must be an object or an array"),
    ("null-value", '{"a": null}', "must be an object or an array"),
    ("empty-array", '{"eventSource": []}', "empty arrays are not allowed"),
    ("empty-pattern", "{}", "empty object"),
    ("empty-nested", '{"a": {}}', "a: empty objects are not allowed"),
    ("nested-array-value", '{"a": [["x"]]}', "a[0]: a value to match"),
    ("unknown-operator", '{"a": [{"contains": "x"}]}', '"contains" is not an operator'),
    ("two-keys", '{"a": [{"prefix": "x", "suffix": "y"}]}', "exactly one key"),
    ("empty-operator", '{"a": [{}]}', "exactly one key"),
    ("wildcard", '{"a": [{"wildcard": "*.png"}]}', "does not support"),
    ("cidr", '{"a": [{"cidr": "10.0.0.0/24"}]}', "does not"),
    ("prefix-number", '{"a": [{"prefix": 1}]}', "takes a string"),
    ("prefix-bad-object", '{"a": [{"prefix": {"suffix": "x"}}]}', "equals-ignore-case"),
    ("suffix-null", '{"a": [{"suffix": null}]}', "takes a string"),
    ("eic-number", '{"a": [{"equals-ignore-case": 5}]}', "takes a string"),
    ("anything-but-empty", '{"a": [{"anything-but": []}]}', "non-empty"),
    ("anything-but-mixed", '{"a": [{"anything-but": ["x", 1]}]}', "not a mix"),
    ("anything-but-null", '{"a": [{"anything-but": null}]}', "strings or numbers"),
    ("anything-but-bool-list", '{"a": [{"anything-but": [true]}]}', "strings or numbers"),
    ("anything-but-prefix", '{"a": [{"anything-but": {"prefix": "x"}}]}', "not supported by Lambda"),
    ("anything-but-suffix", '{"a": [{"anything-but": {"suffix": "x"}}]}', "not supported by Lambda"),
    ("anything-but-eic", '{"a": [{"anything-but": {"equals-ignore-case": "x"}}]}', "not supported by Lambda"),
    ("numeric-not-array", '{"a": [{"numeric": 5}]}', "takes an array"),
    ("numeric-empty", '{"a": [{"numeric": []}]}', "takes [operator, number]"),
    ("numeric-three", '{"a": [{"numeric": [">", 1, "<"]}]}', "takes [operator, number]"),
    ("numeric-bad-op", '{"a": [{"numeric": ["!=", 1]}]}', "not a numeric operator"),
    ("numeric-string-operand", '{"a": [{"numeric": [">", "1"]}]}', "must be a number"),
    ("numeric-bool-operand", '{"a": [{"numeric": [">", true]}]}', "must be a number"),
    ("numeric-infinite", '{"a": [{"numeric": [">", 1e400]}]}', "must be a number"),
    ("numeric-upper-first", '{"a": [{"numeric": ["<", 5, ">", 1]}]}', "lower bound"),
    ("numeric-two-lower", '{"a": [{"numeric": [">", 1, ">=", 5]}]}', "lower bound"),
    ("numeric-equals-range", '{"a": [{"numeric": ["=", 1, "<", 5]}]}', "lower bound"),
    ("numeric-empty-range", '{"a": [{"numeric": [">", 5, "<", 1]}]}', "range is empty"),
    ("numeric-point-range", '{"a": [{"numeric": [">=", 5, "<=", 5]}]}', "range is empty"),
    ("exists-string", '{"a": [{"exists": "true"}]}', "true or false"),
    ("exists-number", '{"a": [{"exists": 1}]}', "true or false"),
    ("or-object", '{"$or": {"a": ["x"]}}', "at least 2 objects"),
    ("or-one", '{"$or": [{"a": ["x"]}]}', "at least 2 objects, got 1"),
    ("or-not-objects", '{"$or": [{"a": ["x"]}, ["y"]]}', "must be an object"),
    ("or-empty-alternative", '{"$or": [{"a": ["x"]}, {}]}', "$or[1]: empty objects are not allowed"),
    ("or-reserved-name", '{"$or": [{"numeric": [1]}, {"b": ["y"]}]}', "operator name"),
    ("nan", '{"a": [NaN]}', "not valid JSON"),
]


class TestValidation:
    """Invalid patterns raise AWS's `Invalid filter pattern definition.` with esm's detail."""

    @pytest.mark.parametrize(("pattern", "detail"), [(p, d) for _, p, d in INVALID], ids=[i for i, _, _ in INVALID])
    def test_invalid(self, pattern: str, detail: str) -> None:
        """The pattern is rejected and the detail says why."""
        assert detail in invalid_detail(pattern)

    def test_kinesis_data_list_pattern(self) -> None:
        """A Kinesis `data` pattern must be an object pattern (non-JSON data pattern, OLD-DG)."""
        assert "JSON object pattern" in invalid_detail('{"data": ["x"]}', KINESIS)
        assert "JSON object pattern" in invalid_detail('{"$or": [{"data": ["x"]}, {"partitionKey": ["p"]}]}', KINESIS)

    def test_dynamodb_list_pattern(self) -> None:
        """A DynamoDB `dynamodb` pattern must be an object pattern."""
        assert "JSON object pattern" in invalid_detail('{"dynamodb": [{"exists": true}]}', DYNAMODB)

    def test_sqs_body_list_pattern_is_valid(self) -> None:
        """An SQS plain-string body pattern is a list of values."""
        compile_filters(['{"body": ["x", {"prefix": "y"}]}'], SQS)

    def test_nested_data_list_is_fine(self) -> None:
        """Only the top-level data key is special."""
        compile_filters(['{"x": {"data": ["v"]}}'], KINESIS)

    def test_error_names_the_filter(self) -> None:
        """The error's index says which filter is invalid."""
        with pytest.raises(FilterPatternError) as info:
            compile_filters(['{"a": ["x"]}', '{"a": "x"}'], SQS)
        assert info.value.index == 1
        assert isinstance(info.value, ValueError)

    @pytest.mark.parametrize(
        "pattern",
        [
            '{"a": [{"anything-but": 5}]}',
            '{"a": [{"anything-but": [1, 2.5]}]}',
            '{"a": [{"numeric": ["<=", 5]}]}',
            '{"a": [{"numeric": [">=", -5, "<", 1e3]}]}',
            '{"a": [null, true, false, 0, -1.5, ""]}',
            '{"prefix": ["field named like an operator"]}',
            '{"a": {"$or": [{"b": [1]}, {"c": [2]}, {"d": [3]}]}}',
            '{"a": [{"suffix": {"equals-ignore-case": "X"}}]}',
        ],
        ids=[
            "anything-but-number",
            "anything-but-numbers",
            "numeric-upper-only",
            "numeric-range",
            "literals",
            "operator-name-as-field",
            "or-three",
            "suffix-ignore-case",
        ],
    )
    def test_valid_edge_cases(self, pattern: str) -> None:
        """Forms EventBridge accepts for Lambda compile."""
        compile_filters([pattern], DYNAMODB)


class TestFilterProblems:
    """filter_problems() for the configuration layer: count, length and validity (§1.1)."""

    def test_valid_criteria(self) -> None:
        """Nothing to report for valid filters."""
        assert filter_problems(['{"body": {"a": ["b"]}}'], SQS) == []

    def test_too_many_filters(self) -> None:
        """More than 5 filters is an error by default; the quota is a parameter."""
        patterns = ['{"a": ["x"]}'] * 6
        assert filter_problems(patterns, SQS) == [
            "Filters: 6 filters, but a mapping takes at most 5 "
            "(AWS allows 5 by default, up to 10 with a quota increase)"
        ]
        assert filter_problems(patterns, SQS, max_filters=10) == []

    def test_pattern_too_long(self) -> None:
        """A pattern over 4096 characters breaks the API's length constraint."""
        long = json.dumps({"a": ["x" * 4100]})
        assert filter_problems([long], SQS) == [
            "Filters.0.Pattern: Member must have length less than or equal to 4096 "
            f"(the pattern has {len(long)} characters)"
        ]

    def test_invalid_pattern(self) -> None:
        """An invalid pattern is reported with its index, AWS's text and esm's detail."""
        assert filter_problems(['{"a": ["x"]}', '{"eventSource": []}'], SQS) == [
            "Filters.1.Pattern: Invalid filter pattern definition. (eventSource: empty arrays are not allowed)"
        ]


# --------------------------------------------------------------------------------------------
# Explanations (esm filter test)
# --------------------------------------------------------------------------------------------


def explain(patterns: list[Any], record: dict[str, Any], source: SourceKind = DYNAMODB) -> list[str]:
    """The explanation for `record` under the given patterns (dicts are JSON-encoded)."""
    texts = [p if isinstance(p, str) else json.dumps(p) for p in patterns]
    return compile_filters(texts, source).explain(record)


class TestExplain:
    """explain() says which key and operator failed, for each filter, in plain words."""

    def test_empty_when_matching(self) -> None:
        """A matching record needs no explanation."""
        assert explain([{"a": ["x"]}], {"a": "x"}) == []

    def test_one_line_per_filter(self) -> None:
        """Each filter gets its own line with every failed condition."""
        assert explain([{"a": ["x"], "b": [{"prefix": "p"}]}, {"c": [{"exists": True}]}], {"a": "y", "b": "q"}) == [
            'filter 1: a: "y" matches none of: "x"; b: "q" matches none of: prefix "p"',
            "filter 2: c: missing; the pattern needs one of: exists",
        ]

    def test_operator_descriptions(self) -> None:
        """Every operator is described in words."""
        pattern = {
            "v": [
                {"numeric": [">", 10, "<=", 20]},
                {"numeric": ["=", 5]},
                {"anything-but": ["a", "b"]},
                {"suffix": {"equals-ignore-case": ".PNG"}},
                {"equals-ignore-case": "x"},
                None,
                {"exists": False},
            ]
        }
        (line,) = explain([pattern], {"v": "a"})
        assert line == (
            'filter 1: v: "a" (the pattern requires it not to exist) matches none of: numeric > 10 and <= 20, '
            'numeric = 5, anything but "a", "b", suffix ".PNG" (ignoring case), "x" ignoring case, null, '
            "does not exist"
        )

    def test_dynamodb_type_key_hint(self) -> None:
        """Leaving out the DynamoDB type key gets a hint."""
        (line,) = explain([{"dynamodb": {"NewImage": {"k": ["v"]}}}], ddb({"k": {"S": "v"}}))
        assert 'match "dynamodb.NewImage.k.S"' in line

    def test_numeric_string_hint(self) -> None:
        """A numeric operator on an N string says why."""
        (line,) = explain([{"dynamodb": {"NewImage": {"k": {"N": [{"numeric": [">", 1]}]}}}}], ddb({"k": {"N": "5"}}))
        assert 'numeric operators match JSON numbers only: "5" is a string, and DynamoDB "N" values are strings' in line

    def test_type_and_case_hints(self) -> None:
        """String/number confusion and case differences get hints."""
        assert '"300" is a string' in explain([{"p": [300]}], {"p": "300"})[0]
        assert 'the pattern\'s "300" is a string' in explain([{"p": ["300"]}], {"p": 300})[0]
        assert "equals-ignore-case" in explain([{"p": ["Alice"]}], {"p": "alice"})[0]

    def test_sqs_format_mismatch(self) -> None:
        """Both directions of the SQS format mismatch are explained."""
        assert "is not JSON" in explain([{"body": {"a": [1]}}], sqs("plain"), SQS)[0]
        assert "is JSON" in explain([{"body": ["plain"]}], sqs({"a": 1}), SQS)[0]

    @pytest.mark.parametrize(
        ("raw", "why"),
        [(b"plain", "not JSON"), (b"\xff", "not UTF-8")],
        ids=["not-json", "not-utf8"],
    )
    def test_kinesis_data_not_json(self, raw: bytes, why: str) -> None:
        """Undecodable Kinesis data is explained step by step."""
        assert why in explain([{"data": {"a": [1]}}], kinesis(None, raw=raw), KINESIS)[0]

    def test_kinesis_invalid_base64(self) -> None:
        """Data that is not base64 is named as such."""
        assert "not valid base64" in explain([{"data": {"a": [1]}}], {"kinesis": {"data": "%%"}}, KINESIS)[0]

    def test_kinesis_outer_field_hint(self) -> None:
        """A Kinesis pattern naming an outer field gets a hint about the view."""
        lines = explain([{"kinesis": {"partitionKey": ["pk-1"]}}], kinesis({}), KINESIS)
        assert 'Kinesis patterns match the record\'s "kinesis" object' in lines[0]

    def test_or_explained(self) -> None:
        """A failed `$or` lists every alternative's reason."""
        (line,) = explain([{"$or": [{"a": ["x"]}, {"b": ["y"]}]}], {"a": "q"})
        assert line == (
            'filter 1: "$or": none of the 2 alternatives matches: (1) a: "q" matches none of: "x"; '
            '(2) b: missing; the pattern needs one of: "y"'
        )

    def test_array_and_object_shapes(self) -> None:
        """Arrays of objects, scalars where objects are expected and missing parents are named."""
        record = {"e": [{"f": "a", "l": "b"}, {"f": "c", "l": "d"}], "s": "text", "arr": [{"x": 1}]}
        assert "no element of the array matches" in explain([{"e": {"f": ["a"], "l": ["d"]}}], record)[0]
        assert 's: is "text", not an object with "k"' in explain([{"s": {"k": ["v"]}}], record)[0]
        assert "m: missing; the pattern needs it to be an object" in explain([{"m": {"k": ["v"]}}], record)[0]
        assert "arr: is an array without plain values" in explain([{"arr": ["v"]}], record)[0]


# --------------------------------------------------------------------------------------------
# Property: the compiled filters agree with the reference interpreter
# --------------------------------------------------------------------------------------------

_KEYS = st.sampled_from(["a", "b", "c"])
_STRINGS = st.sampled_from(["x", "X", "xy", "yx", "y", "", "1", "null"])
_NUMBERS = st.one_of(st.integers(-3, 3), st.sampled_from([0.5, 1.0, -1.5, 2.0]))
_SCALARS = st.one_of(_STRINGS, _NUMBERS, st.booleans(), st.none())
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_KEYS, inner, max_size=3)),
    max_leaves=8,
)


@st.composite
def _numeric(draw: st.DrawFn) -> dict[str, Any]:
    low, high = sorted(draw(st.lists(_NUMBERS, min_size=2, max_size=2, unique=True)))
    single = [draw(st.sampled_from(["=", "<", "<=", ">", ">="])), draw(_NUMBERS)]
    ranged = [draw(st.sampled_from([">", ">="])), low, draw(st.sampled_from(["<", "<="])), high]
    return {"numeric": draw(st.sampled_from([single, ranged]))}


_OPERATORS = st.one_of(
    _SCALARS,
    st.builds(lambda s: {"prefix": s}, _STRINGS),
    st.builds(lambda s: {"prefix": {"equals-ignore-case": s}}, _STRINGS),
    st.builds(lambda s: {"suffix": s}, _STRINGS),
    st.builds(lambda s: {"suffix": {"equals-ignore-case": s}}, _STRINGS),
    st.builds(lambda s: {"equals-ignore-case": s}, _STRINGS),
    st.builds(lambda v: {"anything-but": v}, st.one_of(_STRINGS, _NUMBERS)),
    st.builds(
        lambda v: {"anything-but": v},
        st.one_of(st.lists(_STRINGS, min_size=1, max_size=3), st.lists(_NUMBERS, min_size=1, max_size=3)),
    ),
    _numeric(),
    st.builds(lambda b: {"exists": b}, st.booleans()),
)
_LEAF_PATTERN = st.lists(_OPERATORS, min_size=1, max_size=3)


def _object_patterns(leaf: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.recursive(
        st.dictionaries(_KEYS, leaf, min_size=1, max_size=2),
        lambda inner: st.one_of(
            st.dictionaries(_KEYS, st.one_of(leaf, inner), min_size=1, max_size=3),
            st.builds(
                lambda base, alts: {**base, "$or": alts},
                st.dictionaries(_KEYS, leaf, max_size=1),
                st.lists(inner, min_size=2, max_size=3),
            ),
        ),
        max_leaves=6,
    )


_OBJECT_PATTERNS = _object_patterns(_LEAF_PATTERN)


_OMIT = object()


def _satisfying(draw: st.DrawFn, m: Any) -> Any:
    """A scalar that one pattern value probably matches (or _OMIT for exists false)."""
    if not isinstance(m, dict):
        return m
    ((op, arg),) = m.items()
    if op in ("prefix", "suffix"):
        text = arg["equals-ignore-case"].upper() if isinstance(arg, dict) else arg
        return text + "y" if op == "prefix" else "y" + text
    if op == "equals-ignore-case":
        return str(arg).swapcase()
    if op == "numeric":
        return draw(st.sampled_from([arg[1], arg[1] + 1, arg[1] - 0.5, arg[-1], arg[-1] - 0.5]))
    if op == "exists":
        return draw(_SCALARS) if arg else _OMIT
    return draw(_SCALARS)  # anything-but: most values pass


def _value_like(draw: st.DrawFn, node: Any, *, wrap: bool = True) -> Any:
    """A record value shaped after a pattern node, so that random cases match often enough."""
    if isinstance(node, list):
        value = _satisfying(draw, draw(st.sampled_from(node)))
        if value is _OMIT:
            return _OMIT
        return draw(st.sampled_from([value, value, [draw(_SCALARS), value], draw(_SCALARS)]))
    out: dict[str, Any] = {}
    for key, sub in node.items():
        if key == "$or":
            out.update(_value_like(draw, draw(st.sampled_from(sub)), wrap=False))
        elif draw(st.integers(0, 9)):
            value = _value_like(draw, sub)
            if value is not _OMIT:
                out[key] = value
    return draw(st.sampled_from([out, out, out, [out], [draw(_VALUES), out]])) if wrap else out


@st.composite
def _case(draw: st.DrawFn) -> tuple[SourceKind, list[dict[str, Any]], dict[str, Any]]:
    """A source, 1-3 patterns and a record shaped for that source (often after one pattern)."""
    source = draw(st.sampled_from(list(SourceKind)))
    data_key = _DATA_KEY[source]
    patterns = []
    for _ in range(draw(st.integers(1, 3))):
        pattern = draw(_OBJECT_PATTERNS)
        if draw(st.booleans()):
            allow_list = source is SQS
            pattern[data_key] = draw(st.one_of(_OBJECT_PATTERNS, _LEAF_PATTERN) if allow_list else _OBJECT_PATTERNS)
        patterns.append(pattern)
    model = draw(st.sampled_from(patterns))
    often = st.integers(0, 4).map(bool)  # true four times in five
    shaped = _value_like(draw, {k: v for k, v in model.items() if k != data_key}, wrap=False)
    metadata = shaped if draw(often) else draw(st.dictionaries(_KEYS, _VALUES))
    data = _value_like(draw, model[data_key]) if data_key in model and draw(often) else draw(_VALUES)
    data = draw(_VALUES) if data is _OMIT else data
    as_json = not isinstance(model.get(data_key), list) if draw(often) else draw(st.booleans())
    if source is SQS:
        plain = data if isinstance(data, str) else draw(st.sampled_from(["x", "xy", "plain text", "1 2", ""]))
        return source, patterns, {**metadata, "body": json.dumps(data) if as_json else plain}
    if source is KINESIS:
        raw = json.dumps(data).encode() if as_json else draw(st.sampled_from([b"x", b"\xff", b"{"]))
        return source, patterns, {"kinesis": {**metadata, "data": base64.b64encode(raw).decode()}}
    return source, patterns, {**metadata, "dynamodb": data}


class TestCompiledAgreesWithReference:
    """Hypothesis: compiled closures and the plain reference interpreter agree (issue #4 tests)."""

    @settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(_case())
    def test_same_verdict(self, case: tuple[SourceKind, list[dict[str, Any]], dict[str, Any]]) -> None:
        """For random patterns and records of every source, matches() equals the reference."""
        source, patterns, record = case
        compiled = compile_filters([json.dumps(p) for p in patterns], source)
        expected = reference_matches(patterns, record, source)
        assert compiled.matches(record) is expected
        raw = _raw_data(record) if source is KINESIS else None
        if raw is not None:  # the stream source hands the raw bytes along: the same verdict, no base64 step
            assert compiled.matches(record, raw) is expected
        assert compiled.matching_filters(record) == [
            i for i, p in enumerate(patterns) if reference_matches([p], record, source)
        ]

    @settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(_case())
    def test_explain_is_empty_exactly_when_matching(
        self, case: tuple[SourceKind, list[dict[str, Any]], dict[str, Any]]
    ) -> None:
        """explain() returns reasons for, and only for, records that do not match."""
        source, patterns, record = case
        compiled = compile_filters([json.dumps(p) for p in patterns], source)
        lines = compiled.explain(record)
        assert (lines == []) is compiled.matches(record)
        assert len(lines) in (0, len(patterns))
        assert all("does not match" not in line for line in lines)


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=6,
)


class TestStrictJson:
    """`loads_strict` (the JSON reader of filters and data) is its decoder's `decode`, wrappers skipped."""

    @settings(max_examples=400, deadline=None)
    @given(
        st.one_of(
            _JSON_VALUES.map(json.dumps),
            st.tuples(
                st.text(" \t\n\r", max_size=2), _JSON_VALUES.map(json.dumps), st.text(" \t\n\rx}", max_size=2)
            ).map("".join),
            st.text(alphabet=' \t\n\r{}[]",:0123456789.eE-+truefalsnNaIiy', max_size=12),
        )
    )
    def test_same_values_and_errors_as_the_decoder(self, text: str) -> None:
        """The same values, or the same error type and message."""
        from esm.filtering.syntax import _DECODER, loads_strict

        def outcome(fn: Any) -> tuple[str, str]:
            try:
                return "value", repr(fn(text))
            except ValueError as exc:
                return type(exc).__name__, str(exc)

        assert outcome(loads_strict) == outcome(_DECODER.decode)
