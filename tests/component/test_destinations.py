"""On-failure destination senders against a real moto server over HTTP (ESM-SPEC.md §4.3, §8 vectors 8 and 9).

Each test arranges queues, topics and buckets with raw aiobotocore clients, sends one failure record
through `Destinations`, and reads back what arrived: the SQS body, the SNS envelope an SQS
subscriber sees, the S3 object and its key. Failures must surface as classified `AwsError`s, since
the shard consumer retries exactly those.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from esm.arns import SourceKind
from esm.aws import ClientFactory
from esm.config import AwsConfig
from esm.destinations import BatchInfo, Destinations, FailedBatch, failure_record
from esm.errors import FatalAwsError, RetriableAwsError, SourceNotFoundError
from esm.targets.base import InvokeResult
from tests.conftest import ACCOUNT, REGION, unique

MAPPING_UUID = "0b5f8e7c-1d2a-4e3f-9a8b-7c6d5e4f3a2b"
EVENT = b'{"Records":[{"kinesis":{"data":"aGVsbG8="},"eventSource":"aws:kinesis","note":"caf\xc3\xa9"}]}'
RECORD_KEYS = ["requestContext", "responseContext", "version", "timestamp", "KinesisBatchInfo"]


def failed_batch(kind: SourceKind = SourceKind.KINESIS) -> FailedBatch:
    """A batch of two records discarded after its retries, from shard 0 of a Kinesis stream."""
    return FailedBatch(
        kind=kind,
        mapping_uuid=MAPPING_UUID,
        condition="RetryAttemptsExhausted",
        request_id="6b1c3f0e-8f4d-4c1a-9e2b-5d7a8c9b0e1f",
        function_arn=f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:orders",
        approximate_invoke_count=3,
        response=InvokeResult("Unhandled", b'{"errorMessage":"boom"}'),
        info=BatchInfo(
            shard_id="shardId-000000000000",
            start_sequence="49590338271490256608559692538361571095921575989136588898",
            end_sequence="49590338271490256608559692540925702759324208523137515618",
            first_arrival=1764072000.123,
            last_arrival=1764072001.456,
            batch_size=2,
            stream_arn=f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/clicks",
        ),
        timestamp=1764072030.789,
        event_payload=EVENT,
    )


class CountingFactory(ClientFactory):
    """A ClientFactory that records which clients were opened and which operations they called."""

    def __init__(self, aws: AwsConfig) -> None:
        super().__init__(aws)
        self.opened: list[str] = []
        self.calls: Counter[str] = Counter()

    def client(self, service: str, **kwargs: Any) -> contextlib.AbstractAsyncContextManager[Any]:
        """The parent's client, counted, with a hook counting its API calls."""
        return self._counted(service, **kwargs)

    @contextlib.asynccontextmanager
    async def _counted(self, service: str, **kwargs: Any) -> AsyncIterator[Any]:
        self.opened.append(service)
        async with super().client(service, **kwargs) as client:
            client.meta.events.register("before-call", self._count)
            yield client

    def _count(self, model: Any, **_: Any) -> None:
        self.calls[model.name] += 1


async def create_queue(sqs: Any, name: str | None = None) -> tuple[str, str]:
    """A fresh standard queue: (url, arn)."""
    url = (await sqs.create_queue(QueueName=name or unique("dest")))["QueueUrl"]
    attributes = await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return url, attributes["Attributes"]["QueueArn"]


async def receive_one(sqs: Any, url: str) -> dict[str, Any]:
    """The one message waiting on the queue (fails if there is none or more)."""
    response = await sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
    messages = response.get("Messages", [])
    assert len(messages) == 1, messages
    message: dict[str, Any] = messages[0]
    return message


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


@pytest.fixture
def counting(aws_config: AwsConfig) -> CountingFactory:
    """A counting client factory for the moto server."""
    return CountingFactory(aws_config)


class TestSqsDestination:
    """SQS: the failure record JSON is the message body (ESM-SPEC.md §4.3)."""

    async def test_body_is_the_failure_record(self, clients: ClientFactory, sqs: Any) -> None:
        """The body parses to exactly `failure_record(batch)`, in AWS's key order, without payload."""
        url, arn = await create_queue(sqs)
        batch = failed_batch()
        async with Destinations(clients) as destinations:
            sender = destinations.sender(arn)
            assert sender.arn == arn
            await sender.send(batch)
        body = json.loads((await receive_one(sqs, url))["Body"])
        assert body == failure_record(batch)
        assert list(body) == RECORD_KEYS
        assert list(body["KinesisBatchInfo"]) == list(failure_record(batch)["KinesisBatchInfo"])
        assert "payload" not in body

    async def test_dynamodb_record(self, clients: ClientFactory, sqs: Any) -> None:
        """A DynamoDB batch arrives with `DDBStreamBatchInfo` and second-precision arrival times."""
        url, arn = await create_queue(sqs)
        async with Destinations(clients) as destinations:
            await destinations.sender(arn).send(failed_batch(SourceKind.DYNAMODB))
        body = json.loads((await receive_one(sqs, url))["Body"])
        assert body["DDBStreamBatchInfo"]["approximateArrivalOfFirstRecord"] == "2025-11-25T12:00:00Z"

    async def test_queue_url_is_resolved_once(self, counting: CountingFactory, sqs: Any) -> None:
        """Three sends make one GetQueueUrl call and three SendMessage calls."""
        _, arn = await create_queue(sqs)
        async with Destinations(counting) as destinations:
            sender = destinations.sender(arn)
            for _ in range(3):
                await sender.send(failed_batch())
        assert counting.calls["GetQueueUrl"] == 1
        assert counting.calls["SendMessage"] == 3

    async def test_a_queue_created_after_a_failure_is_found(self, clients: ClientFactory, sqs: Any) -> None:
        """A not-found raises SourceNotFoundError; once the queue exists, the next attempt delivers."""
        name = unique("late")
        arn = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{name}"
        async with Destinations(clients) as destinations:
            sender = destinations.sender(arn)
            with pytest.raises(SourceNotFoundError) as raised:
                await sender.send(failed_batch())
            assert raised.value.operation == "GetQueueUrl"
            url, _ = await create_queue(sqs, name)
            await sender.send(failed_batch())
        assert json.loads((await receive_one(sqs, url))["Body"])["requestContext"]["approximateInvokeCount"] == 3

    async def test_a_deleted_queue_is_resolved_again(self, counting: CountingFactory, sqs: Any) -> None:
        """After SendMessage finds the queue gone, the URL is looked up again on the next attempt."""
        name = unique("gone")
        url, arn = await create_queue(sqs, name)
        async with Destinations(counting) as destinations:
            sender = destinations.sender(arn)
            await sender.send(failed_batch())
            await sqs.delete_queue(QueueUrl=url)
            with pytest.raises(SourceNotFoundError) as raised:
                await sender.send(failed_batch())
            assert raised.value.operation == "SendMessage"
            url, _ = await create_queue(sqs, name)
            await sender.send(failed_batch())
        assert counting.calls["GetQueueUrl"] == 2
        await receive_one(sqs, url)


class TestSnsDestination:
    """SNS: the record JSON is the SNS `Message`; an SQS subscriber sees SNS's envelope (§8 vector 9)."""

    async def test_subscriber_sees_the_envelope_around_the_record(
        self, clients: ClientFactory, sqs: Any, sns: Any
    ) -> None:
        """The envelope is a Notification from the topic whose `Message` is the record as a JSON string."""
        topic = (await sns.create_topic(Name=unique("failures")))["TopicArn"]
        url, queue_arn = await create_queue(sqs)
        await sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
        batch = failed_batch()
        async with Destinations(clients) as destinations:
            await destinations.sender(topic).send(batch)
        envelope = json.loads((await receive_one(sqs, url))["Body"])
        assert envelope["Type"] == "Notification"
        assert envelope["TopicArn"] == topic
        assert re.fullmatch(r"[0-9a-f-]{36}", envelope["MessageId"])
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", envelope["Timestamp"])
        assert {"Signature", "SignatureVersion", "SigningCertURL", "UnsubscribeURL"} <= set(envelope)
        assert isinstance(envelope["Message"], str)
        message = json.loads(envelope["Message"])
        assert message == failure_record(batch)
        assert list(message) == RECORD_KEYS


class TestS3Destination:
    """S3: the record plus the event as `payload`, at AWS's key layout (§4.3, §8 vector 8)."""

    async def test_object_holds_the_record_and_the_payload_string(self, clients: ClientFactory, s3: Any) -> None:
        """One JSON object under `aws/lambda/<uuid>/<shard>/YYYY/MM/DD/`, payload an escaped JSON string."""
        bucket = unique("failures")
        await s3.create_bucket(Bucket=bucket)
        batch = failed_batch()
        async with Destinations(clients) as destinations:
            await destinations.sender(f"arn:aws:s3:::{bucket}").send(batch)
        listed = await s3.list_objects_v2(Bucket=bucket)
        [key] = [o["Key"] for o in listed["Contents"]]
        assert re.fullmatch(
            rf"aws/lambda/{MAPPING_UUID}/shardId-000000000000/2025/11/25/2025-11-25T12\.00\.30-[0-9a-f-]{{36}}", key
        )
        obj = await s3.get_object(Bucket=bucket, Key=key)
        assert obj["ContentType"] == "application/json"
        async with obj["Body"] as stream:
            document = json.loads(await stream.read())
        assert list(document) == [*RECORD_KEYS, "payload"]
        assert document == failure_record(batch, with_payload=True)
        assert isinstance(document["payload"], str)
        assert document["payload"].encode() == EVENT


class TestClients:
    """Clients are opened lazily, once per service, and only inside `async with`."""

    async def test_nothing_is_opened_until_a_send(self, counting: CountingFactory, sqs: Any) -> None:
        """Building senders opens no client; the first send opens the one service it needs."""
        _, arn = await create_queue(sqs)
        async with Destinations(counting) as destinations:
            sender = destinations.sender(arn)
            destinations.sender("arn:aws:s3:::some-bucket")
            destinations.sender(f"arn:aws:sns:{REGION}:{ACCOUNT}:some-topic")
            assert counting.opened == []
            await sender.send(failed_batch())
        assert counting.opened == ["sqs"]

    async def test_concurrent_first_sends_share_one_client(self, counting: CountingFactory, sqs: Any) -> None:
        """Senders racing to the first send of a service still open a single client."""
        arns = [(await create_queue(sqs))[1] for _ in range(4)]
        async with Destinations(counting) as destinations:
            senders = [destinations.sender(arn) for arn in arns]
            await asyncio.gather(*(s.send(failed_batch()) for s in senders))
        assert counting.opened == ["sqs"]
        assert counting.calls["SendMessage"] == 4

    async def test_sending_outside_the_context_is_a_programming_error(self, clients: ClientFactory) -> None:
        """A send before `async with` or after it raises RuntimeError, never a retriable AwsError."""
        destinations = Destinations(clients)
        sender = destinations.sender("arn:aws:s3:::some-bucket")
        with pytest.raises(RuntimeError, match="async with"):
            await sender.send(failed_batch())
        async with destinations:
            pass
        with pytest.raises(RuntimeError, match="closed"):
            await sender.send(failed_batch())

    @pytest.mark.parametrize(
        "arn",
        [
            f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:f",
            f"arn:aws:sqs:{REGION}:{ACCOUNT}:failed.fifo",
            f"arn:aws:sns:{REGION}:{ACCOUNT}:failed.fifo",
            "",
        ],
    )
    def test_other_arns_have_no_sender(self, clients: ClientFactory, arn: str) -> None:
        """Only standard SQS queues, SNS topics and S3 buckets get a sender; the error says why."""
        with pytest.raises(ValueError, match="is not an on-failure destination"):
            Destinations(clients).sender(arn)


class TestDeliveryErrors:
    """A failed delivery raises a classified AwsError, so the caller can retry and hold the checkpoint."""

    async def test_missing_queue(self, clients: ClientFactory) -> None:
        """A queue that does not exist: SourceNotFoundError."""
        async with Destinations(clients) as destinations:
            with pytest.raises(SourceNotFoundError):
                await destinations.sender(f"arn:aws:sqs:{REGION}:{ACCOUNT}:{unique('none')}").send(failed_batch())

    async def test_missing_topic(self, clients: ClientFactory) -> None:
        """A topic that does not exist: a fatal (not retriable) AwsError for Publish."""
        async with Destinations(clients) as destinations:
            with pytest.raises(FatalAwsError) as raised:
                await destinations.sender(f"arn:aws:sns:{REGION}:{ACCOUNT}:{unique('none')}").send(failed_batch())
        assert raised.value.operation == "Publish"
        assert not raised.value.retriable

    async def test_missing_bucket(self, clients: ClientFactory) -> None:
        """A bucket that does not exist: FatalAwsError `NoSuchBucket` for PutObject."""
        async with Destinations(clients) as destinations:
            with pytest.raises(FatalAwsError) as raised:
                await destinations.sender(f"arn:aws:s3:::{unique('none')}").send(failed_batch())
        assert (raised.value.operation, raised.value.code) == ("PutObject", "NoSuchBucket")

    async def test_unreachable_endpoint_is_retriable(self) -> None:
        """Nothing listening at the endpoint: a RetriableAwsError, for every destination type."""
        with socket_without_listener() as port:
            factory = ClientFactory(AwsConfig(region=REGION, endpoint_url=f"http://127.0.0.1:{port}"))
            async with Destinations(factory) as destinations:
                for arn in (
                    f"arn:aws:sqs:{REGION}:{ACCOUNT}:q",
                    f"arn:aws:sns:{REGION}:{ACCOUNT}:t",
                    "arn:aws:s3:::some-bucket",
                ):
                    with pytest.raises(RetriableAwsError):
                        await destinations.sender(arn).send(failed_batch())


@contextlib.contextmanager
def socket_without_listener() -> Iterator[int]:
    """A loopback port that is bound (so nobody else takes it) but refuses connections."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]
