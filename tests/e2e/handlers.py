"""In-process Python handlers for the end-to-end tests.

`record` is the one handler every test configures; it looks up the behaviour that the test set
for its function name in `harness.RECORDER`, records the call, and returns what the behaviour
returns (or raises what it raises), exactly as a user's handler would.
"""

from __future__ import annotations

import time
from typing import Any

from tests.e2e.harness import RECORDER, Call


def record(event: dict[str, Any], context: Any) -> Any:
    """Record the invocation and act out the behaviour registered for `context.function_name`."""
    call = Call(context.function_name, event, time.monotonic())
    with RECORDER.lock:
        RECORDER.calls.append(call)
        RECORDER.active += 1
        RECORDER.max_active = max(RECORDER.max_active, RECORDER.active)
    try:
        behaviour = RECORDER.behaviours.get(context.function_name)
        return behaviour(event, context) if behaviour is not None else None
    finally:
        with RECORDER.lock:
            RECORDER.active -= 1
        call.ended = time.monotonic()
