"""The Kinesis and DynamoDB Streams record builders (ESM-SPEC.md §3.3, §3.4, §9)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from esm.arns import parse_source_arn
from esm.events import (
    DYNAMODB_EVENT_VERSION,
    DYNAMODB_RECORD_KEYS,
    DYNAMODB_STREAM_RECORD_KEYS,
    KINESIS_DATA_KEYS,
    KINESIS_RECORD_KEYS,
    dynamodb_item_key,
    dynamodb_record,
    dynamodb_sized_record,
    encode_record,
    encode_stream_record,
    kinesis_record,
    kinesis_record_size,
    kinesis_sizer,
)

STREAM = parse_source_arn("arn:aws:kinesis:us-east-2:123456789012:stream/lambda-stream")
TABLE_STREAM = parse_source_arn("arn:aws:dynamodb:us-east-2:123456789012:table/my-table/stream/2024-06-10T19:26:16.525")
ROLE = "arn:aws:iam::123456789012:role/lambda-role"
DOC_SEQUENCE = "49590338271490256608559692538361571095921575989136588898"
DOC_ARRIVAL = datetime(2018, 12, 17, 22, 10, 50, 987000, tzinfo=UTC)  # 1545084650.987


def kinesis_raw(**overrides: Any) -> dict[str, Any]:
    """A record as aiobotocore's Kinesis get_records returns it (the AWS doc example's values)."""
    raw: dict[str, Any] = {
        "SequenceNumber": DOC_SEQUENCE,
        "ApproximateArrivalTimestamp": DOC_ARRIVAL,
        "Data": b"Hello, this is a test.",
        "PartitionKey": "1",
    }
    raw.update(overrides)
    return raw


def build_kinesis(**overrides: Any) -> dict[str, Any]:
    """`kinesis_record` of `kinesis_raw(**overrides)` from the doc example's shard and stream."""
    return kinesis_record(
        kinesis_raw(**overrides), shard_id="shardId-000000000006", source=STREAM, invoke_identity_arn=ROLE
    )


def ddb_raw(**dynamodb: Any) -> dict[str, Any]:
    """A record as aiobotocore's dynamodbstreams get_records returns it (moto's shape: version 1.0)."""
    change: dict[str, Any] = {
        "ApproximateCreationDateTime": datetime(2023, 9, 6, 10, 45, 55, tzinfo=UTC),
        "Keys": {"my_partition_key": {"S": "hello world"}},
        "NewImage": {"my_partition_key": {"S": "hello world"}, "binary_key": {"B": b"foobar"}},
        "SequenceNumber": "111",
        "SizeBytes": 70,
        "StreamViewType": "NEW_IMAGE",
    }
    change.update(dynamodb)
    return {
        "eventID": "c4ca4238a0b923820dcc509a6f75849b",
        "eventName": "INSERT",
        "eventVersion": "1.0",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-2",
        "dynamodb": {k: v for k, v in change.items() if v is not None},
    }


def same_json(a: Any, b: Any) -> bool:
    """Equal as values and as serialized JSON, so key order counts, recursively."""
    return bool(a == b and json.dumps(a) == json.dumps(b))


class TestKinesisRecord:
    """A Kinesis data record becomes Lambda's record field for field (ESM-SPEC.md §3.3)."""

    def test_doc_example_is_reproduced_exactly(self) -> None:
        """The AWS documentation's example record is rebuilt exactly, key order included."""
        expected = {
            "kinesis": {
                "kinesisSchemaVersion": "1.0",
                "partitionKey": "1",
                "sequenceNumber": DOC_SEQUENCE,
                "data": "SGVsbG8sIHRoaXMgaXMgYSB0ZXN0Lg==",
                "approximateArrivalTimestamp": 1545084650.987,
            },
            "eventSource": "aws:kinesis",
            "eventVersion": "1.0",
            "eventID": f"shardId-000000000006:{DOC_SEQUENCE}",
            "eventName": "aws:kinesis:record",
            "invokeIdentityArn": ROLE,
            "awsRegion": "us-east-2",
            "eventSourceARN": "arn:aws:kinesis:us-east-2:123456789012:stream/lambda-stream",
        }
        assert same_json(build_kinesis(), expected)

    def test_key_order_constants_match_the_builder(self) -> None:
        """The exported key orders are the builder's orders."""
        record = build_kinesis()
        assert tuple(record) == KINESIS_RECORD_KEYS
        assert tuple(record["kinesis"]) == KINESIS_DATA_KEYS

    def test_data_is_base64_of_arbitrary_bytes(self) -> None:
        """Binary data, not valid UTF-8, and empty data are base64 encoded byte for byte."""
        blob = bytes(range(256))
        assert base64.b64decode(build_kinesis(Data=blob)["kinesis"]["data"]) == blob
        assert build_kinesis(Data=b"")["kinesis"]["data"] == ""

    def test_arrival_time_is_rounded_to_the_millisecond(self) -> None:
        """Sub-millisecond parts round to the nearest millisecond, giving a short JSON number."""
        base = datetime(2018, 12, 17, 22, 10, 50, tzinfo=UTC)
        up = build_kinesis(ApproximateArrivalTimestamp=base + timedelta(microseconds=987654))
        down = build_kinesis(ApproximateArrivalTimestamp=base + timedelta(microseconds=987499))
        assert up["kinesis"]["approximateArrivalTimestamp"] == 1545084650.988
        assert down["kinesis"]["approximateArrivalTimestamp"] == 1545084650.987
        assert b'"approximateArrivalTimestamp":1545084650.988}' in encode_record(up)

    def test_arrival_time_accepts_numbers_and_any_time_zone(self) -> None:
        """An epoch number, a naive (UTC) datetime and an offset datetime name the same instant."""
        offset = DOC_ARRIVAL.astimezone(timezone(timedelta(hours=-5)))
        naive = DOC_ARRIVAL.replace(tzinfo=None)
        for value in (1545084650.98701, offset, naive):
            assert build_kinesis(ApproximateArrivalTimestamp=value)["kinesis"]["approximateArrivalTimestamp"] == (
                1545084650.987
            )

    def test_whole_second_arrival_is_still_a_float(self) -> None:
        """An arrival time on a whole second is a JSON float, as AWS's number always has a fraction."""
        record = build_kinesis(ApproximateArrivalTimestamp=datetime(2018, 12, 17, 22, 10, 50, tzinfo=UTC))
        assert isinstance(record["kinesis"]["approximateArrivalTimestamp"], float)
        assert b'"approximateArrivalTimestamp":1545084650.0}' in encode_record(record)

    def test_kms_encryption_type_is_appended(self) -> None:
        """A KMS-encrypted record carries encryptionType last in `kinesis`."""
        kinesis = build_kinesis(EncryptionType="KMS")["kinesis"]
        assert list(kinesis) == [*KINESIS_DATA_KEYS, "encryptionType"]
        assert kinesis["encryptionType"] == "KMS"

    def test_unencrypted_record_has_no_encryption_type(self) -> None:
        """`NONE` or no EncryptionType leaves the key out, as in every recorded record."""
        assert "encryptionType" not in build_kinesis(EncryptionType="NONE")["kinesis"]
        assert "encryptionType" not in build_kinesis()["kinesis"]

    def test_event_id_names_shard_and_sequence(self) -> None:
        """eventID is `<shardId>:<sequenceNumber>`, with the shard the record was read from."""
        record = kinesis_record(
            kinesis_raw(SequenceNumber="42"), shard_id="shardId-000000000003", source=STREAM, invoke_identity_arn=ROLE
        )
        assert record["eventID"] == "shardId-000000000003:42"
        assert record["kinesis"]["sequenceNumber"] == "42"


class TestDynamodbRecord:
    """A DynamoDB stream record becomes Lambda's record field for field (ESM-SPEC.md §3.4)."""

    def test_recorded_event_is_reproduced_exactly(self) -> None:
        """The record of the recorded test_dynamodb_event_source_mapping is rebuilt, order included."""
        expected = {
            "eventID": "c4ca4238a0b923820dcc509a6f75849b",
            "eventName": "INSERT",
            "eventVersion": "1.1",
            "eventSource": "aws:dynamodb",
            "awsRegion": "us-east-2",
            "dynamodb": {
                "ApproximateCreationDateTime": 1693997155.0,
                "Keys": {"my_partition_key": {"S": "hello world"}},
                "NewImage": {"my_partition_key": {"S": "hello world"}, "binary_key": {"B": "Zm9vYmFy"}},
                "SequenceNumber": "111",
                "SizeBytes": 70,
                "StreamViewType": "NEW_IMAGE",
            },
            "eventSourceARN": TABLE_STREAM.arn,
        }
        record = dynamodb_record(ddb_raw(), source=TABLE_STREAM)
        assert same_json(record, expected)
        assert b'"ApproximateCreationDateTime":1693997155.0,' in encode_record(record)

    def test_event_version_is_always_1_1(self) -> None:
        """Whatever version the stream reports (moto: 1.0), the record says 1.1 as real AWS does (§9)."""
        for reported in ("1.0", "1.1", "2.0"):
            raw = {**ddb_raw(), "eventVersion": reported}
            assert dynamodb_record(raw, source=TABLE_STREAM)["eventVersion"] == DYNAMODB_EVENT_VERSION == "1.1"

    def test_modify_has_both_images_in_aws_order(self) -> None:
        """OldImage follows NewImage, in the recorded order, however the API returned the keys."""
        raw = ddb_raw(OldImage={"id": {"S": "a"}}, StreamViewType="NEW_AND_OLD_IMAGES")
        raw["dynamodb"] = dict(reversed(raw["dynamodb"].items()))
        raw["eventName"] = "MODIFY"
        record = dynamodb_record(raw, source=TABLE_STREAM)
        assert tuple(record) == DYNAMODB_RECORD_KEYS
        assert tuple(record["dynamodb"]) == DYNAMODB_STREAM_RECORD_KEYS

    def test_missing_images_are_left_out(self) -> None:
        """A KEYS_ONLY record has no images; a REMOVE with old images has only OldImage."""
        keys_only = dynamodb_record(ddb_raw(NewImage=None, StreamViewType="KEYS_ONLY"), source=TABLE_STREAM)
        assert list(keys_only["dynamodb"]) == [
            "ApproximateCreationDateTime",
            "Keys",
            "SequenceNumber",
            "SizeBytes",
            "StreamViewType",
        ]
        removed = dynamodb_record(
            ddb_raw(NewImage=None, OldImage={"my_partition_key": {"S": "x"}}, StreamViewType="OLD_IMAGE"),
            source=TABLE_STREAM,
        )
        assert "NewImage" not in removed["dynamodb"]
        assert removed["dynamodb"]["OldImage"] == {"my_partition_key": {"S": "x"}}

    def test_blobs_are_base64_at_any_depth(self) -> None:
        """B and BS values, also inside M and L, go back to base64 strings; other types are unchanged."""
        image = {
            "k": {"S": "x"},
            "b": {"B": b"\x00\xff"},
            "bs": {"BS": [b"a", b"\xfe"]},
            "n": {"N": "42.5"},
            "ns": {"NS": ["1", "2"]},
            "ss": {"SS": ["a", "b"]},
            "null": {"NULL": True},
            "bool": {"BOOL": False},
            "m": {
                "M": {"inner": {"B": b"z"}, "list": {"L": [{"B": b"y"}, {"N": "1"}, {"M": {"deep": {"BS": [b"q"]}}}]}}
            },
        }
        record = dynamodb_record(ddb_raw(NewImage=image), source=TABLE_STREAM)
        assert record["dynamodb"]["NewImage"] == {
            "k": {"S": "x"},
            "b": {"B": "AP8="},
            "bs": {"BS": ["YQ==", "/g=="]},
            "n": {"N": "42.5"},
            "ns": {"NS": ["1", "2"]},
            "ss": {"SS": ["a", "b"]},
            "null": {"NULL": True},
            "bool": {"BOOL": False},
            "m": {
                "M": {
                    "inner": {"B": "eg=="},
                    "list": {"L": [{"B": "eQ=="}, {"N": "1"}, {"M": {"deep": {"BS": ["cQ=="]}}}]},
                }
            },
        }
        assert list(record["dynamodb"]["NewImage"]) == list(image)  # the stream's attribute order is kept

    def test_blob_given_as_text_is_already_base64(self) -> None:
        """A blob that arrives as a string (wire form, not decoded by botocore) is passed through."""
        record = dynamodb_record(ddb_raw(NewImage={"b": {"B": "Zm9vYmFy"}}), source=TABLE_STREAM)
        assert record["dynamodb"]["NewImage"] == {"b": {"B": "Zm9vYmFy"}}

    def test_creation_time_is_a_float_as_precise_as_given(self) -> None:
        """A datetime or a number becomes float epoch seconds without losing the emulator's fraction."""
        with_ms = datetime(2023, 9, 6, 10, 45, 55, 145000, tzinfo=UTC)
        from_datetime = dynamodb_record(ddb_raw(ApproximateCreationDateTime=with_ms), source=TABLE_STREAM)
        assert from_datetime["dynamodb"]["ApproximateCreationDateTime"] == 1693997155.145
        from_int = dynamodb_record(ddb_raw(ApproximateCreationDateTime=1693997155), source=TABLE_STREAM)
        assert isinstance(from_int["dynamodb"]["ApproximateCreationDateTime"], float)

    def test_size_bytes_is_an_int_and_sequence_a_string(self) -> None:
        """SizeBytes is a JSON integer and SequenceNumber a string, whatever types came in."""
        change = dynamodb_record(ddb_raw(SizeBytes="26", SequenceNumber=111), source=TABLE_STREAM)["dynamodb"]
        assert change["SizeBytes"] == 26
        assert change["SequenceNumber"] == "111"

    def test_ttl_user_identity_goes_before_the_source_arn(self) -> None:
        """A TTL deletion's userIdentity gets Lambda's lower-camel keys, between dynamodb and eventSourceARN."""
        raw = ddb_raw(NewImage=None, OldImage={"my_partition_key": {"S": "x"}}, StreamViewType="OLD_IMAGE")
        raw["eventName"] = "REMOVE"
        raw["userIdentity"] = {"Type": "Service", "PrincipalId": "dynamodb.amazonaws.com"}
        record = dynamodb_record(raw, source=TABLE_STREAM)
        assert list(record)[-2:] == ["userIdentity", "eventSourceARN"]
        assert same_json(record["userIdentity"], {"principalId": "dynamodb.amazonaws.com", "type": "Service"})

    def test_region_and_arn_come_from_the_source(self) -> None:
        """awsRegion and eventSourceARN name the configured stream, not what the emulator reported."""
        raw = {**ddb_raw(), "awsRegion": "ddblocal"}
        record = dynamodb_record(raw, source=TABLE_STREAM)
        assert (record["awsRegion"], record["eventSourceARN"]) == ("us-east-2", TABLE_STREAM.arn)


class TestDynamodbItemKey:
    """The per-item ordering key names the item and nothing else."""

    def test_raw_and_built_record_give_the_same_key(self) -> None:
        """The key of a raw record equals the key of the record built from it, binary keys included."""
        raw = ddb_raw(Keys={"pk": {"B": b"\x01\x02"}, "sk": {"N": "7"}})
        assert dynamodb_item_key(raw) == dynamodb_item_key(dynamodb_record(raw, source=TABLE_STREAM))
        assert dynamodb_item_key(raw) == '{"pk":{"B":"AQI="},"sk":{"N":"7"}}'

    def test_key_is_canonical(self) -> None:
        """The order in which the stream lists key attributes does not change the key."""
        a = ddb_raw(Keys={"pk": {"S": "x"}, "sk": {"S": "y"}})
        b = ddb_raw(Keys={"sk": {"S": "y"}, "pk": {"S": "x"}})
        assert dynamodb_item_key(a) == dynamodb_item_key(b)

    def test_images_do_not_count(self) -> None:
        """Two changes to one item share a key; different items, or the same value typed differently, do not."""
        first = ddb_raw(NewImage={"my_partition_key": {"S": "hello world"}, "v": {"N": "1"}})
        second = ddb_raw(NewImage={"my_partition_key": {"S": "hello world"}, "v": {"N": "2"}})
        other = ddb_raw(Keys={"my_partition_key": {"S": "other"}})
        typed = ddb_raw(Keys={"my_partition_key": {"N": "1"}})
        text = ddb_raw(Keys={"my_partition_key": {"S": "1"}})
        assert dynamodb_item_key(first) == dynamodb_item_key(second)
        assert dynamodb_item_key(first) != dynamodb_item_key(other)
        assert dynamodb_item_key(typed) != dynamodb_item_key(text)


_scalars = st.one_of(
    st.builds(lambda s: {"S": s}, st.text()),
    st.builds(lambda n: {"N": str(n)}, st.integers()),
    st.builds(lambda b: {"B": b}, st.binary()),
    st.builds(lambda bs: {"BS": bs}, st.lists(st.binary(min_size=1), min_size=1, unique=True)),
    st.builds(lambda b: {"BOOL": b}, st.booleans()),
    st.just({"NULL": True}),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.builds(lambda items: {"L": items}, st.lists(inner, max_size=3)),
        st.builds(lambda m: {"M": m}, st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    ),
    max_leaves=10,
)


def _decode(value: dict[str, Any]) -> dict[str, Any]:
    """Undo the builder's base64 on blobs: the attribute value botocore gave."""
    ((kind, inner),) = value.items()
    if kind == "B":
        return {kind: base64.b64decode(inner)}
    if kind == "BS":
        return {kind: [base64.b64decode(b) for b in inner]}
    if kind == "L":
        return {kind: [_decode(v) for v in inner]}
    if kind == "M":
        return {kind: {k: _decode(v) for k, v in inner.items()}}
    return value


class TestEncoding:
    """Built stream records serialize as the JSON the function receives and parse back unchanged."""

    def test_kinesis_record_round_trips(self) -> None:
        """encode_record of a Kinesis record parses back to the same record, order included."""
        record = build_kinesis(PartitionKey="clé-ü", EncryptionType="KMS")
        encoded = encode_record(record)
        assert "clé-ü".encode() in encoded  # UTF-8, not \\u escapes
        assert same_json(json.loads(encoded), record)

    def test_dynamodb_record_round_trips(self) -> None:
        """encode_record of a DynamoDB record parses back to the same record, order included."""
        record = dynamodb_record(ddb_raw(OldImage={"b": {"BS": [b"\x00"]}}), source=TABLE_STREAM)
        assert same_json(json.loads(encode_record(record)), record)

    @given(st.dictionaries(st.text(max_size=8), _values, max_size=4))
    def test_any_image_encodes_and_decodes_to_the_original(self, image: dict[str, Any]) -> None:
        """Every attribute image encodes as JSON, and decoding its blobs gives back botocore's values."""
        record = dynamodb_record(ddb_raw(NewImage=image), source=TABLE_STREAM)
        parsed = json.loads(encode_record(record))
        assert {name: _decode(value) for name, value in parsed["dynamodb"]["NewImage"].items()} == image


class TestFastKinesisEncoding:
    """`encode_stream_record` is byte-for-byte `encode_record` (it only skips the generic encoder)."""

    @settings(max_examples=300)
    @given(
        key=st.text(min_size=1, max_size=40),
        data=st.binary(max_size=200),
        seq=st.integers(min_value=0, max_value=10**56),
        arrival=st.floats(min_value=0, max_value=4e9, allow_nan=False),
        encrypted=st.booleans(),
    )
    def test_matches_the_generic_encoder(
        self, key: str, data: bytes, seq: int, arrival: float, encrypted: bool
    ) -> None:
        """Any partition key (quotes, control characters, non-ASCII), data, sequence number and time."""
        raw = {
            "SequenceNumber": str(seq),
            "ApproximateArrivalTimestamp": datetime.fromtimestamp(arrival, UTC),
            "Data": data,
            "PartitionKey": key,
        }
        if encrypted:
            raw["EncryptionType"] = "KMS"
        record = kinesis_record(raw, shard_id="shardId-000000000001", source=STREAM, invoke_identity_arn=ROLE)
        assert encode_stream_record(record) == encode_record(record)
        assert kinesis_record_size(record) == len(encode_record(record))
        sizer = kinesis_sizer("shardId-000000000001", STREAM, ROLE)
        assert sizer(record) == len(encode_record(record))

    @settings(max_examples=200)
    @given(
        shard=st.text(min_size=1, max_size=20),
        role=st.text(max_size=30),
        key=st.text(min_size=1, max_size=20),
        seq=st.text(min_size=1, max_size=12),
        data=st.binary(max_size=50),
    )
    def test_any_shard_role_and_sequence_text(self, shard: str, role: str, key: str, seq: str, data: bytes) -> None:
        """The fields kept per stream (`_record_tail`) and the per-shard sizer hold for any text, escaped or not."""
        raw = {"SequenceNumber": seq, "ApproximateArrivalTimestamp": DOC_ARRIVAL, "Data": data, "PartitionKey": key}
        record = kinesis_record(raw, shard_id=shard, source=STREAM, invoke_identity_arn=role)
        try:
            expected = encode_record(record)
        except UnicodeEncodeError:  # a lone surrogate: UTF-8 cannot carry it, and no encoder pretends it can
            for fn in (encode_stream_record, kinesis_record_size, kinesis_sizer(shard, STREAM, role)):
                with pytest.raises(UnicodeEncodeError):
                    fn(record)
            return
        assert encode_stream_record(record) == expected
        assert kinesis_record_size(record) == len(expected)
        assert kinesis_sizer(shard, STREAM, role)(record) == len(expected)

    def test_other_shapes_take_the_generic_encoder(self) -> None:
        """An encrypted record, or a value that is not a string, is encoded and sized by `encode_record`."""
        encrypted = build_kinesis(EncryptionType="KMS")
        odd = build_kinesis()
        odd["awsRegion"] = None
        odd_key = build_kinesis()
        odd_key["kinesis"]["partitionKey"] = 7
        for record in (encrypted, odd, odd_key):
            assert encode_stream_record(record) == encode_record(record)
            assert kinesis_record_size(record) == len(encode_record(record))
        sizer = kinesis_sizer("shardId-000000000006", STREAM, ROLE)  # for records its shard's builder made
        assert sizer(encrypted) == len(encode_record(encrypted))
        assert sizer(odd_key) == len(encode_record(odd_key))


class TestDynamodbSize:
    """`dynamodb_sized_record` gives `dynamodb_record` and its exact encoded size without encoding it."""

    @settings(max_examples=300)
    @given(
        keys=st.dictionaries(st.text(min_size=1, max_size=8), _scalars, min_size=1, max_size=2),
        new=st.none() | st.dictionaries(st.text(max_size=8), _values, max_size=4),
        old=st.none() | st.dictionaries(st.text(max_size=8), _values, max_size=4),
        event_id=st.text(max_size=40),
        seq=st.text(min_size=1, max_size=12),
        created=st.none() | st.floats(allow_nan=True, allow_infinity=True) | st.integers(0, 2**40),
        size=st.none() | st.integers(0, 400_000),
        ttl=st.booleans(),
    )
    def test_size_is_the_encoded_length(
        self,
        keys: dict[str, Any],
        new: dict[str, Any] | None,
        old: dict[str, Any] | None,
        event_id: str,
        seq: str,
        created: float | None,
        size: int | None,
        ttl: bool,
    ) -> None:
        """Any text (quotes, control characters, non-ASCII), blobs, nesting, empty maps and lists, odd times."""
        raw = ddb_raw(
            Keys=keys,
            NewImage=new,
            OldImage=old,
            SequenceNumber=seq,
            ApproximateCreationDateTime=created,
            SizeBytes=size,
        )
        raw["eventID"] = event_id
        if ttl:
            raw["userIdentity"] = {"PrincipalId": "dynamodb.amazonaws.com", "Type": "Service"}
        try:
            expected = encode_record(dynamodb_record(raw, source=TABLE_STREAM))
        except UnicodeEncodeError:  # a lone surrogate: UTF-8 cannot carry it, and the size refuses it too
            with pytest.raises(UnicodeEncodeError):
                dynamodb_sized_record(raw, source=TABLE_STREAM)
            return
        record, sized = dynamodb_sized_record(raw, source=TABLE_STREAM)
        assert record == dynamodb_record(raw, source=TABLE_STREAM)
        assert sized == len(expected)
        assert encode_stream_record(record) == expected

    @pytest.mark.parametrize(
        "image",
        [
            {},
            {"a": {"M": {}}},
            {"a": {"L": []}},
            {'q"\\\n\u2028é': {"S": '\u0000\x7f"é😀'}},
            {"n": {"N": 5}},  # a number that is not text yet (botocore never sends one): written as text
            {"b": {"B": "AQI="}},  # a blob given as text: taken to be base64 already
            {"t": {"BOOL": False}, "u": {"NULL": True}},
            {"x": {"S": "a", "N": "1"}},  # two types in one value (not DynamoDB's shape, still sized exactly)
        ],
    )
    def test_edge_values(self, image: dict[str, Any]) -> None:
        """Empty containers, escapes, non-text numbers, base64 text and odd shapes are sized exactly."""
        raw = ddb_raw(NewImage=image)
        record, sized = dynamodb_sized_record(raw, source=TABLE_STREAM)
        assert sized == len(encode_record(record))
