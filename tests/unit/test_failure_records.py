"""Failure records of stream mappings, S3 keys and destination ARN checks (ESM-SPEC.md §4.3, §8 vectors 6–8).

Pure functions of `esm.destinations`: what AWS writes to an on-failure destination, to the key,
and which ARNs a configuration may name. The conformance suite compares the same records with the
AWS recordings; these tests pin each rule on its own.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from esm.arns import SourceKind
from esm.destinations import BatchInfo, FailedBatch, destination_problem, failure_record, s3_key
from esm.targets.base import InvokeResult

KINESIS_ARN = "arn:aws:kinesis:us-east-2:123456789012:stream/mystream"
DDB_ARN = "arn:aws:dynamodb:us-east-2:123456789012:table/mytable/stream/2019-11-14T00:04:06.388"
FUNCTION_ARN = "arn:aws:lambda:us-east-2:123456789012:function:myfunction"
MAPPING_UUID = "a1b2c3d4-0000-4000-8000-000000000001"
REQUEST_ID = "c9b8fa9f-5a7f-4b2c-af9c-0c604cde93a5"
DISCARDED_AT = datetime(2019, 11, 14, 0, 38, 6, 21000, tzinfo=UTC).timestamp()
THROWN = InvokeResult("Unhandled", b'{"errorMessage":"boom"}')
PARTIAL = InvokeResult(None, b'{"batchItemFailures":[{"itemIdentifier":""}]}')
EVENT = b'{"Records":[{"eventSource":"aws:kinesis","note":"caf\xc3\xa9"}]}'


def kinesis_batch(**changes: Any) -> FailedBatch:
    """The documented Kinesis example (KIN-FAIL) as a FailedBatch."""
    batch = FailedBatch(
        kind=SourceKind.KINESIS,
        mapping_uuid=MAPPING_UUID,
        condition="RetryAttemptsExhausted",
        request_id=REQUEST_ID,
        function_arn=FUNCTION_ARN,
        approximate_invoke_count=2,
        response=THROWN,
        info=BatchInfo(
            shard_id="shardId-000000000001",
            start_sequence="49601189658422359378836298521827638475320189012309704722",
            end_sequence="49601189658422359378836298522902373528957594348623495186",
            first_arrival=1573691884.835,
            last_arrival=1573691885.58,
            batch_size=500,
            stream_arn=KINESIS_ARN,
        ),
        timestamp=DISCARDED_AT,
        event_payload=EVENT,
    )
    return replace(batch, **changes)


def ddb_batch(**changes: Any) -> FailedBatch:
    """The documented DynamoDB example (DDB-FAIL) as a FailedBatch."""
    info = BatchInfo(
        shard_id="shardId-00000001573689847184-864758bb",
        start_sequence="800000000003126276362",
        end_sequence="800000000003126276362",
        first_arrival=1573690399.0,
        last_arrival=1573690399.0,
        batch_size=1,
        stream_arn=DDB_ARN,
    )
    return replace(kinesis_batch(kind=SourceKind.DYNAMODB, info=info), **changes)


class TestRecordShape:
    """The record has AWS's keys in AWS's order and AWS's JSON types."""

    def test_kinesis_record_is_the_documented_example(self) -> None:
        """A Kinesis batch gives exactly the KIN-FAIL example, key order included."""
        record = failure_record(kinesis_batch())
        expected = {
            "requestContext": {
                "requestId": REQUEST_ID,
                "functionArn": FUNCTION_ARN,
                "condition": "RetryAttemptsExhausted",
                "approximateInvokeCount": 2,
            },
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
            "version": "1.0",
            "timestamp": "2019-11-14T00:38:06.021Z",
            "KinesisBatchInfo": {
                "shardId": "shardId-000000000001",
                "startSequenceNumber": "49601189658422359378836298521827638475320189012309704722",
                "endSequenceNumber": "49601189658422359378836298522902373528957594348623495186",
                "approximateArrivalOfFirstRecord": "2019-11-14T00:38:04.835Z",
                "approximateArrivalOfLastRecord": "2019-11-14T00:38:05.580Z",
                "batchSize": 500,
                "streamArn": KINESIS_ARN,
            },
        }
        assert json.dumps(record) == json.dumps(expected)

    def test_dynamodb_record_uses_ddb_stream_batch_info(self) -> None:
        """A DynamoDB batch gives the DDB-FAIL example: `DDBStreamBatchInfo`, same envelope."""
        record = failure_record(ddb_batch())
        assert list(record) == ["requestContext", "responseContext", "version", "timestamp", "DDBStreamBatchInfo"]
        assert record["DDBStreamBatchInfo"] == {
            "shardId": "shardId-00000001573689847184-864758bb",
            "startSequenceNumber": "800000000003126276362",
            "endSequenceNumber": "800000000003126276362",
            "approximateArrivalOfFirstRecord": "2019-11-14T00:13:19Z",
            "approximateArrivalOfLastRecord": "2019-11-14T00:13:19Z",
            "batchSize": 1,
            "streamArn": DDB_ARN,
        }
        assert list(record["DDBStreamBatchInfo"]) == list(failure_record(kinesis_batch())["KinesisBatchInfo"])

    def test_an_sqs_batch_has_no_failure_record(self) -> None:
        """SQS mappings have no on-failure destination (ESM-SPEC.md §4.4), so asking is a bug."""
        with pytest.raises(ValueError, match="no on-failure destinations"):
            failure_record(kinesis_batch(kind=SourceKind.SQS))

    def test_the_record_serializes_as_json(self) -> None:
        """Every value is a JSON type: the record round-trips through json unchanged."""
        record = failure_record(kinesis_batch(), with_payload=True)
        assert json.loads(json.dumps(record)) == record


class TestConditions:
    """`condition`, `responseContext` and `functionError` follow how the batch failed (§4.2, §4.3)."""

    def test_thrown_error_reports_unhandled(self) -> None:
        """Retries exhausted after a thrown error: `functionError` is "Unhandled", status 200 (vector 6)."""
        context = failure_record(kinesis_batch())["responseContext"]
        assert context == {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"}

    def test_partial_batch_failure_reports_null_function_error(self) -> None:
        """Failed only by its partial batch response: `functionError` is present and null."""
        record = failure_record(ddb_batch(response=PARTIAL, approximate_invoke_count=3))
        assert record["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST", "functionError": None}
        assert '"functionError": null' in json.dumps(record)
        assert record["requestContext"]["approximateInvokeCount"] == 3

    def test_executed_version_comes_from_the_response(self) -> None:
        """A published version that ran is reported as `executedVersion`."""
        response = InvokeResult("Unhandled", b"", executed_version="7")
        assert failure_record(kinesis_batch(response=response))["responseContext"]["executedVersion"] == "7"

    @pytest.mark.parametrize("batch", [kinesis_batch, ddb_batch], ids=["kinesis", "dynamodb"])
    def test_record_age_exceeded_has_no_response_context(self, batch: Callable[..., FailedBatch]) -> None:
        """RecordAgeExceeded without an invocation: no `responseContext` key at all (vector 7)."""
        record = failure_record(batch(condition="RecordAgeExceeded", response=None, approximate_invoke_count=1))
        assert "responseContext" not in record
        assert list(record)[:3] == ["requestContext", "version", "timestamp"]
        assert record["requestContext"]["condition"] == "RecordAgeExceeded"
        assert record["requestContext"]["approximateInvokeCount"] == 1


class TestTimestamps:
    """Timestamps are ISO-8601 UTC with `Z`: milliseconds except DynamoDB arrival times (§4.3)."""

    def test_top_level_timestamp_has_milliseconds_for_both_sources(self) -> None:
        """`timestamp` is `YYYY-MM-DDTHH:MM:SS.mmmZ` for Kinesis and DynamoDB alike."""
        for batch in (kinesis_batch(timestamp=1573691886.0), ddb_batch(timestamp=1573691886.0)):
            assert failure_record(batch)["timestamp"] == "2019-11-14T00:38:06.000Z"

    def test_kinesis_arrival_times_have_milliseconds(self) -> None:
        """Whole seconds still print `.000`, as the recordings' `…:01.000Z` format shows."""
        info = replace(kinesis_batch().info, first_arrival=1573691884.0, last_arrival=1573691884.5)
        batch_info = failure_record(kinesis_batch(info=info))["KinesisBatchInfo"]
        assert batch_info["approximateArrivalOfFirstRecord"] == "2019-11-14T00:38:04.000Z"
        assert batch_info["approximateArrivalOfLastRecord"] == "2019-11-14T00:38:04.500Z"

    def test_dynamodb_arrival_times_have_whole_seconds(self) -> None:
        """A fraction is dropped (rounded down), never printed: `…:19Z`."""
        info = replace(ddb_batch().info, first_arrival=1573690399.999, last_arrival=1573690400.2)
        batch_info = failure_record(ddb_batch(info=info))["DDBStreamBatchInfo"]
        assert batch_info["approximateArrivalOfFirstRecord"] == "2019-11-14T00:13:19Z"
        assert batch_info["approximateArrivalOfLastRecord"] == "2019-11-14T00:13:20Z"

    def test_float_noise_does_not_lose_a_millisecond(self) -> None:
        """An epoch float just below a millisecond boundary prints that millisecond, not the one before."""
        batch = kinesis_batch(timestamp=1573691886.0209999)
        assert failure_record(batch)["timestamp"] == "2019-11-14T00:38:06.021Z"
        info = replace(ddb_batch().info, first_arrival=1573690399.9999999)
        assert failure_record(ddb_batch(info=info))["DDBStreamBatchInfo"]["approximateArrivalOfFirstRecord"] == (
            "2019-11-14T00:13:20Z"
        )

    def test_timestamps_are_utc(self) -> None:
        """Times are UTC whatever the local zone: the epoch prints as 1970-01-01T00:00:00.000Z."""
        assert failure_record(kinesis_batch(timestamp=0.0))["timestamp"] == "1970-01-01T00:00:00.000Z"


class TestPayload:
    """The S3 object adds `payload`: the original event as an escaped JSON string (KIN-FAIL, DDB-FAIL)."""

    def test_payload_is_the_event_as_a_string(self) -> None:
        """`payload` is a string holding exactly the serialized event, appended last."""
        record = failure_record(kinesis_batch(), with_payload=True)
        assert list(record)[-1] == "payload"
        assert record["payload"] == EVENT.decode()
        assert json.loads(record["payload"])["Records"][0]["note"] == "café"

    def test_payload_is_escaped_in_the_serialized_object(self) -> None:
        """Serialized, the event appears escaped inside the record, not as a nested object."""
        text = json.dumps(failure_record(kinesis_batch(), with_payload=True))
        assert '"payload": "{\\"Records\\":[' in text

    def test_without_payload_by_default(self) -> None:
        """SQS and SNS get metadata only: no `payload` key."""
        assert "payload" not in failure_record(kinesis_batch())


KEY_RE = re.compile(
    r"aws/lambda/(?P<uuid>[^/]+)/(?P<shard>[^/]+)/(?P<date>\d{4}/\d{2}/\d{2})/"
    r"(?P<time>\d{4}-\d{2}-\d{2}T\d{2}\.\d{2}\.\d{2})-(?P<random>[0-9a-f-]{36})"
)


class TestS3Key:
    """`aws/lambda/<UUID>/<shardId>/YYYY/MM/DD/YYYY-MM-DDTHH.MM.SS-<random UUID>` (§8 vector 8)."""

    def test_key_layout(self) -> None:
        """The key names the mapping, the shard, the UTC date and the time of the record's timestamp."""
        key = s3_key(kinesis_batch())
        m = KEY_RE.fullmatch(key)
        assert m is not None, key
        assert m["uuid"] == MAPPING_UUID
        assert m["shard"] == "shardId-000000000001"
        assert m["date"] == "2019/11/14"
        assert m["time"] == "2019-11-14T00.38.06"
        assert uuid.UUID(m["random"]).version == 4

    def test_key_time_matches_the_record_timestamp(self) -> None:
        """The key's second is the record's `timestamp` second, also near a second boundary."""
        batch = ddb_batch(timestamp=1573691886.9999999)
        stamp = failure_record(batch)["timestamp"]
        m = KEY_RE.fullmatch(s3_key(batch))
        assert m is not None
        assert stamp.startswith(m["time"].replace(".", ":"))
        assert m["shard"] == "shardId-00000001573689847184-864758bb"

    def test_keys_differ_within_one_second(self) -> None:
        """Two records discarded in the same second get different keys (the random UUID)."""
        assert s3_key(kinesis_batch()) != s3_key(kinesis_batch())


class TestDestinationProblem:
    """Which ARNs a mapping may name as its on-failure destination (§4.3)."""

    @pytest.mark.parametrize(
        "arn",
        [
            "arn:aws:sqs:us-east-1:123456789012:failed",
            "arn:aws:sns:eu-west-1:123456789012:failed-topic_1",
            "arn:aws:s3:::my-failure-bucket",
            "arn:aws:s3:::my.bucket.name",
            "arn:aws-us-gov:sqs:us-gov-west-1:123456789012:failed",
        ],
    )
    def test_standard_queues_topics_and_buckets_are_accepted(self, arn: str) -> None:
        """SQS queue, SNS topic and S3 bucket ARNs, in any partition, are fine."""
        assert destination_problem(arn) is None

    @pytest.mark.parametrize(
        "arn",
        [
            "arn:aws:lambda:us-east-1:123456789012:function:f",
            "arn:aws:events:us-east-1:123456789012:event-bus/default",
            "arn:aws:kinesis:us-east-1:123456789012:stream/s",
            "kafka://my-topic",
            "https://sqs.us-east-1.amazonaws.com/123456789012/failed",
            "failed",
            "",
        ],
    )
    def test_other_services_are_refused(self, arn: str) -> None:
        """Anything but SQS, SNS and S3 gets the same clear reason."""
        assert destination_problem(arn) == "must be the ARN of an SQS queue, an SNS topic or an S3 bucket"

    @pytest.mark.parametrize(
        "arn", ["arn:aws:sqs:us-east-1:123456789012:failed.fifo", "arn:aws:sns:us-east-1:123456789012:t.fifo"]
    )
    def test_fifo_queues_and_topics_are_refused(self, arn: str) -> None:
        """AWS fails every delivery to FIFO queues and topics, so the configuration is refused."""
        assert destination_problem(arn) == (
            "FIFO queues and topics are not supported as on-failure destinations (ESM-SPEC.md §4.3)"
        )

    @pytest.mark.parametrize(
        ("arn", "reason"),
        [
            ("arn:aws:sqs::123456789012:failed", "must be a full SQS queue ARN with region and account"),
            ("arn:aws:sns:us-east-1::topic", "must be a full SNS topic ARN with region and account"),
            ("arn:aws:sqs:us-east-1:123456789012:bad/name", "is not a valid SQS queue name"),
            ("arn:aws:sns:us-east-1:123456789012:bad name", "is not a valid SNS topic name"),
            ("arn:aws:s3:us-east-1:123456789012:bucket", "must be an S3 bucket ARN"),
            ("arn:aws:s3:::Bucket_Upper", "must be an S3 bucket ARN"),
            ("arn:aws:s3:::bucket/prefix", "must be an S3 bucket ARN"),
        ],
    )
    def test_malformed_arns_say_what_is_wrong(self, arn: str, reason: str) -> None:
        """A malformed queue, topic or bucket ARN is refused with a reason naming the fault."""
        problem = destination_problem(arn)
        assert problem is not None
        assert reason in problem
