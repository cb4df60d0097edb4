"""The filter pattern language: parsing and validation into a small, typed pattern tree.

`parse_pattern(text, source)` turns one `FilterCriteria.Filters[].Pattern` string into an `Obj`
tree of `Leaf` value lists and `Matcher` operators, or raises `FilterPatternError` whose `str()`
is AWS's exact text (`Invalid filter pattern definition.`, ESM-SPEC.md §1.1) and whose `.detail`
says what is wrong, with the path of the offending value. The rules are the ones of EventBridge's
pattern compiler (EB-OPS; aws/event-ruler `JsonRuleCompiler`), narrowed to what Lambda supports
(ESM-SPEC.md §6.2 and the "Pipe support" column of EB-OPS): see the package docstring for the
full list and for every decision AWS leaves open.

The tree is the single source of truth for `compiler.py` (closures for the hot path) and for
`explain.py` (plain-words reasons for `esm filter test`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

from esm.arns import SourceKind

__all__ = [
    "DATA_KEYS",
    "INVALID_PATTERN_MESSAGE",
    "AnythingBut",
    "EqualsIgnoreCase",
    "Exact",
    "Exists",
    "FilterPatternError",
    "Leaf",
    "Matcher",
    "Node",
    "Numeric",
    "Obj",
    "Prefix",
    "Suffix",
    "parse_pattern",
]

INVALID_PATTERN_MESSAGE = "Invalid filter pattern definition."
"""AWS's InvalidParameterValueException text for any invalid pattern (recorded, ESM-SPEC.md §1.1)."""

DATA_KEYS: dict[SourceKind, str] = {SourceKind.SQS: "body", SourceKind.KINESIS: "data", SourceKind.DYNAMODB: "dynamodb"}
"""The key that holds each source's data, parsed as JSON before matching (ESM-SPEC.md §6.3)."""

OR = "$or"
_OPERATORS = ("anything-but", "equals-ignore-case", "exists", "numeric", "prefix", "suffix")
# EventBridge operators that Lambda does not support ("Pipe support: No" in EB-OPS, or absent from
# the Lambda FILT table): rejected with a detail that says so, instead of behaving differently.
_UNSUPPORTED = {
    "wildcard": "is an EventBridge operator that Lambda event filtering does not support",
    "cidr": "is an EventBridge operator that Lambda event filtering does not document or support",
    "exactly": "is an EventBridge operator that Lambda event filtering does not document or support",
}
_RESERVED_IN_OR = frozenset((*_OPERATORS, *_UNSUPPORTED))
_LOWER_OPS = {">": False, ">=": True}  # value: whether the bound is inclusive
_UPPER_OPS = {"<": False, "<=": True}


class FilterPatternError(ValueError):
    """An invalid filter pattern: `str()` is AWS's text, `.detail` esm's explanation.

    `index` is the position of the pattern in `FilterCriteria.Filters` when known (0-based).
    """

    def __init__(self, detail: str, *, index: int | None = None) -> None:
        super().__init__(INVALID_PATTERN_MESSAGE)
        self.detail = detail
        self.index = index

    def __str__(self) -> str:
        return INVALID_PATTERN_MESSAGE


@dataclass(frozen=True, slots=True)
class Exact:
    """Equals a JSON value: a string, a number (by its JSON text), true, false or null."""

    value: str | int | float | bool | None


@dataclass(frozen=True, slots=True)
class Prefix:
    """A string that starts with `text` (optionally ignoring case)."""

    text: str
    ignore_case: bool = False


@dataclass(frozen=True, slots=True)
class Suffix:
    """A string that ends with `text` (optionally ignoring case)."""

    text: str
    ignore_case: bool = False


@dataclass(frozen=True, slots=True)
class EqualsIgnoreCase:
    """A string equal to `text` ignoring case."""

    text: str


@dataclass(frozen=True, slots=True)
class AnythingBut:
    """Any value except the listed strings, or except the listed numbers (compared by their JSON text)."""

    strings: frozenset[str] = frozenset()
    numbers: frozenset[int | float] = frozenset()


@dataclass(frozen=True, slots=True)
class Numeric:
    """A JSON number within bounds; `=` is a range whose bounds are equal and inclusive."""

    lower: int | float | None
    lower_inclusive: bool
    upper: int | float | None
    upper_inclusive: bool


@dataclass(frozen=True, slots=True)
class Exists:
    """The field has (True) or has no (False) leaf value."""

    present: bool


Matcher: TypeAlias = Exact | Prefix | Suffix | EqualsIgnoreCase | AnythingBut | Numeric | Exists


@dataclass(frozen=True, slots=True)
class Leaf:
    """A list of values to match at one field: the field matches if any of them does (OR)."""

    matchers: tuple[Matcher, ...]

    @property
    def matches_absent(self) -> bool:
        """True if a field without any leaf value matches (only `{"exists": false}` does)."""
        return any(isinstance(m, Exists) and not m.present for m in self.matchers)


@dataclass(frozen=True, slots=True)
class Obj:
    """An object pattern: every field must match (AND), and each `$or` group by one alternative."""

    fields: tuple[tuple[str, Node], ...]
    any_of: tuple[tuple[Obj, ...], ...] = ()

    @property
    def matches_absent(self) -> bool:
        """True if the pattern matches where the record has nothing (a missing field or a scalar)."""
        return all(node.matches_absent for _, node in self.fields) and all(
            any(alt.matches_absent for alt in group) for group in self.any_of
        )


Node: TypeAlias = Leaf | Obj


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


class JsonInt(int):
    """An integer read from JSON text, remembering how it was written (`text`). Only `-0` needs
    one (`_parse_int`): any other JSON integer is written back as read by `str`."""

    text: str

    def __new__(cls, text: str) -> JsonInt:
        number = super().__new__(cls, text)
        number.text = text
        return number


class JsonFloat(float):
    """A number with a fraction or an exponent read from JSON text, remembering how it was written."""

    text: str

    def __new__(cls, text: str) -> JsonFloat:
        number = super().__new__(cls, text)
        number.text = text
        return number


def _parse_int(text: str) -> int:
    """A JSON integer. A plain `int` is written back exactly as it was read (JSON integers have no
    leading zeros), except `-0`: that one is a `JsonInt`, which keeps its text."""
    return JsonInt(text) if text == "-0" else int(text)


NUMBER_TYPES: frozenset[type] = frozenset({int, float, JsonInt, JsonFloat})
"""The types of JSON numbers (never bool): exact `type(x) in NUMBER_TYPES` checks keep the hot path fast."""


def number_text(value: int | float) -> str:
    """How a number is written in JSON: as read (`JsonInt`/`JsonFloat`; a plain integer is
    written as read), else as esm writes it.

    Filters compare numbers for equality by this text, as the Lambda docs say: 300, 300.0 and
    3.0e2 are three different values (ESM-SPEC.md §6.2). `numeric` compares by value.
    """
    if type(value) is int:
        return str(value)
    text = getattr(value, "text", None)
    return text if text is not None else json.dumps(value)


_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=JsonFloat, parse_int=_parse_int)
_SCAN: Callable[[str, int], tuple[Any, int]] = _DECODER.scan_once  # type: ignore[attr-defined]
# json.decoder.WHITESPACE, which always matches (possibly nothing)
_SPACE: Callable[[str, int], re.Match[str]] = re.compile(r"[ \t\n\r]*").match  # type: ignore[assignment]
_SPACES = frozenset(" \t\n\r")


def loads_strict(text: str) -> Any:
    """`json.loads` that rejects NaN and Infinity, as a strict JSON parser (Jackson) does.

    It is `_DECODER.decode(text)` (the same results and errors) without its Python-level wrappers:
    it runs once for every record a data filter looks at.
    """
    end = _SPACE(text, 0).end() if not text or text[0] in _SPACES else 0
    try:
        value, end = _SCAN(text, end)
    except StopIteration as err:
        raise json.JSONDecodeError("Expecting value", text, err.value) from None
    if end != len(text):
        end = _SPACE(text, end).end()
        if end != len(text):
            raise json.JSONDecodeError("Extra data", text, end)
    return value


def parse_pattern(text: str, source: SourceKind, *, index: int | None = None) -> Obj:
    """Parse and validate one pattern string; raise FilterPatternError if AWS would reject it."""
    try:
        try:
            value = loads_strict(text)
        except (ValueError, RecursionError) as exc:
            raise FilterPatternError(f"the pattern is not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise FilterPatternError(f"a pattern must be a JSON object, not {_kind(value)}")
        return _parse_object(value, "", top=source)
    except FilterPatternError as exc:
        exc.index = index
        raise


def _parse_object(value: dict[str, Any], path: str, *, top: SourceKind | None, in_or: bool = False) -> Obj:
    if not value:
        raise FilterPatternError(
            f"{path}: empty objects are not allowed" if path else "the pattern is an empty object {}"
        )
    fields: list[tuple[str, Node]] = []
    groups: list[tuple[Obj, ...]] = []
    for key, member in value.items():
        at = f"{path}.{key}" if path else key
        if key == OR:
            groups.append(_parse_or(member, at, path, top=top))
            continue
        if in_or and key in _RESERVED_IN_OR:
            raise FilterPatternError(f'{at}: "{key}" is an operator name and cannot be a field inside "$or"')
        if isinstance(member, dict):
            fields.append((key, _parse_object(member, at, top=None, in_or=in_or)))
        elif isinstance(member, list):
            if top is not None and key == DATA_KEYS[top] and top is not SourceKind.SQS:
                raise FilterPatternError(
                    f"{at}: the {top.value} data key takes a JSON object pattern (its fields), "
                    "not a list of values: AWS rejects non-JSON data patterns for streams"
                )
            fields.append((key, _parse_values(member, at)))
        else:
            raise FilterPatternError(f"{at}: must be an object or an array of values, not {_kind(member)}")
    return Obj(tuple(fields), tuple(groups))


def _parse_or(member: Any, at: str, path: str, *, top: SourceKind | None) -> tuple[Obj, ...]:
    if not isinstance(member, list):
        raise FilterPatternError(f'{at}: "$or" takes an array of at least 2 objects, not {_kind(member)}')
    if len(member) < 2:
        raise FilterPatternError(f'{at}: "$or" takes an array of at least 2 objects, got {len(member)}')
    alternatives = []
    for i, alt in enumerate(member):
        if not isinstance(alt, dict):
            raise FilterPatternError(f'{at}[{i}]: each alternative of "$or" must be an object, not {_kind(alt)}')
        if not alt:
            raise FilterPatternError(f"{at}[{i}]: empty objects are not allowed")
        alternatives.append(_parse_object(alt, path, top=top, in_or=True))
    return tuple(alternatives)


def _parse_values(values: list[Any], at: str) -> Leaf:
    if not values:
        raise FilterPatternError(f"{at}: empty arrays are not allowed")
    return Leaf(tuple(_parse_value(v, f"{at}[{i}]") for i, v in enumerate(values)))


def _parse_value(value: Any, at: str) -> Matcher:
    if value is None or isinstance(value, str | bool):
        return Exact(value)
    if isinstance(value, int | float):
        return Exact(value)
    if isinstance(value, dict):
        return _parse_operator(value, at)
    raise FilterPatternError(
        f"{at}: a value to match must be a string, number, true, false, null or an operator object, not {_kind(value)}"
    )


def _parse_operator(value: dict[str, Any], at: str) -> Matcher:
    if len(value) != 1:
        raise FilterPatternError(f"{at}: an operator object has exactly one key, not {len(value)}")
    ((op, arg),) = value.items()
    where = f'{at}: "{op}"'
    if op in _UNSUPPORTED:
        raise FilterPatternError(f"{where} {_UNSUPPORTED[op]}")
    if op == "prefix" or op == "suffix":
        ignore_case = False
        if isinstance(arg, dict):
            if list(arg) != ["equals-ignore-case"]:
                raise FilterPatternError(f'{where} takes a string or {{"equals-ignore-case": "..."}}')
            arg, ignore_case = arg["equals-ignore-case"], True
        if not isinstance(arg, str):
            raise FilterPatternError(f"{where} takes a string, not {_kind(arg)}")
        return Prefix(arg, ignore_case) if op == "prefix" else Suffix(arg, ignore_case)
    if op == "equals-ignore-case":
        if not isinstance(arg, str):
            raise FilterPatternError(f"{where} takes a string, not {_kind(arg)}")
        return EqualsIgnoreCase(arg)
    if op == "anything-but":
        return _parse_anything_but(arg, where)
    if op == "numeric":
        return _parse_numeric(arg, where)
    if op == "exists":
        if not isinstance(arg, bool):
            raise FilterPatternError(f"{where} takes true or false, not {_kind(arg)}")
        return Exists(arg)
    raise FilterPatternError(
        f"{where} is not an operator Lambda supports (known: {', '.join(_OPERATORS)}); "
        "to match an object value, write the nested fields as an object instead of inside an array"
    )


def _parse_anything_but(arg: Any, where: str) -> AnythingBut:
    if isinstance(arg, dict):
        inner = ", ".join(f'"{k}"' for k in arg) or "{}"
        raise FilterPatternError(
            f"{where} with {inner} is not supported by Lambda event filtering "
            "(EventBridge allows it on event buses only); list the excluded values instead"
        )
    values = arg if isinstance(arg, list) else [arg]
    if isinstance(arg, list) and not arg:
        raise FilterPatternError(f"{where} takes a non-empty list")
    bad = [v for v in values if not isinstance(v, str) and not _is_number(v)]
    if bad:
        raise FilterPatternError(f"{where} takes strings or numbers, not {_kind(bad[0])}")
    strings = [v for v in values if isinstance(v, str)]
    numbers = [v for v in values if _is_number(v)]
    if strings and numbers:
        raise FilterPatternError(f"{where} takes either all strings or all numbers, not a mix")
    return AnythingBut(frozenset(strings), frozenset(numbers))


def _parse_numeric(arg: Any, where: str) -> Numeric:
    if not isinstance(arg, list):
        raise FilterPatternError(f'{where} takes an array such as [">", 0, "<=", 5], not {_kind(arg)}')
    if len(arg) not in (2, 4):
        raise FilterPatternError(f'{where} takes [operator, number] or [">"/">=", number, "<"/"<=", number]')
    ops, nums = arg[0::2], arg[1::2]
    for op in ops:
        if op not in ("=", *_LOWER_OPS, *_UPPER_OPS):
            raise FilterPatternError(f"{where}: {json.dumps(op)} is not a numeric operator (=, <, <=, >, >=)")
    for n in nums:
        if isinstance(n, bool) or not isinstance(n, int | float) or (isinstance(n, float) and not math.isfinite(n)):
            raise FilterPatternError(f"{where}: the operand of a numeric operator must be a number, not {_kind(n)}")
    if len(arg) == 2:
        op, n = arg
        if op == "=":
            return Numeric(n, True, n, True)
        if op in _LOWER_OPS:
            return Numeric(n, _LOWER_OPS[op], None, False)
        return Numeric(None, False, n, _UPPER_OPS[op])
    (lo_op, lo, hi_op, hi) = arg
    if lo_op not in _LOWER_OPS or hi_op not in _UPPER_OPS:
        raise FilterPatternError(
            f'{where}: a range is a lower bound (">" or ">=") followed by an upper bound ("<" or "<=")'
        )
    if not lo < hi:
        raise FilterPatternError(f"{where}: the range is empty: the lower bound {lo} is not below the upper bound {hi}")
    return Numeric(lo, _LOWER_OPS[lo_op], hi, _UPPER_OPS[hi_op])


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _kind(value: Any) -> str:
    """The JSON type of `value`, with the value itself when short, for error details."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {json.dumps(value)}"
    if isinstance(value, int | float):
        return f"the number {json.dumps(value)}"
    if isinstance(value, str):
        text = json.dumps(value)
        return f"the string {text}" if len(text) <= 40 else f'the string {text[:36]}..."'
    if isinstance(value, list):
        return "an array"
    return "an object"
