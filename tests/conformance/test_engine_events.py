"""Conformance of what the running daemon hands to a function, against events recorded on real AWS.

Each case reproduces a recorded LocalStack parity scenario (ESM-SPEC.md §8 vectors 1–4) with the
real daemon on moto and compares the captured events with `../shared/aws-recordings/sqs.snapshot.json`
(keys, key order, JSON types, value formats; see `recordings.assert_matches_recording`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conformance.recordings import RECORDED_BOOK_ATTRIBUTES, assert_matches_recording, recorded, records_in
from tests.conftest import REGION, unique
from tests.e2e.harness import RECORDER, create_queue, running_daemon, wait_for

HANDLER = "tests.e2e.handlers:record"


@pytest.fixture(autouse=True)
def _fresh_recorder() -> Iterator[None]:
    RECORDER.behaviours.clear()
    RECORDER.calls.clear()
    yield
    RECORDER.behaviours.clear()


def _config(endpoint: str, fn: str, mapping: dict[str, Any], timeout: float = 1) -> dict[str, Any]:
    return {
        "aws": {"region": REGION, "endpoint_url": endpoint},
        "functions": {fn: {"handler": HANDLER, "timeout": timeout}},
        "event_source_mappings": [{"FunctionName": fn, **mapping}],
    }


def _recorded_records(test: str, key: str) -> list[dict[str, Any]]:
    return records_in(recorded(test, key))


class TestSqsEventsMatchAws:
    """The events esm delivers have AWS's keys, order, types and formats."""

    async def test_vector_1_retry_after_visibility_timeout(self, sqs: Any, moto_endpoint: str, tmp_path: Path) -> None:
        """A failed message comes back with the same messageId, a new receiptHandle and receive count 2."""
        url, arn = await create_queue(sqs, unique("v1"), VisibilityTimeout=1)
        fn = unique("fn")
        RECORDER.behaviours[fn] = lambda _e, _c: _fail_first(fn)
        await sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"destination": url, "fail_attempts": 1}))
        async with running_daemon(tmp_path, _config(moto_endpoint, fn, {"EventSourceArn": arn, "BatchSize": 1})):
            await wait_for(lambda: len(RECORDER.calls_of(fn)) >= 2)
        first, second = (c.event["Records"][0] for c in RECORDER.calls_of(fn)[:2])
        bindings: dict[str, str] = {}
        test = "test_failing_lambda_retries_after_visibility_timeout"
        assert_matches_recording(first, _recorded_records(test, "first_attempt")[0], bindings=bindings)
        assert_matches_recording(second, _recorded_records(test, "second_attempt")[0], bindings=bindings)
        assert (first["attributes"]["ApproximateReceiveCount"], second["attributes"]["ApproximateReceiveCount"]) == (
            "1",
            "2",
        )

    async def test_message_attributes(self, sqs: Any, moto_endpoint: str, tmp_path: Path) -> None:
        """String and Number message attributes arrive lower-camel with AWS's md5OfMessageAttributes."""
        url, arn = await create_queue(sqs, unique("attrs"))
        fn = unique("fn")
        await sqs.send_message(
            QueueUrl=url,
            MessageBody=json.dumps({"destination": url, "fail_attempts": 0}),
            MessageAttributes=RECORDED_BOOK_ATTRIBUTES,
        )
        async with running_daemon(tmp_path, _config(moto_endpoint, fn, {"EventSourceArn": arn, "BatchSize": 1})):
            await wait_for(lambda: len(RECORDER.calls_of(fn)) >= 1)
        record = RECORDER.calls_of(fn)[0].event["Records"][0]
        expected = _recorded_records("test_message_body_and_attributes_passed_correctly", "first_attempt")[0]
        assert_matches_recording(record, expected)
        assert record["md5OfMessageAttributes"] == "d25a6aea97eb8f585bfa92d314504a92"

    async def test_batching_window_shows_null_md5(self, sqs: Any, moto_endpoint: str, tmp_path: Path) -> None:
        """With a batching window, a message without attributes carries md5OfMessageAttributes: null, as recorded."""
        url, arn = await create_queue(sqs, unique("win"))
        fn = unique("fn")
        await sqs.send_message(QueueUrl=url, MessageBody="0-0-message-0")
        mapping = {"EventSourceArn": arn, "BatchSize": 15, "MaximumBatchingWindowInSeconds": 1}
        async with running_daemon(tmp_path, _config(moto_endpoint, fn, mapping)):
            await wait_for(lambda: len(RECORDER.calls_of(fn)) >= 1)
        record = RECORDER.calls_of(fn)[0].event["Records"][0]
        expected = recorded("TestSQSEventSourceMapping::test_sqs_event_source_mapping_batch_size[15]", "Records")[0]
        assert_matches_recording(record, expected)
        assert record["md5OfMessageAttributes"] is None

    async def test_fifo_records(self, sqs: Any, moto_endpoint: str, tmp_path: Path) -> None:
        """FIFO records carry SequenceNumber, MessageGroupId and MessageDeduplicationId as strings."""
        url, arn = await create_queue(sqs, unique("fifo") + ".fifo")
        fn = unique("fn")
        for i, fails in zip(range(1, 5), (0, 1, 1, 2), strict=True):  # the recorded bodies
            await sqs.send_message(
                QueueUrl=url,
                MessageBody=json.dumps({"message": i, "fail_attempts": fails}),
                MessageGroupId="1",
                MessageDeduplicationId=f"dedup-{i}",
            )
        async with running_daemon(tmp_path, _config(moto_endpoint, fn, {"EventSourceArn": arn, "BatchSize": 10})):
            await wait_for(lambda: len(RECORDER.bodies_of(fn)) >= 4)
        actual = [r for c in RECORDER.calls_of(fn) for r in c.event["Records"]]
        expected = _recorded_records("test_report_batch_item_failures", "first_invocation")
        for got, want in zip(actual, expected, strict=True):
            assert_matches_recording(got, want)
        assert [r["attributes"]["MessageDeduplicationId"] for r in actual] == [f"dedup-{i}" for i in range(1, 5)]


def _fail_first(fn: str) -> None:
    if len(RECORDER.calls_of(fn)) == 1:
        raise RuntimeError("failed attempt")
