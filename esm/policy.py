"""Pure ack decisions: which messages of an invoked batch are done and which must be retried.

DESIGN.md rule 3: a partial failure is a value, not an exception. The runner invokes the function,
hands the result to a decision function here, and only carries out what it returns (delete these
messages, leave those to reappear). Nothing in this module does I/O, reads a clock or keeps state,
so every rule is unit- and property-tested in isolation (`tests/unit/test_policy.py`).

This module holds the SQS decision (ESM-SPEC.md §4.1). SQS has no retry counter of its own in
Lambda: a message that is not deleted reappears after the queue's visibility timeout, and the
queue's redrive policy dead-letters it after `maxReceiveCount` receives, so the only decision is
delete or leave.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from esm.responses import ResponseKind, parse_batch_response
from esm.targets.base import InvokeResult

__all__ = ["SqsDecision", "SqsOutcome", "decide_sqs"]

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
