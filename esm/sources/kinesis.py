"""The Kinesis Data Streams source: ListShards, GetShardIterator and GetRecords on aiobotocore.

Streams are addressed by name (StreamName), which AWS, moto and kinesalite all accept (kinesalite
has no StreamARN parameter). Each record is built once into the exact Lambda record
(`esm.events.kinesis_record`, ESM-SPEC.md §3.3) and encoded for the 6 MB cut. Read limits: one
GetRecords returns at most 10,000 records, and a shard serves 5 GetRecords calls a second
(ESM-SPEC.md §5.2), so a consumer waits at least 0.2 s between calls on a shard.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from esm.arns import SourceArn, SourceKind
from esm.errors import classify
from esm.events import kinesis_record, kinesis_sizer
from esm.sources._shards import Page, Shard, StreamRecord, read_page, sequence_value
from esm.state import Checkpoint, Position

__all__ = ["KinesisStream"]


class KinesisStream:
    """One Kinesis stream, read with the standard (shared-throughput) iterator API."""

    kind = SourceKind.KINESIS
    read_interval = 0.2  # 5 GetRecords per second per shard
    page_limit = 10_000

    def __init__(self, client: Any, source: SourceArn, invoke_identity_arn: str) -> None:
        self.client = client
        self.source = source
        self.name = source.resource.split("/", 1)[1]
        self.invoke_identity_arn = invoke_identity_arn
        self._sizers: dict[str, Callable[[Mapping[str, Any]], int]] = {}

    async def list_shards(self) -> list[Shard]:
        """Every shard, following NextToken (ListShards pages)."""
        shards: list[Shard] = []
        kwargs: dict[str, Any] = {"StreamName": self.name}
        while True:
            try:
                page = await self.client.list_shards(**kwargs)
            except Exception as exc:
                raise classify("ListShards", exc) from exc
            for s in page.get("Shards", []):
                parents = tuple(p for p in (s.get("ParentShardId"), s.get("AdjacentParentShardId")) if p)
                closed = s.get("SequenceNumberRange", {}).get("EndingSequenceNumber") is not None
                shards.append(Shard(s["ShardId"], parents, closed))
            token = page.get("NextToken")
            if not token:
                return shards
            kwargs = {"NextToken": token}

    async def iterator(self, shard_id: str, checkpoint: Checkpoint) -> str:
        """GetShardIterator at the checkpoint's position."""
        kwargs: dict[str, Any] = {
            "StreamName": self.name,
            "ShardId": shard_id,
            "ShardIteratorType": checkpoint.position.value,
        }
        if checkpoint.position in (Position.AFTER_SEQUENCE_NUMBER, Position.AT_SEQUENCE_NUMBER):
            kwargs["StartingSequenceNumber"] = checkpoint.sequence
        elif checkpoint.position is Position.AT_TIMESTAMP:
            assert checkpoint.timestamp is not None
            kwargs["Timestamp"] = datetime.fromtimestamp(checkpoint.timestamp, UTC)
        try:
            response = await self.client.get_shard_iterator(**kwargs)
        except Exception as exc:
            raise classify("GetShardIterator", exc) from exc
        return str(response["ShardIterator"])

    async def read(self, shard_id: str, iterator: str, limit: int) -> Page:
        """One GetRecords call, its records built into Lambda records."""

        size = self._sizer(shard_id)
        lambda_record = functools.partial(
            kinesis_record, shard_id=shard_id, source=self.source, invoke_identity_arn=self.invoke_identity_arn
        )

        def build(raw: Mapping[str, Any]) -> StreamRecord:
            record = lambda_record(raw)
            kinesis = record["kinesis"]
            sequence_number = kinesis["sequenceNumber"]
            data = raw["Data"]
            return StreamRecord(  # positional: one call per record read
                sequence_value(sequence_number),  # sequence (not plain digits: a malformed record)
                sequence_number,
                str(raw.get("PartitionKey", "")),  # key
                kinesis["approximateArrivalTimestamp"],  # arrival
                record,
                None,  # encoded: written only if an invocation needs the event's bytes
                data if type(data) is bytes else None,  # data: None for the wire's base64 text (esm's clients)
                size(record),  # size
                raw,  # raw and build: `renew` builds the record again after a function may have changed it
                lambda_record,
            )

        records, response = await read_page(self.client, iterator, min(limit, self.page_limit), build)
        behind = response.get("MillisBehindLatest")
        return Page(records, response.get("NextShardIterator"), behind / 1000 if behind is not None else None)

    def _sizer(self, shard_id: str) -> Callable[[Mapping[str, Any]], int]:
        """The size function of the shard's records (`kinesis_sizer`), worked out once per shard."""
        sizer = self._sizers.get(shard_id)
        if sizer is None:
            sizer = self._sizers[shard_id] = kinesis_sizer(shard_id, self.source, self.invoke_identity_arn)
        return sizer

    async def retention_seconds(self) -> float:
        """RetentionPeriodHours of the stream (DescribeStreamSummary), in seconds."""
        try:
            summary = (await self.client.describe_stream_summary(StreamName=self.name))["StreamDescriptionSummary"]
        except Exception as exc:
            raise classify("DescribeStreamSummary", exc) from exc
        return float(summary.get("RetentionPeriodHours", 24)) * 3600
