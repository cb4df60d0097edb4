"""Bad records through a running daemon: not JSON, not UTF-8, binary, at the size limits (issue 7, point 4).

The real daemon (`esm.daemon.Daemon`, in-process) reads moto (SQS, DynamoDB Streams) and
kinesalite (Kinesis, which enforces AWS's 1 MiB record limit) over HTTP. Each record reaches the
function exactly as AWS would send it: an SQS body is the string sent, whatever it holds; Kinesis
data and DynamoDB binary attributes are the base64 of the bytes, whatever they are; and a batch
is cut before its serialized event passes Lambda's 6 MB (6,291,456 bytes), measured here on the
bytes an HTTP function receives. After the bad records a normal one still arrives, the health
endpoints say ok, and the daemon stops with exit 0: no poller crashed.

Not repeated here: the DynamoDB top-level binary attribute (tests/e2e/test_stream_mappings.py)
and the 6 MB cut on a scripted stream (tests/component/test_shard_consumer.py).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from esm.aws import ClientFactory
from esm.config import AwsConfig
from esm.events import EVENT_LIMIT_BYTES
from esm.testing import serve_app
from tests.conftest import REGION, active_stream, unique
from tests.e2e.harness import RECORDER, create_queue, queue_counts, running_daemon, wait_for

SQS_CLASSIC_LIMIT = 256 * 1024  # 262,144 bytes: SQS's message size limit until 2025
SQS_LIMIT = 1024 * 1024  # 1,048,576 bytes: SQS's message size limit since August 2025 (moto's too)
KINESIS_LIMIT = 1024 * 1024  # 1 MiB of data per record
FAST_STREAMS = {"idle_poll_interval": 0.05, "discovery_interval": 1, "retry_delay": {"initial": 0.05, "maximum": 0.2}}

ODD_BODIES = [
    '{"order": 1, "items": [',  # JSON cut short
    "NaN",  # JSON-looking, not JSON
    "plain text, not JSON at all",
    "   \t  ",  # whitespace only
    "é😀\u202e\u200b\ufeff mixed scripts: Ελληνικά, 日本語, العربية",  # odd unicode
    "<xml attr='1'>&amp; \"quotes\" & ampersands</xml>",  # what the SQS XML protocol must escape
    "line one\nline two\r\nline three\ttab",
    "\U0010ffff\ue000 edges of Unicode",
    '{"nested": {"json": "is still a string"}}',
]
BINARY_ATTRIBUTE = bytes(range(256))  # every byte value: certainly not UTF-8

# The test's own aiobotocore client sends the 1 MiB messages and records; aiohttp warns that a body
# that large is sent in one piece. esm itself never sends them (it only receives them).
LARGE_REQUESTS = pytest.mark.filterwarnings("ignore:Sending a large body directly with raw bytes:ResourceWarning")


@pytest.fixture(autouse=True)
def _fresh_recorder() -> None:
    RECORDER.calls.clear()
    RECORDER.behaviours.clear()


@contextlib.asynccontextmanager
async def http_function() -> AsyncIterator[tuple[list[bytes], str]]:
    """An HTTP function on a free port that keeps every request body it receives (up to 16 MB)."""
    bodies: list[bytes] = []

    async def invoke(request: web.Request) -> web.Response:
        bodies.append(await request.read())
        return web.json_response(None)

    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_post("/invoke", invoke)
    async with serve_app(app) as url:
        yield bodies, f"{url}/invoke"


async def healthy(port: int | None) -> None:
    """/healthz and /readyz both answer 200: every mapping's poller is alive and reached its source."""
    async with aiohttp.ClientSession() as session:
        for path in ("/healthz", "/readyz"):
            async with session.get(f"http://127.0.0.1:{port}{path}") as response:
                assert response.status == 200, f"{path}: {await response.text()}"


def records_of(bodies: list[bytes]) -> list[dict[str, Any]]:
    """Every record of every event an HTTP function received, in arrival order."""
    return [r for body in bodies for r in json.loads(body)["Records"]]


class TestSqs:
    """SQS bodies are delivered as the exact string sent; batches stop short of 6 MB."""

    @LARGE_REQUESTS
    async def test_odd_and_maximal_bodies_arrive_unchanged(self, tmp_path: Path, moto_endpoint: str, sqs: Any) -> None:
        """Bodies that are not JSON, odd unicode, or exactly 256 KiB and 1 MiB arrive as sent, with SQS's MD5;
        a binary attribute arrives in base64; every message is deleted and a later one still arrives."""
        url, arn = await create_queue(sqs, unique("bad-bodies"))
        big = ["é" * (SQS_CLASSIC_LIMIT // 2), "x" * (SQS_LIMIT - 4) + "😀"]  # 262,144 and 1,048,576 UTF-8 bytes
        assert [len(b.encode()) for b in big] == [SQS_CLASSIC_LIMIT, SQS_LIMIT]
        bodies = [*ODD_BODIES, *big]
        config = {
            "aws": {"region": REGION, "endpoint_url": moto_endpoint},
            "functions": {"f": {"handler": "tests.e2e.handlers:record", "timeout": 10}},
            "event_source_mappings": [{"EventSourceArn": arn, "FunctionName": "f"}],
        }
        async with running_daemon(tmp_path, config) as daemon:
            for body in bodies:
                await sqs.send_message(
                    QueueUrl=url,
                    MessageBody=body,
                    MessageAttributes={"Blob": {"DataType": "Binary", "BinaryValue": BINARY_ATTRIBUTE}},
                )
            await wait_for(lambda: len(RECORDER.bodies_of("f")) >= len(bodies), within=30)
            await sqs.send_message(QueueUrl=url, MessageBody="a normal message after the bad ones")
            await wait_for(lambda: "a normal message after the bad ones" in RECORDER.bodies_of("f"))
            await healthy(daemon.http_port)
            await wait_for_empty(sqs, url)
        records = [r for c in RECORDER.calls_of("f") for r in c.event["Records"]]
        by_body = {r["body"]: r for r in records}
        assert set(by_body) == {*bodies, "a normal message after the bad ones"}
        for body in bodies:
            record = by_body[body]
            assert isinstance(record["body"], str)
            assert record["md5OfBody"] == hashlib.md5(body.encode()).hexdigest()  # noqa: S324 - SQS's checksum
            assert base64.b64decode(record["messageAttributes"]["Blob"]["binaryValue"]) == BINARY_ATTRIBUTE
            assert record["messageAttributes"]["Blob"]["dataType"] == "Binary"

    @LARGE_REQUESTS
    async def test_batches_of_1_mib_messages_stop_short_of_6_mb(
        self, tmp_path: Path, moto_endpoint: str, sqs: Any
    ) -> None:
        """12 messages of 1 MiB with BatchSize 100: a receive of ten (10 MB) is cut into events of at most
        6,291,456 bytes, five messages each (six would pass the limit), the rest carried over; each arrives once."""
        url, arn = await create_queue(sqs, unique("bad-6mb"))
        bodies = [f"{i:04d}" + "x" * (SQS_LIMIT - 4) for i in range(12)]
        async with http_function() as (received, function_url):
            config = {
                "aws": {"region": REGION, "endpoint_url": moto_endpoint},
                "functions": {"f": {"url": function_url, "timeout": 30}},
                "event_source_mappings": [
                    {
                        "EventSourceArn": arn,
                        "FunctionName": "f",
                        "BatchSize": 100,
                        "MaximumBatchingWindowInSeconds": 1,
                        "ScalingConfig": {"MaximumConcurrency": 2},
                    }
                ],
            }
            for body in bodies:
                await sqs.send_message(QueueUrl=url, MessageBody=body)
            async with running_daemon(tmp_path, config):
                await wait_for(lambda: len(records_of(received)) >= len(bodies), within=60)
        sizes = [len(b) for b in received]
        counts = [len(json.loads(b)["Records"]) for b in received]
        assert max(sizes) <= EVENT_LIMIT_BYTES, sizes
        assert max(counts) == 5, f"five 1 MiB messages fit an event, six do not: {counts}"
        assert sorted(r["body"] for r in records_of(received)) == bodies


async def wait_for_empty(sqs: Any, url: str) -> None:
    """Wait until the queue holds no message, visible or in flight (all were deleted)."""
    for _ in range(200):
        if await queue_counts(sqs, url) == (0, 0):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"messages left in the queue: {await queue_counts(sqs, url)}")


class TestKinesis:
    """Kinesis data is delivered as the base64 of whatever bytes were put, up to 1 MiB; events stay within 6 MB."""

    @LARGE_REQUESTS
    async def test_binary_and_1_mib_records(self, tmp_path: Path, kinesalite_endpoint: str, moto_endpoint: str) -> None:
        """Records that are not UTF-8, not JSON, empty-ish, and seven of exactly 1 MiB arrive in order as their
        base64; every event is at most 6,291,456 bytes, so the 1 MiB records come at most four at a time."""
        name = unique("bad-stream")
        small = [b"\xff\xfe\x00\x80 not UTF-8", b"\x00", b'{"unterminated": ', bytes(range(255, -1, -1))]
        large = [bytes([i]) + os.urandom(KINESIS_LIMIT - 1) for i in range(7)]
        payloads = [*small, *large, b"a normal record after the bad ones"]
        async with ClientFactory(AwsConfig(region=REGION, endpoint_url=kinesalite_endpoint)).client("kinesis") as k:
            await k.create_stream(StreamName=name, ShardCount=1)
            await active_stream(k, name, within=5)
            arn = (await k.describe_stream_summary(StreamName=name))["StreamDescriptionSummary"]["StreamARN"]
            for i, data in enumerate(payloads):
                await k.put_record(StreamName=name, Data=data, PartitionKey=f"é😀-{i % 2}")
        async with http_function() as (received, function_url):
            config = {
                "aws": {"region": REGION, "endpoint_url": moto_endpoint, "endpoints": {"kinesis": kinesalite_endpoint}},
                "state": {"sqlite": str(tmp_path / "state.db")},
                "streams": FAST_STREAMS,
                "functions": {"f": {"url": function_url, "timeout": 30}},
                "event_source_mappings": [
                    {
                        "EventSourceArn": arn,
                        "FunctionName": "f",
                        "StartingPosition": "TRIM_HORIZON",
                        "BatchSize": 100,
                        "MaximumBatchingWindowInSeconds": 1,
                    }
                ],
            }
            async with running_daemon(tmp_path, config) as daemon:
                await wait_for(lambda: len(records_of(received)) >= len(payloads), within=60)
                await healthy(daemon.http_port)
        records = records_of(received)
        assert [base64.b64decode(r["kinesis"]["data"]) for r in records] == payloads
        assert [r["kinesis"]["partitionKey"] for r in records] == [f"é😀-{i % 2}" for i in range(len(payloads))]
        sizes = [len(b) for b in received]
        assert max(sizes) <= EVENT_LIMIT_BYTES
        large_per_event = [
            sum(len(r["kinesis"]["data"]) > KINESIS_LIMIT for r in json.loads(b)["Records"]) for b in received
        ]
        assert max(large_per_event) == 4, f"four 1 MiB records (5.6 MB in base64) fit an event, five do not: {sizes}"


class TestDynamoDb:
    """DynamoDB binary values arrive in base64 wherever they sit: sets, maps, lists, items near 400 KB.

    Binary *keys* are left to the builder's unit tests: moto's stream records carry a binary key in
    `Keys` base64-encoded twice (its `NewImage` is right), so an end-to-end check would test moto.
    """

    async def test_binary_sets_nested_and_large_items(
        self, tmp_path: Path, moto_endpoint: str, clients: ClientFactory
    ) -> None:
        """A binary set, blobs inside maps and lists, and a 390 KB blob arrive as the base64 of their bytes,
        in NewImage and OldImage alike; a normal item still arrives afterwards."""
        table = unique("bad-table")
        async with clients.client("dynamodb") as dynamodb:
            await self._run(tmp_path, moto_endpoint, dynamodb, table)

    async def _run(self, tmp_path: Path, moto_endpoint: str, dynamodb: Any, table: str) -> None:
        await dynamodb.create_table(
            TableName=table,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        )
        arn = (await dynamodb.describe_table(TableName=table))["Table"]["LatestStreamArn"]
        key = "é😀\u202e key"
        blob = os.urandom(390 * 1024)
        item = {
            "pk": {"S": key},
            "blob": {"B": b"\xff\x00binary \x80"},
            "set": {"BS": [b"\x00", b"\xff\xfe", b"not utf-8 \xc3\x28"]},
            "nested": {"M": {"inner": {"B": b"\x80\x81"}, "list": {"L": [{"B": b"\x01"}, {"S": "é😀"}]}}},
            "large": {"B": blob},
        }
        config = {
            "aws": {"region": REGION, "endpoint_url": moto_endpoint},
            "state": {"sqlite": str(tmp_path / "state.db")},
            "streams": FAST_STREAMS,
            "functions": {"f": {"handler": "tests.e2e.handlers:record", "timeout": 10}},
            "event_source_mappings": [{"EventSourceArn": arn, "FunctionName": "f", "StartingPosition": "TRIM_HORIZON"}],
        }
        async with running_daemon(tmp_path, config) as daemon:
            await dynamodb.put_item(TableName=table, Item=item)
            await dynamodb.put_item(TableName=table, Item={**item, "large": {"B": blob[::-1]}})
            await dynamodb.put_item(TableName=table, Item={"pk": {"S": "normal"}})
            await wait_for(lambda: sum(len(c.event["Records"]) for c in RECORDER.calls_of("f")) >= 3, within=30)
            await healthy(daemon.http_port)
        insert, modify, normal = [r for c in RECORDER.calls_of("f") for r in c.event["Records"]]
        b64 = base64.b64encode
        assert insert["dynamodb"]["Keys"] == {"pk": {"S": key}}
        new = insert["dynamodb"]["NewImage"]
        assert base64.b64decode(new["blob"]["B"]) == b"\xff\x00binary \x80"
        assert [base64.b64decode(v) for v in new["set"]["BS"]] == item["set"]["BS"]
        assert base64.b64decode(new["nested"]["M"]["inner"]["B"]) == b"\x80\x81"
        assert new["nested"]["M"]["list"]["L"] == [{"B": b64(b"\x01").decode()}, {"S": "é😀"}]
        assert base64.b64decode(new["large"]["B"]) == blob
        assert base64.b64decode(modify["dynamodb"]["OldImage"]["large"]["B"]) == blob
        assert base64.b64decode(modify["dynamodb"]["NewImage"]["large"]["B"]) == blob[::-1]
        assert (modify["eventName"], normal["eventName"]) == ("MODIFY", "INSERT")
        assert normal["dynamodb"]["Keys"] == {"pk": {"S": "normal"}}
