"""Load the real-AWS recordings and compare what esm produces with them.

The recordings (`/work/shared/aws-recordings/*.snapshot.json`, see its README) were captured
against real AWS by LocalStack's parity suite. Two things shape how they are compared:

- Volatile values are replaced by placeholders that keep the value's *format*: `<uuid:2>`,
  `<receipt-handle:3>`, `<region>`, `sent-timestamp`, `arn:<partition>:sqs:<region>:
  111111111111:<resource:1>`. A placeholder matches any value of its format (`PLACEHOLDER_FORMATS`);
  a numbered one can be *bound*, so that `<uuid:2>` must be the same message id in a first and a
  second delivery while `<receipt-handle:3>` and `<receipt-handle:4>` must differ.
- The recorder parsed JSON-looking strings into objects: a recorded SQS `body` object stands for a
  string whose JSON parse matches it.

Public helpers:
- `load_snapshot(source)`, `recorded(test, key)`: the recorded content of one test.
- `records_in(value)`: every event record inside a recorded value, in document order.
- `assert_matches_recording(actual, recorded)`: the conformance check (keys, key order, JSON
  types, placeholder formats, literal values).
- `instantiate(recorded)`: a concrete value matching a recording, for round-trip tests and fakes.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "PLACEHOLDER_FORMATS",
    "assert_matches_recording",
    "instantiate",
    "load_snapshot",
    "recorded",
    "recordings_dir",
    "records_in",
]

_EPOCH_MS = r"\d{13}"
PLACEHOLDER_FORMATS: dict[str, str] = {
    "uuid": r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
    "receipt-handle": r"\S+",
    "md5-of-body": r"[0-9a-f]{32}",
    "m-d5-of-body": r"[0-9a-f]{32}",
    "approximate-first-receive-timestamp": _EPOCH_MS,
    "sent-timestamp": _EPOCH_MS,
    "sender-id": r"\S+",
    "sequence-number": r"\d+",
    "start-sequence-number": r"\d+",
    "region": r"[a-z]{2}(?:-[a-z]+)+-\d+",
    "partition": r"aws(?:-[a-z]+)*",
    "resource": r"[A-Za-z0-9_.\-/]+",
    "queue-url": r"https?://\S+",
}
"""Regular expressions for the format each placeholder kind stands for. A kind not listed here
matches any non-empty string (or, alone, any number: the recorder also replaced numeric values);
`<timestamp:2022-07-13T13:48:01.000Z>` matches that example's format, digit for digit."""

# Placeholders without brackets: the recorder wrote every SentTimestamp and SenderId this way.
RECORDED_BOOK_ATTRIBUTES: dict[str, Any] = {
    "Title": {"DataType": "String", "StringValue": "The Whistler"},
    "Author": {"DataType": "String", "StringValue": "John Grisham"},
    "WeeksOn": {"DataType": "Number", "StringValue": "6"},
}
"""The SendMessage attributes of `test_message_body_and_attributes_passed_correctly`, whose recorded
md5OfMessageAttributes is d25a6aea97eb8f585bfa92d314504a92."""

_LITERAL_PLACEHOLDERS = frozenset({"sent-timestamp", "sender-id"})
_TOKEN = re.compile(r"<([a-z0-9-]+)(?::([^<>]+))?>|111111111111")
_ACCOUNT = "111111111111"  # the recorder's stand-in for every account id
# Real AWS emitted both orders of these two keys within one recorded test run (14 of 131 SQS
# records put md5OfBody first), so either recorded order is accepted for either actual order.
_SWAPPABLE = ("md5OfBody", "md5OfMessageAttributes")


def recordings_dir() -> Path:
    """The `aws-recordings` folder.

    `$ESM_SHARED_DIR/aws-recordings` if set; else the team's shared copy beside the checkout
    (`../shared/aws-recordings`); else the copy kept with these tests
    (`tests/conformance/aws-recordings`, unchanged from the shared one, Apache-2.0, see its README),
    so a clone on its own still runs the conformance suite.
    """
    shared = os.environ.get("ESM_SHARED_DIR")
    if shared:
        return Path(shared) / "aws-recordings"
    beside = Path(__file__).resolve().parents[3] / "shared" / "aws-recordings"
    return beside if beside.is_dir() else Path(__file__).resolve().parent / "aws-recordings"


@functools.cache
def load_snapshot(source: str = "sqs") -> dict[str, Any]:
    """The parsed `<source>.snapshot.json` (`sqs`, `kinesis` or `dynamodbstreams`), read once."""
    with (recordings_dir() / f"{source}.snapshot.json").open(encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)
    return data


def recorded(test: str, key: str, *, source: str = "sqs") -> Any:
    """The value recorded under `key` by the test whose id ends with `::<test>`.

    `test` is the test function name, with its class (`Class::test`) or parameters (`test[15]`)
    when that is needed to make it unique.
    """
    matches = [v for k, v in load_snapshot(source).items() if k.endswith(f"::{test}")]
    if len(matches) != 1:
        raise LookupError(f"{len(matches)} recorded tests match {test!r} in {source}")
    return matches[0]["recorded-content"][key]


def records_in(value: Any) -> list[dict[str, Any]]:
    """Every event record (an object with an `eventSource` key) inside `value`, depth first."""
    found: list[dict[str, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "eventSource" in node:
                found.append(node)
                return
            for child in node.values():
                walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(value)
    return found


def assert_matches_recording(
    actual: Any, recorded: Any, *, bindings: dict[str, str] | None = None, check_order: bool | None = None
) -> None:
    """Assert that `actual` (what esm produced) matches `recorded` (what real AWS produced).

    - Objects have the same keys in the same order, recursively, except the names inside
      `messageAttributes` (AWS's order there is not reproducible; each attribute's own keys are
      still ordered) and the contents of parsed JSON strings (the sender's business, not AWS's).
    - `check_order=None` checks order unless the recording itself is key-sorted (its capturer
      serialized with sorted keys, as LocalStack's FIFO `test_report_batch_item_failures` did);
      True/False force it. The `md5OfBody`/`md5OfMessageAttributes` swap AWS itself shows is allowed.
    - Values have the same JSON types; literals are equal; placeholders match their format
      (`PLACEHOLDER_FORMATS`); a recorded object or array where `actual` has a string means the
      recorder parsed that string, so the string's JSON parse is compared.
    - `bindings`: pass one dict to several calls to check placeholders across them: a numbered
      placeholder must stand for the same value each time, and two numbered placeholders of one
      kind for different values (same message id, new receipt handle on redelivery).

    Raises AssertionError listing every difference, each with its path.
    """
    if check_order is None:
        check_order = not (isinstance(recorded, dict) and len(recorded) > 2 and list(recorded) == sorted(recorded))
    matcher = _Matcher(bindings if bindings is not None else {})
    matcher.match(actual, recorded, "$", ordered=check_order)
    if matcher.problems:
        raise AssertionError("does not match the AWS recording:\n  " + "\n  ".join(matcher.problems))


def _json_type(value: Any) -> str:
    for kind, types in (("null", type(None)), ("boolean", bool), ("number", int | float), ("string", str)):
        if isinstance(value, types):
            return kind
    return "array" if isinstance(value, list) else "object" if isinstance(value, dict) else type(value).__name__


def _orders_match(actual: list[str], recorded: list[str]) -> bool:
    if actual == recorded:
        return True
    a, b = _SWAPPABLE
    if a in recorded and b in recorded and abs(recorded.index(a) - recorded.index(b)) == 1:
        swapped = list(recorded)
        i, j = swapped.index(a), swapped.index(b)
        swapped[i], swapped[j] = swapped[j], swapped[i]
        return actual == swapped
    return False


class _Matcher:
    """One comparison: walks both values and collects every difference with its path."""

    def __init__(self, bindings: dict[str, str]) -> None:
        self.bindings = bindings
        self.problems: list[str] = []

    def fail(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}")

    def match(self, actual: Any, recorded: Any, path: str, *, ordered: bool) -> None:
        if isinstance(recorded, dict | list) and isinstance(actual, str):
            try:
                parsed = json.loads(actual)
            except ValueError:
                self.fail(path, f"recorded a JSON {_json_type(recorded)}, got a string that is not JSON")
                return
            self.match(parsed, recorded, path + "<json>", ordered=False)
        elif isinstance(recorded, dict):
            self.match_object(actual, recorded, path, ordered=ordered)
        elif isinstance(recorded, list):
            if not isinstance(actual, list) or len(actual) != len(recorded):
                self.fail(path, f"expected an array of {len(recorded)}, got {_json_type(actual)} {actual!r:.200}")
                return
            for i, (a, r) in enumerate(zip(actual, recorded, strict=True)):
                self.match(a, r, f"{path}[{i}]", ordered=ordered)
        elif isinstance(recorded, str):
            self.match_string(actual, recorded, path)
        elif _json_type(actual) != _json_type(recorded) or actual != recorded:
            self.fail(path, f"expected {_json_type(recorded)} {recorded!r}, got {_json_type(actual)} {actual!r}")

    def match_object(self, actual: Any, recorded: dict[str, Any], path: str, *, ordered: bool) -> None:
        if not isinstance(actual, dict):
            self.fail(path, f"expected an object, got {_json_type(actual)} {actual!r:.200}")
            return
        if set(actual) != set(recorded):
            missing, extra = sorted(set(recorded) - set(actual)), sorted(set(actual) - set(recorded))
            self.fail(path, f"keys differ: missing {missing}, unexpected {extra}")
        elif ordered and not path.endswith(".messageAttributes") and not _orders_match(list(actual), list(recorded)):
            self.fail(path, f"key order {list(actual)} != recorded {list(recorded)}")
        for key, value in recorded.items():
            if key in actual:
                self.match(actual[key], value, f"{path}.{key}", ordered=ordered)

    def match_string(self, actual: Any, recorded: str, path: str) -> None:
        if actual == recorded and not _TOKEN.search(recorded) and recorded not in _LITERAL_PLACEHOLDERS:
            return
        if recorded in _LITERAL_PLACEHOLDERS:
            tokens: list[tuple[str, str | None, str]] = [(recorded, None, recorded)]
            pattern = f"({PLACEHOLDER_FORMATS[recorded]})"
        else:
            tokens, pattern = _template(recorded)
        whole_generic = len(tokens) == 1 and pattern == "(.+)"
        if whole_generic and isinstance(actual, int | float) and not isinstance(actual, bool):
            return  # an unknown placeholder standing for a number
        if not isinstance(actual, str):
            self.fail(path, f"expected a string like {recorded!r}, got {_json_type(actual)} {actual!r}")
            return
        m = re.fullmatch(pattern, actual, flags=re.DOTALL)
        if m is None:
            self.fail(path, f"{actual!r:.200} does not have the format of {recorded!r}")
            return
        for (kind, number, token), value in zip(tokens, m.groups(), strict=True):
            if number is not None and number.isdigit():
                self.bind(path, kind, token, value)

    def bind(self, path: str, kind: str, token: str, value: str) -> None:
        previous = self.bindings.setdefault(token, value)
        if previous != value:
            self.fail(path, f"{token} was {previous!r} before, now {value!r}")
            return
        for other, bound in self.bindings.items():
            if other != token and bound == value and other.startswith(f"<{kind}:"):
                self.fail(path, f"{token} and {other} are both {value!r}; the recording has two values")


def _template(recorded: str) -> tuple[list[tuple[str, str | None, str]], str]:
    """Turn a recorded string into a regex with one group per placeholder: (tokens, pattern)."""
    tokens: list[tuple[str, str | None, str]] = []
    parts: list[str] = []
    last = 0
    for m in _TOKEN.finditer(recorded):
        parts.append(re.escape(recorded[last : m.start()]))
        last = m.end()
        if m.group(0) == _ACCOUNT:
            kind, arg, fmt = "account", None, r"\d{12}"
        else:
            kind, arg = m.group(1), m.group(2)
            if kind == "timestamp" and arg is not None:
                fmt = "".join(r"\d" if c.isdigit() else re.escape(c) for c in arg)
            else:
                fmt = PLACEHOLDER_FORMATS.get(kind, ".+")
        tokens.append((kind, arg, m.group(0)))
        parts.append(f"({fmt})")
    parts.append(re.escape(recorded[last:]))
    return tokens, "".join(parts)


_SAMPLES: dict[str, Callable[[str], str]] = {
    "uuid": lambda n: _uuid_text(hashlib.md5(n.encode()).hexdigest()),  # noqa: S324
    "receipt-handle": lambda n: f"AQEB{hashlib.sha256(n.encode()).hexdigest()}",
    "md5-of-body": lambda n: hashlib.md5(n.encode()).hexdigest(),  # noqa: S324
    "m-d5-of-body": lambda n: hashlib.md5(n.encode()).hexdigest(),  # noqa: S324
    "approximate-first-receive-timestamp": lambda n: "1764072000123",
    "sent-timestamp": lambda n: "1764072000000",
    "sender-id": lambda n: "AIDAIENQZJOLO23YVJ4VO",
    "sequence-number": lambda n: str(18849496460467696128 + int(hashlib.md5(n.encode()).hexdigest()[:6], 16)),  # noqa: S324
    "start-sequence-number": lambda n: "49590338271490256608559692538361571095921575989136588898",
    "region": lambda n: "us-east-1",
    "partition": lambda n: "aws",
    "resource": lambda n: f"resource-{_number(n)}",
    "queue-url": lambda n: f"https://sqs.us-east-1.amazonaws.com/111111111111/queue-{_number(n)}",
    "account": lambda n: _ACCOUNT,
}


def _number(token: str) -> str:
    return token.strip("<>").rpartition(":")[2]


def _uuid_text(hex32: str) -> str:
    return f"{hex32[:8]}-{hex32[8:12]}-{hex32[12:16]}-{hex32[16:20]}-{hex32[20:]}"


def instantiate(recorded: Any, bindings: dict[str, str] | None = None) -> Any:
    """A concrete value that matches `recorded`: every placeholder replaced by a sample of its format.

    The same placeholder always gives the same sample and different numbered placeholders give
    different samples, so `assert_matches_recording(instantiate(r), r)` holds (with bindings too).
    A placeholder already in `bindings` (filled by `assert_matches_recording`) takes its bound
    value instead: `instantiate(recorded_response, bindings)` turns a recorded function response
    that names `<uuid:2>` into one that names the message id esm actually saw.
    """
    if isinstance(recorded, dict):
        return {k: instantiate(v, bindings) for k, v in recorded.items()}
    if isinstance(recorded, list):
        return [instantiate(v, bindings) for v in recorded]
    if not isinstance(recorded, str):
        return recorded
    if recorded in _LITERAL_PLACEHOLDERS:
        return _SAMPLES[recorded](recorded)

    def sample(m: re.Match[str]) -> str:
        if bindings is not None and m.group(0) in bindings:
            return bindings[m.group(0)]
        if m.group(0) == _ACCOUNT:
            return _ACCOUNT
        kind, arg = m.group(1), m.group(2)
        if kind == "timestamp" and arg is not None:
            return arg
        make = _SAMPLES.get(kind)
        return make(m.group(0)) if make else f"sample-{kind}-{arg or 0}"

    return _TOKEN.sub(sample, recorded)
