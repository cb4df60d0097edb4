"""AWS faults: esm behind a fault-injecting proxy keeps running, backs off and loses nothing.

The real daemon (in-process, `tests.e2e.harness.running_daemon`) reaches every AWS service through
`FaultProxy` (tests/reliability/fault_proxy.py): SQS, DynamoDB Streams, the DynamoDB lease table and
the SQS on-failure destination on the moto server, Kinesis on kinesalite. On about a quarter of the
calls of every operation the proxy answers with the service's throttling error, a 500/503, a reset
connection, a reset after the emulator applied the call (the answer is lost), or forwards the call
late. Meanwhile one daemon runs four mappings: an SQS standard queue (some batches slow enough for
the visibility heartbeat, ChangeMessageVisibilityBatch), an SQS FIFO queue, a DynamoDB stream and a
two-shard Kinesis stream whose "poison" records fail and go to an SQS on-failure destination.

What must hold: every message and record reaches the function (or, for poison records, the
destination) at least once; FIFO and per-shard order hold apart from repeats; the lease-table
checkpoint never passes a record before it was processed or delivered to the destination (sampled
throughout from the table itself); `/healthz` answers 200 the whole time and the daemon exits 0;
the proxy injected every kind of fault, on every operation named in the issue, and esm's metrics
count them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from esm.aws import ClientFactory
from esm.config import AwsConfig
from esm.errors import classify
from tests.conftest import REGION, active_stream, unique
from tests.e2e.harness import RECORDER, Call, create_queue, queue_counts, running_daemon, wait_for
from tests.reliability.fault_proxy import ALL_FAULTS, Exchange, Fault, FaultProxy
from tests.reliability.moto_sqs import sqs_receive_fixed
from tests.reliability.observe import get_text, metric_samples, until, watch_health

pytestmark = pytest.mark.e2e

RATE = 0.25  # share of the calls of every operation that fail
LEASE_RATE = 0.2  # the lease table: renewals that fail too often in a row give the lease up (still safe)
VISIBILITY = 4  # seconds; a response lost by the proxy hides its messages this long
STD_COUNT, FIFO_COUNT, FIFO_GROUPS, DDB_COUNT, KINESIS_COUNT = 60, 32, 4, 40, 48
SLOW_BODIES = {"std-7", "std-23", "std-41"}  # held past half the visibility timeout: heartbeats
POISON = {f"kin-{i}" for i in (5, 17, 18, 30, 44)}


@pytest.fixture(autouse=True)
def _fresh_recorder() -> None:
    RECORDER.calls.clear()
    RECORDER.behaviours.clear()


@pytest.fixture
def moto_sqs_fixed() -> Iterator[None]:
    """moto's SQS made to keep SQS's promises under concurrency for this test (tests/reliability/moto_sqs.py):
    each message handed to one receive, FIFO group order held; a repeat or a reordering is then esm's."""
    with sqs_receive_fixed():
        yield


@pytest.fixture
async def kinesalite(kinesalite_endpoint: str) -> AsyncIterator[Any]:
    """A raw Kinesis client on kinesalite (not through the proxy)."""
    async with ClientFactory(AwsConfig(region=REGION, endpoint_url=kinesalite_endpoint)).client("kinesis") as c:
        yield c


@pytest.fixture
async def dynamodb(clients: ClientFactory) -> AsyncIterator[Any]:
    """A raw DynamoDB client on moto (not through the proxy)."""
    async with clients.client("dynamodb") as c:
        yield c


# ----------------------------------------------------------------------------------------------
# the proxy itself


class TestFaultProxy:
    """The proxy answers in each service's wire format, as the real aiobotocore clients parse it."""

    async def test_each_fault_reaches_the_client_as_aws_would_send_it(self, moto_endpoint: str) -> None:
        """Throttles and 5xx carry the service's error code; resets are transport errors; all retriable."""
        expected_throttles = {
            "sqs": "RequestThrottled",
            "kinesis": "LimitExceededException",
            "dynamodb": "ProvisionedThroughputExceededException",
            "dynamodbstreams": "LimitExceededException",
        }
        seen: dict[tuple[Fault, str], str] = {}
        async with FaultProxy(moto_endpoint, default_rate=1.0, slow=(0.05, 0.1)) as proxy:
            proxy.enabled = False
            factory = ClientFactory(AwsConfig(region=REGION, endpoint_url=proxy.endpoint))
            async with (
                factory.client("sqs") as sqs,
                factory.client("kinesis") as kinesis,
                factory.client("dynamodb") as ddb,
                factory.client("dynamodbstreams") as streams,
            ):
                url = (await sqs.create_queue(QueueName=unique("proxy")))["QueueUrl"]
                stream_arn = f"arn:aws:dynamodb:{REGION}:123456789012:table/none/stream/2026-01-01T00:00:00.000"
                for kind in ALL_FAULTS:
                    proxy.faults = (kind,)
                    proxy.enabled = True
                    calls = {
                        "sqs": sqs.send_message(QueueUrl=url, MessageBody=kind.value),
                        "kinesis": kinesis.list_shards(StreamName=unique("none")),
                        "dynamodb": ddb.get_item(TableName=unique("none"), Key={"k": {"S": "a"}}),
                        "dynamodbstreams": streams.describe_stream(StreamArn=stream_arn),
                    }
                    for service, call in calls.items():
                        try:
                            await call
                            seen[(kind, service)] = "answered"
                        except Exception as exc:  # noqa: BLE001 - what the client raised is the result
                            error = classify("call", exc)
                            seen[(kind, service)] = error.code if error.retriable else f"fatal {error.code}"
                    proxy.enabled = False
                # Sent: the lost response's message and the slow one's (applied, though one answer was lost).
                received = await sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)
                assert sorted(m["Body"] for m in received["Messages"]) == ["lost_response", "slow"]
            assert proxy.by_kind() == Counter({kind: 4 for kind in ALL_FAULTS})
        for service, code in expected_throttles.items():
            assert seen[(Fault.THROTTLE, service)] == code
            assert seen[(Fault.SERVER_ERROR, service)] in {"InternalFailure", "InternalServerError"}
            assert seen[(Fault.RESET, service)] == "EndpointConnectionError"
            assert seen[(Fault.LOST_RESPONSE, service)] == "EndpointConnectionError"
        assert seen[(Fault.SLOW, "sqs")] == "answered"  # forwarded late; the others get moto's own answer
        assert seen[(Fault.SLOW, "dynamodb")] == "fatal ResourceNotFoundException"


# ----------------------------------------------------------------------------------------------
# the daemon behind the proxy


def _kinesis_data(record: dict[str, Any]) -> str:
    return base64.b64decode(record["kinesis"]["data"]).decode()


@dataclass(frozen=True)
class _Sample:
    """The lease table's checkpoints as read at one moment (monotonic and wall clock after the read)."""

    mono: float
    wall: float
    checkpoints: dict[tuple[str, str], str]  # (mapping uuid, shard) -> sequence number


async def _sample_checkpoints(dynamodb: Any, table: str, out: list[_Sample], stop: asyncio.Event) -> None:
    """Read every checkpoint from the lease table (directly on moto) every 0.3 s until stopped."""
    while not stop.is_set():
        with contextlib.suppress(Exception):  # the table does not exist yet at first
            items = (await dynamodb.scan(TableName=table, ConsistentRead=True))["Items"]
            cps = {
                (i["mappingId"]["S"], i["shardId"]["S"]): i["checkpoint"]["S"]
                for i in items
                if i.get("entityType", {}).get("S") == "lease"
                and i.get("checkpointPosition", {}).get("S") == "AFTER_SEQUENCE_NUMBER"
            }
            out.append(_Sample(time.monotonic(), time.time(), cps))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.3)


def _no_gap(order: list[int]) -> bool:
    """True if each delivery is at most one past the furthest delivered so far (repeats allowed)."""
    furthest = -1
    for i in order:
        if i > furthest + 1:
            return False
        furthest = max(furthest, i)
    return True


async def _receive_all(sqs: Any, url: str) -> list[dict[str, Any]]:
    """Drain a queue (directly on moto): every message with its SentTimestamp."""
    out: list[dict[str, Any]] = []
    while True:
        resp = await sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0, MessageSystemAttributeNames=["SentTimestamp"]
        )
        messages = resp.get("Messages", [])
        if not messages:
            return out
        out.extend(messages)
        await sqs.delete_message_batch(
            QueueUrl=url, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)]
        )


class TestAwsFaults:
    """SQS, FIFO, DynamoDB Streams, Kinesis, the lease table and a destination, all behind faults."""

    @pytest.mark.usefixtures("moto_sqs_fixed")
    async def test_nothing_is_lost_and_esm_keeps_running(
        self,
        tmp_path: Path,
        moto_endpoint: str,
        kinesalite_endpoint: str,
        sqs: Any,
        dynamodb: Any,
        kinesalite: Any,
        figures: Callable[[str], None],
    ) -> None:
        """Every record is delivered at least once, in order, never checkpointed early; faults are counted."""
        # ---- resources, created directly on the emulators
        std_url, std_arn = await create_queue(sqs, unique("std"), VisibilityTimeout=VISIBILITY)
        fifo_url, fifo_arn = await create_queue(
            sqs, unique("fifo") + ".fifo", VisibilityTimeout=VISIBILITY, ContentBasedDeduplication="true"
        )
        dest_url, dest_arn = await create_queue(sqs, unique("dest"))
        table = unique("items")
        created = await dynamodb.create_table(
            TableName=table,
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"},
        )
        ddb_stream_arn = created["TableDescription"]["LatestStreamArn"]
        stream = unique("faults")
        await kinesalite.create_stream(StreamName=stream, ShardCount=2)
        kinesis_arn = (await active_stream(kinesalite, stream))["StreamARN"]
        lease_table = unique("leases")

        for i in range(STD_COUNT):
            await sqs.send_message(QueueUrl=std_url, MessageBody=f"std-{i}")
        for i in range(FIFO_COUNT):
            group = f"g{i % FIFO_GROUPS}"
            await sqs.send_message(QueueUrl=fifo_url, MessageBody=f"{group}:{i // FIFO_GROUPS}", MessageGroupId=group)
        kinesis_put: dict[str, tuple[str, str]] = {}  # data -> (shard, sequence number)

        async def put_kinesis(start: int, end: int) -> None:
            for i in range(start, end):
                r = await kinesalite.put_record(StreamName=stream, Data=f"kin-{i}".encode(), PartitionKey=f"pk-{i}")
                kinesis_put[f"kin-{i}"] = (r["ShardId"], r["SequenceNumber"])

        async def put_items(start: int, end: int) -> None:
            for i in range(start, end):
                await dynamodb.put_item(TableName=table, Item={"id": {"S": f"item-{i}"}, "n": {"N": str(i)}})

        await put_kinesis(0, KINESIS_COUNT // 2)
        await put_items(0, DDB_COUNT // 2)

        # ---- the functions (in-process handlers that record every call)
        def std(event: dict[str, Any], context: Any) -> None:
            if any(r["body"] in SLOW_BODIES for r in event["Records"]):
                time.sleep(VISIBILITY / 2 + 0.3)  # the heartbeat extends the batch's visibility meanwhile

        def kinesis_fn(event: dict[str, Any], context: Any) -> None:
            if any(_kinesis_data(r) in POISON for r in event["Records"]):
                raise ValueError("poison record")

        RECORDER.behaviours.update({"f-std": std, "f-kin": kinesis_fn})

        uuids = {"std": "0000aaaa-0000-4000-8000-000000000001", "fifo": "0000aaaa-0000-4000-8000-000000000002"}
        uuids |= {"ddb": "0000aaaa-0000-4000-8000-000000000003", "kin": "0000aaaa-0000-4000-8000-000000000004"}
        handler = "tests.e2e.handlers:record"
        moto_proxy = FaultProxy(
            moto_endpoint,
            default_rate=RATE,
            # The table is made ready once at startup (each failure there waits a doubling backoff):
            # its first call fails, the rest of that start-up is left alone.
            rates={
                "dynamodb": LEASE_RATE,
                "dynamodb.DescribeTable": 0.0,
                "dynamodb.CreateTable": 0.0,
                "sqs.SendMessage": 0.4,
            },
            first_call_fails=[
                "sqs.DeleteMessageBatch",
                "sqs.ChangeMessageVisibilityBatch",
                "sqs.SendMessage",
                "dynamodbstreams.GetShardIterator",
                "dynamodbstreams.DescribeStream",
                "dynamodb.DescribeTable",
                "dynamodb.Scan",
                "dynamodb.UpdateItem",
            ],
            seed=11,
        )
        kinesis_proxy = FaultProxy(
            kinesalite_endpoint,
            default_rate=RATE,
            first_call_fails=["kinesis.GetShardIterator", "kinesis.ListShards"],
            seed=12,
        )
        samples: list[_Sample] = []
        health: list[int] = []
        stop_watching = asyncio.Event()
        daemon_port: int | None = None
        async with moto_proxy, kinesis_proxy:
            config = {
                "aws": {
                    "region": REGION,
                    "endpoint_url": moto_proxy.endpoint,
                    "endpoints": {"kinesis": kinesis_proxy.endpoint},
                },
                "state": {"dynamodb": {"table": lease_table, "create": True, "failover_time": 6}},
                "streams": {
                    "idle_poll_interval": 0.1,
                    "discovery_interval": 2,
                    "retry_delay": {"initial": 0.1, "multiplier": 2, "maximum": 1},
                    "destination_retry_delay": {"initial": 0.1, "multiplier": 2, "maximum": 1},
                },
                "metrics": {"queue_attributes_interval": 2},
                "functions": {
                    "f-std": {"handler": handler, "timeout": VISIBILITY - 0.5},
                    "f-fifo": {"handler": handler, "timeout": VISIBILITY - 0.5},
                    "f-ddb": {"handler": handler, "timeout": 10},
                    "f-kin": {"handler": handler, "timeout": 10},
                },
                "event_source_mappings": [
                    {"UUID": uuids["std"], "EventSourceArn": std_arn, "FunctionName": "f-std", "BatchSize": 10},
                    {"UUID": uuids["fifo"], "EventSourceArn": fifo_arn, "FunctionName": "f-fifo", "BatchSize": 10},
                    {
                        "UUID": uuids["ddb"],
                        "EventSourceArn": ddb_stream_arn,
                        "FunctionName": "f-ddb",
                        "StartingPosition": "TRIM_HORIZON",
                        "BatchSize": 10,
                    },
                    {
                        "UUID": uuids["kin"],
                        "EventSourceArn": kinesis_arn,
                        "FunctionName": "f-kin",
                        "StartingPosition": "TRIM_HORIZON",
                        "BatchSize": 8,
                        "BisectBatchOnFunctionError": True,
                        "MaximumRetryAttempts": 0,
                        "DestinationConfig": {"OnFailure": {"Destination": dest_arn}},
                    },
                ],
            }
            watchers = [
                asyncio.create_task(_sample_checkpoints(dynamodb, lease_table, samples, stop_watching)),
                asyncio.create_task(watch_health(lambda: daemon_port, health, stop_watching)),
            ]
            try:
                async with running_daemon(tmp_path, config) as daemon:
                    daemon_port = daemon.http_port
                    await put_kinesis(KINESIS_COUNT // 2, KINESIS_COUNT)
                    await put_items(DDB_COUNT // 2, DDB_COUNT)

                    def everything_processed() -> bool:  # the handlers returned (not just started)
                        return (
                            len(_bodies(_done("f-std"))) >= STD_COUNT
                            and len(_bodies(_done("f-fifo"))) >= FIFO_COUNT
                            and len(_ddb_keys(_done("f-ddb"))) >= DDB_COUNT
                            and _kinesis_ok(_done("f-kin")) >= set(kinesis_put) - POISON
                        )

                    def missing() -> str:
                        std_left = {f"std-{i}" for i in range(STD_COUNT)} - _bodies(_done("f-std"))
                        kinesis_left = set(kinesis_put) - POISON - _kinesis_ok(_done("f-kin"))
                        return (
                            f"not processed: std {sorted(std_left)}, fifo {len(_bodies(_done('f-fifo')))} "
                            f"of {FIFO_COUNT}, ddb {len(_ddb_keys(_done('f-ddb')))} of {DDB_COUNT}, "
                            f"kinesis {sorted(kinesis_left)}; {moto_proxy.summary()}; {kinesis_proxy.summary()}"
                        )

                    # Under faults: everything is processed.
                    await until(everything_processed, 60, missing)
                    assert not daemon.stop_requested.is_set()
                    faulted_health = list(health)
                    # Faults off: the queues drain, the checkpoints reach the last records, the
                    # destination has every poison record.
                    moto_proxy.enabled = kinesis_proxy.enabled = False
                    last = _last_sequences(kinesis_put)

                    async def settled() -> bool:
                        cps = samples[-1].checkpoints if samples else {}
                        ddb_last = str(max(_ddb_sequences(RECORDER.calls_of("f-ddb"))))
                        return (
                            all(cps.get((uuids["kin"], s)) == seq for s, seq in last.items())
                            and [q for (u, _), q in cps.items() if u == uuids["ddb"]] == [ddb_last]
                            and await queue_counts(sqs, std_url) == (0, 0)
                            and await queue_counts(sqs, fifo_url) == (0, 0)
                        )

                    async def unsettled() -> str:
                        return (
                            f"not settled: last sample {samples[-1] if samples else None}, expected Kinesis "
                            f"{last}, DynamoDB {max(_ddb_sequences(RECORDER.calls_of('f-ddb')))}; queues "
                            f"{await queue_counts(sqs, std_url)}, {await queue_counts(sqs, fifo_url)}"
                        )

                    await until(settled, 30, unsettled)
                    metrics_text = await get_text(daemon.http_port, "/metrics")
                    stop_watching.set()  # before the daemon stops serving /healthz
                    await asyncio.gather(*watchers)
            finally:
                stop_watching.set()
                await asyncio.gather(*watchers)
        dest_messages = await _receive_all(sqs, dest_url)
        destination = [json.loads(m["Body"]) for m in dest_messages]

        # ---- at least once, and in order
        std_bodies = RECORDER.bodies_of("f-std")
        assert set(std_bodies) == {f"std-{i}" for i in range(STD_COUNT)}
        fifo_bodies = RECORDER.bodies_of("f-fifo")
        assert set(fifo_bodies) == {f"g{i % FIFO_GROUPS}:{i // FIFO_GROUPS}" for i in range(FIFO_COUNT)}
        for g in range(FIFO_GROUPS):
            order = [int(b.split(":")[1]) for b in fifo_bodies if b.startswith(f"g{g}:")]
            assert _no_gap(order), f"FIFO group g{g} was delivered out of order: {order}" + str(
                [(round(c.started, 2), round(c.ended, 2), c.bodies) for c in RECORDER.calls_of("f-fifo")]
            )
        ddb_seqs = _ddb_sequences(RECORDER.calls_of("f-ddb"))
        assert _ddb_keys(RECORDER.calls_of("f-ddb")) == {f"item-{i}" for i in range(DDB_COUNT)}
        assert _no_gap([sorted(set(ddb_seqs)).index(s) for s in ddb_seqs]), "DynamoDB stream records out of order"
        kinesis_calls = RECORDER.calls_of("f-kin")
        for shard in {s for s, _ in kinesis_put.values()}:
            in_shard = sorted((int(q), d) for d, (s, q) in kinesis_put.items() if s == shard)
            index = {d: n for n, (_, d) in enumerate(in_shard)}
            order = [
                index[_kinesis_data(r)]
                for c in kinesis_calls
                for r in c.event["Records"]
                if r["eventID"].startswith(shard + ":")
            ]
            assert _no_gap(order), f"Kinesis shard {shard} was delivered out of order"
        assert _kinesis_ok(kinesis_calls) == set(kinesis_put) - POISON
        # Each poison record went to the destination (alone: bisected down to one record), maybe more than once.
        reported = {
            (d["KinesisBatchInfo"]["shardId"], d["KinesisBatchInfo"]["startSequenceNumber"]) for d in destination
        }
        assert all(d["KinesisBatchInfo"]["batchSize"] == 1 for d in destination)
        assert reported == {kinesis_put[p] for p in POISON}

        # ---- never checkpointed before processed (or delivered to the destination)
        assert samples, "the lease table was never read"
        processed = _processed_at(kinesis_calls, kinesis_put) | _ddb_processed_at(RECORDER.calls_of("f-ddb"))
        poison_at = {kinesis_put[p]: p for p in POISON}
        delivered_at: dict[str, float] = {}  # poison record -> first SentTimestamp (ms) of its failure record
        for m, d in zip(dest_messages, destination, strict=True):
            key = poison_at[(d["KinesisBatchInfo"]["shardId"], d["KinesisBatchInfo"]["startSequenceNumber"])]
            sent = float(m["Attributes"]["SentTimestamp"])
            delivered_at[key] = min(delivered_at.get(key, sent), sent)
        ddb_records = _ddb_records(RECORDER.calls_of("f-ddb"))
        checked = 0
        for sample in samples:
            for (mapping, shard), cp in sample.checkpoints.items():
                if mapping == uuids["kin"]:
                    covered = [d for d, (s, q) in kinesis_put.items() if s == shard and int(q) <= int(cp)]
                else:  # moto's DynamoDB stream has one shard
                    covered = [key for key, q in ddb_records.items() if int(q) <= int(cp)]
                for key in covered:
                    checked += 1
                    if key in POISON:
                        assert delivered_at.get(key, float("inf")) <= sample.wall * 1000, (
                            f"checkpoint {cp} of {shard} passed poison record {key} before it reached the destination"
                        )
                    else:
                        assert processed.get(key, float("inf")) <= sample.mono, (
                            f"checkpoint {cp} of {shard} passed {key} before the function processed it"
                        )
        assert checked > 0

        # ---- the process stayed up, and every kind of fault was injected and counted
        assert faulted_health, "/healthz was never read while faults were on"
        assert set(health) == {200}, f"/healthz answered {Counter(health)}"
        injected = moto_proxy.by_kind() + kinesis_proxy.by_kind()
        assert set(injected) == set(ALL_FAULTS), injected
        for operation in (
            "sqs.ReceiveMessage",
            "sqs.DeleteMessageBatch",
            "sqs.ChangeMessageVisibilityBatch",
            "sqs.SendMessage",
            "dynamodbstreams.GetRecords",
            "dynamodbstreams.GetShardIterator",
            "dynamodbstreams.DescribeStream",
            "dynamodb.UpdateItem",
            "dynamodb.Scan",
            "dynamodb.DescribeTable",
        ):
            assert moto_proxy.faults_on(operation) > 0, f"no fault on {operation}: {moto_proxy.summary()}"
        for operation in ("kinesis.GetRecords", "kinesis.GetShardIterator", "kinesis.ListShards"):
            assert kinesis_proxy.faults_on(operation) > 0, f"no fault on {operation}: {kinesis_proxy.summary()}"
        # Backoff: a shard reads again with the same iterator only after streams.retry_delay (>= 0.1 s).
        waits = _retry_waits(kinesis_proxy.history, "kinesis.GetRecords", "ShardIterator")
        assert waits, "no failed GetRecords was retried"
        assert min(waits) >= 0.1, sorted(waits)[:5]
        errors = metric_samples(metrics_text, "esm_source_errors_total")
        by_mapping: Counter[str] = Counter()
        codes: set[str] = set()
        for labels, value in errors:
            by_mapping[labels["event_source_mapping_uuid"]] += int(value)
            if value > 0:
                codes.add(labels["code"])
        assert all(by_mapping[u] > 0 for u in uuids.values()), by_mapping
        assert {"RequestThrottled", "LimitExceededException", "ProvisionedThroughputExceededException"} <= codes, codes
        assert codes & {"InternalFailure", "InternalServerError", "ServiceUnavailable"}, codes
        assert "EndpointConnectionError" in codes, codes
        destination_failures = metric_samples(metrics_text, "esm_destination_delivery_failures_total")
        assert sum(v for labels, v in destination_failures if labels["event_source_mapping_uuid"] == uuids["kin"]) > 0

        figures(
            f"AWS faults: {sum(injected.values())} injected "
            f"({', '.join(f'{k.value} {n}' for k, n in sorted(injected.items()))}) over "
            f"{sum(moto_proxy.calls.values()) + sum(kinesis_proxy.calls.values())} calls; delivered "
            f"std {len(std_bodies)}/{STD_COUNT}, fifo {len(fifo_bodies)}/{FIFO_COUNT}, "
            f"ddb {len(ddb_seqs)}/{DDB_COUNT}, kinesis {sum(len(c.event['Records']) for c in kinesis_calls)} "
            f"invocations of {KINESIS_COUNT} records "
            f"({len(destination)} destination records for {len(POISON)} poison); "
            f"{len(samples)} checkpoint samples, {checked} record checks; esm source errors by code "
            f"{dict(Counter({lbl['code']: int(v) for lbl, v in errors if v}))}"
        )
        figures(f"AWS faults, moto proxy: {moto_proxy.summary()}")
        figures(f"AWS faults, kinesalite proxy: {kinesis_proxy.summary()}")

    async def test_a_failed_checkpoint_write_is_retried_while_the_shard_is_idle(
        self, tmp_path: Path, moto_endpoint: str, kinesalite_endpoint: str, kinesalite: Any, dynamodb: Any
    ) -> None:
        """A checkpoint write that failed is written again after a backoff, without waiting for new records.

        Before the fix it was retried only when the checkpoint moved again (or at shutdown): on a shard
        that went idle the stored checkpoint stayed behind for good, and a crash or a lease handoff then
        repeated batches that were long done, not only those in flight.
        """
        stream = unique("idle")
        await kinesalite.create_stream(StreamName=stream, ShardCount=1)
        desc = await active_stream(kinesalite, stream)
        lease_table = unique("leases")
        mapping_uuid = "0000bbbb-0000-4000-8000-000000000001"
        sequences: list[str] = []

        async def put(n: int) -> None:
            for _ in range(n):
                r = await kinesalite.put_record(StreamName=stream, Data=f"r{len(sequences)}".encode(), PartitionKey="k")
                sequences.append(r["SequenceNumber"])

        async def stored() -> str | None:
            items = (await dynamodb.scan(TableName=lease_table, ConsistentRead=True))["Items"]
            cps = [i["checkpoint"]["S"] for i in items if i["entityType"]["S"] == "lease"]
            return cps[0] if cps else None

        async with FaultProxy(moto_endpoint, faults=[Fault.THROTTLE]) as proxy:
            config = {
                "aws": {
                    "region": REGION,
                    "endpoint_url": proxy.endpoint,
                    "endpoints": {"kinesis": kinesalite_endpoint},
                },
                "state": {"dynamodb": {"table": lease_table, "failover_time": 10}},
                "streams": {"idle_poll_interval": 0.1, "retry_delay": {"initial": 0.2, "maximum": 1}},
                "functions": {"f-idle": {"handler": "tests.e2e.handlers:record", "timeout": 10}},
                "event_source_mappings": [
                    {
                        "UUID": mapping_uuid,
                        "EventSourceArn": desc["StreamARN"],
                        "FunctionName": "f-idle",
                        "StartingPosition": "TRIM_HORIZON",
                    }
                ],
            }
            async with running_daemon(tmp_path, config) as daemon:
                await put(3)
                await until(lambda: _equals(stored(), sequences[-1]), within=30)
                proxy.set_rate("dynamodb.UpdateItem", 1.0)  # checkpoints (and renewals) are throttled
                await put(3)
                await wait_for(lambda: len({d for c in _done("f-idle") for d in _data(c)}) == 6, within=30)

                async def failed_once() -> bool:
                    text = await get_text(daemon.http_port, "/metrics")
                    return sum(v for _, v in metric_samples(text, "esm_checkpoint_failures_total")) > 0

                await until(failed_once, within=30)
                assert await stored() == sequences[2]
                proxy.set_rate("dynamodb.UpdateItem", 0.0)
                # No new record: only a retry of the failed write can move the stored checkpoint now.
                await until(lambda: _equals(stored(), sequences[-1]), within=30)
        assert proxy.faults_on("dynamodb.UpdateItem") > 0


# ----------------------------------------------------------------------------------------------
# helpers over the recorded calls


def _retry_waits(history: list[Exchange], operation: str, field: str) -> list[float]:
    """For each failed call of `operation`, the time until the same request (same `field`) came again."""
    calls = [(e, json.loads(e.body).get(field)) for e in history if e.operation == operation]
    calls.sort(key=lambda c: c[0].arrived)
    waits = []
    for i, (failed, subject) in enumerate(calls):
        if failed.fault is None or failed.fault is Fault.SLOW:
            continue
        again = next((e for e, s in calls[i + 1 :] if s == subject), None)
        if again is not None:
            waits.append(again.arrived - failed.answered)
    return waits


def _done(function: str) -> list[Call]:
    """The calls of a function whose handler has returned (or raised)."""
    return [c for c in RECORDER.calls_of(function) if c.ended]


def _data(call: Call) -> list[str]:
    return [_kinesis_data(r) for r in call.event["Records"]]


async def _equals(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


def _bodies(calls: list[Call]) -> set[str]:
    return {b for c in calls for b in c.bodies}


def _kinesis_ok(calls: list[Call]) -> set[str]:
    """The Kinesis payloads delivered in a batch the function processed (no poison in it)."""
    out: set[str] = set()
    for c in calls:
        data = [_kinesis_data(r) for r in c.event["Records"]]
        if not POISON & set(data):
            out.update(data)
    return out


def _processed_at(calls: list[Call], put: dict[str, tuple[str, str]]) -> dict[str, float]:
    """When each Kinesis record was first processed successfully (monotonic, the handler's return)."""
    out: dict[str, float] = {}
    for c in calls:
        data = [_kinesis_data(r) for r in c.event["Records"]]
        if POISON & set(data) or not c.ended:
            continue
        for d in data:
            out[d] = min(out.get(d, float("inf")), c.ended)
    return out


def _ddb_records(calls: list[Call]) -> dict[str, str]:
    """Each DynamoDB stream record seen: 'item-N@sequence' -> sequence number."""
    out = {}
    for c in calls:
        for r in c.event["Records"]:
            seq = r["dynamodb"]["SequenceNumber"]
            out[f"{r['dynamodb']['Keys']['id']['S']}@{seq}"] = seq
    return out


def _ddb_processed_at(calls: list[Call]) -> dict[str, float]:
    out: dict[str, float] = {}
    for c in calls:
        if not c.ended:
            continue
        for r in c.event["Records"]:
            key = f"{r['dynamodb']['Keys']['id']['S']}@{r['dynamodb']['SequenceNumber']}"
            out[key] = min(out.get(key, float("inf")), c.ended)
    return out


def _ddb_keys(calls: list[Call]) -> set[str]:
    return {r["dynamodb"]["Keys"]["id"]["S"] for c in calls for r in c.event["Records"]}


def _ddb_sequences(calls: list[Call]) -> list[int]:
    return [int(r["dynamodb"]["SequenceNumber"]) for c in calls for r in c.event["Records"]]


def _last_sequences(put: dict[str, tuple[str, str]]) -> dict[str, str]:
    """The last sequence number put to each Kinesis shard."""
    last: dict[str, tuple[int, str]] = {}
    for shard, seq in put.values():
        if shard not in last or int(seq) > last[shard][0]:
            last[shard] = (int(seq), seq)
    return {s: q for s, (_, q) in last.items()}
