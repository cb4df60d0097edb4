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
from esm.events import MALFORMED, dynamodb_item_key, encode_stream_record
from esm.state import Checkpoint

__all__ = [
    "Checkpointer",
    "Page",
    "Shard",
    "StreamRecord",
    "StreamSource",
    "eligible_shards",
    "read_page",
    "sequence_value",
]


@dataclass(frozen=True, slots=True)
class Shard:
    """One shard as listed: its id, its parents (one after a split, two after a merge), closed or open."""

    shard_id: str
    parents: tuple[str, ...] = ()
    closed: bool = False


class StreamRecord:
    """One record read from a shard, ready to send (never changed once built, apart from `encoded`).

    - `sequence`: the sequence number as an integer, for ordering (never compare the strings:
      emulators use short numbers, AWS 21–56 digits);
    - `sequence_number`: as the stream spells it (event ids, checkpoints, partial responses);
    - `key`: the ordering key for ParallelizationFactor: the partition key (Kinesis) or the
      item's primary key (DynamoDB, `dynamodb_item_key`), ESM-SPEC.md §4.2; a source may leave
      it to be worked out the first time it is asked for (only a mapping with
      ParallelizationFactor > 1 asks);
    - `arrival`: epoch seconds the stream received the record (record age, iterator age);
    - `record`: the Lambda record (ESM-SPEC.md §3.3, §3.4);
    - `encoded`: its JSON bytes, the unit of `esm.events.assemble_event`; `size`: their length,
      which cuts batches at 6 MB. A source gives the bytes, or only their exact size (both
      sources do): the bytes are then written the first time they are asked for
      (`encode_stream_record`), and an in-process function, which gets the event as objects,
      never needs them;
    - `data`: Kinesis: the record's raw data, the bytes its base64 `data` stands for, when the
      client already decoded them (botocore's parsing), so that FilterCriteria on `data` need not
      decode the base64 again; None where the source has none, and for the wire's records esm's
      own clients return (`esm.aws.WireRecordsParserFactory`: the filter decodes the base64);
    - `renew()` builds `record` again from what the stream returned (the source gives the raw
      record and its builder): an in-process function is handed the record objects themselves
      and may change them, and a record that is invoked again (a retry, a bisected half) or
      reported to a destination must be the record as read, as Lambda parses every invocation's
      event anew. Renewing costs nothing until a batch fails.

    A plain class with slots (not a frozen dataclass): one is built for every record read, and a
    frozen dataclass sets each field through `object.__setattr__`, three times slower.
    """

    __slots__ = (
        "_build",
        "_encoded",
        "_key",
        "_raw",
        "arrival",
        "data",
        "record",
        "sequence",
        "sequence_number",
        "size",
    )

    def __init__(
        self,
        sequence: int,
        sequence_number: str,
        key: str | None,
        arrival: float,
        record: dict[str, Any],
        encoded: bytes | None,
        data: bytes | None = None,
        size: int | None = None,
        raw: Mapping[str, Any] | None = None,
        build: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        self.sequence = sequence
        self.sequence_number = sequence_number
        self._key = key
        self.arrival = arrival
        self.record = record
        self.data = data
        self._raw = raw
        self._build = build
        self._encoded = encoded
        if encoded is not None:
            self.size = len(encoded)
        elif size is not None:
            self.size = size
        else:
            raise ValueError("a StreamRecord needs its encoded bytes or their size")

    def renew(self) -> None:
        """Build `record` again from the raw record (nothing to do without one); the encoded bytes, if
        written, are kept: they were written from the record as read (an in-process function never
        has them written)."""
        if self._raw is not None and self._build is not None:
            self.record = self._build(self._raw)

    @property
    def key(self) -> str:
        """The ordering key; a DynamoDB item key given as None is worked out now (`dynamodb_item_key`)."""
        key = self._key
        if key is None:
            key = self._key = dynamodb_item_key(self.record)
        return key

    @property
    def encoded(self) -> bytes:
        """The record's JSON bytes (`esm.events.encode_record`), written now if the source gave only their size."""
        encoded = self._encoded
        if encoded is None:
            encoded = self._encoded = encode_stream_record(self.record)
        return encoded

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StreamRecord):
            return NotImplemented
        return (self.sequence, self.sequence_number, self.key, self.arrival, self.record, self.data) == (
            other.sequence,
            other.sequence_number,
            other.key,
            other.arrival,
            other.record,
            other.data,
        ) and self.encoded == other.encoded

    __hash__ = None  # type: ignore[assignment]  # mutable contents (the record dict)

    def __repr__(self) -> str:
        return f"StreamRecord(sequence_number={self.sequence_number!r}, key={self.key!r}, size={self.size})"


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


def sequence_value(sequence_number: str) -> int:
    """A sequence number as an integer, for ordering; ValueError unless it is plain ASCII digits.

    `int` alone would take "+5", " 5", "5_0" or other scripts' digits ("٣٤٥"): a stream never
    sends those, so such a record is malformed, not a record to order by a number it does not carry.
    """
    if not (sequence_number.isascii() and sequence_number.isdigit()):
        raise ValueError(f"a sequence number must be decimal digits, not {sequence_number!r}")
    return int(sequence_number)


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
class Checkpointer:
    """The highest sequence number below which every record read is done (DESIGN.md rule 2).

    `add` every record in read order; `complete` records in any order; `position` is the
    sequence number (as spelled by the stream) of the last record of the contiguous completed
    prefix, or None while nothing new is covered. The checkpoint never passes a record that was
    read and not completed. Completing a record that is not outstanding changes nothing.
    """

    _pending: deque[str] = field(default_factory=deque)
    """The sequence numbers read and not yet passed by the position, in read order."""
    _open: set[str] = field(default_factory=set)
    """Those of them not completed yet."""
    position: str | None = None

    def add(self, records: Iterable[StreamRecord]) -> None:
        """Track records just read, in shard order."""
        numbers = [r.sequence_number for r in records]
        self._pending.extend(numbers)
        self._open.update(numbers)

    def complete(self, records: Iterable[StreamRecord]) -> bool:
        """Mark records done; True if the checkpoint position moved."""
        still_open = self._open
        for r in records:
            still_open.discard(r.sequence_number)
        pending = self._pending
        moved = False
        while pending and pending[0] not in still_open:
            self.position = pending.popleft()
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
    except MALFORMED as exc:
        raise RetriableAwsError("GetRecords", "MalformedRecord", f"{type(exc).__name__}: {exc}") from exc
    return records, response
