"""The DynamoDB lease table: one item per (mapping, stream, shard) holding its lease and checkpoint.

The table follows KCL's layout and conditional-write protocol (spec/LEASES.md part B) so that it
reads the same to anyone who knows KCL, with `esm`'s own attributes beside KCL's:

| attribute | type | meaning |
| --- | --- | --- |
| `leaseKey` | S | `<mapping UUID>:<stream ARN>:<shard id>` (hash key); `<UUID>:<ARN>:#mapping` for the mapping row |
| `entityType` | S | `lease`, or `mapping` for the row that records a mapping's first start |
| `mappingId`, `streamArn`, `shardId` | S | the parts of the key |
| `leaseOwner` | S | the replica holding the lease; absent when nobody does |
| `leaseCounter` | N | +1 on every renew, take, checkpoint and release: the fencing counter |
| `checkpoint` | S | a sequence number or `TRIM_HORIZON`, `LATEST`, `AT_TIMESTAMP`, `SHARD_END` (KCL's sentinels) |
| `checkpointPosition` | S | how to resume (`esm.state.Position`): AFTER_/AT_SEQUENCE_NUMBER, or the sentinel |
| `checkpointTimestamp` | N | epoch seconds for AT_TIMESTAMP |
| `checkpointSubSequenceNumber` | N | always 0 (esm does not de-aggregate KPL records) |
| `ownerSwitchesSinceCheckpoint` | N | +1 when the owner changes, 0 after a checkpoint |
| `parentShardId` | SS | the shard's parents (children wait for them across replicas) |
| `windowState` | S | the tumbling-window state kept with the checkpoint |
| `updatedAt` | N | epoch seconds of the last checkpoint (for people; the protocol never reads clocks) |

Every write is conditional on the counter the writer last saw (and, for an owner, on being the
owner), so a replica that lost a lease can never checkpoint it again. `False` from a write means
its condition failed (someone else moved the lease): a normal outcome, not an error.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from botocore.exceptions import ClientError

from esm.errors import FatalAwsError, classify
from esm.state.base import Checkpoint, Position

__all__ = ["WINDOW_STATE_LIMIT_BYTES", "LeaseItem", "LeaseTable", "lease_key", "mapping_key"]

WINDOW_STATE_LIMIT_BYTES: Final = 300 * 1024
"""The largest tumbling-window state kept in a lease item (DynamoDB items hold at most 400 KB); a larger
state terminates the window early, as a state over 1 MB does with SQLite."""

_SENTINELS: Final = {Position.TRIM_HORIZON, Position.LATEST, Position.AT_TIMESTAMP, Position.SHARD_END}
_CONDITION_FAILED: Final = "ConditionalCheckFailedException"


def lease_key(mapping_uuid: str, stream_arn: str, shard_id: str) -> str:
    """The lease item's hash key."""
    return f"{mapping_uuid}:{stream_arn}:{shard_id}"


def mapping_key(mapping_uuid: str, stream_arn: str) -> str:
    """The hash key of the row recording a mapping's first start."""
    return f"{mapping_uuid}:{stream_arn}:#mapping"


@dataclass(frozen=True, slots=True)
class LeaseItem:
    """One lease row as read from the table."""

    key: str
    mapping_uuid: str
    stream_arn: str
    shard_id: str
    owner: str | None
    counter: int
    checkpoint: Checkpoint
    parents: tuple[str, ...] = ()
    owner_switches: int = 0


def checkpoint_attributes(checkpoint: Checkpoint) -> dict[str, Any]:
    """The attribute values that store a checkpoint (for SET ... expressions)."""
    position = checkpoint.position
    text = checkpoint.sequence if position not in _SENTINELS else position.value
    assert text is not None
    values: dict[str, Any] = {
        ":cp": {"S": text},
        ":pos": {"S": position.value},
        ":ts": {"N": repr(checkpoint.timestamp)} if checkpoint.timestamp is not None else {"NULL": True},
        ":ws": {"S": checkpoint.window_state} if checkpoint.window_state is not None else {"NULL": True},
        ":now": {"N": repr(time.time())},
    }
    return values


_SET_CHECKPOINT: Final = (
    "checkpoint = :cp, checkpointPosition = :pos, checkpointTimestamp = :ts, windowState = :ws, "
    "checkpointSubSequenceNumber = :zero, updatedAt = :now"
)


def _checkpoint_of(item: dict[str, Any]) -> Checkpoint:
    position = Position(item.get("checkpointPosition", {}).get("S") or _position_from_kcl(item))
    text = item["checkpoint"]["S"]
    timestamp = item.get("checkpointTimestamp", {}).get("N")
    window = item.get("windowState", {}).get("S")
    updated = float(item.get("updatedAt", {}).get("N", "0"))
    sequence = text if position in (Position.AFTER_SEQUENCE_NUMBER, Position.AT_SEQUENCE_NUMBER) else None
    return Checkpoint(
        position,
        sequence,
        float(timestamp) if timestamp is not None and position is Position.AT_TIMESTAMP else None,
        updated,
        window,
    )


def _position_from_kcl(item: dict[str, Any]) -> str:
    """A row written without `checkpointPosition` (by hand, KCL-style): a sentinel or 'after' a number."""
    text = item["checkpoint"]["S"]
    return text if text in {p.value for p in _SENTINELS} else Position.AFTER_SEQUENCE_NUMBER.value


def _lease_of(item: dict[str, Any]) -> LeaseItem:
    return LeaseItem(
        key=item["leaseKey"]["S"],
        mapping_uuid=item["mappingId"]["S"],
        stream_arn=item["streamArn"]["S"],
        shard_id=item["shardId"]["S"],
        owner=item.get("leaseOwner", {}).get("S"),
        counter=int(item["leaseCounter"]["N"]),
        checkpoint=_checkpoint_of(item),
        parents=tuple(sorted(item.get("parentShardId", {}).get("SS", []))),
        owner_switches=int(item.get("ownerSwitchesSinceCheckpoint", {}).get("N", "0")),
    )


def _worker_of(item: dict[str, Any]) -> LeaseItem:
    return LeaseItem(
        key=item["leaseKey"]["S"],
        mapping_uuid="",
        stream_arn="",
        shard_id="",
        owner=item["leaseOwner"]["S"],
        counter=int(item["leaseCounter"]["N"]),
        checkpoint=Checkpoint(Position.TRIM_HORIZON),
    )


class LeaseTable:
    """Conditional reads and writes of the lease table through one aiobotocore DynamoDB client."""

    def __init__(self, client: Any, name: str) -> None:
        self.client = client
        self.name = name

    async def _call(self, operation: str, **kwargs: Any) -> Any:
        try:
            return await getattr(self.client, operation)(TableName=self.name, **kwargs)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == _CONDITION_FAILED:
                raise _ConditionFailed from None
            raise classify(operation, exc) from exc
        except Exception as exc:
            raise classify(operation, exc) from exc

    async def _conditional(self, operation: str, **kwargs: Any) -> bool:
        try:
            await self._call(operation, **kwargs)
        except _ConditionFailed:
            return False
        return True

    # the table --------------------------------------------------------------------------------

    async def ensure(self, *, create: bool, wait: float = 60.0) -> bool:
        """Make sure the table exists and is ACTIVE; True if it was created now.

        Missing and `create` false: FatalAwsError with a clear message.
        """
        try:
            description = await self.client.describe_table(TableName=self.name)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
                raise classify("DescribeTable", exc) from exc
            description = None
        except Exception as exc:
            raise classify("DescribeTable", exc) from exc
        created = False
        if description is None:
            if not create:
                raise FatalAwsError(
                    "DescribeTable",
                    "ResourceNotFoundException",
                    f"the lease table {self.name} does not exist and state.dynamodb.create is false",
                )
            try:
                await self.client.create_table(
                    TableName=self.name,
                    KeySchema=[{"AttributeName": "leaseKey", "KeyType": "HASH"}],
                    AttributeDefinitions=[{"AttributeName": "leaseKey", "AttributeType": "S"}],
                    BillingMode="PAY_PER_REQUEST",
                )
                created = True
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "ResourceInUseException":  # another replica won
                    raise classify("CreateTable", exc) from exc
            except Exception as exc:
                raise classify("CreateTable", exc) from exc
        deadline = time.monotonic() + wait
        while True:
            description = await self._call("describe_table")
            if description["Table"]["TableStatus"] == "ACTIVE":
                return created
            if time.monotonic() > deadline:
                raise FatalAwsError("DescribeTable", "TableNotActive", f"the lease table {self.name} is not ACTIVE")
            await asyncio.sleep(0.5)

    # reads ----------------------------------------------------------------------------------

    async def scan(self) -> tuple[list[LeaseItem], list[LeaseItem], set[str]]:
        """Every lease row and worker row (strongly consistent, all pages), and the keys of the mapping rows.

        A worker row reads as a LeaseItem whose `owner` is the replica and `counter` its heartbeat.
        """
        leases: list[LeaseItem] = []
        workers: list[LeaseItem] = []
        mappings: set[str] = set()
        start: dict[str, Any] | None = None
        while True:
            kwargs: dict[str, Any] = {"ConsistentRead": True}
            if start is not None:
                kwargs["ExclusiveStartKey"] = start
            page = await self._call("scan", **kwargs)
            for item in page.get("Items", []):
                kind = item.get("entityType", {}).get("S")
                if kind == "lease":
                    leases.append(_lease_of(item))
                elif kind == "mapping":
                    mappings.add(item["leaseKey"]["S"])
                elif kind == "worker":
                    workers.append(_worker_of(item))
            start = page.get("LastEvaluatedKey")
            if not start:
                return leases, workers, mappings

    async def get(self, key: str) -> LeaseItem | None:
        """One lease row, strongly consistent; None if absent."""
        answer = await self._call("get_item", Key={"leaseKey": {"S": key}}, ConsistentRead=True)
        item = answer.get("Item")
        return _lease_of(item) if item and item.get("entityType", {}).get("S") == "lease" else None

    # writes ---------------------------------------------------------------------------------

    async def create(
        self, mapping_uuid: str, stream_arn: str, shard_id: str, checkpoint: Checkpoint, parents: Sequence[str]
    ) -> bool:
        """Create an unowned lease with its starting checkpoint, unless the row exists."""
        values = checkpoint_attributes(checkpoint)
        item: dict[str, Any] = {
            "leaseKey": {"S": lease_key(mapping_uuid, stream_arn, shard_id)},
            "entityType": {"S": "lease"},
            "mappingId": {"S": mapping_uuid},
            "streamArn": {"S": stream_arn},
            "shardId": {"S": shard_id},
            "leaseCounter": {"N": "0"},
            "checkpoint": values[":cp"],
            "checkpointPosition": values[":pos"],
            "checkpointSubSequenceNumber": {"N": "0"},
            "ownerSwitchesSinceCheckpoint": {"N": "0"},
            "updatedAt": values[":now"],
        }
        if checkpoint.timestamp is not None:
            item["checkpointTimestamp"] = values[":ts"]
        if parents:
            item["parentShardId"] = {"SS": sorted(parents)}
        return await self._conditional("put_item", Item=item, ConditionExpression="attribute_not_exists(leaseKey)")

    async def mark_started(self, mapping_uuid: str, stream_arn: str) -> None:
        """Record that a mapping's first start stored every starting position (idempotent)."""
        await self._call(
            "put_item",
            Item={
                "leaseKey": {"S": mapping_key(mapping_uuid, stream_arn)},
                "entityType": {"S": "mapping"},
                "mappingId": {"S": mapping_uuid},
                "streamArn": {"S": stream_arn},
                "startedAt": {"N": repr(time.time())},
            },
        )

    async def heartbeat(self, replica: str, counter: int) -> None:
        """Write this replica's worker row: others count it as a live replica while its counter moves."""
        await self._call(
            "put_item",
            Item={
                "leaseKey": {"S": f"#worker:{replica}"},
                "entityType": {"S": "worker"},
                "leaseOwner": {"S": replica},
                "leaseCounter": _n(counter),
            },
        )

    async def remove_worker(self, replica: str) -> None:
        """Delete this replica's worker row (it is stopping)."""
        await self._call("delete_item", Key={"leaseKey": {"S": f"#worker:{replica}"}})

    async def renew(self, key: str, counter: int, owner: str) -> bool:
        """Bump the counter of a lease `owner` holds at `counter`."""
        return await self._conditional(
            "update_item",
            Key={"leaseKey": {"S": key}},
            UpdateExpression="SET leaseCounter = :next",
            ConditionExpression="leaseCounter = :c AND leaseOwner = :me",
            ExpressionAttributeValues={":c": _n(counter), ":next": _n(counter + 1), ":me": {"S": owner}},
        )

    async def take(self, key: str, counter: int, owner: str, previous: str | None) -> bool:
        """Take a lease seen at `counter` (unowned, expired, or stolen from `previous`)."""
        values = {":c": _n(counter), ":next": _n(counter + 1), ":me": {"S": owner}}
        update = "SET leaseOwner = :me, leaseCounter = :next"
        if previous != owner:
            update += " ADD ownerSwitchesSinceCheckpoint :one"
            values[":one"] = _n(1)
        return await self._conditional(
            "update_item",
            Key={"leaseKey": {"S": key}},
            UpdateExpression=update,
            ConditionExpression="leaseCounter = :c",
            ExpressionAttributeValues=values,
        )

    async def checkpoint(self, key: str, counter: int, owner: str, checkpoint: Checkpoint) -> bool:
        """Write the checkpoint of a lease `owner` holds at `counter` (fenced by both)."""
        values = checkpoint_attributes(checkpoint)
        values.update({":c": _n(counter), ":next": _n(counter + 1), ":me": {"S": owner}, ":zero": _n(0)})
        return await self._conditional(
            "update_item",
            Key={"leaseKey": {"S": key}},
            UpdateExpression=f"SET {_SET_CHECKPOINT}, ownerSwitchesSinceCheckpoint = :zero, leaseCounter = :next",
            ConditionExpression="leaseCounter = :c AND leaseOwner = :me",
            ExpressionAttributeValues=values,
        )

    async def release(self, key: str, counter: int, owner: str) -> bool:
        """Give a lease up (evict yourself): no owner, counter bumped, so others take it at once."""
        return await self._conditional(
            "update_item",
            Key={"leaseKey": {"S": key}},
            UpdateExpression="REMOVE leaseOwner SET leaseCounter = :next",
            ConditionExpression="leaseCounter = :c AND leaseOwner = :me",
            ExpressionAttributeValues={":c": _n(counter), ":next": _n(counter + 1), ":me": {"S": owner}},
        )

    async def delete(self, key: str, counter: int) -> bool:
        """Delete a lease row seen at `counter` (its shard is gone from the stream)."""
        return await self._conditional(
            "delete_item",
            Key={"leaseKey": {"S": key}},
            ConditionExpression="leaseCounter = :c",
            ExpressionAttributeValues={":c": _n(counter)},
        )

    async def overwrite_checkpoint(self, key: str, checkpoint: Checkpoint) -> bool:
        """Set a checkpoint by hand (`esm checkpoints set`, esm stopped): any owner is dropped."""
        values = checkpoint_attributes(checkpoint)
        values.update({":zero": _n(0), ":one": _n(1)})
        return await self._conditional(
            "update_item",
            Key={"leaseKey": {"S": key}},
            UpdateExpression=f"SET {_SET_CHECKPOINT} REMOVE leaseOwner ADD leaseCounter :one",
            ConditionExpression="attribute_exists(leaseKey)",
            ExpressionAttributeValues=values,
        )


class _ConditionFailed(Exception):
    """A conditional write's condition did not hold."""


def _n(value: int) -> dict[str, str]:
    return {"N": str(value)}
