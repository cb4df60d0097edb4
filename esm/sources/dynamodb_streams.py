"""The DynamoDB Streams source: DescribeStream, GetShardIterator and GetRecords on aiobotocore.

DescribeStream lists shards a page at a time (`ExclusiveStartShardId` / `LastEvaluatedShardId`).
Each record is built once into the exact Lambda record (`esm.events.dynamodb_sized_record`,
ESM-SPEC.md §3.4: eventVersion "1.1", a numeric ApproximateCreationDateTime whatever the emulator
sends), its JSON size added up on the way; it is encoded only if a target needs the bytes.
Read limits: GetRecords returns at most 1,000 records, and Lambda reads a shard 4 times a second
(ESM-SPEC.md §5.3), so a consumer waits at least 0.25 s between calls on a shard.
AT_TIMESTAMP does not exist here (the configuration rejects it).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from esm.arns import SourceArn, SourceKind
from esm.errors import classify
from esm.events import dynamodb_sized_record
from esm.sources._shards import Page, Shard, StreamRecord, read_page, sequence_value
from esm.state import Checkpoint, Position

__all__ = ["DynamoDbStream"]


class DynamoDbStream:
    """One DynamoDB stream."""

    kind = SourceKind.DYNAMODB
    read_interval = 0.25  # 4 GetRecords per second per shard, as Lambda polls
    page_limit = 1_000

    def __init__(self, client: Any, source: SourceArn) -> None:
        self.client = client
        self.source = source

    async def list_shards(self) -> list[Shard]:
        """Every shard, following LastEvaluatedShardId (DescribeStream pages)."""
        shards: list[Shard] = []
        kwargs: dict[str, Any] = {"StreamArn": self.source.arn}
        while True:
            try:
                description = (await self.client.describe_stream(**kwargs))["StreamDescription"]
            except Exception as exc:
                raise classify("DescribeStream", exc) from exc
            for s in description.get("Shards", []):
                parent = s.get("ParentShardId")
                closed = s.get("SequenceNumberRange", {}).get("EndingSequenceNumber") is not None
                shards.append(Shard(s["ShardId"], (parent,) if parent else (), closed))
            last = description.get("LastEvaluatedShardId")
            if not last:
                return shards
            kwargs = {"StreamArn": self.source.arn, "ExclusiveStartShardId": last}

    async def iterator(self, shard_id: str, checkpoint: Checkpoint) -> str:
        """GetShardIterator at the checkpoint's position."""
        if checkpoint.position is Position.AT_TIMESTAMP:
            raise ValueError("DynamoDB Streams has no AT_TIMESTAMP iterator")
        kwargs: dict[str, Any] = {
            "StreamArn": self.source.arn,
            "ShardId": shard_id,
            "ShardIteratorType": checkpoint.position.value,
        }
        if checkpoint.sequence is not None:
            kwargs["SequenceNumber"] = checkpoint.sequence
        try:
            response = await self.client.get_shard_iterator(**kwargs)
        except Exception as exc:
            raise classify("GetShardIterator", exc) from exc
        return str(response["ShardIterator"])

    async def read(self, shard_id: str, iterator: str, limit: int) -> Page:
        """One GetRecords call, its records built into Lambda records."""

        def build(raw: Mapping[str, Any]) -> StreamRecord:
            record, size = dynamodb_sized_record(raw, source=self.source)
            stream = record["dynamodb"]
            sequence_number = stream["SequenceNumber"]
            created = stream.get("ApproximateCreationDateTime")
            return StreamRecord(  # positional: one call per record read
                sequence_value(sequence_number),  # sequence (not plain digits: a malformed record)
                sequence_number,
                None,  # key: the item's key, worked out only if ParallelizationFactor > 1 asks for it
                # arrival: AWS always sends it; without it, never take a record for an old one.
                created if created is not None else time.time(),
                record,
                None,  # encoded: written only if an invocation needs the event's bytes
                None,  # data (Kinesis only)
                size,
                raw,  # raw and build: `renew` builds the record again after a function may have changed it
                self._lambda_record,
            )

        records, response = await read_page(self.client, iterator, min(limit, self.page_limit), build)
        return Page(records, response.get("NextShardIterator"))

    def _lambda_record(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        return dynamodb_sized_record(raw, source=self.source)[0]

    async def retention_seconds(self) -> float:
        """DynamoDB Streams keeps records 24 hours (ESM-SPEC.md §5.3)."""
        return 24 * 3600.0
