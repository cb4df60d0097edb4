"""AWS Lambda functions invoked through the Invoke API (`lambda: name-or-ARN`).

The event source mapping invokes synchronously (`RequestResponse`, ESM-SPEC.md §2), so this target
does exactly that with aiobotocore and reports what Lambda answered:

- `FunctionError` in the response is a *function error*, returned as a value with the payload;
- failing to reach the function raises, classified by AWS error code and HTTP status only (never
  message text, DESIGN.md rule 5): throttling (429), any 5xx and connection or read errors raise
  `InvokeServiceError` (retried by the engine); 413 raises `PayloadTooLargeError` (the engine splits
  the batch); anything else (missing function, access denied, bad request) raises `InvokeFatalError`.

The invoker never retries by itself: botocore's retries are off (`esm.aws`), the engine owns backoff
and deadlines. A qualifier in the ARN (`…:function:NAME:live`) is passed as `Qualifier`.
When the configuration gives no timeout, `GetFunctionConfiguration` supplies the function's own
`Timeout`; the client's read timeout is that timeout plus a margin, so a slow function is waited for.
"""

from __future__ import annotations

import contextlib
import io
from typing import TYPE_CHECKING

import aiohttp
import structlog
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    HTTPClientError,
    IncompleteReadError,
)

from esm.arns import parse_function_arn
from esm.aws import ClientFactory
from esm.config import FunctionConfig
from esm.errors import (
    InvokeFatalError,
    InvokeServiceError,
    InvokeThrottledError,
    PayloadTooLargeError,
    RetriableAwsError,
    classify,
)
from esm.targets.base import Invocation, InvokeResult

if TYPE_CHECKING:
    from types_aiobotocore_lambda import LambdaClient
    from types_aiobotocore_lambda.type_defs import (
        GetFunctionConfigurationRequestTypeDef,
        InvocationRequestTypeDef,
    )

__all__ = ["LambdaInvoker"]

_MAX_FUNCTION_TIMEOUT = 900.0  # Lambda's maximum Timeout, the read timeout when it is unknown
_READ_MARGIN = 15.0  # seconds beyond the function timeout before giving up on a response
_LOOKUP_READ_TIMEOUT = 30.0  # GetFunctionConfiguration answers quickly
_MAX_CONNECTIONS = 1000  # ScalingConfig.MaximumConcurrency's upper bound; opened on demand
# aiohttp warns that a bytes body over 1 MiB "might lock the event loop"; larger payloads are
# handed over as a file object, which aiohttp streams in chunks.
_STREAM_BODY_BYTES = 1024 * 1024
# Lambda's throttles: the function's (or the account's) concurrency is exhausted (ESM-SPEC.md §4.1).
_THROTTLED_CODES = frozenset({"TooManyRequestsException", "ThrottlingException", "Throttling"})
_TOO_LARGE_CODES = frozenset(
    {"RequestEntityTooLargeException", "RequestTooLargeException", "SerializedRequestEntityTooLargeException"}
)
# Failures while sending the request or reading the answer: the function may not have run, or its
# answer was lost; either way the call can be repeated (at-least-once delivery, ESM-SPEC.md §2).
_TRANSPORT_ERRORS = (
    ConnectionError,
    HTTPClientError,
    IncompleteReadError,
    aiohttp.ClientError,
    OSError,
    TimeoutError,
)


class LambdaInvoker:
    """Invokes an AWS Lambda function synchronously through the Invoke API."""

    def __init__(
        self,
        name: str,
        fn: FunctionConfig,
        *,
        clients: ClientFactory,
        logger: structlog.typing.FilteringBoundLogger,
    ) -> None:
        self.name = name
        self.timeout: float | None = fn.timeout
        self._fn = fn
        self._clients = clients
        self._logger = logger
        self._function_name = ""
        self._qualifier: str | None = None
        self._client: LambdaClient | None = None
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> LambdaInvoker:
        """Learn the function timeout if it is not configured, then open the Lambda client."""
        if self._fn.lambda_ is None:
            raise InvokeFatalError(f"function {self.name!r} has no `lambda` name or ARN")
        target = parse_function_arn(self._fn.lambda_)
        self._function_name = target.function_name
        self._qualifier = target.qualifier
        if self.timeout is None:
            self.timeout = await self._learn_timeout()
        read_timeout = (self.timeout or _MAX_FUNCTION_TIMEOUT) + _READ_MARGIN
        self._client = await self._stack.enter_async_context(
            self._clients.client("lambda", read_timeout=read_timeout, max_pool=_MAX_CONNECTIONS)
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Close the Lambda client."""
        self._client = None
        await self._stack.aclose()

    async def invoke(self, invocation: Invocation) -> InvokeResult:
        """Invoke with `RequestResponse`; a `FunctionError` is returned, failing to reach the function raises."""
        if self._client is None:
            raise RuntimeError(f"LambdaInvoker {self.name!r} is not open: use it with `async with`")
        request: InvocationRequestTypeDef = {
            "FunctionName": self._function_name,
            "InvocationType": "RequestResponse",
            "Payload": invocation.payload
            if len(invocation.payload) <= _STREAM_BODY_BYTES
            else io.BytesIO(invocation.payload),
        }
        if self._qualifier is not None:
            request["Qualifier"] = self._qualifier
        try:
            response = await self._client.invoke(**request)
            async with response["Payload"] as body:
                payload = await body.read()
        except ClientError as exc:
            raise self._classified(exc) from exc
        except _TRANSPORT_ERRORS as exc:
            raise InvokeServiceError(f"Invoke {self.name} failed: {type(exc).__name__}: {exc}") from exc
        except BotoCoreError as exc:  # credentials, parameter validation: not solved by retrying soon
            raise InvokeFatalError(f"Invoke {self.name} failed: {type(exc).__name__}: {exc}") from exc
        return InvokeResult(
            function_error=response.get("FunctionError") or None,
            payload=payload,
            status_code=response.get("StatusCode", 200),
            executed_version=response.get("ExecutedVersion") or "$LATEST",
        )

    def _classified(self, exc: ClientError) -> Exception:
        """An InvokeError for an error response, decided by AWS error code and HTTP status."""
        error = classify("Invoke", exc)
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        text = f"Invoke {self.name} failed: {error.code} (HTTP {status}): {error.message}"
        if error.code in _TOO_LARGE_CODES or status == 413:
            return PayloadTooLargeError(text)
        if status == 429 or error.code in _THROTTLED_CODES:
            return InvokeThrottledError(text)
        if isinstance(error, RetriableAwsError):
            return InvokeServiceError(text)
        return InvokeFatalError(text)

    async def _learn_timeout(self) -> float | None:
        """The function's Timeout from GetFunctionConfiguration, or None (logged) if it cannot be read."""
        request: GetFunctionConfigurationRequestTypeDef = {"FunctionName": self._function_name}
        if self._qualifier is not None:
            request["Qualifier"] = self._qualifier
        try:
            async with self._clients.client("lambda", read_timeout=_LOOKUP_READ_TIMEOUT, max_pool=1) as client:
                config = await client.get_function_configuration(**request)
        except (ClientError, BotoCoreError, *_TRANSPORT_ERRORS) as exc:
            code = exc.response.get("Error", {}).get("Code", "") if isinstance(exc, ClientError) else ""
            self._logger.warning(
                "function_timeout_unknown",
                function=self.name,
                error_type=code or type(exc).__name__,
                error=str(exc),
            )
            return None
        timeout = config.get("Timeout")
        return float(timeout) if timeout else None
