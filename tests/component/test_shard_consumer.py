"""The shard consumer on behaviours no emulator produces in test time: old records, expired
iterators, throttling.

moto never expires an iterator nor throttles, kinesalite expires iterators only after 5 minutes,
and MaximumRecordAgeInSeconds is at least 60 s (ESM-SPEC.md §1.1), so a record can only be "too
old" after a minute's wait. `ScriptedStream` below is a hand-written stand-in for a Kinesis
stream: it serves records with the arrival times a test gives, raises the errors AWS raises
(`ExpiredIteratorException`, `ProvisionedThroughputExceededException`, classified as the real
client's errors are) and closes the shard with a null `NextShardIterator`, as Kinesis does. The
checkpoint store is the real SQLite store and the function a real in-process handler target.
"""

from __future__ import annotations

import asyncio
import functools
import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from esm.arns import SourceKind, parse_source_arn
from esm.config import MappingConfig, StreamsConfig
from esm.destinations import FailedBatch
from esm.errors import ExpiredIteratorError, RetriableAwsError, TrimmedDataError
from esm.events import assemble_event, encode_record, kinesis_record, kinesis_record_size
from esm.filtering import compile_filters
from esm.logging import get_logger
from esm.metrics import Metrics
from esm.policy import StreamPolicy
from esm.shard_consumer import ShardConsumer, StopReason, StreamContext
from esm.sources._shards import Page, Shard, StreamRecord
from esm.state import Checkpoint, Position, SqliteCheckpointStore
from esm.targets.base import Invocation, InvokeResult

ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/scripted"
SHARD = "shardId-000000000000"


class ScriptedStream:
    """A one-shard Kinesis stream with scripted records and failures (see the module docstring)."""

    kind = SourceKind.KINESIS
    read_interval = 0.0
    page_limit = 10_000

    def __init__(
        self,
        arrivals: list[float],
        failures: list[Exception] | None = None,
        data_size: int = 0,
        closed: bool = True,
    ) -> None:
        self.source = parse_source_arn(ARN)
        self.closed = closed
        self.unknown_lag = False  # True: pages do not say how far behind they are (as DynamoDB Streams)
        self.data_size = data_size
        self.records = [self._record(i, a) for i, a in enumerate(arrivals)]
        self.failures = list(failures or [])
        self.iterators: list[Checkpoint] = []
        self.reads = 0

    def append(self, arrival: float) -> None:
        """A record put now, with the arrival time the stream gave it."""
        self.records.append(self._record(len(self.records), arrival))

    def relabel(self, i: int, data: bytes) -> StreamRecord:
        """Record `i` again, carrying `data` instead of its number."""
        return self._record(i, self.records[i].arrival, data)

    def _record(self, i: int, arrival: float, data: bytes | None = None) -> StreamRecord:
        raw = {
            "SequenceNumber": str(1000 + i),
            "ApproximateArrivalTimestamp": arrival,
            "Data": data if data is not None else str(i).encode().ljust(self.data_size, b"."),
            "PartitionKey": "k",
        }
        build = functools.partial(
            kinesis_record, shard_id=SHARD, source=self.source, invoke_identity_arn="arn:aws:iam::1:role/r"
        )
        record = build(raw)
        # As the Kinesis source builds it: the event's bytes are written only when an invocation needs them,
        # and the raw record is kept to build the record again if a batch fails (`StreamRecord.renew`).
        return StreamRecord(
            1000 + i, str(1000 + i), "k", arrival, record, None, raw["Data"], kinesis_record_size(record), raw, build
        )

    async def list_shards(self) -> list[Shard]:
        return [Shard(SHARD, closed=True)]

    async def iterator(self, shard_id: str, checkpoint: Checkpoint) -> str:
        self.iterators.append(checkpoint)
        if checkpoint.position is Position.AFTER_SEQUENCE_NUMBER:
            assert checkpoint.sequence is not None
            return str(int(checkpoint.sequence) - 1000 + 1)
        return "0"

    async def read(self, shard_id: str, iterator: str, limit: int) -> Page:
        self.reads += 1
        if self.failures:
            raise self.failures.pop(0)
        start = int(iterator)
        page = self.records[start : start + 2]  # small pages, so a failure can land mid-shard
        end = start + len(page)
        if end == len(self.records) and self.closed:
            return Page(page, None, 0.0)
        # MillisBehindLatest: how far behind the tip this page leaves the reader, as Kinesis says it.
        behind = max(0.0, time.time() - self.records[end].arrival) if end < len(self.records) else 0.0
        return Page(page, str(end), None if self.unknown_lag else behind)


class Handler:
    """An in-process function that records every event and fails records listed in `poison`."""

    name = "fn"
    timeout = 5.0

    def __init__(self, poison: set[str] | None = None) -> None:
        self.events: list[list[str]] = []
        self.poison = poison or set()

    async def invoke(self, invocation: Invocation) -> InvokeResult:
        data = [r["kinesis"]["sequenceNumber"] for r in invocation.event["Records"]]
        self.events.append(data)
        if self.poison & set(data):
            return InvokeResult("Unhandled", json.dumps({"errorMessage": "poison"}).encode())
        return InvokeResult(None, b"")


class Destination:
    """Collects failure records as a destination would receive them."""

    arn = "arn:aws:sqs:us-east-1:123456789012:failed"

    def __init__(self) -> None:
        self.batches: list[FailedBatch] = []

    async def send(self, batch: FailedBatch) -> None:
        self.batches.append(batch)


async def consume(
    tmp_path: Path,
    stream: ScriptedStream,
    handler: Any,  # an Invoker (the Handler fakes here, or a real target)
    destination: Destination | None,
    start: Checkpoint | None = None,
    retention: float | None = None,
    stop_when: Callable[[], bool] | None = None,
    settings: dict[str, Any] | None = None,
    registry: CollectorRegistry | None = None,
    **mapping: Any,
) -> tuple[StopReason, dict[str, Checkpoint], CollectorRegistry]:
    """Run one consumer over the scripted shard to its end; return why it stopped and the checkpoints.

    `stop_when`: stop the mapping (as at shutdown) once it returns True (for a shard left open).
    `settings`: `streams:` settings besides the fast polling and retries used here.
    """
    m = MappingConfig.model_validate(
        {"EventSourceArn": ARN, "FunctionName": "fn", "StartingPosition": "TRIM_HORIZON", **mapping}
    )
    registry = registry or CollectorRegistry()
    streams = StreamsConfig.model_validate(
        {"idle_poll_interval": 0.01, "retry_delay": {"initial": 0.01}, **(settings or {})}
    )
    async with SqliteCheckpointStore(tmp_path / "state.db") as store:
        ctx = StreamContext(
            mapping=m,
            stream=stream,
            invoker=handler,  # type: ignore[arg-type]  # the Invoker protocol's context methods are unused here
            store=store,
            destination=destination,
            settings=streams,
            metrics=Metrics(registry).for_mapping(m.uuid, "fn", "kinesis"),
            log=get_logger(),
            function_arn="arn:aws:lambda:us-east-1:123456789012:function:fn",
            policy=StreamPolicy(
                maximum_retry_attempts=m.maximum_retry_attempts,
                maximum_record_age=m.maximum_record_age,
                bisect=m.bisect_on_function_error,
                report_batch_item_failures=m.report_batch_item_failures,
            ),
            filter=compile_filters(m.filter_patterns, SourceKind.KINESIS),
            retention=retention,
        )
        consumer = ShardConsumer(ctx, Shard(SHARD, closed=stream.closed), start or Checkpoint(Position.TRIM_HORIZON))
        if stop_when is not None:

            async def watch() -> None:
                while not stop_when():  # noqa: ASYNC110 - a plain condition of the test, polled
                    await asyncio.sleep(0.01)
                ctx.stopping.set()

            watcher = asyncio.create_task(watch())
        reason = await asyncio.wait_for(consumer.run(), 20)
        if stop_when is not None:
            watcher.cancel()
        return reason, await store.load(m.uuid, ARN), registry


class TestRecordAge:
    """MaximumRecordAgeInSeconds (ESM-SPEC.md §4.2, §8 vector 7)."""

    async def test_records_too_old_at_start_are_reported_and_never_invoked(self, tmp_path: Path) -> None:
        """Vector 7: RecordAgeExceeded, approximateInvokeCount 1, no responseContext; the rest is delivered."""
        now = time.time()
        stream = ScriptedStream([now - 120, now - 1, now - 1])
        handler, destination = Handler(), Destination()
        reason, checkpoints, _ = await consume(
            tmp_path, stream, handler, destination, MaximumRecordAgeInSeconds=60, MaximumRetryAttempts=0
        )
        assert [s for e in handler.events for s in e] == ["1001", "1002"]
        [old] = destination.batches
        assert (old.condition, old.approximate_invoke_count, old.response) == ("RecordAgeExceeded", 1, None)
        assert (old.info.start_sequence, old.info.end_sequence, old.info.batch_size) == ("1000", "1000", 1)
        assert reason is StopReason.SHARD_END
        assert checkpoints[SHARD].position is Position.SHARD_END

    async def test_records_that_expire_while_retried_are_discarded(self, tmp_path: Path) -> None:
        """With infinite retries, a failing record leaves when it passes the age limit (recorded behaviour)."""
        now = time.time()
        stream = ScriptedStream([now - 59.7])
        handler, destination = Handler(poison={"1000"}), Destination()
        await consume(tmp_path, stream, handler, destination, MaximumRecordAgeInSeconds=60)
        [old] = destination.batches
        assert old.condition == "RecordAgeExceeded"
        assert old.approximate_invoke_count == len(handler.events) >= 2
        assert old.response is None


class TestIteratorsAndThrottling:
    """An expired iterator is rebuilt from the read position; throttling only delays the shard."""

    async def test_an_expired_iterator_is_rebuilt_without_loss_or_repeat(self, tmp_path: Path) -> None:
        """After ExpiredIteratorException the consumer resumes after the last record it read."""
        stream = ScriptedStream([time.time()] * 5)
        handler = Handler()
        real_read = stream.read
        calls = 0

        async def expire_once(shard_id: str, iterator: str, limit: int) -> Page:
            nonlocal calls
            calls += 1
            if calls == 2:
                raise ExpiredIteratorError("GetRecords", "ExpiredIteratorException", "Iterator expired")
            return await real_read(shard_id, iterator, limit)

        stream.read = expire_once  # type: ignore[method-assign]
        reason, _, _ = await consume(tmp_path, stream, handler, None)
        assert [s for e in handler.events for s in e] == [str(1000 + i) for i in range(5)]
        assert stream.iterators == [Checkpoint(Position.TRIM_HORIZON), Checkpoint.after("1001")]
        assert reason is StopReason.SHARD_END

    async def test_throttling_backs_off_and_loses_nothing(self, tmp_path: Path) -> None:
        """ProvisionedThroughputExceeded is counted as a source error and the shard goes on afterwards."""
        throttled = RetriableAwsError("GetRecords", "ProvisionedThroughputExceededException", "Rate exceeded")
        stream = ScriptedStream([time.time()] * 3, failures=[throttled, throttled])
        handler = Handler()
        _, _, registry = await consume(tmp_path, stream, handler, None)
        assert [s for e in handler.events for s in e] == ["1000", "1001", "1002"]
        samples = [
            s.value
            for metric in registry.collect()
            if metric.name == "esm_source_errors"
            for s in metric.samples
            if s.labels.get("code") == "ProvisionedThroughputExceededException" and s.name.endswith("_total")
        ]
        assert samples == [2.0]


class TestBatching:
    """A batch never passes Lambda's 6 MB payload limit, measured on the serialized event (ESM-SPEC.md §2)."""

    async def test_the_6_mb_limit_cuts_batches_on_the_event_size(self, tmp_path: Path) -> None:
        """Four records of 1.5 MB (2 MB in base64): three fit one event, the fourth goes in the next."""
        stream = ScriptedStream([time.time()] * 4, data_size=1_500_000)
        handler = Handler()
        await consume(tmp_path, stream, handler, None, MaximumBatchingWindowInSeconds=1)
        assert handler.events == [["1000", "1001", "1002"], ["1003"]]


class BytesTarget(Handler):
    """A function reached over the wire (Lambda, HTTP): it is sent the event's bytes, and may change nothing else."""

    def __init__(self, poison: set[str] | None = None, mutate: bool = False) -> None:
        super().__init__(poison)
        self.payloads: list[bytes] = []
        self.sizes: list[int] = []
        self.mutate = mutate
        self.changed = 0

    async def invoke(self, invocation: Invocation) -> InvokeResult:
        if self.mutate:  # an in-process handler that decodes its records in place
            for r in invocation.event["Records"]:
                r["kinesis"]["data"] = {"decoded": r["kinesis"]["data"]}
                self.changed += 1
        else:
            self.payloads.append(invocation.payload)
            self.sizes.append(invocation.size)
        return await super().invoke(invocation)


class TestEventBytes:
    """The event's bytes are written only when a target asks for them, and then exactly (ESM-SPEC.md §2)."""

    async def test_a_target_that_sends_bytes_gets_the_exact_event(self, tmp_path: Path) -> None:
        """Byte for byte the generic encoder's event, of the size that cut the batch; filtered records left out."""
        stream = ScriptedStream([time.time()] * 7, data_size=40)
        target = BytesTarget()
        not_1003 = {"Filters": [{"Pattern": json.dumps({"sequenceNumber": [{"anything-but": ["1003"]}]})}]}
        await consume(tmp_path, stream, target, None, BatchSize=3, FilterCriteria=not_1003)
        records = [r.record for r in stream.records]
        batches = [records[0:3], records[4:7]]
        expected = [assemble_event([encode_record(r) for r in batch]) for batch in batches]
        assert target.payloads == expected
        assert target.sizes == [len(p) for p in expected]
        assert [json.loads(p)["Records"] for p in target.payloads] == batches

    async def test_failure_records_carry_the_records_as_read(self, tmp_path: Path) -> None:
        """An in-process handler that changes its records, then fails: the failure record's event is the original."""
        arrivals = [time.time()] * 2
        stream = ScriptedStream(arrivals)
        target, destination = BytesTarget(poison={"1000"}, mutate=True), Destination()
        await consume(tmp_path, stream, target, destination, MaximumRetryAttempts=0, BatchSize=2)
        [failed] = destination.batches
        assert target.changed  # the handler changed the records it was handed
        original = [r.record for r in ScriptedStream(arrivals).records]
        assert stream.records[0].record == original[0]  # built again from the raw record after the failure
        assert failed.event_payload == assemble_event([encode_record(r) for r in original])


class TestReviewFindings:
    """Paths a review found unguarded: trimmed positions, LATEST before the first checkpoint, expiry by retention."""

    async def test_a_trimmed_checkpoint_goes_on_from_the_oldest_record(self, tmp_path: Path) -> None:
        """TrimmedDataAccessException on GetShardIterator: resume at TRIM_HORIZON instead of asking forever."""
        stream = ScriptedStream([time.time()] * 3)
        real_iterator = stream.iterator

        async def trimmed(shard_id: str, checkpoint: Checkpoint) -> str:
            if checkpoint.position is Position.AFTER_SEQUENCE_NUMBER:
                raise TrimmedDataError("GetShardIterator", "TrimmedDataAccessException", "trimmed")
            return await real_iterator(shard_id, checkpoint)

        stream.iterator = trimmed  # type: ignore[method-assign]
        handler = Handler()
        reason, _, _ = await consume(tmp_path, stream, handler, None, start=Checkpoint.after("900"))
        assert [s for e in handler.events for s in e] == ["1000", "1001", "1002"]
        assert reason is StopReason.SHARD_END

    async def test_latest_pins_the_first_record_before_invoking(self, tmp_path: Path) -> None:
        """A DynamoDB-style LATEST start stores the first record read before the function sees it."""
        stream = ScriptedStream([time.time()] * 2)
        seen: list[tuple[str, str | None]] = []

        class Peek(Handler):
            async def invoke(self, invocation: Invocation) -> InvokeResult:
                if not seen:
                    with sqlite3.connect(tmp_path / "state.db") as db:
                        seen.extend(db.execute("SELECT position, sequence FROM checkpoints").fetchall())
                return await super().invoke(invocation)

        await consume(tmp_path, stream, Peek(), None, start=Checkpoint(Position.LATEST))
        assert seen == [("AT_SEQUENCE_NUMBER", "1000")]

    async def test_with_no_age_limit_a_record_expires_with_the_stream_retention(self, tmp_path: Path) -> None:
        """MaximumRecordAgeInSeconds -1: retried until the stream would have expired it, then discarded."""
        stream = ScriptedStream([time.time()])
        handler, destination = Handler(poison={"1000"}), Destination()
        await consume(tmp_path, stream, handler, destination, retention=0.3)
        [old] = destination.batches
        assert old.condition == "RecordAgeExceeded"
        assert len(handler.events) >= 2


class TestMappingHealth:
    """One failing shard keeps the mapping unhealthy, whatever the other shards' reads do."""

    def test_a_failing_shard_is_not_hidden_by_healthy_ones(self) -> None:
        """Health follows the set of failing origins, not the last call."""
        from esm.health import MappingHealth, MappingState
        from esm.stream_runner import StreamMappingRunner

        m = MappingConfig.model_validate({"EventSourceArn": ARN, "FunctionName": "fn", "StartingPosition": "LATEST"})
        health = MappingHealth(m.uuid, "fn", ARN)
        runner = StreamMappingRunner(
            m,
            ScriptedStream([]),
            Handler(),  # type: ignore[arg-type]  # only the health hooks are exercised
            None,  # type: ignore[arg-type]
            None,
            StreamsConfig(),
            Metrics(CollectorRegistry()).for_mapping(m.uuid, "fn", "kinesis"),
            health,
            get_logger(),
            function_arn="arn:aws:lambda:us-east-1:123456789012:function:fn",
        )
        broken = RetriableAwsError("GetRecords", "InternalFailure", "boom")
        runner.source_ok()
        assert health.state is MappingState.RUNNING
        runner.source_failed(broken, "shard-a")
        runner.source_ok("shard-b")
        runner.source_ok()
        assert (health.state, health.reason) == (
            MappingState.UNHEALTHY,
            "shard-a: GetRecords failed: InternalFailure: boom",
        )
        runner.source_ok("shard-a")
        assert health.state is MappingState.RUNNING


class TestShardGauges:
    """The per-shard lag gauges belong to the replica reading the shard, and only while it reads it."""

    async def test_a_stopped_consumer_removes_its_lag_gauges(self, tmp_path: Path) -> None:
        """After a stop (shutdown, a lost lease, a removed mapping) the shard's iterator age and
        reader lag are no longer exported: a stale lag would keep alerts and autoscaling busy."""
        now = time.time()
        stream = ScriptedStream([now - 30 + i for i in range(6)], closed=False)
        handler = Handler()
        registry = CollectorRegistry()
        exported: set[str] = set()

        def stop_when() -> bool:
            exported.update(s.name for family in registry.collect() for s in family.samples if "shard" in s.labels)
            return sum(len(e) for e in handler.events) >= 6

        reason, _, _ = await consume(tmp_path, stream, handler, None, stop_when=stop_when, registry=registry)
        assert reason is StopReason.SHUTDOWN
        assert exported == {"esm_reader_behind_seconds", "esm_iterator_age_seconds"}  # while it read the shard
        after = {s.name for family in registry.collect() for s in family.samples if "shard" in s.labels}
        assert after == set()
