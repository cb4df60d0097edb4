"""An example Lambda-style SQS handler, used by `make run` (config/example.yaml).

It is written exactly as a handler for AWS Lambda would be: `handle(event, context)` receives the
SQS event (`{"Records": [...]}`) and, because the mapping sets
`FunctionResponseTypes: [ReportBatchItemFailures]`, answers with a partial batch response that
names the messages to retry. Everything else in the batch is deleted from the queue.

Try it while `make run` is running:

    .venv/bin/esm send --config config/example.yaml --queue orders '{"order": 1}'
    .venv/bin/esm send --config config/example.yaml --queue orders '{"fail": true}'

The second message is reported as failed on each attempt; after the queue's maxReceiveCount (3)
SQS moves it to the `orders-dlq` dead-letter queue.
"""

from __future__ import annotations

import json
from typing import Any, Protocol, TypedDict

__all__ = ["BatchItemFailure", "BatchResponse", "LambdaContext", "handle"]

LOG_PREFIX = "[example]"
"""Prefix of every line this handler prints, so its output stands out among esm's logs."""


class LambdaContext(Protocol):
    """The part of Lambda's context object this handler uses."""

    aws_request_id: str
    function_name: str

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before the function times out."""
        ...


class BatchItemFailure(TypedDict):
    """One failed message of a partial batch response."""

    itemIdentifier: str


class BatchResponse(TypedDict):
    """A partial batch response: the messages Lambda (and esm) must not delete."""

    batchItemFailures: list[BatchItemFailure]


def _should_fail(body: str) -> bool:
    """True when the body is exactly the JSON object `{"fail": true}` (the demo's failure trigger)."""
    try:
        return bool(json.loads(body) == {"fail": True})
    except ValueError:
        return False


def handle(event: dict[str, Any], context: LambdaContext) -> BatchResponse:
    """Log each record's messageId and body size, and report `{"fail": true}` messages as failed.

    Bodies are never printed: they may carry personal or secret data. An empty
    `batchItemFailures` list tells the poller that the whole batch succeeded.
    """
    records: list[dict[str, Any]] = event.get("Records", [])
    failures: list[BatchItemFailure] = []
    for record in records:
        message_id = str(record["messageId"])
        body = str(record.get("body", ""))
        failed = _should_fail(body)
        print(
            f"{LOG_PREFIX} request={context.aws_request_id} messageId={message_id} "
            f"body_bytes={len(body.encode('utf-8'))}{' -> reported as failed' if failed else ''}",
            flush=True,
        )
        if failed:
            failures.append({"itemIdentifier": message_id})
    return {"batchItemFailures": failures}
