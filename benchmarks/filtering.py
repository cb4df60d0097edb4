"""The filtering case of `make bench`: FilterCriteria evaluation throughput per core (issue #4).

Method: for each source a mapping's worth of patterns (4 filters mixing equality, prefix, numeric
ranges, anything-but, exists, `$or` and metadata keys) is evaluated against records of about 1 KB
(SQS: a JSON body; Kinesis: base64 JSON data; DynamoDB: a NewImage in DynamoDB JSON), of which
60 to 75 % match some filter. Two contenders see the same records: esm's compiled filters
(`CompiledFilter.matches`, patterns compiled once into closures, data decoded once per record),
and the plain reference interpreter of the test suite (`tests/unit/test_filtering.py`), which walks
the parsed pattern for every record and decodes the data for every filter. Throughput is records
per CPU second of this process (one core, `time.process_time`), best of `rounds`; both contenders
must agree on every verdict.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from esm.arns import SourceKind
from esm.filtering import compile_filters
from tests.unit.test_filtering import reference_matches

PADDING = "lorem ipsum dolor sit amet " * 30  # brings each record to about 1 KB

PATTERNS: dict[SourceKind, list[dict[str, Any]]] = {
    SourceKind.SQS: [
        {"body": {"order": {"type": ["buy"], "quantity": [{"numeric": [">=", 100, "<", 1000]}]}}},
        {"body": {"region": [{"prefix": "eu-"}], "status": [{"anything-but": ["cancelled", "failed"]}]}},
        {"attributes": {"ApproximateReceiveCount": [{"anything-but": "1"}]}, "body": {"retry": [True]}},
        {"$or": [{"body": {"priority": ["high"]}}, {"body": {"customer": {"tier": [{"equals-ignore-case": "GOLD"}]}}}]},
    ],
    SourceKind.KINESIS: [
        {"data": {"order": {"type": ["buy"], "quantity": [{"numeric": [">=", 100, "<", 1000]}]}}},
        {"partitionKey": [{"prefix": "eu-"}], "data": {"status": [{"anything-but": ["cancelled", "failed"]}]}},
        {"data": {"tags": ["urgent"], "discount": [{"exists": False}]}},
        {"$or": [{"data": {"priority": ["high"]}}, {"data": {"customer": {"tier": [{"suffix": "gold"}]}}}]},
    ],
    SourceKind.DYNAMODB: [
        {"eventName": ["INSERT"], "dynamodb": {"NewImage": {"type": {"S": ["buy"]}}}},
        {
            "dynamodb": {
                "NewImage": {"region": {"S": [{"prefix": "eu-"}]}, "status": {"S": [{"anything-but": "failed"}]}}
            }
        },
        {"dynamodb": {"ApproximateCreationDateTime": [{"numeric": [">=", 1_764_072_090]}]}},
        {"$or": [{"eventName": ["REMOVE"]}, {"dynamodb": {"NewImage": {"priority": {"S": ["high"]}}}}]},
    ],
}


def _document(i: int) -> dict[str, Any]:
    """The i-th business document, of about 1 KB once serialized."""
    return {
        "id": f"order-{i:08d}",
        "order": {"type": "buy" if i % 2 else "sell", "quantity": (i * 37) % 1500},
        "region": ("eu-west-1", "us-east-1", "ap-south-1")[i % 3],
        "status": ("open", "failed", "shipped", "cancelled")[i % 4],
        "priority": "high" if i % 7 == 0 else "normal",
        "customer": {"id": i % 1000, "tier": ("gold", "silver", "bronze")[i % 3], "name": f"customer {i % 1000}"},
        "tags": ["urgent", "fragile"] if i % 5 == 0 else ["fragile"],
        "retry": i % 11 == 0,
        "notes": PADDING,
    }


def make_records(source: SourceKind, count: int) -> list[dict[str, Any]]:
    """`count` Lambda records of about 1 KB for `source`."""
    records = []
    for i in range(count):
        doc = _document(i)
        if source is SourceKind.SQS:
            records.append(
                {
                    "messageId": f"00000000-0000-4000-8000-{i:012d}",
                    "body": json.dumps(doc),
                    "attributes": {"ApproximateReceiveCount": str(1 + i % 3), "SentTimestamp": "1764072000000"},
                    "messageAttributes": {},
                    "eventSource": "aws:sqs",
                }
            )
        elif source is SourceKind.KINESIS:
            data = base64.b64encode(json.dumps(doc).encode()).decode()
            kinesis = {"partitionKey": doc["region"], "sequenceNumber": str(10**20 + i), "data": data}
            records.append({"kinesis": kinesis, "eventSource": "aws:kinesis", "eventName": "aws:kinesis:record"})
        else:
            image = {k: {"S": v} for k, v in doc.items() if isinstance(v, str)}
            image["quantity"] = {"N": str(doc["order"]["quantity"])}
            image["type"] = {"S": doc["order"]["type"]}
            dynamodb = {"ApproximateCreationDateTime": 1_764_072_000.0 + i % 100, "NewImage": image}
            name = ("INSERT", "MODIFY", "REMOVE")[i % 3]
            records.append({"eventID": str(i), "eventName": name, "eventSource": "aws:dynamodb", "dynamodb": dynamodb})
    return records


def _rate(check: Callable[[Mapping[str, Any]], bool], records: Sequence[Mapping[str, Any]], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        for record in records:
            check(record)
        best = min(best, time.process_time() - start)
    return len(records) / best if best > 0 else float("inf")


def bench_source(source: SourceKind, records: int, rounds: int = 3) -> tuple[float, float]:
    """(compiled, reference) records per CPU second for one source's patterns and records."""
    patterns = PATTERNS[source]
    sample = make_records(source, records)
    compiled = compile_filters([json.dumps(p) for p in patterns], source)

    def reference(record: Mapping[str, Any]) -> bool:
        return reference_matches(patterns, record, source)

    verdicts = [compiled.matches(r) for r in sample]
    if verdicts != [reference(r) for r in sample]:
        raise AssertionError(f"compiled and reference filters disagree on {source.value} records")
    return _rate(compiled.matches, sample, rounds), _rate(reference, sample, rounds)


def bench_filters(records: int, rounds: int = 3) -> tuple[float, float]:
    """(compiled, reference) records per CPU second over the three sources' mix (`records` each)."""
    compiled_seconds = reference_seconds = 0.0
    for source in SourceKind:
        compiled, reference = bench_source(source, records, rounds)
        compiled_seconds += records / compiled
        reference_seconds += records / reference
    total = 3 * records
    return total / compiled_seconds, total / reference_seconds


def main(records: int = 20_000, rounds: int = 3) -> None:
    """Print records per second per core, compiled vs reference, per source and for the mix."""
    print(f"Filter evaluation, {records} records of ~1 KB per source, 4 filters each, best of {rounds}, one core")
    print(f"{'source':<10} {'compiled rec/s':>15} {'reference rec/s':>16} {'ratio':>7}")
    compiled_seconds = reference_seconds = 0.0
    for source in SourceKind:
        compiled, reference = bench_source(source, records, rounds)
        compiled_seconds += records / compiled
        reference_seconds += records / reference
        print(f"{source.value:<10} {compiled:>15,.0f} {reference:>16,.0f} {compiled / reference:>6.2f}x")
    mix_compiled, mix_reference = 3 * records / compiled_seconds, 3 * records / reference_seconds
    print(f"{'mix':<10} {mix_compiled:>15,.0f} {mix_reference:>16,.0f} {mix_compiled / mix_reference:>6.2f}x")
    print(f"ratio compiled/reference (records per second): {mix_compiled / mix_reference:.2f}x")


if __name__ == "__main__":
    main()
