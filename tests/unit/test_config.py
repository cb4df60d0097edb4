"""The configuration file: every rule of DESIGN.md §2 and ESM-SPEC.md §1.1, with the exact texts.

Each invalid case names the exact `path: reason` lines `esm validate` prints (after `FILE: `), in
order. Texts that AWS itself returns (ValidationException, InvalidParameterValueException,
ResourceConflictException) are AWS's, so a user who knows the API recognises them.
"""

from __future__ import annotations

import textwrap
import uuid
from pathlib import Path

import pytest
from pydantic import ValidationError

from esm.arns import SourceKind
from esm.config import (
    Config,
    ConfigError,
    ConfigFile,
    FunctionConfig,
    HttpConfig,
    Problem,
    check_visibility_timeout,
    json_schema,
    load_config,
    parse_config,
)

QUEUE = "arn:aws:sqs:us-east-1:123456789012:orders"
FIFO_QUEUE = "arn:aws:sqs:us-east-1:123456789012:orders.fifo"
STREAM = "arn:aws:kinesis:us-east-1:123456789012:stream/clicks"
DDB_STREAM = "arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2024-01-01T00:00:00.000"
# The UUID derived from (QUEUE, "orders"). It names checkpoints, metrics labels and failure
# records, so it must never change between releases: this literal pins it.
ORDERS_UUID = "960f090e-5754-5c27-adab-fa8ef4211115"
GIVEN_UUID = "6f9a0e53-5d8e-4e3b-9a57-3f2c1d0b4a11"

FUNCTIONS = """\
functions:
  orders: {handler: handlers.orders:handle}
"""


def sqs_mapping(*params: str, arn: str = QUEUE, function: str = "orders") -> str:
    """A configuration with the `orders` handler and one mapping with extra `Key: value` lines."""
    extra = "".join(f"    {p}\n" for p in params)
    return f"{FUNCTIONS}event_source_mappings:\n  - EventSourceArn: {arn}\n    FunctionName: {function}\n{extra}"


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    """The `path: reason` lines for a configuration text (an empty list when it is valid)."""
    try:
        parse_config(textwrap.dedent(text), "c.yaml", {} if env is None else env)
    except ConfigError as exc:
        return [f"{p.path}: {p.reason}" for p in exc.problems]
    return []


def parse(text: str, env: dict[str, str] | None = None) -> ConfigFile:
    """A valid configuration text, parsed with an explicit environment."""
    return parse_config(textwrap.dedent(text), "c.yaml", {} if env is None else env)


def aws_min(member: str, value: int, lo: int) -> str:
    """AWS's ValidationException text for a value below the minimum."""
    return (
        f"1 validation error detected: Value '{value}' at '{member}' failed to satisfy constraint: "
        f"Member must have value greater than or equal to {lo}"
    )


def aws_max(member: str, value: int, hi: int) -> str:
    """AWS's ValidationException text for a value above the maximum."""
    return (
        f"1 validation error detected: Value '{value}' at '{member}' failed to satisfy constraint: "
        f"Member must have value less than or equal to {hi}"
    )


M0 = "event_source_mappings.0"
WINDOW_REQUIRED = "Maximum batch window in seconds must be greater than 0 if maximum batch size is greater than 10"
LISTEN = "must be HOST:PORT, for example 127.0.0.1:9100 or 0.0.0.0:9100"
ONE_TARGET = "exactly one of `handler`, `lambda` or `url` is required"
FUNCTION_NAME = (
    "must be a Lambda function name (at most 64 characters of letters, digits, '-' and '_'), "
    "a partial ARN (ACCOUNT:function:NAME) or a function ARN"
)
SOURCE_ARN = (
    "must be the ARN of an SQS queue, a Kinesis stream or a DynamoDB stream "
    "(arn:aws:sqs:REGION:ACCOUNT:QUEUE, arn:aws:kinesis:REGION:ACCOUNT:stream/NAME, "
    "arn:aws:dynamodb:REGION:ACCOUNT:table/TABLE/stream/LABEL)"
)

INVALID = [
    # --- the file itself ---------------------------------------------------------------------
    pytest.param(
        "aws:\n  region: [us-east-1\nhttp: {}\n",
        ["line 3, column 5: invalid YAML: expected ',' or ']', but got ':'"],
        id="yaml-syntax-error",
    ),
    pytest.param(
        "aws:\n\tregion: us-east-1\n",
        ["line 2, column 1: invalid YAML: found character '\\t' that cannot start any token"],
        id="yaml-tab-indentation",
    ),
    pytest.param("- aws\n- http\n", ["<root>: the file must be a YAML mapping of sections"], id="root-is-a-list"),
    pytest.param("just text\n", ["<root>: the file must be a YAML mapping of sections"], id="root-is-a-scalar"),
    pytest.param("awz: {region: us-east-1}\n", ["awz: Extra inputs are not permitted"], id="unknown-top-level-key"),
    pytest.param("aws: {regoin: us-east-1}\n", ["aws.regoin: Extra inputs are not permitted"], id="unknown-aws-key"),
    # --- mapping structure -------------------------------------------------------------------
    pytest.param(
        sqs_mapping("Batchsize: 5"), [f"{M0}.Batchsize: Extra inputs are not permitted"], id="unknown-mapping-key"
    ),
    pytest.param(
        f"{FUNCTIONS}event_source_mappings:\n  - FunctionName: orders\n",
        [f"{M0}.EventSourceArn: Field required"],
        id="missing-event-source-arn",
    ),
    pytest.param(
        f"{FUNCTIONS}event_source_mappings:\n  - EventSourceArn: {QUEUE}\n",
        [f"{M0}.FunctionName: Field required"],
        id="missing-function-name",
    ),
    pytest.param(
        sqs_mapping(arn="arn:aws:s3:::orders-bucket"), [f"{M0}.EventSourceArn: {SOURCE_ARN}"], id="arn-not-a-source"
    ),
    pytest.param(
        sqs_mapping(arn="arn:aws:sqs:us-east-1:123456789012:orders.queue"),
        [f"{M0}.EventSourceArn: 'orders.queue' is not a valid SQS queue name"],
        id="invalid-queue-name",
    ),
    pytest.param(
        "event_source_mappings:\n  - orders\n",
        [f"{M0}: must be a mapping of keys to values, not a string"],
        id="mapping-not-a-mapping",
    ),
    pytest.param(
        "event_source_mappings:\n", ["event_source_mappings: Input should be a valid list"], id="mappings-not-a-list"
    ),
    # --- BatchSize and the batching window (AWS texts) ---------------------------------------
    pytest.param(sqs_mapping("BatchSize: 0"), [f"{M0}.BatchSize: {aws_min('batchSize', 0, 1)}"], id="batch-size-0"),
    pytest.param(
        sqs_mapping("BatchSize: 10001"),
        [f"{M0}.BatchSize: {aws_max('batchSize', 10001, 10000)}"],
        id="batch-size-10001",
    ),
    pytest.param(
        sqs_mapping("BatchSize: 11"),
        [f"{M0}.MaximumBatchingWindowInSeconds: {WINDOW_REQUIRED}"],
        id="batch-size-11-without-window",
    ),
    pytest.param(
        sqs_mapping("BatchSize: ten"),
        [f"{M0}.BatchSize: Input should be a valid integer, unable to parse string as an integer"],
        id="batch-size-not-a-number",
    ),
    pytest.param(
        sqs_mapping("MaximumBatchingWindowInSeconds: 301"),
        [f"{M0}.MaximumBatchingWindowInSeconds: {aws_max('maximumBatchingWindowInSeconds', 301, 300)}"],
        id="window-301",
    ),
    pytest.param(
        sqs_mapping("MaximumBatchingWindowInSeconds: -1"),
        [f"{M0}.MaximumBatchingWindowInSeconds: {aws_min('maximumBatchingWindowInSeconds', -1, 0)}"],
        id="window-negative",
    ),
    # --- FIFO queues ---------------------------------------------------------------------------
    pytest.param(
        sqs_mapping("BatchSize: 11", arn=FIFO_QUEUE),
        [
            f"{M0}.MaximumBatchingWindowInSeconds: {WINDOW_REQUIRED}",
            f"{M0}.BatchSize: Maximum batch size must be between 1 and 10 inclusive for FIFO queues",
        ],
        id="fifo-batch-size-11",
    ),
    pytest.param(
        sqs_mapping("MaximumBatchingWindowInSeconds: 5", arn=FIFO_QUEUE),
        [f"{M0}.MaximumBatchingWindowInSeconds: Batching window is not supported for FIFO queues"],
        id="fifo-window",
    ),
    # --- ScalingConfig ---------------------------------------------------------------------------
    pytest.param(
        sqs_mapping("ScalingConfig: {MaximumConcurrency: 1}"),
        [f"{M0}.ScalingConfig.MaximumConcurrency: {aws_min('scalingConfig.maximumConcurrency', 1, 2)}"],
        id="maximum-concurrency-1",
    ),
    pytest.param(
        sqs_mapping("ScalingConfig: {MaximumConcurrency: 1001}"),
        [f"{M0}.ScalingConfig.MaximumConcurrency: {aws_max('scalingConfig.maximumConcurrency', 1001, 1000)}"],
        id="maximum-concurrency-1001",
    ),
    # --- parameters that do not apply to SQS ---------------------------------------------------
    pytest.param(
        sqs_mapping(
            "StartingPosition: LATEST",
            "StartingPositionTimestamp: 1700000000",
            "ParallelizationFactor: 2",
            "MaximumRetryAttempts: 2",
            "MaximumRecordAgeInSeconds: 60",
            "BisectBatchOnFunctionError: true",
            "TumblingWindowInSeconds: 30",
        ),
        [
            f"{M0}.{name}: {name} is not valid for SQS event sources."
            for name in (
                "StartingPosition",
                "StartingPositionTimestamp",
                "ParallelizationFactor",
                "MaximumRetryAttempts",
                "MaximumRecordAgeInSeconds",
                "BisectBatchOnFunctionError",
                "TumblingWindowInSeconds",
            )
        ],
        id="stream-only-parameters-on-sqs",
    ),
    pytest.param(
        sqs_mapping("DestinationConfig: {OnFailure: {Destination: 'arn:aws:sqs:us-east-1:123456789012:failed'}}"),
        [
            f"{M0}.DestinationConfig: Unsupported DestinationConfig parameter for given event source mapping type. "
            "(SQS failures go to the queue's redrive policy / dead-letter queue.)"
        ],
        id="destination-config-on-sqs",
    ),
    pytest.param(
        sqs_mapping("""FilterCriteria: {Filters: [{Pattern: '{"body": {"kind": "order"}}'}]}"""),
        [
            f"{M0}.FilterCriteria.Filters.0.Pattern: Invalid filter pattern definition. "
            '(body.kind: must be an object or an array of values, not the string "order")'
        ],
        id="filter-pattern-value-not-an-array",
    ),
    pytest.param(
        sqs_mapping("FunctionResponseTypes: [ReportItemFailures]"),
        [f"{M0}.FunctionResponseTypes.0: Input should be 'ReportBatchItemFailures'"],
        id="function-response-type-unknown",
    ),
    # --- identity: duplicates and UUIDs ----------------------------------------------------------
    pytest.param(
        f"""{FUNCTIONS}event_source_mappings:
  - EventSourceArn: {QUEUE}
    FunctionName: orders
  - EventSourceArn: {QUEUE}
    FunctionName: orders
    BatchSize: 5
""",
        [
            f'event_source_mappings.1: An event source mapping with SQS arn (" {QUEUE} ") and function '
            f'(" orders ") already exists. Please update or delete the existing mapping with UUID {ORDERS_UUID}'
        ],
        id="duplicate-mapping",
    ),
    pytest.param(
        f"""{FUNCTIONS}event_source_mappings:
  - EventSourceArn: {QUEUE}
    FunctionName: orders
    UUID: {GIVEN_UUID}
  - EventSourceArn: {FIFO_QUEUE}
    FunctionName: orders
    UUID: {GIVEN_UUID}
""",
        [f"event_source_mappings.1.UUID: UUID {GIVEN_UUID} is also used by event_source_mappings.0"],
        id="duplicate-explicit-uuid",
    ),
    pytest.param(
        sqs_mapping("UUID: orders-mapping"),
        [f"{M0}.UUID: must be a UUID, for example 6f9a0e53-5d8e-4e3b-9a57-3f2c1d0b4a11"],
        id="invalid-uuid",
    ),
    # --- functions -------------------------------------------------------------------------------
    pytest.param("functions:\n  orders: {timeout: 3}\n", [f"functions.orders: {ONE_TARGET}"], id="function-no-target"),
    pytest.param(
        "functions:\n  orders: {handler: 'handlers.orders:handle', url: 'http://orders.local/invoke'}\n",
        [f"functions.orders: {ONE_TARGET} (found handler, url)"],
        id="function-two-targets",
    ),
    pytest.param(
        "functions:\n  orders:\n",
        ["functions.orders: must be a mapping of keys to values, not empty"],
        id="function-empty",
    ),
    pytest.param(
        "functions:\n  orders: {handler: handlers.orders.handle}\n",
        ["functions.orders.handler: must be `module:function`, for example handlers.orders:handle"],
        id="handler-without-colon",
    ),
    pytest.param(
        "functions:\n  orders: {url: 'ftp://orders.local/invoke'}\n",
        ["functions.orders.url: must be an http:// or https:// URL"],
        id="url-not-http",
    ),
    pytest.param(
        "functions:\n  billing: {lambda: 'arn:aws:lambda:us-east-1:1234:function:billing'}\n",
        [f"functions.billing.lambda: {FUNCTION_NAME}"],
        id="lambda-target-bad-arn",
    ),
    pytest.param(
        "functions:\n  orders: {handler: 'handlers.orders:handle', timeout: 0}\n",
        ["functions.orders.timeout: Input should be greater than 0"],
        id="timeout-0",
    ),
    pytest.param(
        "functions:\n  orders: {handler: 'handlers.orders:handle', timeout: 901}\n",
        ["functions.orders.timeout: Input should be less than or equal to 900"],
        id="timeout-901",
    ),
    pytest.param(
        sqs_mapping(function="'orders service'"),
        [f"{M0}.FunctionName: {FUNCTION_NAME} (or the name of an entry of `functions`)"],
        id="function-name-invalid-and-not-in-functions",
    ),
    # --- environment variables -------------------------------------------------------------------
    pytest.param(
        "functions:\n  audit:\n    url: http://audit.local/invoke\n    headers: {Authorization: 'Bearer ${TOKEN}'}\n",
        ["functions.audit.headers.Authorization: environment variable TOKEN is not set"],
        id="unset-environment-variable",
    ),
    # --- stream sources ------------------------------------------------------------------------
    pytest.param(
        sqs_mapping("BatchSize: 10", arn=STREAM),
        [
            f"{M0}.StartingPosition: 1 validation error detected: Value null at 'startingPosition' failed to "
            "satisfy constraint: Member must not be null",
        ],
        id="kinesis-source-without-starting-position",
    ),
    pytest.param(
        sqs_mapping(
            "StartingPosition: AT_TIMESTAMP", "BatchSize: 10", "ScalingConfig: {MaximumConcurrency: 5}", arn=DDB_STREAM
        ),
        [
            f"{M0}.ScalingConfig: ScalingConfig is only supported for SQS event sources.",
            f"{M0}.StartingPosition: Unsupported starting position for DynamoDB stream: AT_TIMESTAMP",
        ],
        id="dynamodb-streams-source",
    ),
    pytest.param(
        sqs_mapping("StartingPosition: AT_TIMESTAMP", arn=STREAM),
        [f"{M0}.StartingPositionTimestamp: StartingPositionTimestamp must be set with StartingPosition AT_TIMESTAMP"],
        id="at-timestamp-without-timestamp",
    ),
    pytest.param(
        sqs_mapping("StartingPosition: LATEST", "MaximumRecordAgeInSeconds: 59", arn=STREAM),
        [f"{M0}.MaximumRecordAgeInSeconds: MaximumRecordAgeInSeconds must be -1 (infinite) or between 60 and 604800"],
        id="record-age-below-60",
    ),
    pytest.param(
        sqs_mapping("StartingPosition: LATEST", "ParallelizationFactor: 11", arn=STREAM),
        [
            f"{M0}.ParallelizationFactor: 1 validation error detected: Value '11' at 'parallelizationFactor' failed "
            "to satisfy constraint: Member must have value less than or equal to 10"
        ],
        id="parallelization-factor-above-10",
    ),
    pytest.param(
        sqs_mapping("StartingPosition: LATEST", "MaximumRetryAttempts: -2", arn=STREAM),
        [
            f"{M0}.MaximumRetryAttempts: 1 validation error detected: Value '-2' at 'maximumRetryAttempts' failed "
            "to satisfy constraint: Member must have value greater than or equal to -1"
        ],
        id="retry-attempts-below-minus-one",
    ),
    pytest.param(
        sqs_mapping(
            "StartingPosition: LATEST",
            "DestinationConfig: {OnFailure: {Destination: 'arn:aws:sqs:us-east-1:123456789012:failed.fifo'}}",
            arn=STREAM,
        ),
        [
            f"{M0}.DestinationConfig.OnFailure.Destination: FIFO queues and topics are not supported as "
            "on-failure destinations (ESM-SPEC.md §4.3)"
        ],
        id="fifo-destination",
    ),
    pytest.param(
        sqs_mapping(
            "StartingPosition: LATEST",
            "DestinationConfig: {OnFailure: {Destination: 'arn:aws:lambda:us-east-1:123456789012:function:f'}}",
            arn=STREAM,
        ),
        [
            f"{M0}.DestinationConfig.OnFailure.Destination: must be the ARN of an SQS queue, an SNS topic or an "
            "S3 bucket"
        ],
        id="destination-not-sqs-sns-s3",
    ),
    pytest.param(
        sqs_mapping("StartingPosition: LATEST", "TumblingWindowInSeconds: 60", "ParallelizationFactor: 2", arn=STREAM),
        [
            f"{M0}.ParallelizationFactor: TumblingWindowInSeconds requires ParallelizationFactor 1: the window "
            "state is passed from one invocation to the next, one batch at a time per shard"
        ],
        id="tumbling-window-parallel",
    ),
    pytest.param(
        sqs_mapping("StartingPosition: LATEST", "TumblingWindowInSeconds: 901", arn=STREAM),
        [
            f"{M0}.TumblingWindowInSeconds: 1 validation error detected: Value '901' at 'tumblingWindowInSeconds' "
            "failed to satisfy constraint: Member must have value less than or equal to 900"
        ],
        id="tumbling-window-too-long",
    ),
    pytest.param(
        "state: {sqlite: null}\n" + sqs_mapping("StartingPosition: LATEST", arn=STREAM),
        [
            "state.sqlite: Kinesis and DynamoDB Streams mappings need a checkpoint store: set state.sqlite (one "
            "replica) or state.dynamodb (several replicas)"
        ],
        id="stream-without-state",
    ),
    pytest.param(
        "state: {dynamodb: {table: 'no spaces', failover_time: 0.5, max_steal_per_round: 0}}\n",
        [
            "state.dynamodb.table: String should match pattern '^[a-zA-Z0-9_.-]+$'",
            "state.dynamodb.failover_time: Input should be greater than or equal to 1",
            "state.dynamodb.max_steal_per_round: Input should be greater than or equal to 1",
        ],
        id="dynamodb-state-bad-values",
    ),
    # --- other sections --------------------------------------------------------------------------
    pytest.param("http: {listen: localhost}\n", [f"http.listen: {LISTEN}"], id="http-listen-without-port"),
    pytest.param("http: {listen: ':9100'}\n", [f"http.listen: {LISTEN}"], id="http-listen-without-host"),
    pytest.param("http: {listen: '0.0.0.0:65536'}\n", [f"http.listen: {LISTEN}"], id="http-listen-port-too-large"),
    pytest.param(
        "dev: {queues: {orders: {VisibilityTimeout: 43201}}}\n",
        ["dev.queues.orders.VisibilityTimeout: Input should be less than or equal to 43200"],
        id="dev-queue-visibility-timeout",
    ),
    # --- several problems in one file ------------------------------------------------------------
    pytest.param(
        f"""{FUNCTIONS}event_source_mappings:
  - EventSourceArn: arn:aws:sqs:us-east-1:123456789012:a
    FunctionName: orders
    BatchSize: 0
  - EventSourceArn: arn:aws:sqs:us-east-1:123456789012:b
    FunctionName: orders
    BatchSize: 50
  - EventSourceArn: arn:aws:sqs:us-east-1:123456789012:c.fifo
    FunctionName: orders
    MaximumBatchingWindowInSeconds: 2
  - EventSourceArn: arn:aws:sqs:us-east-1:123456789012:d
    FunctionName: missing function
http: {{listen: nowhere}}
""",
        [
            f"http.listen: {LISTEN}",
            f"event_source_mappings.0.BatchSize: {aws_min('batchSize', 0, 1)}",
            f"event_source_mappings.1.MaximumBatchingWindowInSeconds: {WINDOW_REQUIRED}",
            "event_source_mappings.2.MaximumBatchingWindowInSeconds: Batching window is not supported for FIFO queues",
            f"event_source_mappings.3.FunctionName: {FUNCTION_NAME} (or the name of an entry of `functions`)",
        ],
        id="several-problems-all-reported",
    ),
    pytest.param(
        """\
functions:
  audit: {url: 'http://audit.local/invoke', headers: {X-Token: '${TOKEN}'}}
  orders: {handler: 'handlers.orders:handle', timeout: 0}
""",
        [
            "functions.audit.headers.X-Token: environment variable TOKEN is not set",
            "functions.orders.timeout: Input should be greater than 0",
        ],
        id="environment-and-structure-problems-together",
    ),
]


class TestInvalidConfigurations:
    """Every invalid configuration is rejected with exact, complete `path: reason` lines."""

    def test_the_table_covers_at_least_thirty_cases(self) -> None:
        """The invalid-configuration table stays a broad specification (at least 30 named cases)."""
        assert len(INVALID) >= 30

    @pytest.mark.parametrize(("text", "expected"), INVALID)
    def test_reports_every_problem_exactly(self, text: str, expected: list[str]) -> None:
        """The configuration is rejected with exactly these problems, in this order.

        Structural problems come first, in the order of the file's sections and fields, then the
        cross-field rules of each mapping.
        """
        assert problems(text) == expected

    def test_error_lines_are_file_path_reason(self) -> None:
        """ConfigError formats each problem as `FILE: path: reason`, the line `esm validate` prints."""
        with pytest.raises(ConfigError) as info:
            parse_config(sqs_mapping("BatchSize: 0", "UUID: x"), "conf/app.yaml", {})
        assert info.value.file == "conf/app.yaml"
        assert info.value.lines() == [
            f"conf/app.yaml: {M0}.UUID: must be a UUID, for example 6f9a0e53-5d8e-4e3b-9a57-3f2c1d0b4a11",
            f"conf/app.yaml: {M0}.BatchSize: {aws_min('batchSize', 0, 1)}",
        ]
        assert str(info.value) == "\n".join(info.value.lines())

    def test_function_problems_reported_alongside_structural_problems(self) -> None:
        """A function with two targets is reported even when a mapping also fails structural validation."""
        text = (
            "functions:\n  orders: {handler: 'handlers.orders:handle', url: 'http://orders.local/'}\n"
            f"event_source_mappings:\n  - EventSourceArn: {QUEUE}\n    FunctionName: orders\n    BatchSize: 0\n"
        )
        assert problems(text) == [
            f"{M0}.BatchSize: {aws_min('batchSize', 0, 1)}",
            f"functions.orders: {ONE_TARGET} (found handler, url)",
        ]

    def test_deeply_nested_yaml_is_a_problem_not_a_crash(self) -> None:
        """Pathologically nested YAML is reported as a ConfigError instead of crashing `esm validate`."""
        with pytest.raises(ConfigError):
            parse_config("aws: " + "[" * 5000 + "]" * 5000 + "\n", "c.yaml", {})


class TestDefaults:
    """Omitted parameters take AWS's per-source defaults (ESM-SPEC.md §1.1) and DESIGN.md's sections."""

    def test_an_empty_file_is_a_valid_configuration(self) -> None:
        """An empty file gives every section its default and no mappings."""
        spec = parse("")
        assert spec.event_source_mappings == []
        assert spec.functions == {}
        assert spec.aws.region is None
        assert spec.aws.endpoint_url is None
        assert spec.http.listen == "127.0.0.1:9100"
        assert spec.state.sqlite == "./esm-state.db"
        assert spec.state.dynamodb is None
        assert spec.shutdown.grace_period == 25.0
        assert spec.dev.port == 0

    def test_sqs_mapping_defaults(self) -> None:
        """An SQS mapping defaults to BatchSize 10, no window, enabled, whole-batch failures, automatic scaling."""
        m = parse(sqs_mapping()).event_source_mappings[0]
        assert m.BatchSize is None
        assert m.batch_size == 10
        assert m.batching_window == 0
        assert m.Enabled is True
        assert m.report_batch_item_failures is False
        assert m.maximum_concurrency is None
        assert m.source.kind is SourceKind.SQS
        assert m.source.queue_name == "orders"
        assert m.source.is_fifo is False

    def test_fifo_mapping_defaults_to_batch_size_10(self) -> None:
        """A FIFO queue mapping defaults to BatchSize 10 and is recognised as FIFO."""
        m = parse(sqs_mapping(arn=FIFO_QUEUE)).event_source_mappings[0]
        assert m.batch_size == 10
        assert m.source.is_fifo is True

    def test_configured_values_are_kept(self) -> None:
        """Configured parameters override the defaults."""
        m = parse(
            sqs_mapping(
                "BatchSize: 500",
                "MaximumBatchingWindowInSeconds: 20",
                "FunctionResponseTypes: [ReportBatchItemFailures]",
                "ScalingConfig: {MaximumConcurrency: 2}",
                "Enabled: false",
            )
        ).event_source_mappings[0]
        assert (m.batch_size, m.batching_window, m.maximum_concurrency) == (500, 20, 2)
        assert m.report_batch_item_failures is True
        assert m.Enabled is False

    def test_batch_size_limits_are_inclusive(self) -> None:
        """BatchSize 1, and 10,000 with a window, and a window of 300 are accepted (AWS's inclusive ranges)."""
        assert problems(sqs_mapping("BatchSize: 1")) == []
        assert problems(sqs_mapping("BatchSize: 10000", "MaximumBatchingWindowInSeconds: 300")) == []
        assert problems(sqs_mapping("BatchSize: 10", arn=FIFO_QUEUE)) == []
        assert problems(sqs_mapping("ScalingConfig: {MaximumConcurrency: 1000}")) == []

    def test_stream_default_batch_size_needs_no_window(self) -> None:
        """A stream mapping without BatchSize (default 100) needs no batching window, as in AWS."""
        assert problems(sqs_mapping("StartingPosition: LATEST", arn=STREAM)) == []

    def test_models_are_frozen(self) -> None:
        """The parsed configuration cannot be changed after loading."""
        m = parse(sqs_mapping()).event_source_mappings[0]
        with pytest.raises(ValidationError):
            m.BatchSize = 5  # type: ignore[misc]

    def test_http_listen_host_and_port(self) -> None:
        """http.listen splits into the host to bind (IPv6 brackets removed) and the port."""
        assert (HttpConfig(listen="0.0.0.0:9100").host, HttpConfig(listen="0.0.0.0:9100").port) == ("0.0.0.0", 9100)
        v6 = HttpConfig(listen="[::1]:0")
        assert (v6.host, v6.port) == ("::1", 0)


class TestMappingUuid:
    """Each mapping has a stable UUID: configured, or derived deterministically from source and function."""

    def test_derived_uuid_is_pinned(self) -> None:
        """The derived UUID of a source and function never changes between releases (checkpoints use it)."""
        assert parse(sqs_mapping()).event_source_mappings[0].uuid == ORDERS_UUID

    def test_derived_uuid_is_the_same_on_every_load(self) -> None:
        """Loading the same mapping twice, with other settings changed, derives the same UUID."""
        first = parse(sqs_mapping()).event_source_mappings[0].uuid
        second = parse(sqs_mapping("BatchSize: 5", "Enabled: false")).event_source_mappings[0].uuid
        assert first == second
        assert uuid.UUID(first).version == 5

    def test_derived_uuid_depends_on_source_and_function(self) -> None:
        """Another queue or another function gives another UUID."""
        other_queue = parse(sqs_mapping(arn=FIFO_QUEUE)).event_source_mappings[0].uuid
        other_function = parse(sqs_mapping(function="billing")).event_source_mappings[0].uuid
        assert len({ORDERS_UUID, other_queue, other_function}) == 3

    def test_configured_uuid_is_kept(self) -> None:
        """A configured UUID is used as given."""
        m = parse(sqs_mapping(f"UUID: {GIVEN_UUID}")).event_source_mappings[0]
        assert m.UUID == GIVEN_UUID
        assert m.uuid == GIVEN_UUID

    def test_same_queue_for_two_functions_is_allowed(self) -> None:
        """One queue mapped to two different functions is not a duplicate (AWS allows it)."""
        text = (
            "functions:\n  orders: {handler: 'handlers.orders:handle'}\n  audit: {url: 'http://audit.local/'}\n"
            f"event_source_mappings:\n  - {{EventSourceArn: {QUEUE}, FunctionName: orders}}\n"
            f"  - {{EventSourceArn: {QUEUE}, FunctionName: audit}}\n"
        )
        mappings = parse(text).event_source_mappings
        assert mappings[0].uuid != mappings[1].uuid


class TestEnvironmentExpansion:
    """`${VAR}` and `${VAR:-default}` are expanded in every value, and `$$` is a literal `$`."""

    AUDIT = "functions:\n  audit:\n    url: http://audit.local/invoke\n    headers: {{Authorization: '{value}'}}\n"

    def header(self, value: str, env: dict[str, str]) -> str:
        """The Authorization header of the audit function after expansion of `value`."""
        return parse(self.AUDIT.format(value=value), env).functions["audit"].headers["Authorization"]

    def test_set_variable_is_expanded(self) -> None:
        """A set variable replaces `${VAR}`."""
        assert self.header("Bearer ${TOKEN}", {"TOKEN": "s3cret"}) == "Bearer s3cret"

    def test_default_is_used_when_unset(self) -> None:
        """`${VAR:-default}` gives the default when VAR is not set, and VAR's value when it is."""
        assert self.header("Bearer ${TOKEN:-dev-token}", {}) == "Bearer dev-token"
        assert self.header("Bearer ${TOKEN:-dev-token}", {"TOKEN": "prod"}) == "Bearer prod"

    def test_empty_default_is_allowed(self) -> None:
        """`${VAR:-}` expands to an empty string when VAR is not set."""
        assert self.header("x${TOKEN:-}y", {}) == "xy"

    def test_double_dollar_is_a_literal_dollar(self) -> None:
        """`$$` is a literal `$`, so `$${VAR}` is the text `${VAR}`, not an expansion."""
        assert self.header("a$$b", {}) == "a$b"
        assert self.header("$${TOKEN}", {"TOKEN": "unused"}) == "${TOKEN}"

    def test_expanded_numbers_are_validated_as_numbers(self) -> None:
        """A variable in a numeric parameter is expanded before validation."""
        ok = parse(sqs_mapping("BatchSize: ${BATCH}"), {"BATCH": "7"}).event_source_mappings[0]
        assert ok.batch_size == 7
        assert problems(sqs_mapping("BatchSize: ${BATCH}"), {"BATCH": "0"}) == [
            f"{M0}.BatchSize: {aws_min('batchSize', 0, 1)}"
        ]

    def test_process_environment_is_the_default(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without an explicit environment, parse_config reads the process environment."""
        monkeypatch.setenv("ESM_TEST_TOKEN", "from-env")
        spec = parse_config(self.AUDIT.format(value="${ESM_TEST_TOKEN}"), "c.yaml")
        assert spec.functions["audit"].headers["Authorization"] == "from-env"


class TestFunctions:
    """Targets: in-process handlers, AWS Lambda functions and HTTP endpoints."""

    def test_each_target_kind(self) -> None:
        """Each function has exactly one kind, taken from the key that is set."""
        spec = parse(
            """\
            functions:
              orders: {handler: 'handlers.orders:handle', timeout: 30}
              billing: {lambda: 'arn:aws:lambda:us-east-1:123456789012:function:billing:live'}
              audit: {url: 'https://audit.local/invoke', timeout: 0.5}
            """
        )
        kinds = {name: fn.kind for name, fn in spec.functions.items()}
        assert kinds == {"orders": "handler", "billing": "lambda", "audit": "url"}
        assert spec.functions["billing"].lambda_ == "arn:aws:lambda:us-east-1:123456789012:function:billing:live"
        assert spec.functions["orders"].timeout == 30
        assert spec.functions["audit"].timeout == 0.5
        assert spec.functions["orders"].memory == 128

    def test_timeout_limits_are_inclusive(self) -> None:
        """A timeout of 900 seconds (Lambda's maximum) is accepted."""
        assert problems("functions:\n  orders: {handler: 'handlers.orders:handle', timeout: 900}\n") == []

    def test_listed_function_is_the_target(self, tmp_path: Path) -> None:
        """A FunctionName that names an entry of `functions` targets that entry."""
        spec = parse(sqs_mapping())
        config = Config(tmp_path / "esm.yaml", spec)
        name, fn = config.function_for(spec.event_source_mappings[0])
        assert name == "orders"
        assert fn is spec.functions["orders"]

    @pytest.mark.parametrize(
        "function_name",
        [
            "billing",
            "billing:live",
            "123456789012:function:billing",
            "arn:aws:lambda:us-east-1:123456789012:function:billing",
            "arn:aws:lambda:us-east-1:123456789012:function:billing:$LATEST",
        ],
    )
    def test_unlisted_function_is_an_implicit_lambda_target(self, tmp_path: Path, function_name: str) -> None:
        """A FunctionName not in `functions` is valid and invoked as an AWS Lambda function of that name."""
        spec = parse(sqs_mapping(function=f"'{function_name}'"))
        config = Config(tmp_path / "esm.yaml", spec)
        name, fn = config.function_for(spec.event_source_mappings[0])
        assert name == function_name
        assert fn.kind == "lambda"
        assert fn.lambda_ == function_name
        assert fn == FunctionConfig.model_validate({"lambda": function_name})


class TestVisibilityTimeout:
    """AWS's check that the function timeout fits in the queue's visibility timeout (ESM-SPEC.md §1.1)."""

    def test_function_timeout_above_visibility_timeout_is_rejected_with_aws_text(self) -> None:
        """A 300 s function on a 30 s queue gives AWS's InvalidParameterValueException text."""
        assert (
            check_visibility_timeout(30, 300)
            == "Queue visibility timeout: 30 seconds is less than Function timeout: 300 seconds"
        )

    def test_whole_float_timeouts_print_as_integers(self) -> None:
        """A timeout of 300.0 prints as 300, and a fractional one as itself."""
        assert check_visibility_timeout(30, 300.0) == (
            "Queue visibility timeout: 30 seconds is less than Function timeout: 300 seconds"
        )
        assert check_visibility_timeout(30, 30.5) == (
            "Queue visibility timeout: 30 seconds is less than Function timeout: 30.5 seconds"
        )

    def test_equal_or_smaller_function_timeout_is_accepted(self) -> None:
        """A function timeout equal to or below the visibility timeout passes."""
        assert check_visibility_timeout(30, 30) is None
        assert check_visibility_timeout(30, 3) is None


class TestLoadConfig:
    """load_config reads a file and reports unreadable files the same way as invalid ones."""

    def test_valid_file(self, tmp_path: Path) -> None:
        """A valid file loads, and handlers are imported from the file's folder."""
        path = tmp_path / "esm.yaml"
        path.write_text(sqs_mapping(), encoding="utf-8")
        config = load_config(path, env={})
        assert config.path == path
        assert config.base_dir == tmp_path.resolve()
        assert config.spec.event_source_mappings[0].uuid == ORDERS_UUID

    def test_missing_file(self, tmp_path: Path) -> None:
        """A missing file is one `<file>` problem naming the OS reason."""
        path = tmp_path / "missing.yaml"
        with pytest.raises(ConfigError) as info:
            load_config(path)
        assert info.value.problems == [Problem("<file>", "No such file or directory")]
        assert info.value.lines() == [f"{path}: <file>: No such file or directory"]

    def test_not_utf8(self, tmp_path: Path) -> None:
        """A file that is not UTF-8 text is one `<file>` problem."""
        path = tmp_path / "latin1.yaml"
        path.write_bytes("aws: {region: 'é'}\n".encode("latin-1"))
        with pytest.raises(ConfigError) as info:
            load_config(path)
        assert info.value.problems == [Problem("<file>", "not UTF-8 text")]

    def test_directory(self, tmp_path: Path) -> None:
        """A directory is one `<file>` problem."""
        with pytest.raises(ConfigError) as info:
            load_config(tmp_path)
        assert [p.path for p in info.value.problems] == ["<file>"]


class TestJsonSchema:
    """The JSON Schema `esm schema` prints, for editor completion."""

    def test_schema_describes_the_file(self) -> None:
        """The schema is draft 2020-12, titled, closed to unknown keys, and uses the `lambda` alias."""
        schema = json_schema()
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema["title"] == "esm configuration file"
        assert {"aws", "state", "http", "shutdown", "functions", "event_source_mappings", "dev"} <= set(
            schema["properties"]
        )
        assert schema["additionalProperties"] is False
        assert "lambda" in schema["$defs"]["FunctionConfig"]["properties"]
        assert "lambda_" not in schema["$defs"]["FunctionConfig"]["properties"]
