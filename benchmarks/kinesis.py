"""The Kinesis cases of `make bench`: CPU per record against a bare GetRecords loop, and put-to-invoke latency.

CPU (figure 2): kinesalite (../shared/TESTING.md) runs as its own Node.js process, so its CPU is
not counted. One one-shard stream is filled with `records` records of 512 bytes; each contender
reads it from TRIM_HORIZON, again and again (reading consumes nothing; each esm run is a new
mapping with a new state file), and hands batches of 100 to the same in-process handler, which
only counts them. The baseline is the loop a user would write by hand: GetShardIterator, then
GetRecords with the page size esm uses (1,000 for batches of 100), each page handed over in
batches of 100 as the raw records. esm does the same reads plus the Lambda records (base64, event
ids), the batch's event, the policy, metrics, the handler's thread and context, and a durable
SQLite checkpoint after every batch. A third contender, for information, is the same bare loop
with esm's timestamp parser (`esm.aws.parse_timestamp_fast`: botocore's default builds a dateutil
local zone for each record's ApproximateArrivalTimestamp, about half of the bare loop's CPU), so
esm / that loop is esm's own overhead, like for like.

This process's CPU time (all threads: esm's SQLite and handler threads are counted) is measured
from the moment a contender is ready (its client open; for esm, the daemon serving) until the
last record was handed over. The contenders run `rounds` times each, alternately, after one esm
run that is not counted (imports, the first SQLite file). The figure is the median of the rounds'
ratios (a round's runs are close in time, so a change in the machine's load between rounds
cancels out).

Latency (figure 3): esm runs with its default settings (BatchSize 100, no batching window, idle
polling as Lambda's). A producer in this process puts one record at a time, its data the put time;
the handler notes when it sees each record. Two traffic shapes:

- steady: one record every 20 ms (after 2 s of the same traffic, not counted, which takes the
  shard out of its idle rhythm), so every read finds records: the shard is read every 200 ms,
  the most Kinesis allows (5 GetRecords calls a second per shard, ESM-SPEC.md §5.2). A record
  waits for the next read, half of those 200 ms on average: p50 cannot be much under 100 ms with
  GetRecords polling within AWS's limit (only enhanced fan-out pushes records sooner, and
  kinesalite does not implement it). The goal is checked on this shape.
- sparse: one record every 1.5-2.5 s, so the reads before each find nothing and the shard is
  polled at the idle cadence (1 s, as Lambda): about 500 ms on average; for information.

kinesalite answers in a few milliseconds on this machine; its time is part of the figures.
"""

from __future__ import annotations

import asyncio
import base64
import random
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
    aws_client,
    cpu_result,
    esm_cpu,
    hand_over_shard,
    kinesalite_server,
    quantiles,
    verdict,
    wait_for_count,
)
from esm.config import load_config
from esm.daemon import Daemon

BATCH = 100
PAGE = 1000  # esm's GetRecords Limit for BatchSize 100, one lane: min(10,000, max(2 x 100, 1,000))
GOAL_P50, GOAL_P99 = 0.100, 0.300
LATENCIES: list[float] = []


def _client(endpoint: str) -> Any:
    return get_session().create_client(
        "kinesis", region_name=REGION, endpoint_url=endpoint, aws_access_key_id="bench", aws_secret_access_key="bench"
    )


def latency_handler(event: dict[str, Any], context: Any) -> None:
    """Notes put-to-invoke latency: each record's data is its put time (epoch seconds)."""
    now = time.time()
    for r in event["Records"]:
        data = base64.b64decode(r["kinesis"]["data"])
        if not data.startswith(b"warm-up"):
            LATENCIES.append(now - float(data))


async def _fill(kinesis: Any, name: str, count: int) -> str:
    await kinesis.create_stream(StreamName=name, ShardCount=1)
    data = b"x" * 512
    for i in range(0, count, 500):
        entries = [{"Data": data, "PartitionKey": f"k{j}"} for j in range(i, min(count, i + 500))]
        await kinesis.put_records(StreamName=name, Records=entries)
    desc = (await kinesis.describe_stream_summary(StreamName=name))["StreamDescriptionSummary"]
    return str(desc["StreamARN"])


async def run_baseline(endpoint: str, name: str, count: int, fast_timestamps: bool = False) -> tuple[float, float]:
    """The hand-written loop; (CPU seconds, wall seconds) from the moment its client is open.

    `fast_timestamps`: its client parses timestamps as esm's do (`esm.aws.parse_timestamp_fast`).
    """
    async with aws_client("kinesis", endpoint, fast_timestamps=fast_timestamps) as kinesis:
        HANDLED.reset()
        clock = Clock()
        shard = (await kinesis.list_shards(StreamName=name))["Shards"][0]["ShardId"]
        it = (await kinesis.get_shard_iterator(StreamName=name, ShardId=shard, ShardIteratorType="TRIM_HORIZON"))[
            "ShardIterator"
        ]
        await hand_over_shard(kinesis, it, count, PAGE, BATCH)
        return clock.spent()


def _config(endpoint: str, arn: str, handler: str, workdir: Path, **mapping: Any) -> Path:
    config = {
        "aws": {"region": REGION, "endpoints": {"kinesis": endpoint}},
        "http": {"listen": "127.0.0.1:0"},
        "state": {"sqlite": str(workdir / f"kinesis-{time.time_ns()}.db")},  # a new mapping: from TRIM_HORIZON
        "functions": {"fn": {"handler": handler, "timeout": 10}},
        "event_source_mappings": [
            {"EventSourceArn": arn, "FunctionName": "fn", "StartingPosition": "TRIM_HORIZON", **mapping}
        ],
    }
    path = workdir / "bench-kinesis.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


async def run_esm(endpoint: str, arn: str, count: int, workdir: Path) -> tuple[float, float]:
    """The esm daemon with the counting handler, until every record was handed to it.

    Returns (CPU seconds, wall seconds) from the moment the daemon serves (its mappings are
    created but have not read yet) to the last record handed over: startup and shutdown (the
    health server, clients, the SQLite file) are excluded, as the baseline's client setup is.
    """
    # BatchSize: the default, 100 (an explicit BatchSize above 10 would need a batching window, as on AWS).
    daemon = Daemon(load_config(_config(endpoint, arn, "benchmarks._common:count_handler", workdir)))
    return await esm_cpu(daemon, count)


async def measure_cpu(endpoint: str, records: int, rounds: int, workdir: Path) -> dict[str, list[tuple[float, float]]]:
    """(CPU seconds, wall seconds) per round for each contender, alternating which goes first.

    Every run reads the same stream from TRIM_HORIZON (reading consumes nothing; each esm run is a
    new mapping state), so both read exactly the same records.
    """
    results: dict[str, list[tuple[float, float]]] = {"baseline": [], "esm": [], "baseline+ts": []}
    async with _client(endpoint) as kinesis:
        stream = f"bench-cpu-{time.time_ns()}"
        arn = await _fill(kinesis, stream, records)
    await run_esm(endpoint, arn, records, workdir)  # warm-up (imports, first SQLite file), not counted
    for r in range(rounds):
        for name in ("baseline", "esm", "baseline+ts") if r % 2 == 0 else ("baseline+ts", "esm", "baseline"):
            if name.startswith("baseline"):
                results[name].append(await run_baseline(endpoint, stream, records, name == "baseline+ts"))
            else:
                results[name].append(await run_esm(endpoint, arn, records, workdir))
    return results


async def measure_latency(
    endpoint: str, workdir: Path, records: int, gap: tuple[float, float], warm_up: float = 0.0
) -> list[float]:
    """Put-to-invoke latencies (seconds) of `records` put one at a time, `gap` seconds apart (uniform).

    `warm_up`: seconds of the same traffic before the measured records (not counted), so that the
    shard is in its steady rhythm; without, the first records meet a shard polled at the idle cadence.
    """
    async with _client(endpoint) as kinesis:
        name = f"bench-latency-{time.time_ns()}"
        arn = await _fill(kinesis, name, 0)
        LATENCIES.clear()
        daemon = Daemon(load_config(_config(endpoint, arn, "benchmarks.kinesis:latency_handler", workdir)))
        task = asyncio.create_task(daemon.run())
        await daemon.started.wait()
        await asyncio.sleep(2.0)  # the shard consumer is polling (idle)
        until = time.monotonic() + warm_up
        while time.monotonic() < until:
            await kinesis.put_record(StreamName=name, Data=b"warm-up", PartitionKey="k")
            await asyncio.sleep(random.uniform(*gap))  # noqa: S311 - spacing, not security
        for _ in range(records):
            await kinesis.put_record(StreamName=name, Data=repr(time.time()).encode(), PartitionKey="k")
            await asyncio.sleep(random.uniform(*gap))  # noqa: S311 - spacing, not security
        await wait_for_count(LATENCIES, records)
        daemon.request_stop()
        await task
    return list(LATENCIES)


async def cpu(records: int = 20_000, rounds: int = 7) -> list[Result]:
    """Figure 2 for Kinesis: run the contenders on one kinesalite and print the ratio."""
    with tempfile.TemporaryDirectory() as tmp, kinesalite_server(Path(tmp)) as endpoint:
        results = await measure_cpu(endpoint, records, rounds, Path(tmp))
    print(
        f"\n== 2. Kinesis: CPU per record, the same {records} records of 512 B read {rounds} times by each contender, "
        f"alternating; pages of {PAGE}, batches of {BATCH}, counting handler, kinesalite in its own process"
    )
    return cpu_result("Kinesis", "records", records, results)


async def latency(steady: int = 250, sparse: int = 20) -> list[Result]:
    """Figure 3 for Kinesis: put-to-invoke latency, steady (the goal) and sparse traffic."""
    with tempfile.TemporaryDirectory() as tmp, kinesalite_server(Path(tmp)) as endpoint:
        steady_latencies = await measure_latency(endpoint, Path(tmp), steady, (0.02, 0.02), warm_up=2.0)
        sparse_latencies = await measure_latency(endpoint, Path(tmp), sparse, (1.5, 2.5))
    p50, p99 = quantiles(steady_latencies)
    s50, s99 = quantiles(sparse_latencies)
    print("\n== 3. Kinesis: put-to-invoke latency, default settings (kinesalite)")
    print(
        f"steady, {len(steady_latencies)} records at 50/s: p50 {p50 * 1000:.0f} ms (goal < 100 ms: "
        f"{verdict(p50 < GOAL_P50)}), p99 {p99 * 1000:.0f} ms (goal < 300 ms: {verdict(p99 < GOAL_P99)})"
    )
    print(
        "  a shard serves 5 GetRecords calls a second (AWS's limit, which esm keeps): a record waits for the next "
        "read, ~100 ms on average"
    )
    print(
        f"sparse, {len(sparse_latencies)} records 1.5-2.5 s apart (idle shard, read once a second as Lambda does): "
        f"p50 {s50 * 1000:.0f} ms, p99 {s99 * 1000:.0f} ms (for information)"
    )
    return [
        Result("3. latency Kinesis p50 (steady 50/s)", f"{p50 * 1000:.0f} ms", "< 100 ms", p50 < GOAL_P50),
        Result("3. latency Kinesis p99 (steady 50/s)", f"{p99 * 1000:.0f} ms", "< 300 ms", p99 < GOAL_P99),
        Result("3. latency Kinesis p50 / p99 (sparse)", f"{s50 * 1000:.0f} / {s99 * 1000:.0f} ms", "none set", None),
    ]
