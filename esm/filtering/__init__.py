"""FilterCriteria: Lambda's event filter patterns, compiled once per mapping (ESM-SPEC.md §6).

Public API:
- `compile_filters(patterns, source) -> CompiledFilter`; `CompiledFilter.matches(record)` says
  whether a Lambda record (as esm builds it: SQS `body` a string, Kinesis `kinesis.data` base64,
  DynamoDB `dynamodb` in DynamoDB JSON) passes: filters are ORed, no filters keep everything.
  `CompiledFilter.explain(record)` says in plain words why a record fails (for `esm filter test`).
- `FilterPatternError` (a ValueError): `str()` is AWS's text `Invalid filter pattern definition.`,
  `.detail` says what exactly is wrong, `.index` which filter.
- `filter_problems(patterns, source, max_filters=5)`: every problem the configuration layer
  reports, as `Filters.<i>.Pattern: reason` or `Filters: reason` (relative to `FilterCriteria`).

Semantics (what AWS documents, FILT/EB-OPS, and what real AWS did in the recordings, §6):
- A pattern is a JSON object; each key names a field. Keys are ANDed, the values listed for one
  field are ORed, `"$or": [{...}, {...}]` ORs whole sub-patterns. Nested objects follow nested
  fields. Duplicate keys: the last one wins (OLD-DG).
- Values: strings, numbers, true, false, null (`[null]` matches a JSON null, not a missing field),
  `""`; operators `prefix`, `suffix` (each also `{"equals-ignore-case": "..."}`),
  `equals-ignore-case`, `anything-but` (a string, a number, or a non-empty list of all strings or
  all numbers), `numeric` (`=`, `<`, `<=`, `>`, `>=`, or a range: a lower then an upper bound),
  `exists` (true/false).
- Operators apply to leaf values only (FILT): a field whose value is an object has no leaf value,
  so `{"exists": false}` matches it and nothing else does. That is why the DynamoDB type key is
  required (`{"S": ["v"]}`), recorded on AWS (`content_filter_type`, `exists_false_filter`).
- A record array matches if any element matches (`"tags": ["a"]` vs `["b", "a"]`). For an array of
  objects, all the fields of one object pattern must match in the same element (EventBridge's
  array consistency, aws/event-ruler `rulesForJSONEvent`).
- Per source (§6.3): SQS patterns see the Lambda record (`body` plus metadata such as `attributes`
  or `messageAttributes`); a `body` object pattern needs a JSON body, a `body` list of values needs
  a plain-string body, and a mismatch never matches (AWS drops the message). Kinesis patterns see
  the record's `kinesis` object (`data` base64-decoded and parsed as JSON, `partitionKey`, ...);
  data that is not JSON never matches a `data` pattern. DynamoDB patterns see the Lambda record
  (`dynamodb` and the top-level `eventName`, `eventSource`, ..., which real AWS filters on, §9);
  `N` values are strings, so `numeric` never matches them; `ApproximateCreationDateTime` is a
  number and does.

Decisions where AWS is silent (each chosen to stay as close to EventBridge as evidence allows):
1. Numbers are equal when they are written alike, as the Lambda docs say (ESM-SPEC.md §6.2):
   `[300]` matches 300 but not 300.0 or 3.0e2, in exact values and in `anything-but`. Numbers
   read from JSON (patterns, bodies, Kinesis data) keep the text they were written with; numbers
   esm builds itself (`approximateArrivalTimestamp`, `SizeBytes`) are written as the event shows
   them. `numeric` compares by value. Booleans are never numbers (`[1]` does not match `true`).
   (EventBridge's current compiler, aws/event-ruler, also matches by value; the spec decides.)
2. Operators Lambda does not support are rejected with AWS's text and an esm detail rather than
   being accepted: `wildcard`, `cidr`, `exactly`, and `anything-but` with `prefix`, `suffix`,
   `equals-ignore-case` or `wildcard` ("Pipe support: No" in EB-OPS, absent from FILT).
3. Validation follows EventBridge's compiler: no empty objects or arrays, a field's value must be
   an object or an array, a match value must be a string/number/boolean/null/operator object with
   exactly one key, `$or` needs an array of at least two objects and no operator names as field
   names inside it, a numeric range is a lower bound (`>`/`>=`) then an upper bound (`<`/`<=`) and
   must not be empty, numeric operands are finite numbers (EventBridge's former ±5e9 limit is not
   enforced), NaN/Infinity are not JSON. For Kinesis and DynamoDB a `data`/`dynamodb` pattern that
   is a list of values (not a JSON object pattern) is rejected: AWS "throws an exception" for a
   non-JSON data pattern on streams (OLD-DG); esm uses the same AWS text for it.
4. "Valid JSON" for an SQS body or Kinesis data means any JSON text (RFC 8259), including a bare
   number or string: `123` is JSON, so it matches neither a plain-string pattern (format mismatch)
   nor an object pattern's fields. Kinesis data must also be valid base64 and UTF-8.
5. `anything-but` matches any present leaf value not excluded, whatever its type (a number or
   null passes `{"anything-but": ["a"]}`); it never matches a missing field.
6. `exists: true` counts a JSON null as present (null is a leaf value in EventBridge).
7. A missing field, a scalar, null or an empty array where the pattern has an object: only
   `exists: false` conditions below it can match (there is no leaf under it). Inside an array
   of objects, conditions are checked per element, `exists: false` included.
8. `equals-ignore-case` (and the ignore-case prefix/suffix) compare `str.lower()` of both sides
   (Unicode default lower-casing, no full case folding).
9. Kinesis patterns cannot see the outer record fields (`eventName`, `awsRegion`, ...): AWS's
   Kinesis examples put `data` and `partitionKey` at the top of the pattern, so the pattern is
   matched against the `kinesis` object; `explain()` hints when a pattern names an outer field.
10. Pattern length and count limits (4096 characters, 5 filters by default, 10 with a quota
   increase) are reported by `filter_problems`, not by `compile_filters`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

from esm.arns import SourceKind
from esm.filtering.compiler import UNSET, TopPred, compile_top, decode_data, record_view
from esm.filtering.explain import reasons
from esm.filtering.syntax import DATA_KEYS, INVALID_PATTERN_MESSAGE, FilterPatternError, Obj, parse_pattern

__all__ = [
    "DATA_KEYS",
    "DEFAULT_MAX_FILTERS",
    "INVALID_PATTERN_MESSAGE",
    "MAX_FILTERS_QUOTA",
    "MAX_PATTERN_LENGTH",
    "CompiledFilter",
    "FilterPatternError",
    "compile_filters",
    "filter_problems",
]

Record = TypeVar("Record", bound=Mapping[str, Any])

MAX_PATTERN_LENGTH = 4096
"""The longest `Pattern` the API accepts (API model, `Filter.Pattern`)."""
DEFAULT_MAX_FILTERS = 5
"""Filters per mapping that AWS allows by default (FILT)."""
MAX_FILTERS_QUOTA = 10
"""Filters per mapping that AWS allows at most, after a quota increase (FILT)."""


class CompiledFilter:
    """A mapping's FilterCriteria, compiled once: `matches()` for the engine, `explain()` for people.

    Records are dicts shaped as the function sees them. With no filters every record matches.
    """

    __slots__ = ("_tops", "_trees", "patterns", "source")

    def __init__(self, patterns: Sequence[str], source: SourceKind, trees: Sequence[Obj]) -> None:
        self.patterns: tuple[str, ...] = tuple(patterns)
        self.source = source
        self._trees = tuple(trees)
        self._tops: tuple[TopPred, ...] = tuple(compile_top(t, source) for t in self._trees)

    @property
    def active(self) -> bool:
        """True if there is at least one filter (else every record passes)."""
        return bool(self._tops)

    def matches(self, record: Mapping[str, Any], data: bytes | None = None) -> bool:
        """True if the record matches at least one filter (or there are none).

        `data`: for a Kinesis record, the raw bytes its base64 `data` stands for, if the caller has
        them (a stream source does): a filter on `data` then skips the base64 decoding. The verdict
        is the same with or without them.
        """
        tops = self._tops
        if not tops:
            return True
        view = record_view(record, self.source)
        cache = [UNSET, data]  # the decoded data key, shared by every filter for this record
        for top in tops:  # noqa: SIM110 - a plain loop: no generator object per record on the hot path
            if top(view, cache):
                return True
        return False

    def matching_filters(self, record: Mapping[str, Any]) -> list[int]:
        """The 0-based indexes of the filters the record matches."""
        view = record_view(record, self.source)
        cache = [UNSET, None]
        return [i for i, top in enumerate(self._tops) if top(view, cache)]

    def partition(self, records: Iterable[Record]) -> tuple[list[Record], list[Record]]:
        """Split records into (kept, filtered out), keeping their order."""
        kept: list[Record] = []
        dropped: list[Record] = []
        for record in records:
            (kept if self.matches(record) else dropped).append(record)
        return kept, dropped

    def explain(self, record: Mapping[str, Any]) -> list[str]:
        """Why the record is filtered out: one line per filter, `filter N: reason; reason`.

        Empty when the record matches. Slower than `matches()`; meant for `esm filter test`.
        """
        if not self._tops or self.matches(record):
            return []
        view = record_view(record, self.source)
        decoded = decode_data(view, self.source)
        lines = []
        for i, tree in enumerate(self._trees, 1):
            why = reasons(tree, view, self.source, decoded) or ["does not match"]
            lines.append(f"filter {i}: " + "; ".join(why))
        return lines

    def __repr__(self) -> str:
        return f"CompiledFilter(source={self.source.value!r}, filters={len(self._tops)})"


def compile_filters(patterns: Sequence[str], source: SourceKind) -> CompiledFilter:
    """Validate and compile a mapping's filter patterns; raise FilterPatternError for the first bad one."""
    trees = [parse_pattern(p, source, index=i) for i, p in enumerate(patterns)]
    return CompiledFilter(patterns, source, trees)


def filter_problems(patterns: Sequence[str], source: SourceKind, max_filters: int = DEFAULT_MAX_FILTERS) -> list[str]:
    """Every problem with a FilterCriteria, for the configuration layer and `esm validate`.

    Each item is `PATH: reason` with PATH relative to `FilterCriteria` (`Filters` or
    `Filters.<i>.Pattern`); invalid patterns carry AWS's text followed by esm's detail.
    """
    problems: list[str] = []
    if len(patterns) > max_filters:
        problems.append(
            f"Filters: {len(patterns)} filters, but a mapping takes at most {max_filters} "
            f"(AWS allows {DEFAULT_MAX_FILTERS} by default, up to {MAX_FILTERS_QUOTA} with a quota increase)"
        )
    for i, pattern in enumerate(patterns):
        at = f"Filters.{i}.Pattern"
        if len(pattern) > MAX_PATTERN_LENGTH:
            problems.append(
                f"{at}: Member must have length less than or equal to {MAX_PATTERN_LENGTH} "
                f"(the pattern has {len(pattern)} characters)"
            )
            continue
        try:
            parse_pattern(pattern, source, index=i)
        except FilterPatternError as exc:
            problems.append(f"{at}: {exc} ({exc.detail})")
    return problems
