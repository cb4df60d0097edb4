"""Kill -9 in the middle of a stream, restart: every record delivered, only in-flight batches repeated.

`esm run` runs as a real subprocess against the moto server (Kinesis over real HTTP) with its
checkpoints in a SQLite file. A handler written into the test's folder appends every record it
receives to a file (one write per batch, before it returns), so a record counts as delivered
the moment the function saw it, as at-least-once delivery means.
"""

from __future__ import annotations

import asyncio
import random
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REGION, unique
from tests.e2e.harness import wait_for, write_config
from tests.reliability.esm_process import EsmProcess

pytestmark = pytest.mark.e2e

_HANDLER = textwrap.dedent(
    """
    import base64, os, time
    from pathlib import Path

    OUT = Path(__file__).with_name("delivered.log")

    def handle(event, context):
        lines = "".join(
            r["eventID"].split(":")[0] + " " + base64.b64decode(r["kinesis"]["data"]).decode() + "\\n"
            for r in event["Records"]
        )
        fd = os.open(OUT, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, lines.encode())
        finally:
            os.close(fd)
        time.sleep(0.15)
    """
)

RECORDS = 240
BATCH = 10
KILLS = 5


def _delivered(tmp_path: Path) -> list[tuple[str, int]]:
    log = tmp_path / "delivered.log"
    if not log.exists():
        return []
    out = []
    for line in log.read_text().splitlines():
        shard, n = line.split()
        out.append((shard, int(n)))
    return out


class TestCrashRecovery:
    """A crash at any moment loses nothing; it may only repeat the batches in flight."""

    async def test_kill_9_repeatedly_while_records_flow(self, tmp_path: Path, moto_endpoint: str, clients: Any) -> None:
        """Every record arrives at least once, per-shard order holds, duplicates stay within in-flight batches."""
        (tmp_path / "crash_handler.py").write_text(_HANDLER)
        name = unique("crash")
        async with clients.client("kinesis") as kinesis:
            await kinesis.create_stream(StreamName=name, ShardCount=2)
            arn = (await kinesis.describe_stream_summary(StreamName=name))["StreamDescriptionSummary"]["StreamARN"]
            config = write_config(
                tmp_path,
                {
                    "aws": {"region": REGION, "endpoint_url": moto_endpoint},
                    "http": {"listen": "127.0.0.1:0"},
                    "state": {"sqlite": "./state.db"},
                    "streams": {"idle_poll_interval": 0.05},
                    "functions": {"fn": {"handler": "crash_handler:handle", "timeout": 10}},
                    "event_source_mappings": [
                        {
                            "EventSourceArn": arn,
                            "FunctionName": "fn",
                            "StartingPosition": "TRIM_HORIZON",
                            "BatchSize": BATCH,
                            "MaximumBatchingWindowInSeconds": 1,
                        }
                    ],
                },
            )

            async def produce() -> None:
                # One producer, one record at a time: moto loses records under concurrent puts.
                for i in range(RECORDS):
                    await kinesis.put_record(StreamName=name, Data=str(i).encode(), PartitionKey=f"k{i % 7}")
                    await asyncio.sleep(0.02)

            producer = asyncio.create_task(produce())
            rng = random.Random(20261122)  # noqa: S311 - test randomness, seeded for repeatability
            proc = EsmProcess(config, tmp_path / "stderr.log")
            kills = 0
            while kills < KILLS:
                proc.start()
                try:
                    seen = len(_delivered(tmp_path))
                    await wait_for(lambda s=seen: len(_delivered(tmp_path)) > s or producer.done(), within=30)
                    await asyncio.sleep(rng.uniform(0.05, 0.6))
                finally:
                    proc.kill()
                kills += 1
            await producer
            proc.start()
            try:
                await wait_for(lambda: proc.logged("daemon_started"), within=60)
                await wait_for(lambda: {n for _, n in _delivered(tmp_path)} >= set(range(RECORDS)), within=60)
                await asyncio.sleep(0.5)
            finally:
                code = proc.stop(30)
        assert code == 0, proc.tail()
        delivered = _delivered(tmp_path)
        numbers = [n for _, n in delivered]
        assert set(numbers) == set(range(RECORDS))
        # Per shard, the first delivery of each record follows the shard's order (put order per shard).
        by_shard: dict[str, list[int]] = {}
        first_seen: set[int] = set()
        for shard, n in delivered:
            if n not in first_seen:
                first_seen.add(n)
                by_shard.setdefault(shard, []).append(n)
        for firsts in by_shard.values():
            assert firsts == sorted(firsts)
        duplicates = len(numbers) - RECORDS
        # A kill repeats at most the batches in flight: one batch per shard (ParallelizationFactor 1).
        bound = KILLS * BATCH * len(by_shard)
        print(f"\ncrash test: {RECORDS} records, {KILLS} kills, {duplicates} duplicates (bound {bound})")
        assert duplicates <= bound
