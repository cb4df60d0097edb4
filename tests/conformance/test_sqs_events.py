"""SQS records built by esm match the records real AWS delivered (ESM-SPEC.md §3.1, §3.2, §4.1, §8).

Two kinds of check:
- `TestRecordedShapes` feeds every SQS record of the recordings, turned back into the
  `ReceiveMessage` message it came from, through `sqs_record` and compares: the builder reproduces
  each of the 131 records AWS delivered (keys, order, types, formats).
- `TestAgainstMoto` replays the recorded scenarios on a real moto server over HTTP (§8 vectors 1,
  3 and 4 and the message-attribute test): send what the recorded test sent, receive with
  `RECEIVE_KWARGS`, build the records, apply `decide_sqs` to the function response AWS recorded,
  and compare every delivery, redeliveries included, with the recording.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from esm.arns import SourceArn, parse_source_arn
from esm.events import RECEIVE_KWARGS, SQS_ATTRIBUTE_ORDER, SQS_RECORD_KEYS, sqs_record
from esm.policy import decide_sqs
from esm.targets.base import InvokeResult
from tests.conformance.recordings import (
    RECORDED_BOOK_ATTRIBUTES,
    assert_matches_recording,
    instantiate,
    load_snapshot,
    recorded,
    records_in,
)
from tests.conftest import unique

# Recorded test name (after the last "::") -> the SQS records its functions received.
RECORDED_TESTS = {
    test_id.rpartition("::")[2]: records
    for test_id, content in load_snapshot("sqs").items()
    if (records := records_in(content["recorded-content"]))
}


def as_received(record: dict[str, Any]) -> dict[str, Any]:
    """The ReceiveMessage message a recorded record was built from (placeholders made concrete).

    The attributes are handed over in reverse order, so the builder must restore AWS's order.
    """
    concrete = instantiate(record)
    body = concrete["body"]
    message: dict[str, Any] = {
        "MessageId": concrete["messageId"],
        "ReceiptHandle": concrete["receiptHandle"],
        "MD5OfBody": concrete["md5OfBody"],
        "Body": body if isinstance(body, str) else json.dumps(body),
        "Attributes": dict(reversed(concrete["attributes"].items())),
    }
    if concrete["messageAttributes"]:
        message["MD5OfMessageAttributes"] = concrete["md5OfMessageAttributes"]
        message["MessageAttributes"] = {
            name: {"StringValue": value["stringValue"], "DataType": value["dataType"]}
            if "stringValue" in value
            else {"BinaryValue": base64.b64decode(value["binaryValue"]), "DataType": value["dataType"]}
            for name, value in concrete["messageAttributes"].items()
        }
    return message


class TestRecordedShapes:
    """The builder reproduces every SQS record AWS delivered in the recordings."""

    @pytest.mark.parametrize("test_name", sorted(RECORDED_TESTS))
    def test_builder_reproduces_recorded_records(self, test_name: str) -> None:
        """Each recorded record, rebuilt from its ReceiveMessage message, matches the recording."""
        for record in RECORDED_TESTS[test_name]:
            source = parse_source_arn(instantiate(record["eventSourceARN"]))
            null_md5 = "md5OfMessageAttributes" in record and record["md5OfMessageAttributes"] is None
            built = sqs_record(as_received(record), source, null_md5_when_absent=null_md5)
            assert_matches_recording(built, record)

    def test_esm_order_is_the_order_aws_mostly_emits(self) -> None:
        """Every recorded record has esm's key order, the md5 swap AWS also emits, or was key-sorted by its capturer."""
        kinds = {"esm order": 0, "md5 swapped": 0, "key-sorted": 0}
        for records in RECORDED_TESTS.values():
            for record in records:
                ours = [k for k in SQS_RECORD_KEYS if k in record]
                attributes = [k for k in SQS_ATTRIBUTE_ORDER if k in record["attributes"]]
                if list(record) == sorted(record):
                    kinds["key-sorted"] += 1
                    continue
                assert list(record["attributes"]) == attributes
                if list(record) == ours:
                    kinds["esm order"] += 1
                else:
                    i = ours.index("md5OfMessageAttributes")
                    ours[i], ours[i + 1] = ours[i + 1], ours[i]
                    assert list(record) == ours
                    kinds["md5 swapped"] += 1
        assert kinds == {"esm order": 110, "md5 swapped": 14, "key-sorted": 7}


RECORD = records_in(recorded("test_message_body_and_attributes_passed_correctly", "first_attempt"))[0]


def mismatch(actual: Any, expected: Any, **kwargs: Any) -> str:
    """The failure text of assert_matches_recording (fails the test if it passes)."""
    with pytest.raises(AssertionError) as caught:
        assert_matches_recording(actual, expected, **kwargs)
    return str(caught.value)


class TestRecordingComparison:
    """assert_matches_recording accepts what AWS could have sent and rejects what it could not."""

    @pytest.mark.parametrize("source", ["sqs", "kinesis", "dynamodbstreams"])
    def test_instantiated_recordings_match(self, source: str) -> None:
        """Every recorded value, its placeholders replaced by samples, matches itself with bindings."""
        for content in load_snapshot(source).values():
            assert_matches_recording(instantiate(content["recorded-content"]), content["recorded-content"], bindings={})

    def test_key_order_is_checked(self) -> None:
        """A record with AWS's keys in another order fails."""
        actual = instantiate(RECORD)
        reordered = {"receiptHandle": actual.pop("receiptHandle"), **actual}
        assert "key order" in mismatch(reordered, RECORD)

    def test_attribute_order_is_checked(self) -> None:
        """Reordered system attributes fail."""
        actual = instantiate(RECORD)
        actual["attributes"] = dict(reversed(actual["attributes"].items()))
        assert "$.attributes: key order" in mismatch(actual, RECORD)

    def test_message_attribute_names_are_not_ordered(self) -> None:
        """Message attribute names may come in any order; each attribute's keys may not."""
        actual = instantiate(RECORD)
        actual["messageAttributes"] = dict(reversed(actual["messageAttributes"].items()))
        assert_matches_recording(actual, RECORD)
        actual["messageAttributes"]["Title"] = dict(reversed(actual["messageAttributes"]["Title"].items()))
        assert "$.messageAttributes.Title: key order" in mismatch(actual, RECORD)

    def test_missing_key_types_and_formats_are_checked(self) -> None:
        """A missing key, a wrong JSON type and a value of the wrong format each fail."""
        actual = instantiate(RECORD)
        del actual["awsRegion"]
        actual["attributes"]["ApproximateReceiveCount"] = 1
        actual["messageId"] = "not-a-uuid"
        text = mismatch(actual, RECORD)
        assert "missing ['awsRegion']" in text
        assert "$.attributes.ApproximateReceiveCount: expected a string like '1', got number 1" in text
        assert "$.messageId: 'not-a-uuid' does not have the format of '<uuid:1>'" in text

    def test_parsed_body_stands_for_a_json_string(self) -> None:
        """A recorded body object matches a string holding that JSON, and not a non-JSON string."""
        recorded_record = RECORDED_TESTS["test_sqs_event_source_mapping"][0]
        actual = instantiate(recorded_record)
        actual["body"] = '{"foo":"bar"}'
        assert_matches_recording(actual, recorded_record)
        actual["body"] = "foo=bar"
        assert "not JSON" in mismatch(actual, recorded_record)

    def test_bindings_tie_placeholders_across_records(self) -> None:
        """A placeholder keeps its value across calls; two placeholders of one kind need two values."""
        first, second = (
            records_in(recorded("test_failing_lambda_retries_after_visibility_timeout", k))[0]
            for k in ("first_attempt", "second_attempt")
        )
        bindings: dict[str, str] = {}
        assert_matches_recording(instantiate(first), first, bindings=bindings)
        same_handle = {**instantiate(second), "receiptHandle": instantiate(first)["receiptHandle"]}
        assert "are both" in mismatch(same_handle, second, bindings=dict(bindings))
        new_id = {**instantiate(second), "messageId": "00000000-0000-0000-0000-000000000000"}
        assert "<uuid:2> was" in mismatch(new_id, second, bindings=dict(bindings))

    def test_md5_key_swap_is_tolerated(self) -> None:
        """AWS emitted md5OfBody and md5OfMessageAttributes in both orders, so both are accepted."""
        swapped = next(
            r for r in RECORDED_TESTS["test_sqs_event_source_mapping_batch_size[15]"] if list(r)[5] == "md5OfBody"
        )
        built = sqs_record(
            as_received(swapped), parse_source_arn(instantiate(swapped["eventSourceARN"])), null_md5_when_absent=True
        )
        assert list(built)[5] == "md5OfMessageAttributes"
        assert_matches_recording(built, swapped)


async def make_queue(sqs: Any, name: str, **attributes: str) -> tuple[str, SourceArn]:
    """Create a queue on moto; return its URL and parsed ARN."""
    url: str = (await sqs.create_queue(QueueName=name, Attributes=attributes))["QueueUrl"]
    arn = (await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"]))["Attributes"]["QueueArn"]
    return url, parse_source_arn(arn)


async def receive(sqs: Any, url: str, *, wait: int = 0) -> list[dict[str, Any]]:
    """One ReceiveMessage call as the engine makes it."""
    response = await sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=wait, **RECEIVE_KWARGS)
    messages: list[dict[str, Any]] = response.get("Messages", [])
    return messages


def invocation(test: str, key: str) -> tuple[list[dict[str, Any]], Any]:
    """The records one recorded invocation delivered, and the response its function returned."""
    body = recorded(test, key)["Messages"][0]["Body"]
    return records_in(body["event"]), body.get("result")


class TestAgainstMoto:
    """Recorded scenarios replayed on moto give the recorded records, redeliveries included."""

    async def test_redelivery_after_visibility_timeout(self, sqs: Any) -> None:
        """A failed message comes back with the same id, a new receipt handle and count "2" (§8 vector 1)."""
        test = "test_failing_lambda_retries_after_visibility_timeout"
        null_md5 = recorded(test, "event_source_mapping")["MaximumBatchingWindowInSeconds"] >= 1
        url, source = await make_queue(sqs, unique("retries"), VisibilityTimeout="1")
        await sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"destination": url, "fail_attempts": 1}))
        bindings: dict[str, str] = {}

        [first] = await receive(sqs, url)
        [first_recorded] = records_in(recorded(test, "first_attempt"))
        assert_matches_recording(
            sqs_record(first, source, null_md5_when_absent=null_md5), first_recorded, bindings=bindings
        )
        decision = decide_sqs(InvokeResult("Unhandled", b""), [first["MessageId"]], report_batch_item_failures=False)
        assert decision.retry == (0,)

        [second] = await receive(sqs, url, wait=5)
        [second_recorded] = records_in(recorded(test, "second_attempt"))
        assert_matches_recording(
            sqs_record(second, source, null_md5_when_absent=null_md5), second_recorded, bindings=bindings
        )

    async def test_message_attributes(self, sqs: Any) -> None:
        """String and Number attributes and their MD5 are delivered as AWS recorded them."""
        url, source = await make_queue(sqs, unique("attributes"))
        await sqs.send_message(
            QueueUrl=url,
            MessageBody=json.dumps({"destination": url, "fail_attempts": 0}),
            MessageAttributes=RECORDED_BOOK_ATTRIBUTES,
        )
        [message] = await receive(sqs, url)
        [expected] = records_in(recorded("test_message_body_and_attributes_passed_correctly", "first_attempt"))
        assert_matches_recording(sqs_record(message, source, null_md5_when_absent=False), expected)

    async def test_binary_attribute_digest_matches_sqs(self, sqs: Any) -> None:
        """A Binary attribute is base64 in the record and the digest is the server's."""
        url, source = await make_queue(sqs, unique("binary"))
        attributes = {"Blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01\xfe"}}
        await sqs.send_message(QueueUrl=url, MessageBody="x", MessageAttributes=attributes)
        [message] = await receive(sqs, url)
        record = sqs_record({**message, "MD5OfMessageAttributes": None}, source, null_md5_when_absent=False)
        assert record["messageAttributes"]["Blob"]["binaryValue"] == "AAH+"
        assert record["md5OfMessageAttributes"] == message["MD5OfMessageAttributes"]

    async def test_window_mapping_has_null_attribute_digest(self, sqs: Any) -> None:
        """With a batching window of 1 s, a message without attributes has md5OfMessageAttributes null."""
        test = "TestSQSEventSourceMapping::test_sqs_event_source_mapping"
        null_md5 = recorded(test, "create-event-source-mapping-response")["MaximumBatchingWindowInSeconds"] >= 1
        url, source = await make_queue(sqs, unique("window"))
        await sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"foo": "bar"}))
        [message] = await receive(sqs, url)
        [expected] = records_in(recorded(test, "events"))
        assert_matches_recording(sqs_record(message, source, null_md5_when_absent=null_md5), expected)

    async def test_fifo_partial_failure_redelivers_the_rest_in_order(self, sqs: Any) -> None:
        """Group "1", 2, 3 and 4 reported failed: 1 is deleted, 2, 3, 4 return in order, count "2" (§8 vector 4)."""
        test = "test_report_batch_item_failures"
        first_recorded, result = invocation(test, "first_invocation")
        url, source = await make_queue(sqs, unique("partial") + ".fifo", FifoQueue="true")
        await sqs.send_message_batch(
            QueueUrl=url,
            Entries=[
                {
                    "Id": f"message-{i}",
                    "MessageBody": json.dumps(r["body"]),
                    "MessageGroupId": "1",
                    "MessageDeduplicationId": f"dedup-{i}",
                }
                for i, r in enumerate(first_recorded, start=1)
            ],
        )
        bindings: dict[str, str] = {}
        first = await receive(sqs, url)
        records = [sqs_record(m, source, null_md5_when_absent=False) for m in first]
        assert len(records) == len(first_recorded)
        for record, expected in zip(records, first_recorded, strict=True):
            assert_matches_recording(record, expected, bindings=bindings)  # key-sorted recording: order not judged
            assert tuple(record["attributes"]) == SQS_ATTRIBUTE_ORDER  # so check the documented order (§3.2)

        answer = json.dumps(instantiate(result, bindings)).encode()
        decision = decide_sqs(
            InvokeResult(None, answer),
            [m["MessageId"] for m in first],
            report_batch_item_failures=True,
            group_ids=[m["Attributes"]["MessageGroupId"] for m in first],
        )
        assert (decision.delete, decision.retry, decision.outcome) == ((0,), (1, 2, 3), "partial_failure")
        await sqs.delete_message(QueueUrl=url, ReceiptHandle=first[0]["ReceiptHandle"])
        # moto 5.2.5 returns only a FIFO group's last message when the group's visibility timeout
        # lapses; ending the visibility now is the same redelivery without that emulator quirk.
        await sqs.change_message_visibility_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": first[i]["ReceiptHandle"], "VisibilityTimeout": 0}
                for i in decision.retry
            ],
        )

        second = await receive(sqs, url)
        second_recorded, _ = invocation(test, "second_invocation")
        assert len(second) == len(second_recorded)
        for message, expected in zip(second, second_recorded, strict=True):
            assert_matches_recording(
                sqs_record(message, source, null_md5_when_absent=False), expected, bindings=bindings
            )

    async def test_invalid_partial_response_redelivers_the_batch(self, sqs: Any) -> None:
        """`{"batchItemFailures":[{"foo":"notvalid"}]}` fails the batch: it returns with count "2" (§8 vector 3)."""
        test = "test_report_batch_item_failures_invalid_result_json_batch_fails"
        [first_recorded], result = invocation(test, "first_invocation")
        url, source = await make_queue(sqs, unique("invalid"), VisibilityTimeout="1")
        await sqs.send_message(QueueUrl=url, MessageBody=first_recorded["body"])
        bindings: dict[str, str] = {}

        [first] = await receive(sqs, url)
        assert_matches_recording(
            sqs_record(first, source, null_md5_when_absent=False), first_recorded, bindings=bindings
        )
        decision = decide_sqs(
            InvokeResult(None, json.dumps(result).encode()), [first["MessageId"]], report_batch_item_failures=True
        )
        assert (decision.delete, decision.retry, decision.outcome) == ((), (0,), "invalid_response")

        [second] = await receive(sqs, url, wait=5)
        [second_recorded], _ = invocation(test, "second_invocation")
        assert_matches_recording(
            sqs_record(second, source, null_md5_when_absent=False), second_recorded, bindings=bindings
        )

    async def test_empty_object_response_deletes_the_batch(self, sqs: Any) -> None:
        """`{}` succeeds for the whole batch: the message is deleted and never redelivered (§8 vector 3)."""
        test = "test_report_batch_item_failures_empty_json_batch_succeeds"
        [expected], result = invocation(test, "first_invocation")
        assert result == {}
        url, source = await make_queue(sqs, unique("empty"), VisibilityTimeout="1")
        await sqs.send_message(QueueUrl=url, MessageBody=expected["body"])

        [message] = await receive(sqs, url)
        assert_matches_recording(sqs_record(message, source, null_md5_when_absent=False), expected)
        decision = decide_sqs(InvokeResult(None, b"{}"), [message["MessageId"]], report_batch_item_failures=True)
        assert (decision.delete, decision.outcome) == ((0,), "success")
        await sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        assert await receive(sqs, url, wait=2) == []
