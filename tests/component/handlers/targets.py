"""Handlers for the Python target tests: each shows one behaviour of the Lambda Python runtime contract."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

RELEASE = threading.Event()
"""Set by the tests' teardown so that `never_returns` threads end before the process exits."""

CANCELLED: list[str] = []
"""Request ids of `slow_async` invocations that were cancelled by the timeout."""

NOT_CALLABLE = 42


def _describe(event: Any, context: Any) -> dict[str, Any]:
    first = context.get_remaining_time_in_millis()
    time.sleep(0.05)
    return {
        "event": event,
        "aws_request_id": context.aws_request_id,
        "function_name": context.function_name,
        "function_version": context.function_version,
        "invoked_function_arn": context.invoked_function_arn,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "log_group_name": context.log_group_name,
        "log_stream_name": context.log_stream_name,
        "identity": context.identity,
        "client_context": context.client_context,
        "remaining": [first, context.get_remaining_time_in_millis()],
        "thread": threading.current_thread().name,
    }


def describe(event: Any, context: Any) -> dict[str, Any]:
    """Return the event and everything the context shows."""
    return _describe(event, context)


async def describe_async(event: Any, context: Any) -> dict[str, Any]:
    """The same as `describe`, as a coroutine handler."""
    await asyncio.sleep(0)
    return _describe(event, context)


def echo(event: Any, context: Any) -> Any:
    """Return the event unchanged."""
    return event


def block(event: Any, context: Any) -> dict[str, str]:
    """Block the calling thread for `event["seconds"]`."""
    time.sleep(event["seconds"])
    return {"thread": threading.current_thread().name}


def never_returns(event: Any, context: Any) -> None:
    """Block until the test releases it (a handler stuck forever, as far as the test can tell)."""
    RELEASE.wait(30)


async def slow_async(event: Any, context: Any) -> None:
    """Sleep far beyond any test timeout, recording its cancellation."""
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        CANCELLED.append(context.aws_request_id)
        raise


def fail(event: Any, context: Any) -> None:
    """Raise a ValueError naming the order."""
    raise ValueError(f"order {event['id']} is invalid")


def raise_timeout(event: Any, context: Any) -> None:
    """Raise the handler's own TimeoutError, which is not a Lambda timeout."""
    raise TimeoutError("database did not answer")


def returns_none(event: Any, context: Any) -> None:
    """Return nothing."""


def unmarshalable(event: Any, context: Any) -> dict[str, Any]:
    """Return a set, which JSON cannot represent."""
    return {"ids": {1, 2}}


def decimals(event: Any, context: Any) -> dict[str, Any]:
    """Return Decimal values, as DynamoDB's boto3 deserializer produces them."""
    import decimal

    return {"price": decimal.Decimal("1.5"), "count": decimal.Decimal("2"), "text": "café"}
