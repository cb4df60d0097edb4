"""The scale case of `make bench`: one esm process consuming a 1,000-shard Kinesis stream, idle.

Method: kinesalite runs in its own Node.js process with a shard limit above 1,000 (the tests'
instance allows 100) and holds one stream of `shards` shards and no records. One `esm run`
process (its own process, so that only its memory and CPU are read) has one mapping on it: a
no-op in-process handler, StartingPosition TRIM_HORIZON, a SQLite checkpoint file, and every
`streams` setting at its default (idle polling included). esm reaches kinesalite through a
byte-counting TCP proxy in this process, which counts the GetRecords calls (its CPU is not esm's).
The benchmark waits until esm's `esm_shards_held` gauge shows every shard consumed, lets it settle
for `settle` seconds (every consumer has its iterator and is in its idle rhythm), then reads from
/proc over `window` seconds:

- the esm process's CPU time (utime + stime, all threads) over the window: its idle CPU as a share
  of one core; with the GetRecords calls counted, the CPU per call;
- the esm process's resident set size (VmRSS) at the end, and its peak (VmHWM, which includes the
  startup: the first listing, 1,000 iterators, one SQLite transaction);
- kinesalite's CPU over the same window, for information (it shares the machine).

Why StartingPosition TRIM_HORIZON: kinesalite never answers GetShardIterator AT_TIMESTAMP on a
shard with no record after the timestamp (the request hangs), and esm stores LATEST as AT_TIMESTAMP
of its start; on an empty shard TRIM_HORIZON reads the same (nothing).

Goals (issue 7): under 256 MB, and under 10 % of one core.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from aiobotocore.session import get_session

from benchmarks._common import (
    REGION,
    REPO_ROOT,
    CountingProxy,
    Result,
    free_port,
    kinesalite_process,
    process_cpu,
    process_rss,
    verdict,
)

RSS_GOAL_MB = 256
CPU_GOAL = 0.10
MIB = 1024 * 1024


def noop_handler(event: dict[str, Any], context: Any) -> None:
    """The mapping's function (never called: the stream stays empty)."""


def _held(port: int) -> float:
    """esm_shards_held summed over mappings, from esm's /metrics (0 while it does not serve yet)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return 0.0
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("esm_shards_held{"))


async def _create(endpoint: str, name: str, shards: int) -> str:
    async with get_session().create_client(
        "kinesis", region_name=REGION, endpoint_url=endpoint, aws_access_key_id="bench", aws_secret_access_key="bench"
    ) as kinesis:
        await kinesis.create_stream(StreamName=name, ShardCount=shards)
        summary = (await kinesis.describe_stream_summary(StreamName=name))["StreamDescriptionSummary"]
        return str(summary["StreamARN"])


def measure(
    shards: int = 1000, settle: float = 20.0, window: float = 30.0, streams: dict[str, Any] | None = None
) -> dict[str, float]:
    """Start esm on an idle `shards`-shard stream and read its figures (`streams`: extra settings)."""
    with (
        tempfile.TemporaryDirectory() as tmp,
        kinesalite_process(Path(tmp), shard_limit=shards + 100) as kinesalite,
        CountingProxy(kinesalite.endpoint) as proxy,
    ):
        workdir = Path(tmp)
        arn = asyncio.run(_create(kinesalite.endpoint, "bench-scale", shards))
        port = free_port()
        config: dict[str, Any] = {
            "aws": {"region": REGION, "endpoints": {"kinesis": proxy.endpoint}},
            "http": {"listen": f"127.0.0.1:{port}"},
            "state": {"sqlite": str(workdir / "scale.db")},
            "functions": {"noop": {"handler": "benchmarks.scale:noop_handler"}},
            "event_source_mappings": [
                {"EventSourceArn": arn, "FunctionName": "noop", "StartingPosition": "TRIM_HORIZON"}
            ],
        }
        if streams:
            config["streams"] = streams
        path = workdir / "scale.yaml"
        path.write_text(yaml.safe_dump(config))
        log_path = workdir / "esm.log"
        with log_path.open("wb") as log:
            esm = subprocess.Popen(
                [sys.executable, "-m", "esm", "run", "--config", str(path), "--log-level", "warning"],
                cwd=REPO_ROOT,
                stdout=subprocess.DEVNULL,
                stderr=log,
                env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
            )
        try:
            started = time.monotonic()
            while _held(port) < shards:
                if esm.poll() is not None:
                    raise RuntimeError(f"esm exited with {esm.returncode}: {log_path.read_text()[-2000:]}")
                if time.monotonic() - started > 300:
                    raise RuntimeError(f"esm did not start {shards} shard consumers within 300 s")
                time.sleep(0.5)
            startup = time.monotonic() - started
            time.sleep(settle)
            cpu0, node0, calls0, wall0 = (
                process_cpu(esm.pid),
                process_cpu(kinesalite.pid),
                proxy.count("GetRecords"),
                time.monotonic(),
            )
            time.sleep(window)
            cpu1, node1, calls1, wall1 = (
                process_cpu(esm.pid),
                process_cpu(kinesalite.pid),
                proxy.count("GetRecords"),
                time.monotonic(),
            )
            rss, peak = process_rss(esm.pid)
            if esm.poll() is not None:
                raise RuntimeError(f"esm exited with {esm.returncode}: {log_path.read_text()[-2000:]}")
        finally:
            esm.send_signal(signal.SIGTERM)
            try:
                esm.wait(60)
            except subprocess.TimeoutExpired:
                esm.kill()
                esm.wait()
    elapsed = wall1 - wall0
    calls = calls1 - calls0
    return {
        "startup": startup,
        "rss": rss,
        "peak": peak,
        "cpu": (cpu1 - cpu0) / elapsed,
        "calls_per_second": calls / elapsed,
        "cpu_per_call": (cpu1 - cpu0) / calls if calls else float("nan"),
        "emulator_cpu": (node1 - node0) / elapsed,
        "window": elapsed,
    }


def main(shards: int = 1000, settle: float = 20.0, window: float = 30.0) -> list[Result]:
    """Run the scale case and print its figures."""
    f = measure(shards, settle, window)
    rss_mb = f["rss"] / MIB
    print(f"\n== 4. Scale: {shards} shards on kinesalite, one esm process, idle (no records), default settings")
    print(
        f"all {shards} shard consumers started {f['startup']:.1f} s after launch; "
        f"settled {settle:.0f} s; measured over {f['window']:.0f} s"
    )
    print(f"esm RSS {rss_mb:.0f} MiB (peak {f['peak'] / MIB:.0f} MiB)   goal < 256 MB: {verdict(rss_mb < RSS_GOAL_MB)}")
    print(f"esm idle CPU {f['cpu']:.1%} of one core   goal < 10 %: {verdict(f['cpu'] < CPU_GOAL)}")
    print(
        f"GetRecords {f['calls_per_second']:.1f} calls/s ({shards / max(f['calls_per_second'], 1e-9):.0f} s between "
        f"two reads of a shard), {f['cpu_per_call'] * 1000:.2f} ms of esm CPU per call"
    )
    print(
        f"at Lambda's idle cadence (1 call/s per shard) that would be {shards * f['cpu_per_call']:.0%} of a core: "
        f"streams.max_idle_polls_per_second caps the idle calls"
    )
    print(f"(kinesalite over the same window: {f['emulator_cpu']:.1%} of one core, not counted)")
    return [
        Result("4. scale: esm RSS, 1,000 idle shards", f"{rss_mb:.0f} MiB", "< 256 MB", rss_mb < RSS_GOAL_MB),
        Result("4. scale: esm idle CPU, 1,000 idle shards", f"{f['cpu']:.1%} of a core", "< 10 %", f["cpu"] < CPU_GOAL),
    ]


if __name__ == "__main__":
    main()
