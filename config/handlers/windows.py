"""An example tumbling-window handler (config/windows.yaml; README.md "Tumbling windows").

AWS's documented aggregation: count the records of each partition key over the window. Every
invocation receives the state returned by the previous one (`{}` at the start of a window) and
must answer with `{"state": ...}`; the final invocation of a window has no records and
`isFinalInvokeForWindow: true`, the moment to store the result.

Try it while `esm dev --config config/windows.yaml` is running:

    .venv/bin/esm send --config config/windows.yaml --stream clicks '{"click": 1}'

and about 15 seconds later the window's totals are printed.
"""

from __future__ import annotations

from typing import Any

__all__ = ["handle"]


def handle(event: dict[str, Any], context: Any) -> dict[str, Any]:  # AWS's documented aggregation
    state = event["state"]  # {} at the start of each window
    for record in event["Records"]:
        key = record["kinesis"]["partitionKey"]
        state[key] = state.get(key, 0) + 1
    if event["isFinalInvokeForWindow"]:
        print("window", event["window"]["start"], "totals", state)  # store the result here
    return {"state": state}  # a response without "state" is a failure
