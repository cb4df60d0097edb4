"""Kinesis and DynamoDB Streams mappings end to end: the real daemon against the moto server.

Streams, tables and destination queues live in moto and are reached over real HTTP with the real
aiobotocore clients; the function is an in-process handler (`tests.e2e.handlers:record`) whose
behaviour each test sets. Checkpoints go to a real SQLite file in the test's folder.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path
from typing import Any

import pytest

from esm.state import SqliteCheckpointStore
from tests.conftest import ACCOUNT, REGION, unique
from tests.e2e.harness import RECORDER, create_queue, running_daemon, wait_for

FAST = {"idle_poll_interval": 0.05, "discovery_interval": 1, "retry_delay": {"initial": 0.05, "maximum": 0.2}}


def kinesis_data(call_event: dict[str, Any]) -> list[str]:
    """The decoded `data` of each record of a Kinesis event."""
    return [base64.b64decode(r["kinesis"]["data"]).decode() for r in call_event["Records"]]


def delivered(function: str) -> list[str]:
    """Every Kinesis record payload delivered to a function, in delivery order."""
    return [d for c in RECORDER.calls_of(function) for d in kinesis_data(c.event)]


def stream_config(tmp_path: Path, endpoint: str, mappings: list[dict[str, Any]]) -> dict[str, Any]:
    """A configuration with the test handler under every function name the mappings use."""
    names = {m["FunctionName"] for m in mappings}
    return {
        "aws": {"region": REGION, "endpoint_url": endpoint},
        "state": {"sqlite": str(tmp_path / "state.db")},
        "streams": FAST,
        "functions": {n: {"handler": "tests.e2e.handlers:record", "timeout": 10} for n in names},
        "event_source_mappings": mappings,
    }


async def create_stream(kinesis: Any, shards: int = 1) -> tuple[str, str]:
    """A new Kinesis stream on moto; returns (name, arn)."""
    name = unique("stream")
    await kinesis.create_stream(StreamName=name, ShardCount=shards)
    arn = (await kinesis.describe_stream_summary(StreamName=name))["StreamDescriptionSummary"]["StreamARN"]
    return name, arn


async def put(kinesis: Any, name: str, payloads: list[str], key: str = "k") -> None:
    """Put records one at a time (moto loses records under concurrent puts to one shard)."""
    for p in payloads:
        await kinesis.put_record(StreamName=name, Data=p.encode(), PartitionKey=key)


@pytest.fixture(autouse=True)
def _fresh_recorder() -> None:
    RECORDER.calls.clear()
    RECORDER.behaviours.clear()


async def checkpoints(tmp_path: Path) -> dict[str, str | None]:
    """The stored checkpoint of every shard: shard id -> position or sequence number."""
    async with SqliteCheckpointStore(tmp_path / "state.db", lock=False) as store:
        return {k.shard_id: c.sequence or c.position.value for k, c in await store.list_all()}


async def queue_messages(sqs: Any, url: str, count: int, within: float = 20.0) -> list[dict[str, Any]]:
    """Receive `count` messages from a queue (deleting them), parsed as JSON."""
    found: list[dict[str, Any]] = []
    deadline = asyncio.get_running_loop().time() + within
    while len(found) < count:
        assert asyncio.get_running_loop().time() < deadline, f"only {len(found)} of {count} messages arrived"
        resp = await sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        for m in resp.get("Messages", []):
            found.append(json.loads(m["Body"]))
            await sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    return found


class TestKinesis:
    """A Kinesis mapping reads every shard in order and checkpoints durably."""

    async def test_records_arrive_in_order_with_aws_shape_and_are_checkpointed(
        self, tmp_path: Path, moto_endpoint: str, kinesis: Any
    ) -> None:
        """Twenty records reach the handler once each, in order, as AWS Kinesis records."""
        name, arn = await create_stream(kinesis)
        await put(kinesis, name, [f"r{i}" for i in range(20)])
        mapping = {"EventSourceArn": arn, "FunctionName": "fk", "StartingPosition": "TRIM_HORIZON", "BatchSize": 7}
        async with running_daemon(tmp_path, stream_config(tmp_path, moto_endpoint, [mapping])):
            await wait_for(lambda: len(delivered("fk")) >= 20)
        assert delivered("fk") == [f"r{i}" for i in range(20)]
        assert max(len(c.event["Records"]) for c in RECORDER.calls_of("fk")) <= 7
        first = RECORDER.calls_of("fk")[0].event["Records"][0]
        assert first["eventSource"] == "aws:kinesis"
        assert first["eventSourceARN"] == arn
        assert first["eventID"] == f"shardId-000000000000:{first['kinesis']['sequenceNumber']}"
        assert first["invokeIdentityArn"] == f"arn:aws:iam::{ACCOUNT}:role/esm"
        last_seq = RECORDER.calls_of("fk")[-1].event["Records"][-1]["kinesis"]["sequenceNumber"]
        assert await checkpoints(tmp_path) == {"shardId-000000000000": last_seq}

    async def test_a_restart_resumes_after_the_checkpoint(
        self, tmp_path: Path, moto_endpoint: str, kinesis: Any
    ) -> None:
        """The stored checkpoint wins over StartingPosition: only new records are delivered."""
        name, arn = await create_stream(kinesis)
        await put(kinesis, name, ["a", "b", "c"])
        mapping = {"EventSourceArn": arn, "FunctionName": "fr", "StartingPosition": "TRIM_HORIZON"}
        config = stream_config(tmp_path, moto_endpoint, [mapping])
        async with running_daemon(tmp_path, dict(config)):
            await wait_for(lambda: len(delivered("fr")) >= 3)
        await put(kinesis, name, ["d", "e"])
        async with running_daemon(tmp_path, dict(config)):
            await wait_for(lambda: len(delivered("fr")) >= 5)
            await asyncio.sleep(0.3)
        assert delivered("fr") == ["a", "b", "c", "d", "e"]

    async def test_latest_skips_what_was_there_before_the_start(
        self, tmp_path: Path, moto_endpoint: str, kinesis: Any
    ) -> None:
        """StartingPosition LATEST delivers only records put after the mapping started."""
        name, arn = await create_stream(kinesis)
        await put(kinesis, name, ["old"])
        mapping = {"EventSourceArn": arn, "FunctionName": "fl", "StartingPosition": "LATEST"}
        async with running_daemon(tmp_path, stream_config(tmp_path, moto_endpoint, [mapping])):
            await asyncio.sleep(1.0)
            await put(kinesis, name, ["new"])
            await wait_for(lambda: len(delivered("fl")) >= 1)
        assert delivered("fl") == ["new"]

    async def test_at_timestamp_starts_at_the_first_record_at_or_after_it(
        self, tmp_path: Path, moto_endpoint: str, kinesis: Any
    ) -> None:
        """StartingPosition AT_TIMESTAMP with StartingPositionTimestamp skips older records."""
        name, arn = await create_stream(kinesis)
        await put(kinesis, name, ["before"])
        await asyncio.sleep(1.2)
        start = time.time()
        await asyncio.sleep(0.2)
        await put(kinesis, name, ["after-1", "after-2"])
        mapping = {
            "EventSourceArn": arn,
            "FunctionName": "fat",
            "StartingPosition": "AT_TIMESTAMP",
            "StartingPositionTimestamp": start,
        }
        async with running_daemon(tmp_path, stream_config(tmp_path, moto_endpoint, [mapping])):
            await wait_for(lambda: len(delivered("fat")) >= 2)
            await asyncio.sleep(0.3)
        assert delivered("fat") == ["after-1", "after-2"]

    async def test_latest_then_restart_keeps_what_arrived_while_stopped(
        self, tmp_path: Path, moto_endpoint: str, kinesis: Any
    ) -> None:
        """A LATEST mapping stopped before any record arrived still gets the records put while it was down."""
        name, arn = await create_stream(kinesis)
        mapping = {"EventSourceArn": arn, "FunctionName": "flr", "StartingPosition": "LATEST"}
        config = stream_config(tmp_path, moto_endpoint, [mapping])
        async with running_daemon(tmp_path, dict(config)):
            await asyncio.sleep(1.0)
        await put(kinesis, name, ["while-down"])
        async with running_daemon(tmp_path, dict(config)):
            await wait_for(lambda: len(delivered("flr")) >= 1)
        assert delivered("flr") == ["while-down"]

    async def test_shard_metrics_show_iterator_age_and_reader_lag(
        self, tmp_path: Path, moto_endpoint: str, kinesis: Any
    ) -> None:
        """Per shard: iterator age of the last batch and how far the reader is behind, in seconds."""
        name, arn = await create_stream(kinesis)
        await put(kinesis, name, ["m"])
        mapping = {"EventSourceArn": arn, "FunctionName": "fmet", "StartingPosition": "TRIM_HORIZON"}
        async with running_daemon(tmp_path, stream_config(tmp_path, moto_endpoint, [mapping])) as daemon:
            await wait_for(lambda: delivered("fmet") == ["m"])
            await wait_for(lambda: _metric(daemon, "esm_checkpoint_writes_total{") >= 1)
            shard = 'shard="shardId-000000000000"'
            text = _exposition(daemon)
            assert any(line.startswith("esm_iterator_age_seconds{") and shard in line for line in text)
            assert any(line.startswith("esm_reader_behind_seconds{") and shard in line for line in text)
            assert _metric(daemon, "esm_shards_held{") == 1
            assert _metric(daemon, "esm_polled_events_total{") == 1

    async def test_parallelization_keeps_order_per_partition_key(
        self, tmp_path: Path, moto_endpoint: str, kinesis: Any
    ) -> None:
        """ParallelizationFactor 4: several batches of one shard in flight, each key in order."""
        name, arn = await create_stream(kinesis)
        for i in range(40):
            await kinesis.put_record(StreamName=name, Data=f"{i % 8}:{i}".encode(), PartitionKey=f"key{i % 8}")

        def slow(event: dict[str, Any], context: Any) -> None:
            import time

            time.sleep(0.05)

        RECORDER.behaviours["fp"] = slow
        mapping = {
            "EventSourceArn": arn,
            "FunctionName": "fp",
            "StartingPosition": "TRIM_HORIZON",
            "ParallelizationFactor": 4,
            "BatchSize": 3,
        }
        async with running_daemon(tmp_path, stream_config(tmp_path, moto_endpoint, [mapping])):
            await wait_for(lambda: len(delivered("fp")) >= 40)
        per_key: dict[str, list[int]] = {}
        for d in delivered("fp"):
            key, i = d.split(":")
            per_key.setdefault(key, []).append(int(i))
        assert all(v == sorted(v) for v in per_key.values())
        assert sorted(i for v in per_key.values() for i in v) == list(range(40))
        assert RECORDER.max_active > 1


class TestFailurePolicy:
    """Retries, bisect and on-failure destinations through the real engine (ESM-SPEC.md §4.2, §4.3)."""

    async def test_exhausted_retries_go_to_the_sqs_destination_and_the_shard_moves_on(
        self, tmp_path: Path, moto_endpoint: str, kinesis: Any, sqs: Any
    ) -> None:
        """§8 vector 6: MaximumRetryAttempts 1 and a throwing function give approximateInvokeCount 2."""
        name, arn = await create_stream(kinesis)
        url, dest = await create_queue(sqs, unique("failed"))
        await put(kinesis, name, ["bad"])

        def fail_bad(event: dict[str, Any], context: Any) -> None:
            if "bad" in kinesis_data(event):
                raise ValueError("bad record")

        RECORDER.behaviours["ff"] = fail_bad
        mapping = {
            "EventSourceArn": arn,
            "FunctionName": "ff",
            "StartingPosition": "TRIM_HORIZON",
            "MaximumRetryAttempts": 1,
            "DestinationConfig": {"OnFailure": {"Destination": dest}},
        }
        async with running_daemon(tmp_path, stream_config(tmp_path, moto_endpoint, [mapping])):
            [record] = await queue_messages(sqs, url, 1)
            await put(kinesis, name, ["good"])
            await wait_for(lambda: "good" in delivered("ff"))
        assert delivered("ff") == ["bad", "bad", "good"]
        assert record["requestContext"]["condition"] == "RetryAttemptsExhausted"
        assert record["requestContext"]["approximateInvokeCount"] == 2
        assert record["requestContext"]["functionArn"] == f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:ff"
        assert record["responseContext"] == {
            "statusCode": 200,
            "executedVersion": "$LATEST",
            "functionError": "Unhandled",
        }
        info = record["KinesisBatchInfo"]
        assert (info["shardId"], info["batchSize"], info["streamArn"]) == ("shardId-000000000000", 1, arn)

    async def test_bisect_isolates_the_poison_record(
        self, tmp_path: Path, moto_endpoint: str, kinesis: Any, sqs: Any
    ) -> None:
        """BisectBatchOnFunctionError with no retries: only the poison record is reported, the rest delivered."""
        name, arn = await create_stream(kinesis)
        url, dest = await create_queue(sqs, unique("failed"))
        await put(kinesis, name, ["a", "b", "poison", "d"])
        await asyncio.sleep(0.1)

        def fail_poison(event: dict[str, Any], context: Any) -> None:
            if "poison" in kinesis_data(event):
                raise ValueError("poison")

        RECORDER.behaviours["fb"] = fail_poison
        mapping = {
            "EventSourceArn": arn,
            "FunctionName": "fb",
            "StartingPosition": "TRIM_HORIZON",
            "MaximumRetryAttempts": 0,
            "BisectBatchOnFunctionError": True,
            "DestinationConfig": {"OnFailure": {"Destination": dest}},
        }
        async with running_daemon(tmp_path, stream_config(tmp_path, moto_endpoint, [mapping])):
            [record] = await queue_messages(sqs, url, 1)
            await wait_for(lambda: len(RECORDER.calls_of("fb")) >= 5)
        batches = [kinesis_data(c.event) for c in RECORDER.calls_of("fb")]
        assert batches == [["a", "b", "poison", "d"], ["a", "b"], ["poison", "d"], ["poison"], ["d"]]
        assert record["KinesisBatchInfo"]["batchSize"] == 1
        assert record["requestContext"]["approximateInvokeCount"] == 3

    async def test_a_handler_that_changes_its_event_sees_the_records_as_read_again(
        self, tmp_path: Path, moto_endpoint: str, kinesis: Any, sqs: Any
    ) -> None:
        """A handler that rewrites and pops its records in place, then fails: every retry and bisected half
        gets the records as the stream gave them, as on Lambda, where each invocation's event is parsed anew."""
        name, arn = await create_stream(kinesis)
        url, dest = await create_queue(sqs, unique("failed"))
        await put(kinesis, name, ["a", "b", "poison", "d"])
        await asyncio.sleep(0.1)
        seen: list[list[str]] = []

        def rewrite_then_fail(event: dict[str, Any], context: Any) -> None:
            data = kinesis_data(event)
            seen.append(data)
            for r in event["Records"]:
                r["kinesis"]["data"] = base64.b64encode(b"rewritten").decode()
            event["Records"].pop()
            if "poison" in data:
                raise ValueError("poison")

        RECORDER.behaviours["fm"] = rewrite_then_fail
        mapping = {
            "EventSourceArn": arn,
            "FunctionName": "fm",
            "StartingPosition": "TRIM_HORIZON",
            "MaximumRetryAttempts": 1,
            "BisectBatchOnFunctionError": True,
            "DestinationConfig": {"OnFailure": {"Destination": dest}},
        }
        async with running_daemon(tmp_path, stream_config(tmp_path, moto_endpoint, [mapping])):
            [record] = await queue_messages(sqs, url, 1)
            await wait_for(lambda: ["d"] in seen)
        read = ["a", "b", "poison", "d"]
        assert seen[0] == read
        assert ["a", "b"] in seen
        assert ["poison"] in seen
        # Every invocation got a run of the records as read: none rewritten, none missing.
        assert all(batch == read[read.index(batch[0]) :][: len(batch)] for batch in seen), seen
        assert record["KinesisBatchInfo"]["batchSize"] == 1

    async def test_partial_batch_response_checkpoints_at_the_lowest_failure(
        self, tmp_path: Path, moto_endpoint: str, kinesis: Any, sqs: Any
    ) -> None:
        """Recorded test_kinesis_report_batch_item_failures: #6 retried alone, approximateInvokeCount 4."""
        name, arn = await create_stream(kinesis)
        url, dest = await create_queue(sqs, unique("failed"))
        await put(kinesis, name, [str(i) for i in range(1, 7)])

        def report_six(event: dict[str, Any], context: Any) -> dict[str, Any]:
            failed = [
                r["kinesis"]["sequenceNumber"] for r in event["Records"] if kinesis_data({"Records": [r]}) == ["6"]
            ]
            return {"batchItemFailures": [{"itemIdentifier": s} for s in failed]}

        RECORDER.behaviours["fpr"] = report_six
        mapping = {
            "EventSourceArn": arn,
            "FunctionName": "fpr",
            "StartingPosition": "TRIM_HORIZON",
            "BatchSize": 3,
            "MaximumRetryAttempts": 3,
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
            "DestinationConfig": {"OnFailure": {"Destination": dest}},
        }
        async with running_daemon(tmp_path, stream_config(tmp_path, moto_endpoint, [mapping])):
            [record] = await queue_messages(sqs, url, 1)
        got = delivered("fpr")
        assert [got.count(str(i)) for i in range(1, 6)] == [1, 1, 1, 1, 1]
        assert got.count("6") == 4
        info = record["KinesisBatchInfo"]
        assert info["batchSize"] == 1
        assert info["startSequenceNumber"] == info["endSequenceNumber"]
        assert record["requestContext"]["approximateInvokeCount"] == 4
        assert record["responseContext"]["functionError"] is None

    async def test_an_unreachable_destination_holds_the_checkpoint_until_delivery(
        self, tmp_path: Path, moto_endpoint: str, kinesis: Any, sqs: Any
    ) -> None:
        """Better than AWS: a failed delivery is retried and the checkpoint never passes the records."""
        name, arn = await create_stream(kinesis)
        queue = unique("late")
        dest = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{queue}"
        await put(kinesis, name, ["x"])
        RECORDER.behaviours["fd"] = lambda e, c: (_ for _ in ()).throw(ValueError("always"))
        mapping = {
            "EventSourceArn": arn,
            "FunctionName": "fd",
            "StartingPosition": "TRIM_HORIZON",
            "MaximumRetryAttempts": 0,
            "DestinationConfig": {"OnFailure": {"Destination": dest}},
        }
        async with running_daemon(tmp_path, stream_config(tmp_path, moto_endpoint, [mapping])) as daemon:
            failures = "esm_destination_delivery_failures_total{event_source_mapping_uuid="
            await wait_for(lambda: _metric(daemon, failures) >= 2)
            assert await checkpoints(tmp_path) == {"shardId-000000000000": "TRIM_HORIZON"}
            url, _ = await create_queue(sqs, queue)
            [record] = await queue_messages(sqs, url, 1)
            await wait_for(lambda: _metric(daemon, "esm_on_failure_destination_delivered_events_total{") >= 1)
        assert record["requestContext"]["condition"] == "RetryAttemptsExhausted"
        stored = await checkpoints(tmp_path)
        assert stored["shardId-000000000000"] == record["KinesisBatchInfo"]["endSequenceNumber"]

    async def test_a_missing_stream_is_unhealthy_with_aws_text_and_others_go_on(
        self, tmp_path: Path, moto_endpoint: str, kinesis: Any
    ) -> None:
        """A stream that does not exist: `Stream not found: ARN` in /readyz; a healthy mapping still runs."""
        name, arn = await create_stream(kinesis)
        await put(kinesis, name, ["ok"])
        missing = f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/{unique('nope')}"
        mappings = [
            {"EventSourceArn": missing, "FunctionName": "fm", "StartingPosition": "LATEST"},
            {"EventSourceArn": arn, "FunctionName": "fo", "StartingPosition": "TRIM_HORIZON"},
        ]
        async with running_daemon(tmp_path, stream_config(tmp_path, moto_endpoint, mappings)) as daemon:
            await wait_for(lambda: delivered("fo") == ["ok"])
            bad = next(h for h in daemon.health if h.source_arn == missing)
            assert bad.state.value == "unhealthy"
            assert bad.reason == f"Stream not found: {missing}"


class TestStreamDeleted:
    """A stream deleted while its mapping runs: unhealthy with AWS's text; the daemon goes on."""

    async def test_deleting_the_stream_makes_the_mapping_unhealthy(
        self, tmp_path: Path, moto_endpoint: str, kinesis: Any
    ) -> None:
        """After DeleteStream the mapping reports `Stream not found: ARN` and the daemon still stops cleanly."""
        name, arn = await create_stream(kinesis)
        await put(kinesis, name, ["one"])
        mapping = {"EventSourceArn": arn, "FunctionName": "fdel", "StartingPosition": "TRIM_HORIZON"}
        async with running_daemon(tmp_path, stream_config(tmp_path, moto_endpoint, [mapping])) as daemon:
            await wait_for(lambda: delivered("fdel") == ["one"])
            await kinesis.delete_stream(StreamName=name)
            health = daemon.health[0]
            await wait_for(lambda: health.reason == f"Stream not found: {arn}", within=20)
            assert health.state.value == "unhealthy"


def _exposition(daemon: Any) -> list[str]:
    """The daemon's /metrics text, line by line."""
    from prometheus_client import generate_latest

    return generate_latest(daemon.registry).decode().splitlines()


def _metric(daemon: Any, prefix: str) -> float:
    """The sum of the samples of the daemon's registry whose exposition line starts with `prefix`."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in _exposition(daemon) if line.startswith(prefix))


VIEW_TYPES = ["KEYS_ONLY", "NEW_IMAGE", "OLD_IMAGE", "NEW_AND_OLD_IMAGES"]


class TestDynamoDbStreams:
    """A DynamoDB Streams mapping delivers INSERT, MODIFY and REMOVE as AWS does, for every view type."""

    @pytest.mark.parametrize("view", VIEW_TYPES)
    async def test_insert_modify_remove(self, tmp_path: Path, moto_endpoint: str, dynamodb: Any, view: str) -> None:
        """Three changes of one item arrive in order with the images the view type carries."""
        table = unique("table")
        await dynamodb.create_table(
            TableName=table,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": view},
        )
        arn = (await dynamodb.describe_table(TableName=table))["Table"]["LatestStreamArn"]
        mapping = {"EventSourceArn": arn, "FunctionName": "fdb", "StartingPosition": "TRIM_HORIZON"}
        async with running_daemon(tmp_path, stream_config(tmp_path, moto_endpoint, [mapping])):
            await dynamodb.put_item(TableName=table, Item={"pk": {"S": "a"}, "v": {"N": "1"}, "b": {"B": b"\x00\x01"}})
            await dynamodb.put_item(TableName=table, Item={"pk": {"S": "a"}, "v": {"N": "2"}})
            await dynamodb.delete_item(TableName=table, Key={"pk": {"S": "a"}})
            await wait_for(lambda: sum(len(c.event["Records"]) for c in RECORDER.calls_of("fdb")) >= 3)
        records = [r for c in RECORDER.calls_of("fdb") for r in c.event["Records"]]
        assert [r["eventName"] for r in records] == ["INSERT", "MODIFY", "REMOVE"]
        for r in records:
            assert (r["eventVersion"], r["eventSource"], r["eventSourceARN"]) == ("1.1", "aws:dynamodb", arn)
            assert isinstance(r["dynamodb"]["ApproximateCreationDateTime"], float)
            assert r["dynamodb"]["StreamViewType"] == view
            assert r["dynamodb"]["Keys"] == {"pk": {"S": "a"}}
        new = [("NewImage" in r["dynamodb"]) for r in records]
        old = [("OldImage" in r["dynamodb"]) for r in records]
        assert (
            new
            == {
                "KEYS_ONLY": [False] * 3,
                "NEW_IMAGE": [True, True, False],
                "OLD_IMAGE": [False] * 3,
                "NEW_AND_OLD_IMAGES": [True, True, False],
            }[view]
        )
        assert (
            old
            == {
                "KEYS_ONLY": [False] * 3,
                "NEW_IMAGE": [False] * 3,
                "OLD_IMAGE": [False, True, True],
                "NEW_AND_OLD_IMAGES": [False, True, True],
            }[view]
        )
        if view in ("NEW_IMAGE", "NEW_AND_OLD_IMAGES"):
            assert records[0]["dynamodb"]["NewImage"]["b"] == {"B": base64.b64encode(b"\x00\x01").decode()}
        sequence = [int(r["dynamodb"]["SequenceNumber"]) for r in records]
        assert sequence == sorted(sequence)
