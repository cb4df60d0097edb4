"""HTTP endpoints as targets (`url:`): the event is POSTed as JSON, the response body is the answer.

Why: platform teams give Lambda's event source mapping semantics to services that are not Lambdas,
such as an HTTP service in the cluster (DESIGN.md §1). The request mirrors what a Lambda runtime is
handed: the serialized event as the body (`Content-Type: application/json`), the request id in
`Lambda-Runtime-Aws-Request-Id` and the deadline (Unix milliseconds) in `Lambda-Runtime-Deadline-Ms`,
as the Lambda Runtime API names them, plus the configured `headers` (already `${VAR}`-expanded).

The answer maps onto Lambda's: a 2xx is success and its body the function's response (an empty
body reads as `null`); any other status is an `Unhandled` function error carrying the body; no
answer within the timeout (default 3 s, Lambda's default) is the `Sandbox.Timedout` function error.
Only failing to reach the endpoint (connection refused or reset) raises `InvokeServiceError`.
"""

from __future__ import annotations

import io
import time

import aiohttp
import structlog

from esm.config import FunctionConfig
from esm.errors import InvokeFatalError, InvokeServiceError
from esm.targets.base import Invocation, InvokeResult
from esm.targets.python import DEFAULT_TIMEOUT, timed_out_payload

__all__ = ["HttpInvoker"]

# aiohttp warns that a bytes body over 1 MiB "might lock the event loop"; larger payloads are
# handed over as a file object, which aiohttp streams in chunks.
_STREAM_BODY_BYTES = 1024 * 1024


class HttpInvoker:
    """POSTs each event to a URL with one aiohttp session per invoker."""

    def __init__(self, name: str, fn: FunctionConfig, *, logger: structlog.typing.FilteringBoundLogger) -> None:
        self.name = name
        self.timeout: float | None = fn.timeout if fn.timeout is not None else DEFAULT_TIMEOUT
        self._fn = fn
        self._logger = logger
        self._url = ""
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> HttpInvoker:
        """Open the HTTP session (connections are made on demand)."""
        if self._fn.url is None:
            raise InvokeFatalError(f"function {self.name!r} has no `url`")
        self._url = self._fn.url
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout or DEFAULT_TIMEOUT),
            connector=aiohttp.TCPConnector(limit=0),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Close the HTTP session and its connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def invoke(self, invocation: Invocation) -> InvokeResult:
        """POST the event; non-2xx and timeouts are function errors, connection failures raise."""
        if self._session is None:
            raise RuntimeError(f"HttpInvoker {self.name!r} is not open: use it with `async with`")
        timeout = self.timeout or DEFAULT_TIMEOUT
        headers = {
            "Content-Type": "application/json",
            **self._fn.headers,
            "Lambda-Runtime-Aws-Request-Id": invocation.request_id,
            "Lambda-Runtime-Deadline-Ms": str(int((time.time() + timeout) * 1000)),
        }
        payload = invocation.payload
        data = payload if len(payload) <= _STREAM_BODY_BYTES else io.BytesIO(payload)
        try:
            async with self._session.post(self._url, data=data, headers=headers) as response:
                body = await response.read()
                status = response.status
        except TimeoutError:
            self._logger.warning("endpoint_timed_out", function=self.name, request_id=invocation.request_id)
            return InvokeResult("Unhandled", timed_out_payload(invocation.request_id, timeout))
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, OSError) as exc:
            raise InvokeServiceError(f"POST to {self.name} failed: {type(exc).__name__}: {exc}") from exc
        except aiohttp.ClientError as exc:  # invalid URL, too many redirects: the target is misconfigured
            raise InvokeFatalError(f"POST to {self.name} failed: {type(exc).__name__}: {exc}") from exc
        if 200 <= status < 300:
            return InvokeResult(None, body, status_code=status)
        self._logger.warning(
            "endpoint_failed", function=self.name, request_id=invocation.request_id, status=status, bytes=len(body)
        )
        return InvokeResult("Unhandled", body, status_code=status)
