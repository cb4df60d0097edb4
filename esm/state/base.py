"""The checkpoint store interface: where a stream mapping's progress per shard is kept.

A checkpoint says where a shard consumer resumes. The shard consumer writes one after every
contiguous advance (DESIGN.md rule 2) and `SHARD_END` when a closed shard is drained; a
checkpoint is durable when `save` returns, so nothing is ever skipped after a crash: at most the
batches in flight are repeated (ESM-SPEC.md §4.2, "Nothing lost").

Two backends implement `CheckpointStore`: SQLite for one replica (`esm.state.sqlite`) and, in a
later issue, the DynamoDB lease table shared by several replicas, whose `save` is fenced by the
lease (it raises `esm.errors.LeaseLostError` when another replica took the shard).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["Checkpoint", "CheckpointKey", "CheckpointStore", "Position"]


class Position(enum.StrEnum):
    """How a checkpoint says to resume; the names are the ShardIteratorType values they map to."""

    AFTER_SEQUENCE_NUMBER = "AFTER_SEQUENCE_NUMBER"
    """Every record up to and including `sequence` is done: resume after it (what the daemon writes)."""
    AT_SEQUENCE_NUMBER = "AT_SEQUENCE_NUMBER"
    """Resume at `sequence`, processing it again (`esm checkpoints set --to SEQ`: replay)."""
    TRIM_HORIZON = "TRIM_HORIZON"
    """Resume at the oldest record the stream still holds."""
    LATEST = "LATEST"
    """Resume at the tip: only records written after the consumer starts."""
    AT_TIMESTAMP = "AT_TIMESTAMP"
    """Resume at the first record that arrived at or after `timestamp` (Kinesis only)."""
    SHARD_END = "SHARD_END"
    """The shard is closed and every record of it is done: never read it again; children may start."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Where a shard resumes, and when that was written.

    - `position`: how to resume (see `Position`).
    - `sequence`: the sequence number, as the stream spells it, for the *_SEQUENCE_NUMBER positions;
      None otherwise.
    - `timestamp`: epoch seconds, for AT_TIMESTAMP; None otherwise.
    - `updated_at`: epoch seconds of the write (set by the store on save).
    - `window_state`: the tumbling-window state JSON kept with the checkpoint (issue #4); None
      when the mapping has no window.
    """

    position: Position
    sequence: str | None = None
    timestamp: float | None = None
    updated_at: float = 0.0
    window_state: str | None = None

    def __post_init__(self) -> None:
        needs_sequence = self.position in (Position.AFTER_SEQUENCE_NUMBER, Position.AT_SEQUENCE_NUMBER)
        if needs_sequence != (self.sequence is not None):
            raise ValueError(f"{self.position} checkpoint needs a sequence number exactly when it is by sequence")
        if (self.position is Position.AT_TIMESTAMP) != (self.timestamp is not None):
            raise ValueError("an AT_TIMESTAMP checkpoint needs a timestamp, and only it")

    @classmethod
    def after(cls, sequence: str) -> Checkpoint:
        """Done up to and including `sequence`."""
        return cls(Position.AFTER_SEQUENCE_NUMBER, sequence)

    @property
    def finished(self) -> bool:
        """True when the shard is closed and fully processed."""
        return self.position is Position.SHARD_END


@dataclass(frozen=True, slots=True)
class CheckpointKey:
    """Which shard of which stream of which mapping a checkpoint belongs to.

    `token`: with the DynamoDB lease table, the acquisition of the lease the writer was started
    with; a write with a token that is not the current one is refused (a consumer of a lost lease
    never writes again, even if this replica took the lease back). Not part of equality.
    """

    mapping_uuid: str
    stream_arn: str
    shard_id: str
    token: str | None = field(default=None, compare=False)


class CheckpointStore(Protocol):
    """Durable checkpoints; an async context manager that opens and closes its storage."""

    async def load(self, mapping_uuid: str, stream_arn: str) -> dict[str, Checkpoint]:
        """Every checkpoint of one mapping's stream, by shard id."""
        ...

    async def save(self, key: CheckpointKey, checkpoint: Checkpoint) -> None:
        """Write a checkpoint; it is durable (survives a crash of the process) when this returns."""
        ...

    async def save_all(self, checkpoints: Sequence[tuple[CheckpointKey, Checkpoint]]) -> None:
        """Write several checkpoints atomically (all or none); durable when this returns."""
        ...

    async def list_all(self) -> list[tuple[CheckpointKey, Checkpoint]]:
        """Every checkpoint in the store, ordered by mapping, stream and shard."""
        ...

    async def __aenter__(self) -> CheckpointStore:
        """Open the storage (create it if missing)."""
        ...

    async def __aexit__(self, *exc: object) -> None:
        """Close the storage."""
        ...
