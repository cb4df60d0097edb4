"""The configuration models: frozen pydantic models of the YAML file (DESIGN.md §2, rule 8).

Every field has a description and a default; mapping entries use CreateEventSourceMapping's
names, ranges and AWS's ValidationException texts (ESM-SPEC.md §1.1). Cross-field rules live in
`esm.config.rules`, reading and `${VAR}` expansion in `esm.config.loading`.
"""

from __future__ import annotations

import functools
import re
import types
import typing
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic.fields import FieldInfo

from esm.arns import SourceArn, SourceKind, parse_source_arn

__all__ = [
    "AwsConfig",
    "Config",
    "ConfigError",
    "ConfigFile",
    "DevConfig",
    "DevQueue",
    "DevStream",
    "DevTable",
    "FunctionConfig",
    "HttpConfig",
    "MappingConfig",
    "Problem",
    "ReloadConfig",
    "RetryDelayConfig",
    "ShutdownConfig",
    "StateConfig",
    "StreamsConfig",
    "json_schema",
]

_UUID_NAMESPACE = uuid.UUID("5d6bc8a4-61a4-4d35-9a44-4f4a3c1b1e77")
_HTTP_URL = re.compile(r"^https?://[^\s/]+")


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

    @field_validator("*", mode="before")
    @classmethod
    def _no_boolean_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic reads `true` as 1 for a number; AWS's API refuses a boolean there, and so does esm.
        if isinstance(value, bool) and info.field_name is not None and _is_number(cls.model_fields[info.field_name]):
            raise ValueError(f"Input should be a number, not the boolean {str(value).lower()}")
        return value


def _is_number(field: FieldInfo) -> bool:
    """Whether a field holds an int or a float (possibly None)."""
    annotation = field.annotation
    members = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    return any(m in (int, float) for m in members)


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


def _http_url(value: str) -> str:
    # botocore refuses anything else only when the first client is created, with a traceback.
    if not _HTTP_URL.match(value):
        raise ValueError("must be an http:// or https:// URL")
    return value


_Endpoint = Annotated[str, AfterValidator(_http_url)]


# --------------------------------------------------------------------------------------------
# top-level sections


class AwsConfig(_Frozen):
    """How esm reaches AWS. Credentials always come from the standard AWS chain, never this file."""

    region: str | None = Field(None, description="AWS region; default: the standard chain (AWS_REGION…).")
    endpoint_url: _Endpoint | None = Field(
        None, description="One endpoint for every AWS service, for emulators (e.g. http://127.0.0.1:5000)."
    )
    profile: str | None = Field(None, description="A named profile of the shared AWS config files.")
    endpoints: dict[Literal["sqs", "lambda", "sns", "s3", "kinesis", "dynamodb", "dynamodbstreams"], _Endpoint] = Field(
        default_factory=dict,
        description="Per-service endpoints, overriding endpoint_url (e.g. SQS on an emulator, Lambda on AWS).",
    )


class DynamoStateConfig(_Frozen):
    """A DynamoDB lease table shared by several replicas (stream mappings); spec/LEASES.md."""

    table: str = Field(
        min_length=3, max_length=255, pattern=r"^[a-zA-Z0-9_.-]+$", description="Lease table name (one per deployment)."
    )
    create: bool = Field(True, description="Create the table (on-demand billing) when it is missing.")
    failover_time: float = Field(
        10.0,
        ge=1,
        le=600,
        description="Seconds without a counter change after which another replica may take a lease "
        "(judged on each replica's own monotonic clock). Leases are renewed every failover_time/3.",
    )
    balance_interval: float | None = Field(
        None,
        gt=0,
        le=3600,
        description="Seconds between balance rounds (scan, take, steal); default failover_time / 2 (KCL: "
        "2 × failover_time, which makes its failover 20–40 s). Jittered ±10 % per replica.",
    )
    max_steal_per_round: int = Field(
        5, ge=1, le=1000, description="Leases one replica may steal from the most loaded one per round (KCL: 1)."
    )
    max_leases_per_replica: int | None = Field(None, ge=1, description="Never hold more leases than this.")


class StateConfig(_Frozen):
    """Where stream checkpoints live (used by Kinesis and DynamoDB Streams mappings)."""

    sqlite: str | None = Field("./esm-state.db", description="Embedded SQLite file for one replica.")
    dynamodb: DynamoStateConfig | None = Field(None, description="DynamoDB lease table for several replicas.")


class RetryDelayConfig(_Frozen):
    """Backoff between retries of a failed stream batch (AWS does not document its schedule, ESM-SPEC.md §4.2)."""

    initial: float = Field(1.0, gt=0, le=3600, description="Seconds before the first retry.")
    multiplier: float = Field(2.0, ge=1, le=10, description="Each further retry waits this many times longer.")
    maximum: float = Field(60.0, gt=0, le=3600, description="The longest wait between two retries, seconds.")


class StreamsConfig(_Frozen):
    """How Kinesis and DynamoDB Streams mappings poll and retry (esm's own settings; AWS has none)."""

    idle_poll_interval: float | None = Field(
        None,
        ge=0,
        le=60,
        description="Seconds between GetRecords calls on a shard that has returned no record for a second or "
        "more; default as Lambda: 1 s for Kinesis, 0.25 s for DynamoDB Streams. A shard that returned records "
        "within the last second is read again as soon as the per-shard read limit allows (Kinesis 5 calls/s, "
        "DynamoDB Streams 4 calls/s).",
    )
    max_idle_polls_per_second: float = Field(
        30.0,
        ge=0,
        le=100_000,
        description="At most this many GetRecords calls per second on the idle shards of one mapping "
        "together: each call costs 1.5–2.5 ms of CPU in botocore, empty or not, so with more shards each "
        "idle shard waits shards / this many seconds instead of idle_poll_interval (1,000 shards: about "
        "33 s) and idle CPU stays under 10 % of a core; busy shards are not slowed. 0: no cap.",
    )
    discovery_interval: float = Field(
        30.0, gt=0, le=3600, description="Seconds between shard listings (new shards after a reshard)."
    )
    retry_delay: RetryDelayConfig = Field(
        default_factory=RetryDelayConfig,
        description="Backoff between retries of a batch the function failed (also throttles and service errors).",
    )
    destination_retry_delay: RetryDelayConfig = Field(
        default_factory=RetryDelayConfig,
        description="Backoff between attempts to deliver a failure record to the on-failure destination; the "
        "shard waits (and is not checkpointed past those records) until delivery succeeds.",
    )
    window_close_delay: float = Field(
        5.0,
        ge=0,
        le=120,
        description="Tumbling windows: seconds after a window's end before it is closed (final invocation) "
        "when no later record arrived, counted from a read that found the shard caught up. Covers records "
        "that arrive late with an earlier timestamp; AWS waits up to 120 s.",
    )


class HttpConfig(_Frozen):
    """The observability server: /metrics, /healthz and /readyz."""

    listen: str = Field("127.0.0.1:9100", description="HOST:PORT to bind; PORT 0 picks a free port.")

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("must be HOST:PORT, for example 127.0.0.1:9100 or 0.0.0.0:9100")
        if ":" in host and not (host.startswith("[") and host.endswith("]")):
            raise ValueError("an IPv6 address goes in brackets: [ADDRESS]:PORT, for example [::1]:9100")
        return value

    @property
    def host(self) -> str:
        """The address to bind, without IPv6 brackets."""
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        """The port to bind (0: any free port)."""
        return int(self.listen.rpartition(":")[2])


class MetricsExportConfig(_Frozen):
    """What esm reads from AWS only to export it as metrics."""

    queue_attributes_interval: float = Field(
        30.0,
        ge=0,
        le=3600,
        description="Seconds between two GetQueueAttributes calls per SQS mapping for the queue's visible, "
        "in-flight and delayed message counts (esm_sqs_queue_messages); 0 turns them off.",
    )


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


class ReloadConfig(_Frozen):
    """Hot reload: SIGHUP, or a change of the configuration file, applies the new file per mapping."""

    watch: bool = Field(
        True,
        description="Poll the configuration file's content and reload when it changes (a Kubernetes "
        "ConfigMap's atomic `..data` symlink swap included). SIGHUP reloads either way.",
    )
    interval: float = Field(
        2.0, gt=0, le=3600, description="Seconds between two checks of the configuration file's content."
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
    role: str | None = Field(
        None,
        description="The function's execution role ARN, shown to Kinesis handlers as `invokeIdentityArn` "
        "(default arn:aws:iam::ACCOUNT:role/esm, ACCOUNT being the stream's).",
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
        if value is not None and not _HTTP_URL.match(value):
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


class DevStream(_Frozen):
    """A Kinesis stream `esm dev` creates."""

    shards: int = Field(1, ge=1, le=100, description="Number of shards.")


class DevTable(_Frozen):
    """A DynamoDB table with a stream that `esm dev` creates (string keys)."""

    partition_key: str = Field("pk", description="Partition key attribute name (type S).")
    sort_key: str | None = Field(None, description="Optional sort key attribute name (type S).")
    stream_view_type: Literal["KEYS_ONLY", "NEW_IMAGE", "OLD_IMAGE", "NEW_AND_OLD_IMAGES"] = Field(
        "NEW_AND_OLD_IMAGES", description="What the table's stream records carry."
    )


class DevConfig(_Frozen):
    """Resources `esm dev` creates on its embedded emulator besides those the mappings name."""

    port: int = Field(0, ge=0, le=65535, description="Emulator port on 127.0.0.1 (0: the endpoint's port or any).")
    queues: dict[str, DevQueue] = Field(default_factory=dict, description="Queue name -> attributes.")
    streams: dict[str, DevStream] = Field(default_factory=dict, description="Kinesis stream name -> settings.")
    tables: dict[str, DevTable] = Field(default_factory=dict, description="DynamoDB table name -> keys and stream.")


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
    def tumbling_window(self) -> int:
        """TumblingWindowInSeconds with its default of 0 (no window)."""
        return self.TumblingWindowInSeconds or 0

    @property
    def report_batch_item_failures(self) -> bool:
        """True when the function's partial batch responses are honoured."""
        return "ReportBatchItemFailures" in self.FunctionResponseTypes

    @property
    def filter_patterns(self) -> list[str]:
        """The FilterCriteria patterns (ORed); empty when the mapping has no filters."""
        return [f.Pattern for f in self.FilterCriteria.Filters] if self.FilterCriteria is not None else []

    @property
    def on_failure_destination(self) -> str | None:
        """DestinationConfig.OnFailure.Destination, or None when unset or empty (AWS's way to remove it)."""
        if self.DestinationConfig is None or self.DestinationConfig.OnFailure is None:
            return None
        return self.DestinationConfig.OnFailure.Destination or None

    @property
    def starting_position(self) -> str:
        """StartingPosition (required for streams; validated by the rules)."""
        return self.StartingPosition or "LATEST"

    @property
    def parallelization_factor(self) -> int:
        """ParallelizationFactor with its default of 1."""
        return self.ParallelizationFactor or 1

    @property
    def maximum_retry_attempts(self) -> int:
        """MaximumRetryAttempts with its default of -1 (retry until the records expire)."""
        return -1 if self.MaximumRetryAttempts is None else self.MaximumRetryAttempts

    @property
    def maximum_record_age(self) -> int:
        """MaximumRecordAgeInSeconds with its default of -1 (no limit)."""
        return -1 if self.MaximumRecordAgeInSeconds is None else self.MaximumRecordAgeInSeconds

    @property
    def bisect_on_function_error(self) -> bool:
        """BisectBatchOnFunctionError with its default of false."""
        return bool(self.BisectBatchOnFunctionError)

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
    metrics: MetricsExportConfig = Field(
        default_factory=MetricsExportConfig, description="Queue attributes polled for metrics."
    )
    reload: ReloadConfig = Field(
        default_factory=ReloadConfig, description="Hot reload on SIGHUP and on a change of the file."
    )
    streams: StreamsConfig = Field(
        default_factory=StreamsConfig, description="Polling and retry delays of Kinesis and DynamoDB Streams mappings."
    )
    functions: dict[str, FunctionConfig] = Field(default_factory=dict, description="Targets by name.")
    event_source_mappings: list[MappingConfig] = Field(
        default_factory=list, description="The mappings, with CreateEventSourceMapping's parameter names."
    )
    filters_per_mapping: int = Field(
        5,
        ge=1,
        le=10,
        description="Most FilterCriteria filters a mapping may have: AWS's default quota is 5, raisable to 10.",
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

    @property
    def sqlite_path(self) -> Path | None:
        """The SQLite checkpoint file; a relative `state.sqlite` is resolved against the config file's folder."""
        if self.spec.state.sqlite is None:
            return None
        path = Path(self.spec.state.sqlite).expanduser()
        return path if path.is_absolute() else self.base_dir / path

    def function_for(self, mapping: MappingConfig) -> tuple[str, FunctionConfig]:
        """The target of a mapping: its `functions` entry, or an implicit AWS Lambda target."""
        fn = self.spec.functions.get(mapping.FunctionName)
        if fn is not None:
            return mapping.FunctionName, fn
        return mapping.FunctionName, FunctionConfig.model_validate({"lambda": mapping.FunctionName})


# --------------------------------------------------------------------------------------------
# loading


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the configuration file, for editor completion (`esm schema`)."""
    schema = ConfigFile.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "esm configuration file"
    return schema
