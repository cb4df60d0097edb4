"""The Kinesis case of `make bench`: CPU per 1,000 records against a bare GetRecords loop, and latency.

Method: kinesalite (../shared/TESTING.md) runs as its own Node.js process, so its CPU is not
counted. For each contender a fresh one-shard stream is filled with the same records; the
contender reads it from TRIM_HORIZON and hands batches of 100 to a no-op in-process handler.
The baseline is the loop a user would write by hand (GetShardIterator, GetRecords with Limit 100,
call the handler with the raw records); esm does the same plus the Lambda records (base64,
event ids), the policy, metrics and a durable SQLite checkpoint after every batch. The benchmark
measures this process's CPU time (all threads) until the last record was handed to the handler,
for esm from the moment the daemon serves (startup excluded, as the baseline's client setup is);
each contender runs `rounds` times alternately and the median is reported.

Latency: with esm running (default BatchSize, no batching window), one record is put every 20 ms;
each carries its put time, and the handler notes when it sees it. p50 and p99 of put-to-invoke
are printed (AWS polls each shard about once a second, ESM-SPEC.md §5.2).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from aiobotocore.session import get_session

from esm.config import load_config
from esm.daemon import Daemon

REGION = "us-east-1"
BATCH = 100
KINESALITE = Path(__file__).resolve().parents[1] / ".kinesalite" / "node_modules" / "kinesalite"
_SCRIPT = (
    "const s = require(process.argv[1])({createStreamMs: 0, deleteStreamMs: 0, updateStreamMs: 0, shardLimit: 100});"
    "s.listen(0, '127.0.0.1', () => console.log(s.address().port));"
)
LATENCIES: list[float] = []
os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")  # the emulator accepts any credentials
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")


@contextlib.contextmanager
def kinesalite_server(workdir: Path) -> Iterator[str]:
    """kinesalite in its own process on a free loopback port."""
    if not KINESALITE.exists():
        raise SystemExit(f"kinesalite is not installed at {KINESALITE}: run `make kinesalite`")
    out = workdir / "kinesalite.port"
    with out.open("w") as port_file:
        proc = subprocess.Popen(["node", "-e", _SCRIPT, str(KINESALITE)], stdout=port_file, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while not out.read_text().strip():
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("kinesalite did not start")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{out.read_text().strip()}"
    finally:
        proc.terminate()
        proc.wait(10)


def _client(endpoint: str) -> Any:
    return get_session().create_client(
        "kinesis", region_name=REGION, endpoint_url=endpoint, aws_access_key_id="bench", aws_secret_access_key="bench"
    )


def noop_handler(event: dict[str, Any], context: Any) -> None:
    """The benchmark's function: does nothing, so only the engine's cost is measured."""


def latency_handler(event: dict[str, Any], context: Any) -> None:
    """Notes put-to-invoke latency: each record's data is its put time (epoch seconds)."""
    import base64

    now = time.time()
    for r in event["Records"]:
        LATENCIES.append(now - float(base64.b64decode(r["kinesis"]["data"])))


async def _fill(kinesis: Any, name: str, count: int) -> str:
    await kinesis.create_stream(StreamName=name, ShardCount=1)
    data = b"x" * 512
    for i in range(0, count, 500):
        entries = [{"Data": data, "PartitionKey": f"k{j}"} for j in range(i, min(count, i + 500))]
        await kinesis.put_records(StreamName=name, Records=entries)
    desc = (await kinesis.describe_stream(StreamName=name))["StreamDescription"]
    return str(desc["StreamARN"])


async def run_baseline(kinesis: Any, name: str, count: int) -> None:
    """The hand-written loop: one iterator, GetRecords Limit 100, hand each page to the no-op."""
    shard = (await kinesis.list_shards(StreamName=name))["Shards"][0]["ShardId"]
    it = (await kinesis.get_shard_iterator(StreamName=name, ShardId=shard, ShardIteratorType="TRIM_HORIZON"))[
        "ShardIterator"
    ]
    seen = 0
    while seen < count:
        page = await kinesis.get_records(ShardIterator=it, Limit=BATCH)
        if page["Records"]:
            noop_handler({"Records": page["Records"]}, None)
            seen += len(page["Records"])
        it = page["NextShardIterator"]


def _config(endpoint: str, arn: str, handler: str, workdir: Path, **mapping: Any) -> Path:
    config = {
        "aws": {"region": REGION, "endpoints": {"kinesis": endpoint}},
        "http": {"listen": "127.0.0.1:0"},
        "state": {"sqlite": str(workdir / f"{arn.rsplit('/', 1)[1]}.db")},
        "streams": {"idle_poll_interval": 0.02},
        "functions": {"fn": {"handler": handler, "timeout": 10}},
        "event_source_mappings": [
            {"EventSourceArn": arn, "FunctionName": "fn", "StartingPosition": "TRIM_HORIZON", **mapping}
        ],
    }
    path = workdir / "bench-kinesis.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


async def run_esm(endpoint: str, arn: str, count: int, workdir: Path) -> tuple[float, float]:
    """The esm daemon with the no-op handler, until every record was handed to it.

    Returns (CPU seconds, wall seconds) from the moment the daemon serves (its mappings are
    created but have not read yet) to the last record invoked: startup and shutdown (the health
    server, clients, the SQLite file) are excluded, as the baseline's client setup is.
    """
    path = _config(
        endpoint, arn, "benchmarks.kinesis:noop_handler", workdir, BatchSize=BATCH, MaximumBatchingWindowInSeconds=1
    )
    daemon = Daemon(load_config(path))
    task = asyncio.create_task(daemon.run())
    m = daemon.config.spec.event_source_mappings[0]
    labels = {"event_source_mapping_uuid": m.uuid, "function_name": "fn", "source": "kinesis"}
    await daemon.started.wait()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    while (daemon.registry.get_sample_value("esm_invoked_events_total", labels) or 0) < count:
        if task.done():
            raise RuntimeError(f"esm exited early with {task.result()}")
        await asyncio.sleep(0.02)
    spent = time.process_time() - cpu0, time.perf_counter() - wall0
    daemon.request_stop()
    await task
    return spent


async def latency(endpoint: str, kinesis: Any, workdir: Path, records: int) -> tuple[float, float]:
    """p50 and p99 put-to-invoke latency in seconds."""
    name = f"bench-latency-{time.time_ns()}"
    arn = await _fill(kinesis, name, 0)
    LATENCIES.clear()
    daemon = Daemon(load_config(_config(endpoint, arn, "benchmarks.kinesis:latency_handler", workdir)))
    task = asyncio.create_task(daemon.run())
    await daemon.started.wait()
    await asyncio.sleep(1.0)  # every shard consumer is polling
    for _ in range(records):
        await kinesis.put_record(StreamName=name, Data=repr(time.time()).encode(), PartitionKey="k")
        await asyncio.sleep(0.02)
    for _ in range(600):  # up to 30 s for the last records (the handler runs on a thread: no event to await)
        if len(LATENCIES) >= records:
            break
        await asyncio.sleep(0.05)
    daemon.request_stop()
    await task
    q = statistics.quantiles(LATENCIES, n=100)
    return q[49], q[98]


async def main(records: int, rounds: int) -> None:
    """Run the Kinesis benchmark and print its figures."""
    results: dict[str, list[tuple[float, float]]] = {"baseline": [], "esm": []}
    with tempfile.TemporaryDirectory() as tmp, kinesalite_server(Path(tmp)) as endpoint:
        async with _client(endpoint) as kinesis:
            for r in range(rounds):
                for name in ("baseline", "esm"):
                    stream = f"bench-{name}-{r}-{time.time_ns()}"
                    arn = await _fill(kinesis, stream, records)
                    if name == "baseline":
                        cpu0, wall0 = time.process_time(), time.perf_counter()
                        await run_baseline(kinesis, stream, records)
                        results[name].append((time.process_time() - cpu0, time.perf_counter() - wall0))
                    else:
                        results[name].append(await run_esm(endpoint, arn, records, Path(tmp)))
            p50, p99 = await latency(endpoint, kinesis, Path(tmp), 200)
    base = statistics.median(c for c, _ in results["baseline"]) / records * 1000
    esm = statistics.median(c for c, _ in results["esm"]) / records * 1000
    print(f"\nKinesis drain, {records} records x {rounds} rounds, batches of {BATCH}, no-op handler (kinesalite)")
    print(f"{'contender':<10} {'CPU s / 1000 recs':>18} {'recs/s (info)':>14}")
    for name, per in (("baseline", base), ("esm", esm)):
        wall = statistics.median(w for _, w in results[name])
        print(f"{name:<10} {per:>18.3f} {records / wall:>14.0f}")
    print(f"ratio esm/baseline (CPU per record): {esm / base:.2f}x")
    print(f"put-to-invoke latency, 200 records at 50/s: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms")
