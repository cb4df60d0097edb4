"""`esm dev` as a real subprocess: its embedded emulator, the queues it creates, a message handled.

This is what `make run` does with config/example.yaml; here the example is copied with a free
emulator and metrics port so the test never collides with a developer's running `make run`.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from aiobotocore.session import get_session

from tests.e2e.harness import wait_for

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_dev(config: Path, log: Path) -> subprocess.Popen[bytes]:
    """Start `esm dev` with its output (JSON logs and the example handler's lines) in `log`."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "esm", "dev", "--config", str(config), "--log-format", "json"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


class TestDevMode:
    """`esm dev` creates what the file names and runs the same engine against it."""

    async def test_example_config_runs_end_to_end(self, tmp_path: Path) -> None:
        """The example's queue, DLQ and redrive policy exist; `esm send` reaches the handler; SIGTERM exits 0."""
        shutil.copytree(ROOT / "config" / "handlers", tmp_path / "handlers")
        config = yaml.safe_load((ROOT / "config" / "example.yaml").read_text())
        port = _free_port()
        config["dev"]["port"] = port
        config["http"]["listen"] = f"127.0.0.1:{_free_port()}"
        path = tmp_path / "example.yaml"
        path.write_text(yaml.safe_dump(config))
        log = tmp_path / "out.log"
        proc = _start_dev(path, log)
        try:
            await wait_for(lambda: '"event": "daemon_started"' in log.read_text(), within=60)
            async with get_session().create_client(
                "sqs",
                region_name="us-east-1",
                endpoint_url=f"http://127.0.0.1:{port}",
                aws_access_key_id="dev",
                aws_secret_access_key="dev",
            ) as sqs:
                url = (await sqs.get_queue_url(QueueName="orders"))["QueueUrl"]
                attrs = (await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"]))["Attributes"]
                policy = json.loads(attrs["RedrivePolicy"])
                assert policy["deadLetterTargetArn"].endswith(":orders-dlq")
                assert int(policy["maxReceiveCount"]) == 3
                await sqs.get_queue_url(QueueName="orders-dlq")
            sent = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "esm", "send", "--config", str(path), "--queue", "orders", '{"order": 1}'],
                capture_output=True,
                text=True,
                check=True,
            )
            message_id = sent.stdout.strip()
            await wait_for(lambda: f"messageId={message_id}" in log.read_text(), within=30)
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(proc.wait, 30)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert code == 0, log.read_text()[-2000:]
        assert '{"order": 1}' not in log.read_text(), "message bodies are never printed"

    async def test_streams_config_creates_streams_tables_and_destinations(self, tmp_path: Path) -> None:
        """config/streams.yaml: the stream, table and failure queue exist; records reach the handler; a failing
        record reaches the failure queue after its retries; checkpoints are listed after SIGTERM."""
        shutil.copytree(ROOT / "config" / "handlers", tmp_path / "handlers")
        config = yaml.safe_load((ROOT / "config" / "streams.yaml").read_text())
        port = _free_port()
        config["dev"]["port"] = port
        config["http"]["listen"] = f"127.0.0.1:{_free_port()}"
        config["streams"]["retry_delay"] = {"initial": 0.1, "maximum": 0.2}
        path = tmp_path / "streams.yaml"
        path.write_text(yaml.safe_dump(config))
        log = tmp_path / "out.log"
        proc = _start_dev(path, log)

        def esm(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "esm", *args], capture_output=True, text=True, check=True, timeout=60
            )

        try:
            await wait_for(lambda: '"event": "daemon_started"' in log.read_text(), within=60)
            sent = await asyncio.to_thread(esm, "send", "--config", str(path), "--stream", "clicks", '{"click": 1}')
            shard, sequence = sent.stdout.split()
            await wait_for(lambda: f"[streams] kinesis {shard}:{sequence}" in log.read_text(), within=30)
            await asyncio.to_thread(esm, "send", "--config", str(path), "--stream", "clicks", '{"fail": true}')
            session = get_session()
            kwargs = {
                "region_name": "us-east-1",
                "endpoint_url": f"http://127.0.0.1:{port}",
                "aws_access_key_id": "dev",
                "aws_secret_access_key": "dev",
            }
            async with (
                session.create_client("sqs", **kwargs) as sqs,
                session.create_client("dynamodb", **kwargs) as ddb,
            ):
                url = (await sqs.get_queue_url(QueueName="clicks-failed"))["QueueUrl"]
                messages: list[dict[str, object]] = []
                for _ in range(60):
                    resp = await sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1)
                    messages += [json.loads(m["Body"]) for m in resp.get("Messages", [])]
                    if messages:
                        break
                assert messages, log.read_text()[-3000:]
                assert messages[0]["requestContext"]["approximateInvokeCount"] == 3  # type: ignore[index]
                await ddb.put_item(TableName="orders", Item={"id": {"S": "o-1"}})
                await wait_for(lambda: "[streams] dynamodb INSERT" in log.read_text(), within=30)
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(proc.wait, 30)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert code == 0, log.read_text()[-2000:]
        listed = await asyncio.to_thread(esm, "checkpoints", "list", "--config", str(path), "--format", "json")
        rows = json.loads(listed.stdout)
        assert {r["shard_id"] for r in rows if r["stream_arn"].endswith("stream/clicks")} >= {shard}
        assert '{"click": 1}' not in log.read_text(), "record data is never printed"
