"""Parsing of the ARNs a configuration names: event sources and Lambda functions.

An ARN is parsed once, at configuration time, into a small frozen value so that the rest of
the engine never splits strings again.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

__all__ = ["FunctionArn", "SourceArn", "SourceKind", "parse_function_arn", "parse_source_arn"]


class SourceKind(enum.StrEnum):
    """The event source services esm polls; the value is the `source` metric label."""

    SQS = "sqs"
    KINESIS = "kinesis"
    DYNAMODB = "dynamodb"


@dataclass(frozen=True, slots=True)
class SourceArn:
    """An event source ARN split into its parts (`resource` is the queue name or stream path)."""

    arn: str
    kind: SourceKind
    partition: str
    region: str
    account: str
    resource: str

    @property
    def queue_name(self) -> str:
        """The SQS queue name (only meaningful for SQS sources)."""
        return self.resource

    @property
    def is_fifo(self) -> bool:
        """True for an SQS FIFO queue: its name ends in `.fifo` (SQS naming rule)."""
        return self.kind is SourceKind.SQS and self.resource.endswith(".fifo")


_SOURCE_RE = re.compile(
    r"^arn:(?P<partition>aws[a-zA-Z-]*):(?P<service>sqs|kinesis|dynamodb):(?P<region>[a-z0-9-]+):"
    r"(?P<account>\d{12}):(?P<resource>.+)$"
)
_QUEUE_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,80}$|^[A-Za-z0-9_-]{1,75}\.fifo$")


def parse_source_arn(arn: str) -> SourceArn:
    """Parse an SQS queue, Kinesis stream or DynamoDB stream ARN; raise ValueError if it is not one."""
    m = _SOURCE_RE.match(arn)
    if m is None:
        raise ValueError(
            "must be the ARN of an SQS queue, a Kinesis stream or a DynamoDB stream "
            "(arn:aws:sqs:REGION:ACCOUNT:QUEUE, arn:aws:kinesis:REGION:ACCOUNT:stream/NAME, "
            "arn:aws:dynamodb:REGION:ACCOUNT:table/TABLE/stream/LABEL)"
        )
    service, resource = m["service"], m["resource"]
    if service == "sqs":
        if not _QUEUE_NAME_RE.match(resource):
            raise ValueError(f"{resource!r} is not a valid SQS queue name")
        kind = SourceKind.SQS
    elif service == "kinesis":
        if not re.match(r"^stream/[A-Za-z0-9_.-]{1,128}(/consumer/.+)?$", resource):
            raise ValueError("a Kinesis source must be a stream ARN (…:stream/NAME)")
        kind = SourceKind.KINESIS
    else:
        if not re.match(r"^table/[A-Za-z0-9_.-]{3,255}/stream/.+$", resource):
            raise ValueError("a DynamoDB source must be a stream ARN (…:table/TABLE/stream/LABEL)")
        kind = SourceKind.DYNAMODB
    return SourceArn(arn, kind, m["partition"], m["region"], m["account"], resource)


@dataclass(frozen=True, slots=True)
class FunctionArn:
    """A Lambda function reference: name (or unqualified ARN) plus an optional qualifier."""

    function_name: str
    qualifier: str | None
    arn: str | None

    @property
    def display_name(self) -> str:
        """The bare function name, as AWS prints it in failure records and errors."""
        if self.arn is None:
            return self.function_name
        return self.arn.split(":")[6]


_FUNCTION_ARN_RE = re.compile(
    r"^(?P<base>arn:(?P<partition>aws[a-zA-Z-]*):lambda:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):"
    r"function:(?P<name>[A-Za-z0-9_-]{1,64}))(:(?P<qualifier>\$LATEST|[A-Za-z0-9_-]{1,128}))?$"
)
_PARTIAL_ARN_RE = re.compile(
    r"^(?P<account>\d{12}):function:(?P<name>[A-Za-z0-9_-]{1,64})(:(?P<qualifier>\$LATEST|[A-Za-z0-9_-]+))?$"
)
_NAME_RE = re.compile(r"^(?P<name>[A-Za-z0-9_-]{1,64})(:(?P<qualifier>\$LATEST|[A-Za-z0-9_-]+))?$")


def parse_function_arn(value: str) -> FunctionArn:
    """Parse a Lambda function name, partial ARN or (qualified) ARN as the Invoke API accepts it.

    The qualifier (version or alias) is taken from the ARN and passed to Invoke separately,
    as ESM-SPEC.md §1.1 describes for `FunctionName`.
    """
    if len(value) > 256:
        raise ValueError("a function name or ARN is at most 256 characters")
    m = _FUNCTION_ARN_RE.match(value)
    if m is not None:
        return FunctionArn(m["base"], m["qualifier"], m["base"])
    m = _PARTIAL_ARN_RE.match(value)
    if m is not None:
        return FunctionArn(f"{m['account']}:function:{m['name']}", m["qualifier"], None)
    m = _NAME_RE.match(value)
    if m is not None:
        return FunctionArn(m["name"], m["qualifier"], None)
    raise ValueError(
        "must be a Lambda function name (at most 64 characters of letters, digits, '-' and '_'), "
        "a partial ARN (ACCOUNT:function:NAME) or a function ARN"
    )
