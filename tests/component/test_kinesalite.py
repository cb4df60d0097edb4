"""kinesalite behaves like Kinesis where the stream source depends on it (../shared/TESTING.md).

These are the resharding facts `esm.sources.kinesis` and the shard lineage code rely on and that
moto gets wrong, checked through the same aiobotocore client esm uses, so a kinesalite upgrade
that changes one of them fails here first, not deep inside a stream test:

- a split closes the parent: ListShards gives it an `EndingSequenceNumber` and lists both
  children with `ParentShardId`, and new writes go to the children;
- reading the closed parent to its end yields every record written before the split, then a
  null `NextShardIterator` (the consumer's SHARD_END);
- sequence numbers are the real 56-digit form, increasing within a shard;
- a bad iterator is `InvalidArgumentException`, a client error (not moto's HTTP 500).
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from esm.aws import ClientFactory
from esm.config import AwsConfig
from tests.conftest import REGION, active_stream, unique


@pytest.fixture
async def kinesis(kinesalite_endpoint: str) -> AsyncIterator[Any]:
    """A raw aiobotocore Kinesis client on kinesalite."""
    async with ClientFactory(AwsConfig(region=REGION, endpoint_url=kinesalite_endpoint)).client("kinesis") as client:
        yield client


async def _read_to_end(kinesis: Any, stream: str, shard_id: str) -> list[dict[str, Any]]:
    """Every record of a shard from TRIM_HORIZON until NextShardIterator is null (at most 20 reads)."""
    response = await kinesis.get_shard_iterator(StreamName=stream, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON")
    iterator: str | None = response["ShardIterator"]
    records: list[dict[str, Any]] = []
    reads = 0
    while iterator is not None:
        reads += 1
        assert reads <= 20, "a closed shard must end (null NextShardIterator) once drained"
        page = await kinesis.get_records(ShardIterator=iterator, Limit=1000)
        records.extend(page["Records"])
        iterator = page.get("NextShardIterator")
    return records


class TestResharding:
    """A split behaves as on Kinesis: parent closed and drainable to its end, children take over."""

    async def test_split_closes_parent_and_children_take_the_writes(self, kinesis: Any) -> None:
        """After splitting one of two shards, the parent drains to a null iterator and writes go to its children."""
        stream = unique("split")
        await kinesis.create_stream(StreamName=stream, ShardCount=2)
        await active_stream(kinesis, stream)
        shards = (await kinesis.list_shards(StreamName=stream))["Shards"]
        assert [s["ShardId"] for s in shards] == ["shardId-000000000000", "shardId-000000000001"]
        parent = shards[0]

        before = await kinesis.put_records(
            StreamName=stream, Records=[{"Data": f"before-{i}".encode(), "PartitionKey": f"pk-{i}"} for i in range(20)]
        )
        assert before["FailedRecordCount"] == 0
        in_parent = [r["SequenceNumber"] for r in before["Records"] if r["ShardId"] == parent["ShardId"]]
        assert in_parent, "some of 20 partition keys hash into the first half of the key space"

        low, high = int(parent["HashKeyRange"]["StartingHashKey"]), int(parent["HashKeyRange"]["EndingHashKey"])
        middle = (low + high) // 2 + 1
        await kinesis.split_shard(StreamName=stream, ShardToSplit=parent["ShardId"], NewStartingHashKey=str(middle))
        await active_stream(kinesis, stream)

        listed = {s["ShardId"]: s for s in (await kinesis.list_shards(StreamName=stream))["Shards"]}
        assert "EndingSequenceNumber" in listed[parent["ShardId"]]["SequenceNumberRange"]
        assert "EndingSequenceNumber" not in listed["shardId-000000000001"]["SequenceNumberRange"]
        children = sorted(sid for sid, s in listed.items() if s.get("ParentShardId") == parent["ShardId"])
        assert children == ["shardId-000000000002", "shardId-000000000003"]
        assert {listed[c]["HashKeyRange"]["StartingHashKey"] for c in children} == {
            str(low),
            str((low + high) // 2 + 1),
        }

        after = await kinesis.put_records(
            StreamName=stream, Records=[{"Data": f"after-{i}".encode(), "PartitionKey": f"pk-{i}"} for i in range(20)]
        )
        assert parent["ShardId"] not in {r["ShardId"] for r in after["Records"]}
        assert {r["ShardId"] for r in after["Records"]} & set(children)

        drained = await _read_to_end(kinesis, stream, parent["ShardId"])
        assert [r["SequenceNumber"] for r in drained] == in_parent
        assert all(base64.b64decode(r["Data"]).startswith(b"before-") for r in drained)  # the wire's base64

    async def test_sequence_numbers_are_real_and_increasing(self, kinesis: Any) -> None:
        """Sequence numbers have Kinesis's 56 digits and grow, as integers, within a shard."""
        stream = unique("seq")
        await kinesis.create_stream(StreamName=stream, ShardCount=1)
        await active_stream(kinesis, stream)
        numbers = [
            (await kinesis.put_record(StreamName=stream, Data=b"x", PartitionKey="k"))["SequenceNumber"]
            for _ in range(3)
        ]
        assert all(len(n) == 56 and n.isdigit() for n in numbers)
        assert [int(n) for n in numbers] == sorted(int(n) for n in numbers)
        assert len(set(numbers)) == 3


class TestErrors:
    """Errors come back as the client errors Kinesis returns."""

    async def test_bad_iterator_is_invalid_argument(self, kinesis: Any) -> None:
        """GetRecords with a malformed iterator fails with InvalidArgumentException."""
        with pytest.raises(ClientError) as caught:
            await kinesis.get_records(ShardIterator="not-an-iterator")
        assert caught.value.response["Error"]["Code"] == "InvalidArgumentException"
