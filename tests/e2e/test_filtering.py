"""FilterCriteria end to end on moto: filtered SQS messages are deleted, filtered stream records
are checkpointed past, and the counters say how many (ESM-SPEC.md §6.4, §7)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from esm.state import SqliteCheckpointStore
from tests.conftest import REGION, unique
from tests.e2e.harness import RECORDER, create_queue, queue_counts, running_daemon, wait_for

pytestmark = pytest.mark.e2e


def _config(tmp_path: Path, endpoint: str, mapping: dict[str, Any]) -> dict[str, Any]:
    return {
        "aws": {"region": REGION, "endpoint_url": endpoint},
        "state": {"sqlite": str(tmp_path / "state.db")},
        "streams": {"idle_poll_interval": 0.05},
        "functions": {mapping["FunctionName"]: {"handler": "tests.e2e.handlers:record", "timeout": 5}},
        "event_source_mappings": [mapping],
    }


def _metric(daemon: Any, name: str) -> float:
    from prometheus_client import generate_latest

    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in generate_latest(daemon.registry).decode().splitlines()
        if line.startswith(name + "{")
    )


class TestFiltering:
    """Records that match no filter never reach the function and are never lost track of."""

    async def test_sqs_filtered_messages_are_deleted(self, tmp_path: Path, moto_endpoint: str, sqs: Any) -> None:
        """A JSON pattern on `body`: matching messages are invoked, the rest deleted and counted."""
        RECORDER.calls.clear()
        url, arn = await create_queue(sqs, unique("filtered"), VisibilityTimeout=5)
        bodies = [json.dumps({"kind": "order", "n": 1}), json.dumps({"kind": "refund", "n": 2}), "plain text"]
        for body in bodies:
            await sqs.send_message(QueueUrl=url, MessageBody=body)
        fn = unique("fsqs")
        mapping = {
            "EventSourceArn": arn,
            "FunctionName": fn,
            "FilterCriteria": {"Filters": [{"Pattern": json.dumps({"body": {"kind": ["order"]}})}]},
        }
        async with running_daemon(tmp_path, _config(tmp_path, moto_endpoint, mapping)) as daemon:
            await wait_for(lambda: _metric(daemon, "esm_filtered_out_events_total") == 2)
            await wait_for(lambda: len(RECORDER.bodies_of(fn)) == 1)
            await wait_for(lambda: _metric(daemon, "esm_deleted_events_total") == 3)
            assert await queue_counts(sqs, url) == (0, 0)
        assert RECORDER.bodies_of(fn) == [bodies[0]]

    async def test_kinesis_filtered_records_are_checkpointed_past(
        self, tmp_path: Path, moto_endpoint: str, clients: Any
    ) -> None:
        """A pattern on decoded `data`: only matches are invoked, and the checkpoint covers the last record."""
        RECORDER.calls.clear()
        name = unique("fstream")
        async with clients.client("kinesis") as kinesis:
            await kinesis.create_stream(StreamName=name, ShardCount=1)
            arn = (await kinesis.describe_stream_summary(StreamName=name))["StreamDescriptionSummary"]["StreamARN"]
            sequences = []
            for payload in ({"level": "error", "n": 1}, {"level": "info", "n": 2}, {"level": "info", "n": 3}):
                resp = await kinesis.put_record(StreamName=name, Data=json.dumps(payload).encode(), PartitionKey="k")
                sequences.append(resp["SequenceNumber"])
        fn = unique("fkin")
        mapping = {
            "EventSourceArn": arn,
            "FunctionName": fn,
            "StartingPosition": "TRIM_HORIZON",
            "FilterCriteria": {"Filters": [{"Pattern": json.dumps({"data": {"level": ["error"]}})}]},
        }
        async with running_daemon(tmp_path, _config(tmp_path, moto_endpoint, mapping)) as daemon:
            await wait_for(lambda: _metric(daemon, "esm_filtered_out_events_total") == 2)
            await wait_for(lambda: len(RECORDER.calls_of(fn)) == 1)
        [call] = RECORDER.calls_of(fn)
        assert [json.loads(base64.b64decode(r["kinesis"]["data"])) for r in call.event["Records"]] == [
            {"level": "error", "n": 1}
        ]
        async with SqliteCheckpointStore(tmp_path / "state.db", lock=False) as store:
            stored = {k.shard_id: c.sequence for k, c in await store.list_all()}
        assert stored == {"shardId-000000000000": sequences[-1]}
