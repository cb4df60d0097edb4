"""SQS event source mappings end to end: the real daemon, a real moto server over HTTP.

Each test creates its own queues on the shared moto server, starts the daemon with an in-process
handler (`tests.e2e.handlers:record`) and checks what the handler saw and what is left in the
queues — the observable behaviour ESM-SPEC.md §3.1, §3.2, §4.1 and §5.1 describe.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import REGION, unique
from tests.e2e.harness import RECORDER, create_queue, queue_counts, running_daemon, wait_for

pytestmark = pytest.mark.e2e
HANDLER = "tests.e2e.handlers:record"


@pytest.fixture(autouse=True)
def _fresh_recorder() -> Iterator[None]:
    RECORDER.behaviours.clear()
    RECORDER.calls.clear()
    RECORDER.max_active = 0
    RECORDER.active = 0
    yield
    RECORDER.behaviours.clear()


def _config(moto_endpoint: str, fn: str, mapping: dict[str, Any], timeout: float = 3, **extra: Any) -> dict[str, Any]:
    return {
        "aws": {"region": REGION, "endpoint_url": moto_endpoint},
        "functions": {fn: {"handler": HANDLER, "timeout": timeout}},
        "event_source_mappings": [{"FunctionName": fn, **mapping}],
        **extra,
    }


class TestRoundTrip:
    """Messages reach the handler once and are deleted after success."""

    async def test_standard_queue_messages_are_delivered_and_deleted(
        self, sqs: Any, moto_endpoint: str, tmp_path: Path
    ) -> None:
        """Every message sent reaches the handler exactly once and the queue ends empty."""
        url, arn = await create_queue(sqs, unique("std"))
        fn = unique("fn")
        for i in range(5):
            await sqs.send_message(QueueUrl=url, MessageBody=f"m{i}")
        async with running_daemon(tmp_path, _config(moto_endpoint, fn, {"EventSourceArn": arn})):
            await wait_for(lambda: len(RECORDER.bodies_of(fn)) >= 5)
        assert sorted(RECORDER.bodies_of(fn)) == [f"m{i}" for i in range(5)]
        assert await queue_counts(sqs, url) == (0, 0)

    async def test_fifo_queue_keeps_order_within_a_group(self, sqs: Any, moto_endpoint: str, tmp_path: Path) -> None:
        """A FIFO queue's messages arrive in send order per message group and are all deleted."""
        url, arn = await create_queue(sqs, unique("order") + ".fifo", ContentBasedDeduplication="true")
        fn = unique("fn")
        for i in range(12):
            await sqs.send_message(QueueUrl=url, MessageBody=f"g{i % 2}-{i}", MessageGroupId=f"g{i % 2}")
        mapping = {"EventSourceArn": arn, "BatchSize": 3}
        async with running_daemon(tmp_path, _config(moto_endpoint, fn, mapping)):
            await wait_for(lambda: len(RECORDER.bodies_of(fn)) >= 12)
        bodies = RECORDER.bodies_of(fn)
        for g in ("g0", "g1"):
            seq = [int(b.split("-")[1]) for b in bodies if b.startswith(g)]
            assert seq == sorted(seq)
            assert len(seq) == 6
        assert await queue_counts(sqs, url) == (0, 0)


# Rows of the partial batch response table (ESM-SPEC.md §4.1): what the function returns -> which
# of the messages ("a", "b", "c") are deleted. `FAIL_B` is replaced by b's messageId.
_PARTIAL_ROWS = [
    ("none-succeeds", None, {"a", "b", "c"}),
    ("empty-object-succeeds", {}, {"a", "b", "c"}),
    ("empty-list-succeeds", {"batchItemFailures": []}, {"a", "b", "c"}),
    ("null-list-succeeds", {"batchItemFailures": None}, {"a", "b", "c"}),
    ("listed-id-is-kept", {"batchItemFailures": [{"itemIdentifier": "FAIL_B"}]}, {"a", "c"}),
    ("bad-key-fails-whole-batch", {"batchItemFailures": [{"foo": "notvalid"}]}, set()),
    ("empty-id-fails-whole-batch", {"batchItemFailures": [{"itemIdentifier": ""}]}, set()),
    ("null-id-fails-whole-batch", {"batchItemFailures": [{"itemIdentifier": None}]}, set()),
    ("unknown-id-fails-whole-batch", {"batchItemFailures": [{"itemIdentifier": "not-in-batch"}]}, set()),
    ("exception-fails-whole-batch", RuntimeError("boom"), set()),
]


class TestPartialBatchResponses:
    """Each row of AWS's partial batch response table decides which messages are deleted."""

    @pytest.mark.parametrize(("response", "deleted"), [r[1:] for r in _PARTIAL_ROWS], ids=[r[0] for r in _PARTIAL_ROWS])
    async def test_response_row(
        self, sqs: Any, moto_endpoint: str, tmp_path: Path, response: Any, deleted: set[str]
    ) -> None:
        """The first invocation's response deletes exactly the row's messages; the rest come back."""
        url, arn = await create_queue(sqs, unique("pbr"), VisibilityTimeout=1)
        fn = unique("fn")
        # One SendMessageBatch: the three become visible together, so one receive takes them all.
        await sqs.send_message_batch(
            QueueUrl=url, Entries=[{"Id": body, "MessageBody": body} for body in ("a", "b", "c")]
        )

        def behaviour(event: dict[str, Any], _ctx: Any) -> Any:
            if len(RECORDER.calls_of(fn)) > 1:
                return None  # later invocations (redeliveries) succeed
            if isinstance(response, Exception):
                raise response
            ids = {r["body"]: r["messageId"] for r in event["Records"]}
            return json.loads(json.dumps(response).replace("FAIL_B", ids.get("b", "missing")))

        RECORDER.behaviours[fn] = behaviour
        mapping = {
            "EventSourceArn": arn,
            "BatchSize": 10,
            "MaximumBatchingWindowInSeconds": 1,
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
            "ScalingConfig": {"MaximumConcurrency": 2},  # fewer pollers racing for the three messages
        }
        async with running_daemon(tmp_path, _config(moto_endpoint, fn, mapping, timeout=1)):
            await wait_for(lambda: len(RECORDER.bodies_of(fn)) >= 3)
            first = RECORDER.calls_of(fn)[0]
            assert sorted(first.bodies) == ["a", "b", "c"], "the three messages arrive in one batch"
            retried = {"a", "b", "c"} - deleted
            await wait_for(lambda: len(RECORDER.bodies_of(fn)) >= 3 + len(retried))
            await asyncio.sleep(1.5)  # a deleted message would have reappeared by now (visibility 1 s)
            redelivered = RECORDER.bodies_of(fn)[3:]
            assert sorted(redelivered) == sorted(retried)
        assert await queue_counts(sqs, url) == (0, 0)


class TestRedrive:
    """Failed messages are left to the queue's redrive policy, never deleted."""

    async def test_always_failing_message_moves_to_the_dlq(self, sqs: Any, moto_endpoint: str, tmp_path: Path) -> None:
        """With maxReceiveCount 2 the handler sees receive counts 1 and 2, then the DLQ holds the same message."""
        dlq_url, dlq_arn = await create_queue(sqs, unique("dlq"))
        policy = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2}
        url, arn = await create_queue(sqs, unique("src"), VisibilityTimeout=1, RedrivePolicy=policy)
        fn = unique("fn")
        sent = (await sqs.send_message(QueueUrl=url, MessageBody='{"fail": true}'))["MessageId"]

        def behaviour(_event: dict[str, Any], _ctx: Any) -> Any:
            raise ValueError("always fails")

        RECORDER.behaviours[fn] = behaviour
        config = _config(moto_endpoint, fn, {"EventSourceArn": arn, "BatchSize": 1}, timeout=1)
        async with running_daemon(tmp_path, config):
            await wait_for(lambda: len(RECORDER.calls_of(fn)) >= 2)
            await asyncio.sleep(2.5)  # a third receive moves it to the DLQ instead of delivering it
        records = [c.event["Records"][0] for c in RECORDER.calls_of(fn)]
        assert [r["attributes"]["ApproximateReceiveCount"] for r in records] == ["1", "2"]
        assert {r["messageId"] for r in records} == {sent}
        assert records[0]["receiptHandle"] != records[1]["receiptHandle"]
        dead = await sqs.receive_message(QueueUrl=dlq_url, WaitTimeSeconds=2)
        assert [m["MessageId"] for m in dead["Messages"]] == [sent]
        assert dead["Messages"][0]["Body"] == '{"fail": true}'


class TestVisibilityHeartbeat:
    """Messages held longer than the visibility timeout are not redelivered meanwhile."""

    async def test_batch_held_twice_the_visibility_timeout_is_not_redelivered(
        self, sqs: Any, moto_endpoint: str, tmp_path: Path
    ) -> None:
        """A 2 s window plus a 2 s invocation on a 2 s-visibility queue: one invocation, then deleted.

        The message is held ~4 s (gathering, then invoking), twice its visibility timeout; without
        the heartbeat it would reappear after 2 s and reach a second invocation.
        """
        url, arn = await create_queue(sqs, unique("hb"), VisibilityTimeout=2)
        fn = unique("fn")

        def behaviour(_event: dict[str, Any], _ctx: Any) -> Any:
            time.sleep(1.9)
            return None

        RECORDER.behaviours[fn] = behaviour
        await sqs.send_message(QueueUrl=url, MessageBody="long")
        mapping = {"EventSourceArn": arn, "BatchSize": 20, "MaximumBatchingWindowInSeconds": 2}
        async with running_daemon(tmp_path, _config(moto_endpoint, fn, mapping, timeout=2)) as daemon:
            await wait_for(lambda: len(RECORDER.calls_of(fn)) >= 1 and RECORDER.calls_of(fn)[0].ended > 0)
            held = RECORDER.calls_of(fn)[0].ended - RECORDER.calls_of(fn)[0].started
            await asyncio.sleep(2.5)
            metrics = await _metrics(daemon)
        assert held >= 1.8
        assert len(RECORDER.calls_of(fn)) == 1
        assert await queue_counts(sqs, url) == (0, 0)
        assert _sample(metrics, "esm_visibility_extensions_total") >= 1


class TestFifoGroups:
    """FIFO: a failure blocks its message group until the failed message succeeds."""

    async def test_nothing_later_in_a_group_is_processed_before_a_failed_message(
        self, sqs: Any, moto_endpoint: str, tmp_path: Path
    ) -> None:
        """A2 fails once: A3 is not delivered until A2 has been retried, while group B goes on."""
        url, arn = await create_queue(
            sqs, unique("grp") + ".fifo", VisibilityTimeout=1, ContentBasedDeduplication="true"
        )
        fn = unique("fn")
        for i in range(1, 4):
            await sqs.send_message(QueueUrl=url, MessageBody=f"A{i}", MessageGroupId="A")
            await sqs.send_message(QueueUrl=url, MessageBody=f"B{i}", MessageGroupId="B")
        failed_once: list[str] = []

        def behaviour(event: dict[str, Any], _ctx: Any) -> Any:
            if event["Records"][0]["body"] == "A2" and not failed_once:
                failed_once.append("A2")
                raise RuntimeError("A2 fails once")

        RECORDER.behaviours[fn] = behaviour
        mapping = {"EventSourceArn": arn, "BatchSize": 1}
        async with running_daemon(tmp_path, _config(moto_endpoint, fn, mapping, timeout=1)):
            await wait_for(lambda: "A3" in RECORDER.bodies_of(fn) and "B3" in RECORDER.bodies_of(fn))
        bodies = RECORDER.bodies_of(fn)
        assert [b for b in bodies if b.startswith("A")] == ["A1", "A2", "A2", "A3"]
        assert [b for b in bodies if b.startswith("B")] == ["B1", "B2", "B3"]
        assert await queue_counts(sqs, url) == (0, 0)

    async def test_unreported_later_messages_of_a_failed_group_are_kept(
        self, sqs: Any, moto_endpoint: str, tmp_path: Path
    ) -> None:
        """A batch where only A2 is reported failed deletes A1 and group B, and keeps A2..A5 (order safeguard).

        (The redelivery itself is not asserted here: moto hands back only the last of several
        FIFO messages of a group that become visible together, unlike SQS.)
        """
        url, arn = await create_queue(
            sqs, unique("keep") + ".fifo", VisibilityTimeout=30, ContentBasedDeduplication="true"
        )
        fn = unique("fn")
        for i in range(1, 6):
            await sqs.send_message(QueueUrl=url, MessageBody=f"A{i}", MessageGroupId="A")
            await sqs.send_message(QueueUrl=url, MessageBody=f"B{i}", MessageGroupId="B")

        def behaviour(event: dict[str, Any], _ctx: Any) -> Any:
            ids = {r["body"]: r["messageId"] for r in event["Records"]}
            return {"batchItemFailures": [{"itemIdentifier": ids["A2"]}]} if "A2" in ids else None

        RECORDER.behaviours[fn] = behaviour
        mapping = {"EventSourceArn": arn, "BatchSize": 10, "FunctionResponseTypes": ["ReportBatchItemFailures"]}
        async with running_daemon(tmp_path, _config(moto_endpoint, fn, mapping, timeout=1)):
            await wait_for(lambda: len(RECORDER.calls_of(fn)) >= 1 and RECORDER.calls_of(fn)[0].ended > 0)
            await asyncio.sleep(0.5)
        assert sorted(RECORDER.calls_of(fn)[0].bodies) == sorted(
            [f"A{i}" for i in range(1, 6)] + [f"B{i}" for i in range(1, 6)]
        )
        assert await queue_counts(sqs, url) == (0, 4)

    async def test_two_batches_of_one_group_are_never_in_flight(
        self, sqs: Any, moto_endpoint: str, tmp_path: Path
    ) -> None:
        """With 4 concurrent pollers, no two overlapping invocations share a message group."""
        url, arn = await create_queue(sqs, unique("par") + ".fifo", ContentBasedDeduplication="true")
        fn = unique("fn")
        for i in range(24):
            await sqs.send_message(QueueUrl=url, MessageBody=f"{i % 4}-{i}", MessageGroupId=str(i % 4))
        RECORDER.behaviours[fn] = lambda _e, _c: time.sleep(0.2)
        mapping = {"EventSourceArn": arn, "BatchSize": 2, "ScalingConfig": {"MaximumConcurrency": 4}}
        async with running_daemon(tmp_path, _config(moto_endpoint, fn, mapping)):
            await wait_for(lambda: len(RECORDER.bodies_of(fn)) >= 24, within=30)
        calls = RECORDER.calls_of(fn)
        for a in calls:
            for b in calls:
                if a is not b and a.started < b.ended and b.started < a.ended:
                    groups_a = {r["attributes"]["MessageGroupId"] for r in a.event["Records"]}
                    groups_b = {r["attributes"]["MessageGroupId"] for r in b.event["Records"]}
                    assert not groups_a & groups_b
        assert RECORDER.max_active >= 2, "groups were processed concurrently"


class TestConcurrency:
    """ScalingConfig.MaximumConcurrency caps concurrent invocations."""

    async def test_maximum_concurrency_is_respected(self, sqs: Any, moto_endpoint: str, tmp_path: Path) -> None:
        """With MaximumConcurrency 2 the largest number of concurrent invocations seen is exactly 2."""
        url, arn = await create_queue(sqs, unique("conc"))
        fn = unique("fn")
        for i in range(0, 30, 10):
            await sqs.send_message_batch(
                QueueUrl=url, Entries=[{"Id": str(j), "MessageBody": f"m{i + j}"} for j in range(10)]
            )
        RECORDER.behaviours[fn] = lambda _e, _c: time.sleep(0.3)
        mapping = {"EventSourceArn": arn, "BatchSize": 1, "ScalingConfig": {"MaximumConcurrency": 2}}
        async with running_daemon(tmp_path, _config(moto_endpoint, fn, mapping)):
            await wait_for(lambda: len(RECORDER.bodies_of(fn)) >= 30, within=40)
        assert RECORDER.max_active == 2


class TestDisabledAndMissing:
    """Disabled mappings are not polled; a missing queue is reported while others go on."""

    async def test_disabled_mapping_is_not_polled(self, sqs: Any, moto_endpoint: str, tmp_path: Path) -> None:
        """`Enabled: false` leaves the queue untouched and the handler uninvoked."""
        url, arn = await create_queue(sqs, unique("off"))
        fn = unique("fn")
        await sqs.send_message(QueueUrl=url, MessageBody="stay")
        async with running_daemon(tmp_path, _config(moto_endpoint, fn, {"EventSourceArn": arn, "Enabled": False})):
            await asyncio.sleep(1.5)
        assert RECORDER.calls_of(fn) == []
        assert await queue_counts(sqs, url) == (1, 0)

    async def test_missing_queue_is_unhealthy_and_others_go_on(
        self, sqs: Any, moto_endpoint: str, tmp_path: Path
    ) -> None:
        """/readyz names the missing queue with AWS's text, another mapping still delivers, and the queue heals it."""
        good_url, good_arn = await create_queue(sqs, unique("good"))
        missing = unique("missing")
        missing_arn = f"arn:aws:sqs:{REGION}:123456789012:{missing}"
        fn = unique("fn")
        config = _config(moto_endpoint, fn, {"EventSourceArn": good_arn})
        config["event_source_mappings"].append({"EventSourceArn": missing_arn, "FunctionName": fn})
        await sqs.send_message(QueueUrl=good_url, MessageBody="ok")
        async with running_daemon(tmp_path, config) as daemon:
            await wait_for(lambda: RECORDER.bodies_of(fn) == ["ok"])
            status, body = await _get(daemon, "/readyz")
            assert status == 503
            bad = next(m for m in body["mappings"] if m["source"] == missing_arn)
            assert bad["state"] == "unhealthy"
            assert "AWS.SimpleQueueService.NonExistentQueue" in bad["reason"]
            url, _ = await create_queue(sqs, missing)
            await sqs.send_message(QueueUrl=url, MessageBody="late")
            await wait_for(lambda: "late" in RECORDER.bodies_of(fn), within=30)
            status, _ = await _get(daemon, "/readyz")
            assert status == 200
            hstatus, _ = await _get(daemon, "/healthz")
            assert hstatus == 200


async def _get(daemon: Any, path: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{daemon.http_port}{path}") as r:
        return r.status, await r.json()


async def _metrics(daemon: Any) -> str:
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{daemon.http_port}/metrics") as r:
        return await r.text()


def _sample(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))


class TestMisbehavingHandlers:
    """A handler that exits or raises CancelledError fails its batch and nothing else."""

    @pytest.mark.parametrize("error", [SystemExit(3), asyncio.CancelledError()], ids=["sys-exit", "cancelled"])
    async def test_exit_is_a_function_error(
        self, sqs: Any, moto_endpoint: str, tmp_path: Path, error: BaseException
    ) -> None:
        """The first invocation raises `error`: the message comes back and the next invocation succeeds."""
        url, arn = await create_queue(sqs, unique("exit"), VisibilityTimeout=1)
        fn = unique("fn")
        await sqs.send_message(QueueUrl=url, MessageBody="m")

        def behaviour(_event: dict[str, Any], _ctx: Any) -> Any:
            if len(RECORDER.calls_of(fn)) == 1:
                raise error

        RECORDER.behaviours[fn] = behaviour
        async with running_daemon(tmp_path, _config(moto_endpoint, fn, {"EventSourceArn": arn}, timeout=1)) as daemon:
            await wait_for(lambda: len(RECORDER.calls_of(fn)) >= 2)
            await asyncio.sleep(0.3)
            status, _ = await _get(daemon, "/healthz")
        assert status == 200
        assert await queue_counts(sqs, url) == (0, 0)


class TestDeleteFailures:
    """A delete that finally fails is counted and logged, and the mapping goes on."""

    async def test_failed_delete_is_counted_and_the_daemon_keeps_running(
        self, sqs: Any, moto_endpoint: str, tmp_path: Path
    ) -> None:
        """The handler deletes its own queue: the delete fails and is counted, and /healthz stays ok."""
        url, arn = await create_queue(sqs, unique("gone"))
        fn = unique("fn")
        await sqs.send_message(QueueUrl=url, MessageBody="m")
        deleted_queue: list[bool] = []

        def behaviour(_event: dict[str, Any], _ctx: Any) -> Any:
            if not deleted_queue:
                import boto3  # moto's dependency; a synchronous client is simplest inside a handler thread

                boto3.client("sqs", region_name=REGION, endpoint_url=moto_endpoint).delete_queue(QueueUrl=url)
                deleted_queue.append(True)

        RECORDER.behaviours[fn] = behaviour
        async with running_daemon(tmp_path, _config(moto_endpoint, fn, {"EventSourceArn": arn})) as daemon:
            await wait_for(lambda: bool(deleted_queue))
            failures = 0.0
            for _ in range(100):  # the counter moves once the delete's retries are over
                failures = _sample(await _metrics(daemon), "esm_delete_failures_total")
                if failures:
                    break
                await asyncio.sleep(0.1)
            status, _ = await _get(daemon, "/healthz")
        assert failures == 1
        assert status == 200
