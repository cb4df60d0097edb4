"""The four sources of the reliability tests, and producers that write numbered records to them.

Each source is created on its emulator (SQS and DynamoDB Streams on moto, Kinesis on kinesalite,
whose puts are never lost under concurrency, ../shared/TESTING.md), gives the event source
mapping entry and the function that reads it, and remembers every record it put: its number and
the shard (Kinesis, from PutRecords' answer) or message group (SQS FIFO) it went to. Records of a
source are numbered 0, 1, 2, … in the order they were put, and one producer writes each source,
so within a shard or group a larger number was put later.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from esm.aws import ClientFactory
from esm.config import AwsConfig
from tests.conftest import REGION, active_stream, unique
from tests.e2e.harness import create_queue
from tests.reliability.recording import HANDLER

__all__ = ["Source", "Sources", "produce", "sources"]

HANDLER_MODULE = "recorder"


@dataclass
class Source:
    """One source of a test: its mapping, its function, and what was put to it (number -> shard or group)."""

    name: str
    mapping: dict[str, Any]
    client: Any
    target: str
    """Queue URL, stream name or table name."""
    kind: str
    """"sqs", "kinesis" or "dynamodb"."""
    groups: int = 0
    """SQS FIFO: the number of message groups (record n goes to group n % groups)."""
    produced: dict[int, str] = field(default_factory=dict)

    @property
    def log_name(self) -> str:
        """The file the recorder writes this source's deliveries to."""
        return f"{self.name}.log"

    async def put(self, count: int) -> None:
        """Put the next `count` records, in one call where the API allows it, in number order."""
        first = len(self.produced)
        numbers = list(range(first, first + count))
        if self.kind == "sqs":
            for start in range(0, len(numbers), 10):
                await self._send([n for n in numbers[start : start + 10]])
        elif self.kind == "kinesis":
            for start in range(0, len(numbers), 500):
                chunk = numbers[start : start + 500]
                resp = await self.client.put_records(
                    StreamName=self.target,
                    Records=[{"Data": str(n).encode(), "PartitionKey": f"key-{n % 13}"} for n in chunk],
                )
                assert resp["FailedRecordCount"] == 0, resp
                for n, entry in zip(chunk, resp["Records"], strict=True):
                    self.produced[n] = entry["ShardId"]
        else:
            for n in numbers:
                await self.client.put_item(TableName=self.target, Item={"id": {"N": str(n)}, "v": {"S": "x" * 20}})
                self.produced[n] = ""  # moto's DynamoDB stream has one shard

    async def _send(self, numbers: list[int]) -> None:
        entries: list[dict[str, Any]] = [{"Id": str(n), "MessageBody": str(n)} for n in numbers]
        if self.groups:
            for entry, n in zip(entries, numbers, strict=True):
                entry["MessageGroupId"] = f"group-{n % self.groups}"
                entry["MessageDeduplicationId"] = str(n)
        resp = await self.client.send_message_batch(QueueUrl=self.target, Entries=entries)
        assert not resp.get("Failed"), resp
        for n in numbers:
            self.produced[n] = f"group-{n % self.groups}" if self.groups else ""


@dataclass
class Sources:
    """The sources of one test, the `aws` section that reaches their emulators, and the functions."""

    items: list[Source]
    aws: dict[str, Any]

    def functions(self, timeout: float) -> dict[str, Any]:
        """One recorder function per source (each with its own thread pool and log file)."""
        return {s.name: {"handler": f"{HANDLER_MODULE}:handle", "timeout": timeout} for s in self.items}

    def write_handler(self, folder: Path) -> None:
        """Write the recorder's module next to the configuration file."""
        (folder / f"{HANDLER_MODULE}.py").write_text(HANDLER)


@contextlib.asynccontextmanager
async def sources(
    moto_endpoint: str,
    kinesalite_endpoint: str,
    *,
    sqs: dict[str, Any] | None = None,
    fifo: dict[str, Any] | None = None,
    kinesis: dict[str, Any] | None = None,
    dynamodb: dict[str, Any] | None = None,
    visibility_timeout: int = 30,
    fifo_groups: int = 4,
    kinesis_shards: int = 4,
) -> AsyncIterator[Sources]:
    """Create the sources whose mapping settings are given (each dict: extra mapping parameters).

    Yields them with open clients (closed on exit); queues get `visibility_timeout`.
    """
    moto = ClientFactory(AwsConfig(region=REGION, endpoint_url=moto_endpoint))
    kinesalite = ClientFactory(AwsConfig(region=REGION, endpoint_url=kinesalite_endpoint))
    items: list[Source] = []
    async with contextlib.AsyncExitStack() as stack:
        if sqs is not None or fifo is not None:
            sqs_client = await stack.enter_async_context(moto.client("sqs"))
            for name, settings, groups in (("sqs", sqs, 0), ("fifo", fifo, fifo_groups)):
                if settings is None:
                    continue
                queue = unique(f"reliability-{name}") + (".fifo" if groups else "")
                url, arn = await create_queue(sqs_client, queue, VisibilityTimeout=visibility_timeout)
                mapping = {"EventSourceArn": arn, "FunctionName": name, **settings}
                items.append(Source(name, mapping, sqs_client, url, "sqs", groups=groups))
        if kinesis is not None:
            kinesis_client = await stack.enter_async_context(kinesalite.client("kinesis"))
            stream = unique("reliability")
            await kinesis_client.create_stream(StreamName=stream, ShardCount=kinesis_shards)
            arn = (await active_stream(kinesis_client, stream, within=20))["StreamARN"]
            mapping = {"EventSourceArn": arn, "FunctionName": "kinesis", "StartingPosition": "TRIM_HORIZON", **kinesis}
            items.append(Source("kinesis", mapping, kinesis_client, stream, "kinesis"))
        if dynamodb is not None:
            ddb = await stack.enter_async_context(moto.client("dynamodb"))
            table = unique("reliability")
            await ddb.create_table(
                TableName=table,
                KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "N"}],
                BillingMode="PAY_PER_REQUEST",
                StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"},
            )
            arn = (await ddb.describe_table(TableName=table))["Table"]["LatestStreamArn"]
            mapping = {
                "EventSourceArn": arn,
                "FunctionName": "dynamodb",
                "StartingPosition": "TRIM_HORIZON",
                **dynamodb,
            }
            items.append(Source("dynamodb", mapping, ddb, table, "dynamodb"))
        aws = {"region": REGION, "endpoint_url": moto_endpoint, "endpoints": {"kinesis": kinesalite_endpoint}}
        yield Sources(items, aws)


async def produce(source: Source, per_second: float, stop: asyncio.Event, tick: float = 0.2) -> None:
    """Put records at a steady rate until `stop` is set (each tick catches up to rate x elapsed time)."""
    started = time.monotonic()
    while not stop.is_set():
        due = int((time.monotonic() - started) * per_second) - len(source.produced)
        if due > 0:
            await source.put(due)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), tick)
