"""`esm iam-policy`: the least-privilege IAM policy of a configuration (esm/iam.py).

The expected policies are written out in full; the actions are checked against botocore's
service models, and a grep over `esm/` checks that every AWS call esm makes has its action.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import botocore.session
import pytest
import yaml
from botocore import xform_name

from esm.cli import main
from esm.config import parse_config
from esm.destinations import FailedBatch, s3_key
from esm.iam import API_CALLS, S3_KEY_PREFIX, STATEMENT_ORDER, policy_for

ESM = Path(__file__).resolve().parents[2] / "esm"
ACCOUNT = "123456789012"
OTHER = "210987654321"
UUID_A = "6f9a0e53-5d8e-4e3b-9a57-3f2c1d0b4a11"
UUID_B = "0b8e2f8c-1a2b-4c3d-8e9f-001122334455"
DDB_STREAM = f"arn:aws:dynamodb:eu-west-1:{ACCOUNT}:table/users/stream/2024-06-10T19:26:16.525"

SQS_SOURCE = [
    "sqs:ChangeMessageVisibility",
    "sqs:DeleteMessage",
    "sqs:GetQueueAttributes",
    "sqs:GetQueueUrl",
    "sqs:ReceiveMessage",
]
KINESIS = ["kinesis:DescribeStreamSummary", "kinesis:GetRecords", "kinesis:GetShardIterator", "kinesis:ListShards"]
DDB_STREAMS = ["dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator"]
ON_FAILURE_SQS = ["sqs:GetQueueUrl", "sqs:SendMessage"]
LAMBDA = ["lambda:GetFunctionConfiguration", "lambda:InvokeFunction"]
LEASES = [
    "dynamodb:DeleteItem",
    "dynamodb:DescribeTable",
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:Scan",
    "dynamodb:UpdateItem",
]
LEASES_CREATE = sorted([*LEASES, "dynamodb:CreateTable"])


def stmt(sid: str, actions: list[str], *resources: str) -> dict[str, Any]:
    """One expected Allow statement."""
    return {"Sid": sid, "Effect": "Allow", "Action": actions, "Resource": list(resources)}


def policy(*statements: dict[str, Any]) -> dict[str, Any]:
    """An expected policy document."""
    return {"Version": "2012-10-17", "Statement": list(statements)}


CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "sqs-only": (
        f"""
functions:
  orders: {{handler: 'handlers.orders:handle'}}
event_source_mappings:
  - {{EventSourceArn: 'arn:aws:sqs:us-east-1:{ACCOUNT}:orders', FunctionName: orders}}
""",
        policy(stmt("SqsSourceQueues", SQS_SOURCE, f"arn:aws:sqs:us-east-1:{ACCOUNT}:orders")),
    ),
    "fifo": (
        f"""
functions:
  audit: {{url: 'http://audit.local/invoke'}}
event_source_mappings:
  - {{EventSourceArn: 'arn:aws:sqs:us-east-1:{ACCOUNT}:orders.fifo', FunctionName: audit}}
""",
        policy(stmt("SqsSourceQueues", SQS_SOURCE, f"arn:aws:sqs:us-east-1:{ACCOUNT}:orders.fifo")),
    ),
    "kinesis-with-sqs-and-s3-destinations": (
        f"""
functions:
  clicks: {{handler: 'handlers.clicks:handle'}}
event_source_mappings:
  - EventSourceArn: arn:aws:kinesis:us-east-1:{ACCOUNT}:stream/clicks
    FunctionName: clicks
    StartingPosition: LATEST
    UUID: {UUID_A}
    DestinationConfig: {{OnFailure: {{Destination: 'arn:aws:sqs:us-east-1:{ACCOUNT}:clicks-failed'}}}}
  - EventSourceArn: arn:aws:kinesis:us-east-1:{ACCOUNT}:stream/views
    FunctionName: clicks
    StartingPosition: TRIM_HORIZON
    UUID: {UUID_B}
    DestinationConfig: {{OnFailure: {{Destination: 'arn:aws:s3:::failures'}}}}
""",
        policy(
            stmt(
                "KinesisSourceStreams",
                KINESIS,
                f"arn:aws:kinesis:us-east-1:{ACCOUNT}:stream/clicks",
                f"arn:aws:kinesis:us-east-1:{ACCOUNT}:stream/views",
            ),
            stmt("OnFailureSqs", ON_FAILURE_SQS, f"arn:aws:sqs:us-east-1:{ACCOUNT}:clicks-failed"),
            stmt("OnFailureS3", ["s3:PutObject"], f"arn:aws:s3:::failures/aws/lambda/{UUID_B}/*"),
        ),
    ),
    "dynamodb-streams-with-sns-destination": (
        f"""
functions:
  users: {{handler: 'handlers.users:handle'}}
event_source_mappings:
  - EventSourceArn: {DDB_STREAM}
    FunctionName: users
    StartingPosition: TRIM_HORIZON
    DestinationConfig: {{OnFailure: {{Destination: 'arn:aws:sns:eu-west-1:{ACCOUNT}:users-failed'}}}}
""",
        policy(
            stmt("DynamoDbStreams", DDB_STREAMS, DDB_STREAM),
            stmt("OnFailureSns", ["sns:Publish"], f"arn:aws:sns:eu-west-1:{ACCOUNT}:users-failed"),
        ),
    ),
    "lambda-by-name-with-aws-region": (
        f"""
aws: {{region: eu-central-1}}
event_source_mappings:
  - {{EventSourceArn: 'arn:aws:sqs:eu-central-1:{ACCOUNT}:orders', FunctionName: orders-fn}}
  - {{EventSourceArn: 'arn:aws:sqs:eu-central-1:{OTHER}:refunds', FunctionName: 'refunds-fn:live'}}
""",
        policy(
            stmt(
                "SqsSourceQueues",
                SQS_SOURCE,
                f"arn:aws:sqs:eu-central-1:{ACCOUNT}:orders",
                f"arn:aws:sqs:eu-central-1:{OTHER}:refunds",
            ),
            stmt(
                "InvokeFunctionsByNameInAwsRegionAndSourceAccount",
                LAMBDA,
                f"arn:aws:lambda:eu-central-1:{ACCOUNT}:function:orders-fn",
                f"arn:aws:lambda:eu-central-1:{OTHER}:function:refunds-fn:live",
            ),
        ),
    ),
    "lambda-by-name-without-aws-region": (
        f"""
functions:
  billing: {{lambda: billing}}
  partial: {{lambda: '{OTHER}:function:partial'}}
event_source_mappings:
  - {{EventSourceArn: 'arn:aws:sqs:ap-south-1:{ACCOUNT}:billing', FunctionName: billing}}
  - {{EventSourceArn: 'arn:aws:sqs:ap-south-1:{ACCOUNT}:partial', FunctionName: partial}}
""",
        policy(
            stmt(
                "SqsSourceQueues",
                SQS_SOURCE,
                f"arn:aws:sqs:ap-south-1:{ACCOUNT}:billing",
                f"arn:aws:sqs:ap-south-1:{ACCOUNT}:partial",
            ),
            stmt(
                "InvokeFunctionsByNameInSourceRegionAndAccount",
                LAMBDA,
                f"arn:aws:lambda:ap-south-1:{ACCOUNT}:function:billing",
                f"arn:aws:lambda:ap-south-1:{OTHER}:function:partial",
            ),
        ),
    ),
    "lambda-by-arn-and-qualified-arn": (
        f"""
aws: {{region: us-east-1}}
functions:
  billing: {{lambda: 'arn:aws:lambda:us-west-2:{OTHER}:function:billing:live'}}
event_source_mappings:
  - {{EventSourceArn: 'arn:aws:sqs:us-east-1:{ACCOUNT}:billing', FunctionName: billing}}
  - EventSourceArn: 'arn:aws:sqs:us-east-1:{ACCOUNT}:shipping'
    FunctionName: 'arn:aws:lambda:us-east-1:{ACCOUNT}:function:shipping'
  - EventSourceArn: 'arn:aws:sqs:us-east-1:{ACCOUNT}:shipping-v3'
    FunctionName: 'arn:aws:lambda:us-east-1:{ACCOUNT}:function:shipping:3'
""",
        policy(
            stmt(
                "SqsSourceQueues",
                SQS_SOURCE,
                f"arn:aws:sqs:us-east-1:{ACCOUNT}:billing",
                f"arn:aws:sqs:us-east-1:{ACCOUNT}:shipping",
                f"arn:aws:sqs:us-east-1:{ACCOUNT}:shipping-v3",
            ),
            stmt(
                "InvokeFunctions",
                LAMBDA,
                f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:shipping",
                f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:shipping:3",
                f"arn:aws:lambda:us-west-2:{OTHER}:function:billing:live",
            ),
        ),
    ),
    "lease-table-create-true": (
        f"""
aws: {{region: us-east-2}}
state: {{dynamodb: {{table: esm-leases}}}}
functions:
  clicks: {{handler: 'handlers.clicks:handle'}}
event_source_mappings:
  - {{EventSourceArn: 'arn:aws:kinesis:us-east-2:{ACCOUNT}:stream/clicks', FunctionName: clicks,
      StartingPosition: LATEST}}
""",
        policy(
            stmt("KinesisSourceStreams", KINESIS, f"arn:aws:kinesis:us-east-2:{ACCOUNT}:stream/clicks"),
            stmt("LeaseTable", LEASES_CREATE, f"arn:aws:dynamodb:us-east-2:{ACCOUNT}:table/esm-leases"),
        ),
    ),
    "lease-table-create-false-region-from-sources": (
        f"""
state: {{dynamodb: {{table: esm-leases, create: false}}}}
functions:
  users: {{handler: 'handlers.users:handle'}}
event_source_mappings:
  - {{EventSourceArn: '{DDB_STREAM}', FunctionName: users, StartingPosition: LATEST}}
""",
        policy(
            stmt("DynamoDbStreams", DDB_STREAMS, DDB_STREAM),
            stmt("LeaseTable", LEASES, f"arn:aws:dynamodb:eu-west-1:{ACCOUNT}:table/esm-leases"),
        ),
    ),
    "mixed": (
        f"""
aws: {{region: us-east-1}}
state: {{dynamodb: {{table: leases, create: false}}}}
functions:
  orders: {{handler: 'handlers.orders:handle'}}
  audit: {{url: 'http://audit.local/invoke'}}
  billing: {{lambda: 'arn:aws:lambda:us-east-1:{ACCOUNT}:function:billing:live'}}
event_source_mappings:
  - {{EventSourceArn: 'arn:aws:sqs:us-east-1:{ACCOUNT}:orders', FunctionName: orders}}
  - {{EventSourceArn: 'arn:aws:sqs:us-east-1:{ACCOUNT}:orders', FunctionName: audit, Enabled: false}}
  - EventSourceArn: arn:aws:kinesis:us-east-1:{ACCOUNT}:stream/clicks
    FunctionName: billing
    StartingPosition: LATEST
    UUID: {UUID_A}
    DestinationConfig: {{OnFailure: {{Destination: 'arn:aws:s3:::failures'}}}}
  - EventSourceArn: arn:aws:kinesis:us-east-1:{OTHER}:stream/views
    FunctionName: plain-fn
    StartingPosition: LATEST
    DestinationConfig: {{OnFailure: {{Destination: 'arn:aws:sns:us-east-1:{OTHER}:views-failed'}}}}
  - EventSourceArn: {DDB_STREAM}
    FunctionName: audit
    StartingPosition: LATEST
    DestinationConfig: {{OnFailure: {{Destination: 'arn:aws:sqs:eu-west-1:{ACCOUNT}:users-failed'}}}}
""",
        policy(
            stmt("SqsSourceQueues", SQS_SOURCE, f"arn:aws:sqs:us-east-1:{ACCOUNT}:orders"),
            stmt(
                "KinesisSourceStreams",
                KINESIS,
                f"arn:aws:kinesis:us-east-1:{ACCOUNT}:stream/clicks",
                f"arn:aws:kinesis:us-east-1:{OTHER}:stream/views",
            ),
            stmt("DynamoDbStreams", DDB_STREAMS, DDB_STREAM),
            stmt("OnFailureSqs", ON_FAILURE_SQS, f"arn:aws:sqs:eu-west-1:{ACCOUNT}:users-failed"),
            stmt("OnFailureSns", ["sns:Publish"], f"arn:aws:sns:us-east-1:{OTHER}:views-failed"),
            stmt("OnFailureS3", ["s3:PutObject"], f"arn:aws:s3:::failures/aws/lambda/{UUID_A}/*"),
            stmt("InvokeFunctions", LAMBDA, f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:billing:live"),
            stmt(
                "InvokeFunctionsByNameInAwsRegionAndSourceAccount",
                LAMBDA,
                f"arn:aws:lambda:us-east-1:{OTHER}:function:plain-fn",
            ),
            # the stream sources are in two accounts: the lease table's account is not known
            stmt("LeaseTable", LEASES, "arn:aws:dynamodb:us-east-1:*:table/leases"),
        ),
    ),
}


def all_policies() -> list[dict[str, Any]]:
    """The policy of every configuration of the table."""
    return [policy_for(parse_config(text, f"{name}.yaml", env={})) for name, (text, _) in CASES.items()]


# IAM prefix -> the botocore services whose operations it authorizes (DynamoDB Streams uses `dynamodb:`).
IAM_PREFIXES = {
    "sqs": ("sqs",),
    "kinesis": ("kinesis",),
    "dynamodb": ("dynamodb", "dynamodbstreams"),
    "sns": ("sns",),
    "s3": ("s3",),
    "lambda": ("lambda",),
}
# IAM actions named differently from the API operation they authorize (AWS's service authorization reference).
RENAMED_ACTIONS = {"lambda:InvokeFunction": "Invoke"}


def operations(service: str) -> set[str]:
    """The operation names of a botocore service model."""
    return set(botocore.session.get_session().get_service_model(service).operation_names)


def called_methods(source: str) -> set[str]:
    """Client methods a module calls: `client.x(`, `self._client.x(`, and LeaseTable's `_call("x"`."""
    direct = re.findall(r"(?:\b|_)client\.([a-z_]+)\(", source)
    by_name = re.findall(r"\b_(?:call|conditional)\(\s*\"([a-z_]+)\"", source)
    return set(direct) | set(by_name)


AWS_METHODS = {xform_name(op) for services in IAM_PREFIXES.values() for svc in services for op in operations(svc)}
# `esm dev` / `esm send` create emulator resources and send test messages: not the daemon's role.
NOT_THE_DAEMON = {"dev.py"}


def aws_calls_in_esm() -> dict[str, set[str]]:
    """Per module under esm/ (relative path), the AWS client methods it calls."""
    found: dict[str, set[str]] = {}
    for path in sorted(ESM.rglob("*.py")):
        module = path.relative_to(ESM).as_posix()
        if module in NOT_THE_DAEMON:
            continue
        calls = called_methods(path.read_text(encoding="utf-8")) & AWS_METHODS
        if calls:
            found[module] = calls
    return found


class TestPolicies:
    """The policy of each configuration of the table, exactly."""

    @pytest.mark.parametrize("name", list(CASES))
    def test_expected_policy(self, name: str) -> None:
        """The policy names exactly the configuration's resources with the actions esm needs."""
        text, expected = CASES[name]
        assert policy_for(parse_config(text, f"{name}.yaml", env={})) == expected

    def test_statement_order_and_sorting(self) -> None:
        """Statements follow STATEMENT_ORDER; actions and resources are sorted and unique."""
        for doc in all_policies():
            sids = [s["Sid"] for s in doc["Statement"]]
            assert sids == [sid for sid in STATEMENT_ORDER if sid in sids]
            for s in doc["Statement"]:
                assert s["Action"] == sorted(set(s["Action"]))
                assert s["Resource"] == sorted(set(s["Resource"]))
                assert re.fullmatch(r"[A-Za-z0-9]+", s["Sid"])

    def test_handler_and_url_targets_need_nothing(self) -> None:
        """A configuration without mappings (or with handler/URL targets only) grants no Lambda action."""
        assert policy_for(parse_config("", "empty.yaml", env={})) == policy()

    def test_s3_prefix_is_where_failure_records_go(self) -> None:
        """The S3 resource prefix matches the keys `esm.destinations.s3_key` writes."""
        batch = SimpleNamespace(mapping_uuid=UUID_A, info=SimpleNamespace(shard_id="shardId-000"), timestamp=0.0)
        assert s3_key(cast(FailedBatch, batch)).startswith(S3_KEY_PREFIX.format(uuid=UUID_A))


class TestActions:
    """Every action is a real IAM action, and every AWS call esm makes has one."""

    def test_actions_are_botocore_operations(self) -> None:
        """`svc:Op` names an operation of the botocore model(s) of that IAM prefix."""
        actions = {a for spec in API_CALLS.values() for a in spec.calls.values()}
        actions |= {a for doc in all_policies() for s in doc["Statement"] for a in s["Action"]}
        for action in sorted(actions):
            prefix, op = action.split(":")
            op = RENAMED_ACTIONS.get(action, op)
            assert any(op in operations(svc) for svc in IAM_PREFIXES[prefix]), action

    def test_each_call_maps_to_its_own_action(self) -> None:
        """A method's action is its own operation (SQS batch calls: the single-message action)."""
        for sid, spec in API_CALLS.items():
            prefix = next(p for p, services in IAM_PREFIXES.items() if spec.service in services)
            for method, action in spec.calls.items():
                assert action.startswith(f"{prefix}:"), (sid, action)
                op = xform_name(RENAMED_ACTIONS.get(action, action.split(":")[1]))
                assert method in (op, f"{op}_batch"), (sid, method, action)
                assert method in {xform_name(o) for o in operations(spec.service)}, (sid, method)

    def test_policy_actions_are_the_declared_calls(self) -> None:
        """Each statement grants exactly the actions of its kind (CreateTable only with `create`)."""
        for doc in all_policies():
            for s in doc["Statement"]:
                kind = "InvokeFunctions" if s["Sid"].startswith("InvokeFunctions") else s["Sid"]
                declared = set(API_CALLS[kind].calls.values())
                assert set(s["Action"]) in (declared, declared - {"dynamodb:CreateTable"}), s["Sid"]

    def test_the_grep_finds_esm_calls(self) -> None:
        """The grep sees the calls it must see (so it cannot rot into finding nothing)."""
        found = aws_calls_in_esm()
        assert {"receive_message", "delete_message_batch"} <= found["sources/sqs.py"]
        assert "get_records" in found["sources/_shards.py"]
        assert {"scan", "update_item", "create_table"} <= found["state/dynamodb.py"]
        assert {"invoke", "get_function_configuration"} <= found["targets/lambda_.py"]

    def test_every_aws_call_has_a_permission(self) -> None:
        """Each client method called under esm/ is declared for every kind of its module and service."""
        for module, calls in aws_calls_in_esm().items():
            kinds = {sid: spec for sid, spec in API_CALLS.items() if module in spec.modules}
            assert kinds, f"{module} makes AWS calls {sorted(calls)} but no API_CALLS entry lists it"
            for method in sorted(calls):
                owners = [
                    (sid, spec)
                    for sid, spec in kinds.items()
                    if method in {xform_name(o) for o in operations(spec.service)}
                ]
                assert owners, f"{module} calls {method} but no API_CALLS entry of its module has that service"
                for sid, spec in owners:
                    assert method in spec.calls, f"{module} calls {method}: add it to API_CALLS[{sid!r}]"

    def test_no_permission_without_a_call(self) -> None:
        """Each declared call is made in one of its modules (least privilege)."""
        found = aws_calls_in_esm()
        for sid, spec in API_CALLS.items():
            made = set().union(*(found.get(m, set()) for m in spec.modules))
            assert set(spec.calls) <= made, (sid, sorted(set(spec.calls) - made))


class TestCommand:
    """`esm iam-policy --config FILE` as the CLI runs it."""

    def test_prints_json(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """The output is the policy as JSON, exit 0; the KMS note goes to stderr."""
        text, expected = CASES["mixed"]
        path = tmp_path / "esm.yaml"
        path.write_text(text, encoding="utf-8")
        assert main(["iam-policy", "--config", str(path)]) == 0
        out, err = capsys.readouterr()
        assert json.loads(out) == expected
        assert "kms:Decrypt" in err

    def test_prints_yaml(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """`--format yaml` prints the same document as YAML."""
        text, expected = CASES["lease-table-create-true"]
        path = tmp_path / "esm.yaml"
        path.write_text(text, encoding="utf-8")
        assert main(["iam-policy", "--config", str(path), "--format", "yaml"]) == 0
        assert yaml.safe_load(capsys.readouterr().out) == expected

    def test_invalid_config_exits_2(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """An invalid file prints `FILE: path: reason` lines on stderr, nothing on stdout, and exits 2."""
        path = tmp_path / "bad.yaml"
        path.write_text("event_source_mappings:\n  - {EventSourceArn: nope, FunctionName: f}\n", encoding="utf-8")
        assert main(["iam-policy", "--config", str(path)]) == 2
        out, err = capsys.readouterr()
        assert out == ""
        assert err.startswith(f"{path}: event_source_mappings.0.EventSourceArn: must be the ARN of")
