"""SQS mappings whose target is an AWS Lambda function, reached through the real Invoke API client.

SQS is moto over HTTP; Lambda is `esm.testing.FakeLambda`, a hand-written behavioural fake of the
Invoke API, used because no emulator produces function errors, throttles or 413 answers
(../shared/TESTING.md). The aiobotocore Lambda client talks to it unchanged.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from esm.testing import FakeCall, FakeLambda, FakeReply, replies
from tests.conftest import REGION, unique
from tests.e2e.harness import create_queue, queue_counts, running_daemon, wait_for

pytestmark = pytest.mark.e2e


def _config(moto: str, fake: FakeLambda, fn: str, arn: str, **mapping: Any) -> dict[str, Any]:
    return {
        "aws": {"region": REGION, "endpoint_url": moto, "endpoints": {"lambda": fake.endpoint}},
        "functions": {"target": {"lambda": fake.arn(fn, "live")}},
        "event_source_mappings": [{"EventSourceArn": arn, "FunctionName": "target", **mapping}],
    }


async def _metric(daemon: Any, name: str, **labels: str) -> float:
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{daemon.http_port}/metrics") as r:
        text = await r.text()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


class TestLambdaTarget:
    """Throttles are retried, 413 splits the batch, FunctionError keeps the messages."""

    async def test_throttles_are_retried_and_are_not_function_errors(
        self, sqs: Any, moto_endpoint: str, tmp_path: Path
    ) -> None:
        """Two 429s then success: the message is deleted after three calls, counted as two throttles
        (Lambda's Throttles) and no function error."""
        url, arn = await create_queue(sqs, unique("thr"))
        fn = unique("fn")
        async with FakeLambda() as fake:
            fake.function(fn, timeout=3, handler=replies(FakeReply.throttle(), FakeReply.throttle(), FakeReply.ok()))
            await sqs.send_message(QueueUrl=url, MessageBody="m")
            async with running_daemon(tmp_path, _config(moto_endpoint, fake, fn, arn)) as daemon:
                await wait_for(lambda: len(fake.calls_to(fn)) >= 3)
                errors = await _metric(daemon, "esm_invocations_total", outcome="function_error")
                retried = await _metric(daemon, "esm_invocations_total", outcome="throttled")
            assert [c.qualifier for c in fake.calls_to(fn)] == ["live"] * 3
        assert (errors, retried) == (0, 2)
        assert await queue_counts(sqs, url) == (0, 0)

    async def test_payload_too_large_splits_the_batch(self, sqs: Any, moto_endpoint: str, tmp_path: Path) -> None:
        """A function that answers 413 for batches above 2 records still gets every message, in halves."""
        url, arn = await create_queue(sqs, unique("big"))
        fn = unique("fn")

        def handler(event: Any, _call: FakeCall) -> FakeReply:
            return FakeReply.too_large() if len(event["Records"]) > 2 else FakeReply.ok()

        async with FakeLambda() as fake:
            fake.function(fn, timeout=3, handler=handler)
            await sqs.send_message_batch(
                QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": f"m{i}"} for i in range(8)]
            )
            config = _config(moto_endpoint, fake, fn, arn, BatchSize=8, MaximumBatchingWindowInSeconds=1)
            async with running_daemon(tmp_path, config):
                await wait_for(
                    lambda: sum(len(c.event["Records"]) for c in fake.calls_to(fn) if len(c.event["Records"]) <= 2) >= 8
                )
            delivered = [
                r["body"] for c in fake.calls_to(fn) if len(c.event["Records"]) <= 2 for r in c.event["Records"]
            ]
        assert sorted(delivered) == sorted(f"m{i}" for i in range(8))
        assert await queue_counts(sqs, url) == (0, 0)

    async def test_function_error_leaves_the_message(self, sqs: Any, moto_endpoint: str, tmp_path: Path) -> None:
        """An Unhandled FunctionError deletes nothing: the message stays in flight for its visibility timeout."""
        url, arn = await create_queue(sqs, unique("ferr"), VisibilityTimeout=30)
        fn = unique("fn")
        async with FakeLambda() as fake:
            fake.function(fn, timeout=3, handler=replies(FakeReply.function_error({"errorMessage": "boom"})))
            await sqs.send_message(QueueUrl=url, MessageBody="m")
            async with running_daemon(tmp_path, _config(moto_endpoint, fake, fn, arn)) as daemon:
                await wait_for(lambda: len(fake.calls_to(fn)) >= 1)
                failed = 0.0
                for _ in range(100):  # the counter moves once the response has been read
                    failed = await _metric(daemon, "esm_failed_invoke_events_total")
                    if failed:
                        break
                    await asyncio.sleep(0.05)
        assert failed == 1
        assert await queue_counts(sqs, url) == (0, 1)


class TestUnreachableFunction:
    """A function that cannot be reached pauses polling instead of draining the queue to its DLQ."""

    async def test_missing_function_pauses_polling_and_reports_unhealthy(
        self, sqs: Any, moto_endpoint: str, tmp_path: Path
    ) -> None:
        """ResourceNotFound from Invoke: /readyz says why, and retries back off (1 s, 2 s, …) instead of spinning."""
        dlq_url, dlq_arn = await create_queue(sqs, unique("dlq"))
        policy = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 3}
        url, arn = await create_queue(sqs, unique("nofn"), VisibilityTimeout=1, RedrivePolicy=policy)
        await sqs.send_message(QueueUrl=url, MessageBody="m")
        async with FakeLambda() as fake:
            config = _config(moto_endpoint, fake, "never-registered", arn)
            async with running_daemon(tmp_path, config) as daemon:
                await asyncio.sleep(4)
                async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{daemon.http_port}/readyz") as r:
                    status, body = r.status, await r.json()
                attempts = await _metric(daemon, "esm_invocations_total", outcome="fatal")
        assert status == 503
        assert "function unreachable" in body["mappings"][0]["reason"]
        assert 1 <= attempts <= 3  # 0 s, ~1 s, ~3 s: a growing pause, not one attempt per receive
        assert await queue_counts(sqs, dlq_url) == (0, 0)
