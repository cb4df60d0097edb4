"""The least-privilege IAM policy a configuration needs (`esm iam-policy`).

`policy_for(spec)` is pure: it reads only the configuration and returns an IAM identity policy
(AWS policy grammar, `"Version": "2012-10-17"`) with one statement per resource kind, naming the
exact ARNs of the file. The actions are the calls esm really makes, kept in `API_CALLS` next to
the code that makes them (a unit test greps `esm/` and fails when a new AWS call has no entry
here). They differ from the role permissions AWS lists for Lambda's own pollers (ESM-SPEC.md §4.3,
§5.1, §5.2) only where esm makes fewer calls:

- Kinesis: no `DescribeStream` or `SubscribeToShard` (esm lists shards with ListShards, reads the
  retention with DescribeStreamSummary and has no enhanced fan-out);
- DynamoDB Streams: no `ListStreams` (esm reads the configured stream ARN only);
- S3 destinations: no `s3:ListBucket` (esm only writes objects), and `PutObject` only under the
  mapping's own key prefix `aws/lambda/<UUID>/` (`esm.destinations.s3_key`).

Decisions:
- Every mapping of the file counts, disabled ones too: `Enabled` is switched by hot reload, and
  the daemon's role should not need an IAM change for it.
- A DynamoDB stream is named by its exact ARN (label included), not `table/T/stream/*`: esm only
  reads the configured stream; a stream re-enabled under a new label needs a new `EventSourceArn`
  anyway, and the policy is generated again from that file.
- A qualified Lambda target (`function:NAME:ALIAS`, or `NAME:ALIAS`) is granted on exactly that
  qualified ARN: esm passes the qualifier to Invoke/GetFunctionConfiguration and IAM authorizes
  such a call against the qualified ARN; `function:NAME:*` would also grant every other version.
- A Lambda function given by name (or partial ARN) gets the region of `aws.region` (else of the
  mapping's source ARN) and the account of the mapping's source ARN (or of the partial ARN); its
  statement's Sid says which (`InvokeFunctionsByName…`).
- The lease table is in `aws.region` (else the stream sources' region) and the stream sources'
  account; `*` stands for either when the sources disagree. CreateTable only with `create: true`.
- KMS: the configuration never names the keys of encrypted queues, streams, topics or buckets
  (`KMSKeyArn` encrypts filter criteria in AWS and esm does not use it), so no KMS statement is
  produced; `KMS_NOTE` says what to add.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from esm.arns import SourceArn, SourceKind, parse_function_arn
from esm.config.models import ConfigFile, FunctionConfig, MappingConfig

__all__ = ["API_CALLS", "KMS_NOTE", "POLICY_VERSION", "STATEMENT_ORDER", "ApiCalls", "policy_for"]

POLICY_VERSION = "2012-10-17"


@dataclass(frozen=True, slots=True)
class ApiCalls:
    """The AWS calls esm makes on one kind of resource, and the IAM action each one needs.

    `service` is the botocore service of the client, `modules` the files under `esm/` that call
    it, `calls` maps each client method to its IAM action. SQS batch calls are authorized as the
    single-message action (DeleteMessageBatch needs `sqs:DeleteMessage`).
    """

    service: str
    modules: tuple[str, ...]
    calls: Mapping[str, str] = field(default_factory=dict)

    def actions(self, *, without: Iterable[str] = ()) -> list[str]:
        """The sorted IAM actions, leaving out the calls named in `without`."""
        skip = set(without)
        return sorted({action for method, action in self.calls.items() if method not in skip})


API_CALLS: dict[str, ApiCalls] = {
    "SqsSourceQueues": ApiCalls(
        "sqs",
        ("sources/sqs.py",),
        {
            "get_queue_url": "sqs:GetQueueUrl",
            "get_queue_attributes": "sqs:GetQueueAttributes",
            "receive_message": "sqs:ReceiveMessage",
            "delete_message_batch": "sqs:DeleteMessage",
            "change_message_visibility_batch": "sqs:ChangeMessageVisibility",
        },
    ),
    "KinesisSourceStreams": ApiCalls(
        "kinesis",
        ("sources/kinesis.py", "sources/_shards.py"),
        {
            "list_shards": "kinesis:ListShards",
            "get_shard_iterator": "kinesis:GetShardIterator",
            "get_records": "kinesis:GetRecords",
            "describe_stream_summary": "kinesis:DescribeStreamSummary",
        },
    ),
    "DynamoDbStreams": ApiCalls(
        "dynamodbstreams",
        ("sources/dynamodb_streams.py", "sources/_shards.py"),
        {
            "describe_stream": "dynamodb:DescribeStream",
            "get_shard_iterator": "dynamodb:GetShardIterator",
            "get_records": "dynamodb:GetRecords",
        },
    ),
    "OnFailureSqs": ApiCalls(
        "sqs",
        ("destinations.py",),
        {"get_queue_url": "sqs:GetQueueUrl", "send_message": "sqs:SendMessage"},
    ),
    "OnFailureSns": ApiCalls("sns", ("destinations.py",), {"publish": "sns:Publish"}),
    "OnFailureS3": ApiCalls("s3", ("destinations.py",), {"put_object": "s3:PutObject"}),
    "InvokeFunctions": ApiCalls(
        "lambda",
        ("targets/lambda_.py",),
        {"invoke": "lambda:InvokeFunction", "get_function_configuration": "lambda:GetFunctionConfiguration"},
    ),
    "LeaseTable": ApiCalls(
        "dynamodb",
        ("state/dynamodb.py",),
        {
            "describe_table": "dynamodb:DescribeTable",
            "create_table": "dynamodb:CreateTable",
            "scan": "dynamodb:Scan",
            "get_item": "dynamodb:GetItem",
            "put_item": "dynamodb:PutItem",
            "update_item": "dynamodb:UpdateItem",
            "delete_item": "dynamodb:DeleteItem",
        },
    ),
}
"""Per statement kind: the calls esm makes and their IAM actions (the single source of the actions)."""

_BY_NAME_AWS_REGION = "InvokeFunctionsByNameInAwsRegionAndSourceAccount"
_BY_NAME_SOURCE_REGION = "InvokeFunctionsByNameInSourceRegionAndAccount"

STATEMENT_ORDER: tuple[str, ...] = (
    "SqsSourceQueues",
    "KinesisSourceStreams",
    "DynamoDbStreams",
    "OnFailureSqs",
    "OnFailureSns",
    "OnFailureS3",
    "InvokeFunctions",
    _BY_NAME_AWS_REGION,
    _BY_NAME_SOURCE_REGION,
    "LeaseTable",
)
"""The Sids, in the order their statements appear (a statement without resources is left out)."""

S3_KEY_PREFIX = "aws/lambda/{uuid}/"
"""Where a mapping's S3 failure records go (`esm.destinations.s3_key`)."""

KMS_NOTE = (
    "KMS: the configuration does not name the keys of encrypted resources, so the policy has no KMS "
    "statement. Add kms:Decrypt on the customer managed key of an SSE-KMS queue or Kinesis stream, "
    "kms:GenerateDataKey and kms:Decrypt on the key of an encrypted SNS topic, and kms:GenerateDataKey "
    "on the key of an SSE-KMS bucket."
)
"""What the policy cannot say about KMS (printed by `esm iam-policy` on stderr)."""


def _function_target(spec: ConfigFile, mapping: MappingConfig) -> str | None:
    """The `lambda` name or ARN a mapping invokes, or None for a handler or URL target."""
    fn = spec.functions.get(mapping.FunctionName)
    if fn is None:
        fn = FunctionConfig.model_validate({"lambda": mapping.FunctionName})
    return fn.lambda_


def _function_resource(spec: ConfigFile, target: str, source: SourceArn) -> tuple[str, str]:
    """(Sid, ARN) of a Lambda target; names take region and account as the module docstring says."""
    parsed = parse_function_arn(target)
    suffix = f":{parsed.qualifier}" if parsed.qualifier is not None else ""
    if parsed.arn is not None:
        return "InvokeFunctions", parsed.arn + suffix
    account, _, name = parsed.function_name.rpartition(":function:")
    region = spec.aws.region or source.region
    sid = _BY_NAME_AWS_REGION if spec.aws.region else _BY_NAME_SOURCE_REGION
    arn = f"arn:{source.partition}:lambda:{region}:{account or source.account}:function:{name}{suffix}"
    return sid, arn


def _single(values: set[str]) -> str:
    """The one value of a set, or `*` when there are none or several."""
    return next(iter(values)) if len(values) == 1 else "*"


def _lease_table_arn(spec: ConfigFile, table: str) -> str:
    """The lease table's ARN: region from `aws.region`, account (and fallback region) from the sources."""
    streams = [m.source for m in spec.event_source_mappings if m.source.kind is not SourceKind.SQS]
    sources = streams or [m.source for m in spec.event_source_mappings]
    partition = _single({s.partition for s in sources})
    region = spec.aws.region or _single({s.region for s in sources})
    account = _single({s.account for s in sources})
    return f"arn:{'aws' if partition == '*' else partition}:dynamodb:{region}:{account}:table/{table}"


def _destination_resources(mapping: MappingConfig) -> tuple[str, str] | None:
    """(Sid, ARN) of a mapping's on-failure destination, or None without one."""
    arn = mapping.on_failure_destination
    if arn is None:
        return None
    service = arn.split(":", 3)[2]
    if service == "sqs":
        return "OnFailureSqs", arn
    if service == "sns":
        return "OnFailureSns", arn
    return "OnFailureS3", f"{arn}/{S3_KEY_PREFIX.format(uuid=mapping.uuid)}*"


def policy_for(spec: ConfigFile) -> dict[str, Any]:
    """The least-privilege IAM identity policy for a validated configuration (see the module docstring).

    Statements come in `STATEMENT_ORDER`, actions and resources sorted, so the output is stable.
    Handler and URL targets need no AWS permission and add nothing.
    """
    resources: dict[str, set[str]] = defaultdict(set)
    source_sid = {
        SourceKind.SQS: "SqsSourceQueues",
        SourceKind.KINESIS: "KinesisSourceStreams",
        SourceKind.DYNAMODB: "DynamoDbStreams",
    }
    for mapping in spec.event_source_mappings:
        source = mapping.source
        resources[source_sid[source.kind]].add(source.arn)
        destination = _destination_resources(mapping)
        if destination is not None:
            resources[destination[0]].add(destination[1])
        target = _function_target(spec, mapping)
        if target is not None:
            sid, arn = _function_resource(spec, target, source)
            resources[sid].add(arn)
    lease_skip: tuple[str, ...] = ()
    if spec.state.dynamodb is not None:
        resources["LeaseTable"].add(_lease_table_arn(spec, spec.state.dynamodb.table))
        lease_skip = () if spec.state.dynamodb.create else ("create_table",)
    statements = []
    for sid in STATEMENT_ORDER:
        if not resources.get(sid):
            continue
        kind = "InvokeFunctions" if sid.startswith("InvokeFunctions") else sid
        actions = API_CALLS[kind].actions(without=lease_skip if kind == "LeaseTable" else ())
        statements.append({"Sid": sid, "Effect": "Allow", "Action": actions, "Resource": sorted(resources[sid])})
    return {"Version": POLICY_VERSION, "Statement": statements}
