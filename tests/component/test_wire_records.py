"""GetRecords answers reach the event builders as the wire's JSON (`esm.aws.WireRecordsParserFactory`).

esm's clients hand a GetRecords answer over without botocore's shape walk: Kinesis `Data` stays
the wire's base64 text, DynamoDB blobs stay base64, timestamps stay epoch numbers. What a function
receives must not change for it, so each source's records are read twice from the same emulator,
by esm's client and by a plain aiobotocore client (botocore's parsing), and must build into the
same Lambda records. Every other operation is still parsed by botocore, and an answer that is not
a JSON object is a retriable source error, never a crash or an empty page.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
from aiobotocore.session import get_session
from aiohttp import web

from esm.arns import parse_source_arn
from esm.aws import ClientFactory
from esm.config import AwsConfig
from esm.errors import ExpiredIteratorError, RetriableAwsError
from esm.events import dynamodb_record, encode_record, kinesis_record
from esm.sources._shards import StreamRecord, read_page
from esm.testing import serve_app
from tests.conftest import REGION, active_stream, unique

ROLE = "arn:aws:iam::123456789012:role/esm"


def plain_client(service: str, endpoint: str) -> Any:
    """aiobotocore as a user gets it: botocore's default response parsing."""
    return get_session().create_client(
        service, region_name=REGION, endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test"
    )


async def read_all(client: Any, iterator: str, count: int) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for _ in range(20):
        page = await client.get_records(ShardIterator=iterator)
        records.extend(page["Records"])
        iterator = page["NextShardIterator"]
        if len(records) >= count:
            break
    return records


class TestKinesis:
    async def test_wire_records_build_the_same_events_as_parsed_ones(self, kinesalite_endpoint: str) -> None:
        payloads = [b"\x00\xff binary \xfe", "ünïcode".encode(), b'{"a": 1}', b"", b"x" * 3000]
        stream = unique("wire")
        factory = ClientFactory(AwsConfig(region=REGION, endpoint_url=kinesalite_endpoint))
        async with factory.client("kinesis") as esm_client, plain_client("kinesis", kinesalite_endpoint) as plain:
            await esm_client.create_stream(StreamName=stream, ShardCount=1)
            await active_stream(esm_client, stream)
            for i, data in enumerate(payloads):
                await esm_client.put_record(StreamName=stream, Data=data, PartitionKey=f"pk-{i}")
            summary = (await esm_client.describe_stream_summary(StreamName=stream))["StreamDescriptionSummary"]
            assert isinstance(summary["StreamCreationTimestamp"], dt.datetime)  # other calls: botocore's parsing
            shard = (await esm_client.list_shards(StreamName=stream))["Shards"][0]["ShardId"]
            iterators = [
                (await c.get_shard_iterator(StreamName=stream, ShardId=shard, ShardIteratorType="TRIM_HORIZON"))[
                    "ShardIterator"
                ]
                for c in (esm_client, plain)
            ]
            wire = await read_all(esm_client, iterators[0], len(payloads))
            parsed = await read_all(plain, iterators[1], len(payloads))
        assert [base64.b64decode(r["Data"]) for r in wire] == payloads  # the wire's base64 text
        assert [r["Data"] for r in parsed] == payloads
        assert all(isinstance(r["ApproximateArrivalTimestamp"], int | float) for r in wire)
        source = parse_source_arn(summary["StreamARN"])
        for w, p in zip(wire, parsed, strict=True):
            built = kinesis_record(w, shard_id=shard, source=source, invoke_identity_arn=ROLE)
            assert built == kinesis_record(p, shard_id=shard, source=source, invoke_identity_arn=ROLE)
            assert encode_record(built) == encode_record(
                kinesis_record(p, shard_id=shard, source=source, invoke_identity_arn=ROLE)
            )


class TestDynamodbStreams:
    async def test_wire_records_build_the_same_events_as_parsed_ones(self, moto_endpoint: str) -> None:
        items: list[dict[str, Any]] = [
            {"id": {"S": "a"}, "blob": {"B": b"\x00\x01\xff"}, "n": {"N": "12.50"}},
            {
                "id": {"S": "b"},
                "blobs": {"BS": [b"one", b"\xfe"]},
                "numbers": {"NS": ["1", "2.5"]},
                "nested": {"M": {"inner": {"B": b"deep"}, "list": {"L": [{"B": b"in a list"}, {"NULL": True}]}}},
                "flag": {"BOOL": False},
            },
            {"id": {"S": "ünïcode"}, "text": {"S": 'quote " and \\ and \n'}},
        ]
        table = unique("wire")
        factory = ClientFactory(AwsConfig(region=REGION, endpoint_url=moto_endpoint))
        async with (
            factory.client("dynamodb") as dynamodb,
            factory.client("dynamodbstreams") as esm_client,
            plain_client("dynamodbstreams", moto_endpoint) as plain,
        ):
            created = await dynamodb.create_table(
                TableName=table,
                KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                BillingMode="PAY_PER_REQUEST",
                StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
            )
            arn = created["TableDescription"]["LatestStreamArn"]
            for item in items:
                await dynamodb.put_item(TableName=table, Item=item)
            await dynamodb.put_item(TableName=table, Item=items[0] | {"n": {"N": "13"}})  # a MODIFY, both images
            shard = (await esm_client.describe_stream(StreamArn=arn))["StreamDescription"]["Shards"][0]["ShardId"]
            iterators = [
                (await c.get_shard_iterator(StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON"))[
                    "ShardIterator"
                ]
                for c in (esm_client, plain)
            ]
            wire = await read_all(esm_client, iterators[0], len(items) + 1)
            parsed = await read_all(plain, iterators[1], len(items) + 1)
        assert len(wire) == len(parsed) == len(items) + 1
        assert wire[0]["dynamodb"]["NewImage"]["blob"] == {"B": base64.b64encode(b"\x00\x01\xff").decode()}
        assert isinstance(wire[0]["dynamodb"]["ApproximateCreationDateTime"], int | float)
        assert parsed[0]["dynamodb"]["NewImage"]["blob"] == {"B": b"\x00\x01\xff"}
        source = parse_source_arn(arn)
        for w, p in zip(wire, parsed, strict=True):
            built = dynamodb_record(w, source=source)
            assert built == dynamodb_record(p, source=source)
            assert encode_record(built) == encode_record(dynamodb_record(p, source=source))


@pytest.fixture
async def odd_kinesis(aws_config: AwsConfig) -> AsyncIterator[tuple[Any, list[tuple[int, bytes]]]]:
    """esm's Kinesis client on a hand-written HTTP server that answers GetRecords from a script.

    A fake, because no emulator answers a GetRecords with a body that is not a JSON object: the
    test appends (status, body) pairs to the script, one per call.
    """
    script: list[tuple[int, bytes]] = []

    async def answer(request: web.Request) -> web.Response:
        status, body = script.pop(0)
        return web.Response(status=status, body=body, content_type="application/x-amz-json-1.1")

    app = web.Application()
    app.router.add_post("/", answer)
    async with serve_app(app) as url:
        factory = ClientFactory(AwsConfig(region=REGION, endpoint_url=url))
        async with factory.client("kinesis") as client:
            yield client, script


def never_built(raw: Mapping[str, Any]) -> StreamRecord:
    raise AssertionError(f"no record was expected, got {raw!r}")


class TestMalformedAnswers:
    @pytest.mark.parametrize("body", [b"not json", b"[]", b'"a string"', b"{"])
    async def test_a_body_that_is_not_a_json_object_is_a_retriable_source_error(
        self, odd_kinesis: tuple[Any, list[tuple[int, bytes]]], body: bytes
    ) -> None:
        client, script = odd_kinesis
        script.append((200, body))
        with pytest.raises(RetriableAwsError) as caught:
            await read_page(client, "iterator", 100, never_built)
        assert caught.value.code == "ResponseParserError"
        assert "GetRecords answered with" in caught.value.message

    async def test_errors_are_still_parsed_by_botocore(self, odd_kinesis: tuple[Any, list[tuple[int, bytes]]]) -> None:
        client, script = odd_kinesis
        script.append((400, b'{"__type": "ExpiredIteratorException", "message": "Iterator expired"}'))
        with pytest.raises(ExpiredIteratorError) as caught:
            await read_page(client, "iterator", 100, never_built)
        assert caught.value.code == "ExpiredIteratorException"

    async def test_an_empty_page_keeps_its_iterator_and_metadata(
        self, odd_kinesis: tuple[Any, list[tuple[int, bytes]]]
    ) -> None:
        client, script = odd_kinesis
        script.append((200, b'{"Records": [], "NextShardIterator": "next", "MillisBehindLatest": 0}'))
        records, response = await read_page(client, "iterator", 100, never_built)
        assert records == []
        assert response["NextShardIterator"] == "next"
        assert response["MillisBehindLatest"] == 0
        assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
