"""Tumbling windows end to end: the real daemon on moto's Kinesis and DynamoDB Streams.

Windows are aligned on multiples of TumblingWindowInSeconds and records fall in them by their
arrival time in the stream, so each test first makes sure enough of the current window is left
for what it does before the window ends (and waits for the next window otherwise).
The restart tests stop esm in the middle of a window, once gracefully and once with kill -9, and
check that the window's state goes on from the checkpoint (AWS loses it, ESM-SPEC.md §4.5).
"""

from __future__ import annotations

import asyncio
import base64
import json
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from esm.state import SqliteCheckpointStore
from tests.conftest import REGION
from tests.e2e.harness import RECORDER, running_daemon, wait_for, write_config
from tests.e2e.test_stream_mappings import FAST, create_stream, put, stream_config
from tests.reliability.esm_process import EsmProcess

pytestmark = pytest.mark.e2e


def summing(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Add each record's number to the state's `sum` (a new state object: the recorded event stays as sent)."""
    total = event["state"].get("sum", 0)
    for record in event["Records"]:
        if "kinesis" in record:
            total += int(base64.b64decode(record["kinesis"]["data"]))
        else:
            total += int(record["dynamodb"]["NewImage"]["n"]["N"])
    return {"state": {"sum": total}}


async def room_in_window(seconds: int, needed: float) -> None:
    """Wait, if need be, until the current window has `needed` seconds left."""
    left = seconds - time.time() % seconds
    if left < needed:
        await asyncio.sleep(left + 0.05)


def finals(function: str) -> list[dict[str, Any]]:
    return [c.event for c in RECORDER.calls_of(function) if c.event["isFinalInvokeForWindow"]]


async def window_checkpoint(tmp_path: Path) -> str | None:
    async with SqliteCheckpointStore(tmp_path / "state.db") as store:
        [(_, checkpoint)] = await store.list_all()
    return checkpoint.window_state


@pytest.fixture(autouse=True)
def _fresh_recorder() -> None:
    RECORDER.calls.clear()
    RECORDER.behaviours.clear()


class TestKinesisWindows:
    async def test_state_is_carried_and_the_window_closes_with_a_final_invocation(
        self, tmp_path: Path, moto_endpoint: str, kinesis: Any
    ) -> None:
        name, arn = await create_stream(kinesis)
        RECORDER.behaviours["fw"] = summing
        mapping = {
            "EventSourceArn": arn,
            "FunctionName": "fw",
            "StartingPosition": "TRIM_HORIZON",
            "BatchSize": 2,
            "TumblingWindowInSeconds": 4,
        }
        config = stream_config(tmp_path, moto_endpoint, [mapping])
        config["streams"] = {**FAST, "window_close_delay": 0.3}
        await room_in_window(4, 2.5)
        async with running_daemon(tmp_path, config):
            await put(kinesis, name, ["1", "2", "3", "4", "5"])
            await wait_for(lambda: len(finals("fw")) >= 1, within=20)
            await asyncio.sleep(0.3)
        calls = [c.event for c in RECORDER.calls_of("fw")]
        batches = [c for c in calls if not c["isFinalInvokeForWindow"]]
        assert [base64.b64decode(r["kinesis"]["data"]).decode() for c in batches for r in c["Records"]] == list("12345")
        running = 0
        for c in batches:  # each batch receives the state the previous one returned
            assert c["state"] == ({"sum": running} if running else {})
            running += sum(int(base64.b64decode(r["kinesis"]["data"])) for r in c["Records"])
        [final] = finals("fw")
        assert final["Records"] == []
        assert final["state"] == {"sum": 15}
        assert final["isWindowTerminatedEarly"] is False
        assert final["shardId"] == "shardId-000000000000"
        assert final["eventSourceARN"] == arn
        assert {json.dumps(c["window"]) for c in calls} == {json.dumps(final["window"])}
        start = time.mktime(time.strptime(final["window"]["start"], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
        for c in batches:
            for r in c["Records"]:
                assert start <= r["kinesis"]["approximateArrivalTimestamp"] < start + 4
        assert await window_checkpoint(tmp_path) is None  # the window is closed

    async def test_a_restart_in_the_middle_of_a_window_continues_its_state(
        self, tmp_path: Path, moto_endpoint: str, kinesis: Any
    ) -> None:
        name, arn = await create_stream(kinesis)
        RECORDER.behaviours["fr"] = summing
        mapping = {"EventSourceArn": arn, "FunctionName": "fr", "StartingPosition": "TRIM_HORIZON"}
        mapping["TumblingWindowInSeconds"] = 10
        config = stream_config(tmp_path, moto_endpoint, [mapping])
        config["streams"] = {**FAST, "window_close_delay": 0.3}
        await room_in_window(10, 7)
        async with running_daemon(tmp_path, dict(config)):
            await put(kinesis, name, ["1", "2"])
            await wait_for(lambda: sum(len(c.event["Records"]) for c in RECORDER.calls_of("fr")) >= 2)
            await asyncio.sleep(0.2)
        assert finals("fr") == []  # stopped in the middle of the window
        stored = await window_checkpoint(tmp_path)
        assert stored is not None
        assert json.loads(stored)["state"] == {"sum": 3}
        await put(kinesis, name, ["3", "4"])  # same window, while esm is stopped
        async with running_daemon(tmp_path, dict(config)):
            await wait_for(lambda: len(finals("fr")) >= 1, within=20)
        [final] = finals("fr")
        assert final["state"] == {"sum": 10}  # the window went on from where it stopped
        windows = {json.dumps(c.event["window"]) for c in RECORDER.calls_of("fr")}
        assert len(windows) == 1


class TestDynamoDbWindows:
    async def test_a_dynamodb_window_sums_its_changes(self, tmp_path: Path, moto_endpoint: str, dynamodb: Any) -> None:
        table = f"windows-{time.monotonic_ns()}"
        await dynamodb.create_table(
            TableName=table,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"},
        )
        arn = (await dynamodb.describe_table(TableName=table))["Table"]["LatestStreamArn"]
        RECORDER.behaviours["fd"] = summing
        mapping = {
            "EventSourceArn": arn,
            "FunctionName": "fd",
            "StartingPosition": "TRIM_HORIZON",
            "TumblingWindowInSeconds": 5,
        }
        config = stream_config(tmp_path, moto_endpoint, [mapping])
        config["streams"] = {**FAST, "window_close_delay": 0.3}
        await room_in_window(5, 3)
        async with running_daemon(tmp_path, config):
            for i in (1, 2, 3):
                await dynamodb.put_item(TableName=table, Item={"pk": {"S": f"p{i}"}, "n": {"N": str(i)}})
            await wait_for(lambda: len(finals("fd")) >= 1, within=20)
        [final] = finals("fd")
        assert final["state"] == {"sum": 6}
        assert final["Records"] == []
        assert final["shardId"].startswith("shardId-")
        assert final["eventSourceARN"] == arn


_WINDOW_HANDLER = textwrap.dedent(
    """
    import base64, json, os
    from pathlib import Path

    OUT = Path(__file__).with_name("windows.log")

    def handle(event, context):
        numbers = [int(base64.b64decode(r["kinesis"]["data"])) for r in event["Records"]]
        total = event["state"].get("sum", 0) + sum(numbers)
        line = json.dumps({k: event[k] for k in ("window", "state", "isFinalInvokeForWindow")} | {
            "records": [base64.b64decode(r["kinesis"]["data"]).decode() for r in event["Records"]]})
        fd = os.open(OUT, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, (line + "\\n").encode())
        finally:
            os.close(fd)
        return {"state": {"sum": total}}
    """
)


def _window_log(tmp_path: Path) -> list[dict[str, Any]]:
    log = tmp_path / "windows.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


class TestKillInTheMiddleOfAWindow:
    async def test_kill_9_mid_window_then_restart_keeps_an_exact_sum(
        self, tmp_path: Path, moto_endpoint: str, kinesis: Any
    ) -> None:
        """The state is stored atomically with the checkpoint: a batch repeated after the kill is
        repeated with the state from before it, so the window's sum is exact, not double-counted."""
        (tmp_path / "window_handler.py").write_text(_WINDOW_HANDLER)
        name, arn = await create_stream(kinesis)
        config = write_config(
            tmp_path,
            {
                "aws": {"region": REGION, "endpoint_url": moto_endpoint},
                "http": {"listen": "127.0.0.1:0"},
                "state": {"sqlite": "./state.db"},
                "streams": {"idle_poll_interval": 0.05, "window_close_delay": 0.5},
                "functions": {"fn": {"handler": "window_handler:handle", "timeout": 10}},
                "event_source_mappings": [
                    {
                        "EventSourceArn": arn,
                        "FunctionName": "fn",
                        "StartingPosition": "TRIM_HORIZON",
                        "BatchSize": 1,
                        "TumblingWindowInSeconds": 20,
                    }
                ],
            },
        )
        await room_in_window(20, 14)
        proc = EsmProcess(config, tmp_path / "stderr.log").start()
        try:
            await put(kinesis, name, ["1", "2", "3"])
            await wait_for(lambda: len(_window_log(tmp_path)) >= 2, within=20)
        finally:
            proc.kill()
        await put(kinesis, name, ["4", "5"])
        proc.start()
        try:
            await wait_for(lambda: any(e["isFinalInvokeForWindow"] for e in _window_log(tmp_path)), within=40)
        finally:
            code = proc.stop(30)
        assert code == 0, (tmp_path / "stderr.log").read_text()[-3000:]
        log = _window_log(tmp_path)
        [final] = [e for e in log if e["isFinalInvokeForWindow"]]
        assert final["state"] == {"sum": 15}
        assert {json.dumps(e["window"]) for e in log} == {json.dumps(final["window"])}
        seen = [r for e in log for r in e["records"]]
        assert set(seen) == {"1", "2", "3", "4", "5"}
        print(f"\nwindow kill test: {len(seen)} deliveries of 5 records, final state {final['state']}")
