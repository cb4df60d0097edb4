"""Why a record does not match a pattern, in plain words (for `esm filter test`).

`reasons(obj, view, source, decoded)` walks the pattern tree the same way the compiled closures do
(and uses the compiled value predicates themselves, one operator at a time), collecting one reason
per failed condition: the field's path, what the record has there, and what the pattern wanted,
with hints for the usual mistakes (a DynamoDB type key left out, a number sent as a string, a JSON
pattern on a plain-text SQS body). It is slower than the closures and is used only to explain.
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Mapping
from typing import Any

from esm.arns import SourceKind
from esm.filtering.compiler import MISSING, NOT_JSON, b64decode_strict, compile_scalar, leaf_values
from esm.filtering.syntax import (
    DATA_KEYS,
    AnythingBut,
    EqualsIgnoreCase,
    Exact,
    Exists,
    Leaf,
    Matcher,
    Node,
    Numeric,
    Obj,
    Prefix,
    Suffix,
    loads_strict,
)

__all__ = ["describe", "reasons"]

_DDB_TYPES = frozenset(("S", "N", "B", "BOOL", "NULL", "M", "L", "SS", "NS", "BS"))
_KINESIS_OUTER = frozenset(
    ("kinesis", "eventSource", "eventVersion", "eventID", "eventName", "invokeIdentityArn", "awsRegion")
) | {"eventSourceARN"}


def reasons(obj: Obj, view: Mapping[str, Any], source: SourceKind, decoded: Any) -> list[str]:
    """Every reason `view` fails the top-level pattern `obj`; empty when it matches.

    `decoded` is the source's data key as `compiler.decode_data` returns it.
    """
    out: list[str] = []
    data_key = DATA_KEYS[source]
    for key, node in obj.fields:
        if key == data_key and source is not SourceKind.DYNAMODB:
            out.extend(_data_reasons(node, view, source, decoded))
        else:
            out.extend(_node(node, view.get(key, MISSING), key, source))
            if source is SourceKind.KINESIS and key in _KINESIS_OUTER and key not in view:
                out.append(
                    f'hint: Kinesis patterns match the record\'s "kinesis" object, so "{key}" is not there; '
                    'write "data" and "partitionKey" at the top of the pattern'
                )
    for group in obj.any_of:
        failures = [reasons(alt, view, source, decoded) for alt in group]
        if all(failures):
            out.append(_or_text(failures))
    return out


def _or_text(failures: list[list[str]]) -> str:
    parts = "; ".join(f"({i}) {', '.join(f)}" for i, f in enumerate(failures, 1))
    return f'"$or": none of the {len(failures)} alternatives matches: {parts}'


def _data_reasons(node: Node, view: Mapping[str, Any], source: SourceKind, decoded: Any) -> list[str]:
    key = DATA_KEYS[source]
    raw = view.get(key, MISSING)
    if raw is MISSING:
        return _node(node, MISSING, key, source)
    if isinstance(node, Obj):
        if decoded is NOT_JSON:
            if source is SourceKind.SQS:
                return [
                    f"body: is not JSON ({_show(raw)}) but the pattern filters its fields (a JSON pattern): "
                    "AWS drops such messages (format mismatch, ESM-SPEC.md §6.3)"
                ]
            return [f"data: {_why_not_json(raw)}, so a data pattern cannot match: AWS drops such records"]
        return _node(node, decoded, key, source)
    if decoded is not NOT_JSON:
        return [
            f"body: is JSON ({_show(raw)}) but the pattern matches the body as a plain string (a list of values): "
            "AWS drops such messages (format mismatch); to filter on its fields, use an object pattern"
        ]
    return _node(node, raw, key, source)


def _why_not_json(raw: Any) -> str:
    if not isinstance(raw, str):
        return f"is {_show(raw)}, not a base64 string"
    try:
        data = b64decode_strict(raw)
    except (binascii.Error, ValueError):
        return "is not valid base64"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return "decodes to bytes that are not UTF-8 text"
    try:
        loads_strict(text)
    except (ValueError, RecursionError):
        return f"decodes to text that is not JSON ({_show(text)})"
    return "is not JSON"  # pragma: no cover - decode_data and this function agree


def _node(node: Node, value: Any, path: str, source: SourceKind) -> list[str]:
    return _obj(node, value, path, source) if isinstance(node, Obj) else _leaf(node, value, path, source)


def _obj(obj: Obj, value: Any, path: str, source: SourceKind) -> list[str]:
    if isinstance(value, dict):
        out: list[str] = []
        for key, node in obj.fields:
            out.extend(_node(node, value.get(key, MISSING), f"{path}.{key}", source))
        for group in obj.any_of:
            failures = [_obj(alt, value, path, source) for alt in group]
            if all(failures):
                out.append(f"{path}: {_or_text(failures)}")
        return out
    if isinstance(value, list) and value:
        failures = [_obj(obj, element, f"{path}[{i}]", source) for i, element in enumerate(value)]
        if not all(failures):
            return []
        first = ", ".join(failures[0])
        return [f"{path}: no element of the array matches the pattern's fields together; first element: {first}"]
    if obj.matches_absent:
        return []
    names = ", ".join(f'"{k}"' for k, _ in obj.fields) or '"$or"'
    if value is MISSING:
        return [f"{path}: missing; the pattern needs it to be an object with {names}"]
    return [f"{path}: is {_show(value)}, not an object with {names}"]


def _leaf(leaf: Leaf, value: Any, path: str, source: SourceKind) -> list[str]:
    values = leaf_values(value)
    wanted = ", ".join(describe(m) for m in leaf.matchers)
    if not values:
        if leaf.matches_absent:
            return []
        if value is MISSING:
            return [f"{path}: missing; the pattern needs one of: {wanted}"]
        if isinstance(value, dict):
            hint = _ddb_hint(value, path, source)
            return [f"{path}: is an object, not a value (values and operators match leaf values only){hint}"]
        return [f"{path}: is an array without plain values; the pattern needs one of: {wanted}"]
    if any(isinstance(m, Exists) and m.present for m in leaf.matchers):
        return []
    checks = [(m, compile_scalar((m,))) for m in leaf.matchers if not isinstance(m, Exists)]
    if any(check(v) for _, check in checks for v in values):
        return []
    shown = _show(value)
    hints = [h for m, _ in checks for v in values if (h := _hint(m, v, source))]
    absent = " (the pattern requires it not to exist)" if leaf.matches_absent else ""
    text = f"{path}: {shown}{absent} matches none of: {wanted}"
    if hints:
        text += f" ({'; '.join(dict.fromkeys(hints))})"
    return [text]


def _ddb_hint(value: dict[str, Any], path: str, source: SourceKind) -> str:
    if source is SourceKind.DYNAMODB and len(value) == 1 and next(iter(value)) in _DDB_TYPES:
        t = next(iter(value))
        return f'; DynamoDB values carry their type: match "{path}.{t}", e.g. {{"{t}": [...]}}'
    return ""


def _hint(m: Matcher, v: Any, source: SourceKind) -> str:
    """A hint for the usual type and case mistakes, or ""."""
    if isinstance(m, Numeric) and isinstance(v, str) and _is_number_text(v):
        extra = ', and DynamoDB "N" values are strings' if source is SourceKind.DYNAMODB else ""
        return f"numeric operators match JSON numbers only: {_show(v)} is a string{extra}"
    if not isinstance(m, Exact):
        return ""
    wanted = m.value
    if _is_number(wanted) and isinstance(v, str) and _is_number_text(v):
        return f"{_show(v)} is a string, the pattern's {_show(wanted)} is a number"
    if isinstance(wanted, str) and _is_number(v) and _is_number_text(wanted):
        return f"{_show(v)} is a number, the pattern's {_show(wanted)} is a string"
    if isinstance(wanted, str) and isinstance(v, str) and wanted.lower() == v.lower():
        return 'values match case-sensitively; use {"equals-ignore-case": ...} to ignore case'
    return ""


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_number_text(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def describe(m: Matcher) -> str:
    """One operator in words, e.g. `prefix "us-" (ignoring case)` or `numeric > 10 and <= 20`."""
    if isinstance(m, Exact):
        return _show(m.value)
    if isinstance(m, Prefix | Suffix):
        kind = "prefix" if isinstance(m, Prefix) else "suffix"
        return f"{kind} {_show(m.text)}" + (" (ignoring case)" if m.ignore_case else "")
    if isinstance(m, EqualsIgnoreCase):
        return f"{_show(m.text)} ignoring case"
    if isinstance(m, AnythingBut):
        values = sorted(m.strings) if m.strings else sorted(m.numbers)
        return "anything but " + ", ".join(_show(v) for v in values)
    if isinstance(m, Numeric):
        if m.lower is not None and m.lower == m.upper:
            return f"numeric = {_show(m.lower)}"
        parts = []
        if m.lower is not None:
            parts.append(f"{'>=' if m.lower_inclusive else '>'} {_show(m.lower)}")
        if m.upper is not None:
            parts.append(f"{'<=' if m.upper_inclusive else '<'} {_show(m.upper)}")
        return "numeric " + " and ".join(parts)
    return "exists" if m.present else "does not exist"


def _show(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."
