"""The SQS source: the queue adapter, batch gathering, and the visibility heartbeat.

- `SqsQueue` is the narrow `QueueClient` over aiobotocore (DESIGN.md rule 6). Every call is
  classified once into `esm.errors` (rule 5); deletes and visibility changes are retried with
  tenacity for the entries that failed with a retriable error.
- `BatchGatherer` long-polls and cuts batches as Lambda does (ESM-SPEC.md §2, §5.1): up to
  `BatchSize` messages, 10 per ReceiveMessage, gathered until the batching window ends, the
  batch is full, or the serialized event would pass 6 MB. A message that does not fit is carried
  into the next batch, never dropped.
- `VisibilityKeeper` is the heartbeat: while esm holds messages (gathering, invoking, retrying
  throttled invokes) for longer than half the queue's visibility timeout, it extends their
  visibility, so a long invocation is never redelivered to a second invocation.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from structlog.typing import FilteringBoundLogger
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from esm.arns import SourceArn
from esm.errors import AwsError, RetriableAwsError, classify
from esm.events import EVENT_LIMIT_BYTES, MALFORMED, RECEIVE_KWARGS, encode_record, event_size, sqs_record
from esm.filtering import CompiledFilter
from esm.metrics import MappingMetrics

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient

__all__ = ["BatchGatherer", "SqsMessage", "SqsQueue", "VisibilityKeeper"]

_MAX_RECEIVE = 10  # SQS ReceiveMessage returns at most 10 messages
_MAX_WAIT = 20  # SQS long polling waits at most 20 s
_API_ATTEMPTS = 5


@dataclass(slots=True)
class SqsMessage:
    """One received message: its ids, the Lambda record built from it, and its encoded form."""

    message_id: str
    receipt_handle: str
    group_id: str | None
    record: dict[str, Any]
    encoded: bytes
    received_at: float  # time.monotonic() when ReceiveMessage returned it


def _retriable(exc: BaseException) -> bool:
    return isinstance(exc, RetriableAwsError)


class SqsQueue:
    """The SQS queue of one mapping, over a shared aiobotocore client."""

    def __init__(self, client: SQSClient, source: SourceArn, logger: FilteringBoundLogger) -> None:
        self._client = client
        self.source = source
        self.log = logger
        self.url: str | None = None
        self.visibility_timeout: int = 30
        self.fifo: bool = source.is_fifo

    async def resolve(self) -> None:
        """Find the queue URL and read its attributes; raises SourceNotFoundError if it is missing."""
        try:
            resp = await self._client.get_queue_url(
                QueueName=self.source.queue_name, QueueOwnerAWSAccountId=self.source.account
            )
            url = resp["QueueUrl"]
            attrs = await self._client.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])
        except Exception as exc:
            raise classify("GetQueueUrl", exc) from exc
        values = attrs.get("Attributes", {})
        self.url = url
        self.visibility_timeout = int(values.get("VisibilityTimeout", "30"))
        self.fifo = values.get("FifoQueue", "false") == "true"

    async def message_counts(self) -> tuple[int, int, int]:
        """SQS's approximate (visible, in flight, delayed) message counts of the queue."""
        assert self.url is not None, "resolve() first"
        try:
            resp = await self._client.get_queue_attributes(
                QueueUrl=self.url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                    "ApproximateNumberOfMessagesDelayed",
                ],
            )
        except Exception as exc:
            raise classify("GetQueueAttributes", exc) from exc
        values = resp.get("Attributes", {})
        return (
            int(values.get("ApproximateNumberOfMessages", "0")),
            int(values.get("ApproximateNumberOfMessagesNotVisible", "0")),
            int(values.get("ApproximateNumberOfMessagesDelayed", "0")),
        )

    async def receive(self, max_messages: int, wait_seconds: int) -> list[dict[str, Any]]:
        """One ReceiveMessage long poll; returns the raw messages (possibly none)."""
        assert self.url is not None, "resolve() first"
        try:
            resp = await self._client.receive_message(
                QueueUrl=self.url,
                MaxNumberOfMessages=max(1, min(_MAX_RECEIVE, max_messages)),
                WaitTimeSeconds=max(0, min(_MAX_WAIT, wait_seconds)),
                **RECEIVE_KWARGS,
            )
        except Exception as exc:
            raise classify("ReceiveMessage", exc) from exc
        return [dict(m) for m in resp.get("Messages", [])]

    async def delete(self, messages: Sequence[SqsMessage]) -> list[SqsMessage]:
        """Delete with DeleteMessageBatch (10 per call), retrying failed entries; returns those that still failed."""
        return await self._batched("DeleteMessageBatch", messages, None)

    async def change_visibility(self, messages: Sequence[SqsMessage], seconds: int) -> list[SqsMessage]:
        """Set the visibility timeout of messages (0 returns them to the queue); returns those that failed."""
        return await self._batched("ChangeMessageVisibilityBatch", messages, seconds)

    async def _batched(self, op: str, messages: Sequence[SqsMessage], seconds: int | None) -> list[SqsMessage]:
        failed: list[SqsMessage] = []
        for start in range(0, len(messages), _MAX_RECEIVE):
            chunk = list(messages[start : start + _MAX_RECEIVE])
            try:
                failed.extend(await self._chunk_with_retries(op, chunk, seconds))
            except AwsError as exc:
                self.log.warning("sqs_call_failed", operation=op, code=exc.code, count=len(chunk))
                failed.extend(chunk)
        return failed

    async def _chunk_with_retries(self, op: str, chunk: list[SqsMessage], seconds: int | None) -> list[SqsMessage]:
        """Send one chunk; resend the entries that failed with a retriable (non-sender) fault."""
        permanent: list[SqsMessage] = []
        pending = chunk
        for entry_attempt in range(_API_ATTEMPTS):
            failures = await self._call_with_retries(op, pending, seconds)
            permanent.extend(f.message for f in failures if not f.retriable)
            pending = [f.message for f in failures if f.retriable]
            if not pending:
                break
            await asyncio.sleep(min(5.0, 0.2 * 2**entry_attempt))
        return permanent + pending

    async def _call_with_retries(self, op: str, chunk: list[SqsMessage], seconds: int | None) -> list[_EntryFailure]:
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(_retriable),
            stop=stop_after_attempt(_API_ATTEMPTS),
            wait=wait_random_exponential(multiplier=0.2, max=5),
            reraise=True,
        ):
            with attempt:
                return await self._chunk_once(op, chunk, seconds)
        raise AssertionError("unreachable: tenacity reraises the last error")

    async def _chunk_once(self, op: str, chunk: list[SqsMessage], seconds: int | None) -> list[_EntryFailure]:
        assert self.url is not None, "resolve() first"
        by_id = {str(i): m for i, m in enumerate(chunk)}
        try:
            if seconds is None:
                resp: Any = await self._client.delete_message_batch(
                    QueueUrl=self.url,
                    Entries=[{"Id": k, "ReceiptHandle": m.receipt_handle} for k, m in by_id.items()],
                )
            else:
                resp = await self._client.change_message_visibility_batch(
                    QueueUrl=self.url,
                    Entries=[
                        {"Id": k, "ReceiptHandle": m.receipt_handle, "VisibilityTimeout": seconds}
                        for k, m in by_id.items()
                    ],
                )
        except Exception as exc:
            raise classify(op, exc) from exc
        failures = [
            _EntryFailure(by_id[f["Id"]], str(f.get("Code", "")), not f.get("SenderFault", False))
            for f in resp.get("Failed", [])
            if f.get("Id") in by_id
        ]
        for f in failures:
            if not f.retriable:
                self.log.warning("sqs_entry_failed", operation=op, code=f.code, message_id=f.message.message_id)
        return failures


@dataclass(frozen=True, slots=True)
class _EntryFailure:
    message: SqsMessage
    code: str
    retriable: bool


@dataclass(slots=True)
class BatchGatherer:
    """Cuts batches from one queue for one worker, carrying over what did not fit (ESM-SPEC.md §2)."""

    queue: SqsQueue
    batch_size: int
    window: int
    null_md5_when_absent: bool
    metrics: MappingMetrics
    limit_bytes: int = EVENT_LIMIT_BYTES
    carry: list[SqsMessage] = field(default_factory=list)
    filter: CompiledFilter | None = None
    """The mapping's FilterCriteria: a message matching none is deleted at once (ESM-SPEC.md §6.4)."""
    long_poll: int = _MAX_WAIT
    """WaitTimeSeconds of a receive while the batch is empty: Lambda long-polls for the full 20 s."""

    async def next_batch(self, keeper: VisibilityKeeper) -> list[SqsMessage]:
        """Gather the next batch; messages are registered with `keeper` as soon as they arrive.

        Returns when the batch is full (count or 6 MB), when the window has passed since the first
        message, or — with no window — as soon as one receive returned messages. If cancelled,
        the messages gathered so far are returned to the queue (visibility 0).
        """
        batch: list[SqsMessage] = []
        sizes: list[int] = []
        deadline: float | None = None
        try:
            while self.carry and len(batch) < self.batch_size:
                if not self._fits(sizes, self.carry[0], batch):
                    break
                m = self.carry.pop(0)
                batch.append(m)
                sizes.append(len(m.encoded))
            if batch:
                keeper.add(batch)
                deadline = min(m.received_at for m in batch) + self.window
            while len(batch) < self.batch_size and not self.carry:
                if batch and (self.window == 0 or time.monotonic() >= (deadline or 0)):
                    break
                wait = self.long_poll if not batch else max(1, math.ceil((deadline or 0) - time.monotonic()))
                try:
                    raw = await self.queue.receive(self.batch_size - len(batch), wait)
                except AwsError:
                    if not batch:
                        raise
                    break  # invoke what was gathered; the error shows again on the next receive
                self.metrics.polled.inc(len(raw))
                self._observe_receive(raw)
                now = time.monotonic()
                fresh = await self._filtered(self._messages(raw, now))
                keeper.add(fresh)
                for m in fresh:
                    # Once one message is carried over, every later one is too: FIFO order is kept.
                    if not self.carry and len(batch) < self.batch_size and self._fits(sizes, m, batch):
                        batch.append(m)
                        sizes.append(len(m.encoded))
                    else:
                        self.carry.append(m)
                if batch and deadline is None:
                    deadline = now + self.window
            return batch
        except asyncio.CancelledError:
            await self.release_all(keeper)
            raise

    def _observe_receive(self, raw: list[dict[str, Any]]) -> None:
        """The last-poll time, and the age of the oldest message received (0: the queue had none)."""
        now = time.time()
        self.metrics.last_poll.set(now)
        sent = [(m.get("Attributes") or {}).get("SentTimestamp") for m in raw]
        oldest = min((int(t) for t in sent if isinstance(t, str) and t.isascii() and t.isdigit()), default=None)
        self.metrics.oldest_message_age(max(0.0, now - oldest / 1000) if oldest is not None else 0.0)

    async def release_all(self, keeper: VisibilityKeeper) -> None:
        """Return every held message (the gathering batch and the carry-over) to the queue now."""
        # The keeper also holds carried-over messages (it keeps everything received), so de-duplicate.
        held = list({m.message_id: m for m in keeper.take_all() + self.carry}.values())
        self.carry = []
        if held:
            await self.queue.change_visibility(held, 0)
            self.metrics.messages_released.inc(len(held))

    async def _filtered(self, messages: list[SqsMessage]) -> list[SqsMessage]:
        """The messages that match the mapping's filters; the others are deleted now, as AWS does.

        Each message is evaluated as it arrives, before it joins a batch (ESM-SPEC.md §2, §6.4).
        A filtered-out message whose delete fails is only counted: it comes back after its
        visibility timeout and is filtered again.
        """
        if self.filter is None or not self.filter.active or not messages:
            return messages
        kept = [m for m in messages if self.filter.matches(m.record)]
        if len(kept) == len(messages):
            return messages
        kept_ids = {id(m) for m in kept}
        dropped = [m for m in messages if id(m) not in kept_ids]
        self.metrics.filtered_out.inc(len(dropped))
        failed = await self.queue.delete(dropped)
        self.metrics.deleted.inc(len(dropped) - len(failed))
        if failed:
            self.metrics.delete_failures.inc(len(failed))
        return kept

    def _fits(self, sizes: list[int], m: SqsMessage, batch: list[SqsMessage]) -> bool:
        # The first message always fits: SQS messages (≤ 1 MiB) are far below the 6 MB limit.
        return not batch or event_size([*sizes, len(m.encoded)]) <= self.limit_bytes

    def _messages(self, raw: list[dict[str, Any]], now: float) -> list[SqsMessage]:
        """Build the messages; one that cannot be turned into a Lambda record is logged and left
        to its visibility timeout (and the queue's redrive policy), never deleted."""
        out = []
        for r in raw:
            try:
                out.append(self._message(r, now))
            except MALFORMED as exc:
                # The exception's text, never its repr: a UnicodeError's repr holds the whole record.
                self.queue.log.error(
                    "malformed_message", message_id=r.get("MessageId"), error=f"{type(exc).__name__}: {exc}"
                )
        return out

    def _message(self, raw: dict[str, Any], now: float) -> SqsMessage:
        record = sqs_record(raw, self.queue.source, null_md5_when_absent=self.null_md5_when_absent)
        attrs = raw.get("Attributes") or {}
        return SqsMessage(
            message_id=str(raw["MessageId"]),
            receipt_handle=str(raw["ReceiptHandle"]),
            group_id=attrs.get("MessageGroupId"),
            record=record,
            encoded=encode_record(record),
            received_at=now,
        )


class VisibilityKeeper:
    """The visibility heartbeat for the messages one worker holds.

    Every `visibility_timeout / 2` seconds after the oldest held message was received, the
    visibility of every held message is extended to a full `visibility_timeout` again. When the
    batch fails after an extension, `restore()` sets the remaining visibility back to what it
    would have been without the heartbeat, so failed messages reappear when AWS would show them.
    """

    def __init__(self, queue: SqsQueue, metrics: MappingMetrics, logger: FilteringBoundLogger) -> None:
        self._queue = queue
        self._metrics = metrics
        self._log = logger
        self._held: list[SqsMessage] = []
        self._task: asyncio.Task[None] | None = None
        self.extended = False

    def add(self, messages: Sequence[SqsMessage]) -> None:
        """Start keeping these messages invisible (starts the heartbeat with the first one)."""
        if not messages:
            return
        self._held.extend(messages)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._beat(), name="sqs-visibility-heartbeat")

    def take_all(self) -> list[SqsMessage]:
        """Stop keeping every message and return them."""
        held, self._held = self._held, []
        return held

    async def stop(self) -> None:
        """Stop the heartbeat (messages keep whatever visibility they have now)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            (result,) = await asyncio.gather(task, return_exceptions=True)
            if isinstance(result, Exception):
                self._log.error("visibility_heartbeat_failed", error=repr(result))

    async def restore(self, messages: Sequence[SqsMessage]) -> None:
        """After a failure, give messages back the visibility they would have had without extensions."""
        if not self.extended or not messages:
            return
        vt = self._queue.visibility_timeout
        oldest = min(m.received_at for m in messages)
        remaining = max(0, int(oldest + vt - time.monotonic()))
        await self._queue.change_visibility(messages, remaining)

    async def _beat(self) -> None:
        while True:
            vt = self._queue.visibility_timeout
            interval = max(0.5, vt / 2)
            if not self._held:
                return
            oldest = min(m.received_at for m in self._held)
            last = oldest if not self.extended else self._last_extension
            await asyncio.sleep(max(0.0, last + interval - time.monotonic()))
            held = list(self._held)
            if not held:
                return
            self._last_extension = time.monotonic()
            self.extended = True  # before the call: SQS may apply it even if we are cancelled meanwhile
            failed = await self._queue.change_visibility(held, vt)
            self._metrics.visibility_extensions.inc(len(held) - len(failed))
            if failed:
                self._log.warning("visibility_extension_failed", count=len(failed))

    _last_extension: float = 0.0
