"""On-failure destinations of stream mappings: AWS's failure records, sent to SQS, SNS or S3.

When a Kinesis or DynamoDB Streams batch is discarded (retries exhausted, or records too old),
Lambda sends an invocation record, metadata only, to the mapping's `OnFailure` destination
(ESM-SPEC.md §4.3). This module has three parts:

- `failure_record` builds that record exactly as the AWS recordings show it: key order,
  `responseContext` absent for `RecordAgeExceeded`, `functionError` null when only a partial batch
  response failed the batch, a millisecond `timestamp`, and `KinesisBatchInfo` (arrival times with
  milliseconds) or `DDBStreamBatchInfo` (arrival times in whole seconds).
- The senders deliver it, one attempt per call: the SQS message body, the SNS `Message` (SQS
  subscribers then see SNS's own envelope around it), or an S3 object that also carries the
  original event as an escaped JSON string under `payload`, stored at
  `aws/lambda/<UUID>/<shardId>/YYYY/MM/DD/YYYY-MM-DDTHH.MM.SS-<random UUID>` (`s3_key`).
- `destination_problem` is the configuration check: SQS queue, SNS topic or S3 bucket ARNs only,
  and no FIFO queues or topics (AWS fails every delivery to those, ESM-SPEC.md §4.3 and §7).

Serialization: compact JSON (`,` and `:` separators), in `failure_record`'s key order for all three
destinations. The S3 recordings show the object's keys sorted, but that is the recorder's doing (its
`match()` sorts every object it is handed, while JSON strings it parses later, such as an SQS body or
this object's `payload`, keep their order), so the order of the SQS and SNS recordings applies.
`payload` comes last, where AWS's documentation shows it.

Better than AWS: AWS drops the records when delivery fails (it counts them in `DroppedEventCount`,
ESM-SPEC.md §7). Here a sender makes one attempt and raises a classified `esm.errors.AwsError`; the
shard consumer retries with backoff and does not checkpoint past the records until delivery
succeeded, so a destination outage delays the shard instead of losing data.

Nothing here logs: failure records and payloads carry customer data, and the caller logs the
outcome (destination ARN, error code) without them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

from esm.arns import SourceKind
from esm.errors import SourceNotFoundError, classify
from esm.targets.base import InvokeResult

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_sns import SNSClient
    from types_aiobotocore_sqs import SQSClient

    from esm.aws import ClientFactory

__all__ = [
    "BatchInfo",
    "DestinationSender",
    "Destinations",
    "FailedBatch",
    "destination_problem",
    "failure_record",
    "s3_key",
]


@dataclass(frozen=True, slots=True)
class BatchInfo:
    """The discarded records' place in the stream: `KinesisBatchInfo` / `DDBStreamBatchInfo`.

    Sequence numbers are kept as the stream spells them; arrival times are epoch seconds
    (Kinesis `approximateArrivalTimestamp`, DynamoDB `ApproximateCreationDateTime`).
    """

    shard_id: str
    start_sequence: str
    end_sequence: str
    first_arrival: float
    last_arrival: float
    batch_size: int
    stream_arn: str


@dataclass(frozen=True, slots=True)
class FailedBatch:
    """Everything a failure record says about a discarded batch, plus the event for S3.

    `response` is the last invocation's result, or None when no invocation is reported
    (`RecordAgeExceeded`: the record then has no `responseContext`). `timestamp` is when the batch
    was discarded (epoch seconds); `event_payload` the serialized event `{"Records":[...]}`.
    """

    kind: SourceKind
    mapping_uuid: str
    condition: Literal["RetryAttemptsExhausted", "RecordAgeExceeded"]
    request_id: str
    function_arn: str
    approximate_invoke_count: int
    response: InvokeResult | None
    info: BatchInfo
    timestamp: float
    event_payload: bytes


def _utc(epoch: float) -> datetime:
    """The UTC moment of an epoch time, rounded to the millisecond (float noise must not lose one)."""
    millis = round(epoch * 1000)
    return datetime.fromtimestamp(millis // 1000, UTC).replace(microsecond=millis % 1000 * 1000)


def _iso_millis(epoch: float) -> str:
    """`2019-11-14T00:38:06.021Z`: the format of `timestamp` and of Kinesis arrival times."""
    moment = _utc(epoch)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}Z"


def _iso_seconds(epoch: float) -> str:
    """`2019-11-14T00:13:19Z`: DynamoDB arrival times, rounded down as the stream API does."""
    return f"{_utc(epoch):%Y-%m-%dT%H:%M:%SZ}"


def failure_record(batch: FailedBatch, *, with_payload: bool = False) -> dict[str, Any]:
    """AWS's invocation record for a discarded batch (ESM-SPEC.md §4.3, §8 vectors 6 and 7).

    Keys in AWS's order: `requestContext`, `responseContext` (left out when `batch.response` is
    None), `version`, `timestamp`, then `KinesisBatchInfo` or `DDBStreamBatchInfo`. The top-level
    `timestamp` has milliseconds; arrival times have milliseconds for Kinesis and whole seconds for
    DynamoDB, as recorded. `responseContext.functionError` is null when the function returned
    normally and the batch failed only by its partial batch response. `with_payload` (the S3
    object) appends `payload`: the original event as a JSON string.
    """
    record: dict[str, Any] = {
        "requestContext": {
            "requestId": batch.request_id,
            "functionArn": batch.function_arn,
            "condition": batch.condition,
            "approximateInvokeCount": batch.approximate_invoke_count,
        }
    }
    if batch.response is not None:
        record["responseContext"] = {
            "statusCode": batch.response.status_code,
            "executedVersion": batch.response.executed_version,
            "functionError": batch.response.function_error,
        }
    record["version"] = "1.0"
    record["timestamp"] = _iso_millis(batch.timestamp)
    info = batch.info
    if batch.kind is SourceKind.KINESIS:
        name, arrival = "KinesisBatchInfo", _iso_millis
    elif batch.kind is SourceKind.DYNAMODB:
        name, arrival = "DDBStreamBatchInfo", _iso_seconds
    else:
        raise ValueError(f"{batch.kind} mappings have no on-failure destinations (ESM-SPEC.md §4.4)")
    record[name] = {
        "shardId": info.shard_id,
        "startSequenceNumber": info.start_sequence,
        "endSequenceNumber": info.end_sequence,
        "approximateArrivalOfFirstRecord": arrival(info.first_arrival),
        "approximateArrivalOfLastRecord": arrival(info.last_arrival),
        "batchSize": info.batch_size,
        "streamArn": info.stream_arn,
    }
    if with_payload:
        record["payload"] = batch.event_payload.decode("utf-8")
    return record


def s3_key(batch: FailedBatch) -> str:
    """The S3 object key of a batch's record (ESM-SPEC.md §4.3, §8 vector 8).

    `aws/lambda/<UUID>/<shardId>/YYYY/MM/DD/YYYY-MM-DDTHH.MM.SS-<random UUID>`, the date and time
    being the record's `timestamp` in UTC; the random UUID keeps two records of one second apart.
    """
    moment = _utc(batch.timestamp)
    return (
        f"aws/lambda/{batch.mapping_uuid}/{batch.info.shard_id}/{moment:%Y/%m/%d}/"
        f"{moment:%Y-%m-%dT%H.%M.%S}-{uuid.uuid4()}"
    )


def _dumps(record: dict[str, Any]) -> str:
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False)


# --------------------------------------------------------------------------------------------
# Destination ARNs


@dataclass(frozen=True, slots=True)
class _Arn:
    service: str
    region: str
    account: str
    resource: str


_ARN_RE = re.compile(
    r"^arn:aws[a-zA-Z-]*:(?P<service>[a-z0-9-]+):(?P<region>[a-z0-9-]*):(?P<account>\d{12})?:(?P<resource>.+)$"
)
_NAME_RES = {
    "sqs": re.compile(r"^[A-Za-z0-9_-]{1,80}$"),
    "sns": re.compile(r"^[A-Za-z0-9_-]{1,256}$"),
}
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_KIND_TEXT = {"sqs": "SQS queue", "sns": "SNS topic"}


def _parse(arn: str) -> _Arn | str:
    """The ARN's parts, or the reason it cannot be an on-failure destination."""
    m = _ARN_RE.match(arn)
    if m is None or m["service"] not in ("sqs", "sns", "s3"):
        return "must be the ARN of an SQS queue, an SNS topic or an S3 bucket"
    parsed = _Arn(m["service"], m["region"], m["account"] or "", m["resource"])
    if parsed.service == "s3":
        if parsed.region or parsed.account or not _BUCKET_RE.match(parsed.resource):
            return "must be an S3 bucket ARN: arn:aws:s3:::BUCKET"
        return parsed
    if parsed.resource.endswith(".fifo"):
        return "FIFO queues and topics are not supported as on-failure destinations (ESM-SPEC.md §4.3)"
    kind = _KIND_TEXT[parsed.service]
    if not parsed.region or not parsed.account:
        return f"must be a full {kind} ARN with region and account: arn:aws:{parsed.service}:REGION:ACCOUNT:NAME"
    if not _NAME_RES[parsed.service].match(parsed.resource):
        return f"{parsed.resource!r} is not a valid {kind} name"
    return parsed


def destination_problem(arn: str) -> str | None:
    """Why an ARN cannot be an on-failure destination, or None if it can (the configuration rules).

    Accepted: an SQS queue, SNS topic or S3 bucket ARN (ESM-SPEC.md §4.3; Kafka topics are for
    Kafka mappings only). Refused besides: FIFO queues and topics, to which AWS fails every
    delivery, and malformed names.
    """
    parsed = _parse(arn)
    return parsed if isinstance(parsed, str) else None


# --------------------------------------------------------------------------------------------
# Senders


class DestinationSender(Protocol):
    """Delivers failure records to one destination, one attempt per call (DESIGN.md rule 6)."""

    arn: str
    """The destination's ARN, as configured (for logs and metrics)."""

    async def send(self, batch: FailedBatch) -> None:
        """Deliver the batch's failure record once; raise `esm.errors.AwsError` if it was not delivered.

        Retrying, backing off and holding the checkpoint are the caller's job.
        """
        ...


_GetClient = Callable[[], Awaitable[Any]]


class Destinations:
    """Owns the SQS, SNS and S3 clients of all destinations and builds a sender per ARN.

    An async context manager (DESIGN.md rule 7): a client is opened on first use, once per
    service, and every client opened is closed on exit, in reverse order.
    """

    def __init__(self, clients: ClientFactory) -> None:
        self._factory = clients
        self._stack = contextlib.AsyncExitStack()
        self._clients: dict[str, Any] = {}
        self._lock = asyncio.Lock()
        self._state: Literal["new", "open", "closed"] = "new"

    async def __aenter__(self) -> Destinations:
        """Start owning clients (none is opened until a sender needs it)."""
        await self._stack.__aenter__()
        self._state = "open"
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Close every client opened."""
        self._state = "closed"
        self._clients.clear()
        await self._stack.aclose()

    async def _client(self, service: str) -> Any:
        """The shared client for `service`, opened on first use (once, even under concurrent calls).

        RuntimeError outside `async with` (a programming error, never retried); a client that
        cannot be created raises a classified `AwsError`.
        """
        async with self._lock:
            if self._state != "open":
                raise RuntimeError(f"Destinations is {self._state}: use it inside `async with`")
            if service not in self._clients:
                try:
                    client = await self._stack.enter_async_context(self._factory.client(service))
                except Exception as exc:  # no region, bad endpoint: an AWS error like any other
                    raise classify("CreateClient", exc) from exc
                self._clients[service] = client
            return self._clients[service]

    def sender(self, arn: str) -> DestinationSender:
        """A sender for an SQS queue, SNS topic or S3 bucket ARN; ValueError for anything else.

        The ARN must pass `destination_problem` (so FIFO queues and topics are refused too).
        """
        parsed = _parse(arn)
        if isinstance(parsed, str):
            raise ValueError(f"{arn!r} is not an on-failure destination: {parsed}")
        get_client = functools.partial(self._client, parsed.service)
        if parsed.service == "sqs":
            return _SqsSender(arn, parsed, get_client)
        if parsed.service == "sns":
            return _SnsSender(arn, get_client)
        return _S3Sender(arn, parsed.resource, get_client)


class _SqsSender:
    """The record JSON as the message body (ESM-SPEC.md §4.3).

    The queue URL is resolved once (GetQueueUrl with the ARN's name and owner account) and again
    after a not-found, so a queue created or re-created later is found.
    """

    def __init__(self, arn: str, parsed: _Arn, get_client: _GetClient) -> None:
        self.arn = arn
        self._name = parsed.resource
        self._owner = parsed.account
        self._get_client = get_client
        self._url: str | None = None

    async def send(self, batch: FailedBatch) -> None:
        body = _dumps(failure_record(batch))
        client: SQSClient = await self._get_client()
        operation = "GetQueueUrl"
        try:
            if self._url is None:
                found = await client.get_queue_url(QueueName=self._name, QueueOwnerAWSAccountId=self._owner)
                self._url = found["QueueUrl"]
            operation = "SendMessage"
            await client.send_message(QueueUrl=self._url, MessageBody=body)
        except Exception as exc:
            error = classify(operation, exc)
            if isinstance(error, SourceNotFoundError):
                self._url = None
            raise error from exc


class _SnsSender:
    """The record JSON as the SNS `Message`; subscribers see SNS's envelope (ESM-SPEC.md §8 vector 9)."""

    def __init__(self, arn: str, get_client: _GetClient) -> None:
        self.arn = arn
        self._get_client = get_client

    async def send(self, batch: FailedBatch) -> None:
        message = _dumps(failure_record(batch))
        client: SNSClient = await self._get_client()
        try:
            await client.publish(TopicArn=self.arn, Message=message)
        except Exception as exc:
            raise classify("Publish", exc) from exc


class _S3Sender:
    """The record plus `payload` (the event as a JSON string), as JSON at `s3_key` (§4.3, §8 vector 8)."""

    def __init__(self, arn: str, bucket: str, get_client: _GetClient) -> None:
        self.arn = arn
        self._bucket = bucket
        self._get_client = get_client

    async def send(self, batch: FailedBatch) -> None:
        body = _dumps(failure_record(batch, with_payload=True)).encode()
        client: S3Client = await self._get_client()
        try:
            await client.put_object(Bucket=self._bucket, Key=s3_key(batch), Body=body, ContentType="application/json")
        except Exception as exc:
            raise classify("PutObject", exc) from exc
