"""In-process Python handlers (`handler: module:function`), called as the Lambda Python runtime calls them.

Why in-process: developers test a Lambda handler locally against the same engine, and platform teams
run Python functions without packaging a Lambda (DESIGN.md §2 "What a function sees"). The handler
gets the event as Python objects and a Lambda-compatible `context`; the runtime's conventions are
kept so a handler behaves as it would on AWS:

- synchronous handlers run in the function's *own* thread pool (`max_threads`), so a handler that
  blocks or never returns cannot starve the event loop or another function; coroutine handlers are
  awaited on the loop;
- the timeout (default 3 s, Lambda's default) is enforced: the caller gets a `Sandbox.Timedout`
  function error (an abandoned thread keeps running; a coroutine is cancelled);
- an exception becomes an `Unhandled` function error with the runtime's JSON shape
  (`errorMessage`, `errorType`, `requestId`, `stackTrace`); the traceback is logged;
- the return value is serialized with `json.dumps` as the runtime does (None -> `null`; Decimal as a
  number); a value that cannot be serialized is a `Runtime.MarshalError` function error;
- the handler gets the event's objects themselves (no copy: a successful batch costs nothing
  more). A handler that changes them in place (`record["body"] = json.loads(record["body"])`)
  still sees the records as read on a retry or in a bisected half, as on Lambda, where every
  invocation's event is parsed anew: a stream consumer builds a failed batch's records again
  from what the stream returned (`StreamRecord.renew`), and an SQS message is received anew.
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
import decimal
import functools
import importlib
import inspect
import json
import os
import sys
import time
import traceback
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import structlog

from esm.config import FunctionConfig
from esm.errors import InvokeFatalError
from esm.targets.base import Invocation, InvokeResult

__all__ = ["DEFAULT_TIMEOUT", "LambdaContext", "PythonInvoker", "timed_out_payload"]

DEFAULT_TIMEOUT = 3.0
"""Lambda's default function timeout in seconds, used when `timeout` is not configured."""

Handler = Callable[[Any, "LambdaContext"], Any]

# Frames of these files are esm's or the event loop's, not the handler's: they are cut from the
# front of a stack trace, as the Lambda runtime cuts its own bootstrap frames.
_INTERNAL_PREFIXES = (
    os.path.dirname(asyncio.__file__) + os.sep,
    os.path.dirname(importlib.import_module("concurrent.futures").__file__ or "") + os.sep,
)


class LambdaContext:
    """The `context` argument of a Python handler, with the Lambda runtime's attribute names."""

    __slots__ = (
        "_deadline",
        "aws_request_id",
        "client_context",
        "function_name",
        "function_version",
        "identity",
        "invoked_function_arn",
        "log_group_name",
        "log_stream_name",
        "memory_limit_in_mb",
    )

    def __init__(
        self,
        *,
        request_id: str,
        function_name: str,
        invoked_function_arn: str,
        memory_limit_in_mb: int,
        log_stream_name: str,
        deadline: float,
    ) -> None:
        self.aws_request_id = request_id
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = invoked_function_arn
        self.memory_limit_in_mb = memory_limit_in_mb
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = log_stream_name
        self.identity: Any = None
        self.client_context: Any = None
        self._deadline = deadline

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before the invocation times out (never negative)."""
        return max(0, int((self._deadline - time.monotonic()) * 1000))

    def __repr__(self) -> str:
        return f"LambdaContext(aws_request_id={self.aws_request_id!r}, function_name={self.function_name!r})"


def timed_out_payload(request_id: str, timeout: float) -> bytes:
    """The function-error payload Lambda returns when an invocation exceeds its timeout."""
    return json.dumps(
        {
            "errorType": "Sandbox.Timedout",
            "errorMessage": f"RequestId: {request_id} Error: Task timed out after {timeout:.2f} seconds",
        }
    ).encode()


class PythonInvoker:
    """Calls an in-process `module:function` handler with Lambda's runtime semantics."""

    def __init__(
        self,
        name: str,
        fn: FunctionConfig,
        *,
        base_dir: Path,
        region: str,
        account: str,
        logger: structlog.typing.FilteringBoundLogger,
    ) -> None:
        self.name = name
        self.timeout: float | None = fn.timeout if fn.timeout is not None else DEFAULT_TIMEOUT
        self._fn = fn
        self._base_dir = base_dir
        self._arn = f"arn:aws:lambda:{region}:{account}:function:{name}"
        self._logger = logger
        self._handler: Handler | None = None
        self._is_coroutine = False
        self._pool: ThreadPoolExecutor | None = None
        self._log_stream = ""

    async def __aenter__(self) -> PythonInvoker:
        """Import the handler (raising InvokeFatalError if it cannot be) and start the thread pool."""
        self._handler = import_handler(self._fn.handler, self._base_dir)
        self._is_coroutine = inspect.iscoroutinefunction(self._handler)
        self._pool = ThreadPoolExecutor(max_workers=self._fn.max_threads, thread_name_prefix=f"esm-fn-{self.name}")
        self._log_stream = f"{dt.datetime.now(dt.UTC):%Y/%m/%d}/[$LATEST]{uuid.uuid4().hex}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Stop the thread pool without waiting for handlers that are still running."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    async def invoke(self, invocation: Invocation) -> InvokeResult:
        """Run the handler once; every outcome of the handler itself is returned as a value."""
        if self._handler is None or self._pool is None:
            raise RuntimeError(f"PythonInvoker {self.name!r} is not open: use it with `async with`")
        timeout = self.timeout or DEFAULT_TIMEOUT
        context = LambdaContext(
            request_id=invocation.request_id,
            function_name=self.name,
            invoked_function_arn=self._arn,
            memory_limit_in_mb=self._fn.memory,
            log_stream_name=self._log_stream,
            deadline=time.monotonic() + timeout,
        )
        deadline = asyncio.timeout(timeout)
        try:
            async with deadline:
                result = await self._call(self._handler, self._pool, invocation.event, context)
        except TimeoutError as exc:
            if deadline.expired():
                self._logger.warning("handler_timed_out", function=self.name, request_id=invocation.request_id)
                return InvokeResult("Unhandled", timed_out_payload(invocation.request_id, timeout))
            return self._failed(exc, invocation.request_id)
        except Exception as exc:  # noqa: BLE001  # any exception of user code is a function error (a value)
            return self._failed(exc, invocation.request_id)
        except (SystemExit, KeyboardInterrupt) as exc:
            # On Lambda, a handler that exits ends its runtime: Runtime.ExitError. Here it must not
            # end the daemon, so it is that function error and nothing more.
            self._logger.error("handler_exited", function=self.name, request_id=invocation.request_id)
            code = exc.code if isinstance(exc, SystemExit) else "interrupted"
            message = f"RequestId: {invocation.request_id} Error: Runtime exited with error: exit status {code}"
            return InvokeResult("Unhandled", _error_body(message, "Runtime.ExitError", invocation.request_id, []))
        try:
            payload = _marshal(result)
        except (TypeError, ValueError) as exc:
            self._logger.error("handler_marshal_failed", function=self.name, error=str(exc))
            body = _error_body(f"Unable to marshal response: {exc}", "Runtime.MarshalError", invocation.request_id, [])
            return InvokeResult("Unhandled", body)
        return InvokeResult(None, payload)

    async def _call(self, handler: Handler, pool: ThreadPoolExecutor, event: Any, context: LambdaContext) -> Any:
        if self._is_coroutine:
            return await handler(event, context)
        run = functools.partial(contextvars.copy_context().run, handler, event, context)
        result = await asyncio.get_running_loop().run_in_executor(pool, run)
        if inspect.isawaitable(result):  # a callable object with an async __call__
            result = await result
        return result

    def _failed(self, exc: BaseException, request_id: str) -> InvokeResult:
        self._logger.error(
            "handler_failed", function=self.name, request_id=request_id, error_type=type(exc).__name__, exc_info=exc
        )
        frames = traceback.extract_tb(exc.__traceback__)
        start = 0
        while start < len(frames) and _is_internal(frames[start].filename):
            start += 1
        stack = traceback.format_list(frames[start:])
        return InvokeResult("Unhandled", _error_body(str(exc), type(exc).__name__, request_id, stack))


def _is_internal(filename: str) -> bool:
    return filename == __file__ or filename.startswith(_INTERNAL_PREFIXES)


def _error_body(message: str, error_type: str, request_id: str, stack: list[str]) -> bytes:
    """The Python runtime's error response document."""
    return json.dumps(
        {"errorMessage": message, "errorType": error_type, "requestId": request_id, "stackTrace": stack},
        ensure_ascii=False,
    ).encode()


def _json_default(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _marshal(value: Any) -> bytes:
    """Serialize a handler's return value as the Lambda Python runtime does."""
    return json.dumps(value, ensure_ascii=False, allow_nan=True, default=_json_default).encode()


def import_handler(spec: str | None, base_dir: Path) -> Handler:
    """Import `module:function` with `base_dir` importable; raise InvokeFatalError naming the handler."""
    if spec is None:
        raise InvokeFatalError("a Python target needs `handler: module:function`")
    module_name, _, attr = spec.partition(":")
    folder = str(base_dir)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any error raised by user code while importing is a config error
        raise InvokeFatalError(f"cannot import handler {spec!r} from {folder}: {type(exc).__name__}: {exc}") from exc
    handler = getattr(module, attr, None)
    if handler is None:
        raise InvokeFatalError(f"cannot import handler {spec!r}: module {module_name!r} has no attribute {attr!r}")
    if not callable(handler):
        raise InvokeFatalError(f"handler {spec!r} is not callable (it is a {type(handler).__name__})")
    return handler  # type: ignore[no-any-return]
