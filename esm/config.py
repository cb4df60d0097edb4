"""The configuration file: YAML parsed once into frozen pydantic models (DESIGN.md §2).

Mapping entries take `CreateEventSourceMapping`'s parameter names, per-source defaults, ranges,
cross-parameter rules and AWS's own error texts (ESM-SPEC.md §1.1), so an
`AWS::Lambda::EventSourceMapping` `Properties` block pastes in unchanged.

`load_config()` is the only entry point: it reads the file, expands `${VAR}`, validates the
structure (pydantic) and then the cross-field rules, and raises `ConfigError` listing *every*
problem as `(path, reason)`; `esm validate` prints them as `FILE: path: reason`.
"""

from __future__ import annotations

import functools
import os
import re
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from esm.arns import SourceArn, SourceKind, parse_function_arn, parse_source_arn

__all__ = [
    "AwsConfig",
    "Config",
    "ConfigError",
    "ConfigFile",
    "DevQueue",
    "FunctionConfig",
    "HttpConfig",
    "MappingConfig",
    "Problem",
    "ShutdownConfig",
    "StateConfig",
    "check_visibility_timeout",
    "json_schema",
    "load_config",
    "parse_config",
]

# Lambda's synchronous invocation payload limit (ESM-SPEC.md §2): 6 MB, not modifiable.
MAX_PAYLOAD_BYTES = 6 * 1024 * 1024
_UUID_NAMESPACE = uuid.UUID("5d6bc8a4-61a4-4d35-9a44-4f4a3c1b1e77")


@dataclass(frozen=True, slots=True)
class Problem:
    """One configuration problem: a dotted field path and the reason."""

    path: str
    reason: str


class ConfigError(Exception):
    """A configuration file that cannot be used; carries every problem found in it."""

    def __init__(self, file: str, problems: list[Problem]) -> None:
        self.file = file
        self.problems = problems
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        """The problems formatted as `FILE: path: reason`, one per line (DESIGN.md §2)."""
        return [f"{self.file}: {p.path}: {p.reason}" for p in self.problems]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


def _aws_range(member: str, lo: int, hi: int) -> Any:
    """A validator giving AWS's own ValidationException text for a value outside [lo, hi]."""

    def check(value: int | None) -> int | None:
        if value is None:
            return value
        if value < lo:
            raise ValueError(
                f"1 validation error detected: Value '{value}' at '{member}' failed to satisfy "
                f"constraint: Member must have value greater than or equal to {lo}"
            )
        if value > hi:
            raise ValueError(
                f"1 validation error detected: Value '{value}' at '{member}' failed to satisfy "
                f"constraint: Member must have value less than or equal to {hi}"
            )
        return value

    return check


# --------------------------------------------------------------------------------------------
# top-level sections


class AwsConfig(_Frozen):
    """How esm reaches AWS. Credentials always come from the standard AWS chain, never this file."""

    region: str | None = Field(None, description="AWS region; default: the standard chain (AWS_REGION…).")
    endpoint_url: str | None = Field(
        None, description="One endpoint for every AWS service, for emulators (e.g. http://127.0.0.1:5000)."
    )
    profile: str | None = Field(None, description="A named profile of the shared AWS config files.")
    endpoints: dict[Literal["sqs", "lambda", "sns", "s3", "kinesis", "dynamodb", "dynamodbstreams"], str] = Field(
        default_factory=dict,
        description="Per-service endpoints, overriding endpoint_url (e.g. SQS on an emulator, Lambda on AWS).",
    )


class DynamoStateConfig(_Frozen):
    """A DynamoDB lease table shared by several replicas (stream mappings)."""

    table: str = Field(description="Lease table name.")


class StateConfig(_Frozen):
    """Where stream checkpoints live (used by Kinesis and DynamoDB Streams mappings)."""

    sqlite: str | None = Field("./esm-state.db", description="Embedded SQLite file for one replica.")
    dynamodb: DynamoStateConfig | None = Field(None, description="DynamoDB lease table for several replicas.")


class HttpConfig(_Frozen):
    """The observability server: /metrics, /healthz and /readyz."""

    listen: str = Field("127.0.0.1:9100", description="HOST:PORT to bind; PORT 0 picks a free port.")

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("must be HOST:PORT, for example 127.0.0.1:9100 or 0.0.0.0:9100")
        return value

    @property
    def host(self) -> str:
        """The address to bind, without IPv6 brackets."""
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        """The port to bind (0: any free port)."""
        return int(self.listen.rpartition(":")[2])


class ShutdownConfig(_Frozen):
    """What happens on SIGTERM/SIGINT."""

    grace_period: float = Field(
        25.0,
        ge=0,
        le=3600,
        description="Seconds in-flight invocations may take to finish after a stop signal before they "
        "are abandoned (their messages return to the queue). Keep it below Kubernetes' "
        "terminationGracePeriodSeconds.",
    )


class FunctionConfig(_Frozen):
    """A target function: exactly one of `handler`, `lambda` or `url`."""

    handler: str | None = Field(
        None,
        description="In-process Python handler `module:function`, importable from the config file's folder.",
    )
    lambda_: str | None = Field(
        None, alias="lambda", description="AWS Lambda function name or ARN (a qualifier in the ARN is used)."
    )
    url: str | None = Field(None, description="HTTP endpoint that receives the event as a JSON POST.")
    timeout: float | None = Field(
        None,
        gt=0,
        le=900,
        description="Function timeout in seconds (Lambda: 1–900, default 3). For `lambda` targets the "
        "default is the function's own Timeout, read with GetFunctionConfiguration.",
    )
    memory: int = Field(128, ge=128, le=10240, description="memory_limit_in_mb shown in the handler context.")
    headers: dict[str, str] = Field(
        default_factory=dict, description="Extra HTTP headers (url targets); values may use ${ENV_VAR}."
    )
    max_threads: int = Field(
        64, ge=1, le=4096, description="Worker threads for a synchronous Python handler (its own pool)."
    )

    @field_validator("handler")
    @classmethod
    def _handler_form(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$", value):
            raise ValueError("must be `module:function`, for example handlers.orders:handle")
        return value

    @field_validator("url")
    @classmethod
    def _url_form(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^\s/]+", value):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @property
    def kind(self) -> Literal["handler", "lambda", "url"]:
        """Which kind of target this is."""
        if self.handler is not None:
            return "handler"
        if self.lambda_ is not None:
            return "lambda"
        return "url"


class DevQueue(_Frozen):
    """A queue `esm dev` creates on its embedded emulator (CreateQueue attribute names)."""

    VisibilityTimeout: int = Field(30, ge=0, le=43200, description="Queue visibility timeout, seconds.")
    RedrivePolicy: dict[str, Any] | None = Field(
        None, description="{deadLetterTargetArn: ARN, maxReceiveCount: N}; the DLQ is created too."
    )
    ContentBasedDeduplication: bool | None = Field(None, description="FIFO queues only.")


class DevConfig(_Frozen):
    """Resources `esm dev` creates on its embedded emulator besides those the mappings name."""

    port: int = Field(0, ge=0, le=65535, description="Emulator port on 127.0.0.1 (0: the endpoint's port or any).")
    queues: dict[str, DevQueue] = Field(default_factory=dict, description="Queue name -> attributes.")


# --------------------------------------------------------------------------------------------
# event source mappings


class OnFailureSpec(_Frozen):
    """DestinationConfig.OnFailure (Kinesis and DynamoDB Streams only)."""

    Destination: str | None = Field(None, max_length=350, description="SQS queue, SNS topic or S3 bucket ARN.")


class DestinationSpec(_Frozen):
    """DestinationConfig; OnSuccess is not supported for event source mappings (ESM-SPEC.md §1.1)."""

    OnFailure: OnFailureSpec | None = None


class FilterItem(_Frozen):
    """One filter pattern (a JSON string, up to 4096 characters)."""

    Pattern: str = Field(max_length=4096)


class FilterSpec(_Frozen):
    """FilterCriteria; filters are ORed."""

    Filters: list[FilterItem] = Field(default_factory=list)


class ScalingSpec(_Frozen):
    """ScalingConfig (SQS only)."""

    MaximumConcurrency: Annotated[int | None, Field(None)] = None

    _range = field_validator("MaximumConcurrency")(_aws_range("scalingConfig.maximumConcurrency", 2, 1000))


class MetricsSpec(_Frozen):
    """MetricsConfig; accepted for compatibility: esm always exports its metrics."""

    Metrics: list[Literal["EventCount", "ErrorCount", "KafkaMetrics"]] = Field(default_factory=list, max_length=3)


_SQS_DEFAULT_BATCH = 10
_STREAM_DEFAULT_BATCH = 100
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


class MappingConfig(_Frozen):
    """One event source mapping: CreateEventSourceMapping's parameters under their AWS names."""

    EventSourceArn: str = Field(description="SQS queue, Kinesis stream or DynamoDB stream ARN.")
    FunctionName: str = Field(
        description="An entry of `functions`, or a Lambda function name/ARN invoked through the Invoke API."
    )
    UUID: str | None = Field(
        None, description="Stable id for checkpoints, metrics and failure records; derived if unset."
    )
    Enabled: bool = Field(True, description="A disabled mapping is not polled.")
    BatchSize: int | None = Field(None, description="Records per batch. Default 10 (SQS) or 100 (streams).")
    MaximumBatchingWindowInSeconds: int | None = Field(
        None, description="Seconds to gather records before invoking (0–300, default 0)."
    )
    FunctionResponseTypes: list[Literal["ReportBatchItemFailures"]] = Field(
        default_factory=list, max_length=1, description="[ReportBatchItemFailures] enables partial batch responses."
    )
    ScalingConfig: ScalingSpec | None = Field(None, description="SQS only: MaximumConcurrency 2–1000.")
    FilterCriteria: FilterSpec | None = Field(None, description="Event filters (ORed).")
    StartingPosition: Literal["TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"] | None = Field(
        None, description="Streams only: where to start without a checkpoint."
    )
    StartingPositionTimestamp: float | None = Field(None, description="Unix seconds, with AT_TIMESTAMP.")
    ParallelizationFactor: int | None = Field(None, description="Streams: batches per shard in flight (1–10).")
    MaximumRetryAttempts: int | None = Field(None, description="Streams: −1 (infinite) … 10,000.")
    MaximumRecordAgeInSeconds: int | None = Field(None, description="Streams: −1 or 60 … 604,800.")
    BisectBatchOnFunctionError: bool | None = Field(None, description="Streams: split a failing batch.")
    DestinationConfig: DestinationSpec | None = Field(None, description="Streams: on-failure destination.")
    TumblingWindowInSeconds: int | None = Field(None, description="Streams: tumbling window (0–900).")
    KMSKeyArn: str | None = Field(None, description="Accepted for compatibility (encrypts filters in AWS).")
    MetricsConfig: MetricsSpec | None = Field(None, description="Accepted for compatibility.")
    Tags: dict[str, str] | None = Field(None, description="Accepted for compatibility.")

    _batch = field_validator("BatchSize")(_aws_range("batchSize", 1, 10000))
    _window = field_validator("MaximumBatchingWindowInSeconds")(_aws_range("maximumBatchingWindowInSeconds", 0, 300))
    _pf = field_validator("ParallelizationFactor")(_aws_range("parallelizationFactor", 1, 10))
    _retries = field_validator("MaximumRetryAttempts")(_aws_range("maximumRetryAttempts", -1, 10000))
    _age = field_validator("MaximumRecordAgeInSeconds")(_aws_range("maximumRecordAgeInSeconds", -1, 604800))
    _tumbling = field_validator("TumblingWindowInSeconds")(_aws_range("tumblingWindowInSeconds", 0, 900))

    @field_validator("EventSourceArn")
    @classmethod
    def _source_arn(cls, value: str) -> str:
        _parse_source(value)
        return value

    @field_validator("UUID")
    @classmethod
    def _uuid_form(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                # One canonical spelling, so metrics, checkpoints and S3 keys never see two forms of one id.
                return str(uuid.UUID(value))
            except ValueError:
                raise ValueError("must be a UUID, for example 6f9a0e53-5d8e-4e3b-9a57-3f2c1d0b4a11") from None
        return value

    # resolved values ------------------------------------------------------------------------

    @property
    def source(self) -> SourceArn:
        """The parsed EventSourceArn."""
        return _parse_source(self.EventSourceArn)

    @property
    def uuid(self) -> str:
        """The mapping's UUID: configured, or derived deterministically from source and function."""
        if self.UUID is not None:
            return self.UUID
        return str(uuid.uuid5(_UUID_NAMESPACE, f"{self.EventSourceArn}|{self.FunctionName}"))

    @property
    def batch_size(self) -> int:
        """BatchSize with AWS's per-source default (ESM-SPEC.md §1.1)."""
        if self.BatchSize is not None:
            return self.BatchSize
        return _SQS_DEFAULT_BATCH if self.source.kind is SourceKind.SQS else _STREAM_DEFAULT_BATCH

    @property
    def batching_window(self) -> int:
        """MaximumBatchingWindowInSeconds with its default of 0."""
        return self.MaximumBatchingWindowInSeconds or 0

    @property
    def report_batch_item_failures(self) -> bool:
        """True when the function's partial batch responses are honoured."""
        return "ReportBatchItemFailures" in self.FunctionResponseTypes

    @property
    def maximum_concurrency(self) -> int | None:
        """ScalingConfig.MaximumConcurrency, or None for AWS's automatic scaling."""
        return self.ScalingConfig.MaximumConcurrency if self.ScalingConfig is not None else None


@functools.lru_cache(maxsize=1024)
def _parse_source(arn: str) -> SourceArn:
    return parse_source_arn(arn)


class ConfigFile(_Frozen):
    """The whole esm configuration file."""

    aws: AwsConfig = Field(default_factory=AwsConfig, description="AWS region and endpoint.")
    state: StateConfig = Field(default_factory=StateConfig, description="Where stream checkpoints live.")
    http: HttpConfig = Field(default_factory=HttpConfig, description="/metrics, /healthz, /readyz server.")
    shutdown: ShutdownConfig = Field(default_factory=ShutdownConfig, description="Drain on stop signals.")
    functions: dict[str, FunctionConfig] = Field(default_factory=dict, description="Targets by name.")
    event_source_mappings: list[MappingConfig] = Field(
        default_factory=list, description="The mappings, with CreateEventSourceMapping's parameter names."
    )
    dev: DevConfig = Field(default_factory=DevConfig, description="Resources for `esm dev` only.")


@dataclass(frozen=True, slots=True)
class Config:
    """A loaded configuration: the validated file and the folder handlers are imported from."""

    path: Path
    spec: ConfigFile

    @property
    def base_dir(self) -> Path:
        """The config file's folder (Python handler modules are importable from it)."""
        return self.path.resolve().parent

    def function_for(self, mapping: MappingConfig) -> tuple[str, FunctionConfig]:
        """The target of a mapping: its `functions` entry, or an implicit AWS Lambda target."""
        fn = self.spec.functions.get(mapping.FunctionName)
        if fn is not None:
            return mapping.FunctionName, fn
        return mapping.FunctionName, FunctionConfig.model_validate({"lambda": mapping.FunctionName})


# --------------------------------------------------------------------------------------------
# loading


_VAR_RE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand(node: Any, path: str, env: dict[str, str], problems: list[Problem]) -> Any:
    """Expand `${VAR}` / `${VAR:-default}` in every string value; `$$` is a literal `$`."""
    if isinstance(node, str):

        def sub(m: re.Match[str]) -> str:
            if m.group(0) == "$$":
                return "$"
            name, default = m.group(1), m.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            problems.append(Problem(path or "<root>", f"environment variable {name} is not set"))
            return ""

        return _VAR_RE.sub(sub, node)
    if isinstance(node, dict):
        return {k: _expand(v, f"{path}.{k}" if path else str(k), env, problems) for k, v in node.items()}
    if isinstance(node, list):
        return [_expand(v, f"{path}.{i}" if path else str(i), env, problems) for i, v in enumerate(node)]
    return node


def _loc(loc: Iterable[int | str]) -> str:
    return ".".join(str(p) for p in loc) or "<root>"


def _pydantic_problems(err: ValidationError) -> list[Problem]:
    out = []
    for e in err.errors(include_url=False):
        msg = e["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        out.append(Problem(_loc(e["loc"]), msg))
    return out


def _mapping_problems(mappings: list[tuple[int, MappingConfig]], functions: set[str]) -> Iterator[Problem]:
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
        if m.FilterCriteria is not None and m.FilterCriteria.Filters:
            yield Problem(
                f"{at}.FilterCriteria",
                "event filtering is not available in this version of esm (planned in issue #4); "
                "remove FilterCriteria so that no record is processed unfiltered by mistake",
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
    yield Problem(
        f"{at}.EventSourceArn",
        f"{'Kinesis' if src.kind is SourceKind.KINESIS else 'DynamoDB Streams'} sources are not available in "
        "this version of esm (planned in issue #3)",
    )
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


def _function_problems(functions: dict[str, FunctionConfig]) -> Iterator[Problem]:
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


def _partial_problems(raw: dict[str, Any]) -> Iterator[Problem]:
    """Cross-field problems of the mappings that are valid on their own, when others are not.

    So that `esm validate` reports every problem in one run, not only the structural ones.
    """
    entries = raw.get("event_source_mappings")
    functions = raw.get("functions")
    if not isinstance(entries, list):
        return
    names = set(functions) if isinstance(functions, dict) else set()
    valid = []
    for i, entry in enumerate(entries):
        try:
            valid.append((i, MappingConfig.model_validate(entry)))
        except ValidationError:
            continue
    yield from _mapping_problems(valid, names)


def _valid_functions(raw: dict[str, Any]) -> dict[str, FunctionConfig]:
    """The `functions` entries that are valid on their own (for cross-field checks on a broken file)."""
    functions = raw.get("functions")
    valid: dict[str, FunctionConfig] = {}
    if isinstance(functions, dict):
        for name, entry in functions.items():
            try:
                valid[str(name)] = FunctionConfig.model_validate(entry)
            except ValidationError:
                continue
    return valid


def parse_config(text: str, file: str, env: dict[str, str] | None = None) -> ConfigFile:
    """Validate configuration text; raise ConfigError with every problem (file is for messages)."""
    try:
        raw = yaml.safe_load(text)
    except RecursionError:
        raise ConfigError(file, [Problem("<root>", "the document is nested too deeply")]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "<document>"
        reason = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(file, [Problem(where, f"invalid YAML: {reason}")]) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(file, [Problem("<root>", "the file must be a YAML mapping of sections")])
    problems: list[Problem] = []
    try:
        expanded = _expand(raw, "", dict(os.environ) if env is None else env, problems)
    except RecursionError:
        raise ConfigError(file, [Problem("<root>", "the document is nested too deeply")]) from None
    try:
        spec = ConfigFile.model_validate(expanded)
    except ValidationError as exc:
        problems.extend(_pydantic_problems(exc))
        problems.extend(_partial_problems(expanded))
        problems.extend(_function_problems(_valid_functions(expanded)))
        raise ConfigError(file, problems) from None
    problems.extend(_function_problems(spec.functions))
    problems.extend(_mapping_problems(list(enumerate(spec.event_source_mappings)), set(spec.functions)))
    if problems:
        raise ConfigError(file, problems)
    return spec


def load_config(path: str | Path, env: dict[str, str] | None = None) -> Config:
    """Read and validate a configuration file; raise ConfigError listing every problem."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [Problem("<file>", exc.strerror or str(exc))]) from None
    except UnicodeDecodeError:
        raise ConfigError(str(path), [Problem("<file>", "not UTF-8 text")]) from None
    return Config(p, parse_config(text, str(path), env))


def check_visibility_timeout(visibility_timeout: int, function_timeout: float) -> str | None:
    """AWS's check that the function timeout fits the queue's visibility timeout (ESM-SPEC.md §1.1).

    Returns AWS's InvalidParameterValueException text when it does not, else None.
    """
    if function_timeout > visibility_timeout:
        shown = int(function_timeout) if float(function_timeout).is_integer() else function_timeout
        return f"Queue visibility timeout: {visibility_timeout} seconds is less than Function timeout: {shown} seconds"
    return None


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the configuration file, for editor completion (`esm schema`)."""
    schema = ConfigFile.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "esm configuration file"
    return schema
