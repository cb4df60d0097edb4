"""One SQS mapping at work: a TaskGroup of poller workers that gather, invoke and acknowledge.

The runner carries out decisions; it does not make them. What to delete after an invocation is
`esm.policy.decide_sqs` (pure); how a batch is cut is `esm.sources.sqs.BatchGatherer`. The ack
(delete) is the only way progress is committed (DESIGN.md rule 1): a message is deleted only
after the function processed it, and every other path leaves it to the queue's visibility
timeout, so a crash can only repeat batches that were in flight.

Scaling (ESM-SPEC.md §5.1): without ScalingConfig a mapping starts 5 concurrent pollers, adds one
per busy poll (full batches) up to 300 a minute and 1,250 in all, and drifts back to 5 when the
queue is idle (down to 2 while the function keeps failing). `MaximumConcurrency` caps it.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
import uuid
from collections.abc import Sequence
from typing import Any

from structlog.typing import FilteringBoundLogger

from esm.config import MappingConfig, check_visibility_timeout
from esm.errors import (
    AwsError,
    InvokeFatalError,
    InvokeServiceError,
    PayloadTooLargeError,
    SourceNotFoundError,
)
from esm.events import assemble_event
from esm.filtering import compile_filters
from esm.health import MappingHealth, MappingState
from esm.metrics import MappingMetrics
from esm.policy import decide_sqs
from esm.sources.sqs import BatchGatherer, SqsMessage, SqsQueue, VisibilityKeeper
from esm.targets.base import Invocation, Invoker, InvokeResult

__all__ = ["Scaler", "SqsMappingRunner"]

_AWS_MAX_CONCURRENCY = 1250  # default per-ESM ceiling (ESM-SPEC.md §5.1)
_START_CONCURRENCY = 5
_ERROR_FLOOR = 2
_SCALE_UP_PER_SECOND = 300 / 60


class Scaler:
    """How many concurrent batches a mapping may have: adaptive, capped by MaximumConcurrency (or 1,250)."""

    def __init__(self, maximum: int | None) -> None:
        self.cap = maximum if maximum is not None else _AWS_MAX_CONCURRENCY
        self.target = min(_START_CONCURRENCY, self.cap)
        self._tokens = 0.0
        self._refilled = time.monotonic()
        self.changed = asyncio.Event()

    def on_busy(self) -> None:
        """A poll came back full: add a poller if the scale-up rate allows."""
        now = time.monotonic()
        self._tokens = min(_SCALE_UP_PER_SECOND, self._tokens + (now - self._refilled) * _SCALE_UP_PER_SECOND)
        self._refilled = now
        if self.target < self.cap and self._tokens >= 1:
            self._tokens -= 1
            self._set(self.target + 1)

    def on_idle(self) -> None:
        """A poll came back empty: drift back towards the starting concurrency, from above or below."""
        rest = min(_START_CONCURRENCY, self.cap)
        if self.target != rest:
            self._set(self.target + (1 if self.target < rest else -1))

    def on_function_error(self) -> None:
        """The function failed: reduce concurrency gradually (SQS-ERR), not below 2."""
        floor = min(_ERROR_FLOOR, self.cap)
        if self.target > floor:
            self._set(self.target - 1)

    def on_throttle(self) -> None:
        """The target throttled: Lambda backs off by reducing the mapping's concurrency (ESM-SPEC.md §4.1)."""
        self.on_function_error()

    def _set(self, value: int) -> None:
        self.target = value
        self.changed.set()


class SqsMappingRunner:
    """Runs one SQS event source mapping until stopped."""

    def __init__(
        self,
        mapping: MappingConfig,
        queue: SqsQueue,
        invoker: Invoker,
        metrics: MappingMetrics,
        health: MappingHealth,
        logger: FilteringBoundLogger,
        queue_attributes_interval: float = 30.0,
    ) -> None:
        self.mapping = mapping
        self.queue_attributes_interval = queue_attributes_interval
        self.queue = queue
        self.invoker = invoker
        self.metrics = metrics
        self.health = health
        self.log = logger
        self.scaler = Scaler(mapping.maximum_concurrency)
        self.filter = compile_filters(mapping.filter_patterns, mapping.source.kind)
        self._stopping = asyncio.Event()
        self._gathers: set[asyncio.Task[list[SqsMessage]]] = set()
        self._workers: set[asyncio.Task[None]] = set()
        self._recover_lock = asyncio.Lock()
        self._generation = 0
        self._retiring = 0
        self._source_delay = _BACKOFF_START
        self._target_delay = _BACKOFF_START
        self._target_until = 0.0

    # lifecycle ------------------------------------------------------------------------------

    async def preflight(self) -> str | None:
        """Reach the queue once before polling; return AWS's error text if the config cannot work.

        A missing queue is not fatal here (the runner keeps retrying and reports unhealthy); a
        function timeout longer than the queue's visibility timeout is (ESM-SPEC.md §1.1).
        """
        try:
            await self.queue.resolve()
        except AwsError as exc:
            self._source_failed(exc)
            return None
        if self.invoker.timeout is None:
            self.log.warning("visibility_check_skipped", reason="function timeout unknown")
            return None
        return check_visibility_timeout(self.queue.visibility_timeout, self.invoker.timeout)

    def stop(self) -> None:
        """Stop receiving: gathering is cancelled (its messages go back), in-flight batches finish."""
        self._stopping.set()
        self.scaler.changed.set()
        for task in list(self._gathers):
            task.cancel()

    async def run(self) -> None:
        """Poll until stopped. Returns when every worker has finished its in-flight batch."""
        if not self.mapping.Enabled:
            self.health.set(MappingState.DISABLED)
            self.log.info("mapping_disabled")
            return
        while self.queue.url is None and not self._stopping.is_set():
            await self._recover(None)
        if self._stopping.is_set():
            return
        self.health.set(MappingState.RUNNING)
        self.metrics.mapping_up.set(1)
        self.log.info("mapping_started", visibility_timeout=self.queue.visibility_timeout, fifo=self.queue.fifo)
        try:
            async with asyncio.TaskGroup() as tg:
                if self.queue_attributes_interval > 0:
                    tg.create_task(self._watch_queue(), name=f"sqs-counts-{self.mapping.uuid}")
                while not self._stopping.is_set():
                    while len(self._workers) < self.scaler.target and not self._stopping.is_set():
                        task = tg.create_task(self._worker(), name=f"sqs-worker-{self.mapping.uuid}")
                        self._workers.add(task)
                        task.add_done_callback(self._worker_done)
                    self.metrics.concurrency.set(self.scaler.target)
                    self.scaler.changed.clear()
                    await self.scaler.changed.wait()
                self.health.set(MappingState.STOPPING)
        finally:
            self.health.set(MappingState.STOPPED)
            self.log.info("mapping_stopped")

    async def _watch_queue(self) -> None:
        """Export the queue's approximate message counts every `queue_attributes_interval` seconds.

        One GetQueueAttributes call per interval and mapping (CloudWatch's SQS metrics are per
        minute); a failed call is logged and tried again at the next interval, never fatal.
        """
        while not self._stopping.is_set():
            try:
                self.metrics.queue_counts(*await self.queue.message_counts())
            except AwsError as exc:
                self.metrics.source_error(exc.code)
                self.log.warning("queue_attributes_failed", code=exc.code, reason=exc.message)
            if await self._sleep_unless_stopping(self.queue_attributes_interval):
                return

    # workers --------------------------------------------------------------------------------

    async def _worker(self) -> None:
        gatherer = BatchGatherer(
            queue=self.queue,
            batch_size=self.mapping.batch_size,
            window=self.mapping.batching_window,
            # Recorded AWS events carry md5OfMessageAttributes: null only with a window (ESM-SPEC.md §3.1).
            null_md5_when_absent=self.mapping.batching_window > 0,
            metrics=self.metrics,
            filter=self.filter,
        )
        current = asyncio.current_task()
        try:
            while not self._stopping.is_set() and not self._retire():
                await self._target_gate()
                if self._stopping.is_set():
                    break
                keeper = VisibilityKeeper(self.queue, self.metrics, self.log)
                try:
                    batch = await self._gather(gatherer, keeper, current)
                    if batch is None:
                        break
                    if not batch:
                        continue
                    if await self._park_while_paused(batch, keeper):
                        continue
                    if len(batch) >= min(self.mapping.batch_size, 10):
                        self.scaler.on_busy()
                    await self._process(batch, keeper)
                finally:
                    await keeper.stop()
        finally:
            if gatherer.carry:
                await gatherer.release_all(VisibilityKeeper(self.queue, self.metrics, self.log))

    async def _gather(
        self, gatherer: BatchGatherer, keeper: VisibilityKeeper, current: asyncio.Task[Any] | None
    ) -> list[SqsMessage] | None:
        """The next batch ([] if none came or the source failed), or None when the worker should stop."""
        gather = asyncio.create_task(gatherer.next_batch(keeper))
        self._gathers.add(gather)
        try:
            batch = await gather
        except asyncio.CancelledError:
            if gather.done() and not gather.cancelled() and gather.exception() is None:
                # Cancelled after the batch was complete but before this worker resumed: give it back.
                await gatherer.queue.change_visibility(gather.result(), 0)
            if current is not None and current.cancelling():
                raise
            return None  # cancelled by stop(): the worker ends
        except AwsError as exc:
            await self._recover(exc)
            return []
        finally:
            self._gathers.discard(gather)
        self._source_ok()
        if not batch:
            self.scaler.on_idle()
        return batch

    def _retire(self) -> bool:
        """True for (exactly enough) workers above the scaler's target, which then exit."""
        if len(self._workers) - self._retiring > self.scaler.target:
            self._retiring += 1
            task = asyncio.current_task()
            if task is not None:
                task.add_done_callback(self._retired)
            return True
        return False

    def _retired(self, _task: asyncio.Task[None]) -> None:
        self._retiring -= 1

    def _worker_done(self, task: asyncio.Task[None]) -> None:
        # Wake the supervisor so a worker that ended (retired, or died) is replaced if still wanted.
        self._workers.discard(task)
        self.scaler.changed.set()

    async def _process(self, batch: list[SqsMessage], keeper: VisibilityKeeper) -> None:
        """Invoke the function for a batch and carry out the decision: delete, or leave to retry."""
        current = asyncio.current_task()
        try:
            delete, retry = await self._invoke_split(batch)
        except asyncio.CancelledError:
            if current is None or not current.cancelling():
                # The function itself raised CancelledError: a function error like any other.
                self.log.error("batch_failed", outcome="function_error", reason="CancelledError", size=len(batch))
                delete, retry = [], batch
            else:
                # Shutdown deadline passed mid-invocation: abandon, and give the messages back now.
                await keeper.stop()
                await self.queue.change_visibility(batch, 0)
                self.metrics.messages_released.inc(len(batch))
                self.log.warning("batch_abandoned", count=len(batch))
                raise
        except Exception:  # a bug in a target must not end the mapping: log it loudly, retry the batch
            self.log.exception("batch_crashed", size=len(batch))
            self.metrics.failed_invoke.inc(len(batch))
            delete, retry = [], batch
        await keeper.stop()
        if delete:
            failed = await self.queue.delete(delete)
            self.metrics.deleted.inc(len(delete) - len(failed))
            if failed:
                self.metrics.delete_failures.inc(len(failed))
                self.log.error(
                    "delete_failed",
                    count=len(failed),
                    message_ids=[m.message_id for m in failed][:10],
                    note="these messages will be redelivered",
                )
        if retry and not await self._park_while_paused(retry, keeper):
            await keeper.restore(retry)

    async def _invoke_split(self, batch: list[SqsMessage]) -> tuple[list[SqsMessage], list[SqsMessage]]:
        """Invoke; on 413 split the batch in halves, keeping FIFO group order across the halves."""
        result = await self._invoke_until_reached(batch)
        if result is _TOO_LARGE:
            if len(batch) == 1:
                self.log.error("record_too_large", message_id=batch[0].message_id, size=len(batch[0].encoded))
                return [], batch
            mid = len(batch) // 2
            d1, r1 = await self._invoke_split(batch[:mid])
            second, held = batch[mid:], []
            if self.queue.fifo:
                failed_groups = {m.group_id for m in r1}
                held = [m for m in second if m.group_id in failed_groups]
                second = [m for m in second if m.group_id not in failed_groups]
            d2, r2 = await self._invoke_split(second) if second else ([], [])
            return d1 + d2, r1 + held + r2
        if not isinstance(result, InvokeResult):
            return [], batch
        decision = decide_sqs(
            result,
            [m.message_id for m in batch],
            report_batch_item_failures=self.mapping.report_batch_item_failures,
            group_ids=[m.group_id for m in batch] if self.queue.fifo else None,
        )
        if decision.outcome != "success":
            self.metrics.failed_invoke.inc(len(decision.retry))
            self.log.warning(
                "batch_failed",
                outcome=decision.outcome,
                reason=decision.reason,
                failed=len(decision.retry),
                size=len(batch),
            )
            # With ReportBatchItemFailures, Lambda does not scale polling down on failures (ESM-SPEC.md §4.1).
            if not self.mapping.report_batch_item_failures:
                self.scaler.on_function_error()
        return [batch[i] for i in decision.delete], [batch[i] for i in decision.retry]

    async def _invoke_until_reached(self, batch: Sequence[SqsMessage]) -> InvokeResult | object | None:
        """Invoke, retrying throttles and service errors with backoff until the visibility timeout.

        Returns the function's result, `_TOO_LARGE` for a 413, or None when the function could
        not be reached in time (the messages then reappear after their visibility timeout, as
        AWS "drops" them from its retry loop, ESM-SPEC.md §4.1).
        """
        payload = assemble_event([m.encoded for m in batch])
        event = {"Records": [m.record for m in batch]}
        n = len(batch)
        deadline = min(m.received_at for m in batch) + self.queue.visibility_timeout
        delay = 0.5
        self.metrics.batch_size.observe(n)
        self.metrics.payload_size.observe(len(payload))
        while True:
            self.metrics.invoked.inc(n)
            self.metrics.in_flight.inc()
            started = time.monotonic()
            try:
                result = await self.invoker.invoke(Invocation(payload, event, str(uuid.uuid4())))
            except InvokeServiceError as exc:
                self.metrics.invocation(exc.outcome, time.monotonic() - started)
                self.metrics.failed_invoke.inc(n)
                self.scaler.on_throttle()
                if time.monotonic() + delay >= deadline or self._stopping.is_set():
                    self.log.warning("invoke_gave_up", reason=str(exc), count=n)
                    return None
                self.log.info("invoke_retrying", reason=str(exc), delay=round(delay, 2))
                if await self._sleep_unless_stopping(delay * random.uniform(0.5, 1.5)):  # noqa: S311 - jitter
                    self.log.warning("invoke_gave_up", reason="shutting down", count=n)
                    return None
                delay = min(delay * 2, 30.0)
                continue
            except PayloadTooLargeError:
                self.metrics.invocation("payload_too_large", time.monotonic() - started)
                return _TOO_LARGE
            except InvokeFatalError as exc:
                self.metrics.invocation("fatal", time.monotonic() - started)
                self.metrics.failed_invoke.inc(n)
                self._target_failed(exc)
                return None
            finally:
                self.metrics.in_flight.dec()
            outcome = "success" if result.ok else "function_error"
            self.metrics.invocation(outcome, time.monotonic() - started)
            self._target_ok()
            return result

    # source and target errors -------------------------------------------------------------

    async def _sleep_unless_stopping(self, seconds: float) -> bool:
        """Sleep, but wake at once on stop(); True if stopping."""
        try:
            async with asyncio.timeout(seconds):
                await self._stopping.wait()
        except TimeoutError:
            return False
        return True

    def _source_ok(self) -> None:
        """A receive succeeded: the source is healthy again and its backoff starts over."""
        self._source_delay = _BACKOFF_START
        if self.health.state is MappingState.UNHEALTHY and self._target_until <= time.monotonic():
            self.health.set(MappingState.RUNNING)
            self.metrics.mapping_up.set(1)
            self.log.info("source_recovered")

    def _source_failed(self, exc: AwsError) -> None:
        self.metrics.source_error(exc.code)
        self.metrics.mapping_up.set(0)
        if isinstance(exc, SourceNotFoundError):
            # AWS's own text for a mapping whose queue does not exist (ESM-SPEC.md §1.1).
            reason = (
                "Error occurred while ReceiveMessage. SQS Error Code: AWS.SimpleQueueService.NonExistentQueue. "
                "SQS Error Message: The specified queue does not exist."
            )
        else:
            reason = str(exc)
        self.health.set(MappingState.UNHEALTHY, reason)
        self.log.error("source_unavailable", code=exc.code, reason=reason, retriable=exc.retriable)

    async def _recover(self, exc: AwsError | None) -> None:
        """Back off after a source error and re-resolve the queue; one worker does it for all.

        The backoff grows across calls (1 s doubling to 60 s) and starts over only after a
        successful receive, so an error that only ReceiveMessage shows (access denied) is not
        retried at full speed; health goes back to running on a successful receive, not here.
        """
        generation = self._generation
        if exc is not None:
            self._source_failed(exc)
        async with self._recover_lock:
            if generation != self._generation and self.queue.url is not None:
                return
            while not self._stopping.is_set():
                delay, self._source_delay = self._source_delay, min(self._source_delay * 2, _BACKOFF_MAX)
                if await self._sleep_unless_stopping(delay):
                    return
                try:
                    await self.queue.resolve()
                except AwsError as again:
                    self._source_failed(again)
                    continue
                self._generation += 1
                return

    def _target_failed(self, exc: InvokeFatalError) -> None:
        """The function cannot be reached (missing, denied): pause every poller with a growing backoff.

        Receiving more messages would only burn their receive counts towards the dead-letter
        queue without ever running the function.
        """
        delay, self._target_delay = self._target_delay, min(self._target_delay * 2, _BACKOFF_MAX)
        self._target_until = time.monotonic() + delay
        self.metrics.mapping_up.set(0)
        self.health.set(MappingState.UNHEALTHY, f"function unreachable: {exc}")
        self.log.error("invoke_failed", reason=str(exc), paused_seconds=delay)

    def _target_ok(self) -> None:
        """The function answered: lift the pause and start its backoff over."""
        if self._target_delay != _BACKOFF_START:
            self._target_delay = _BACKOFF_START
            self._target_until = 0.0
            if self.health.state is MappingState.UNHEALTHY:
                self.health.set(MappingState.RUNNING)
                self.metrics.mapping_up.set(1)
                self.log.info("function_recovered")

    async def _park_while_paused(self, messages: list[SqsMessage], keeper: VisibilityKeeper) -> bool:
        """While the function is unreachable, hide messages until the pause ends; True if parked.

        Pollers already waiting in a long poll may still receive during a pause; parking (rather
        than returning them at once) keeps them from circling between pollers, each receive
        counting towards the dead-letter queue.
        """
        remaining = self._target_until - time.monotonic()
        if remaining <= 0:
            return False
        await keeper.stop()
        await self.queue.change_visibility(messages, max(1, math.ceil(remaining)))
        return True

    async def _target_gate(self) -> None:
        """Wait out a pause set by `_target_failed` (or until stop)."""
        wait = self._target_until - time.monotonic()
        if wait > 0:
            await self._sleep_unless_stopping(wait)


_BACKOFF_START = 1.0
_BACKOFF_MAX = 60.0
_TOO_LARGE = object()
