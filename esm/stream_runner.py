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

A consumer that starts without a checkpoint writes its start position at once, so a restart
resumes from there rather than re-reading (or skipping) what came before. Kinesis LATEST is
written as AT_TIMESTAMP of the start time, so records that arrive while esm is down are not
skipped on restart; DynamoDB Streams has no AT_TIMESTAMP, so LATEST stays LATEST there.

A deleted or missing stream makes the mapping unhealthy with AWS's text (`Stream not found: ARN`,
ESM-SPEC.md §1.1) while other mappings go on; the runner keeps retrying with backoff.
"""

from __future__ import annotations

import asyncio
import functools
import time

from structlog.typing import FilteringBoundLogger

from esm.config import MappingConfig, StreamsConfig
from esm.errors import AwsError, InvokeFatalError, SourceNotFoundError
from esm.health import MappingHealth, MappingState
from esm.metrics import MappingMetrics
from esm.policy import StreamPolicy
from esm.shard_consumer import ShardConsumer, StopReason, StreamContext, backoff_delay
from esm.sources._shards import Shard, StreamSource, eligible_shards
from esm.state import Checkpoint, CheckpointKey, CheckpointStore, Position
from esm.targets.base import Invoker

__all__ = ["StreamMappingRunner"]

_TARGET_PAUSE_MAX = 60.0


class _Context(StreamContext):
    """The shared context, with the runner's health hooks."""

    runner: StreamMappingRunner

    def on_source_error(self, exc: AwsError) -> None:
        self.runner.source_failed(exc)

    def on_source_ok(self) -> None:
        self.runner.source_ok()

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
    ) -> None:
        self.mapping = mapping
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
        )
        self.ctx.runner = self
        self._wake = asyncio.Event()
        self._source_failures = 0
        self._target_failures = 0

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
        checkpoints = await self.store.load(self.mapping.uuid, self.mapping.EventSourceArn)
        fresh = not checkpoints
        finished = {shard for shard, cp in checkpoints.items() if cp.finished}
        consumers: dict[str, asyncio.Task[StopReason]] = {}
        first = True
        self.log.info("mapping_started", checkpoints=len(checkpoints), fresh=fresh)
        try:
            async with asyncio.TaskGroup() as tg:
                while not self.ctx.stopping.is_set():
                    self._wake.clear()
                    try:
                        listed = await self.stream.list_shards()
                    except AwsError as exc:
                        self.source_failed(exc)
                        self._source_failures += 1
                        await self.ctx.sleep(backoff_delay(self.settings.retry_delay, self._source_failures))
                        continue
                    self._source_failures = 0
                    self.source_ok()
                    for shard in eligible_shards(listed, finished):
                        if shard.shard_id in consumers:
                            continue
                        start = checkpoints.get(shard.shard_id) or await self._initial(shard, fresh and first)
                        if start is None:
                            continue  # stopping
                        if start.finished:
                            finished.add(shard.shard_id)
                            self._wake.set()
                            continue
                        checkpoints[shard.shard_id] = start
                        consumer = ShardConsumer(self.ctx, shard, start)
                        task = tg.create_task(consumer.run(), name=f"shard-{self.mapping.uuid}-{shard.shard_id}")
                        consumers[shard.shard_id] = task
                        task.add_done_callback(
                            functools.partial(
                                self._consumer_done, shard_id=shard.shard_id, finished=finished, consumers=consumers
                            )
                        )
                    first = False
                    self.metrics.shards_held.set(len(consumers))
                    await self._wait_for_discovery()
                self.health.set(MappingState.STOPPING)
        finally:
            self.metrics.shards_held.set(0)
            self.health.set(MappingState.STOPPED)
            self.log.info("mapping_stopped")

    def _consumer_done(
        self,
        task: asyncio.Task[StopReason],
        shard_id: str,
        finished: set[str],
        consumers: dict[str, asyncio.Task[StopReason]],
    ) -> None:
        consumers.pop(shard_id, None)
        self.metrics.shards_held.set(len(consumers))
        if not task.cancelled() and task.exception() is None and task.result() is StopReason.SHARD_END:
            finished.add(shard_id)
            self._wake.set()  # list again now: the children may start

    async def _wait_for_discovery(self) -> None:
        try:
            async with asyncio.timeout(self.settings.discovery_interval):
                await self._wake.wait()
        except TimeoutError:
            pass

    async def _initial(self, shard: Shard, use_starting_position: bool) -> Checkpoint | None:
        """The start of a shard without a checkpoint, written at once (see the module docstring)."""
        position = self.mapping.starting_position if use_starting_position else "TRIM_HORIZON"
        if position == "LATEST" and shard.closed:
            checkpoint = Checkpoint(Position.SHARD_END)
        elif position == "LATEST" and self.stream.kind.value == "kinesis":
            checkpoint = Checkpoint(Position.AT_TIMESTAMP, timestamp=time.time())
        elif position == "AT_TIMESTAMP":
            assert self.mapping.StartingPositionTimestamp is not None
            checkpoint = Checkpoint(Position.AT_TIMESTAMP, timestamp=self.mapping.StartingPositionTimestamp)
        else:
            checkpoint = Checkpoint(Position(position))
        key = CheckpointKey(self.mapping.uuid, self.mapping.EventSourceArn, shard.shard_id)
        tries = 0
        while not self.ctx.stopping.is_set():
            try:
                await self.store.save(key, checkpoint)
                self.metrics.checkpoints.inc()
                return checkpoint
            except Exception as exc:  # noqa: BLE001 - any store failure: count it and try again
                tries += 1
                self.metrics.checkpoint_failures.inc()
                self.log.error("checkpoint_failed", shard=shard.shard_id, reason=str(exc))
                await self.ctx.sleep(backoff_delay(self.settings.retry_delay, tries))
        return None

    # health ---------------------------------------------------------------------------------

    def source_failed(self, exc: AwsError) -> None:
        """A stream call failed: unhealthy with the reason (AWS's text for a missing stream)."""
        self.metrics.mapping_up.set(0)
        if isinstance(exc, SourceNotFoundError):
            reason = f"Stream not found: {self.mapping.EventSourceArn}"
        else:
            reason = str(exc)
        if self.health.reason != reason:
            self.log.error("source_unavailable", code=exc.code, reason=reason, retriable=exc.retriable)
        self.health.set(MappingState.UNHEALTHY, reason)

    def source_ok(self) -> None:
        """A stream call succeeded: running again, unless the function is unreachable."""
        if self.health.state is MappingState.UNHEALTHY and self._target_failures == 0:
            self.log.info("source_recovered")
        if self._target_failures == 0 and self.health.state in (MappingState.STARTING, MappingState.UNHEALTHY):
            self.health.set(MappingState.RUNNING)
            self.metrics.mapping_up.set(1)

    def target_failed(self, exc: InvokeFatalError) -> None:
        """The function cannot be reached (missing, denied): unhealthy until it answers again."""
        self._target_failures += 1
        self.metrics.mapping_up.set(0)
        self.health.set(MappingState.UNHEALTHY, f"function unreachable: {exc}")
        if self._target_failures == 1:
            self.log.error("invoke_failed", reason=str(exc))

    def target_ok(self) -> None:
        """The function answered."""
        if self._target_failures:
            self._target_failures = 0
            self.health.set(MappingState.RUNNING)
            self.metrics.mapping_up.set(1)
            self.log.info("function_recovered")
