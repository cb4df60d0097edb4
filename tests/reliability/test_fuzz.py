"""Fuzzing the response parsers and the event builders (issue 7, reliability point 4).

Two edges take input esm does not control:

- what a function answers: `esm.responses.parse_batch_response` (partial batch responses) and
  `esm.windows.read_state` (tumbling-window responses), and the decisions built on them
  (`esm.policy.decide_sqs`, `decide_stream`). Any bytes, any JSON (deeply nested, huge numbers,
  wrong types, odd unicode) must give the documented outcome, never an exception: a response
  that cannot be trusted fails the whole batch, which is retried as AWS does (ESM-SPEC.md §3.6,
  §4.1, §4.2; the table in `parse_batch_response`'s docstring is the oracle written out below).
- what the source APIs return: `sqs_record`, `kinesis_record`, `dynamodb_record`, driven through
  the pollers' own read paths (`BatchGatherer.next_batch`, `KinesisStream.read`,
  `DynamoDbStream.read`) over a fake API client that answers with generated raw shapes. A record
  of the API's shape (odd unicode, empty strings, optional keys missing or null) becomes the exact
  Lambda record; a malformed one raises only `esm.events.MALFORMED`, which the pollers catch: an
  SQS message is left to its visibility timeout (and logged without its content), a stream page
  fails as the retriable `MalformedRecord` source error.

Every property runs a modest, fixed set of examples (`derandomize=True`): the same in every CI run.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import json
import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from esm.arns import parse_source_arn
from esm.errors import AwsError, RetriableAwsError
from esm.events import (
    MALFORMED,
    dynamodb_item_key,
    dynamodb_record,
    encode_record,
    encode_stream_record,
    kinesis_record,
    sqs_record,
)
from esm.metrics import Metrics
from esm.policy import Attempt, StreamPolicy, decide_sqs, decide_stream
from esm.responses import ResponseKind, parse_batch_response
from esm.sources._shards import Page, StreamRecord
from esm.sources.dynamodb_streams import DynamoDbStream
from esm.sources.kinesis import KinesisStream
from esm.sources.sqs import BatchGatherer, SqsQueue, VisibilityKeeper
from esm.targets.base import InvokeResult
from esm.windows import read_state

FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.large_base_example],
)
FUZZ_RECORDS = settings(FUZZ, max_examples=60)  # each example runs a poller's read path: fewer, bigger ones
SUCCESS, PARTIAL, INVALID = ResponseKind.SUCCESS, ResponseKind.PARTIAL, ResponseKind.INVALID

QUEUE = parse_source_arn("arn:aws:sqs:us-east-1:123456789012:orders")
STREAM = parse_source_arn("arn:aws:kinesis:us-east-1:123456789012:stream/clicks")
DDB_STREAM = parse_source_arn("arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2024-01-01T00:00:00.000")
ROLE = "arn:aws:iam::123456789012:role/esm"
MARK = "PAYLOAD-MARK-"  # starts every generated body: no log line may ever contain it

SQS_IDS = ("059f36b4-87a3-44ab-83d2-661975830a7d", "2e1424d4-f796-459a-8184-9c92662be6da", "ï-😀", "a" * 100)
SEQUENCES = (
    "49590338271490256608559692538361571095921575989136588898",
    "49590338271490256608559692538361571095921575989136588899",
    "100",
    "7",
)

# --------------------------------------------------------------------------------------------
# strategies

ODD = st.sampled_from(
    ["", " ", "\u200b", "\u202e", "\ufeff", "é", "😀", "\U0010ffff", "a\r\nb", "²³", "٣", '"\\', "\t"]
)
TEXT = st.text(max_size=30) | ODD  # any Unicode that UTF-8 can carry (Hypothesis leaves out surrogates)
SURROGATE = st.text(st.characters(categories=["Cs"]), min_size=1, max_size=2)  # UTF-8 cannot carry these
DIGITS = st.text(st.characters(min_codepoint=48, max_codepoint=57), min_size=1, max_size=60)
SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | TEXT | SURROGATE


def json_documents(ids: tuple[str, ...]) -> st.SearchStrategy[Any]:
    """Any JSON value, biased towards the response shapes (keys and ids the parser looks for)."""
    keys = st.sampled_from(["batchItemFailures", "itemIdentifier", "state"]) | TEXT
    anything = st.recursive(
        SCALARS | st.sampled_from(ids),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
        max_leaves=20,
    )
    entry = anything | st.fixed_dictionaries(
        {"itemIdentifier": st.sampled_from(ids) | SCALARS}, optional={"reason": TEXT, "itemIdentifer": TEXT}
    )
    shaped = st.fixed_dictionaries(
        {"batchItemFailures": st.none() | st.lists(entry, max_size=6) | anything},
        optional={"state": anything, "extra": anything},
    )
    return (
        anything
        | shaped
        | st.lists(st.sampled_from(ids), max_size=3).map(
            lambda listed: {"batchItemFailures": [{"itemIdentifier": i} for i in listed]}
        )
    )


def serialize(document: Any, ascii_only: bool, indent: int | None) -> bytes:
    """A document as a function's runtime might send it (JSON, UTF-8; NaN written as NaN)."""
    return json.dumps(document, ensure_ascii=ascii_only, indent=indent).encode("utf-8", "surrogatepass")


def has(predicate: Callable[[Any], bool], value: Any) -> bool:
    """Whether any value inside `value` (itself included) satisfies `predicate`."""
    if predicate(value):
        return True
    if isinstance(value, dict):
        return any(has(predicate, k) or has(predicate, v) for k, v in value.items())
    if isinstance(value, list):
        return any(has(predicate, v) for v in value)
    return False


def non_finite(value: Any) -> bool:
    """NaN or ±Infinity: not JSON, though Python writes them."""
    return isinstance(value, float) and not math.isfinite(value)


def surrogate(value: Any) -> bool:
    """A string UTF-8 cannot encode."""
    return isinstance(value, str) and any("\ud800" <= c <= "\udfff" for c in value)


def documented_kind(document: Any, ids: tuple[str, ...]) -> tuple[ResponseKind, tuple[str, ...]]:
    """The partial batch response table (ESM-SPEC.md §3.6, §4.1, §4.2), written out independently."""
    if has(non_finite, document):
        return INVALID, ()  # NaN / Infinity: not valid JSON
    if document is None or (isinstance(document, list | str) and not document):
        return SUCCESS, ()  # null, [] and "" mean "no failures"
    if not isinstance(document, dict):
        return INVALID, ()  # the response is an object
    failures = document.get("batchItemFailures")
    if failures is None or (isinstance(failures, list) and not failures):
        return SUCCESS, ()
    if not isinstance(failures, list):
        return INVALID, ()
    failed: dict[str, None] = {}
    for entry in failures:
        identifier = entry.get("itemIdentifier") if isinstance(entry, dict) else None
        if not isinstance(identifier, str) or identifier not in ids:
            return INVALID, ()  # not an object, no / empty / null / non-string / unknown itemIdentifier
        failed[identifier] = None
    return PARTIAL, tuple(failed)


def check_response_invariants(payload: bytes, ids: tuple[str, ...]) -> ResponseKind:
    """parse_batch_response never raises and keeps its contract; returns the kind."""
    response = parse_batch_response(payload, ids)
    assert response.kind in ResponseKind
    if response.kind is PARTIAL:
        assert response.failed
        assert set(response.failed) <= set(ids)
        assert len(set(response.failed)) == len(response.failed)
    else:
        assert response.failed == ()
    assert bool(response.reason) == (response.kind is INVALID)
    assert len(response.reason) < 300  # bounded: a logged reason never carries a whole response
    return response.kind


def mutate(payload: bytes, data: st.DataObject) -> bytes:
    """One byte-level mutation of a payload: cut, insert, overwrite, or nothing."""
    how = data.draw(st.sampled_from(["cut", "insert", "overwrite", "keep"]))
    at = data.draw(st.integers(0, len(payload)))
    if how == "cut":
        return payload[:at]
    if how == "insert":
        return payload[:at] + data.draw(st.binary(min_size=1, max_size=8)) + payload[at:]
    if how == "overwrite" and payload:
        at = min(at, len(payload) - 1)
        return payload[:at] + bytes([data.draw(st.integers(0, 255))]) + payload[at + 1 :]
    return payload


# --------------------------------------------------------------------------------------------
# the response parsers


class TestPartialBatchResponses:
    """Any payload a function returns is classified by AWS's table; nothing raises."""

    @FUZZ
    @given(document=json_documents(SQS_IDS), ascii_only=st.booleans(), indent=st.none() | st.integers(0, 2))
    def test_any_json_gets_the_documented_kind(self, document: Any, ascii_only: bool, indent: int | None) -> None:
        """A JSON response is SUCCESS, PARTIAL (with the listed ids) or INVALID exactly as the table says."""
        payload = serialize(document, ascii_only, indent)
        response = parse_batch_response(payload, SQS_IDS)
        assert check_response_invariants(payload, SQS_IDS) is response.kind
        expected_kind, expected_failed = documented_kind(document, SQS_IDS)
        if not ascii_only and has(surrogate, document):
            expected_kind, expected_failed = INVALID, ()  # raw surrogates are not UTF-8
        assert (response.kind, response.failed) == (expected_kind, expected_failed)

    @FUZZ
    @given(document=json_documents(SQS_IDS), data=st.data())
    def test_damaged_payloads_never_raise(self, document: Any, data: st.DataObject) -> None:
        """A response cut short, with bytes inserted or overwritten (often not UTF-8), is classified."""
        payload = mutate(serialize(document, data.draw(st.booleans()), None), data)
        check_response_invariants(payload, SQS_IDS)

    @FUZZ
    @given(payload=st.binary(max_size=2048))
    def test_arbitrary_bytes_never_raise(self, payload: bytes) -> None:
        """Any bytes at all give a classification."""
        check_response_invariants(payload, SQS_IDS)

    @FUZZ
    @given(
        depth=st.integers(1, 60_000),
        opener=st.sampled_from(["[", '{"a":', '{"batchItemFailures":', '[{"itemIdentifier":']),
        where=st.sampled_from(["top", "failures", "identifier"]),
    )
    def test_deep_nesting_is_invalid_or_classified_never_a_crash(self, depth: int, opener: str, where: str) -> None:
        """Nesting far beyond the JSON parser's recursion limit fails the batch instead of raising."""
        closer = {"[": "]", '{"a":': "}", '{"batchItemFailures":': "}", '[{"itemIdentifier":': "}]"}[opener]
        nested = opener * depth + "null" + closer * depth
        text = {
            "top": nested,
            "failures": '{"batchItemFailures": ' + nested + "}",
            "identifier": '{"batchItemFailures": [{"itemIdentifier": ' + nested + "}]}",
        }[where]
        kind = check_response_invariants(text.encode(), SQS_IDS)
        if depth > 2_000:
            assert kind is INVALID

    @FUZZ
    @given(
        digits=st.integers(1, 20_000),
        exponent=st.none() | st.integers(-400_000, 400_000),
        negative=st.booleans(),
        where=st.sampled_from(["top", "failures", "identifier", "entry-key-value"]),
    )
    def test_huge_numbers_fail_the_batch(self, digits: int, exponent: int | None, negative: bool, where: str) -> None:
        """Numbers beyond every limit (20,000 digits, exponents of 400,000) fail the batch; nothing raises."""
        number = ("-" if negative else "") + "9" * digits + (f"e{exponent}" if exponent is not None else "")
        text = {
            "top": number,
            "failures": '{"batchItemFailures": ' + number + "}",
            "identifier": '{"batchItemFailures": [{"itemIdentifier": ' + number + "}]}",
            "entry-key-value": '{"batchItemFailures": [{"itemIdentifier": "' + SQS_IDS[0] + '", "n": ' + number + "}]}",
        }[where]
        kind = check_response_invariants(text.encode(), SQS_IDS)
        if where != "entry-key-value":
            assert kind is INVALID  # a number is never a response, a failure list or an id
        elif digits > 4_300 and exponent is None:
            assert kind is INVALID  # Python refuses to read an integer this long: not JSON to esm
        else:
            assert kind is PARTIAL  # extra keys beside itemIdentifier are ignored


class TestDecisionsOnAnyResponse:
    """The decisions built on the parser: an untrusted response retries the whole batch, as AWS does."""

    @FUZZ
    @given(document=json_documents(SQS_IDS), function_error=st.booleans(), report=st.booleans())
    def test_sqs_batch(self, document: Any, function_error: bool, report: bool) -> None:
        """SQS: a function error or an invalid response leaves every message; success deletes all;
        a partial response leaves exactly the listed messages."""
        payload = serialize(document, True, None)
        result = InvokeResult("Unhandled" if function_error else None, payload)
        decision = decide_sqs(result, list(SQS_IDS), report_batch_item_failures=report)
        everything = tuple(range(len(SQS_IDS)))
        assert tuple(sorted(decision.delete + decision.retry)) == everything
        kind, failed = documented_kind(document, SQS_IDS)
        if function_error:
            assert (decision.retry, decision.outcome) == (everything, "function_error")
        elif not report or kind is SUCCESS:
            assert (decision.delete, decision.outcome) == (everything, "success")
        elif kind is INVALID:
            assert (decision.retry, decision.outcome) == (everything, "invalid_response")
        else:
            assert decision.retry == tuple(i for i in everything if SQS_IDS[i] in failed)
            assert decision.outcome == "partial_failure"

    @FUZZ
    @given(
        document=json_documents(SEQUENCES),
        bisect=st.booleans(),
        retries=st.integers(-1, 3),
        done_before=st.integers(0, 3),
    )
    def test_stream_batch(self, document: Any, bisect: bool, retries: int, done_before: int) -> None:
        """Streams: an invalid response is a whole-batch failure (retried, bisected or discarded from the
        first record); a partial one retries from the lowest reported sequence number."""
        policy = StreamPolicy(maximum_retry_attempts=retries, bisect=bisect, report_batch_item_failures=True)
        attempt = Attempt(invocations=done_before + 1, retries=done_before)
        decision = decide_stream(policy, InvokeResult(None, serialize(document, True, None)), SEQUENCES, attempt)
        kind, failed = documented_kind(document, SEQUENCES)
        if kind is SUCCESS:
            assert (decision.action, decision.done) == ("commit", len(SEQUENCES))
        elif kind is INVALID:
            assert decision.outcome == "invalid_response"
            assert decision.done == 0
            if bisect:
                assert (decision.action, decision.mid) == ("bisect", len(SEQUENCES) // 2)
            else:
                exhausted = 0 <= retries < done_before + 1
                assert decision.action == ("discard" if exhausted else "retry")
        else:
            assert decision.outcome == "partial_failure"
            assert decision.done == SEQUENCES.index(min(failed, key=int))
            assert decision.action in ("retry", "discard")


def documented_state(payload: bytes) -> tuple[Any, str]:
    """What a tumbling-window response means (ESM-SPEC.md §3.6: no `state` object: a failed invocation)."""
    try:
        document = json.loads(payload.decode("utf-8")) if payload.strip() else None
    except (ValueError, RecursionError):
        return None, "tumbling window response is not valid JSON"
    if not isinstance(document, dict):
        return None, "tumbling window response is not a JSON object"
    if "state" not in document:
        return None, "tumbling window response has no state"
    state = document["state"]
    if not isinstance(state, dict):
        return None, "tumbling window response state is not a JSON object"
    if has(non_finite, state) or has(surrogate, state):
        return None, "tumbling window response state is not valid JSON"
    return state, ""


class TestTumblingWindowResponses:
    """A windowed invocation's response: its `state` object is carried on, anything else fails the invocation."""

    @FUZZ
    @given(document=json_documents(SQS_IDS), state=json_documents(SQS_IDS), wrap=st.booleans())
    def test_any_json_gets_the_documented_reading(self, document: Any, state: Any, wrap: bool) -> None:
        """The state is read back exactly when it is a JSON object; otherwise the reason is the documented one."""
        payload = serialize({"state": state, "batchItemFailures": []} if wrap else document, True, None)
        reading = read_state(payload)
        expected_state, problem = documented_state(payload)
        assert reading.problem == problem
        if problem:
            assert reading.state is None
        else:
            assert reading.state is not None
            assert json.loads(reading.state) == expected_state

    @FUZZ
    @given(payload=st.binary(max_size=2048), data=st.data())
    def test_arbitrary_and_damaged_bytes_never_raise(self, payload: bytes, data: st.DataObject) -> None:
        """Any bytes, or a valid response damaged, give a state or a reason, never an exception."""
        for candidate in (payload, mutate(b'{"state": {"count": 1, "k": "\xc3\xa9"}}', data)):
            reading = read_state(candidate)
            assert (reading.state is None) == bool(reading.problem)

    @FUZZ
    @given(depth=st.integers(1, 60_000), digits=st.integers(1, 12_000))
    def test_deep_states_and_huge_numbers_never_raise(self, depth: int, digits: int) -> None:
        """A state nested 60,000 deep or holding a 12,000-digit number is read or refused, never raised."""
        deep = b'{"state": ' + b'{"a": ' * depth + b"1" + b"}" * depth + b"}"
        huge = b'{"state": {"n": ' + b"9" * digits + b"}}"
        for payload in (deep, huge):
            reading = read_state(payload)
            assert (reading.state is None) == bool(reading.problem)
        assert (read_state(huge).state is None) == (digits > 4_300)
        if depth > 2_000:
            assert read_state(deep).problem == "tumbling window response is not valid JSON"


# --------------------------------------------------------------------------------------------
# the event builders, through the pollers' read paths


def aware_or_naive() -> st.SearchStrategy[datetime]:
    """Arrival times as botocore gives them (aware UTC), naive, or in any fixed offset."""
    offsets = st.none() | st.integers(-1439, 1439).map(lambda m: timezone(timedelta(minutes=m)))
    moments = st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1))
    return st.builds(lambda d, tz: d if tz is None else d.replace(tzinfo=tz), moments, offsets) | st.just(
        datetime.now(UTC)
    )


# Each generated raw record is (raw, harmful): `harmful` says the mutation applied makes it
# impossible to build a faithful Lambda record, so the poller must refuse it.
Raw = tuple[dict[str, Any], bool]


def with_mutation(
    base: st.SearchStrategy[dict[str, Any]],
    harmful: dict[str, Callable[[dict[str, Any]], Any]],
    harmless: dict[str, Callable[[dict[str, Any]], Any]],
) -> st.SearchStrategy[Raw]:
    """A valid raw record, possibly changed by one named harmful or harmless mutation."""

    @st.composite
    def build(draw: st.DrawFn) -> Raw:
        raw = draw(base)
        choice = draw(st.sampled_from(["none", *(f"+{k}" for k in harmless), *(f"-{k}" for k in harmful)]))
        if choice == "none":
            return raw, False
        table = harmful if choice[0] == "-" else harmless
        table[choice[1:]](raw)
        return raw, choice[0] == "-"

    return build()


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def apply(raw: dict[str, Any]) -> None:
        raw[key] = value

    return apply


def _drop(key: str) -> Callable[[dict[str, Any]], None]:
    def apply(raw: dict[str, Any]) -> None:
        raw.pop(key, None)

    return apply


def _in_stream_record(change: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def apply(raw: dict[str, Any]) -> None:
        change(raw["dynamodb"])

    return apply


def _prefix(key: str, prefix: str) -> Callable[[dict[str, Any]], None]:
    def apply(raw: dict[str, Any]) -> None:
        raw[key] = prefix + str(raw[key])

    return apply


MESSAGE_ATTRIBUTE = st.fixed_dictionaries(
    {"DataType": st.sampled_from(["String", "Number", "String.custom"]), "StringValue": TEXT},
    optional={"StringListValues": st.just([]), "BinaryListValues": st.just([])},
) | st.fixed_dictionaries(
    {"DataType": st.sampled_from(["Binary", "Binary.gif"]), "BinaryValue": st.binary(max_size=64)}
)

SQS_MESSAGE = st.fixed_dictionaries(
    {
        "MessageId": st.uuids().map(str),
        "ReceiptHandle": st.text(min_size=1, max_size=40),
        "Body": TEXT.map(lambda t: MARK + t),
        "Attributes": st.fixed_dictionaries(
            {"SentTimestamp": DIGITS, "ApproximateReceiveCount": DIGITS},
            optional={"SenderId": TEXT, "AWSTraceHeader": TEXT, "MessageGroupId": TEXT},
        ),
    },
    optional={
        "MD5OfBody": st.text("0123456789abcdef", min_size=32, max_size=32),
        "MessageAttributes": st.dictionaries(st.text(min_size=1, max_size=10), MESSAGE_ATTRIBUTE, max_size=3),
        "MD5OfMessageAttributes": st.text("0123456789abcdef", min_size=32, max_size=32),
    },
)


def _surrogate_attribute(raw: dict[str, Any]) -> None:
    raw["MessageAttributes"] = {"Note": {"DataType": "String", "StringValue": "\udc80"}}


def _untyped_attribute(raw: dict[str, Any]) -> None:
    raw["MessageAttributes"] = {"Note": {"StringValue": MARK + "no data type"}}


def _odd_timestamp(raw: dict[str, Any]) -> None:
    raw["Attributes"] = {**raw["Attributes"], "SentTimestamp": "²³⁴"}


SQS_MESSAGES = with_mutation(
    SQS_MESSAGE,
    harmful={
        "no-id": _drop("MessageId"),
        "no-receipt-handle": _drop("ReceiptHandle"),
        "no-body": _drop("Body"),
        "null-body": _set("Body", None),
        "null-id": _set("MessageId", None),
        "surrogate-body": _prefix("Body", "\ud800"),
        "surrogate-attribute": _surrogate_attribute,
        "attribute-without-data-type": _untyped_attribute,
    },
    harmless={
        "null-attributes": _set("Attributes", None),
        "no-attributes": _drop("Attributes"),
        "null-message-attributes": _set("MessageAttributes", None),
        "null-md5": _set("MD5OfBody", None),
        "unicode-digit-timestamp": _odd_timestamp,
    },
)


class _FakeSqs:
    """An SQS client answering one ReceiveMessage with the given messages; the queue is then gone."""

    def __init__(self, messages: list[dict[str, Any]]) -> None:
        self.messages: list[dict[str, Any]] | None = messages

    async def receive_message(self, **_: Any) -> dict[str, Any]:
        messages, self.messages = self.messages, None
        if messages is None:
            raise RetriableAwsError("ReceiveMessage", "FuzzQueueDrained", "the fake queue has no more messages")
        return {"Messages": messages}


async def _gather(messages: list[dict[str, Any]]) -> list[Any] | AwsError:
    queue = SqsQueue(_FakeSqs(messages), QUEUE, structlog.get_logger())  # type: ignore[arg-type]
    queue.url = "https://sqs.us-east-1.amazonaws.com/123456789012/orders"
    metrics = Metrics(CollectorRegistry()).for_mapping("u", "f", "sqs")
    gatherer = BatchGatherer(queue=queue, batch_size=10, window=0, null_md5_when_absent=True, metrics=metrics)
    keeper = VisibilityKeeper(queue, metrics, structlog.get_logger())
    try:
        return await gatherer.next_batch(keeper)
    except AwsError as exc:
        return exc
    finally:
        await keeper.stop()


class TestSqsMessages:
    """ReceiveMessage answers become Lambda records, or are left to their visibility timeout, never a crash."""

    @FUZZ_RECORDS
    @given(st.lists(SQS_MESSAGES, min_size=1, max_size=10))
    def test_every_faithful_message_is_delivered_and_no_other(self, generated: list[Raw]) -> None:
        """Each message of the API's shape (odd unicode, null optional fields) becomes its exact record;
        each malformed one is dropped from the batch and logged without its content."""
        with structlog.testing.capture_logs() as logs:
            outcome = asyncio.run(_gather([dict(raw) for raw, _ in generated]))
        faithful = [raw for raw, harmful in generated if not harmful]
        if not faithful:
            assert isinstance(outcome, AwsError)  # the batch stayed empty: the next receive's error shows
            assert outcome.code == "FuzzQueueDrained"
        else:
            assert isinstance(outcome, list)
            assert [m.message_id for m in outcome] == [raw["MessageId"] for raw in faithful]
            for message, raw in zip(outcome, faithful, strict=True):
                assert message.record == sqs_record(raw, QUEUE, null_md5_when_absent=True)
                assert message.record["body"] == raw["Body"]
                assert message.record["md5OfBody"] == (
                    raw.get("MD5OfBody") or hashlib.md5(raw["Body"].encode()).hexdigest()  # noqa: S324 - SQS's checksum
                )
                for name, value in (raw.get("MessageAttributes") or {}).items():
                    if "BinaryValue" in value:
                        got = message.record["messageAttributes"][name]["binaryValue"]
                        assert base64.b64decode(got) == value["BinaryValue"]
                assert json.loads(message.encoded) == message.record
        malformed = [e for e in logs if e["event"] == "malformed_message"]
        assert len(malformed) == sum(harmful for _, harmful in generated)
        assert not any(MARK in repr(entry) for entry in logs)


KINESIS_RECORD = st.fixed_dictionaries(
    {
        "SequenceNumber": DIGITS,
        "ApproximateArrivalTimestamp": aware_or_naive(),
        "Data": st.binary(max_size=1024),
        "PartitionKey": TEXT,
    },
    optional={"EncryptionType": st.sampled_from(["NONE", "KMS"])},
)

KINESIS_RECORDS = with_mutation(
    KINESIS_RECORD,
    harmful={
        "no-sequence": _drop("SequenceNumber"),
        "no-data": _drop("Data"),
        "no-arrival": _drop("ApproximateArrivalTimestamp"),
        "no-partition-key": _drop("PartitionKey"),
        "null-data": _set("Data", None),
        "null-arrival": _set("ApproximateArrivalTimestamp", None),
        "text-sequence": _prefix("SequenceNumber", "seq-"),
        "unicode-digit-sequence": _set("SequenceNumber", "٣٤٥"),
        "surrogate-partition-key": _prefix("PartitionKey", "\udfff"),
        "text-arrival": _set("ApproximateArrivalTimestamp", "yesterday"),
    },
    harmless={
        "empty-data": _set("Data", b""),
        "no-encryption": _drop("EncryptionType"),
        "null-encryption": _set("EncryptionType", None),
        "numeric-arrival": _set("ApproximateArrivalTimestamp", 1_545_084_650.987),
        "empty-partition-key": _set("PartitionKey", ""),
    },
)


class _FakeStreams:
    """A Kinesis or DynamoDB Streams client answering GetRecords with the given raw records."""

    def __init__(self, records: list[dict[str, Any]]) -> None:
        self.records = records

    async def get_records(self, **_: Any) -> dict[str, Any]:
        return {"Records": self.records, "NextShardIterator": "next", "MillisBehindLatest": 0}


async def read_page(stream: KinesisStream | DynamoDbStream, shard_id: str) -> Page | RetriableAwsError:
    """One GetRecords through the source's own `read`: its page, or the retriable error it raised.

    Any other exception (a MALFORMED one that escaped, say) propagates and fails the test.
    """
    try:
        return await stream.read(shard_id, "iterator", 100)
    except RetriableAwsError as exc:
        return exc


KINESIS_ARGS: dict[str, Any] = {"shard_id": "shardId-000000000000", "source": STREAM, "invoke_identity_arn": ROLE}


def scribble(value: Any) -> None:
    """Change every dict and list of a record in place, as a careless handler could: every string and
    number replaced, an entry added, and (lists) one dropped."""
    if isinstance(value, dict):
        for key in list(value):
            if isinstance(value[key], dict | list):
                scribble(value[key])
            else:
                value[key] = "scribbled"
        value["added-by-the-handler"] = True
    elif isinstance(value, list):
        for item in value:
            scribble(item)
        if value:
            value.pop()
        value.append("added-by-the-handler")


def assert_renewed_as_read(built: StreamRecord, as_read: Callable[[], dict[str, Any]]) -> None:
    """After a handler changed every part of a built record, `renew` gives the record as read again."""
    scribble(built.record)
    assert built.record != as_read()
    built.renew()
    assert built.record == as_read()
    assert encode_record(built.record) == encode_record(as_read())


class TestKinesisRecords:
    """GetRecords pages become Lambda records, or the page fails as a retriable source error."""

    @FUZZ_RECORDS
    @given(st.lists(KINESIS_RECORDS, min_size=1, max_size=6))
    def test_a_page_is_built_exactly_or_refused_as_malformed(self, generated: list[Raw]) -> None:
        """A page of records of the API's shape (any bytes, odd partition keys, any time zone) is built
        exactly, data in base64; a page with a malformed record is a `MalformedRecord` error."""
        raws = [raw for raw, _ in generated]
        page = asyncio.run(read_page(KinesisStream(_FakeStreams(raws), STREAM, ROLE), "shardId-000000000000"))
        if isinstance(page, RetriableAwsError):
            assert page.code == "MalformedRecord"
            assert any(harmful for _, harmful in generated)
            return
        assert not any(harmful for _, harmful in generated)
        for built, raw in zip(page.records, raws, strict=True):
            assert built.record == kinesis_record(raw, **KINESIS_ARGS)
            assert base64.b64decode(built.record["kinesis"]["data"]) == raw["Data"]
            assert built.record["kinesis"]["partitionKey"] == raw["PartitionKey"]
            assert built.encoded == encode_record(built.record) == encode_stream_record(built.record)
            assert built.sequence == int(raw["SequenceNumber"])
            assert_renewed_as_read(built, functools.partial(kinesis_record, raw, **KINESIS_ARGS))


ATTRIBUTE_VALUE = st.recursive(
    st.fixed_dictionaries({"S": TEXT})
    | st.fixed_dictionaries({"N": DIGITS})
    | st.fixed_dictionaries({"B": st.binary(max_size=64)})
    | st.fixed_dictionaries({"BOOL": st.booleans()})
    | st.fixed_dictionaries({"NULL": st.just(True)})
    | st.fixed_dictionaries({"SS": st.lists(TEXT, min_size=1, max_size=3, unique=True)})
    | st.fixed_dictionaries({"NS": st.lists(DIGITS, min_size=1, max_size=3, unique=True)})
    | st.fixed_dictionaries({"BS": st.lists(st.binary(max_size=16), min_size=1, max_size=3, unique=True)}),
    lambda inner: (
        st.fixed_dictionaries({"M": st.dictionaries(TEXT, inner, max_size=3)})
        | st.fixed_dictionaries({"L": st.lists(inner, max_size=3)})
    ),
    max_leaves=5,
)
ITEM = st.dictionaries(st.text(min_size=1, max_size=12) | ODD.filter(bool), ATTRIBUTE_VALUE, min_size=1, max_size=3)

DYNAMODB_RECORD = st.fixed_dictionaries(
    {
        "eventID": st.text(min_size=1, max_size=32),
        "eventName": st.sampled_from(["INSERT", "MODIFY", "REMOVE"]),
        "eventVersion": st.sampled_from(["1.0", "1.1"]),
        "eventSource": st.just("aws:dynamodb"),
        "awsRegion": st.just("us-east-1"),
        "dynamodb": st.fixed_dictionaries(
            {
                "Keys": ITEM,
                "SequenceNumber": DIGITS,
                "SizeBytes": st.integers(1, 400_000),
                "StreamViewType": st.sampled_from(["KEYS_ONLY", "NEW_IMAGE", "OLD_IMAGE", "NEW_AND_OLD_IMAGES"]),
            },
            optional={"ApproximateCreationDateTime": aware_or_naive(), "NewImage": ITEM, "OldImage": ITEM},
        ),
    },
    optional={"userIdentity": st.just({"PrincipalId": "dynamodb.amazonaws.com", "Type": "Service"})},
)


def _null_attribute(stream_record: dict[str, Any]) -> None:
    stream_record["NewImage"] = {"a": None}


def _surrogate_key(stream_record: dict[str, Any]) -> None:
    stream_record["Keys"] = {"pk": {"S": "\ud800"}}


DYNAMODB_RECORDS = with_mutation(
    DYNAMODB_RECORD,
    harmful={
        "no-change": _drop("dynamodb"),
        "null-change": _set("dynamodb", None),
        "no-event-name": _drop("eventName"),
        "no-keys": _in_stream_record(_drop("Keys")),
        "null-keys": _in_stream_record(_set("Keys", None)),
        "no-sequence": _in_stream_record(_drop("SequenceNumber")),
        "text-sequence": _in_stream_record(_prefix("SequenceNumber", "seq-")),
        "unicode-digit-sequence": _in_stream_record(_set("SequenceNumber", "٣٤٥")),
        "null-attribute-value": _in_stream_record(_null_attribute),
        "surrogate-key": _in_stream_record(_surrogate_key),
    },
    harmless={
        "no-creation-time": _in_stream_record(_drop("ApproximateCreationDateTime")),
        "null-new-image": _in_stream_record(_set("NewImage", None)),
        "null-size": _in_stream_record(_set("SizeBytes", None)),
        "null-user-identity": _set("userIdentity", None),
        "numeric-creation-time": _in_stream_record(_set("ApproximateCreationDateTime", 1_693_997_155)),
    },
)


def blobs(item: dict[str, Any], path: str = "") -> dict[str, list[bytes]]:
    """Every blob (`B`, `BS`) of an item in DynamoDB JSON by attribute path, as bytes.

    Works on the API's form (blobs as bytes) and on Lambda's (blobs in base64), so the two compare.
    """

    def value_blobs(value: dict[str, Any], at: str) -> dict[str, list[bytes]]:
        ((kind, inner),) = value.items()
        if kind == "B":
            return {at: [inner if isinstance(inner, bytes) else base64.b64decode(inner)]}
        if kind == "BS":
            return {at: [v if isinstance(v, bytes) else base64.b64decode(v) for v in inner]}
        if kind == "M":
            return blobs(inner, at)
        if kind == "L":
            found: dict[str, list[bytes]] = {}
            for i, v in enumerate(inner):
                found |= value_blobs(v, f"{at}[{i}]")
            return found
        return {}

    found: dict[str, list[bytes]] = {}
    for name, value in item.items():
        found |= value_blobs(value, f"{path}/{name}")
    return found


class TestDynamoDbRecords:
    """DynamoDB Streams pages become Lambda records with blobs in base64, or fail as malformed."""

    @FUZZ_RECORDS
    @given(st.lists(DYNAMODB_RECORDS, min_size=1, max_size=3))
    def test_a_page_is_built_exactly_or_refused_as_malformed(self, generated: list[Raw]) -> None:
        """Records of the API's shape (binary keys and sets, nested maps and lists, odd unicode) are built
        exactly; a page with a malformed record is a `MalformedRecord` error."""
        raws = [raw for raw, _ in generated]
        page = asyncio.run(read_page(DynamoDbStream(_FakeStreams(raws), DDB_STREAM), "shardId-00000001"))
        if isinstance(page, RetriableAwsError):
            assert page.code == "MalformedRecord"
            assert any(harmful for _, harmful in generated)
            return
        assert not any(harmful for _, harmful in generated)
        for built, raw in zip(page.records, raws, strict=True):
            assert built.record == dynamodb_record(raw, source=DDB_STREAM)
            assert built.key == dynamodb_item_key(built.record)
            assert json.loads(built.encoded) == built.record
            assert built.encoded == encode_record(built.record)
            assert built.size == len(built.encoded)
            assert_renewed_as_read(built, functools.partial(dynamodb_record, raw, source=DDB_STREAM))
            for image in ("Keys", "NewImage", "OldImage"):
                if raw["dynamodb"].get(image) is not None:
                    assert blobs(built.record["dynamodb"][image]) == blobs(raw["dynamodb"][image])


class TestSequenceNumbers:
    """A sequence number that is not plain ASCII digits makes the page malformed (`int` alone would take it)."""

    @pytest.mark.parametrize("sequence", ["٣٤٥", "+5", " 5", "5_0", "5 ", "", "0x1f"])
    def test_refused_by_both_sources(self, sequence: str) -> None:
        """Hypothesis found "٣٤٥" taken as 345 by a Kinesis page; both sources refuse every such spelling."""
        kinesis = {
            "SequenceNumber": sequence,
            "ApproximateArrivalTimestamp": 1_545_084_650.987,
            "Data": b"{}",
            "PartitionKey": "k",
        }
        dynamodb = {
            "eventID": "1",
            "eventName": "INSERT",
            "dynamodb": {"Keys": {"pk": {"S": "a"}}, "SequenceNumber": sequence, "SizeBytes": 9},
        }
        for stream, raw, shard in (
            (KinesisStream(_FakeStreams([kinesis]), STREAM, ROLE), kinesis, "shardId-000000000000"),
            (DynamoDbStream(_FakeStreams([dynamodb]), DDB_STREAM), dynamodb, "shardId-00000001"),
        ):
            page = asyncio.run(read_page(stream, shard))
            assert isinstance(page, RetriableAwsError), raw
            assert page.code == "MalformedRecord"
            # The same record with the number spelled as a stream spells it is built.
            raw.get("dynamodb", raw)["SequenceNumber"] = "345"
            page = asyncio.run(read_page(stream, shard))
            assert isinstance(page, Page)
            assert [r.sequence for r in page.records] == [345]


class TestBuildersDirectly:
    """The builders themselves raise nothing but `MALFORMED` on any raw shape (the set the pollers catch)."""

    @FUZZ_RECORDS
    @given(
        message=SQS_MESSAGES,
        kinesis=KINESIS_RECORDS,
        dynamodb=DYNAMODB_RECORDS,
        garbage=st.dictionaries(TEXT, SCALARS, max_size=4),
    )
    def test_only_malformed_errors(self, message: Raw, kinesis: Raw, dynamodb: Raw, garbage: dict[str, Any]) -> None:
        """Built or refused with MALFORMED, for generated records and for arbitrary dictionaries."""
        builders: list[Callable[[dict[str, Any]], Any]] = [
            lambda raw: encode_record(sqs_record(raw, QUEUE, null_md5_when_absent=False)),
            lambda raw: encode_stream_record(
                kinesis_record(raw, shard_id="shardId-0", source=STREAM, invoke_identity_arn=ROLE)
            ),
            lambda raw: (encode_record(dynamodb_record(raw, source=DDB_STREAM)), dynamodb_item_key(raw)),
        ]
        for build, (raw, harmful) in zip(builders, (message, kinesis, dynamodb), strict=True):
            for candidate, refused in ((raw, harmful), (garbage, None)):
                try:
                    build(candidate)
                except MALFORMED:
                    assert refused is not False, f"a faithful record was refused: {candidate!r}"
