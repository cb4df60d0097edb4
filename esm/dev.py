"""`esm dev`: the same engine against an embedded AWS emulator (moto) started in-process.

It starts moto on 127.0.0.1 (port `dev.port`, else the port of `aws.endpoint_url`, else a free
one), creates every queue the file names — mapping sources, `dev.queues`, and the dead-letter
queues their redrive policies point to — and then runs the daemon exactly as `esm run` does.
No AWS account is needed; dummy credentials are used for the emulator only.

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

from esm.arns import parse_source_arn
from esm.aws import ClientFactory
from esm.config import AwsConfig, Config, DevQueue
from esm.daemon import Daemon, exit_past_abandoned_threads
from esm.logging import get_logger

__all__ = ["create_queues", "run_dev", "send_messages"]

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
            log.info("emulator_started", endpoint=endpoint, queues=urls)
            return await Daemon(dev_config).run_with_signals()

        code = asyncio.run(main())
    finally:
        server.stop()
    exit_past_abandoned_threads(code)
    return code


async def send_messages(config: Config, queue: str, body: str, count: int, group_id: str | None) -> int:
    """Send `count` copies of `body` to a queue (name or ARN) through the configured endpoint."""
    name = parse_source_arn(queue).queue_name if queue.startswith("arn:") else queue
    if config.spec.aws.endpoint_url is None and config.spec.dev.port:
        _dummy_credentials()
        aws = AwsConfig(
            region=config.spec.aws.region or _DEV_REGION, endpoint_url=f"http://127.0.0.1:{config.spec.dev.port}"
        )
    else:
        aws = config.spec.aws
    async with ClientFactory(aws, default_region=_DEV_REGION).client("sqs") as sqs:
        url = (await sqs.get_queue_url(QueueName=name))["QueueUrl"]
        for i in range(count):
            kwargs: dict[str, Any] = {"QueueUrl": url, "MessageBody": body}
            if name.endswith(".fifo"):
                kwargs["MessageGroupId"] = group_id or "default"
                kwargs["MessageDeduplicationId"] = f"{os.getpid()}-{asyncio.get_running_loop().time()}-{i}"
            resp = await sqs.send_message(**kwargs)
            print(resp["MessageId"])
    return 0
