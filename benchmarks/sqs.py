"""The SQS cases of `make bench`: CPU per message against a bare aiobotocore loop, and put-to-invoke latency.

CPU (figure 2): a moto server runs in its own process (its CPU is not counted). For each
contender the same number of 512-byte messages is put on a fresh standard queue; the contender
drains it with 5 concurrent pollers (ReceiveMessage of 10 with every attribute → the no-op
in-process handler, which only counts → DeleteMessageBatch), and this process's CPU time (user + system, all
threads: `time.process_time`) is measured from the moment the contender is ready (its client
open; for esm, the daemon serving) until the last message is deleted. The baseline is the
minimal loop a user would write by hand, asking SQS for the same attributes so that both parse the
same responses; esm does the same work plus the Lambda records and event, the handler's thread
and context, the response interpretation, metrics, visibility heartbeat and logging. Each contender
runs `rounds` times, alternately (after one esm run that is not counted), and the figure is the
median of the rounds' ratios (a round's two runs are close in time, so load changes between
rounds cancel out). Every call opens a new TCP connection (moto's server closes each one), in both
contenders alike. moto's SQS gets slower as a queue grows and each receive costs O(queue depth)
(../shared/TESTING.md), so volumes stay small and the messages/s printed are for information only.

Latency (figure 3): esm runs with the defaults of a standard-queue mapping (BatchSize 10, no
batching window, 5 long-polling pollers); a producer in this process sends one message every
`interval` seconds, its body the send time; the handler notes the time it sees each message. The
p50 and p99 of (handler time - send time) are printed. On moto a long poll is woken by a condition
variable as soon as a message is added, as on SQS; moto's own request time is in the figure.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from aiobotocore.session import get_session

from benchmarks._common import (
    HANDLED,
    REGION,
    Clock,
    Result,
    count_handler,
    cpu_result,
    esm_cpu,
    moto_server,
    quantiles,
    wait_for_count,
)
from esm.config import load_config
from esm.daemon import Daemon

POLLERS = 5
LATENCIES: list[float] = []
_RECEIVE: dict[str, Any] = {
    "MessageSystemAttributeNames": ["All"],
    "AttributeNames": ["All"],
    "MessageAttributeNames": ["All"],
}


def _client(endpoint: str) -> Any:
    return get_session().create_client(
        "sqs", region_name=REGION, endpoint_url=endpoint, aws_access_key_id="bench", aws_secret_access_key="bench"
    )


async def _queue(sqs: Any, name: str) -> tuple[str, str]:
    url = (await sqs.create_queue(QueueName=name))["QueueUrl"]
    arn = (await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"]))["Attributes"]["QueueArn"]
    return str(url), str(arn)


async def _fill(endpoint: str, name: str, count: int) -> tuple[str, str]:
    async with _client(endpoint) as sqs:
        url, arn = await _queue(sqs, name)
        body = "x" * 512
        for i in range(0, count, 10):
            await sqs.send_message_batch(
                QueueUrl=url, Entries=[{"Id": str(j), "MessageBody": body} for j in range(min(10, count - i))]
            )
        return url, arn


def latency_handler(event: dict[str, Any], context: Any) -> None:
    """Notes send-to-invoke latency: each message's body is its send time (epoch seconds)."""
    now = time.time()
    for r in event["Records"]:
        LATENCIES.append(now - float(r["body"]))


async def run_baseline(endpoint: str, url: str, messages: int) -> tuple[float, float]:
    """The hand-written loop: receive 10, call the no-op, delete the batch; 5 pollers, until all are deleted.

    Returns (CPU seconds, wall seconds) from the moment its client is open.
    """
    async with _client(endpoint) as sqs:
        deleted = 0
        HANDLED.reset()
        clock = Clock()

        async def poller() -> None:
            nonlocal deleted
            while deleted < messages:
                resp = await sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1, **_RECEIVE)
                msgs = resp.get("Messages", [])
                if not msgs:
                    continue
                count_handler({"Records": msgs}, None)
                await sqs.delete_message_batch(
                    QueueUrl=url,
                    Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(msgs)],
                )
                deleted += len(msgs)

        await asyncio.gather(*(poller() for _ in range(POLLERS)))
        return clock.spent()


def _daemon(endpoint: str, arn: str, handler: str, workdir: Path, **mapping: Any) -> Daemon:
    config = {
        "aws": {"region": REGION, "endpoint_url": endpoint},
        "http": {"listen": "127.0.0.1:0"},
        "functions": {"fn": {"handler": handler, "timeout": 10}},
        "event_source_mappings": [{"EventSourceArn": arn, "FunctionName": "fn", **mapping}],
    }
    path = workdir / "bench-sqs.yaml"
    path.write_text(yaml.safe_dump(config))
    return Daemon(load_config(path))


def _labels(daemon: Daemon) -> dict[str, str]:
    m = daemon.config.spec.event_source_mappings[0]
    return {"event_source_mapping_uuid": m.uuid, "function_name": m.FunctionName, "source": "sqs"}


async def run_esm(endpoint: str, arn: str, messages: int, workdir: Path) -> tuple[float, float]:
    """The esm daemon with the same no-op handler and 5 concurrent batches, until every message is deleted.

    Returns (CPU seconds, wall seconds) from the moment the daemon serves (its clients are open, its
    mappings created) to the last delete: startup and shutdown are excluded, as the baseline's are.
    """
    daemon = _daemon(
        endpoint,
        arn,
        "benchmarks._common:count_handler",
        workdir,
        BatchSize=10,
        ScalingConfig={"MaximumConcurrency": POLLERS},
    )
    labels = _labels(daemon)
    return await esm_cpu(
        daemon,
        messages,
        lambda: (daemon.registry.get_sample_value("esm_deleted_events_total", labels) or 0) >= messages,
    )


async def measure_cpu(endpoint: str, messages: int, rounds: int, workdir: Path) -> dict[str, list[tuple[float, float]]]:
    """(CPU seconds, wall seconds) per round for each contender, alternating."""
    results: dict[str, list[tuple[float, float]]] = {"baseline": [], "esm": []}
    _, arn = await _fill(endpoint, f"bench-warm-up-{time.time_ns()}", 50)
    await run_esm(endpoint, arn, 50, workdir)  # warm-up (imports, thread pools), not counted
    for r in range(rounds):
        for name in ("baseline", "esm") if r % 2 == 0 else ("esm", "baseline"):
            url, arn = await _fill(endpoint, f"bench-{name}-{r}-{time.time_ns()}", messages)
            if name == "baseline":
                results[name].append(await run_baseline(endpoint, url, messages))
            else:
                results[name].append(await run_esm(endpoint, arn, messages, workdir))
    return results


async def measure_latency(endpoint: str, messages: int, interval: float, workdir: Path) -> list[float]:
    """Send-to-invoke latencies (seconds) of `messages` sent one every `interval` seconds."""
    async with _client(endpoint) as sqs:
        url, arn = await _queue(sqs, f"bench-latency-{time.time_ns()}")
        LATENCIES.clear()
        daemon = _daemon(endpoint, arn, "benchmarks.sqs:latency_handler", workdir)
        task = asyncio.create_task(daemon.run())
        await daemon.started.wait()
        await asyncio.sleep(1.0)  # the pollers are long-polling
        for _ in range(messages):
            await sqs.send_message(QueueUrl=url, MessageBody=repr(time.time()))
            await asyncio.sleep(interval)
        await wait_for_count(LATENCIES, messages)
        daemon.request_stop()
        await task
    return list(LATENCIES)


async def cpu(messages: int = 300, rounds: int = 7) -> list[Result]:
    """Figure 2 for SQS: run the contenders on one moto server and print the ratio."""
    with moto_server() as endpoint, tempfile.TemporaryDirectory() as tmp:
        results = await measure_cpu(endpoint, messages, rounds, Path(tmp))
    print(
        f"\n== 2. SQS: CPU per message, {messages} messages of 512 B x {rounds} alternating rounds, "
        f"{POLLERS} pollers, counting handler, moto in its own process"
    )
    return cpu_result("SQS", "messages", messages, results)


async def latency(messages: int = 200) -> list[Result]:
    """Figure 3 for SQS: send-to-invoke latency at 20 messages a second."""
    with moto_server() as endpoint, tempfile.TemporaryDirectory() as tmp:
        latencies = await measure_latency(endpoint, messages, 0.05, Path(tmp))
    p50, p99 = quantiles(latencies)
    print(
        f"\n== 3. SQS: send-to-invoke latency, {len(latencies)} messages at 20/s, default mapping settings (moto): "
        f"p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms (issue 7 sets no goal for SQS)"
    )
    return [Result("3. latency SQS p50 / p99 (20/s)", f"{p50 * 1000:.0f} / {p99 * 1000:.0f} ms", "none set", None)]
