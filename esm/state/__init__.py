"""Checkpoint stores for stream mappings: the interface (`esm.state.base`) and its backends.

`SqliteCheckpointStore` (`esm.state.sqlite`) is the embedded store for one replica; the DynamoDB
lease table for several replicas comes in a later issue behind the same `CheckpointStore`.
"""

from __future__ import annotations

from esm.state.base import Checkpoint, CheckpointKey, CheckpointStore, Position
from esm.state.sqlite import SCHEMA_VERSION, SqliteCheckpointStore, StateLockedError, StateUnusableError, lock_path

__all__ = [
    "SCHEMA_VERSION",
    "Checkpoint",
    "CheckpointKey",
    "CheckpointStore",
    "Position",
    "SqliteCheckpointStore",
    "StateLockedError",
    "StateUnusableError",
    "lock_path",
]
