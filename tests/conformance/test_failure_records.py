"""Failure records esm delivers match what real AWS delivered (ESM-SPEC.md §4.3, §8 vectors 5–9).

Every recording of an on-failure destination in `kinesis.snapshot.json` and
`dynamodbstreams.snapshot.json` is replayed: a `FailedBatch` equivalent to the recorded scenario
(same condition, invocation count, function error and batch size) goes through the real sender to a
moto queue, topic or bucket, and what arrives is compared with the recording: keys, key order,
JSON types, literal values and placeholder formats (`<timestamp:…>` digit for digit, uuids,
sequence numbers as strings), with numbered placeholders bound across the whole test.

Reading the recordings (see `recordings.py` and the recorder's source): the recorder sorted the
keys of every object it was handed, but kept the order of JSON strings it parsed afterwards. So an
SQS `Body` and an SNS `Message` show AWS's key order and are compared in order; the SNS envelope
and the S3 object show sorted keys, which says nothing about AWS's order, and are compared without
order; the S3 `payload`, parsed from a string, shows AWS's order again (and proves it is a string).

The recordings' `<resource>` format has no `:`, which a DynamoDB stream label always contains, and
several placeholder kinds are not in `PLACEHOLDER_FORMATS` (they would match anything); this module
checks those itself (`EXTRA_FORMATS`, `relabel`).
"""

from __future__ import annotations

import base64
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from esm.arns import SourceKind, parse_source_arn
from esm.aws import ClientFactory
from esm.destinations import BatchInfo, Destinations, FailedBatch, failure_record
from esm.events import assemble_event, dynamodb_record, encode_record, kinesis_record
from esm.targets.base import InvokeResult
from tests.conformance.recordings import assert_matches_recording, load_snapshot, recorded
from tests.conftest import ACCOUNT, REGION, unique

KINESIS, DYNAMODB = "kinesis", "dynamodbstreams"

EXTRA_FORMATS: dict[str, str] = {
    "kinesis-shard-id": r"shardId-\d{12}",
    "shard-id": r"shardId-\d{20}-[0-9a-f]{8}",
    "stream-label": r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}",
    "event-i-d": r"[0-9a-f]{32}",
    "signature": r"[A-Za-z0-9+/=]+",
    "cert-domain": r"https://sns\.[a-z0-9-]+\.amazonaws\.com",
    "unsubscribe-domain": r"https://sns\.[a-z0-9-]+\.amazonaws\.com",
    "signing-cert-file": r"[0-9a-f]+\.pem",
}
"""Formats for placeholder kinds that `PLACEHOLDER_FORMATS` leaves open, checked by `assert_extra_formats`."""

EXTRA_NUMBERS: dict[str, Callable[[float], bool]] = {
    "approximate-arrival-timestamp": lambda v: round(v, 3) == v,  # epoch seconds, milliseconds at most
    "approximate-creation-datetime": lambda v: v == int(v),  # epoch seconds, whole
}
"""Placeholders the recorder put in place of numbers, with what the number must look like."""

_TOKEN = re.compile(r"<([a-z0-9-]+)(?::([^<>]+))?>|111111111111")


def relabel(recorded_value: Any) -> Any:
    """The recording with DynamoDB stream labels as `<stream-label:N>` instead of `<resource:N>`.

    Real labels (`2019-11-14T00:04:06.388`) contain `:`, which the `<resource>` format excludes.
    """
    if isinstance(recorded_value, dict):
        return {k: relabel(v) for k, v in recorded_value.items()}
    if isinstance(recorded_value, list):
        return [relabel(v) for v in recorded_value]
    if isinstance(recorded_value, str):
        return re.sub(r"/stream/<resource:(\d+)>", r"/stream/<stream-label:\1>", recorded_value)
    return recorded_value


def assert_extra_formats(actual: Any, recorded_value: Any) -> None:
    """Check the placeholders of `EXTRA_FORMATS` and `EXTRA_NUMBERS` in `recorded_value` against `actual`.

    Walks both like `assert_matches_recording` (a recorded object against a string means a parsed
    JSON string) and only looks at strings with at least one of these placeholders.
    """
    problems: list[str] = []

    def walk(a: Any, r: Any, path: str) -> None:
        if isinstance(r, dict | list) and isinstance(a, str):
            a = json.loads(a)
        if isinstance(r, dict) and isinstance(a, dict):
            for key, value in r.items():
                if key in a:
                    walk(a[key], value, f"{path}.{key}")
        elif isinstance(r, list) and isinstance(a, list):
            for i, (x, y) in enumerate(zip(a, r, strict=False)):
                walk(x, y, f"{path}[{i}]")
        elif isinstance(r, str):
            whole = _TOKEN.fullmatch(r)
            if whole and whole.group(1) in EXTRA_NUMBERS:
                ok = isinstance(a, int | float) and not isinstance(a, bool) and EXTRA_NUMBERS[whole.group(1)](a)
                if not ok:
                    problems.append(f"{path}: {a!r} is not a number of the kind {r}")
                return
            if not any(m.group(1) in EXTRA_FORMATS for m in _TOKEN.finditer(r)):
                return
            pattern, last = "", 0
            for m in _TOKEN.finditer(r):
                pattern += re.escape(r[last : m.start()])
                last = m.end()
                pattern += r"\d{12}" if m.group(1) is None else f"(?:{EXTRA_FORMATS.get(m.group(1), '.+?')})"
            pattern += re.escape(r[last:])
            if not isinstance(a, str) or re.fullmatch(pattern, a) is None:
                problems.append(f"{path}: {a!r} does not have the format of {r!r}")

    walk(actual, recorded_value, "$")
    assert not problems, "placeholder formats differ:\n  " + "\n  ".join(problems)


def conforms(actual: Any, recorded_value: Any, bindings: dict[str, str], *, check_order: bool | None = None) -> None:
    """`assert_matches_recording` plus this module's own placeholder formats."""
    assert_matches_recording(actual, recorded_value, bindings=bindings, check_order=check_order)
    assert_extra_formats(actual, recorded_value)


# --------------------------------------------------------------------------------------------
# Scenarios


@dataclass(frozen=True)
class Scenario:
    """One recorded on-failure delivery and the FailedBatch equivalent to its recorded test."""

    source: str
    test: str
    key: str
    condition: str = "RetryAttemptsExhausted"
    invoke_count: int = 2
    function_error: str | None = "Unhandled"
    invoked: bool = True

    @property
    def id(self) -> str:
        """The pytest id: the recorded test's name."""
        return self.test


_RBIF = [
    "empty_string_item_identifier_failure",
    "null_item_identifier_failure",
    "invalid_key_foo_failure",
    "invalid_key_foo_null_value_failure",
    "unhandled_exception_in_function",
    "item_identifier_not_present_failure",
]

# Counts are 1 + MaximumRetryAttempts of the recorded mapping (1, 3 and 2 for Kinesis; DynamoDB's
# scenarios used 3); record age: 8 invocations while retrying (MaximumRetryAttempts -1), else 1 with
# no invocation at all (§4.2). functionError is null when only the partial batch response failed.
SQS_SCENARIOS = [
    Scenario(KINESIS, "test_kinesis_event_source_mapping_with_on_failure_destination_config", "sqs_payload"),
    Scenario(KINESIS, "test_kinesis_report_batch_item_failures", "sqs_payload", invoke_count=4, function_error=None),
    *(
        Scenario(
            KINESIS,
            f"test_kinesis_report_batch_item_failure_scenarios[{case}]",
            "sqs_payload",
            invoke_count=3,
            function_error="Unhandled" if case == "unhandled_exception_in_function" else None,
        )
        for case in _RBIF
    ),
    Scenario(
        KINESIS,
        "test_kinesis_maximum_record_age_exceeded[expire-while-retrying]",
        "record_age_exceeded_payload",
        condition="RecordAgeExceeded",
        invoke_count=8,
        invoked=False,
    ),
    Scenario(
        KINESIS,
        "test_kinesis_maximum_record_age_exceeded[expire-before-ingestion]",
        "record_age_exceeded_payload",
        condition="RecordAgeExceeded",
        invoke_count=1,
        invoked=False,
    ),
    Scenario(
        KINESIS,
        "test_kinesis_maximum_record_age_exceeded_discard_records",
        "record_age_exceeded_payload",
        condition="RecordAgeExceeded",
        invoke_count=1,
        invoked=False,
    ),
    Scenario(
        DYNAMODB, "test_dynamodb_event_source_mapping_with_on_failure_destination_config", "destination_queue_messages"
    ),
    Scenario(
        DYNAMODB,
        "test_dynamodb_report_batch_item_failures",
        "destination_queue_messages",
        invoke_count=4,
        function_error=None,
    ),
    Scenario(
        DYNAMODB,
        "test_dynamodb_report_batch_item_failures_with_on_failure_destination_config",
        "destination_queue_messages",
        invoke_count=4,
        function_error=None,
    ),
    *(
        Scenario(
            DYNAMODB,
            f"test_dynamodb_report_batch_item_failure_scenarios[{case}]",
            "destination_queue_messages",
            invoke_count=4,
            function_error="Unhandled" if case == "unhandled_exception_in_function" else None,
        )
        for case in _RBIF
    ),
]
SNS_SCENARIOS = [
    Scenario(
        KINESIS, "test_kinesis_event_source_mapping_with_sns_on_failure_destination_config", "failure_sns_message"
    ),
    Scenario(
        DYNAMODB, "test_dynamodb_event_source_mapping_with_sns_on_failure_destination_config", "failure_sns_message"
    ),
]
S3_SCENARIOS = [
    Scenario(KINESIS, "test_kinesis_event_source_mapping_with_s3_on_failure_destination", "record_body"),
    Scenario(DYNAMODB, "test_dynamodb_event_source_mapping_with_s3_on_failure_destination", "record_body"),
]

# The one record the recorded S3 tests put (their payloads show it): Kinesis data and DynamoDB item.
KINESIS_DATA = base64.b64decode("eyJpbnB1dCI6ICJoZWxsbyIsICJ2YWx1ZSI6ICJ3b3JsZCIsICJyYWlzZV9lcnJvciI6IDF9")
DYNAMODB_ITEM = {"my_partition_key": {"S": "hello world"}}


def failed_batch(scenario: Scenario) -> FailedBatch:
    """A one-record batch from shard 0 discarded as the recorded scenario's was, with its event."""
    now = time.time()
    arrival = round(now - 90, 3)  # Kinesis arrival times have milliseconds
    if scenario.source == KINESIS:
        kind, shard = SourceKind.KINESIS, "shardId-000000000000"
        stream_arn = f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/{unique('stream')}"
        sequence = "49667894561275936519218456728907426381474346297459736578"
        record = kinesis_record(
            {
                "SequenceNumber": sequence,
                "ApproximateArrivalTimestamp": datetime.fromtimestamp(arrival, UTC),
                "Data": KINESIS_DATA,
                "PartitionKey": "custom",
            },
            shard_id=shard,
            source=parse_source_arn(stream_arn),
            invoke_identity_arn=f"arn:aws:iam::{ACCOUNT}:role/{unique('role')}",
        )
    else:
        arrival = float(int(arrival))  # DynamoDB creation times are whole seconds
        kind, shard = SourceKind.DYNAMODB, "shardId-00000001764072000123-a1b2c3d4"
        stream_arn = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{unique('table')}/stream/2025-11-25T12:00:00.123"
        sequence = "800000000003126276362"
        record = dynamodb_record(
            {
                "eventID": uuid.uuid4().hex,
                "eventName": "INSERT",
                "eventVersion": "1.1",
                "eventSource": "aws:dynamodb",
                "awsRegion": REGION,
                "dynamodb": {
                    "ApproximateCreationDateTime": datetime.fromtimestamp(arrival, UTC),
                    "Keys": DYNAMODB_ITEM,
                    "NewImage": DYNAMODB_ITEM,
                    "SequenceNumber": sequence,
                    "SizeBytes": 54,
                    "StreamViewType": "NEW_IMAGE",
                },
            },
            source=parse_source_arn(stream_arn),
        )
    response = InvokeResult(scenario.function_error, b"") if scenario.invoked else None
    return FailedBatch(
        kind=kind,
        mapping_uuid=str(uuid.uuid4()),
        condition="RecordAgeExceeded" if scenario.condition == "RecordAgeExceeded" else "RetryAttemptsExhausted",
        request_id=str(uuid.uuid4()),
        function_arn=f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{unique('function')}",
        approximate_invoke_count=scenario.invoke_count,
        response=response,
        info=BatchInfo(shard, sequence, sequence, arrival, arrival, 1, stream_arn),
        timestamp=now,
        event_payload=assemble_event([encode_record(record)]),
    )


def recording(scenario: Scenario) -> Any:
    """The recorded value of the scenario, stream labels relabelled."""
    return relabel(recorded(scenario.test, scenario.key, source=scenario.source))


@pytest.fixture
async def sns(clients: ClientFactory) -> AsyncIterator[Any]:
    """A raw aiobotocore SNS client on moto."""
    async with clients.client("sns") as client:
        yield client


@pytest.fixture
async def s3(clients: ClientFactory) -> AsyncIterator[Any]:
    """A raw aiobotocore S3 client on moto."""
    async with clients.client("s3") as client:
        yield client


async def create_queue(sqs: Any) -> tuple[str, str]:
    """A fresh standard queue: (url, arn)."""
    url = (await sqs.create_queue(QueueName=unique("failures")))["QueueUrl"]
    attributes = await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return url, attributes["Attributes"]["QueueArn"]


async def receive_all(sqs: Any, url: str) -> dict[str, Any]:
    """ReceiveMessage's response, once at least one message is there."""
    response: dict[str, Any] = await sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=2)
    return response


def ids(scenarios: list[Scenario]) -> list[str]:
    """The pytest ids of scenarios: the recorded tests' names."""
    return [s.id for s in scenarios]


# --------------------------------------------------------------------------------------------
# Tests


class TestSqsDestinationRecordings:
    """The SQS message real AWS delivered for each recorded discard, replayed through the SQS sender."""

    @pytest.mark.parametrize("scenario", SQS_SCENARIOS, ids=ids(SQS_SCENARIOS))
    async def test_delivered_message_matches(self, scenario: Scenario, clients: ClientFactory, sqs: Any) -> None:
        """The built record and the received message match the recording; the body in AWS's key order."""
        batch = failed_batch(scenario)
        expected = recording(scenario)
        [expected_message] = expected["Messages"]
        bindings: dict[str, str] = {}
        conforms(failure_record(batch), expected_message["Body"], bindings, check_order=True)

        url, arn = await create_queue(sqs)
        async with Destinations(clients) as destinations:
            await destinations.sender(arn).send(batch)
        response = await receive_all(sqs, url)
        [message] = response["Messages"]
        conforms(message, expected_message, bindings)
        conforms(json.loads(message["Body"]), expected_message["Body"], bindings, check_order=True)


class TestSnsDestinationRecordings:
    """The SNS notification an SQS subscriber received, replayed through the SNS sender (§8 vector 9)."""

    @pytest.mark.parametrize("scenario", SNS_SCENARIOS, ids=ids(SNS_SCENARIOS))
    async def test_notification_matches(self, scenario: Scenario, clients: ClientFactory, sqs: Any, sns: Any) -> None:
        """The envelope matches the recording and its `Message` is the record string in AWS's key order.

        The envelope is SNS's own; moto signs with SignatureVersion "2" where AWS recorded "1", so
        that one literal is taken from moto.
        """
        batch = failed_batch(scenario)
        expected = recording(scenario)
        topic = (await sns.create_topic(Name=unique("failures")))["TopicArn"]
        url, queue_arn = await create_queue(sqs)
        await sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
        async with Destinations(clients) as destinations:
            await destinations.sender(topic).send(batch)
        [message] = (await receive_all(sqs, url))["Messages"]
        envelope = json.loads(message["Body"])

        assert isinstance(envelope["Message"], str)
        assert envelope["SignatureVersion"] in ("1", "2")
        expected = {**expected, "SignatureVersion": envelope["SignatureVersion"]}
        bindings: dict[str, str] = {}
        conforms(envelope, expected, bindings)
        conforms(json.loads(envelope["Message"]), expected["Message"], bindings, check_order=True)


class TestS3DestinationRecordings:
    """The S3 object real AWS wrote, replayed through the S3 sender (§4.3, §8 vector 8)."""

    @pytest.mark.parametrize("scenario", S3_SCENARIOS, ids=ids(S3_SCENARIOS))
    async def test_object_matches(self, scenario: Scenario, clients: ClientFactory, s3: Any) -> None:
        """The object matches the recording; `payload` is a string holding the event in AWS's key order.

        The recording's sorted keys are the recorder's; esm writes `failure_record`'s order with
        `payload` last, as AWS's documentation shows it.
        """
        batch = failed_batch(scenario)
        expected = recording(scenario)
        bucket = unique("failures")
        await s3.create_bucket(Bucket=bucket)
        async with Destinations(clients) as destinations:
            await destinations.sender(f"arn:aws:s3:::{bucket}").send(batch)
        [key] = [o["Key"] for o in (await s3.list_objects_v2(Bucket=bucket))["Contents"]]
        async with (await s3.get_object(Bucket=bucket, Key=key))["Body"] as stream:
            document = json.loads(await stream.read())

        bindings: dict[str, str] = {}
        conforms(document, expected, bindings, check_order=False)
        assert isinstance(document["payload"], str)
        conforms(json.loads(document["payload"]), expected["payload"], bindings, check_order=True)
        assert list(document) == [*failure_record(batch), "payload"]
        stamp = datetime.fromisoformat(document["timestamp"])
        assert key.startswith(
            f"aws/lambda/{batch.mapping_uuid}/{batch.info.shard_id}/{stamp:%Y/%m/%d}/{stamp:%Y-%m-%dT%H.%M.%S}-"
        )


class TestRecordingsAreCovered:
    """Every on-failure delivery in the stream recordings is replayed by one test above."""

    def test_every_recorded_failure_record_has_a_scenario(self) -> None:
        """Each recorded value holding a `requestContext` is named by exactly one scenario."""
        found = set()
        for source in (KINESIS, DYNAMODB):
            for test_id, content in load_snapshot(source).items():
                for key, value in content["recorded-content"].items():
                    if key.endswith(("_events", "_records")):
                        continue  # function logs, not destination messages
                    if '"requestContext"' in json.dumps(value):
                        found.add((source, test_id.rpartition("::")[2], key))
        covered = {(s.source, s.test, s.key) for s in SQS_SCENARIOS + SNS_SCENARIOS + S3_SCENARIOS}
        assert covered == found
        assert len(covered) == len(SQS_SCENARIOS + SNS_SCENARIOS + S3_SCENARIOS)
