"""AWS-exact event records per source, and event encoding with an exact, cheap size for the 6 MB cut.

A function must see the event AWS Lambda would send (DESIGN.md §2, "What a function sees"), so
each builder rebuilds Lambda's record from what the source API returned, field by field, in the
order AWS emits:

- `sqs_record`: one `ReceiveMessage` message (ESM-SPEC.md §3.1, §3.2), checked against the real
  AWS recordings in `tests/conformance/test_sqs_events.py`;
- `kinesis_record`: one Kinesis `GetRecords` record (§3.3), and `dynamodb_record`: one DynamoDB
  Streams `GetRecords` record (§3.4), checked in `tests/conformance/test_stream_events.py`.

A raw record that does not have the API's shape (a required key missing, null or of another type,
text that UTF-8 cannot carry) makes a builder raise one of `MALFORMED`, and nothing else; the
sources catch exactly these (property-tested in `tests/reliability/test_fuzz.py`).

Lambda cuts a batch when the serialized event would pass 6 MB (ESM-SPEC.md §2: the limit is on
the event *including* the per-record metadata). esm encodes each record at most once
(`encode_record`; an SQS message when it is received); the size of an event of several encoded records is then a sum
(`event_size`), and the event itself is a concatenation (`assemble_event`), so the batch
gatherer never re-serializes a growing batch to learn its size. A stream record's exact size is
known without encoding it (Kinesis: `kinesis_sizer`, `kinesis_record_size`; DynamoDB:
`dynamodb_sized_record`): it is encoded (`encode_stream_record`) only when an invocation needs
the event's bytes, which an in-process handler, handed the event as objects, never does.
"""

from __future__ import annotations

import binascii
import functools
import hashlib
import json
import math
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from json.encoder import encode_basestring
from types import MappingProxyType
from typing import Any, Final

from esm.arns import SourceArn

__all__ = [
    "DYNAMODB_EVENT_VERSION",
    "DYNAMODB_RECORD_KEYS",
    "DYNAMODB_STREAM_RECORD_KEYS",
    "EVENT_LIMIT_BYTES",
    "KINESIS_DATA_KEYS",
    "KINESIS_RECORD_KEYS",
    "MALFORMED",
    "RECEIVE_KWARGS",
    "SQS_ATTRIBUTE_ORDER",
    "SQS_RECORD_KEYS",
    "assemble_event",
    "dynamodb_item_key",
    "dynamodb_record",
    "dynamodb_sized_record",
    "encode_record",
    "encode_stream_record",
    "event_size",
    "events_size",
    "kinesis_record",
    "kinesis_record_size",
    "kinesis_sizer",
    "md5_of_message_attributes",
    "sqs_record",
]

EVENT_LIMIT_BYTES: Final = 6 * 1024 * 1024
"""Lambda's synchronous invocation payload limit, 6,291,456 bytes, applied to the serialized
event (ESM-SPEC.md §2)."""

MALFORMED: Final = (KeyError, TypeError, ValueError, AttributeError)
"""What a builder raises for a raw record that does not have the API's shape. The sources catch
exactly these: an SQS message is logged and left to its visibility timeout (and the queue's
redrive policy), a stream page fails as the retriable `MalformedRecord` source error."""

RECEIVE_KWARGS: Final[Mapping[str, Any]] = MappingProxyType(
    {
        "MessageSystemAttributeNames": ["All"],
        "AttributeNames": ["All"],
        "MessageAttributeNames": ["All"],
    }
)
"""Keyword arguments for every `ReceiveMessage` call, so each field of the Lambda record is
returned: all system attributes and all message attributes (ESM-SPEC.md §3.1).

`MessageSystemAttributeNames` is the current parameter; the deprecated `AttributeNames` is sent
too, because SQS-compatible emulators that predate the rename only read the old name. SQS and
moto take the union of both, so asking twice is harmless.
"""

SQS_RECORD_KEYS: Final = (
    "messageId",
    "receiptHandle",
    "body",
    "attributes",
    "messageAttributes",
    "md5OfMessageAttributes",
    "md5OfBody",
    "eventSource",
    "eventSourceARN",
    "awsRegion",
)
"""The keys of a Lambda SQS record in the order AWS emits them (ESM-SPEC.md §3.1): 110 of the 131
recorded records have it; 14 have `md5OfBody` before `md5OfMessageAttributes` (AWS emitted both
within one test run) and 7 were key-sorted by the recording function. `md5OfMessageAttributes`
may be absent, see `sqs_record`."""

SQS_ATTRIBUTE_ORDER: Final = (
    "ApproximateReceiveCount",
    "SentTimestamp",
    "SequenceNumber",
    "MessageGroupId",
    "SenderId",
    "MessageDeduplicationId",
    "ApproximateFirstReceiveTimestamp",
)
"""The order of the known system attributes in a record's `attributes` (ESM-SPEC.md §3.1, §3.2);
any other attribute SQS returns follows them, in the order received."""

_STRING, _BINARY, _STRING_LIST, _BINARY_LIST = 1, 2, 3, 4  # SQS's transport type bytes


def sqs_record(message: Mapping[str, Any], source: SourceArn, *, null_md5_when_absent: bool) -> dict[str, Any]:
    """Build the record Lambda puts in `event["Records"]` for one received SQS message.

    `message` is one entry of aiobotocore's `receive_message(...)["Messages"]`, received with
    `RECEIVE_KWARGS`. The record follows ESM-SPEC.md §3.1/§3.2 exactly:

    - keys in AWS's order (`SQS_RECORD_KEYS`); `body` is the raw string, never parsed;
    - `attributes`: every value a string, known keys in `SQS_ATTRIBUTE_ORDER`, then the rest
      (`AWSTraceHeader`, `DeadLetterQueueSourceArn`, …) as SQS returned them;
    - `messageAttributes`: lower-camel values (`stringValue` or base64 `binaryValue`,
      `stringListValues`, `binaryListValues`, `dataType`), in SQS's order;
    - `md5OfMessageAttributes`: SQS's MD5 when the message has attributes. When it has none,
      real AWS recorded the key as `null` for mappings with `MaximumBatchingWindowInSeconds` ≥ 1
      and left it out for window 0 (ESM-SPEC.md §3.1 notes, §9); `null_md5_when_absent=True`
      gives the former, False the latter. The caller derives it from the mapping's window.
    """
    for key in ("MessageId", "ReceiptHandle", "Body"):
        if not isinstance(message[key], str):  # a null id would be taken for the id "None"
            raise TypeError(f"{key} is a {type(message[key]).__name__}, not a string")
    attributes_in = message.get("Attributes") or {}
    message_attributes_in = message.get("MessageAttributes") or {}
    body = message["Body"]
    record: dict[str, Any] = {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": body,
        "attributes": _attributes(attributes_in),
        "messageAttributes": {name: _message_attribute(value) for name, value in message_attributes_in.items()},
    }
    if message_attributes_in:
        record["md5OfMessageAttributes"] = message.get("MD5OfMessageAttributes") or md5_of_message_attributes(
            message_attributes_in
        )
    elif null_md5_when_absent:
        record["md5OfMessageAttributes"] = None
    record["md5OfBody"] = message.get("MD5OfBody") or hashlib.md5(body.encode()).hexdigest()  # noqa: S324 - SQS's checksum
    record["eventSource"] = "aws:sqs"
    record["eventSourceARN"] = source.arn
    record["awsRegion"] = source.region
    return record


def _attributes(attributes: Mapping[str, Any]) -> dict[str, str]:
    ordered = {name: str(attributes[name]) for name in SQS_ATTRIBUTE_ORDER if name in attributes}
    for name, value in attributes.items():
        if name not in ordered:
            ordered[name] = str(value)
    return ordered


def _b64(value: bytes | str) -> str:
    if type(value) is not bytes:  # the common case, bytes, is encoded without a copy
        value = value.encode() if isinstance(value, str) else bytes(value)
    return binascii.b2a_base64(value, newline=False).decode("ascii")


def _message_attribute(value: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if value.get("StringValue") is not None:
        out["stringValue"] = value["StringValue"]
    elif value.get("BinaryValue") is not None:
        out["binaryValue"] = _b64(value["BinaryValue"])
    out["stringListValues"] = list(value.get("StringListValues") or [])
    out["binaryListValues"] = [_b64(v) for v in value.get("BinaryListValues") or []]
    out["dataType"] = value["DataType"]
    return out


def md5_of_message_attributes(attributes: Mapping[str, Mapping[str, Any]]) -> str:
    """SQS's MD5 digest of message attributes, as `MD5OfMessageAttributes` reports it.

    `attributes` is in the API's shape (`DataType`, `StringValue` or `BinaryValue` as bytes, or
    the list values). SQS's documented algorithm: for each attribute in name order, the name and
    the data type, each as a 4-byte big-endian length followed by its UTF-8 bytes; then one
    transport byte (1 string/number, 2 binary, 3 string list, 4 binary list) and the value(s),
    each again length-prefixed. Used when a message lacks the digest (ESM-SPEC.md §3.1).
    """
    digest = hashlib.md5()  # noqa: S324 - SQS's checksum, not a security use
    for name in sorted(attributes):
        value = attributes[name]
        _update(digest, name)
        _update(digest, value["DataType"])
        if value.get("StringValue") is not None:
            digest.update(bytes([_STRING]))
            _update(digest, value["StringValue"])
        elif value.get("BinaryValue") is not None:
            digest.update(bytes([_BINARY]))
            _update(digest, value["BinaryValue"])
        elif value.get("StringListValues"):
            digest.update(bytes([_STRING_LIST]))
            _update_all(digest, value["StringListValues"])
        elif value.get("BinaryListValues"):
            digest.update(bytes([_BINARY_LIST]))
            _update_all(digest, value["BinaryListValues"])
    return digest.hexdigest()


def _update(digest: Any, value: str | bytes) -> None:
    raw = value.encode() if isinstance(value, str) else bytes(value)
    digest.update(struct.pack(">I", len(raw)))
    digest.update(raw)


def _update_all(digest: Any, values: Iterable[str | bytes]) -> None:
    for value in values:
        _update(digest, value)


KINESIS_RECORD_KEYS: Final = (
    "kinesis",
    "eventSource",
    "eventVersion",
    "eventID",
    "eventName",
    "invokeIdentityArn",
    "awsRegion",
    "eventSourceARN",
)
"""The keys of a Lambda Kinesis record in the order AWS emits them (ESM-SPEC.md §3.3): all 90
recorded records whose capturer kept the order have it (22 more were key-sorted by their
capturer)."""

KINESIS_DATA_KEYS: Final = (
    "kinesisSchemaVersion",
    "partitionKey",
    "sequenceNumber",
    "data",
    "approximateArrivalTimestamp",
)
"""The keys of a Kinesis record's `kinesis` object in AWS's order; `encryptionType` follows them
when the record is encrypted (ESM-SPEC.md §3.3, see `kinesis_record`)."""

DYNAMODB_RECORD_KEYS: Final = (
    "eventID",
    "eventName",
    "eventVersion",
    "eventSource",
    "awsRegion",
    "dynamodb",
    "eventSourceARN",
)
"""The keys of a Lambda DynamoDB record in the order AWS emits them (ESM-SPEC.md §3.4), as in
the 52 order-preserving records of the recordings; `userIdentity` goes before `eventSourceARN`
when present (see `dynamodb_record`)."""

DYNAMODB_STREAM_RECORD_KEYS: Final = (
    "ApproximateCreationDateTime",
    "Keys",
    "NewImage",
    "OldImage",
    "SequenceNumber",
    "SizeBytes",
    "StreamViewType",
)
"""The keys of a DynamoDB record's `dynamodb` object in AWS's recorded order (ESM-SPEC.md §3.4);
each is present only when the stream record has it (the images depend on the view type and the
event)."""

DYNAMODB_EVENT_VERSION: Final = "1.1"
"""The `eventVersion` real AWS sends for DynamoDB records (ESM-SPEC.md §9), whatever the stream
API reported (moto reports "1.0")."""

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)


def kinesis_record(
    raw: Mapping[str, Any], *, shard_id: str, source: SourceArn, invoke_identity_arn: str
) -> dict[str, Any]:
    """Build the record Lambda puts in `event["Records"]` for one Kinesis data record.

    `raw` is one entry of a GetRecords answer's `Records` (`SequenceNumber`,
    `ApproximateArrivalTimestamp`, `Data`, `PartitionKey`, optional `EncryptionType`), read from
    shard `shard_id` of stream `source`: in the wire's form, as esm's clients return it
    (`esm.aws.WireRecordsParserFactory`: `Data` a base64 string, the timestamp epoch seconds), or
    as botocore parses it (`Data` bytes, the timestamp a datetime). The record follows
    ESM-SPEC.md §3.3 in AWS's key order (`KINESIS_RECORD_KEYS`, `KINESIS_DATA_KEYS`):

    - `data` is the base64 of the record's bytes (the wire's own text when `Data` is a string);
      `approximateArrivalTimestamp` a JSON number of epoch seconds with millisecond precision
      (the API's precision), rounded to the millisecond;
    - `encryptionType` is added last to `kinesis` only for an encrypted record (`KMS`): AWS's
      encrypted example carries it there, and no recorded unencrypted record has it (GO
      `omitempty`), so an absent or `NONE` type is left out;
    - `eventID` is `<shardId>:<sequenceNumber>`; `invokeIdentityArn` the function's execution
      role (for esm, the configured identity); `awsRegion` and `eventSourceARN` come from the
      stream ARN.
    """
    sequence_number = str(raw["SequenceNumber"])
    kinesis: dict[str, Any] = {
        "kinesisSchemaVersion": "1.0",
        "partitionKey": raw["PartitionKey"],
        "sequenceNumber": sequence_number,
        "data": data if type(data := raw["Data"]) is str else _b64(data),
        "approximateArrivalTimestamp": _epoch_seconds(raw["ApproximateArrivalTimestamp"], milliseconds=True),
    }
    encryption_type = raw.get("EncryptionType")
    if encryption_type and encryption_type != "NONE":
        kinesis["encryptionType"] = encryption_type
    return {
        "kinesis": kinesis,
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": f"{shard_id}:{sequence_number}",
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": invoke_identity_arn,
        "awsRegion": source.region,
        "eventSourceARN": source.arn,
    }


def dynamodb_record(raw: Mapping[str, Any], *, source: SourceArn) -> dict[str, Any]:
    """Build the record Lambda puts in `event["Records"]` for one DynamoDB stream record.

    `raw` is one entry of a GetRecords answer's `Records`, read from stream `source`: in the
    wire's form, as esm's clients return it (`esm.aws.WireRecordsParserFactory`), or as botocore
    parses it (blobs as bytes, the timestamp a datetime). The record follows ESM-SPEC.md §3.4 in AWS's key order
    (`DYNAMODB_RECORD_KEYS`, `DYNAMODB_STREAM_RECORD_KEYS`):

    - `eventVersion` is always `DYNAMODB_EVENT_VERSION` ("1.1", what real AWS sends; §9);
      `awsRegion` and `eventSourceARN` come from the stream ARN;
    - `dynamodb.ApproximateCreationDateTime` is a JSON number of epoch seconds, as precise as the
      stream gave it (AWS: whole seconds, written `1693997155.0`); `SizeBytes` an integer;
    - attribute values stay DynamoDB JSON, with blobs (`B`, `BS`, also inside `M` and `L`) in
      base64 as on the wire (bytes, as botocore parses them, are encoded again), numbers (`N`,
      `NS`) as strings; a blob given as a string is the wire's base64 and kept as it is;
    - `userIdentity` (TTL deletions) is added after `dynamodb` with Lambda's lower-camel keys,
      `{"principalId": "dynamodb.amazonaws.com", "type": "Service"}` (the Record shape's member
      order, which Lambda's other keys follow; no recording has one).
    """
    return dynamodb_sized_record(raw, source=source)[0]


def dynamodb_sized_record(raw: Mapping[str, Any], *, source: SourceArn) -> tuple[dict[str, Any], int]:
    """`dynamodb_record(raw, source=source)` and the exact `len(encode_record(record))` of it, in one walk.

    The hot path of a DynamoDB mapping: the size cuts batches at 6 MB, and only a Lambda or HTTP
    target (or a failure record) needs the bytes themselves, so the record is encoded later, if
    ever. The size is added up while the record is built, from the JSON text of each value and
    the fixed text around it (property-tested against `encode_record`).
    """
    change_in = raw["dynamodb"]
    if change_in.get("Keys") is None:  # every change names its item (and `dynamodb_item_key` needs it)
        raise KeyError("dynamodb.Keys")
    change: dict[str, Any] = {}
    change_size = 1  # "{"; each member adds its "," or the closing "}"
    for name in DYNAMODB_STREAM_RECORD_KEYS:
        if name not in change_in or change_in[name] is None:
            continue
        value = change_in[name]
        if name == "ApproximateCreationDateTime":
            value = _epoch_seconds(value, milliseconds=False)
            value_size = _number_bytes(value)
        elif name in ("Keys", "NewImage", "OldImage"):
            value, value_size = _sized_item(value)
        elif name == "SizeBytes":
            value = int(value)
            value_size = _number_bytes(value)
        else:
            value = str(value)
            value_size = _text_bytes(value)
        change[name] = value
        change_size += _MEMBER_BYTES[name] + value_size
    if not change:
        change_size = 2
    event_id, event_name = raw["eventID"], raw["eventName"]
    record: dict[str, Any] = {
        "eventID": event_id,
        "eventName": event_name,
        "eventVersion": DYNAMODB_EVENT_VERSION,
        "eventSource": "aws:dynamodb",
        "awsRegion": source.region,
        "dynamodb": change,
    }
    size = _dynamodb_fixed_bytes(source) + _text_bytes(event_id) + _text_bytes(event_name) + change_size
    identity = raw.get("userIdentity")
    if identity:
        record["userIdentity"] = user = {
            lambda_name: identity[api_name]
            for api_name, lambda_name in (("PrincipalId", "principalId"), ("Type", "type"))
            if identity.get(api_name) is not None
        }
        size += len(',"userIdentity":') + len(encode_record(user))
    record["eventSourceARN"] = source.arn
    return record, size


def dynamodb_item_key(raw_or_record: Mapping[str, Any]) -> str:
    """A stable string naming the item a DynamoDB stream record changed, for per-item ordering.

    Takes either a raw `GetRecords` record or the record `dynamodb_record` built from it and
    gives the same string for both: the canonical JSON (sorted names, compact, blobs in base64)
    of `dynamodb.Keys`. Two records have the same key exactly when they change the same item.
    """
    keys = _item(raw_or_record["dynamodb"]["Keys"])
    return json.dumps(keys, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _epoch_seconds(value: Any, *, milliseconds: bool) -> float:
    """Epoch seconds from a botocore timestamp (a datetime; naive means UTC) or a number."""
    if isinstance(value, datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        micros = (moment - _EPOCH) // _MICROSECOND  # exact integer arithmetic, no float drift
        if milliseconds:
            return ((micros + 500) // 1000) / 1000
        return micros / 1_000_000
    seconds = float(value)
    return round(seconds, 3) if milliseconds else seconds


def _item(attributes: Mapping[str, Any]) -> dict[str, Any]:
    return _sized_item(attributes)[0]


def _sized_item(attributes: Mapping[str, Any]) -> tuple[dict[str, Any], int]:
    """An item (name -> attribute value) as the wire carries it, and the bytes of its JSON text."""
    out: dict[str, Any] = {}
    size = 1  # "{"; each member adds its "," or the closing "}"
    for name, value in attributes.items():
        if type(value) is dict and len(value) == 1:  # the common case, {"S": text} or {"N": text}, first
            kind = "S"
            text = value.get(kind)
            if text is None:
                kind = "N"
                text = value.get(kind)
            if type(text) is str:
                # A new object, not the parsed answer's own: the raw record stays as read (`StreamRecord.renew`).
                out[name] = {kind: text}
                size += _text_bytes(name) + 8 + _text_bytes(text)  # name, ':{"S":', text, "}", then "," or "}"
                continue
        out[name], value_size = _sized_attribute_value(value)
        size += _text_bytes(name) + 2 + value_size  # name, ":", value, then "," or "}"
    return out, size if out else 2


def _sized_attribute_value(value: Mapping[str, Any]) -> tuple[dict[str, Any], int]:
    """One DynamoDB JSON attribute value as the wire carries it (blobs in base64), recursively, and its JSON bytes."""
    out: dict[str, Any] = {}
    size = 1
    for kind, inner in value.items():
        converted: Any
        if kind == "S" or kind == "N":
            converted = inner if type(inner) is str else str(inner)
            inner_size = _text_bytes(converted)
        elif kind == "B":
            converted = _blob(inner)
            inner_size = _text_bytes(converted)
        elif kind == "M":
            converted, inner_size = _sized_item(inner)
        elif kind == "L":
            converted = []
            inner_size = 1
            for v in inner:
                element, element_size = _sized_attribute_value(v)
                converted.append(element)
                inner_size += element_size + 1
        elif kind in ("SS", "NS", "BS"):
            converted = [_blob(b) for b in inner] if kind == "BS" else [str(v) for v in inner]
            inner_size = 1 + sum(_text_bytes(v) + 1 for v in converted)
        else:  # BOOL, NULL
            converted = inner
            inner_size = 4 if inner is True or inner is None else len(encode_record(inner))
        if kind in ("L", "SS", "NS", "BS") and not converted:
            inner_size = 2
        out[kind] = converted
        kind_size = _KIND_BYTES.get(kind)
        size += (kind_size if kind_size is not None else _text_bytes(kind) + 2) + inner_size
    return out, size if out else 2


_KIND_BYTES: Final = {kind: len(f'"{kind}":,') for kind in ("S", "N", "B", "M", "L", "SS", "NS", "BS", "BOOL", "NULL")}
"""The bytes around an attribute value of each type: its quoted name, ":" and the "," or "}" after it."""

_MEMBER_BYTES: Final = {name: len(f'"{name}":,') for name in DYNAMODB_STREAM_RECORD_KEYS}
"""The same for the members of a DynamoDB record's `dynamodb` object."""


def _text_bytes(text: str) -> int:
    """`len(encode_record(text))`: the UTF-8 bytes of a string's JSON text (UnicodeEncodeError for a lone surrogate)."""
    encoded = _json_text(text)
    return len(encoded) if encoded.isascii() else len(encoded.encode())


def _number_bytes(value: float) -> int:
    """`len(encode_record(value))` for an int or a float (`json.dumps` writes their repr when finite)."""
    return len(repr(value)) if math.isfinite(value) else len(json.dumps(value))  # NaN, Infinity


@functools.lru_cache(maxsize=1024)
def _dynamodb_fixed_bytes(source: SourceArn) -> int:
    """The bytes of a `dynamodb_record` of this stream without its values `eventID`, `eventName` and `dynamodb`.

    Worked out from a template record with empty values (two quotes each, and "{}").
    """
    template = {
        "eventID": "",
        "eventName": "",
        "eventVersion": DYNAMODB_EVENT_VERSION,
        "eventSource": "aws:dynamodb",
        "awsRegion": source.region,
        "dynamodb": {},
        "eventSourceARN": source.arn,
    }
    return len(encode_record(template)) - len('""""{}')


def _blob(value: bytes | bytearray | memoryview | str) -> str:
    return value if isinstance(value, str) else _b64(bytes(value))


_PREFIX: Final = b'{"Records":['
_SUFFIX: Final = b"]}"
_SEPARATOR: Final = b","


def encode_record(record: Mapping[str, Any]) -> bytes:
    """Serialize one record as compact UTF-8 JSON, the unit `event_size` and `assemble_event` add up.

    Non-ASCII text is written as UTF-8 (not `\\uXXXX` escapes), as Lambda sends it, so the byte
    count is what the function receives (ESM-SPEC.md §2).
    """
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode()


def event_size(encoded_sizes: Sequence[int]) -> int:
    """The exact byte size of `assemble_event` of records with these encoded sizes, without building it.

    This is the number compared with `EVENT_LIMIT_BYTES` to cut a batch (ESM-SPEC.md §2).
    """
    return events_size(sum(encoded_sizes), len(encoded_sizes))


def events_size(total: int, count: int) -> int:
    """`event_size` of `count` records whose encoded sizes add up to `total` (a running sum's check)."""
    return len(_PREFIX) + total + max(0, count - 1) * len(_SEPARATOR) + len(_SUFFIX)


def assemble_event(encoded: Sequence[bytes]) -> bytes:
    """The serialized event `{"Records":[r1,r2,...]}` from records encoded by `encode_record`.

    `len(assemble_event(x)) == event_size([len(r) for r in x])` always holds.
    """
    return _PREFIX + _SEPARATOR.join(encoded) + _SUFFIX


def encode_stream_record(record: Mapping[str, Any]) -> bytes:
    """`encode_record(record)` for a stream record; a `kinesis_record` record without the generic encoder.

    The hot path of a Kinesis mapping: the record's shape is fixed, so each string goes straight
    through the JSON string encoder (the C function `json.dumps` itself uses), and the six fields
    that are the same for every record of a stream (`eventSource` to `eventSourceARN`) are encoded
    once and kept (`_record_tail`). The output is byte-for-byte `encode_record(record)`
    (property-tested); any other shape, an encrypted or a DynamoDB record say, takes
    `encode_record` itself.
    """
    parts = _kinesis_parts(record)
    if parts is None:
        return encode_record(record)
    return "".join(parts).encode()


def kinesis_record_size(record: Mapping[str, Any]) -> int:
    """`len(encode_stream_record(record))`, exactly, without writing the record out.

    A Kinesis record is encoded only when an invocation needs the event's bytes (a Lambda or HTTP
    target, a failure record); its size, which cuts batches at 6 MB, is known from the start. The
    pieces are the ones `encode_stream_record` joins; only the small ones are encoded to learn it.
    """
    parts = _kinesis_parts(record)
    if parts is None:
        return len(encode_record(record))
    size = _KINESIS_FIXED_BYTES
    for i in _KINESIS_VALUE_PARTS:
        part = parts[i]
        size += len(part) if part.isascii() else len(part.encode())
    return size


def kinesis_sizer(shard_id: str, source: SourceArn, invoke_identity_arn: str) -> Callable[[Mapping[str, Any]], int]:
    """`kinesis_record_size` for records built by `kinesis_record` with these arguments, for one shard.

    Everything in such a record but five values is the same for every record of the shard: its
    size is the size of those fixed parts, worked out once from a template record, plus the
    sizes of the partition key (as JSON), the sequence number (twice: it is in `eventID` too),
    the base64 data and the arrival time. A record of another shape (encrypted, say) or with a
    sequence number that is not plain digits is sized by `kinesis_record_size` itself.
    """
    template = kinesis_record(
        {"SequenceNumber": "0", "PartitionKey": "", "Data": b"", "ApproximateArrivalTimestamp": 0.0},
        shard_id=shard_id,
        source=source,
        invoke_identity_arn=invoke_identity_arn,
    )
    fixed = kinesis_record_size(template) - len('""') - 2 * len("0") - len("") - len(repr(0.0))

    def size(record: Mapping[str, Any]) -> int:
        kinesis = record["kinesis"]
        key = kinesis["partitionKey"]
        sequence = kinesis["sequenceNumber"]
        data = kinesis["data"]
        timestamp = kinesis["approximateArrivalTimestamp"]
        if (
            len(kinesis) != len(KINESIS_DATA_KEYS)
            or type(key) is not str
            or type(sequence) is not str
            or not (sequence.isascii() and sequence.isdigit())
            or type(data) is not str
            or not data.isascii()
            or type(timestamp) is not float
        ):
            return kinesis_record_size(record)
        key_text = _json_text(key)
        key_bytes = len(key_text) if key_text.isascii() else len(key_text.encode())
        return fixed + key_bytes + 2 * len(sequence) + len(data) + len(repr(timestamp))

    return size


def _kinesis_parts(record: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The pieces of text that make up `encode_record(record)` for a `kinesis_record` record; None for another shape."""
    kinesis = record.get("kinesis")
    if type(kinesis) is not dict or len(record) != len(KINESIS_RECORD_KEYS) or len(kinesis) != len(KINESIS_DATA_KEYS):
        return None
    timestamp = kinesis["approximateArrivalTimestamp"]
    data = kinesis["data"]
    if type(timestamp) is not float or type(data) is not str:
        return None
    try:
        tail = _record_tail(
            record["eventSource"],
            record["eventVersion"],
            record["eventName"],
            record["invokeIdentityArn"],
            record["awsRegion"],
            record["eventSourceARN"],
        )
        return (
            '{"kinesis":{"kinesisSchemaVersion":',
            _json_text(kinesis["kinesisSchemaVersion"]),
            ',"partitionKey":',
            _json_text(kinesis["partitionKey"]),
            ',"sequenceNumber":',
            _json_text(kinesis["sequenceNumber"]),
            ',"data":"',
            data,  # base64: nothing to escape
            '","approximateArrivalTimestamp":',
            repr(timestamp),  # what json.dumps writes for a float
            '},"eventSource":',
            tail[0],
            ',"eventID":',
            _json_text(record["eventID"]),
            tail[1],
        )
    except TypeError:  # a value that is not a string (not a record of `kinesis_record`)
        return None


_KINESIS_VALUE_PARTS: Final = (1, 3, 5, 7, 9, 11, 13, 14)
"""The places of `_kinesis_parts` that vary (values); the others are fixed ASCII text."""
_KINESIS_FIXED_BYTES: Final = len(
    '{"kinesis":{"kinesisSchemaVersion":,"partitionKey":,"sequenceNumber":,"data":"'
    '","approximateArrivalTimestamp":},"eventSource":,"eventID":'
)
"""The bytes of the fixed pieces of `_kinesis_parts` (places 0, 2, 4, 6, 8, 10 and 12)."""

_json_text: Final = encode_basestring
"""What `json.dumps(value, ensure_ascii=False)` writes for a string `value` (the C encoder; a
TypeError for anything else)."""

_TAILS: dict[tuple[str, ...], tuple[str, str]] = {}
_TAILS_MAX: Final = 1024


def _record_tail(*values: str) -> tuple[str, str]:
    """The encoded `eventSource` and `eventVersion` values, and the encoded rest after `eventID`.

    These fields are the same for every record of a stream and function role, so they are encoded
    once and kept (at most `_TAILS_MAX` sets; TypeError for a value that is not a string).
    """
    tail = _TAILS.get(values)
    if tail is None:
        source, version, name, identity, region, arn = (_json_text(v) for v in values)
        tail = (
            f'{source},"eventVersion":{version}',
            f',"eventName":{name},"invokeIdentityArn":{identity},"awsRegion":{region},"eventSourceARN":{arn}}}',
        )
        if len(_TAILS) >= _TAILS_MAX:
            _TAILS.clear()
        _TAILS[values] = tail
    return tail
