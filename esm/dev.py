"""`esm dev`: the same engine against an embedded AWS emulator (moto) started in-process.

It starts moto on 127.0.0.1 (port `dev.port`, else the port of `aws.endpoint_url`, else a free
one), creates every queue the file names — mapping sources, `dev.queues`, and the dead-letter
queues their redrive policies point to — every Kinesis stream (`dev.streams` for shard counts),
every DynamoDB table with its stream (`dev.tables` for keys and view type), and every on-failure
destination (queue, topic, bucket), and then runs the daemon exactly as `esm run` does.
No AWS account is needed; dummy credentials are used for the emulator only.

A DynamoDB stream's ARN ends in a label the service picks when the table is created, so the
label in the file cannot match a fresh emulator's: `esm dev` maps the file's ARN to the table's
new stream, keeping the mapping's UUID (and so its checkpoints) as the file's ARN gives it.

`esm send` (also here) puts messages on a queue through the configured endpoint, so the README
can show a message reaching a handler without the AWS CLI.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from typing import Any
from urllib.parse import urlparse

from esm.arns import SourceKind, parse_source_arn
from esm.aws import ClientFactory
from esm.config import AwsConfig, Config, DevQueue
from esm.config.models import DevStream, DevTable
from esm.daemon import Daemon, exit_past_abandoned_threads
from esm.logging import get_logger

__all__ = ["create_queues", "create_streams", "put_records", "run_dev", "send_messages"]

_DEV_REGION = "us-east-1"


def _dummy_credentials() -> None:
    # The emulator accepts any credentials; never overwrite real ones a user has set.
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "esm-dev")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "esm-dev")


def _queue_plan(config: Config) -> dict[str, DevQueue]:
    """Every queue to create, dead-letter queues first so redrive policies can point at them."""
    spec = config.spec
    wanted: dict[str, DevQueue] = {}
    for m in spec.event_source_mappings:
        if m.source.kind.value == "sqs":
            wanted.setdefault(m.source.queue_name, spec.dev.queues.get(m.source.queue_name, DevQueue()))
    for name, q in spec.dev.queues.items():
        wanted.setdefault(name, q)
    plan: dict[str, DevQueue] = {}
    for q in wanted.values():
        if q.RedrivePolicy and "deadLetterTargetArn" in q.RedrivePolicy:
            dlq = parse_source_arn(str(q.RedrivePolicy["deadLetterTargetArn"])).queue_name
            plan.setdefault(dlq, spec.dev.queues.get(dlq, DevQueue()))
    for name, q in wanted.items():
        plan.setdefault(name, q)
    return plan


async def create_queues(config: Config) -> list[str]:
    """Create the queues the configuration names on its endpoint; returns their URLs."""
    urls = []
    async with ClientFactory(config.spec.aws, default_region=_DEV_REGION).client("sqs") as sqs:
        for name, q in _queue_plan(config).items():
            attrs: dict[str, str] = {"VisibilityTimeout": str(q.VisibilityTimeout)}
            if name.endswith(".fifo"):
                attrs["FifoQueue"] = "true"
                if q.ContentBasedDeduplication is not None:
                    attrs["ContentBasedDeduplication"] = str(q.ContentBasedDeduplication).lower()
            if q.RedrivePolicy:
                attrs["RedrivePolicy"] = json.dumps(q.RedrivePolicy)
            resp = await sqs.create_queue(QueueName=name, Attributes=attrs)  # type: ignore[arg-type]
            urls.append(resp["QueueUrl"])
    return urls


async def create_streams(config: Config) -> Config:
    """Create the streams, tables and destinations the mappings name; return the config to run.

    DynamoDB stream ARNs are replaced by the created tables' stream ARNs, each mapping keeping
    the UUID its configured ARN gives it.
    """
    spec = config.spec
    factory = ClientFactory(spec.aws, default_region=_DEV_REGION)
    streams = dict(spec.dev.streams)
    tables = dict(spec.dev.tables)
    destinations: set[str] = set()
    for m in spec.event_source_mappings:
        if m.source.kind is SourceKind.KINESIS:
            streams.setdefault(m.source.resource.split("/")[1], DevStream())
        elif m.source.kind is SourceKind.DYNAMODB:
            tables.setdefault(m.source.resource.split("/")[1], DevTable())
        if m.on_failure_destination:
            destinations.add(m.on_failure_destination)
    stream_arns: dict[str, str] = {}
    async with factory.client("kinesis") as kinesis:
        existing = set((await kinesis.list_streams())["StreamNames"])
        for name, stream in streams.items():
            if name not in existing:
                await kinesis.create_stream(StreamName=name, ShardCount=stream.shards)
    async with factory.client("dynamodb") as dynamodb:
        existing = set((await dynamodb.list_tables())["TableNames"])
        for name, table in tables.items():
            if name not in existing:
                keys = [(table.partition_key, "HASH")] + ([(table.sort_key, "RANGE")] if table.sort_key else [])
                await dynamodb.create_table(
                    TableName=name,
                    KeySchema=[{"AttributeName": k, "KeyType": t} for k, t in keys],
                    AttributeDefinitions=[{"AttributeName": k, "AttributeType": "S"} for k, _ in keys],
                    BillingMode="PAY_PER_REQUEST",
                    StreamSpecification={"StreamEnabled": True, "StreamViewType": table.stream_view_type},
                )
            described = (await dynamodb.describe_table(TableName=name))["Table"]
            stream_arns[name] = described["LatestStreamArn"]
    for arn in sorted(destinations):
        service, resource = arn.split(":")[2], arn.split(":")[-1]
        async with factory.client(service) as client:
            if service == "sqs":
                await client.create_queue(QueueName=resource)
            elif service == "sns":
                await client.create_topic(Name=resource)
            elif service == "s3":
                await client.create_bucket(Bucket=resource)
    mappings = []
    for m in spec.event_source_mappings:
        if m.source.kind is SourceKind.DYNAMODB:
            actual = stream_arns[m.source.resource.split("/")[1]]
            if actual != m.EventSourceArn:
                m = m.model_copy(update={"EventSourceArn": actual, "UUID": m.uuid})
        mappings.append(m)
    return Config(config.path, spec.model_copy(update={"event_source_mappings": mappings}))


def _emulator_port(config: Config) -> int:
    if config.spec.dev.port:
        return config.spec.dev.port
    if config.spec.aws.endpoint_url:
        return urlparse(config.spec.aws.endpoint_url).port or 0
    return 0


def run_dev(config: Config) -> int:
    """Start moto, create the resources, run the daemon; returns the daemon's exit code."""
    from moto.server import ThreadedMotoServer

    _dummy_credentials()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's per-request access log
    log = get_logger(mode="dev")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=_emulator_port(config), verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        aws = AwsConfig(region=config.spec.aws.region or _DEV_REGION, endpoint_url=endpoint)
        dev_config = Config(config.path, config.spec.model_copy(update={"aws": aws}))

        async def main() -> int:
            urls = await create_queues(dev_config)
            running = await create_streams(dev_config)
            log.info(
                "emulator_started",
                endpoint=endpoint,
                queues=urls,
                streams=[m.EventSourceArn for m in running.spec.event_source_mappings if m.source.kind.value != "sqs"],
            )
            return await Daemon(running).run_with_signals()

        code = asyncio.run(main())
    finally:
        server.stop()
    exit_past_abandoned_threads(code)
    return code


def _send_aws(config: Config) -> AwsConfig:
    """The `aws:` section `esm send` uses: the file's, else the dev emulator's port on loopback."""
    if config.spec.aws.endpoint_url is None and config.spec.dev.port:
        _dummy_credentials()
        return AwsConfig(
            region=config.spec.aws.region or _DEV_REGION, endpoint_url=f"http://127.0.0.1:{config.spec.dev.port}"
        )
    return config.spec.aws


async def put_records(config: Config, stream: str, data: str, count: int, partition_key: str) -> int:
    """Put `count` copies of `data` on a Kinesis stream (name or ARN); prints each sequence number."""
    name = stream.rsplit("/", 1)[-1]
    async with ClientFactory(_send_aws(config), default_region=_DEV_REGION).client("kinesis") as kinesis:
        for _ in range(count):
            resp = await kinesis.put_record(StreamName=name, Data=data.encode(), PartitionKey=partition_key)
            print(f"{resp['ShardId']} {resp['SequenceNumber']}")
    return 0


async def send_messages(config: Config, queue: str, body: str, count: int, group_id: str | None) -> int:
    """Send `count` copies of `body` to a queue (name or ARN) through the configured endpoint."""
    name = parse_source_arn(queue).queue_name if queue.startswith("arn:") else queue
    async with ClientFactory(_send_aws(config), default_region=_DEV_REGION).client("sqs") as sqs:
        url = (await sqs.get_queue_url(QueueName=name))["QueueUrl"]
        for i in range(count):
            kwargs: dict[str, Any] = {"QueueUrl": url, "MessageBody": body}
            if name.endswith(".fifo"):
                kwargs["MessageGroupId"] = group_id or "default"
                kwargs["MessageDeduplicationId"] = f"{os.getpid()}-{asyncio.get_running_loop().time()}-{i}"
            resp = await sqs.send_message(**kwargs)
            print(resp["MessageId"])
    return 0
