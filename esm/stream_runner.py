"""One Kinesis or DynamoDB Streams mapping: shard discovery, lineage, and a consumer per shard.

The runner lists the stream's shards at start and every `streams.discovery_interval` (and at
once when a shard ends, so children start without delay), and starts a `ShardConsumer` for each
shard that is eligible: not finished, and every parent finished or no longer listed
(`esm.sources._shards.eligible_shards`). Where a shard starts:

- its stored checkpoint, always (a restart never skips or repeats more than the batches in flight);
- else, for a mapping with no checkpoint at all (its first start), the configured
  StartingPosition for the shards listed then (LATEST on a closed shard means nothing to read:
  it is finished at once);
- else TRIM_HORIZON: a shard that appeared later (a child after a reshard) is read from its
  beginning, so nothing written to it is lost.

The first start stores the start of every listed shard in one transaction, so a crash cannot
leave some of them to restart at TRIM_HORIZON. Kinesis LATEST is stored as AT_TIMESTAMP of the
start time, so records that arrive while esm is down are not
skipped on restart; DynamoDB Streams has no AT_TIMESTAMP: LATEST stays LATEST until the consumer
pins the first record it reads (before processing it), so a crash never skips records either.
With MaximumRecordAgeInSeconds -1, a record retried for the stream's whole retention has expired
and is discarded (RecordAgeExceeded), as AWS retries "until the records expire".

A deleted or missing stream makes the mapping unhealthy with AWS's text (`Stream not found: ARN`,
ESM-SPEC.md §1.1) while other mappings go on; the runner keeps retrying with backoff.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from structlog.typing import FilteringBoundLogger

from esm.config import MappingConfig, StreamsConfig
from esm.errors import AwsError, InvokeFatalError, SourceNotFoundError
from esm.filtering import compile_filters
from esm.health import MappingHealth, MappingState
from esm.metrics import MappingMetrics
from esm.policy import StreamPolicy
from esm.shard_consumer import ShardConsumer, StopReason, StreamContext, backoff_delay
from esm.sources._shards import Shard, StreamSource, eligible_shards
from esm.state import Checkpoint, CheckpointKey, CheckpointStore, Position
from esm.state.dynamodb import WINDOW_STATE_LIMIT_BYTES
from esm.targets.base import Invoker

if TYPE_CHECKING:
    from esm.leases import MappingLeases

__all__ = ["StreamMappingRunner"]


class _Context(StreamContext):
    """The shared context, with the runner's health hooks."""

    runner: StreamMappingRunner

    def on_source_error(self, exc: AwsError, shard: str | None = None) -> None:
        self.runner.source_failed(exc, shard)

    def on_source_ok(self, shard: str | None = None) -> None:
        self.runner.source_ok(shard)

    def on_target_error(self, exc: InvokeFatalError) -> None:
        self.runner.target_failed(exc)

    def on_target_ok(self) -> None:
        self.runner.target_ok()


class StreamMappingRunner:
    """Runs one Kinesis or DynamoDB Streams event source mapping until stopped."""

    def __init__(
        self,
        mapping: MappingConfig,
        stream: StreamSource,
        invoker: Invoker,
        store: CheckpointStore,
        destination: object | None,
        settings: StreamsConfig,
        metrics: MappingMetrics,
        health: MappingHealth,
        logger: FilteringBoundLogger,
        function_arn: str,
        leases: MappingLeases | None = None,
    ) -> None:
        self.mapping = mapping
        self.leases = leases
        self.stream = stream
        self.health = health
        self.metrics = metrics
        self.log = logger
        self.settings = settings
        self.store = store
        self.ctx = _Context(
            mapping=mapping,
            stream=stream,
            invoker=invoker,
            store=store,
            destination=destination,  # type: ignore[arg-type]  # a DestinationSender or None
            settings=settings,
            metrics=metrics,
            log=logger,
            function_arn=function_arn,
            policy=StreamPolicy(
                maximum_retry_attempts=mapping.maximum_retry_attempts,
                maximum_record_age=mapping.maximum_record_age,
                bisect=mapping.bisect_on_function_error,
                report_batch_item_failures=mapping.report_batch_item_failures,
            ),
            filter=compile_filters(mapping.filter_patterns, mapping.source.kind),
        )
        self.ctx.runner = self
        if leases is not None:
            self.ctx.window_state_limit = WINDOW_STATE_LIMIT_BYTES
        self._wake = asyncio.Event()
        self._source_failures = 0
        self._target_failures = 0
        self._target_reason = ""
        self._failing: dict[str | None, str] = {}
        self._releasing: set[asyncio.Task[None]] = set()

    # lifecycle ------------------------------------------------------------------------------

    async def preflight(self) -> str | None:
        """Reach the stream once; a missing stream is not fatal (unhealthy, retried). Never an error text."""
        try:
            await self.stream.list_shards()
        except AwsError as exc:
            self.source_failed(exc)
        return None

    def stop(self) -> None:
        """Stop reading; in-flight batches finish, then the last checkpoints are written."""
        self.ctx.stopping.set()
        self._wake.set()

    async def run(self) -> None:
        """Discover shards and consume them until stopped."""
        if not self.mapping.Enabled:
            self.health.set(MappingState.DISABLED)
            self.log.info("mapping_disabled")
            return
        if self.leases is not None:
            await self._run_leased(self.leases)
            return
        checkpoints = await self.store.load(self.mapping.uuid, self.mapping.EventSourceArn)
        finished = {shard for shard, cp in checkpoints.items() if cp.finished}
        consumers: dict[str, asyncio.Task[StopReason]] = {}
        self.log.info("mapping_started", checkpoints=len(checkpoints))
        try:
            async with asyncio.TaskGroup() as tg:
                while not self.ctx.stopping.is_set():
                    self._wake.clear()
                    try:
                        listed = await self.stream.list_shards()
                        if not checkpoints:
                            # A mapping's first start: every shard listed now starts where StartingPosition
                            # says (a whole lineage of closed shards included), stored in one transaction so
                            # that a crash cannot leave half of them to restart at TRIM_HORIZON.
                            checkpoints.update(await self._first_start(listed))
                            finished.update(shard for shard, cp in checkpoints.items() if cp.finished)
                        await self._ensure_retention()
                    except AwsError as exc:
                        await self._listing_failed(exc)
                        continue
                    self._listed(listed)
                    present = {s.shard_id for s in listed}
                    for shard_id, task in list(consumers.items()):
                        if shard_id not in present:
                            # Trimmed past the stream's retention while being read: nothing is left to read.
                            self.log.error("shard_disappeared", shard=shard_id)
                            finished.add(shard_id)
                            task.cancel()
                    for shard in eligible_shards(listed, finished):
                        if shard.shard_id in consumers:
                            continue
                        start = checkpoints.get(shard.shard_id) or await self._initial(shard)
                        if start is None:
                            continue  # stopping
                        checkpoints[shard.shard_id] = start
                        done = functools.partial(
                            self._consumer_done, shard_id=shard.shard_id, finished=finished, consumers=consumers
                        )
                        consumers[shard.shard_id] = self._start_consumer(tg, shard, start, None, done)
                    self._holding(len(consumers))
                    await self._wait(self.settings.discovery_interval, self._wake)
                self.health.set(MappingState.STOPPING)
        finally:
            self.metrics.shards_held.set(0)
            self.health.set(MappingState.STOPPED)
            self.log.info("mapping_stopped")

    async def _run_leased(self, leases: MappingLeases) -> None:
        """Consume the shards whose lease this replica holds (several replicas share the stream).

        Every listed shard gets a lease (its starting checkpoint, as in `run`); the coordinator's
        balancer takes this replica's share; a consumer starts for each held lease whose shard is
        eligible (parents at SHARD_END on whichever replica), and is cancelled as soon as its
        lease is lost (checked before anything else, on every lease change, whether the stream
        can be listed or not). A shard that reached SHARD_END releases its lease.
        """
        consumers: dict[str, tuple[asyncio.Task[StopReason], str]] = {}
        self.log.info("mapping_started", leases=True)
        ended_by_stop = False
        try:
            async with asyncio.TaskGroup() as tg:
                while not self.ctx.stopping.is_set():
                    self._wake.clear()
                    leases.changed.clear()
                    held = leases.held()
                    for shard_id, (task, token) in list(consumers.items()):
                        if shard_id not in held or held[shard_id][1] != token:
                            self.log.warning("shard_consumer_stopped", shard=shard_id, reason="lease lost")
                            task.cancel()
                    try:
                        listed = await self.stream.list_shards()
                        await leases.sync(
                            listed,
                            first=lambda s: self._start_of(s, self.mapping.starting_position),
                            later=lambda s: self._start_of(s, "TRIM_HORIZON"),
                        )
                        await self._ensure_retention()
                    except AwsError as exc:
                        await self._listing_failed(exc, self._wake, leases.changed)  # a lost lease still stops
                        continue
                    self._listed(listed)
                    present = {s.shard_id for s in listed}
                    for shard_id, (task, _) in list(consumers.items()):
                        if shard_id not in present:
                            self.log.error("shard_disappeared", shard=shard_id)
                            task.cancel()
                    held = leases.held()
                    for shard in eligible_shards(listed, leases.finished()):
                        if shard.shard_id in consumers or shard.shard_id not in held:
                            continue
                        start, token = held[shard.shard_id]
                        done = functools.partial(
                            self._leased_consumer_done, shard_id=shard.shard_id, consumers=consumers
                        )
                        consumers[shard.shard_id] = (self._start_consumer(tg, shard, start, token, done), token)
                    self._holding(len(consumers))
                    await self._wait(self.settings.discovery_interval, self._wake, leases.changed)
                ended_by_stop = True
                self.health.set(MappingState.STOPPING)
        finally:
            self.metrics.shards_held.set(0)
            self.health.set(MappingState.STOPPED)
            if not ended_by_stop and not self.ctx.stopping.is_set():
                # The runner failed: give its leases to the other replicas instead of keeping them idle.
                await leases.coordinator.forget(self.mapping.uuid, self.mapping.EventSourceArn)
            self.log.info("mapping_stopped")

    def _start_consumer(
        self,
        tg: asyncio.TaskGroup,
        shard: Shard,
        start: Checkpoint,
        token: str | None,
        done: Callable[[asyncio.Task[StopReason]], object],
    ) -> asyncio.Task[StopReason]:
        """Start one shard's consumer in the runner's task group; `done` runs when it ends."""
        consumer = ShardConsumer(self.ctx, shard, start, lease_token=token)
        task = tg.create_task(consumer.run(), name=f"shard-{self.mapping.uuid}-{shard.shard_id}")
        task.add_done_callback(done)
        return task

    def _consumer_ended(self, task: asyncio.Task[StopReason], shard_id: str, consumers: dict[str, Any]) -> bool:
        """Forget an ended consumer; True if it ended at SHARD_END."""
        consumers.pop(shard_id, None)
        self._failing.pop(shard_id, None)
        self._holding(len(consumers))
        return not task.cancelled() and task.exception() is None and task.result() is StopReason.SHARD_END

    def _holding(self, shards: int) -> None:
        """The number of shards consumed now: exported, and the pace of idle polling (`esm.sources._idle`)."""
        self.ctx.shards = max(1, shards)
        self.metrics.shards_held.set(shards)

    def _listed(self, listed: list[Shard]) -> None:
        """A listing succeeded: the source is healthy, and its open shards are exported."""
        self._source_failures = 0
        self.source_ok()
        self.metrics.stream_open_shards(sum(1 for s in listed if not s.closed))

    async def _listing_failed(self, exc: AwsError, *wake: asyncio.Event) -> None:
        """The listing (or lease creation) failed: unhealthy, then back off (waking early on `wake`)."""
        self.source_failed(exc)
        self._source_failures += 1
        await self._wait(backoff_delay(self.settings.retry_delay, self._source_failures), *wake)

    async def _wait(self, seconds: float, *events: asyncio.Event) -> None:
        """Until `seconds` pass, one of `events` is set, or the mapping stops."""
        waits = [asyncio.create_task(e.wait()) for e in (*events, self.ctx.stopping)]
        try:
            await asyncio.wait(waits, timeout=seconds, return_when="FIRST_COMPLETED")
        finally:
            for wait in waits:
                wait.cancel()

    def _leased_consumer_done(self, task: asyncio.Task[StopReason], shard_id: str, consumers: dict[str, Any]) -> None:
        if self._consumer_ended(task, shard_id, consumers):
            assert self.leases is not None
            # Released so that it stops being renewed; children may start on any replica now.
            releasing = asyncio.create_task(self.leases.release(shard_id))
            self._releasing.add(releasing)
            releasing.add_done_callback(self._releasing.discard)
        self._wake.set()

    def _consumer_done(
        self,
        task: asyncio.Task[StopReason],
        shard_id: str,
        finished: set[str],
        consumers: dict[str, asyncio.Task[StopReason]],
    ) -> None:
        if self._consumer_ended(task, shard_id, consumers):
            finished.add(shard_id)
            self._wake.set()  # list again now: the children may start

    async def _ensure_retention(self) -> None:
        """With MaximumRecordAgeInSeconds -1, records are retried until the stream expires them (§4.2)."""
        if self.ctx.policy.maximum_record_age >= 0 or self.ctx.retention is not None:
            return
        self.ctx.retention = await self.stream.retention_seconds()

    def _start_of(self, shard: Shard, position: str) -> Checkpoint:
        if position == "LATEST" and shard.closed:
            return Checkpoint(Position.SHARD_END)  # nothing is ever written after a closed shard's tip
        if position == "LATEST" and self.stream.kind.value == "kinesis":
            # "Records after now", kept across a restart that comes before the first record. It reads the
            # host clock: with NTP the skew is far below the minutes AWS itself may take to start a LATEST
            # mapping (ESM-SPEC.md §4.2, "LATEST can miss records").
            return Checkpoint(Position.AT_TIMESTAMP, timestamp=time.time())
        if position == "AT_TIMESTAMP":
            assert self.mapping.StartingPositionTimestamp is not None
            return Checkpoint(Position.AT_TIMESTAMP, timestamp=self.mapping.StartingPositionTimestamp)
        return Checkpoint(Position(position))

    async def _first_start(self, listed: list[Shard]) -> dict[str, Checkpoint]:
        """Store the StartingPosition of every listed shard at once (the mapping's first start)."""
        starts = {s.shard_id: self._start_of(s, self.mapping.starting_position) for s in listed}
        await self.ctx.save_checkpoints(
            [(CheckpointKey(self.mapping.uuid, self.mapping.EventSourceArn, sid), cp) for sid, cp in starts.items()],
            self.log,
        )
        self.log.info("starting_positions_stored", shards=len(starts), position=self.mapping.starting_position)
        return starts

    async def _initial(self, shard: Shard) -> Checkpoint | None:
        """A shard that appeared after the first start (a child after a reshard): TRIM_HORIZON, stored."""
        checkpoint = self._start_of(shard, "TRIM_HORIZON")
        key = CheckpointKey(self.mapping.uuid, self.mapping.EventSourceArn, shard.shard_id)
        return checkpoint if await self.ctx.save_checkpoints([(key, checkpoint)], self.log) else None

    # health ---------------------------------------------------------------------------------
    # The mapping is unhealthy while the listing or any shard fails, or the function is unreachable;
    # each origin (None: the listing; else a shard id) is tracked, so one failing shard cannot be
    # hidden by the successful reads of the others.

    def source_failed(self, exc: AwsError, shard: str | None = None) -> None:
        """A stream call failed: unhealthy with the reason (AWS's text for a missing stream)."""
        if shard is None:  # a shard's read errors are counted where they happen (the shard consumer)
            self.metrics.source_error(exc.code)
        if isinstance(exc, SourceNotFoundError):
            reason = f"Stream not found: {self.mapping.EventSourceArn}"
        else:
            reason = str(exc) if shard is None else f"{shard}: {exc}"
        if self._failing.get(shard) != reason:
            self.log.error("source_unavailable", code=exc.code, reason=reason, retriable=exc.retriable, shard=shard)
        self._failing[shard] = reason
        self._update_health()

    def source_ok(self, shard: str | None = None) -> None:
        """A stream call succeeded."""
        if self._failing.pop(shard, None) is not None:
            self.log.info("source_recovered", shard=shard)
            self._update_health()
        elif self.health.state is MappingState.STARTING:
            self._update_health()

    def target_failed(self, exc: InvokeFatalError) -> None:
        """The function cannot be reached (missing, denied): unhealthy until it answers again."""
        self._target_failures += 1
        if self._target_failures == 1:
            self.log.error("invoke_failed", reason=str(exc))
        self._target_reason = f"function unreachable: {exc}"
        self._update_health()

    def target_ok(self) -> None:
        """The function answered."""
        if self._target_failures:
            self._target_failures = 0
            self.log.info("function_recovered")
            self._update_health()

    def _update_health(self) -> None:
        if self.health.state in (MappingState.STOPPING, MappingState.STOPPED):
            return
        reasons = list(self._failing.values()) + ([self._target_reason] if self._target_failures else [])
        if reasons:
            self.metrics.mapping_up.set(0)
            self.health.set(MappingState.UNHEALTHY, reasons[0])
        else:
            self.metrics.mapping_up.set(1)
            self.health.set(MappingState.RUNNING)
