"""The SQLite checkpoint store: round trips, durability, ordering, the one-replica lock, bad files.

Every test uses a real SQLite file in `tmp_path`; the lock is a real `flock`, so two stores in one
process conflict exactly as two processes do.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import sqlite3
import time
from pathlib import Path

import pytest

from esm.errors import EsmError
from esm.state import (
    SCHEMA_VERSION,
    Checkpoint,
    CheckpointKey,
    CheckpointStore,
    Position,
    SqliteCheckpointStore,
    StateLockedError,
    StateUnusableError,
    lock_path,
)

MAPPING = "6f9a0e53-5d8e-4e3b-9a57-3f2c1d0b4a11"
OTHER_MAPPING = "0b5c7a1e-2d3f-4a6b-8c9d-0e1f2a3b4c5d"
STREAM = "arn:aws:kinesis:us-east-1:123456789012:stream/clicks"
OTHER_STREAM = "arn:aws:kinesis:us-east-1:123456789012:stream/views"
SEQ = "49590338271490256608559692538361571095921575989136588898"

EVERY_POSITION = [
    Checkpoint.after(SEQ),
    Checkpoint(Position.AT_SEQUENCE_NUMBER, SEQ),
    Checkpoint(Position.TRIM_HORIZON),
    Checkpoint(Position.LATEST),
    Checkpoint(Position.AT_TIMESTAMP, timestamp=1795000000.125),
    Checkpoint(Position.SHARD_END),
    Checkpoint(Position.AFTER_SEQUENCE_NUMBER, "7", window_state='{"count": 3}'),
]


def key(shard: str = "shardId-000000000000", mapping: str = MAPPING, stream: str = STREAM) -> CheckpointKey:
    """A checkpoint key with test defaults."""
    return CheckpointKey(mapping, stream, shard)


def same(a: Checkpoint, b: Checkpoint) -> bool:
    """Equal except for `updated_at`, which the store sets."""
    return (a.position, a.sequence, a.timestamp, a.window_state) == (
        b.position,
        b.sequence,
        b.timestamp,
        b.window_state,
    )


class TestRoundTrip:
    """What is saved is what is loaded."""

    @pytest.mark.parametrize("checkpoint", EVERY_POSITION, ids=lambda c: c.position.value)
    async def test_every_position_round_trips(self, tmp_path: Path, checkpoint: Checkpoint) -> None:
        """Each kind of position comes back with its sequence, timestamp and window state."""
        async with SqliteCheckpointStore(tmp_path / "state.db") as store:
            await store.save(key(), checkpoint)
            loaded = await store.load(MAPPING, STREAM)
        assert list(loaded) == ["shardId-000000000000"]
        assert same(loaded["shardId-000000000000"], checkpoint)

    async def test_save_stamps_the_time_of_writing(self, tmp_path: Path) -> None:
        """`updated_at` is the time of the save, whatever the caller passed."""
        async with SqliteCheckpointStore(tmp_path / "state.db") as store:
            before = time.time()
            await store.save(key(), Checkpoint(Position.LATEST, updated_at=1.0))
            after = time.time()
            loaded = (await store.load(MAPPING, STREAM))["shardId-000000000000"]
        assert before <= loaded.updated_at <= after

    async def test_load_returns_only_one_mapping_stream(self, tmp_path: Path) -> None:
        """`load` keeps mappings and streams apart."""
        async with SqliteCheckpointStore(tmp_path / "state.db") as store:
            await store.save(key("shardId-1"), Checkpoint.after("1"))
            await store.save(key("shardId-2"), Checkpoint.after("2"))
            await store.save(key("shardId-1", mapping=OTHER_MAPPING), Checkpoint.after("3"))
            await store.save(key("shardId-1", stream=OTHER_STREAM), Checkpoint.after("4"))
            loaded = await store.load(MAPPING, STREAM)
            nothing = await store.load(MAPPING, "arn:aws:kinesis:us-east-1:123456789012:stream/none")
        assert {s: c.sequence for s, c in loaded.items()} == {"shardId-1": "1", "shardId-2": "2"}
        assert nothing == {}

    async def test_the_store_satisfies_the_protocol(self, tmp_path: Path) -> None:
        """`SqliteCheckpointStore` is usable wherever a `CheckpointStore` is expected."""
        store: CheckpointStore = SqliteCheckpointStore(tmp_path / "state.db")
        async with store as opened:
            assert await opened.list_all() == []


class TestDurability:
    """A save is committed to disk when it returns."""

    async def test_a_save_survives_closing_and_reopening(self, tmp_path: Path) -> None:
        """A second store opened after the first closed sees the checkpoint (no explicit commit)."""
        async with SqliteCheckpointStore(tmp_path / "state.db") as store:
            await store.save(key(), Checkpoint.after(SEQ))
        async with SqliteCheckpointStore(tmp_path / "state.db") as store:
            loaded = await store.load(MAPPING, STREAM)
        assert loaded["shardId-000000000000"].sequence == SEQ

    async def test_a_save_is_visible_to_another_connection_before_close(self, tmp_path: Path) -> None:
        """The save is committed when it returns, not when the store closes."""
        async with SqliteCheckpointStore(tmp_path / "state.db") as writer:
            await writer.save(key(), Checkpoint.after(SEQ))
            db = sqlite3.connect(tmp_path / "state.db")
            try:
                rows = db.execute("SELECT shard_id, sequence FROM checkpoints").fetchall()
            finally:
                db.close()
        assert rows == [("shardId-000000000000", SEQ)]

    async def test_the_file_is_in_wal_mode(self, tmp_path: Path) -> None:
        """WAL is set on the file, so readers never block the writer."""
        async with SqliteCheckpointStore(tmp_path / "state.db"):
            pass
        db = sqlite3.connect(tmp_path / "state.db")
        try:
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        finally:
            db.close()

    async def test_missing_folders_are_created(self, tmp_path: Path) -> None:
        """Opening creates the parent folders and the file."""
        path = tmp_path / "a" / "b" / "state.db"
        async with SqliteCheckpointStore(path) as store:
            await store.save(key(), Checkpoint(Position.TRIM_HORIZON))
        assert path.is_file()

    async def test_concurrent_saves_all_land(self, tmp_path: Path) -> None:
        """Saves issued at once from many tasks are serialized, and every one is stored."""
        async with SqliteCheckpointStore(tmp_path / "state.db") as store:
            await asyncio.gather(*(store.save(key(f"shardId-{i:03}"), Checkpoint.after(str(i))) for i in range(50)))
            loaded = await store.load(MAPPING, STREAM)
        assert {s: c.sequence for s, c in loaded.items()} == {f"shardId-{i:03}": str(i) for i in range(50)}


class TestUpsertAndOrder:
    """One row per shard, listed in a stable order."""

    async def test_a_second_save_replaces_the_first(self, tmp_path: Path) -> None:
        """Saving a shard again overwrites every field of its row."""
        async with SqliteCheckpointStore(tmp_path / "state.db") as store:
            await store.save(key(), Checkpoint(Position.AFTER_SEQUENCE_NUMBER, "1", window_state="{}"))
            await store.save(key(), Checkpoint(Position.SHARD_END))
            rows = await store.list_all()
        assert len(rows) == 1
        assert same(rows[0][1], Checkpoint(Position.SHARD_END))

    async def test_list_all_orders_by_mapping_stream_and_shard(self, tmp_path: Path) -> None:
        """`list_all` sorts by mapping UUID, then stream ARN, then shard id, whatever the write order."""
        keys = [
            key("shardId-2", mapping=OTHER_MAPPING),
            key("shardId-1", stream=OTHER_STREAM),
            key("shardId-2"),
            key("shardId-1", mapping=OTHER_MAPPING),
            key("shardId-1"),
        ]
        async with SqliteCheckpointStore(tmp_path / "state.db") as store:
            for k in keys:
                await store.save(k, Checkpoint(Position.LATEST))
            listed = [k for k, _ in await store.list_all()]
        assert listed == sorted(keys, key=lambda k: (k.mapping_uuid, k.stream_arn, k.shard_id))


class TestLock:
    """One SQLite state file serves one replica: the daemon's lock keeps others out."""

    async def test_a_second_locking_store_is_refused(self, tmp_path: Path) -> None:
        """While one store holds the lock, another fails with the holder's pid and the way out."""
        async with SqliteCheckpointStore(tmp_path / "state.db"):
            with pytest.raises(StateLockedError) as caught:
                await SqliteCheckpointStore(tmp_path / "state.db").__aenter__()
        message = str(caught.value)
        assert str(tmp_path / "state.db") in message
        assert "in use by another esm process" in message
        assert f"pid {os.getpid()}" in message
        assert "one replica" in message
        assert "state: {dynamodb: ...}" in message
        assert isinstance(caught.value, EsmError)

    async def test_the_lock_is_released_on_close(self, tmp_path: Path) -> None:
        """After the holder closes, the next store opens and sees its checkpoints."""
        async with SqliteCheckpointStore(tmp_path / "state.db") as first:
            await first.save(key(), Checkpoint.after("5"))
        async with SqliteCheckpointStore(tmp_path / "state.db") as second:
            assert (await second.load(MAPPING, STREAM))["shardId-000000000000"].sequence == "5"

    async def test_the_lock_file_names_the_holder(self, tmp_path: Path) -> None:
        """The sibling `<file>.lock` holds the pid of the process holding the lock."""
        path = tmp_path / "state.db"
        async with SqliteCheckpointStore(path):
            assert lock_path(path) == tmp_path / "state.db.lock"
            assert lock_path(path).read_text().strip() == str(os.getpid())

    async def test_readers_coexist_with_a_locked_writer(self, tmp_path: Path) -> None:
        """Stores opened with lock=False read while the writer holds the lock, and see its saves."""
        path = tmp_path / "state.db"
        async with (
            SqliteCheckpointStore(path) as writer,
            SqliteCheckpointStore(path, lock=False) as a,
            SqliteCheckpointStore(path, lock=False) as b,
        ):
            await writer.save(key(), Checkpoint.after("9"))
            assert [k.shard_id for k, _ in await a.list_all()] == ["shardId-000000000000"]
            assert (await b.load(MAPPING, STREAM))["shardId-000000000000"].sequence == "9"
            await writer.save(key(), Checkpoint.after("10"))
            assert (await a.load(MAPPING, STREAM))["shardId-000000000000"].sequence == "10"

    async def test_a_reader_does_not_take_the_lock(self, tmp_path: Path) -> None:
        """A lock=False store leaves the lock free for the daemon."""
        path = tmp_path / "state.db"
        async with SqliteCheckpointStore(path, lock=False), SqliteCheckpointStore(path) as writer:
            await writer.save(key(), Checkpoint(Position.LATEST))

    async def test_a_failed_open_releases_the_lock(self, tmp_path: Path) -> None:
        """When the file turns out unusable, the lock taken on the way is given back."""
        path = tmp_path / "state.db"
        path.write_bytes(b"this is not a database, just some text " * 100)
        with pytest.raises(StateUnusableError):
            await SqliteCheckpointStore(path).__aenter__()
        fd = os.open(lock_path(path), os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises if still held
        finally:
            os.close(fd)


class TestUnusableFile:
    """A file esm cannot use gives one clear error naming it, never a raw sqlite traceback."""

    @pytest.mark.parametrize("lock", [True, False])
    async def test_a_corrupt_file_is_named(self, tmp_path: Path, lock: bool) -> None:
        """Garbage in place of the database raises StateUnusableError with the path."""
        path = tmp_path / "state.db"
        path.write_bytes(os.urandom(8192))
        with pytest.raises(StateUnusableError) as caught:
            await SqliteCheckpointStore(path, lock=lock).__aenter__()
        assert str(path) in str(caught.value)
        assert "cannot use the checkpoint state file" in str(caught.value)
        assert caught.value.__cause__ is None
        assert not isinstance(caught.value, StateLockedError)

    async def test_a_folder_in_the_way_is_named(self, tmp_path: Path) -> None:
        """A directory where the file should be is reported as unusable."""
        path = tmp_path / "state.db"
        path.mkdir()
        with pytest.raises(StateUnusableError, match="cannot use the checkpoint state file"):
            await SqliteCheckpointStore(path, lock=False).__aenter__()

    async def test_a_file_from_a_newer_esm_is_refused(self, tmp_path: Path) -> None:
        """A schema version above this esm's is refused rather than misread."""
        path = tmp_path / "state.db"
        async with SqliteCheckpointStore(path):
            pass
        db = sqlite3.connect(path)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        db.close()
        with pytest.raises(StateUnusableError, match="written by a newer esm"):
            await SqliteCheckpointStore(path).__aenter__()

    async def test_an_invalid_row_is_named(self, tmp_path: Path) -> None:
        """A row no esm wrote (an unknown position) is reported with its key."""
        path = tmp_path / "state.db"
        async with SqliteCheckpointStore(path):
            pass
        db = sqlite3.connect(path)
        db.execute(
            "INSERT INTO checkpoints VALUES (?, ?, ?, ?, NULL, NULL, 0, NULL)", (MAPPING, STREAM, "shardId-9", "BOGUS")
        )
        db.commit()
        db.close()
        async with SqliteCheckpointStore(path, lock=False) as store:
            with pytest.raises(StateUnusableError, match="shardId-9 is invalid"):
                await store.list_all()

    async def test_a_closed_store_cannot_be_used(self, tmp_path: Path) -> None:
        """Using a store outside `async with` is a programming error."""
        store = SqliteCheckpointStore(tmp_path / "state.db")
        with pytest.raises(RuntimeError, match="not open"):
            await store.load(MAPPING, STREAM)
