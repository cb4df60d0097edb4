"""One shard of a stream mapping at work: a reader, N ordered lanes, and a checkpointer.

- The **reader** calls GetRecords within the shard's read limit, again at once while the shard
  is behind or returned records within the last second, otherwise after the idle wait
  (`streams.idle_poll_interval`, paced by `esm.sources._idle`); it rebuilds an expired iterator from
  its read position, backs off this shard alone on throttling, and pauses while too much is read
  and not yet checkpointed. It hands each record to a lane.
- **Lanes** (ParallelizationFactor, ESM-SPEC.md §4.2): records go to lane `hash(key) % N`, key
  being the partition key (Kinesis) or the item key (DynamoDB), so each key keeps its order. A
  lane cuts batches (BatchSize, MaximumBatchingWindowInSeconds, 6 MB), invokes, and carries out
  `esm.policy.decide_stream`'s decisions; while it retries, it blocks (AWS pauses the shard).
- The **checkpointer** (`esm.sources._shards.Checkpointer`) advances only over the contiguous
  completed prefix of what was read; the checkpoint is written (durably) whenever it moves.
  Records discarded to an on-failure destination count as completed only once delivered.

With TumblingWindowInSeconds (ParallelizationFactor 1, one lane) the lane cuts batches at window
boundaries, passes the window's state from invocation to invocation and closes each window with a
final invocation (`esm.windows`); the window is written with every checkpoint.

A consumer ends for one of the reasons of `StopReason` (DESIGN.md rule 4): SHARD_END writes the
SHARD_END checkpoint (children may start); SHUTDOWN writes the last contiguous position.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import math
import time
import uuid
import zlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from structlog.typing import FilteringBoundLogger

from esm.arns import SourceKind
from esm.errors import (
    AwsError,
    ExpiredIteratorError,
    InvokeFatalError,
    InvokeServiceError,
    LeaseLostError,
    PayloadTooLargeError,
    SourceNotFoundError,
    TrimmedDataError,
)
from esm.events import EVENT_LIMIT_BYTES, assemble_event, events_size
from esm.filtering import CompiledFilter, compile_filters
from esm.policy import Attempt, StreamPolicy, decide_stream, expired
from esm.sources._idle import idle_wait
from esm.sources._shards import Checkpointer, Shard, StreamRecord, StreamSource
from esm.state import Checkpoint, CheckpointKey, CheckpointStore, Position
from esm.targets.base import Invocation, Invoker, InvokeResult
from esm.windows import STATE_LIMIT_BYTES, Window, read_state

if TYPE_CHECKING:
    from esm.config import MappingConfig, RetryDelayConfig, StreamsConfig
    from esm.destinations import DestinationSender
    from esm.metrics import MappingMetrics

__all__ = ["ShardConsumer", "StopReason", "StreamContext"]


class StopReason(enum.StrEnum):
    """Why a shard consumer stopped; each maps to one checkpoint action (DESIGN.md rule 4)."""

    SHARD_END = "SHARD_END"
    """The shard is closed and every record is done: checkpoint SHARD_END."""
    SHUTDOWN = "SHUTDOWN"
    """The mapping is stopping: checkpoint the contiguous completed prefix, nothing more."""


@dataclass
class StreamContext:
    """What every shard consumer of one mapping shares (built once by the mapping runner)."""

    mapping: MappingConfig
    stream: StreamSource
    invoker: Invoker
    store: CheckpointStore
    destination: DestinationSender | None
    settings: StreamsConfig
    metrics: MappingMetrics
    log: FilteringBoundLogger
    function_arn: str
    policy: StreamPolicy
    filter: CompiledFilter = field(default_factory=lambda: compile_filters([], SourceKind.KINESIS))
    """The mapping's FilterCriteria (no filters: every record passes)."""
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    window_state_limit: int = STATE_LIMIT_BYTES
    """Tumbling windows: a larger state terminates the window early (AWS: 1 MB; less where the store
    keeps less: a DynamoDB lease item holds at most 400 KB)."""
    retention: float | None = None
    """The stream's retention in seconds: with MaximumRecordAgeInSeconds -1, a record retried this long
    has expired in the stream and is discarded as AWS does (ESM-SPEC.md §4.2). None: not known."""
    shards: int = 1
    """How many shards the mapping consumes now (kept by the mapping runner): it paces idle polling."""

    @property
    def maximum_record_age(self) -> float:
        """The age at which records are discarded: MaximumRecordAgeInSeconds, else the retention."""
        if self.policy.maximum_record_age >= 0:
            return self.policy.maximum_record_age
        return self.retention if self.retention is not None else -1

    def idle_wait(self, quiet: float) -> float:
        """Seconds before the next read of a shard whose last read found nothing, its last record `quiet` s ago."""
        return idle_wait(self.settings, self.stream.kind, self.shards, quiet)

    def on_source_error(self, exc: AwsError, shard: str | None = None) -> None:
        """Hook for the mapping runner: a source call failed (health, metrics)."""

    def on_source_ok(self, shard: str | None = None) -> None:
        """Hook for the mapping runner: a source call succeeded."""

    def on_target_error(self, exc: InvokeFatalError) -> None:
        """Hook for the mapping runner: the function could not be reached."""

    def on_target_ok(self) -> None:
        """Hook for the mapping runner: the function answered."""

    async def save_checkpoints(
        self, items: Sequence[tuple[CheckpointKey, Checkpoint]], log: FilteringBoundLogger
    ) -> bool:
        """Store checkpoints (atomically), retrying with backoff until stored; False if the mapping stopped."""
        tries = 0
        while True:
            try:
                await self.store.save_all(items)
            except LeaseLostError as exc:
                log.warning("lease_lost", reason=str(exc))
                return False
            except Exception as exc:  # noqa: BLE001 - any store failure: count it and try again
                tries += 1
                self.metrics.checkpoint_failures.inc()
                log.error("checkpoint_failed", reason=str(exc))
                if await self.sleep(backoff_delay(self.settings.retry_delay, tries)):
                    return False
                continue
            self.metrics.checkpoints.inc(len(items))
            return True

    async def sleep(self, seconds: float) -> bool:
        """Sleep, waking at once on stop; True if stopping."""
        if self.stopping.is_set():
            return True
        try:
            async with asyncio.timeout(seconds):
                await self.stopping.wait()
        except TimeoutError:
            return False
        return True


def _assemble(records: Sequence[StreamRecord]) -> bytes:
    """The serialized event of a batch (`esm.events.assemble_event`), written when a target asks for it."""
    return assemble_event([r.encoded for r in records])


def backoff_delay(config: RetryDelayConfig, attempt: int) -> float:
    """The backoff before retry number `attempt` (1-based)."""
    return float(min(config.maximum, config.initial * config.multiplier ** max(0, attempt - 1)))


_NOT_REACHED = object()
_TOO_LARGE = object()


class _Lane:
    """The records of one lane, in shard order, waiting to be batched."""

    def __init__(self) -> None:
        self.records: deque[StreamRecord] = deque()
        self.bytes = 0
        self.ended = False
        self.changed = asyncio.Event()

    def put(self, record: StreamRecord) -> None:
        self.records.append(record)
        self.bytes += record.size
        self.changed.set()

    def put_all(self, records: Sequence[StreamRecord]) -> None:
        if records:
            self.records.extend(records)
            self.bytes += sum(r.size for r in records)
            self.changed.set()

    def end(self) -> None:
        self.ended = True
        self.changed.set()

    def take(self, batch_size: int, until: float | None = None, limit: int = EVENT_LIMIT_BYTES) -> list[StreamRecord]:
        """Up to `batch_size` records whose event fits `limit` bytes (at least one record).

        `until`: stop at the first record that arrived at or after it (a tumbling window's end).
        """
        batch: list[StreamRecord] = []
        records = self.records
        total = 0  # the encoded sizes of `batch`, added up
        while records and len(batch) < batch_size:
            head = records[0]
            if until is not None and batch and head.arrival >= until:
                break
            size = head.size
            if batch and events_size(total + size, len(batch) + 1) > limit:
                break
            batch.append(records.popleft())
            total += size
        self.bytes -= total
        return batch


class ShardConsumer:
    """Reads one shard and processes its records until the shard ends or the mapping stops."""

    def __init__(self, ctx: StreamContext, shard: Shard, start: Checkpoint, lease_token: str | None = None) -> None:
        self.ctx = ctx
        self.shard = shard
        self.start = start
        # With leases, every checkpoint write carries the acquisition it was started under (fencing).
        self.key = CheckpointKey(ctx.mapping.uuid, ctx.mapping.EventSourceArn, shard.shard_id, lease_token)
        self.lease_lost = False
        self._task: asyncio.Task[Any] | None = None
        self.log = ctx.log.bind(shard=shard.shard_id)
        self.tracker = Checkpointer()
        pf = ctx.mapping.parallelization_factor
        self.lanes = [_Lane() for _ in range(pf)]
        self.read_position: str | None = None
        self.saved: str | None = start.sequence if start.position is Position.AFTER_SEQUENCE_NUMBER else None
        self._commit_lock = asyncio.Lock()
        # A checkpoint write that failed is retried by the reader after a backoff, not only at the next
        # advance: on an idle shard that may never come, and a crash would repeat more than in flight.
        self._commit_failures = 0
        self._commit_retry_at: float | None = None
        batch = ctx.mapping.batch_size
        # Read up to two rounds of batches per call (at least 1,000 records), and pause reading while
        # two calls' worth (or two rounds of batches) is read and not yet checkpointed: memory stays
        # bounded per shard, and a lane can always fill a whole batch.
        self.limit = min(ctx.stream.page_limit, max(2 * batch * pf, 1000))
        self.high_water = max(2 * self.limit, 2 * batch * pf)  # a full batch per lane always fits
        self._room = asyncio.Event()
        self._room.set()
        self._shard_metrics = ctx.metrics.for_shard(shard.shard_id)
        # Tumbling windows: the open window (restored from the checkpoint on a restart), a version
        # bumped at each change of it (so a change alone is checkpointed), and when the reader last
        # found the shard caught up (wall clock at the start of that read), which ends idle windows.
        self.window_seconds = ctx.mapping.tumbling_window
        self.window: Window | None = self._restored_window(start)
        self._window_version = 0
        self._saved_version = 0
        self._caught_up_at: float | None = None
        self._latest_arrival = 0.0  # the latest arrival time of any record read (filtered out too)
        self._closed_end = 0  # the end of the last window closed: later records never reopen it

    # lifecycle ------------------------------------------------------------------------------

    async def run(self) -> StopReason:
        """Consume until the shard ends (SHARD_END) or the mapping stops (SHUTDOWN).

        However it ends (a lost lease and cancellation included), the shard's lag gauges are
        removed: a replica that no longer reads a shard must not keep reporting its last lag.
        """
        try:
            return await self._run()
        finally:
            self._shard_metrics.remove()

    async def _run(self) -> StopReason:
        self.log.info("shard_started", position=self.start.position.value, sequence=self.start.sequence)
        self._task = asyncio.current_task()
        closed = False
        try:
            async with asyncio.TaskGroup() as tg:
                work = self._window_lane if self.window_seconds else self._lane
                lanes = [tg.create_task(work(lane)) for lane in self.lanes]
                closed = await self._read()
                for lane in self.lanes:
                    lane.end()
                await asyncio.gather(*lanes)
        finally:
            await self._commit()
        drained = closed and not self.ctx.stopping.is_set() and self.tracker.outstanding == 0
        if drained and await self.ctx.save_checkpoints([(self.key, Checkpoint(Position.SHARD_END))], self.log):
            self.log.info("shard_ended")
            return StopReason.SHARD_END
        self.log.info("shard_stopped", checkpoint=self.saved)
        return StopReason.SHUTDOWN

    # reading --------------------------------------------------------------------------------

    async def _read(self) -> bool:
        """The reader loop; True when the shard was read to its end (closed and drained)."""
        ctx = self.ctx
        iterator: str | None = None
        last_call = 0.0
        failures = 0
        records_at = -math.inf  # when a read last returned records (monotonic): the idle wait depends on it
        while not ctx.stopping.is_set():
            if self.tracker.outstanding >= self.high_water:
                self._room.clear()
                stop = asyncio.create_task(ctx.stopping.wait())
                room = asyncio.create_task(self._room.wait())
                await asyncio.wait({stop, room}, return_when=asyncio.FIRST_COMPLETED)
                stop.cancel()
                room.cancel()
                continue
            if self._commit_retry_at is not None and time.monotonic() >= self._commit_retry_at:
                await self._commit()
            wait = last_call + ctx.stream.read_interval - time.monotonic()
            if wait > 0 and await ctx.sleep(wait):
                break
            last_call = time.monotonic()
            read_at = time.time()
            try:
                if iterator is None:
                    iterator = await ctx.stream.iterator(self.shard.shard_id, self._resume_point())
                page = await ctx.stream.read(self.shard.shard_id, iterator, self.limit)
            except ExpiredIteratorError as exc:
                self.log.info("iterator_renewed", reason=exc.code)
                iterator = None
                continue
            except TrimmedDataError as exc:
                # The position is older than the stream keeps: those records are gone (the stream expired
                # them, as AWS's own consumers lose them). Go on from the oldest record still there.
                ctx.metrics.source_error(exc.code)
                self.log.error("records_trimmed", after=self.read_position or self.start.sequence, reason=exc.message)
                self.read_position = None
                self.start = Checkpoint(Position.TRIM_HORIZON)
                iterator = None
                continue
            except AwsError as exc:
                failures += 1
                iterator = None if isinstance(exc, SourceNotFoundError) else iterator
                ctx.metrics.source_error(exc.code)
                ctx.on_source_error(exc, self.shard.shard_id)
                delay = backoff_delay(ctx.settings.retry_delay, failures)
                self.log.warning("shard_read_failed", code=exc.code, reason=exc.message, retry_in=round(delay, 2))
                if await ctx.sleep(delay):
                    break
                continue
            failures = 0
            ctx.on_source_ok(self.shard.shard_id)
            ctx.metrics.polled.inc(len(page.records))
            now = time.time()
            ctx.metrics.last_poll.set(now)
            if page.records and self.read_position is None and self.start.position is Position.LATEST:
                # LATEST names no record: pin the first one read, so that a crash before the first
                # checkpoint resumes here instead of at a later tip (records would be skipped).
                pinned = Checkpoint(Position.AT_SEQUENCE_NUMBER, page.records[0].sequence_number)
                if not await self.ctx.save_checkpoints([(self.key, pinned)], self.log):
                    break
                self.start = pinned
            if page.records:
                self._latest_arrival = max(self._latest_arrival, page.records[-1].arrival)
                self.tracker.add(page.records)
                kept, dropped = self._filter(page.records)
                if len(self.lanes) == 1:
                    self.lanes[0].put_all(kept)
                else:
                    for record in kept:
                        self._lane_for(record).put(record)
                self.read_position = page.records[-1].sequence_number
                if dropped:
                    # Filtered out: done, and checkpointed past like processed records (ESM-SPEC.md §6.4).
                    ctx.metrics.filtered_out.inc(len(dropped))
                    await self._complete(dropped)
            behind = page.behind_seconds
            if behind is None:
                behind = max(0.0, now - page.records[-1].arrival) if page.records else 0.0
            self._shard_metrics.reader_behind.set(behind)
            if page.next_iterator is None:
                return True
            iterator = page.next_iterator
            catching_up = len(page.records) >= self.limit or (
                page.behind_seconds > 0 if page.behind_seconds is not None else bool(page.records)
            )
            if self.window_seconds:
                # Every record that arrived before this read started has been read: a window that
                # ended (plus the close delay) before it is over. Wake the lane to look.
                self._caught_up_at = None if catching_up else read_at
                for lane in self.lanes:
                    lane.changed.set()
            # Caught up: a read that found records is followed by the next within the read limit (above),
            # one that found none after the idle wait, short for a shard that had records a moment ago
            # (`esm.sources._idle`).
            if page.records:
                records_at = time.monotonic()
            elif not catching_up and await ctx.sleep(ctx.idle_wait(time.monotonic() - records_at)):
                break
        return False

    def _resume_point(self) -> Checkpoint:
        """Where a new iterator starts: after the last record read, else the starting checkpoint."""
        if self.read_position is not None:
            return Checkpoint.after(self.read_position)
        return self.start

    def _filter(self, records: list[StreamRecord]) -> tuple[list[StreamRecord], list[StreamRecord]]:
        """The records that pass the mapping's FilterCriteria, and those filtered out, in shard order."""
        check = self.ctx.filter
        if not check.active:
            return records, []
        kept: list[StreamRecord] = []
        dropped: list[StreamRecord] = []
        for record in records:
            (kept if check.matches(record.record, record.data) else dropped).append(record)
        return kept, dropped

    def _lane_for(self, record: StreamRecord) -> _Lane:
        if len(self.lanes) == 1:
            return self.lanes[0]
        return self.lanes[zlib.crc32(record.key.encode()) % len(self.lanes)]

    # lanes ----------------------------------------------------------------------------------

    async def _lane(self, lane: _Lane) -> None:
        while True:
            batch = await self._next_batch(lane)
            if not batch:
                return
            await self._process(batch)

    async def _next_batch(
        self, lane: _Lane, until: float | None = None, limit: int = EVENT_LIMIT_BYTES
    ) -> list[StreamRecord]:
        """The next batch of a lane: [] when the lane ended or the mapping stops.

        `until` and `limit` are a tumbling window's end and the bytes its records may take.
        """
        ctx = self.ctx
        size = ctx.mapping.batch_size
        window = ctx.mapping.batching_window
        while not lane.records:
            if lane.ended or ctx.stopping.is_set():
                return []
            lane.changed.clear()
            await self._wait(lane.changed, None)
        if window > 0:
            deadline = time.monotonic() + window
            while (
                len(lane.records) < size
                and lane.bytes < limit
                and not lane.ended
                and not ctx.stopping.is_set()
                and (until is None or lane.records[-1].arrival < until)
            ):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                lane.changed.clear()
                await self._wait(lane.changed, remaining)
        if ctx.stopping.is_set():
            return []
        return lane.take(size, until, limit)

    async def _wait(self, event: asyncio.Event, seconds: float | None) -> None:
        """Wait for `event`, for stop, or `seconds` (None: no limit), whichever comes first."""
        stop = asyncio.create_task(self.ctx.stopping.wait())
        changed = asyncio.create_task(event.wait())
        try:
            await asyncio.wait({stop, changed}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            changed.cancel()

    # tumbling windows ------------------------------------------------------------------------

    def _restored_window(self, start: Checkpoint) -> Window | None:
        """The window kept with the starting checkpoint, if any (a restart continues it)."""
        if start.window_state is None:
            return None
        if not self.window_seconds:
            self.log.info("window_state_dropped", reason="the mapping has no TumblingWindowInSeconds any more")
            return None
        try:
            window = Window.from_checkpoint(start.window_state)
        except ValueError as exc:
            self.log.error("window_state_unreadable", reason=str(exc))
            return None
        window.invoked = True
        return window

    def _oversized(self, window: Window) -> bool:
        """True when the state exceeds what may be kept: the window is terminated early before the next batch."""
        return len(window.state) > self.ctx.window_state_limit

    async def _window_lane(self, lane: _Lane) -> None:
        """The one lane of a windowed shard: batches of one window at a time, then its final invocation."""
        ctx = self.ctx
        seconds = self.window_seconds
        while not ctx.stopping.is_set():
            lane.changed.clear()
            window = self.window
            if lane.records:
                head = lane.records[0]
                if window is not None and not window.holds(head.arrival):
                    if not await self._close_window(terminated=False):
                        return
                    continue
                # A record stamped inside a window already closed (late) goes to the next window.
                batch_window = window or Window.for_arrival(max(head.arrival, self._closed_end), seconds)
                # An oversized state is replaced by a fresh one before this batch is invoked.
                sizing = Window(batch_window.start, batch_window.end) if self._oversized(batch_window) else batch_window
                budget = sizing.record_budget(self.shard.shard_id, ctx.mapping.EventSourceArn)
                batch = await self._next_batch(lane, batch_window.end, budget)
                if not batch:
                    return
                if self.window is None:
                    self.window = batch_window
                await self._process(batch)
                continue
            if lane.ended:
                # Windows end at shard end; the child shards start their own (ESM-SPEC.md §3.5).
                if window is not None:
                    await self._close_window(terminated=False)
                return
            over_at = None if window is None else window.end + ctx.settings.window_close_delay
            if over_at is not None and (
                (self._caught_up_at is not None and self._caught_up_at >= over_at) or self._latest_arrival >= over_at
            ):
                # No record for this window: the shard was read to its tip after the window's end and
                # its close delay, or a record that arrived that much later was read (and filtered out).
                if not await self._close_window(terminated=False):
                    return
                continue
            timeout = None
            if over_at is not None and over_at > time.time():
                timeout = over_at - time.time()  # afterwards each read wakes the lane
            await self._wait(lane.changed, timeout)

    async def _close_window(self, *, terminated: bool) -> bool:
        """Invoke the function with the window's final state until it succeeds; False if stopping first.

        `terminated`: the state grew past 1 MB; the window goes on with a fresh state afterwards.
        The window's end (or early termination) is checkpointed with the records already done.
        """
        ctx = self.ctx
        window = self.window
        assert window is not None
        reason = "terminated_early" if terminated else "final"
        failures = 0
        while window.invoked:
            if ctx.stopping.is_set():
                return False
            payload, event = self._window_event(window, [], final=True, terminated=terminated)
            result = await self._call(Invocation(payload, event, str(uuid.uuid4())), 0, None)
            if result is _TOO_LARGE:
                # The state alone exceeds what an invocation can carry: it cannot be delivered.
                ctx.metrics.window_closed("undeliverable")
                self.log.error("window_state_undeliverable", window_start=window.start, state_bytes=len(window.state))
                break
            problem = ""
            if isinstance(result, InvokeResult):
                problem = (
                    f"function error: {result.function_error}" if not result.ok else read_state(result.payload).problem
                )
                if not problem:
                    ctx.metrics.window_closed(reason)
                    break
            failures += 1
            if problem:
                self.log.warning(
                    "window_final_failed",
                    reason=problem,
                    hint='the final invocation must succeed and answer {"state": {...}} too; the shard waits for it',
                    window_start=window.start,
                    attempts=failures,
                )
            await ctx.sleep(backoff_delay(ctx.settings.retry_delay, failures))
        if terminated:
            self.window = Window(window.start, window.end)
        else:
            self.window = None
            self._closed_end = max(self._closed_end, window.end)
        self._window_version += 1
        await self._commit()
        return True

    # processing -----------------------------------------------------------------------------

    async def _process(self, batch: list[StreamRecord]) -> None:
        """Invoke a batch until every record is done, discarded, or the mapping stops."""
        ctx = self.ctx
        todo: deque[tuple[list[StreamRecord], Attempt]] = deque([(batch, Attempt())])
        service_failures = 0
        while todo and not ctx.stopping.is_set():
            if (
                self.window is not None
                and self._oversized(self.window)
                and not await self._close_window(terminated=True)
            ):
                return
            records, attempt = todo.popleft()
            max_age = ctx.maximum_record_age
            old = expired([r.arrival for r in records], time.time(), max_age) if max_age >= 0 else ()
            if old:
                stale = [records[i] for i in old]
                if not await self._discard(stale, "RecordAgeExceeded", attempt, None, str(uuid.uuid4())):
                    return
                gone = set(old)
                records = [r for i, r in enumerate(records) if i not in gone]
                if not records:
                    continue
            request_id = str(uuid.uuid4())
            result = await self._invoke(records, request_id)
            if result is _NOT_REACHED:
                service_failures += 1
                todo.appendleft((records, attempt))
                await ctx.sleep(backoff_delay(ctx.settings.retry_delay, service_failures))
                continue
            service_failures = 0
            if result is _TOO_LARGE:
                if len(records) == 1:
                    self.log.error("record_too_large", sequence_number=records[0].sequence_number)
                    if not await self._discard(records, "RetryAttemptsExhausted", attempt.invoked(), None, request_id):
                        return
                    continue
                mid = len(records) // 2
                todo.extendleft([(records[mid:], attempt), (records[:mid], attempt)])
                continue
            assert isinstance(result, InvokeResult)
            attempt = attempt.invoked()
            state = None
            rejected = ""
            if self.window is not None and result.ok:
                reading = read_state(result.payload)
                state, rejected = reading.state, reading.problem
            decision = decide_stream(ctx.policy, result, [r.sequence_number for r in records], attempt, rejected)
            if state is not None and self.window is not None and decision.outcome in ("success", "partial_failure"):
                # The function returned its state with this answer: the next invocation receives it.
                self.window.state = state
                self._window_version += 1
            if decision.outcome != "success":
                # These records are invoked again or reported: as read, not as an in-process function
                # may have left them (Lambda parses every invocation's event anew).
                for r in records[decision.done :]:
                    r.renew()
                ctx.metrics.failed_invoke.inc(len(records) - decision.done)
                self.log.warning(
                    "batch_failed",
                    outcome=decision.outcome,
                    action=decision.action,
                    reason=decision.reason,
                    size=len(records),
                    invocations=decision.attempt.invocations,
                )
            await self._complete(records[: decision.done])
            if self._window_version != self._saved_version:
                await self._commit()  # a new state with no record done (a partial answer failing the first)
            if decision.action == "commit":
                continue
            if decision.action == "bisect":
                ctx.metrics.bisects.inc()
                todo.extendleft(
                    [(records[decision.mid :], decision.attempt), (records[: decision.mid], decision.attempt)]
                )
                continue
            rest = records[decision.done :]
            if decision.action == "discard":
                if not await self._discard(rest, "RetryAttemptsExhausted", decision.attempt, result, request_id):
                    return
                continue
            ctx.metrics.retries.inc()
            todo.appendleft((rest, decision.attempt))
            await ctx.sleep(backoff_delay(ctx.settings.retry_delay, decision.attempt.retries))

    async def _invoke(self, records: Sequence[StreamRecord], request_id: str) -> InvokeResult | object:
        """One invocation of a batch: the result, `_TOO_LARGE` (413), or `_NOT_REACHED` (throttle, service error)."""
        window = self.window
        if window is None:
            event = {"Records": [r.record for r in records]}
            # The event's bytes are written only if the target asks for them: an in-process handler
            # takes the objects (renewed if the batch fails, `_process`); their size is known without
            # writing them.
            size = events_size(sum(r.size for r in records), len(records))
            invocation = Invocation(functools.partial(_assemble, records), event, request_id, size)
        else:
            payload, event = self._window_event(window, records, final=False, terminated=False)
            invocation = Invocation(payload, event, request_id)
        self.ctx.metrics.batch_size.observe(len(records))
        result = await self._call(invocation, len(records), records[-1].arrival)
        if window is not None and isinstance(result, InvokeResult):
            window.invoked = True  # the function saw this window: it gets a final invocation
        return result

    def _window_event(
        self, window: Window, records: Sequence[StreamRecord], *, final: bool, terminated: bool
    ) -> tuple[bytes, dict[str, Any]]:
        """A windowed event of this shard, serialized and as objects."""
        shard, arn = self.shard.shard_id, self.ctx.mapping.EventSourceArn
        fields = window.fields(shard, arn, final=final, terminated=terminated)
        payload = window.payload([r.encoded for r in records], fields)
        return payload, window.event([r.record for r in records], shard, arn, final=final, terminated=terminated)

    async def _call(self, invocation: Invocation, n: int, last_arrival: float | None) -> InvokeResult | object:
        """Invoke the function once with an event of `n` records (`_invoke`'s outcomes)."""
        ctx = self.ctx
        m = ctx.metrics
        m.payload_size.observe(invocation.size)
        if last_arrival is not None:
            self._shard_metrics.iterator_age.set(max(0.0, time.time() - last_arrival))
        m.invoked.inc(n)
        m.in_flight.inc()
        started = time.monotonic()
        try:
            result = await ctx.invoker.invoke(invocation)
        except InvokeServiceError as exc:
            m.invocation(exc.outcome, time.monotonic() - started)
            m.failed_invoke.inc(n)
            self.log.info("invoke_retrying", reason=str(exc))
            return _NOT_REACHED
        except PayloadTooLargeError:
            m.invocation("payload_too_large", time.monotonic() - started)
            return _TOO_LARGE
        except InvokeFatalError as exc:
            m.invocation("fatal", time.monotonic() - started)
            m.failed_invoke.inc(n)
            ctx.on_target_error(exc)
            return _NOT_REACHED
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                self.log.warning("batch_abandoned", count=n)
                raise
            # The function itself raised CancelledError: a function error like any other.
            result = InvokeResult("Unhandled", b'{"errorType":"CancelledError"}')
        except Exception:  # a bug in a target must not end the shard: log it loudly, retry the batch
            self.log.exception("batch_crashed", size=n)
            m.failed_invoke.inc(n)
            return _NOT_REACHED
        finally:
            m.in_flight.dec()
        m.invocation("success" if result.ok else "function_error", time.monotonic() - started)
        ctx.on_target_ok()
        return result

    async def _discard(
        self,
        records: list[StreamRecord],
        condition: str,
        attempt: Attempt,
        result: InvokeResult | None,
        request_id: str,
    ) -> bool:
        """Send records that cannot be processed to the on-failure destination (or drop them).

        Better than AWS (which drops records when delivery fails, ESM-SPEC.md §7): delivery is
        retried with backoff until it succeeds, and the records count as done only then, so the
        checkpoint never passes an undelivered record. False if the mapping stopped first.
        """
        from esm.destinations import BatchInfo, FailedBatch

        ctx = self.ctx
        n = len(records)
        self.log.warning("records_discarded", condition=condition, count=n, invocations=attempt.invocations)
        if ctx.destination is None:
            ctx.metrics.dropped.inc(n)
            await self._complete(records)
            return True
        failed = FailedBatch(
            kind=ctx.stream.kind,
            mapping_uuid=ctx.mapping.uuid,
            condition="RecordAgeExceeded" if condition == "RecordAgeExceeded" else "RetryAttemptsExhausted",
            request_id=request_id,
            function_arn=ctx.function_arn,
            approximate_invoke_count=max(1, attempt.invocations),
            response=result if condition != "RecordAgeExceeded" else None,
            info=BatchInfo(
                shard_id=self.shard.shard_id,
                start_sequence=records[0].sequence_number,
                end_sequence=records[-1].sequence_number,
                first_arrival=records[0].arrival,
                last_arrival=records[-1].arrival,
                batch_size=n,
                stream_arn=ctx.mapping.EventSourceArn,
            ),
            timestamp=time.time(),
            event_payload=assemble_event([r.encoded for r in records]),
        )
        tries = 0
        while True:
            try:
                await ctx.destination.send(failed)
            except AwsError as exc:
                tries += 1
                ctx.metrics.destination_failures.inc()
                delay = backoff_delay(ctx.settings.destination_retry_delay, tries)
                self.log.error(
                    "destination_delivery_failed",
                    destination=ctx.destination.arn,
                    code=exc.code,
                    reason=exc.message,
                    count=n,
                    retry_in=round(delay, 2),
                )
                if await ctx.sleep(delay):
                    return False
                continue
            ctx.metrics.destination_delivered.inc(n)
            await self._complete(records)
            return True

    # checkpoints ----------------------------------------------------------------------------

    async def _complete(self, records: Sequence[StreamRecord]) -> None:
        if records and self.tracker.complete(records):
            if self.tracker.outstanding < self.high_water:
                self._room.set()
            await self._commit()

    async def _commit(self) -> None:
        """Write the contiguous completed position if it moved; a failure is counted and retried later."""
        async with self._commit_lock:
            if self.lease_lost:
                return
            position = self.tracker.position or self.saved
            version = self._window_version
            if position is None or (position == self.saved and version == self._saved_version):
                self._commit_retry_at = None  # nothing (left) to write
                return
            window = self.window.to_checkpoint() if self.window is not None and self.window.invoked else None
            checkpoint = Checkpoint(Position.AFTER_SEQUENCE_NUMBER, position, window_state=window)
            try:
                await self.ctx.store.save(self.key, checkpoint)
            except LeaseLostError as exc:
                # Another replica holds the shard now: stop at once; nothing more is written from here.
                # The batches in flight may be repeated by the new owner, nothing is skipped.
                self.lease_lost = True
                self.log.warning("lease_lost", reason=str(exc))
                if self._task is not None:
                    self._task.cancel()
                return
            except Exception as exc:  # noqa: BLE001 - any store failure: count it, keep the old checkpoint
                self.ctx.metrics.checkpoint_failures.inc()
                self._commit_failures += 1
                delay = backoff_delay(self.ctx.settings.retry_delay, self._commit_failures)
                self._commit_retry_at = time.monotonic() + delay
                self.log.error("checkpoint_failed", reason=str(exc), retry_in=round(delay, 2))
                return
            self._commit_failures = 0
            self._commit_retry_at = None
            self.saved = position
            self._saved_version = version
            self.ctx.metrics.checkpoints.inc()
