"""The cross-parameter rules of CreateEventSourceMapping, with AWS's own texts (ESM-SPEC.md §1.1).

Each rule yields `Problem(path, reason)`; where AWS has a documented or recorded message, that
message is used word for word, otherwise the text is esm's own and says what to change.
"""

from __future__ import annotations

from collections.abc import Iterator

from esm.arns import SourceArn, SourceKind, parse_function_arn
from esm.config.models import ConfigFile, FunctionConfig, MappingConfig, Problem
from esm.destinations import destination_problem
from esm.filtering import filter_problems

__all__ = [
    "check_visibility_timeout",
    "filter_criteria_problems",
    "function_problems",
    "mapping_problems",
    "state_problems",
]

# Parameters AWS accepts only for stream sources, with the texts shown for SQS mappings.
_STREAM_ONLY = (
    "StartingPosition",
    "StartingPositionTimestamp",
    "ParallelizationFactor",
    "MaximumRetryAttempts",
    "MaximumRecordAgeInSeconds",
    "BisectBatchOnFunctionError",
    "TumblingWindowInSeconds",
)


def mapping_problems(mappings: list[tuple[int, MappingConfig]], functions: set[str]) -> Iterator[Problem]:
    """The cross-parameter rules of ESM-SPEC.md §1.1, with AWS's texts where AWS has one."""
    seen: dict[tuple[str, str], str] = {}
    uuids: dict[str, int] = {}
    for i, m in mappings:
        at = f"event_source_mappings.{i}"
        src = m.source
        if m.FunctionName not in functions:
            try:
                parse_function_arn(m.FunctionName)
            except ValueError as exc:
                yield Problem(f"{at}.FunctionName", f"{exc} (or the name of an entry of `functions`)")
        key = (m.EventSourceArn, m.FunctionName)
        if key in seen:
            yield Problem(at, _duplicate_text(m, src, seen[key]))
        elif m.uuid in uuids:
            yield Problem(f"{at}.UUID", f"UUID {m.uuid} is also used by event_source_mappings.{uuids[m.uuid]}")
        seen.setdefault(key, m.uuid)
        uuids.setdefault(m.uuid, i)

        # The rule binds an explicit BatchSize (the API's wording); the stream default of 100 alone does not.
        if m.BatchSize is not None and m.BatchSize > 10 and m.batching_window == 0:
            yield Problem(
                f"{at}.MaximumBatchingWindowInSeconds",
                "Maximum batch window in seconds must be greater than 0 if maximum batch size is greater than 10",
            )
        if src.kind is SourceKind.SQS:
            yield from _sqs_problems(at, m, src)
        else:
            yield from _stream_problems(at, m, src)


def _duplicate_text(m: MappingConfig, src: SourceArn, existing_uuid: str) -> str:
    """AWS's ResourceConflictException text for a second mapping of one source and function."""
    if src.kind is SourceKind.SQS:
        return (
            f'An event source mapping with SQS arn (" {m.EventSourceArn} ") and function '
            f'(" {m.FunctionName} ") already exists. Please update or delete the existing '
            f"mapping with UUID {existing_uuid}"
        )
    return (
        f'The event source arn (" {m.EventSourceArn} ") and function (" {m.FunctionName} ") '
        f"provided mapping already exists. Please update or delete the existing mapping "
        f"with UUID {existing_uuid}"
    )


def _sqs_problems(at: str, m: MappingConfig, src: SourceArn) -> Iterator[Problem]:
    for name in _STREAM_ONLY:
        if getattr(m, name) is not None:
            yield Problem(f"{at}.{name}", f"{name} is not valid for SQS event sources.")
    if m.DestinationConfig is not None:
        yield Problem(
            f"{at}.DestinationConfig",
            "Unsupported DestinationConfig parameter for given event source mapping type. "
            "(SQS failures go to the queue's redrive policy / dead-letter queue.)",
        )
    if src.is_fifo:
        if m.batch_size > 10:
            yield Problem(f"{at}.BatchSize", "Maximum batch size must be between 1 and 10 inclusive for FIFO queues")
        if m.batching_window > 0:
            yield Problem(f"{at}.MaximumBatchingWindowInSeconds", "Batching window is not supported for FIFO queues")


def _stream_problems(at: str, m: MappingConfig, src: SourceArn) -> Iterator[Problem]:
    if src.resource.count("/consumer/"):
        yield Problem(
            f"{at}.EventSourceArn",
            "enhanced fan-out consumers (stream-consumer ARNs) are not supported by esm: map the stream ARN, "
            "which esm reads with GetRecords",
        )
    if m.tumbling_window and m.parallelization_factor > 1:
        # One window state per shard is passed from invocation to invocation, so a shard's batches
        # run one at a time (AWS accepts tumbling windows only with ParallelizationFactor 1).
        yield Problem(
            f"{at}.ParallelizationFactor",
            "TumblingWindowInSeconds requires ParallelizationFactor 1: the window state is passed from one "
            "invocation to the next, one batch at a time per shard",
        )
    destination = m.on_failure_destination
    if destination is not None:
        problem = destination_problem(destination)
        if problem is not None:
            yield Problem(f"{at}.DestinationConfig.OnFailure.Destination", problem)
    if m.ScalingConfig is not None:
        yield Problem(f"{at}.ScalingConfig", "ScalingConfig is only supported for SQS event sources.")
    if m.StartingPosition is None:
        yield Problem(
            f"{at}.StartingPosition",
            "1 validation error detected: Value null at 'startingPosition' failed to satisfy constraint: "
            "Member must not be null",
        )
    if m.StartingPosition == "AT_TIMESTAMP":
        if src.kind is SourceKind.DYNAMODB:
            yield Problem(f"{at}.StartingPosition", "Unsupported starting position for DynamoDB stream: AT_TIMESTAMP")
        elif m.StartingPositionTimestamp is None:
            yield Problem(
                f"{at}.StartingPositionTimestamp",
                "StartingPositionTimestamp must be set with StartingPosition AT_TIMESTAMP",
            )
    age = m.MaximumRecordAgeInSeconds
    if age is not None and 0 <= age < 60:
        yield Problem(
            f"{at}.MaximumRecordAgeInSeconds",
            "MaximumRecordAgeInSeconds must be -1 (infinite) or between 60 and 604800",
        )


def filter_criteria_problems(spec: ConfigFile) -> Iterator[Problem]:
    """Every mapping's FilterCriteria: at most `filters_per_mapping` filters, each a valid pattern (§1.1, §6)."""
    for i, m in enumerate(spec.event_source_mappings):
        for line in filter_problems(m.filter_patterns, m.source.kind, spec.filters_per_mapping):
            path, _, reason = line.partition(": ")
            yield Problem(f"event_source_mappings.{i}.FilterCriteria.{path}", reason)


def state_problems(spec: ConfigFile) -> Iterator[Problem]:
    """Stream mappings need a checkpoint store: SQLite (one replica) or the DynamoDB lease table (several)."""
    streams = any(m.source.kind is not SourceKind.SQS for m in spec.event_source_mappings)
    if not streams:
        return
    if spec.state.dynamodb is None and spec.state.sqlite is None:
        yield Problem(
            "state.sqlite",
            "Kinesis and DynamoDB Streams mappings need a checkpoint store: set state.sqlite (one replica) "
            "or state.dynamodb (several replicas)",
        )


def function_problems(functions: dict[str, FunctionConfig]) -> Iterator[Problem]:
    """Each function names exactly one kind of target, and a `lambda` target is a valid name or ARN."""
    for name, fn in functions.items():
        given = [k for k, v in (("handler", fn.handler), ("lambda", fn.lambda_), ("url", fn.url)) if v is not None]
        if len(given) != 1:
            yield Problem(
                f"functions.{name}",
                "exactly one of `handler`, `lambda` or `url` is required"
                + (f" (found {', '.join(given)})" if given else ""),
            )
        if fn.lambda_ is not None:
            try:
                parse_function_arn(fn.lambda_)
            except ValueError as exc:
                yield Problem(f"functions.{name}.lambda", str(exc))


def check_visibility_timeout(visibility_timeout: int, function_timeout: float) -> str | None:
    """AWS's check that the function timeout fits the queue's visibility timeout (ESM-SPEC.md §1.1).

    Returns AWS's InvalidParameterValueException text when it does not, else None.
    """
    if function_timeout > visibility_timeout:
        shown = int(function_timeout) if float(function_timeout).is_integer() else function_timeout
        return f"Queue visibility timeout: {visibility_timeout} seconds is less than Function timeout: {shown} seconds"
    return None
