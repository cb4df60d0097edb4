"""The SQS record builder, SQS's attribute MD5, and event encoding (ESM-SPEC.md §2, §3.1, §3.2)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from moto.sqs.models import Message

from esm.arns import parse_source_arn
from esm.events import (
    EVENT_LIMIT_BYTES,
    RECEIVE_KWARGS,
    SQS_ATTRIBUTE_ORDER,
    SQS_RECORD_KEYS,
    assemble_event,
    encode_record,
    event_size,
    md5_of_message_attributes,
    sqs_record,
)

QUEUE = parse_source_arn("arn:aws:sqs:us-east-2:123456789012:my-queue")
FIFO_QUEUE = parse_source_arn("arn:aws:sqs:eu-west-1:123456789012:orders.fifo")
BOOK_ATTRIBUTES: dict[str, dict[str, Any]] = {
    "Title": {"StringValue": "The Whistler", "DataType": "String"},
    "Author": {"StringValue": "John Grisham", "DataType": "String"},
    "WeeksOn": {"StringValue": "6", "DataType": "Number"},
}
RECORDED_BOOK_MD5 = "d25a6aea97eb8f585bfa92d314504a92"  # test_message_body_and_attributes_passed_correctly


def message(**overrides: Any) -> dict[str, Any]:
    """A message as aiobotocore's receive_message returns it (the AWS doc example's values)."""
    base: dict[str, Any] = {
        "MessageId": "059f36b4-87a3-44ab-83d2-661975830a7d",
        "ReceiptHandle": "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a",
        "MD5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
        "Body": "Test message.",
        "Attributes": {
            "SenderId": "AIDAIENQZJOLO23YVJ4VO",
            "ApproximateFirstReceiveTimestamp": "1545082649185",
            "ApproximateReceiveCount": "1",
            "SentTimestamp": "1545082649183",
        },
    }
    base.update(overrides)
    return base


class TestStandardRecord:
    """A standard-queue message becomes Lambda's record field for field (ESM-SPEC.md §3.1)."""

    def test_doc_example_is_reproduced_exactly(self) -> None:
        """The AWS documentation's example message gives the documented record, key order included."""
        record = sqs_record(message(), QUEUE, null_md5_when_absent=True)
        expected = {
            "messageId": "059f36b4-87a3-44ab-83d2-661975830a7d",
            "receiptHandle": "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a",
            "body": "Test message.",
            "attributes": {
                "ApproximateReceiveCount": "1",
                "SentTimestamp": "1545082649183",
                "SenderId": "AIDAIENQZJOLO23YVJ4VO",
                "ApproximateFirstReceiveTimestamp": "1545082649185",
            },
            "messageAttributes": {},
            "md5OfMessageAttributes": None,
            "md5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
            "eventSource": "aws:sqs",
            "eventSourceARN": "arn:aws:sqs:us-east-2:123456789012:my-queue",
            "awsRegion": "us-east-2",
        }
        assert record == expected
        assert json.dumps(record) == json.dumps(expected)  # same order, recursively

    def test_keys_follow_aws_order(self) -> None:
        """The record's keys are SQS_RECORD_KEYS in order."""
        assert tuple(sqs_record(message(), QUEUE, null_md5_when_absent=True)) == SQS_RECORD_KEYS

    def test_json_body_stays_a_string(self) -> None:
        """A JSON body is passed through as the raw string, never parsed."""
        body = '{"destination": "x", "fail_attempts": 1}'
        assert sqs_record(message(Body=body), QUEUE, null_md5_when_absent=False)["body"] == body

    def test_attribute_values_are_strings(self) -> None:
        """Every attributes value is a string, even if a client handed over a number."""
        record = sqs_record(message(Attributes={"ApproximateReceiveCount": 2}), QUEUE, null_md5_when_absent=False)
        assert record["attributes"] == {"ApproximateReceiveCount": "2"}

    def test_other_attributes_follow_the_known_ones_in_received_order(self) -> None:
        """AWSTraceHeader and DeadLetterQueueSourceArn come after the known keys, as SQS returned them."""
        attrs = {
            "DeadLetterQueueSourceArn": "arn:aws:sqs:us-east-2:123456789012:source",
            "SentTimestamp": "1",
            "AWSTraceHeader": "Root=1-5759e988-bd862e3fe1be46a994272793",
            "ApproximateReceiveCount": "1",
        }
        record = sqs_record(message(Attributes=attrs), QUEUE, null_md5_when_absent=False)
        assert list(record["attributes"]) == [
            "ApproximateReceiveCount",
            "SentTimestamp",
            "DeadLetterQueueSourceArn",
            "AWSTraceHeader",
        ]

    def test_missing_md5_of_body_is_computed(self) -> None:
        """Without MD5OfBody (an emulator may omit it) the MD5 of the UTF-8 body is used."""
        record = sqs_record(message(MD5OfBody=None, Body="Test message."), QUEUE, null_md5_when_absent=False)
        assert record["md5OfBody"] == "e4e68fb7bd0e697a0ae8f1bb342846b3"

    @pytest.mark.parametrize(
        "body",
        ["héllo wörld", "日本語のメッセージ", "emoji 🎉 party", "", r"literal \u00e9 text"],
        ids=["latin", "japanese", "emoji", "empty", "backslash-u"],
    )
    def test_unicode_bodies_are_unchanged(self, body: str) -> None:
        """Any Unicode body arrives unchanged and is encoded as UTF-8 rather than \\u escapes."""
        record = sqs_record(message(Body=body), QUEUE, null_md5_when_absent=False)
        assert record["body"] == body
        encoded = encode_record(record)
        assert json.loads(encoded)["body"] == body
        assert json.dumps(body, ensure_ascii=False).encode() in encoded


class TestMd5OfMessageAttributesField:
    """`md5OfMessageAttributes` is SQS's digest, `null`, or absent (ESM-SPEC.md §3.1 notes, §9)."""

    def test_sqs_digest_is_passed_through(self) -> None:
        """With attributes the record carries the MD5 SQS reported."""
        msg = message(MessageAttributes=BOOK_ATTRIBUTES, MD5OfMessageAttributes=RECORDED_BOOK_MD5)
        assert sqs_record(msg, QUEUE, null_md5_when_absent=False)["md5OfMessageAttributes"] == RECORDED_BOOK_MD5

    def test_missing_digest_is_computed(self) -> None:
        """With attributes but no digest from the server, esm computes SQS's digest itself."""
        msg = message(MessageAttributes=BOOK_ATTRIBUTES)
        assert sqs_record(msg, QUEUE, null_md5_when_absent=False)["md5OfMessageAttributes"] == RECORDED_BOOK_MD5

    def test_no_attributes_with_window_is_null(self) -> None:
        """No attributes and a batching window ≥ 1: the key is present as null, as recorded."""
        record = sqs_record(message(), QUEUE, null_md5_when_absent=True)
        assert "md5OfMessageAttributes" in record
        assert record["md5OfMessageAttributes"] is None

    def test_no_attributes_without_window_is_absent(self) -> None:
        """No attributes and window 0: the key is left out, as recorded."""
        record = sqs_record(message(), QUEUE, null_md5_when_absent=False)
        assert "md5OfMessageAttributes" not in record
        assert list(record) == [k for k in SQS_RECORD_KEYS if k != "md5OfMessageAttributes"]


class TestMessageAttributes:
    """Message attributes are lower-camel with empty lists, binary values in base64 (ESM-SPEC.md §3.1)."""

    def test_string_and_number_attributes(self) -> None:
        """String and Number attributes carry stringValue and the four keys in AWS's order."""
        record = sqs_record(message(MessageAttributes=BOOK_ATTRIBUTES), QUEUE, null_md5_when_absent=False)
        assert record["messageAttributes"]["WeeksOn"] == {
            "stringValue": "6",
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": "Number",
        }
        assert list(record["messageAttributes"]["Author"]) == [
            "stringValue",
            "stringListValues",
            "binaryListValues",
            "dataType",
        ]

    def test_binary_attribute_is_base64_in_place_of_string_value(self) -> None:
        """A Binary attribute's bytes become base64 text under binaryValue, first among its keys."""
        attrs = {"Thumb": {"BinaryValue": b"\x00\xffpng", "DataType": "Binary.png"}}
        record = sqs_record(message(MessageAttributes=attrs), QUEUE, null_md5_when_absent=False)
        assert record["messageAttributes"]["Thumb"] == {
            "binaryValue": base64.b64encode(b"\x00\xffpng").decode(),
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": "Binary.png",
        }
        assert next(iter(record["messageAttributes"]["Thumb"])) == "binaryValue"

    def test_list_values_are_kept_and_binary_lists_base64(self) -> None:
        """List values (reserved by SQS) are carried, binary list members as base64."""
        attrs = {"L": {"StringListValues": ["a", "b"], "BinaryListValues": [b"\x01"], "DataType": "String"}}
        record = sqs_record(message(MessageAttributes=attrs), QUEUE, null_md5_when_absent=False)
        assert record["messageAttributes"]["L"] == {
            "stringListValues": ["a", "b"],
            "binaryListValues": ["AQ=="],
            "dataType": "String",
        }

    def test_attribute_names_keep_sqs_order(self) -> None:
        """Attribute names appear in the order SQS returned them, not sorted."""
        record = sqs_record(message(MessageAttributes=BOOK_ATTRIBUTES), QUEUE, null_md5_when_absent=False)
        assert list(record["messageAttributes"]) == ["Title", "Author", "WeeksOn"]


class TestFifoRecord:
    """FIFO messages add SequenceNumber, MessageGroupId and MessageDeduplicationId (ESM-SPEC.md §3.2)."""

    def test_fifo_attributes_are_in_aws_order(self) -> None:
        """Attributes received in any order come out in the documented FIFO order."""
        attrs = {
            "MessageDeduplicationId": "1",
            "SenderId": "AIDAIO23YVJENQZJOL4VO",
            "ApproximateFirstReceiveTimestamp": "1573251510774",
            "SequenceNumber": "18849496460467696128",
            "MessageGroupId": "1",
            "SentTimestamp": "1573251510774",
            "ApproximateReceiveCount": "1",
        }
        record = sqs_record(message(Attributes=attrs), FIFO_QUEUE, null_md5_when_absent=False)
        assert tuple(record["attributes"]) == SQS_ATTRIBUTE_ORDER
        assert record["eventSourceARN"] == "arn:aws:sqs:eu-west-1:123456789012:orders.fifo"
        assert record["awsRegion"] == "eu-west-1"


class TestMd5Algorithm:
    """`md5_of_message_attributes` is SQS's documented digest."""

    def test_reproduces_the_recorded_digest(self) -> None:
        """Title/Author/WeeksOn give the MD5 real AWS recorded."""
        assert md5_of_message_attributes(BOOK_ATTRIBUTES) == RECORDED_BOOK_MD5

    def test_name_order_does_not_matter(self) -> None:
        """Attributes are digested in name order, whatever the dict order."""
        assert md5_of_message_attributes(dict(reversed(BOOK_ATTRIBUTES.items()))) == RECORDED_BOOK_MD5

    @settings(max_examples=100, deadline=None)
    @given(
        st.dictionaries(
            st.from_regex(r"[A-Za-z0-9_\-.]{1,20}", fullmatch=True),
            st.one_of(
                st.builds(lambda v: {"DataType": "String", "StringValue": v}, st.text(min_size=1)),
                st.builds(lambda v: {"DataType": "Number", "StringValue": str(v)}, st.integers()),
                st.builds(lambda v: {"DataType": "Binary", "BinaryValue": v}, st.binary(min_size=1)),
            ),
            min_size=1,
            max_size=10,
        )
    )
    def test_matches_moto(self, attributes: dict[str, dict[str, Any]]) -> None:
        """For any String, Number and Binary attributes the digest equals moto's MD5OfMessageAttributes."""
        moto_message = Message("id", "body")
        moto_message.message_attributes = attributes
        assert md5_of_message_attributes(attributes) == moto_message.attribute_md5


class TestEventEncoding:
    """Events are assembled from encoded records with an exact, cheap size (ESM-SPEC.md §2)."""

    def test_limit_is_lambdas_six_megabytes(self) -> None:
        """The cut is Lambda's 6,291,456-byte synchronous payload limit."""
        assert EVENT_LIMIT_BYTES == 6_291_456

    def test_receive_asks_for_every_attribute(self) -> None:
        """ReceiveMessage asks for all system and message attributes, so no record field is missing."""
        assert RECEIVE_KWARGS["MessageSystemAttributeNames"] == ["All"]
        assert RECEIVE_KWARGS["MessageAttributeNames"] == ["All"]
        with pytest.raises(TypeError):
            RECEIVE_KWARGS["MaxNumberOfMessages"] = 10  # type: ignore[index]

    def test_records_are_compact_json(self) -> None:
        """A record is encoded without spaces."""
        assert encode_record({"a": "b", "c": [1, None]}) == b'{"a":"b","c":[1,null]}'

    def test_empty_event(self) -> None:
        """An event without records is `{"Records":[]}`, 14 bytes."""
        assert assemble_event([]) == b'{"Records":[]}'
        assert event_size([]) == 14

    @given(st.lists(st.binary(max_size=64), max_size=30))
    def test_size_is_exact(self, encoded: list[bytes]) -> None:
        """For any records, event_size of their sizes is the assembled event's length."""
        assert len(assemble_event(encoded)) == event_size([len(r) for r in encoded])

    @settings(deadline=None)
    @given(
        st.lists(
            st.builds(
                lambda body, attrs: message(Body=body, MessageAttributes=attrs),
                st.text(max_size=200),
                st.dictionaries(
                    st.from_regex(r"[A-Za-z]{1,8}", fullmatch=True),
                    st.builds(lambda v: {"DataType": "String", "StringValue": v}, st.text(min_size=1, max_size=20)),
                    max_size=3,
                ),
            ),
            max_size=10,
        ),
        st.booleans(),
    )
    def test_assembled_event_parses_to_the_records(self, messages: list[dict[str, Any]], null_md5: bool) -> None:
        """The assembled bytes are the JSON event `{"Records": [...]}` of exactly these records."""
        records = [sqs_record(m, QUEUE, null_md5_when_absent=null_md5) for m in messages]
        payload = assemble_event([encode_record(r) for r in records])
        assert json.loads(payload) == {"Records": records}
        assert len(payload) == len(json.dumps({"Records": records}, separators=(",", ":"), ensure_ascii=False).encode())
