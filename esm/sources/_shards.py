"""What every stream source shares: shards and their lineage, typed records, and the checkpointer.

A stream source (`esm.sources.kinesis`, `esm.sources.dynamodb_streams`) is a narrow adapter
(DESIGN.md rule 6): it lists shards, opens iterators and reads pages of `StreamRecord`s, each
already built into the exact record Lambda would send and encoded once for the 6 MB cut.

Two pure pieces live here because both sources need them and both are property-tested:
- `eligible_shards`: a child shard starts only after every parent reached SHARD_END or is no
  longer listed (ESM-SPEC.md §4.2, "Ordering, shards, resharding").
- `Checkpointer`: records are completed in any order (ParallelizationFactor > 1, bisected
  halves, retries), and the checkpoint only ever covers the contiguous completed prefix of what
  was read (DESIGN.md rule 2).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from esm.arns import SourceArn, SourceKind
from esm.errors import RetriableAwsError, classify
from esm.state import Checkpoint

__all__ = [
    "Checkpointer",
    "Page",
    "Shard",
    "StreamRecord",
    "StreamSource",
    "eligible_shards",
    "read_page",
]


@dataclass(frozen=True, slots=True)
class Shard:
    """One shard as listed: its id, its parents (one after a split, two after a merge), closed or open."""

    shard_id: str
    parents: tuple[str, ...] = ()
    closed: bool = False


@dataclass(frozen=True, slots=True)
class StreamRecord:
    """One record read from a shard, ready to send.

    - `sequence`: the sequence number as an integer, for ordering (never compare the strings:
      emulators use short numbers, AWS 21–56 digits);
    - `sequence_number`: as the stream spells it (event ids, checkpoints, partial responses);
    - `key`: the ordering key for ParallelizationFactor: the partition key (Kinesis) or the
      item's primary key (DynamoDB), ESM-SPEC.md §4.2;
    - `arrival`: epoch seconds the stream received the record (record age, iterator age);
    - `record`: the Lambda record (ESM-SPEC.md §3.3, §3.4); `encoded`: its JSON bytes.
    """

    sequence: int
    sequence_number: str
    key: str
    arrival: float
    record: dict[str, Any]
    encoded: bytes


@dataclass(frozen=True, slots=True)
class Page:
    """One GetRecords answer: records, the next iterator (None at the end of a closed shard), and lag."""

    records: list[StreamRecord]
    next_iterator: str | None
    behind_seconds: float | None = None
    """How far the reader is behind the tip of the shard (Kinesis MillisBehindLatest), if the source says."""


class StreamSource(Protocol):
    """A Kinesis or DynamoDB stream, as a shard consumer needs it."""

    source: SourceArn
    kind: SourceKind
    read_interval: float
    """The shortest time between two GetRecords calls on one shard (the per-shard read limit)."""
    page_limit: int
    """The most records one GetRecords call may return."""

    async def list_shards(self) -> list[Shard]:
        """Every shard the stream lists now (all pages)."""
        ...

    async def iterator(self, shard_id: str, checkpoint: Checkpoint) -> str:
        """A shard iterator at the position the checkpoint names."""
        ...

    async def read(self, shard_id: str, iterator: str, limit: int) -> Page:
        """One GetRecords call."""
        ...

    async def retention_seconds(self) -> float:
        """How long the stream keeps records (the age at which a retried record expires)."""
        ...


def eligible_shards(listed: Sequence[Shard], finished: Iterable[str]) -> list[Shard]:
    """The listed shards a consumer may start now, parents before children.

    A shard is eligible when it is not finished (checkpointed SHARD_END) and every parent is
    either finished or not listed any more (trimmed past retention, so nothing of it can be
    read). A child is thereby never read before all of its parents' records were processed.
    """
    done = set(finished)
    ids = {s.shard_id for s in listed}
    return [s for s in listed if s.shard_id not in done and all(p in done or p not in ids for p in s.parents)]


@dataclass
class _Entry:
    sequence: int
    sequence_number: str
    done: bool = False


@dataclass
class Checkpointer:
    """The highest sequence number below which every record read is done (DESIGN.md rule 2).

    `add` every record in read order; `complete` records in any order; `position` is the
    sequence number (as spelled by the stream) of the last record of the contiguous completed
    prefix, or None while nothing new is covered. The checkpoint never passes a record that was
    read and not completed.
    """

    _pending: deque[_Entry] = field(default_factory=deque)
    _by_sequence: dict[int, _Entry] = field(default_factory=dict)
    position: str | None = None

    def add(self, records: Iterable[StreamRecord]) -> None:
        """Track records just read, in shard order."""
        for r in records:
            entry = _Entry(r.sequence, r.sequence_number)
            self._pending.append(entry)
            self._by_sequence[r.sequence] = entry

    def complete(self, records: Iterable[StreamRecord]) -> bool:
        """Mark records done; True if the checkpoint position moved."""
        for r in records:
            entry = self._by_sequence.get(r.sequence)
            if entry is not None:
                entry.done = True
        moved = False
        while self._pending and self._pending[0].done:
            entry = self._pending.popleft()
            del self._by_sequence[entry.sequence]
            self.position = entry.sequence_number
            moved = True
        return moved

    @property
    def outstanding(self) -> int:
        """Records read and not yet covered by the checkpoint."""
        return len(self._pending)


async def read_page(
    client: Any, iterator: str, limit: int, build: Callable[[Mapping[str, Any]], StreamRecord]
) -> tuple[list[StreamRecord], Mapping[str, Any]]:
    """One GetRecords call (errors classified once), each record built with `build`; also the raw response.

    A record that cannot be built is never skipped and never crashes the consumer: the page fails
    as a retriable `MalformedRecord` source error, so the shard waits (unhealthy, counted) and reads again.
    """
    try:
        response = await client.get_records(ShardIterator=iterator, Limit=limit)
    except Exception as exc:
        raise classify("GetRecords", exc) from exc
    try:
        records = [build(raw) for raw in response.get("Records", [])]
    except (KeyError, TypeError, ValueError) as exc:
        raise RetriableAwsError("GetRecords", "MalformedRecord", f"{type(exc).__name__}: {exc}") from exc
    return records, response
