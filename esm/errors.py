"""The exception tree, and the one place AWS errors are classified (DESIGN.md rule 5).

    EsmError
    ├── ConfigError (esm.config)          the configuration cannot be used
    ├── AwsError                          an AWS API call failed
    │   ├── RetriableAwsError             throttling, 5xx, connection trouble: try again later
    │   │   ├── ExpiredIteratorError      a shard iterator expired: get a new one at the same position
    │   │   └── TrimmedDataError          the position was trimmed past the stream's retention
    │   └── FatalAwsError                 permissions, validation, missing resource: retrying won't help
    │       └── SourceNotFoundError       the queue or stream does not exist (any more)
    └── InvokeError                       a target could not be invoked (never a function error)
        ├── InvokeServiceError            throttle / 5xx / connection: retried, never a function error
        │   └── InvokeThrottledError      429 / TooManyRequestsException: Lambda's Throttles
        ├── PayloadTooLargeError          413: the batch is split and retried
        └── InvokeFatalError              the target is misconfigured or missing

A *function error* (the function ran and failed or timed out) is not an exception: it is a value
in `InvokeResult` (DESIGN.md rule 3). Errors are classified by error code, never by message text.
"""

from __future__ import annotations

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    ParamValidationError,
    PartialCredentialsError,
    ReadTimeoutError,
)

__all__ = [
    "AwsError",
    "EsmError",
    "ExpiredIteratorError",
    "FatalAwsError",
    "InvokeError",
    "InvokeFatalError",
    "InvokeServiceError",
    "InvokeThrottledError",
    "LeaseLostError",
    "PayloadTooLargeError",
    "RetriableAwsError",
    "SourceNotFoundError",
    "TrimmedDataError",
    "classify",
]


class EsmError(Exception):
    """Base of every error esm raises on purpose."""


class AwsError(EsmError):
    """An AWS API call failed; `code` is AWS's error code and `retriable` says whether to try again."""

    retriable = False

    def __init__(self, operation: str, code: str, message: str) -> None:
        self.operation = operation
        self.code = code
        self.message = message
        super().__init__(f"{operation} failed: {code}: {message}")


class RetriableAwsError(AwsError):
    """Throttling, a 5xx or a connection failure: the same call may succeed later."""

    retriable = True


class ExpiredIteratorError(RetriableAwsError):
    """A shard iterator expired: get a new one at the same position."""


class TrimmedDataError(RetriableAwsError):
    """The requested position is older than the stream's retention: those records are gone."""


class FatalAwsError(AwsError):
    """Access denied, validation, a missing resource: retrying the same call will not help."""


class SourceNotFoundError(FatalAwsError):
    """The event source (queue or stream) does not exist."""


class LeaseLostError(EsmError):
    """This replica no longer holds a shard's lease: its consumer must stop without writing again."""

    def __init__(self, shard_id: str) -> None:
        super().__init__(f"the lease of {shard_id} is held by another replica")
        self.shard_id = shard_id


class InvokeError(EsmError):
    """The target could not be invoked; the batch never reached the function."""


class InvokeServiceError(InvokeError):
    """Throttled (429), a 5xx or a connection error: retried with backoff, never a function error."""

    outcome = "service_error"
    """The `outcome` label of `esm_invocations_total` for this error."""


class InvokeThrottledError(InvokeServiceError):
    """The function was throttled (429, TooManyRequestsException): retried, counted as a throttle."""

    outcome = "throttled"


class PayloadTooLargeError(InvokeError):
    """The invocation payload was rejected as too large (413): split the batch and retry."""


class InvokeFatalError(InvokeError):
    """The target is missing or misconfigured (404, 403, bad request): the batch is left to retry later."""


_THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "LimitExceededException",
        "RequestThrottled",
        "SlowDown",
        "PriorRequestNotComplete",
        "EC2ThrottledException",
        "KMSThrottlingException",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalError",
        "InternalFailure",
        "InternalServerError",
        "ServiceException",
        "RequestTimeout",
        "RequestTimeoutException",
        "AWS.SimpleQueueService.InternalError",
        "KMS.KMSThrottlingException",
    }
)
_NOT_FOUND_CODES = frozenset(
    {
        "AWS.SimpleQueueService.NonExistentQueue",
        "QueueDoesNotExist",
        "ResourceNotFoundException",
    }
)

_EXPIRED_ITERATOR_CODES = frozenset({"ExpiredIteratorException"})


def classify(operation: str, exc: BaseException) -> AwsError:
    """Turn a botocore exception into our hierarchy, by error code and HTTP status only."""
    if isinstance(exc, AwsError):
        return exc
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", "Unknown"))
        message = str(err.get("Message", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if code in _NOT_FOUND_CODES:
            return SourceNotFoundError(operation, code, message)
        if code in _EXPIRED_ITERATOR_CODES:
            return ExpiredIteratorError(operation, code, message)
        if code == "TrimmedDataAccessException":
            return TrimmedDataError(operation, code, message)
        if code in _THROTTLING_CODES or status == 429 or status >= 500:
            return RetriableAwsError(operation, code, message)
        return FatalAwsError(operation, code, message)
    if isinstance(
        exc, EndpointConnectionError | ConnectionClosedError | ConnectTimeoutError | ReadTimeoutError | OSError
    ):
        return RetriableAwsError(operation, type(exc).__name__, str(exc))
    if isinstance(exc, TimeoutError):
        return RetriableAwsError(operation, "Timeout", str(exc))
    if isinstance(exc, NoCredentialsError | PartialCredentialsError | NoRegionError | ParamValidationError):
        # Nothing on AWS's side will change this: the environment or the request is wrong.
        return FatalAwsError(operation, type(exc).__name__, str(exc))
    if isinstance(exc, BotoCoreError):
        # Transport and parsing trouble (e.g. a truncated response): worth another try later.
        return RetriableAwsError(operation, type(exc).__name__, str(exc))
    # Anything else (an aiohttp or SSL error from the transport, say) must not kill a poller:
    # treat it as transient, under its type name, so it is backed off and counted.
    return RetriableAwsError(operation, type(exc).__name__, str(exc))
