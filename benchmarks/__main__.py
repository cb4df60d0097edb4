"""`make bench`: esm's CPU cost per message against a bare aiobotocore loop, in one run.

Cases: SQS (below); Kinesis (`benchmarks/kinesis.py`: CPU per 1,000 records against a bare
GetRecords loop on kinesalite, and put-to-invoke latency p50/p99); filter evaluation
(`benchmarks/filtering.py`); failover, handoff and rebalance of several replicas against KCL's
defaults (`benchmarks/replicas.py`).

Method: a moto server runs in its own process (its CPU is not counted). For each contender the
same number of messages is put on a fresh standard queue; the contender drains it with 5
concurrent pollers (receive 10 → invoke a no-op in-process handler → DeleteMessageBatch) and the
benchmark measures this process's CPU time (user + system) from start until the queue is empty.
The baseline is the minimal loop a user would write by hand; esm does the same work plus the
Lambda event building, response interpretation, metrics, heartbeat and logging.

Figures: CPU seconds per 1,000 messages for both, and their ratio (esm / baseline). Each
contender runs `--rounds` times alternately and the median is reported, so machine noise hits
both alike. moto's SQS slows down as a queue fills (../shared/TESTING.md), so volumes are small and
throughput in messages/s is printed for information only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from aiobotocore.session import get_session

from esm.config import load_config
from esm.daemon import Daemon
from esm.logging import configure_logging

REGION = "us-east-1"
POLLERS = 5
os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")  # the emulator accepts any credentials
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """A moto server in a separate process, so its CPU is not charged to the contenders."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def _client(endpoint: str) -> Any:
    return get_session().create_client(
        "sqs", region_name=REGION, endpoint_url=endpoint, aws_access_key_id="bench", aws_secret_access_key="bench"
    )


async def _fill(endpoint: str, name: str, count: int) -> tuple[str, str]:
    async with _client(endpoint) as sqs:
        url = (await sqs.create_queue(QueueName=name))["QueueUrl"]
        arn = (await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"]))["Attributes"]["QueueArn"]
        body = "x" * 512
        for i in range(0, count, 10):
            await sqs.send_message_batch(
                QueueUrl=url, Entries=[{"Id": str(j), "MessageBody": body} for j in range(min(10, count - i))]
            )
        return url, arn


async def _empty(sqs: Any, url: str) -> bool:
    attrs = (
        await sqs.get_queue_attributes(
            QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        )
    )["Attributes"]
    return attrs["ApproximateNumberOfMessages"] == "0" and attrs["ApproximateNumberOfMessagesNotVisible"] == "0"


def noop_handler(event: dict[str, Any], context: Any) -> None:
    """The benchmark's function: does nothing, so only the engine's cost is measured."""


async def run_baseline(endpoint: str, url: str) -> None:
    """The hand-written loop: receive 10, call the no-op, delete the batch; 5 pollers."""
    async with _client(endpoint) as sqs:
        done = asyncio.Event()

        async def poller() -> None:
            while not done.is_set():
                resp = await sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
                msgs = resp.get("Messages", [])
                if not msgs:
                    if await _empty(sqs, url):
                        done.set()
                    continue
                noop_handler({"Records": msgs}, None)
                await sqs.delete_message_batch(
                    QueueUrl=url,
                    Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(msgs)],
                )

        await asyncio.gather(*(poller() for _ in range(POLLERS)))


async def run_esm(endpoint: str, arn: str, messages: int, workdir: Path) -> None:
    """The esm daemon with the same no-op handler and 5 concurrent batches, until the queue is empty."""
    config = {
        "aws": {"region": REGION, "endpoint_url": endpoint},
        "http": {"listen": "127.0.0.1:0"},
        "functions": {"noop": {"handler": "benchmarks.__main__:noop_handler", "timeout": 10}},
        "event_source_mappings": [
            {
                "EventSourceArn": arn,
                "FunctionName": "noop",
                "BatchSize": 10,
                "ScalingConfig": {"MaximumConcurrency": POLLERS},
            }
        ],
    }
    path = workdir / "bench.yaml"
    path.write_text(yaml.safe_dump(config))
    daemon = Daemon(load_config(path))
    task = asyncio.create_task(daemon.run())
    # Done when esm has deleted every message: read from its own registry, so that the waiting
    # costs no API calls (which would be charged to esm's CPU).
    while (daemon.registry.get_sample_value("esm_deleted_events_total", _labels(daemon)) or 0) < messages:
        if task.done():
            raise RuntimeError(f"esm exited early with {task.result()}")
        await asyncio.sleep(0.05)
    daemon.request_stop()
    await task


def _labels(daemon: Daemon) -> dict[str, str]:
    m = daemon.config.spec.event_source_mappings[0]
    return {"event_source_mapping_uuid": m.uuid, "function_name": m.FunctionName, "source": "sqs"}


def _cpu() -> float:
    # CPU time of this process, all threads, user + system, at nanosecond resolution (os.times()
    # counts 10 ms ticks, too coarse for runs of a fraction of a second).
    return time.process_time()


async def main(messages: int, rounds: int) -> None:
    configure_logging("error", "json")
    results: dict[str, list[tuple[float, float]]] = {"baseline": [], "esm": []}
    with moto_server() as endpoint, tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for name in ("baseline", "esm"):
                url, arn = await _fill(endpoint, f"bench-{name}-{r}", messages)
                cpu0, wall0 = _cpu(), time.perf_counter()
                if name == "baseline":
                    await run_baseline(endpoint, url)
                else:
                    await run_esm(endpoint, arn, messages, Path(tmp))
                results[name].append((_cpu() - cpu0, time.perf_counter() - wall0))
    base = statistics.median(c for c, _ in results["baseline"]) / messages * 1000
    esm = statistics.median(c for c, _ in results["esm"]) / messages * 1000
    print(
        f"SQS drain, {messages} messages x {rounds} rounds, {POLLERS} pollers, no-op handler (moto in its own process)"
    )
    print(f"{'contender':<10} {'CPU s / 1000 msgs':>18} {'msgs/s (info)':>14}")
    for name, per in (("baseline", base), ("esm", esm)):
        wall = statistics.median(w for _, w in results[name])
        print(f"{name:<10} {per:>18.3f} {messages / wall:>14.0f}")
    print(f"ratio esm/baseline (CPU per message): {esm / base:.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--records", type=int, default=5000, help="Kinesis records per round")
    args = parser.parse_args()
    asyncio.run(main(args.messages, args.rounds))
    from benchmarks import filtering, kinesis

    asyncio.run(kinesis.main(args.records, args.rounds))
    filtering.main(rounds=args.rounds)
    from benchmarks import replicas

    with moto_server() as endpoint:
        asyncio.run(replicas.main(endpoint))
