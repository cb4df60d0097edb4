"""`esm filter test`: try FilterCriteria patterns against sample records, and see why one fails.

    esm filter test --source sqs --pattern '{"body": {"kind": ["order"]}}' --body '{"kind": "refund"}'
    esm filter test --source dynamodb --pattern @filters.json --event @event.json

Patterns: `--pattern JSON` or `--pattern @FILE` (`@-` reads stdin), repeatable (filters are ORed).
A pattern file may also hold a whole `{"Filters": [{"Pattern": "..."}]}` FilterCriteria object.
Records: `--record` takes one Lambda record, a JSON array of them, or an event `{"Records": [...]}`;
`--event` an event; `--body TEXT` builds an SQS record with that body. Records are what the
function sees (SQS `body` a string, Kinesis `kinesis.data` base64); for convenience a parsed SQS
body or Kinesis data object (as in the AWS recordings) is turned back into its JSON text, and a bare
`kinesis` object or DynamoDB stream record is wrapped, each with a note.

For each record the command prints MATCH (and which filters) or NO MATCH with, for every filter,
which key and operator failed. Exit status: 0 when it ran, whatever matched; 2 for an invalid
pattern (AWS's text and esm's detail) or unreadable input.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from esm.arns import SourceKind
from esm.filtering import DEFAULT_MAX_FILTERS, CompiledFilter, FilterPatternError, compile_filters

__all__ = ["add_filter_parser", "run_filter_test"]

EXIT_OK = 0
EXIT_USAGE = 2
_SAMPLE_QUEUE_ARN = "arn:aws:sqs:us-east-1:123456789012:esm-filter-test"


_EPILOG = """\
patterns: --pattern JSON or @FILE (@- reads stdin), repeatable; filters are ORed. A file may hold
  a whole FilterCriteria object, {"Filters": [{"Pattern": "..."}]}.
records: --record takes one Lambda record, a JSON array of them or an event {"Records": [...]};
  --event takes an event; --body TEXT builds an SQS record. Records are what the function sees
  (SQS body a string, Kinesis kinesis.data base64); a parsed body or data object is accepted.
exit status: 0 when the test ran, whatever matched; 2 for an invalid pattern or unreadable input.

example:
  esm filter test --source sqs --pattern '{"body": {"kind": ["order"]}}' --body '{"kind": "refund"}'
"""


class InputError(Exception):
    """A pattern or record argument that cannot be read or is not what the command expects."""


def add_filter_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add `filter test` to the `esm` command's subparsers; returns the `filter` parser."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "filter", help="try FilterCriteria patterns against sample records (`esm filter test`)"
    )
    actions = parser.add_subparsers(dest="filter_action", required=True, metavar="ACTION")
    test = actions.add_parser(
        "test",
        help="show which records match the patterns, and why the others do not",
        description="Try FilterCriteria patterns against sample records and see why a record is filtered out.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    test.add_argument(
        "--pattern", "-p", action="append", required=True, metavar="JSON|@FILE", help="a filter pattern (repeatable)"
    )
    test.add_argument("--source", "-s", required=True, choices=[k.value for k in SourceKind], help="event source kind")
    test.add_argument(
        "--record", "-r", action="append", default=[], metavar="JSON|@FILE", help="Lambda record(s) (repeatable)"
    )
    test.add_argument("--event", "-e", action="append", default=[], metavar="JSON|@FILE", help="a Lambda event")
    test.add_argument("--body", "-b", action="append", default=[], metavar="TEXT", help="an SQS message body")
    return parser


def run_filter_test(args: argparse.Namespace) -> int:
    """Run `esm filter test` with parsed arguments; print the verdicts and return the exit status."""
    source = SourceKind(args.source)
    try:
        patterns = [p for value in args.pattern for p in _patterns(value)]
        if not (args.record or args.event or args.body):
            raise InputError("give the records to test: --record JSON|@FILE, --event JSON|@FILE or --body TEXT")
        if args.body and source is not SourceKind.SQS:
            raise InputError("--body builds SQS records; for Kinesis or DynamoDB give --record or --event")
        records = _records(args, source)
    except InputError as exc:
        print(f"esm filter test: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        compiled = compile_filters(patterns, source)
    except FilterPatternError as exc:
        number = "" if exc.index is None else f"pattern {exc.index + 1}: "
        print(f"esm filter test: {number}{exc}", file=sys.stderr)
        print(f"  esm: {exc.detail}", file=sys.stderr)
        return EXIT_USAGE
    if len(patterns) > DEFAULT_MAX_FILTERS:
        print(
            f"warning: {len(patterns)} filters; AWS allows {DEFAULT_MAX_FILTERS} per mapping by default "
            "(10 with a quota increase)",
            file=sys.stderr,
        )
    _report(compiled, records)
    return EXIT_OK


def _report(compiled: CompiledFilter, records: list[tuple[str, dict[str, Any], list[str]]]) -> None:
    matched = 0
    for label, record, notes in records:
        hits = compiled.matching_filters(record)
        if hits:
            matched += 1
            which = ", ".join(str(i + 1) for i in hits)
            print(f"{label}: MATCH (filter{'s' if len(hits) > 1 else ''} {which})")
        else:
            print(f"{label}: NO MATCH")
        for note in notes:
            print(f"  note: {note}")
        for line in compiled.explain(record):
            print(f"  {line}")
    print(f"{matched} of {len(records)} record{'s' if len(records) != 1 else ''} match")


def _read(value: str, what: str) -> str:
    if not value.startswith("@"):
        return value
    name = value[1:]
    try:
        return sys.stdin.read() if name == "-" else Path(name).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {what} {value}: {exc}") from None


def _patterns(value: str) -> list[str]:
    """One --pattern argument: a pattern, or a FilterCriteria object holding several."""
    text = _read(value, "--pattern")
    try:
        parsed = json.loads(text)
    except ValueError:
        return [text]  # compile_filters reports it with AWS's text
    criteria = parsed.get("FilterCriteria", parsed) if isinstance(parsed, dict) else None
    filters = criteria.get("Filters") if isinstance(criteria, dict) else None
    if isinstance(filters, list) and filters and all(isinstance(f, dict) and "Pattern" in f for f in filters):
        return [f["Pattern"] if isinstance(f["Pattern"], str) else json.dumps(f["Pattern"]) for f in filters]
    return [text]


def _records(args: argparse.Namespace, source: SourceKind) -> list[tuple[str, dict[str, Any], list[str]]]:
    """(label, record, notes) for every record given, in order."""
    raw: list[Any] = []
    for option, values in (("--record", args.record), ("--event", args.event)):
        for value in values:
            text = _read(value, option)
            try:
                parsed = json.loads(text)
            except ValueError as exc:
                raise InputError(f"{option} {_short(value)} is not JSON: {exc}") from None
            if isinstance(parsed, dict) and isinstance(parsed.get("Records"), list):
                raw.extend(parsed["Records"])
            elif option == "--event":
                raise InputError(f'--event {_short(value)} is not an event: it has no "Records" array')
            elif isinstance(parsed, list):
                raw.extend(parsed)
            else:
                raw.append(parsed)
    out = []
    for i, item in enumerate(raw, 1):
        if not isinstance(item, dict):
            raise InputError(f"record {i} is not a JSON object")
        record, notes = _normalize(item, source)
        out.append((f"record {i}{_identity(record, source)}", record, notes))
    for i, body in enumerate(args.body, 1):
        out.append((f"body {i}", _sqs_record(body, i), []))
    return out


def _normalize(record: dict[str, Any], source: SourceKind) -> tuple[dict[str, Any], list[str]]:
    """The record as the function would see it, and a note for every change made."""
    notes: list[str] = []
    record = dict(record)
    if source is SourceKind.SQS:
        if "body" not in record and isinstance(record.get("Body"), str):
            record["body"] = record.pop("Body")
            notes.append('used "Body" (an SQS API message) as the record\'s "body"')
        if "body" in record and not isinstance(record["body"], str):
            record["body"] = json.dumps(record["body"])
            notes.append('"body" was parsed JSON; used its JSON text, as SQS delivers a string')
    elif source is SourceKind.KINESIS:
        if "kinesis" not in record and "data" in record:
            record = {"kinesis": record}
            notes.append('wrapped a bare Kinesis record in {"kinesis": ...}')
        inner = record.get("kinesis")
        if isinstance(inner, dict) and "data" in inner and not isinstance(inner["data"], str):
            record["kinesis"] = {**inner, "data": base64.b64encode(json.dumps(inner["data"]).encode()).decode()}
            notes.append('"data" was parsed JSON; used its base64-encoded JSON text, as Kinesis delivers it')
    elif "dynamodb" not in record and any(k in record for k in ("Keys", "NewImage", "OldImage")):
        record = {"dynamodb": record}
        notes.append('wrapped a bare stream record in {"dynamodb": ...}; top-level keys such as "eventName" are absent')
    return record, notes


def _identity(record: dict[str, Any], source: SourceKind) -> str:
    if source is SourceKind.SQS:
        ident = record.get("messageId")
    elif source is SourceKind.KINESIS:
        inner = record.get("kinesis")
        ident = inner.get("sequenceNumber") if isinstance(inner, dict) else None
    else:
        ident = record.get("eventID")
    return f" ({ident})" if isinstance(ident, str) and ident else ""


def _sqs_record(body: str, n: int) -> dict[str, Any]:
    """An SQS Lambda record around `body`, with sample metadata (ESM-SPEC.md §3.1)."""
    return {
        "messageId": f"00000000-0000-4000-8000-{n:012d}",
        "receiptHandle": "esm-filter-test",
        "body": body,
        "attributes": {
            "ApproximateReceiveCount": "1",
            "SentTimestamp": "0",
            "SenderId": "AIDAIENQZJOLO23YVJ4VO",
            "ApproximateFirstReceiveTimestamp": "0",
        },
        "messageAttributes": {},
        "md5OfBody": hashlib.md5(body.encode()).hexdigest(),  # noqa: S324 - SQS's own checksum, not security
        "eventSource": "aws:sqs",
        "eventSourceARN": _SAMPLE_QUEUE_ARN,
        "awsRegion": "us-east-1",
    }


def _short(value: str) -> str:
    return value if len(value) <= 40 else value[:37] + "..."
