"""AWS client construction on aiobotocore, from the standard credential chain.

Credentials are never read from esm's configuration: the default chain (environment, shared
files, IRSA web identity, EKS Pod Identity container credentials, instance metadata) applies.
botocore's own retries are turned off; esm retries with tenacity where the semantics are known,
so every retry shows in metrics and logs.

Timestamps that AWS sends as epoch numbers (Kinesis `ApproximateArrivalTimestamp`, DynamoDB
Streams `ApproximateCreationDateTime`: one per record) become UTC datetimes with the standard
library. botocore's default parser builds a `dateutil.tz.tzlocal()` for each one, which took about
half of a bare GetRecords loop's CPU (docs/benchmarks.md); the instant is the same, only the zone
differs (UTC instead of the host's). Text timestamps still go to botocore's parser.

GetRecords answers (Kinesis and DynamoDB Streams) are not walked by botocore at all: their records
are handed over as the wire's JSON (`WireRecordsParserFactory`). A Lambda event is that same JSON
(Kinesis `Data` and DynamoDB blobs in base64, numbers as the wire writes them), so botocore's
decoding was undone again for every record: its shape walk cost about 28 µs of a DynamoDB record's
~100 µs (a 1,000-record page: 28 ms; `json.loads` alone, 3 ms), and Kinesis data was base64-decoded
only to be encoded again.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any, Literal, overload

from aiobotocore.config import AioConfig
from aiobotocore.parsers import AioJSONParser, AioResponseParserFactory
from aiobotocore.session import AioSession, get_session
from botocore.parsers import ResponseParserError
from botocore.utils import parse_timestamp

from esm.config import AwsConfig

if TYPE_CHECKING:
    from types_aiobotocore_lambda import LambdaClient
    from types_aiobotocore_sqs import SQSClient

__all__ = ["ClientFactory", "WireRecordsParserFactory", "parse_timestamp_fast"]


def parse_timestamp_fast(value: Any) -> dt.datetime:
    """botocore's timestamp parser for a response, quick for the epoch numbers of stream records.

    A number becomes a UTC datetime (`datetime.fromtimestamp`, as botocore does, with the standard
    library's UTC zone instead of a new `dateutil` local zone per value); anything else, and a
    number out of the platform's range, goes to botocore's own parser.
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return dt.datetime.fromtimestamp(value, dt.UTC)
        except (OverflowError, OSError, ValueError):
            pass
    parsed: dt.datetime = parse_timestamp(value)
    return parsed


class _WireRecordsParser(AioJSONParser):
    """botocore's JSON-protocol parser, except that a GetRecords answer is its body's JSON as it is.

    The records keep the wire's form: Kinesis `Data` a base64 string and
    `ApproximateArrivalTimestamp` a number; DynamoDB attribute values as DynamoDB JSON (blobs in
    base64, numbers as strings) and `ApproximateCreationDateTime` a number. The event builders
    (`esm.events`) take that form as it is. A body that is not a JSON object is a
    `ResponseParserError` (botocore would have read it as an empty answer, which a Kinesis reader
    takes for a closed shard); errors (HTTP status above 300) are parsed by botocore as ever.
    """

    async def parse(self, response: Mapping[str, Any], shape: Any) -> Any:
        if response["status_code"] >= 301 or shape is None or shape.name != "GetRecordsOutput":
            return await super().parse(response, shape)
        try:
            parsed = json.loads(response["body"])
        except ValueError as exc:
            raise ResponseParserError(f"GetRecords answered with a body that is not JSON: {exc}") from exc
        if not isinstance(parsed, dict):
            raise ResponseParserError(f"GetRecords answered with a JSON {type(parsed).__name__}, not an object")
        headers = {name.lower(): value for name, value in response["headers"].items()}
        metadata = {"HTTPStatusCode": response["status_code"], "HTTPHeaders": headers}
        if "x-amzn-requestid" in headers:
            metadata["RequestId"] = headers["x-amzn-requestid"]
        parsed["ResponseMetadata"] = metadata
        return parsed


class WireRecordsParserFactory(AioResponseParserFactory):
    """aiobotocore's parser factory, with `_WireRecordsParser` for the JSON protocol.

    Among the services esm calls only Kinesis and DynamoDB Streams have a GetRecords operation
    (Amazon Keyspaces streams has one too; esm never creates its client).
    """

    def __init__(self, *, timestamp_parser: Any) -> None:
        super().__init__()
        self._timestamp_parser = timestamp_parser
        self.set_parser_defaults(timestamp_parser=timestamp_parser)

    def create_parser(self, protocol_name: str) -> Any:
        if protocol_name == "json":
            return _WireRecordsParser(timestamp_parser=self._timestamp_parser)
        return super().create_parser(protocol_name)


class ClientFactory:
    """Creates aiobotocore clients that share one session and the configured region/endpoint."""

    def __init__(self, aws: AwsConfig, *, default_region: str | None = None) -> None:
        self._aws = aws
        self._session: AioSession = get_session()
        self._session.register_component(
            "response_parser_factory", WireRecordsParserFactory(timestamp_parser=parse_timestamp_fast)
        )
        if aws.profile:
            self._session.set_config_variable("profile", aws.profile)
        self._default_region = default_region

    @property
    def region(self) -> str | None:
        """The configured region, else the one the standard chain resolves, else the fallback."""
        return self._aws.region or self._session.get_config_variable("region") or self._default_region

    def endpoint_for(self, service: str) -> str | None:
        """The endpoint for a service: its own entry in `aws.endpoints`, else `aws.endpoint_url`."""
        for name, url in self._aws.endpoints.items():
            if name == service:
                return url
        return self._aws.endpoint_url

    @overload
    def client(
        self, service: Literal["sqs"], *, read_timeout: float = ..., max_pool: int = ...
    ) -> contextlib.AbstractAsyncContextManager[SQSClient]: ...

    @overload
    def client(
        self, service: Literal["lambda"], *, read_timeout: float = ..., max_pool: int = ...
    ) -> contextlib.AbstractAsyncContextManager[LambdaClient]: ...

    @overload
    def client(
        self, service: str, *, read_timeout: float = ..., max_pool: int = ...
    ) -> contextlib.AbstractAsyncContextManager[Any]: ...

    def client(
        self, service: str, *, read_timeout: float = 60.0, max_pool: int = 50
    ) -> contextlib.AbstractAsyncContextManager[Any]:
        """An async context manager yielding a client for `service` (botocore retries disabled)."""
        return self._client(service, read_timeout, max_pool)

    @contextlib.asynccontextmanager
    async def _client(self, service: str, read_timeout: float, max_pool: int) -> AsyncIterator[Any]:
        config = AioConfig(
            retries={"total_max_attempts": 1, "mode": "standard"},
            read_timeout=read_timeout,
            connect_timeout=10,
            max_pool_connections=max_pool,
        )
        async with self._session.create_client(
            service,  # type: ignore[call-overload]  # the service name is a runtime value here
            region_name=self.region,
            endpoint_url=self.endpoint_for(service),
            config=config,
        ) as client:
            yield client
