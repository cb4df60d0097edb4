"""An example Lambda-style stream handler for Kinesis and DynamoDB Streams (config/streams.yaml).

Written exactly as for AWS Lambda: `handle(event, context)` receives `{"Records": [...]}` from one
shard, in order, and (the mappings set `FunctionResponseTypes: [ReportBatchItemFailures]`) answers
with a partial batch response naming the first record it could not process. AWS then checkpoints
before that record and retries from it; after `MaximumRetryAttempts` the records go to the
mapping's on-failure destination.

Try it while `esm dev --config config/streams.yaml` is running:

    .venv/bin/esm send --config config/streams.yaml --stream clicks '{"click": 1}'
    .venv/bin/esm send --config config/streams.yaml --stream clicks '{"fail": true}'

The second record is retried (MaximumRetryAttempts 2) and then reported to the `clicks-failed`
queue. The handler prints ids and sizes only, never the data.
"""

from __future__ import annotations

import base64
import json
from typing import Any

__all__ = ["handle"]

LOG_PREFIX = "[streams]"


def _wants_failure(data: bytes) -> bool:
    try:
        document = json.loads(data)
    except ValueError:
        return False
    return isinstance(document, dict) and document.get("fail") is True


def handle(event: dict[str, Any], context: Any) -> dict[str, list[dict[str, str]]]:
    """Process a batch of one shard; report the first failing record (and so every later one) as failed."""
    for record in event["Records"]:
        if "kinesis" in record:
            sequence = record["kinesis"]["sequenceNumber"]
            data = base64.b64decode(record["kinesis"]["data"])
            print(f"{LOG_PREFIX} kinesis {record['eventID']} bytes={len(data)}", flush=True)
        else:
            sequence = record["dynamodb"]["SequenceNumber"]
            data = json.dumps(record["dynamodb"].get("NewImage", {})).encode()
            print(f"{LOG_PREFIX} dynamodb {record['eventName']} seq={sequence}", flush=True)
            if record["dynamodb"].get("NewImage", {}).get("fail", {}).get("BOOL") is True:
                data = b'{"fail": true}'
        if _wants_failure(data):
            print(f"{LOG_PREFIX} failed seq={sequence}", flush=True)
            return {"batchItemFailures": [{"itemIdentifier": sequence}]}
    return {"batchItemFailures": []}
