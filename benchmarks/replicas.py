"""Failover, handoff and rebalance times of several esm replicas, with the default lease timings.

Method: a moto server (Kinesis for a 12-shard stream, DynamoDB for the lease table) in its own
process; three `esm run` processes with `state.dynamodb` and the defaults (failover_time 10 s,
balance every 5 s, up to 5 steals per round). The benchmark reads the lease table every 0.2 s
and reports, from the moment of the action until the table shows the end state:

- **kill -9**: one replica killed; until its 4 shards are owned by the two others.
- **SIGTERM**: one replica stopped gracefully; until its shards are owned by the others.
- **new replica**: a fourth replica started next to three settled ones; until it holds its
  share (3 of 12).

KCL's figures for comparison (spec/LEASES.md §2.3, defaults): failover 20–40 s after a crash;
the same after a shutdown, as KCL does not release leases; one steal per 20 s per worker, about
8 minutes to move 25 shards onto a new worker (3 shards here: about 60 s).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from aiobotocore.session import get_session

from benchmarks._common import Result, verdict

REGION = "us-east-1"
SHARDS = 12

_HANDLER = textwrap.dedent(
    """
    def handle(event, context):
        return None
    """
)


class Bench:
    def __init__(self, endpoint: str, workdir: Path, dynamodb: Any, table: str, arn: str) -> None:
        self.workdir = workdir
        self.dynamodb = dynamodb
        self.table = table
        (workdir / "bench_handler.py").write_text(_HANDLER)
        config = {
            "aws": {"region": REGION, "endpoint_url": endpoint},
            "http": {"listen": "127.0.0.1:0"},
            "state": {"dynamodb": {"table": table}},
            "functions": {"fn": {"handler": "bench_handler:handle"}},
            "event_source_mappings": [{"EventSourceArn": arn, "FunctionName": "fn", "StartingPosition": "LATEST"}],
        }
        self.path = workdir / "esm.yaml"
        self.path.write_text(yaml.safe_dump(config))
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str) -> None:
        env = {**os.environ, "ESM_REPLICA_NAME": name}
        with (self.workdir / f"{name}.log").open("ab") as err:
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "esm", "run", "--config", str(self.path), "--log-format", "json"],
                stdout=subprocess.DEVNULL,
                stderr=err,
                env=env,
            )

    async def counts(self) -> Counter[str | None]:
        try:
            items = (await self.dynamodb.scan(TableName=self.table, ConsistentRead=True))["Items"]
        except self.dynamodb.exceptions.ResourceNotFoundException:
            return Counter()
        owners = []
        for item in items:
            if item.get("entityType", {}).get("S") == "lease":
                owner = item.get("leaseOwner", {}).get("S")
                owners.append(owner.rsplit("-", 1)[0] if owner else None)
        return Counter(owners)

    async def until(self, names: list[str], within: float = 300) -> float:
        """Seconds until every lease is owned by `names`, each within one of the fair share."""
        started = time.monotonic()
        share = -(-SHARDS // len(names))
        while time.monotonic() - started < within:
            counts = await self.counts()
            if sum(counts[n] for n in names) == SHARDS and all(share - 1 <= counts[n] <= share for n in names):
                return time.monotonic() - started
            await asyncio.sleep(0.2)
        raise RuntimeError(f"no convergence on {names} within {within} s: {dict(await self.counts())}")

    def stop_all(self) -> None:
        for proc in self.procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            proc.wait(60)


async def main(endpoint: str) -> list[Result]:
    session = get_session()
    kw: dict[str, Any] = {"region_name": REGION, "endpoint_url": endpoint}
    async with session.create_client("kinesis", **kw) as kinesis, session.create_client("dynamodb", **kw) as ddb:
        results: dict[str, float] = {}
        for scenario in ("kill -9", "SIGTERM", "new replica"):
            name = f"bench-{scenario.replace(' ', '-').replace('9', 'nine')}-{int(time.time())}"
            await kinesis.create_stream(StreamName=name, ShardCount=SHARDS)
            arn = (await kinesis.describe_stream_summary(StreamName=name))["StreamDescriptionSummary"]["StreamARN"]
            with tempfile.TemporaryDirectory() as tmp:
                bench = Bench(endpoint, Path(tmp), ddb, f"{name}-leases", arn)
                try:
                    for r in ("r1", "r2", "r3"):
                        bench.start(r)
                    await bench.until(["r1", "r2", "r3"])
                    await asyncio.sleep(10)  # settled: a few balance rounds without changes
                    if scenario == "new replica":
                        bench.start("r4")
                        results[scenario] = await bench.until(["r1", "r2", "r3", "r4"])
                    else:
                        proc = bench.procs.pop("r1")
                        proc.send_signal(signal.SIGKILL if scenario == "kill -9" else signal.SIGTERM)
                        results[scenario] = await bench.until(["r2", "r3"])
                        proc.wait(60)
                finally:
                    bench.stop_all()
    print(
        f"\n== 5. Replicas: 3 esm processes, {SHARDS}-shard stream (moto), default lease timings "
        "(failover 10 s, balance every 5 s)"
    )
    print("scenario       esm      KCL defaults (LEASES.md §2.3)                         faster than KCL's best case?")
    rows = [
        ("kill -9", 20.0, "20-40 s"),
        ("SIGTERM", 20.0, "20-40 s (KCL does not release leases on shutdown)"),
        ("new replica", 60.0, "~60 s for 3 shards (1 steal / 20 s)"),
    ]
    out = []
    for scenario, kcl, text in rows:
        esm = results[scenario]
        print(f"{scenario:<12} {esm:5.1f} s   {text:<52}   {verdict(esm < kcl)}")
        out.append(Result(f"5. replicas: {scenario}", f"{esm:.1f} s", f"< {kcl:.0f} s (KCL's best)", esm < kcl))
    return out
