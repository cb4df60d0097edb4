"""`esm run` as a real subprocess: startup errors, and SIGTERM in the middle of a batch.

The daemon runs as its own process (`python -m esm run`), reached over real HTTP by moto, with a
Python handler written into the test's folder that logs when each message starts and finishes.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REGION, unique
from tests.e2e.harness import create_queue, queue_counts, wait_for, write_config

pytestmark = pytest.mark.e2e

_HANDLER = textwrap.dedent(
    """
    import time
    from pathlib import Path

    LOG = Path(__file__).with_name("calls.log")

    def handle(event, context):
        ids = [r["messageId"] for r in event["Records"]]
        with LOG.open("a") as f:
            f.write("start " + " ".join(ids) + "\\n")
        time.sleep(1.5)
        with LOG.open("a") as f:
            f.write("done " + " ".join(ids) + "\\n")
    """
)


def _spawn(config: Path) -> subprocess.Popen[bytes]:
    """Start `esm run` with its stderr (the JSON logs) going to `stderr.log` beside the config."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with (config.parent / "stderr.log").open("wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "esm", "run", "--config", str(config), "--log-format", "json"],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
        )


def _one_mapping(
    tmp_path: Path, endpoint: str, arn: str, handler: str, timeout: float, grace: float = 25, **mapping: Any
) -> Path:
    """Write a configuration with one Python function and one mapping of `arn` to it."""
    return write_config(
        tmp_path,
        {
            "aws": {"region": REGION, "endpoint_url": endpoint},
            "http": {"listen": "127.0.0.1:0"},
            "shutdown": {"grace_period": grace},
            "functions": {"fn": {"handler": handler, "timeout": timeout}},
            "event_source_mappings": [{"EventSourceArn": arn, "FunctionName": "fn", **mapping}],
        },
    )


def _stderr(config: Path) -> str:
    return (config.parent / "stderr.log").read_text()


def _log_ids(log: Path, kind: str) -> set[str]:
    if not log.exists():
        return set()
    return {i for line in log.read_text().splitlines() if line.startswith(kind + " ") for i in line.split()[1:]}


class TestSigterm:
    """SIGTERM drains: in-flight batches finish and are deleted, the rest go straight back."""

    async def test_sigterm_mid_batch_loses_nothing_and_redelivers_nothing_done(
        self, sqs: Any, moto_endpoint: str, tmp_path: Path
    ) -> None:
        """Exit 0; finished messages are deleted; every other message is visible again at once."""
        (tmp_path / "slow.py").write_text(_HANDLER)
        url, arn = await create_queue(sqs, unique("term"), VisibilityTimeout=60)
        sent = set()
        for i in range(20):
            sent.add((await sqs.send_message(QueueUrl=url, MessageBody=f"m{i}"))["MessageId"])
        config = _one_mapping(
            tmp_path,
            moto_endpoint,
            arn,
            "slow:handle",
            5,
            grace=10,
            BatchSize=2,
            ScalingConfig={"MaximumConcurrency": 2},
        )
        proc = _spawn(config)
        log = tmp_path / "calls.log"
        try:
            await wait_for(lambda: len(_log_ids(log, "start")) >= 2, within=30)
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(proc.wait, 30)
        finally:
            if proc.poll() is None:
                proc.kill()
        stderr = _stderr(config)
        assert code == 0, stderr[-2000:]
        started, done = _log_ids(log, "start"), _log_ids(log, "done")
        assert started == done, "every batch that started finished within the grace period"
        # Nothing that succeeded is redelivered and nothing else is lost. Messages gathered but not
        # invoked are visible again right now (visibility 0), not after the 60 s timeout. The one
        # exception is a ReceiveMessage cut off in flight by the signal: what SQS handed to it stays
        # invisible until its timeout, so at most one receive per poller (2 x BatchSize 2) may lag.
        visible, in_flight = await queue_counts(sqs, url)
        assert visible + in_flight == len(sent) - len(done)
        assert in_flight <= 4
        left: set[str] = set()
        while True:
            resp = await sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
            if not resp.get("Messages"):
                break
            left |= {m["MessageId"] for m in resp["Messages"]}
        assert left <= sent - done
        assert len(left) == visible
        assert '"event": "shutdown_requested"' in stderr


class TestStartupErrors:
    """Configuration that only AWS can reveal stops the daemon before anything is polled."""

    async def test_function_timeout_above_visibility_timeout_exits_2(
        self, sqs: Any, moto_endpoint: str, tmp_path: Path
    ) -> None:
        """A 60 s function on a 30 s-visibility queue fails with AWS's message and exit code 2."""
        (tmp_path / "slow.py").write_text(_HANDLER)
        url, arn = await create_queue(sqs, unique("vt"), VisibilityTimeout=30)
        await sqs.send_message(QueueUrl=url, MessageBody="untouched")
        config = _one_mapping(tmp_path, moto_endpoint, arn, "slow:handle", 60)
        proc = _spawn(config)
        code = await asyncio.to_thread(proc.wait, 30)
        stderr = _stderr(config)
        assert code == 2
        assert "Queue visibility timeout: 30 seconds is less than Function timeout: 60 seconds" in stderr
        assert await queue_counts(sqs, url) == (1, 0)

    async def test_unimportable_handler_exits_2(self, moto_endpoint: str, tmp_path: Path) -> None:
        """A handler module that does not exist is reported by name and the exit code is 2."""
        arn = f"arn:aws:sqs:{REGION}:123456789012:whatever"
        config = _one_mapping(tmp_path, moto_endpoint, arn, "no_such_module:handle", 3)
        proc = _spawn(config)
        code = await asyncio.to_thread(proc.wait, 30)
        stderr = _stderr(config)
        assert code == 2
        assert "no_such_module" in stderr


class TestSecondSignal:
    """A second signal does not wait for the grace period."""

    async def test_second_sigterm_forces_exit_and_returns_messages(
        self, sqs: Any, moto_endpoint: str, tmp_path: Path
    ) -> None:
        """With a 30 s grace period and a 60 s handler, a second SIGTERM exits at once with code 1.

        The abandoned batch is returned to the queue (visibility 0), so nothing waits out its
        60 s visibility timeout and nothing is lost.
        """
        (tmp_path / "stuck.py").write_text("import time\n\ndef handle(event, context):\n    time.sleep(60)\n")
        url, arn = await create_queue(sqs, unique("force"), VisibilityTimeout=90)
        await sqs.send_message(QueueUrl=url, MessageBody="stuck")
        config = _one_mapping(tmp_path, moto_endpoint, arn, "stuck:handle", 60, grace=30, BatchSize=1)
        proc = _spawn(config)
        try:
            await wait_for(lambda: '"event": "mapping_started"' in _stderr(config), within=30)
            for _ in range(100):
                if (await queue_counts(sqs, url))[1] == 1:
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.3)
            proc.send_signal(signal.SIGTERM)
            await wait_for(lambda: '"event": "shutdown_requested"' in _stderr(config), within=10)
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(proc.wait, 15)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert code == 1, _stderr(config)[-2000:]
        assert '"event": "shutdown_forced"' in _stderr(config)
        assert await queue_counts(sqs, url) == (1, 0)
