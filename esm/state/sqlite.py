"""The embedded checkpoint store: one SQLite file for one replica (`state.sqlite`).

Durability: the database runs in WAL mode with `synchronous=FULL` and every `save` is its own
committed transaction, so a checkpoint survives a crash of the process (or the machine) the moment
`save` returns (ESM-SPEC.md §4.2, "Nothing lost"). sqlite3 blocks, so every call runs on one
dedicated worker thread per store: the event loop never waits on disk, and the calls are
serialized without a second lock (the connection never leaves that thread).

One file serves one replica. The daemon opens the store with `lock=True` and holds an exclusive
`flock` on the sibling file `<file>.lock` (holding its pid) until it closes the store, so a second
daemon, or `esm checkpoints set`, on the same file fails at once with `StateLockedError` instead
of two writers racing over the same shards. Readers (`esm checkpoints list`, tests) open it with
`lock=False` and coexist with the writer: WAL lets them read while it writes.

The schema is versioned with `PRAGMA user_version` and upgraded by `_MIGRATIONS` when the daemon
opens the file; a reader never changes an existing schema, and a file written by a newer esm is
refused rather than misread.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from esm.errors import EsmError
from esm.state.base import Checkpoint, CheckpointKey, Position

__all__ = ["SqliteCheckpointStore", "StateLockedError", "StateUnusableError", "lock_path"]

_T = TypeVar("_T")

_MIGRATIONS: tuple[str, ...] = (
    # 0 -> 1: the checkpoint table, one row per shard of a mapping's stream.
    """
    CREATE TABLE checkpoints (
        mapping_uuid TEXT NOT NULL,
        stream_arn   TEXT NOT NULL,
        shard_id     TEXT NOT NULL,
        position     TEXT NOT NULL,
        sequence     TEXT,
        timestamp    REAL,
        updated_at   REAL NOT NULL,
        window_state TEXT,
        PRIMARY KEY (mapping_uuid, stream_arn, shard_id)
    ) WITHOUT ROWID
    """,
)
"""Schema upgrades: entry i takes a file from `user_version` i to i + 1."""

SCHEMA_VERSION = len(_MIGRATIONS)
"""The schema version this esm writes (`PRAGMA user_version`); newer files are refused."""

_BUSY_TIMEOUT_SECONDS = 10.0
# Literal statements (no string building): every value goes through a parameter.
_SELECT_ONE_STREAM = (
    "SELECT mapping_uuid, stream_arn, shard_id, position, sequence, timestamp, updated_at, window_state "
    "FROM checkpoints WHERE mapping_uuid = ? AND stream_arn = ? ORDER BY shard_id"
)
_SELECT_ALL = (
    "SELECT mapping_uuid, stream_arn, shard_id, position, sequence, timestamp, updated_at, window_state "
    "FROM checkpoints ORDER BY mapping_uuid, stream_arn, shard_id"
)
_UPSERT = (
    "INSERT INTO checkpoints (mapping_uuid, stream_arn, shard_id, position, sequence, timestamp, updated_at, "
    "window_state) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (mapping_uuid, stream_arn, shard_id) DO UPDATE SET position = excluded.position, "
    "sequence = excluded.sequence, timestamp = excluded.timestamp, updated_at = excluded.updated_at, "
    "window_state = excluded.window_state"
)


class StateUnusableError(EsmError):
    """The state file cannot be used: unreadable, corrupt, not a database, or from a newer esm."""


class StateLockedError(StateUnusableError):
    """Another esm process holds the state file (one SQLite file serves one replica)."""


def lock_path(path: Path) -> Path:
    """The lock file that guards a state file: `<file>.lock` next to it."""
    return path.with_name(path.name + ".lock")


class SqliteCheckpointStore:
    """`CheckpointStore` on a local SQLite file; see the module docstring for durability and locking.

    `lock=True` (the daemon, `esm checkpoints set`) takes the file's exclusive lock on open and
    raises `StateLockedError` when another process holds it; `lock=False` is for readers. Opening
    creates the parent folder, the file and the table if missing; an unusable file raises
    `StateUnusableError` naming the path.
    """

    def __init__(self, path: Path, *, lock: bool = True) -> None:
        self.path = Path(path)
        self.lock = lock
        self._executor: ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None
        self._lock_fd: int | None = None

    # lifecycle -------------------------------------------------------------------------------

    async def __aenter__(self) -> SqliteCheckpointStore:
        """Open (and if needed create or upgrade) the file, taking its lock when `lock` is set."""
        if self._executor is not None:
            raise RuntimeError(f"{self.path}: the checkpoint store is already open")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="esm-state")
        try:
            await self._run(self._open)
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Close the database and release the lock."""
        executor, self._executor = self._executor, None
        if executor is None:
            return
        try:
            # The single worker runs this after anything still queued (even a cancelled open).
            await asyncio.get_running_loop().run_in_executor(executor, self._close)
        finally:
            executor.shutdown(wait=False)

    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.lock:
                self._take_lock()
            db = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_SECONDS, isolation_level=None)
            self._db = db
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            self._migrate(db)
        except sqlite3.Error as exc:
            raise StateUnusableError(
                f"{self.path}: cannot use the checkpoint state file: {exc} "
                "(is it an esm state file? move it away to start without checkpoints)"
            ) from None
        except OSError as exc:
            raise StateUnusableError(
                f"{self.path}: cannot use the checkpoint state file: {exc.strerror or exc}"
            ) from None

    def _migrate(self, db: sqlite3.Connection) -> None:
        version = self._version(db)
        if version == SCHEMA_VERSION:
            return
        if version == 0 or self.lock:
            # A new file is set up by whoever opens it first; an older one only by the writer.
            db.execute("BEGIN IMMEDIATE")
            try:
                version = self._version(db)  # re-read under the write lock: another opener may have won
                for step in range(version, SCHEMA_VERSION):
                    db.execute(_MIGRATIONS[step])
                db.execute(f"PRAGMA user_version = {max(version, SCHEMA_VERSION)}")
                db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise
        else:
            raise StateUnusableError(
                f"{self.path}: the checkpoint state file has schema version {version}, older than this esm's "
                f"{SCHEMA_VERSION}; start the daemon once to upgrade it"
            )

    def _version(self, db: sqlite3.Connection) -> int:
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise StateUnusableError(
                f"{self.path}: the checkpoint state file was written by a newer esm (schema version {version}; "
                f"this esm knows up to {SCHEMA_VERSION}); upgrade esm to use it"
            )
        return version

    def _take_lock(self) -> None:
        fd = os.open(lock_path(self.path), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_pid(fd)
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise StateLockedError(
                f"{self.path}: the state file is in use by another esm process"
                + (f" (pid {holder})" if holder is not None else "")
                + "; one SQLite state file serves one replica: stop that process first, "
                "or use `state: {dynamodb: ...}` to run several replicas"
            ) from None
        self._lock_fd = fd  # from here on, closing the store releases the lock
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)

    def _close(self) -> None:
        try:
            if self._db is not None:
                self._db.close()
        finally:
            self._db = None
            fd, self._lock_fd = self._lock_fd, None
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, 0)
                os.close(fd)  # closing the only descriptor releases the flock

    async def _run(self, fn: Callable[[], _T]) -> _T:
        if self._executor is None:
            raise RuntimeError(f"{self.path}: the checkpoint store is not open")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def _query(self, what: str, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run `fn` on the connection in the worker thread; sqlite errors name the file."""

        def call() -> _T:
            if self._db is None:
                raise RuntimeError(f"{self.path}: the checkpoint store is not open")
            try:
                return fn(self._db)
            except sqlite3.Error as exc:
                raise StateUnusableError(f"{self.path}: {what} failed: {exc}") from None

        return await self._run(call)

    # CheckpointStore -------------------------------------------------------------------------

    async def load(self, mapping_uuid: str, stream_arn: str) -> dict[str, Checkpoint]:
        """Every checkpoint of one mapping's stream, by shard id."""
        rows = await self._query(
            "reading checkpoints",
            lambda db: db.execute(_SELECT_ONE_STREAM, (mapping_uuid, stream_arn)).fetchall(),
        )
        return {key.shard_id: checkpoint for key, checkpoint in map(self._row, rows)}

    async def save(self, key: CheckpointKey, checkpoint: Checkpoint) -> None:
        """Insert or replace a shard's checkpoint, stamped with the time now; durable when this returns."""
        values = (
            key.mapping_uuid,
            key.stream_arn,
            key.shard_id,
            checkpoint.position.value,
            checkpoint.sequence,
            checkpoint.timestamp,
            time.time(),
            checkpoint.window_state,
        )
        # Autocommit: the statement is its own transaction, fsynced (synchronous=FULL) before it returns.
        await self._query("saving a checkpoint", lambda db: db.execute(_UPSERT, values))

    async def save_all(self, checkpoints: Sequence[tuple[CheckpointKey, Checkpoint]]) -> None:
        """Write several checkpoints in one transaction: all of them are stored, or none."""
        now = time.time()
        rows = [
            (
                k.mapping_uuid,
                k.stream_arn,
                k.shard_id,
                c.position.value,
                c.sequence,
                c.timestamp,
                now,
                c.window_state,
            )
            for k, c in checkpoints
        ]

        def write(db: sqlite3.Connection) -> None:
            with db:  # one transaction, committed (and fsynced) on leaving the block
                db.execute("BEGIN")
                db.executemany(_UPSERT, rows)

        await self._query("saving checkpoints", write)

    async def list_all(self) -> list[tuple[CheckpointKey, Checkpoint]]:
        """Every checkpoint in the store, ordered by mapping, stream and shard."""
        rows = await self._query(
            "listing checkpoints",
            lambda db: db.execute(_SELECT_ALL).fetchall(),
        )
        return [self._row(row) for row in rows]

    def _row(self, row: tuple[Any, ...]) -> tuple[CheckpointKey, Checkpoint]:
        mapping_uuid, stream_arn, shard_id, position, sequence, timestamp, updated_at, window_state = row
        key = CheckpointKey(mapping_uuid, stream_arn, shard_id)
        try:
            checkpoint = Checkpoint(
                Position(position),
                sequence,
                None if timestamp is None else float(timestamp),
                float(updated_at),
                window_state,
            )
        except (ValueError, TypeError) as exc:
            raise StateUnusableError(
                f"{self.path}: the checkpoint of {mapping_uuid} {stream_arn} {shard_id} is invalid: {exc}"
            ) from None
        return key, checkpoint


def _read_pid(fd: int) -> int | None:
    """The pid the lock holder wrote into the lock file, if it is readable."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
