"""The DynamoDB Streams case of `make bench`: CPU per record against a bare GetRecords loop (moto).

Method: a moto server runs in its own process (its CPU is not counted; dynalite has no Streams
API and moto's stream has one shard that never closes, ../shared/TESTING.md). One table with a
NEW_AND_OLD_IMAGES stream gets `records` items (a string key, a number and a 400-byte string,
written with BatchWriteItem), so its one stream shard holds that many INSERT records. Each
contender reads the shard from TRIM_HORIZON, again and again (reading consumes nothing; each esm
run is a new mapping with a new state file), and hands batches of 100 to the same in-process
handler, which only counts them:

- the baseline is the loop a user would write by hand: DescribeStream for the shard,
  GetShardIterator, then GetRecords with the page size esm uses (1,000: the DynamoDB Streams
  maximum), each page handed over in batches of 100 as the raw records;
- esm is a daemon with one mapping on the stream (BatchSize 100 by default, TRIM_HORIZON, a
  SQLite checkpoint file), which also builds each Lambda record (DynamoDB JSON back on the wire
  form, eventVersion, region, ARN), the event, metrics, the handler's thread and context, and a
  durable checkpoint after every batch;
- for information, the bare loop with esm's timestamp parser (`esm.aws.parse_timestamp_fast`;
  botocore's default builds a dateutil local zone for each ApproximateCreationDateTime): esm /
  that loop is esm's own overhead, like for like.

This process's CPU time (all threads) is measured from the moment the contender is ready (its
client open; for esm, the daemon serving) until the last record was handed over; the contenders
run `rounds` times, alternately, after one esm run that is not counted (imports, the first SQLite
file). The figure is the median of the rounds' ratios. esm waits 0.25 s between two reads
of a shard (Lambda's 4 reads a second): that costs wall time, not CPU.
"""

from __future__ import annotations

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
    moto_server,
)
from esm.config import load_config
from esm.daemon import Daemon

BATCH = 100
PAGE = 1000  # esm's GetRecords Limit: min(1,000 (the DynamoDB Streams maximum), max(2 x 100, 1,000))


def _client(service: str, endpoint: str) -> Any:
    return get_session().create_client(
        service, region_name=REGION, endpoint_url=endpoint, aws_access_key_id="bench", aws_secret_access_key="bench"
    )


async def _fill(endpoint: str, table: str, count: int) -> str:
    """A table with a stream and `count` items; returns the stream's ARN."""
    async with _client("dynamodb", endpoint) as ddb:
        description = (
            await ddb.create_table(
                TableName=table,
                KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                BillingMode="PAY_PER_REQUEST",
                StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
            )
        )["TableDescription"]
        payload = "x" * 400
        for i in range(0, count, 25):
            items = [
                {"PutRequest": {"Item": {"id": {"S": f"item-{j:06d}"}, "n": {"N": str(j)}, "payload": {"S": payload}}}}
                for j in range(i, min(count, i + 25))
            ]
            await ddb.batch_write_item(RequestItems={table: items})
        return str(description["LatestStreamArn"])


async def run_baseline(endpoint: str, arn: str, count: int, fast_timestamps: bool = False) -> tuple[float, float]:
    """The hand-written loop; (CPU seconds, wall seconds) from the moment its client is open.

    `fast_timestamps`: its client parses timestamps as esm's do (`esm.aws.parse_timestamp_fast`).
    """
    async with aws_client("dynamodbstreams", endpoint, fast_timestamps=fast_timestamps) as streams:
        HANDLED.reset()
        clock = Clock()
        shard = (await streams.describe_stream(StreamArn=arn))["StreamDescription"]["Shards"][0]["ShardId"]
        it = (await streams.get_shard_iterator(StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON"))[
            "ShardIterator"
        ]
        await hand_over_shard(streams, it, count, PAGE, BATCH)
        return clock.spent()


async def run_esm(endpoint: str, arn: str, count: int, workdir: Path) -> tuple[float, float]:
    """The esm daemon with the counting handler, until every record was handed to it (from serving on)."""
    config = {
        "aws": {"region": REGION, "endpoints": {"dynamodbstreams": endpoint}},
        "http": {"listen": "127.0.0.1:0"},
        "state": {"sqlite": str(workdir / f"ddb-{time.time_ns()}.db")},
        "functions": {"fn": {"handler": "benchmarks._common:count_handler", "timeout": 10}},
        "event_source_mappings": [{"EventSourceArn": arn, "FunctionName": "fn", "StartingPosition": "TRIM_HORIZON"}],
    }
    path = workdir / "bench-dynamodb.yaml"
    path.write_text(yaml.safe_dump(config))
    daemon = Daemon(load_config(path))
    return await esm_cpu(daemon, count)


async def measure_cpu(endpoint: str, records: int, rounds: int, workdir: Path) -> dict[str, list[tuple[float, float]]]:
    """(CPU seconds, wall seconds) per round for each contender, alternating which goes first.

    Every run reads the same stream from TRIM_HORIZON (reading consumes nothing; each esm run is a
    new mapping state), so both read exactly the same records.
    """
    results: dict[str, list[tuple[float, float]]] = {"baseline": [], "esm": [], "baseline+ts": []}
    arn = await _fill(endpoint, f"bench-cpu-{time.time_ns()}", records)
    await run_esm(endpoint, arn, records, workdir)  # warm-up (imports, first SQLite file), not counted
    for r in range(rounds):
        for name in ("baseline", "esm", "baseline+ts") if r % 2 == 0 else ("baseline+ts", "esm", "baseline"):
            if name.startswith("baseline"):
                results[name].append(await run_baseline(endpoint, arn, records, name == "baseline+ts"))
            else:
                results[name].append(await run_esm(endpoint, arn, records, workdir))
    return results


async def cpu(records: int = 5000, rounds: int = 7) -> list[Result]:
    """Figure 2 for DynamoDB Streams: run the contenders on one moto server and print the ratio."""
    with moto_server() as endpoint, tempfile.TemporaryDirectory() as tmp:
        results = await measure_cpu(endpoint, records, rounds, Path(tmp))
    print(
        f"\n== 2. DynamoDB Streams: CPU per record, the same {records} INSERT records read {rounds} times by each "
        f"contender, alternating; pages of {PAGE}, batches of {BATCH}, counting handler, moto in its own process"
    )
    return cpu_result("DynamoDB", "records", records, results)
