"""Pure ack decisions: which messages of an invoked batch are done and which must be retried.

DESIGN.md rule 3: a partial failure is a value, not an exception. The runner invokes the function,
hands the result to a decision function here, and only carries out what it returns (delete these
messages, leave those to reappear). Nothing in this module does I/O, reads a clock or keeps state,
so every rule is unit- and property-tested in isolation (`tests/unit/test_policy.py`).

SQS (ESM-SPEC.md §4.1, `decide_sqs`): SQS has no retry counter of its own in Lambda: a message
that is not deleted reappears after the queue's visibility timeout, and the queue's redrive policy
dead-letters it after `maxReceiveCount` receives, so the only decision is delete or leave.

Streams (ESM-SPEC.md §4.2, `decide_stream`, `expired`): a shard is blocked while its batch is
retried, so the decision is commit, retry (from a point), bisect, or discard to the on-failure
destination; record age is checked before every invocation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from esm.responses import ResponseKind, parse_batch_response
from esm.targets.base import InvokeResult

__all__ = [
    "Attempt",
    "SqsDecision",
    "SqsOutcome",
    "StreamDecision",
    "StreamPolicy",
    "decide_sqs",
    "decide_stream",
    "expired",
]

SqsOutcome = Literal["success", "function_error", "partial_failure", "invalid_response"]
"""How an SQS batch ended: the `outcome` of an `SqsDecision` (a log field and metric label)."""


@dataclass(frozen=True, slots=True)
class SqsDecision:
    """What to do with each message of an invoked SQS batch, by index into the batch.

    - `delete`: indexes of messages that are done: delete them from the queue.
    - `retry`: indexes of messages to leave alone, so they reappear after the visibility
      timeout (and reach the queue's dead-letter queue after `maxReceiveCount` receives).
    - `outcome`: "success", "function_error", "partial_failure" or "invalid_response".
    - `reason`: a human-readable explanation for logs; empty on success.

    `delete` and `retry` are sorted, disjoint, and together are exactly every index.
    """

    delete: tuple[int, ...]
    retry: tuple[int, ...]
    outcome: SqsOutcome
    reason: str = ""


def decide_sqs(
    result: InvokeResult,
    message_ids: Sequence[str],
    *,
    report_batch_item_failures: bool,
    group_ids: Sequence[str | None] | None = None,
) -> SqsDecision:
    """Decide which messages of an SQS batch to delete after the function answered (ESM-SPEC.md §4.1).

    `message_ids[i]` is the id of the batch's i-th message; `group_ids[i]` its `MessageGroupId`
    for a FIFO queue (None for a standard queue). The rules, in order:

    1. A function error (thrown error or timeout) retries every message, whatever the response
       said (SQS-ERR; recorded `test_report_batch_item_failures_on_lambda_error`, §8 vector 3).
    2. Without `ReportBatchItemFailures` the response body is ignored (§3.6): success deletes all.
    3. With it the response is read by `esm.responses.parse_batch_response`: SUCCESS deletes all;
       INVALID retries all (`invalid_response`, §8 vector 3); PARTIAL deletes every message whose
       id is not listed (every copy of a listed id is retried, should SQS deliver one twice).
    4. FIFO: once a message of a message group is retried, every later message of that group in
       the batch is retried too, even if the function did not list it. AWS asks FIFO functions to
       stop at the first failure and report the rest (§4.1); esm enforces it, so a message is
       never deleted ahead of an earlier message of its group that will be redelivered, and the
       group's order is kept. Messages without a group id are never held back.
    """
    count = len(message_ids)
    if group_ids is not None and len(group_ids) != count:
        raise ValueError(f"group_ids has {len(group_ids)} entries for {count} messages")
    everything = tuple(range(count))
    if not result.ok:
        return SqsDecision((), everything, "function_error", f"function error: {result.function_error}")
    if not report_batch_item_failures:
        return SqsDecision(everything, (), "success")
    response = parse_batch_response(result.payload, message_ids)
    if response.kind is ResponseKind.SUCCESS:
        return SqsDecision(everything, (), "success")
    if response.kind is ResponseKind.INVALID:
        return SqsDecision((), everything, "invalid_response", f"invalid batch response: {response.reason}")
    listed = frozenset(response.failed)
    retry = [message_ids[i] in listed for i in everything]
    held = _hold_back_group_successors(retry, group_ids) if group_ids is not None else 0
    reason = f"function reported {len(listed)} failed of {count} messages"
    if held:
        reason += f"; {held} later messages of the same message groups retried to keep FIFO order"
    return SqsDecision(
        tuple(i for i in everything if not retry[i]),
        tuple(i for i in everything if retry[i]),
        "partial_failure",
        reason,
    )


def _hold_back_group_successors(retry: list[bool], group_ids: Sequence[str | None]) -> int:
    """Mark for retry every message that follows a retried message of its group; return how many."""
    failed_groups: set[str] = set()
    held = 0
    for i, group in enumerate(group_ids):
        if group is None:
            continue
        if retry[i]:
            failed_groups.add(group)
        elif group in failed_groups:
            retry[i] = True
            held += 1
    return held


# --------------------------------------------------------------------------------------------
# Kinesis and DynamoDB Streams (ESM-SPEC.md §4.2)


@dataclass(frozen=True, slots=True)
class StreamPolicy:
    """A stream mapping's failure settings (CreateEventSourceMapping names, defaults resolved)."""

    maximum_retry_attempts: int = -1
    """MaximumRetryAttempts: failed invocations retried before discarding; -1 retries until the records expire."""
    maximum_record_age: int = -1
    """MaximumRecordAgeInSeconds: older records are discarded before invocation; -1 is no limit."""
    bisect: bool = False
    """BisectBatchOnFunctionError: split a failing batch in two; splitting does not consume retries."""
    report_batch_item_failures: bool = False
    """FunctionResponseTypes [ReportBatchItemFailures]: honour `batchItemFailures` in the response."""


@dataclass(frozen=True, slots=True)
class Attempt:
    """What has happened to a group of records so far.

    - `invocations`: invocations of the function that included these records (failure records
      report it as `approximateInvokeCount`); a half of a bisected batch inherits the count.
    - `retries`: failed invocations counted against MaximumRetryAttempts (bisecting does not count).
    """

    invocations: int = 0
    retries: int = 0

    def invoked(self) -> Attempt:
        """The attempt after one more invocation."""
        return Attempt(self.invocations + 1, self.retries)


StreamAction = Literal["commit", "retry", "bisect", "discard"]
StreamOutcome = Literal["success", "function_error", "partial_failure", "invalid_response"]


@dataclass(frozen=True, slots=True)
class StreamDecision:
    """What to do with an invoked stream batch; records are referred to by index, in shard order.

    - `action` "commit": every record is done (`done == len(batch)`).
    - `action` "retry": `batch[:done]` are done; invoke `batch[done:]` again, carrying `attempt`.
    - `action` "bisect": nothing is done; process `batch[:mid]` and then `batch[mid:]`, each
      carrying `attempt` (splitting does not consume the retry quota).
    - `action` "discard": `batch[:done]` are done; `batch[done:]` exhausted their retries: send
      them to the on-failure destination (condition RetryAttemptsExhausted) and move on.
    - `outcome`: how the invocation ended (a log field and metric label); `reason` explains it.
    """

    action: StreamAction
    done: int
    attempt: Attempt
    outcome: StreamOutcome
    reason: str = ""
    mid: int = 0


def decide_stream(
    policy: StreamPolicy,
    result: InvokeResult,
    sequence_numbers: Sequence[str],
    attempt: Attempt,
    rejected: str = "",
) -> StreamDecision:
    """Decide what follows an invocation of a stream batch (ESM-SPEC.md §4.2).

    `sequence_numbers` are the batch's records in shard order; `attempt` already counts this
    invocation (`Attempt.invoked`). The rules, in order:

    1. No function error and no ReportBatchItemFailures: commit the whole batch (the response
       body is ignored, §3.6).
    2. With ReportBatchItemFailures the response is read by `parse_batch_response`: SUCCESS
       commits; PARTIAL makes the *lowest* reported sequence number (compared as an integer)
       the checkpoint: records before it are done and it and every later record are retried
       ("partial_failure", a counted retry; with bisect on this is AWS's "bisected at the
       returned sequence number"); INVALID is a whole-batch failure ("invalid_response").
    3. A function error (or an invalid response) with BisectBatchOnFunctionError and more than
       one record: bisect into halves; the retry count is not consumed.
    4. Otherwise count a retry; past MaximumRetryAttempts (unless -1) discard the failing
       records (RetryAttemptsExhausted, `approximateInvokeCount` = `attempt.invocations`,
       which is 1 + MaximumRetryAttempts without bisect: §8 vectors 5 and 6), else retry them.

    `rejected` names why a response without a function error still failed the whole batch before
    `batchItemFailures` were read (a tumbling window's response without `state`, §3.6): it is an
    "invalid_response" whatever ReportBatchItemFailures says.
    """
    count = len(sequence_numbers)
    if count == 0:
        raise ValueError("a batch has at least one record")
    if result.ok and not rejected and not policy.report_batch_item_failures:
        return StreamDecision("commit", count, attempt, "success")
    start = 0
    outcome: StreamOutcome
    if not result.ok:
        outcome, reason = "function_error", f"function error: {result.function_error}"
    elif rejected:
        outcome, reason = "invalid_response", rejected
    else:
        response = parse_batch_response(result.payload, sequence_numbers)
        if response.kind is ResponseKind.SUCCESS:
            return StreamDecision("commit", count, attempt, "success")
        if response.kind is ResponseKind.PARTIAL:
            lowest = min(response.failed, key=int)
            start = sequence_numbers.index(lowest)
            outcome = "partial_failure"
            reason = f"function reported {len(response.failed)} failed; retrying from sequence number {lowest}"
        else:
            outcome, reason = "invalid_response", f"invalid batch response: {response.reason}"
    if outcome != "partial_failure" and policy.bisect and count > 1:
        return StreamDecision("bisect", 0, attempt, outcome, reason + "; bisecting the batch", mid=count // 2)
    counted = Attempt(attempt.invocations, attempt.retries + 1)
    if 0 <= policy.maximum_retry_attempts < counted.retries:
        return StreamDecision("discard", start, counted, outcome, reason + "; retry attempts exhausted")
    return StreamDecision("retry", start, counted, outcome, reason)


def expired(arrivals: Sequence[float], now: float, maximum_record_age: float) -> tuple[int, ...]:
    """Indexes of records older than MaximumRecordAgeInSeconds at `now` (ESM-SPEC.md §4.2, "Record age").

    Age is measured from each record's arrival in the stream (Kinesis approximateArrivalTimestamp,
    DynamoDB ApproximateCreationDateTime). Such records are discarded before the invocation
    (condition RecordAgeExceeded) and the rest of the batch is still delivered; -1 disables it.
    """
    if maximum_record_age < 0:
        return ()
    oldest_allowed = now - maximum_record_age
    return tuple(i for i, arrival in enumerate(arrivals) if arrival < oldest_allowed)
