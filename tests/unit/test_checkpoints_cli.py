"""`esm checkpoints list` and `esm checkpoints set`, called as `esm.cli.main([...])`.

The configuration files are real YAML in `tmp_path` and the state file a real SQLite file next to
them; "the daemon is running" is a real second process holding the state file's lock.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from esm.checkpoints import parse_position
from esm.cli import main
from esm.state import Checkpoint, CheckpointKey, Position, SqliteCheckpointStore

ROOT = Path(__file__).resolve().parents[2]

KINESIS = "arn:aws:kinesis:us-east-1:123456789012:stream/s1"
DYNAMODB = "arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2026-01-01T00:00:00.000"
QUEUE = "arn:aws:sqs:us-east-1:123456789012:q1"
K_UUID = "11111111-1111-4111-8111-111111111111"
D_UUID = "22222222-2222-4222-8222-222222222222"
Q_UUID = "33333333-3333-4333-8333-333333333333"
GONE_UUID = "44444444-4444-4444-8444-444444444444"
SHARD0 = "shardId-000000000000"
SHARD1 = "shardId-000000000001"
SEQ0 = "49590338271490256608559692538361571095921575989136588898"
SEQ1 = "49590338271490256608559692540925702759324208523137515618"

CONFIG = f"""\
functions:
  f: {{handler: "handlers:h"}}
  g: {{handler: "handlers:g"}}
state: {{sqlite: ./state.db}}
event_source_mappings:
  - {{UUID: {K_UUID}, EventSourceArn: "{KINESIS}", FunctionName: f, StartingPosition: TRIM_HORIZON}}
  - {{UUID: {D_UUID}, EventSourceArn: "{DYNAMODB}", FunctionName: g, StartingPosition: LATEST}}
  - {{UUID: {Q_UUID}, EventSourceArn: "{QUEUE}", FunctionName: f}}
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A configuration with a Kinesis, a DynamoDB Streams and an SQS mapping; state in ./state.db."""
    path = tmp_path / "esm.yaml"
    path.write_text(CONFIG)
    return path


@pytest.fixture
def db(config: Path) -> Path:
    """The state file of `config`, seeded with two Kinesis shards, two DynamoDB shards and a gone mapping."""
    path = config.parent / "state.db"
    seed(
        path,
        (CheckpointKey(K_UUID, KINESIS, SHARD0), Checkpoint.after(SEQ0)),
        (CheckpointKey(K_UUID, KINESIS, SHARD1), Checkpoint(Position.SHARD_END)),
        (CheckpointKey(D_UUID, DYNAMODB, SHARD0), Checkpoint.after("100")),
        (CheckpointKey(D_UUID, DYNAMODB, SHARD1), Checkpoint(Position.LATEST)),
        (CheckpointKey(GONE_UUID, KINESIS, SHARD0), Checkpoint(Position.AT_TIMESTAMP, timestamp=1790000000.5)),
    )
    return path


def seed(path: Path, *rows: tuple[CheckpointKey, Checkpoint]) -> None:
    """Write checkpoints to a state file, as the daemon would."""

    async def write() -> None:
        async with SqliteCheckpointStore(path) as store:
            for k, c in rows:
                await store.save(k, c)

    asyncio.run(write())


def stored(path: Path) -> dict[tuple[str, str], Checkpoint]:
    """Every checkpoint in a state file, by (mapping UUID, shard id)."""

    async def read() -> list[tuple[CheckpointKey, Checkpoint]]:
        async with SqliteCheckpointStore(path, lock=False) as store:
            return await store.list_all()

    return {(k.mapping_uuid, k.shard_id): c for k, c in asyncio.run(read())}


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """`esm ARGS` in-process: exit code, stdout, stderr."""
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def iso(seconds: float) -> str:
    """ISO 8601 UTC with milliseconds, as the table prints times with a fraction."""
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@pytest.fixture
def daemon(db: Path) -> Iterator[int]:
    """Another process holding the state file's lock, as a running daemon does; yields its pid."""
    code = (
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from esm.state import SqliteCheckpointStore\n"
        "async def hold():\n"
        "    async with SqliteCheckpointStore(Path(sys.argv[1])):\n"
        "        print('ready', flush=True)\n"
        "        await asyncio.to_thread(sys.stdin.read)\n"
        "asyncio.run(hold())\n"
    )
    env = os.environ | {"PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(db)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        yield proc.pid
    finally:
        proc.communicate(timeout=30)


class TestList:
    """`esm checkpoints list` shows every checkpoint, readable or as JSON."""

    def test_the_table_shows_every_checkpoint(self, capsys: pytest.CaptureFixture[str], config: Path, db: Path) -> None:
        """One aligned row per checkpoint with mapping, function, stream, shard, position, where and when."""
        code, out, err = run(capsys, "checkpoints", "list", "--config", str(config))
        assert (code, err) == (0, "")
        lines = out.splitlines()
        assert lines[0].split() == [
            "MAPPING",
            "FUNCTION",
            "STREAM",
            "SHARD",
            "POSITION",
            "SEQUENCE/TIMESTAMP",
            "UPDATED",
            "WINDOW",
        ]
        rows = [line.split() for line in lines[1:]]
        updated = {(k.mapping_uuid, k.shard_id): iso(c.updated_at) for k, c in _keyed(db)}
        assert rows == [
            [K_UUID, "f", KINESIS, SHARD0, "AFTER_SEQUENCE_NUMBER", SEQ0, updated[K_UUID, SHARD0], "-"],
            [K_UUID, "f", KINESIS, SHARD1, "SHARD_END", "-", updated[K_UUID, SHARD1], "-"],
            [D_UUID, "g", DYNAMODB, SHARD0, "AFTER_SEQUENCE_NUMBER", "100", updated[D_UUID, SHARD0], "-"],
            [D_UUID, "g", DYNAMODB, SHARD1, "LATEST", "-", updated[D_UUID, SHARD1], "-"],
            [
                GONE_UUID,
                "-",
                KINESIS,
                SHARD0,
                "AT_TIMESTAMP",
                "2026-09-21T14:13:20.500Z",
                updated[GONE_UUID, SHARD0],
                "-",
            ],
        ]
        starts = {line.index("shardId-") for line in lines[1:]}
        assert len(starts) == 1, "the shard column is aligned"
        assert lines[0].index("SHARD") in starts

    def test_the_table_shows_an_open_tumbling_window_but_not_its_state(
        self, capsys: pytest.CaptureFixture[str], config: Path, db: Path
    ) -> None:
        seed(
            db,
            (
                CheckpointKey(K_UUID, KINESIS, SHARD0),
                Checkpoint(
                    Position.AFTER_SEQUENCE_NUMBER,
                    "7",
                    window_state='{"start":1607497440,"end":1607497560,"state":{"secret":1}}',
                ),
            ),
            (CheckpointKey(K_UUID, KINESIS, SHARD1), Checkpoint(Position.AFTER_SEQUENCE_NUMBER, "8", window_state="x")),
        )
        code, out, _ = run(capsys, "checkpoints", "list", "--config", str(config), "--mapping", K_UUID)
        assert code == 0
        windows = {line.split()[3]: line.split()[-1] for line in out.splitlines()[1:]}
        assert windows == {SHARD0: "2020-12-09T07:04:00Z/2020-12-09T07:06:00Z", SHARD1: "unreadable"}
        assert "secret" not in out

    def test_json_lists_every_checkpoint(self, capsys: pytest.CaptureFixture[str], config: Path, db: Path) -> None:
        """--format json prints an array of objects with ISO 8601 UTC times and null for what is absent."""
        code, out, _ = run(capsys, "checkpoints", "list", "--config", str(config), "--format", "json")
        assert code == 0
        rows = json.loads(out)
        assert [(r["mapping_uuid"], r["shard_id"]) for r in rows] == [
            (K_UUID, SHARD0),
            (K_UUID, SHARD1),
            (D_UUID, SHARD0),
            (D_UUID, SHARD1),
            (GONE_UUID, SHARD0),
        ]
        assert rows[0] == {
            "mapping_uuid": K_UUID,
            "function": "f",
            "stream_arn": KINESIS,
            "shard_id": SHARD0,
            "position": "AFTER_SEQUENCE_NUMBER",
            "sequence": SEQ0,
            "timestamp": None,
            "updated_at": rows[0]["updated_at"],
            "window_state": None,
        }
        assert datetime.fromisoformat(rows[0]["updated_at"]).tzinfo is not None
        assert rows[4]["function"] is None
        assert rows[4]["timestamp"] == "2026-09-21T14:13:20.500Z"

    def test_mapping_filters_the_list(self, capsys: pytest.CaptureFixture[str], config: Path, db: Path) -> None:
        """--mapping keeps only that mapping's checkpoints (any UUID spelling)."""
        code, out, _ = run(
            capsys, "checkpoints", "list", "--config", str(config), "--mapping", D_UUID.upper(), "--format", "json"
        )
        assert code == 0
        assert {(r["mapping_uuid"], r["shard_id"]) for r in json.loads(out)} == {(D_UUID, SHARD0), (D_UUID, SHARD1)}

    def test_no_state_file_means_no_checkpoints_yet(self, capsys: pytest.CaptureFixture[str], config: Path) -> None:
        """Without a state file the answer is "no checkpoints yet", exit 0, and no file is created."""
        code, out, _ = run(capsys, "checkpoints", "list", "--config", str(config))
        assert code == 0
        assert "no checkpoints yet" in out
        code, out, err = run(capsys, "checkpoints", "list", "--config", str(config), "--format", "json")
        assert (code, json.loads(out)) == (0, [])
        assert "no checkpoints yet" in err
        assert not (config.parent / "state.db").exists()

    def test_listing_works_while_the_daemon_runs(
        self, capsys: pytest.CaptureFixture[str], config: Path, db: Path, daemon: int
    ) -> None:
        """Listing does not need the lock, so it works beside a running daemon."""
        code, out, _ = run(capsys, "checkpoints", "list", "--config", str(config), "--format", "json")
        assert code == 0
        assert len(json.loads(out)) == 5

    def test_a_dynamodb_state_backend_is_refused(self, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
        """With `state.sqlite: null` there is no SQLite file to list: a clear message and exit 2."""
        path = tmp_path / "esm.yaml"
        path.write_text(
            f"functions: {{f: {{handler: 'handlers:h'}}}}\nstate: {{sqlite: null}}\n"
            f"event_source_mappings:\n  - {{EventSourceArn: '{QUEUE}', FunctionName: f}}\n"
        )
        code, out, err = run(capsys, "checkpoints", "list", "--config", str(path))
        assert (code, out) == (2, "")
        assert "state.sqlite is null" in err

    def test_a_corrupt_state_file_is_named(self, capsys: pytest.CaptureFixture[str], config: Path) -> None:
        """An unusable state file gives one line naming it and exit 1, not a traceback."""
        (config.parent / "state.db").write_bytes(b"not sqlite " * 500)
        code, _, err = run(capsys, "checkpoints", "list", "--config", str(config))
        assert code == 1
        assert str(config.parent / "state.db") in err
        assert "Traceback" not in err
        assert len(err.strip().splitlines()) == 1

    def test_a_bad_mapping_uuid_is_a_usage_error(self, capsys: pytest.CaptureFixture[str], config: Path) -> None:
        """--mapping must be a UUID."""
        code, _, err = run(capsys, "checkpoints", "list", "--config", str(config), "--mapping", "orders")
        assert code == 2
        assert "--mapping orders: not a UUID" in err


class TestSet:
    """`esm checkpoints set` moves checkpoints and says what it changed."""

    def test_a_sequence_number_replays_from_that_record(
        self, capsys: pytest.CaptureFixture[str], config: Path, db: Path
    ) -> None:
        """Digits become AT_SEQUENCE_NUMBER (that record is processed again); other shards are untouched."""
        before = stored(db)
        code, out, err = run(
            capsys, "checkpoints", "set", "--config", str(config), "--mapping", K_UUID, "--shard", SHARD0, "--to", SEQ1
        )
        assert (code, err) == (0, "")
        assert f"{SHARD0}: AFTER_SEQUENCE_NUMBER {SEQ0} -> AT_SEQUENCE_NUMBER {SEQ1}" in out
        assert K_UUID in out
        after = stored(db)
        assert after[K_UUID, SHARD0] == Checkpoint(
            Position.AT_SEQUENCE_NUMBER, SEQ1, updated_at=after[K_UUID, SHARD0].updated_at
        )
        assert {k: v for k, v in after.items() if k != (K_UUID, SHARD0)} == {
            k: v for k, v in before.items() if k != (K_UUID, SHARD0)
        }

    @pytest.mark.parametrize(("given", "position"), [("TRIM_HORIZON", "TRIM_HORIZON"), ("latest", "LATEST")])
    def test_trim_horizon_and_latest(
        self, capsys: pytest.CaptureFixture[str], config: Path, db: Path, given: str, position: str
    ) -> None:
        """TRIM_HORIZON and LATEST (any case) are stored as themselves."""
        code, out, _ = run(
            capsys, "checkpoints", "set", "--config", str(config), "--mapping", K_UUID, "--shard", SHARD1, "--to", given
        )
        assert code == 0
        assert f"{SHARD1}: SHARD_END -> {position}" in out
        assert stored(db)[K_UUID, SHARD1].position == position

    @pytest.mark.parametrize(
        ("given", "seconds"),
        [
            ("2026-09-01T10:00:00Z", 1788256800.0),
            ("2026-09-01T12:00:00+02:00", 1788256800.0),
            ("@1788256800.25", 1788256800.25),
        ],
    )
    def test_a_time_becomes_at_timestamp(
        self, capsys: pytest.CaptureFixture[str], config: Path, db: Path, given: str, seconds: float
    ) -> None:
        """An ISO 8601 time with a zone, or @EPOCH_SECONDS, is AT_TIMESTAMP on a Kinesis mapping."""
        code, out, _ = run(
            capsys, "checkpoints", "set", "--config", str(config), "--mapping", K_UUID, "--shard", SHARD0, "--to", given
        )
        assert code == 0
        assert "-> AT_TIMESTAMP 2026-09-01T10:00:00" in out
        checkpoint = stored(db)[K_UUID, SHARD0]
        assert (checkpoint.position, checkpoint.timestamp) == (Position.AT_TIMESTAMP, seconds)

    def test_shard_all_moves_every_shard_of_the_mapping(
        self, capsys: pytest.CaptureFixture[str], config: Path, db: Path
    ) -> None:
        """--shard all moves each shard with a checkpoint of that mapping, and no other mapping's."""
        before = stored(db)
        code, out, _ = run(
            capsys,
            "checkpoints",
            "set",
            "--config",
            str(config),
            "--mapping",
            K_UUID,
            "--shard",
            "all",
            "--to",
            "TRIM_HORIZON",
        )
        assert code == 0
        assert f"{SHARD0}: AFTER_SEQUENCE_NUMBER {SEQ0} -> TRIM_HORIZON" in out
        assert f"{SHARD1}: SHARD_END -> TRIM_HORIZON" in out
        after = stored(db)
        assert after[K_UUID, SHARD0].position == after[K_UUID, SHARD1].position == Position.TRIM_HORIZON
        assert after[GONE_UUID, SHARD0] == before[GONE_UUID, SHARD0]
        assert after[D_UUID, SHARD0] == before[D_UUID, SHARD0]

    @pytest.mark.parametrize(
        ("given", "expected"),
        [("42", Checkpoint(Position.AT_SEQUENCE_NUMBER, "42")), ("LATEST", Checkpoint(Position.LATEST))],
    )
    def test_dynamodb_takes_sequence_numbers_and_latest(
        self, capsys: pytest.CaptureFixture[str], config: Path, db: Path, given: str, expected: Checkpoint
    ) -> None:
        """A DynamoDB Streams mapping's checkpoint moves to a sequence number or LATEST."""
        code, _, _ = run(
            capsys, "checkpoints", "set", "--config", str(config), "--mapping", D_UUID, "--shard", SHARD0, "--to", given
        )
        assert code == 0
        checkpoint = stored(db)[D_UUID, SHARD0]
        assert (checkpoint.position, checkpoint.sequence) == (expected.position, expected.sequence)

    def test_moving_a_checkpoint_clears_its_window_state(
        self, capsys: pytest.CaptureFixture[str], config: Path, db: Path
    ) -> None:
        """The tumbling-window state kept with a checkpoint is dropped, and the output says so."""
        seed(
            db,
            (
                CheckpointKey(K_UUID, KINESIS, SHARD0),
                Checkpoint(Position.AFTER_SEQUENCE_NUMBER, "7", window_state="{}"),
            ),
        )
        code, out, _ = run(
            capsys, "checkpoints", "set", "--config", str(config), "--mapping", K_UUID, "--shard", SHARD0, "--to", "5"
        )
        assert code == 0
        assert "tumbling-window state cleared" in out
        assert stored(db)[K_UUID, SHARD0].window_state is None


class TestSetRefusals:
    """`esm checkpoints set` refuses what it cannot do, with one clear line and nothing changed."""

    def set(
        self, capsys: pytest.CaptureFixture[str], config: Path, mapping: str, shard: str, to: str
    ) -> tuple[int, str]:
        """Run `set` expecting a refusal: no stdout, no traceback; return the code and stderr."""
        code, out, err = run(
            capsys, "checkpoints", "set", "--config", str(config), "--mapping", mapping, "--shard", shard, "--to", to
        )
        assert out == ""
        assert "Traceback" not in err
        return code, err

    def test_an_unknown_mapping(self, capsys: pytest.CaptureFixture[str], config: Path, db: Path) -> None:
        """A UUID that is not in the configuration is refused, listing the stream mappings that are."""
        before = stored(db)
        code, err = self.set(capsys, config, GONE_UUID, SHARD0, "TRIM_HORIZON")
        assert code == 2
        assert f"--mapping {GONE_UUID}: no mapping with this UUID" in err
        assert K_UUID in err
        assert D_UUID in err
        assert stored(db) == before

    def test_an_sqs_mapping(self, capsys: pytest.CaptureFixture[str], config: Path, db: Path) -> None:
        """An SQS mapping has no checkpoints."""
        code, err = self.set(capsys, config, Q_UUID, SHARD0, "TRIM_HORIZON")
        assert code == 2
        assert "only Kinesis and DynamoDB Streams mappings" in err

    def test_at_timestamp_on_dynamodb(self, capsys: pytest.CaptureFixture[str], config: Path, db: Path) -> None:
        """DynamoDB Streams has no AT_TIMESTAMP iterator, so a time is refused there."""
        before = stored(db)
        code, err = self.set(capsys, config, D_UUID, SHARD0, "2026-09-01T10:00:00Z")
        assert code == 2
        assert "DynamoDB Streams has no AT_TIMESTAMP" in err
        assert stored(db) == before

    @pytest.mark.parametrize("future", ["2099-01-01T00:00:00Z", "@4102444800"])
    def test_a_time_in_the_future(
        self, capsys: pytest.CaptureFixture[str], config: Path, db: Path, future: str
    ) -> None:
        """A timestamp after now is refused."""
        code, err = self.set(capsys, config, K_UUID, SHARD0, future)
        assert code == 2
        assert "is in the future" in err

    def test_shard_end(self, capsys: pytest.CaptureFixture[str], config: Path, db: Path) -> None:
        """SHARD_END cannot be set by hand."""
        code, err = self.set(capsys, config, K_UUID, SHARD0, "SHARD_END")
        assert code == 2
        assert "SHARD_END cannot be set" in err

    @pytest.mark.parametrize(
        ("given", "reason"),
        [
            ("2026-09-01T10:00:00", "no time zone"),
            ("yesterday", "not a position"),
            ("@soon", "not @EPOCH_SECONDS"),
            ("AT_SEQUENCE_NUMBER", "give the sequence number or the time itself"),
            ("-5", "not a position"),
        ],
    )
    def test_a_malformed_position(
        self, capsys: pytest.CaptureFixture[str], config: Path, db: Path, given: str, reason: str
    ) -> None:
        """A POSITION of none of the accepted forms is named with the reason."""
        code, err = self.set(capsys, config, K_UUID, SHARD0, given)
        assert code == 2
        assert f"--to {given}: " in err
        assert reason in err

    def test_a_shard_without_a_checkpoint(self, capsys: pytest.CaptureFixture[str], config: Path, db: Path) -> None:
        """A shard id with no checkpoint (a typo, say) is refused, listing the shards that have one."""
        code, err = self.set(capsys, config, K_UUID, "shardId-000000000009", "LATEST")
        assert code == 2
        assert f"shards with checkpoints: {SHARD0}, {SHARD1}" in err
        assert "shardId-000000000009" not in {k[1] for k in stored(db)}

    def test_no_state_file_yet(self, capsys: pytest.CaptureFixture[str], config: Path) -> None:
        """Before the daemon wrote anything there is nothing to move, and no file is created."""
        code, err = self.set(capsys, config, K_UUID, "all", "LATEST")
        assert code == 2
        assert "no checkpoints yet" in err
        assert not (config.parent / "state.db").exists()

    def test_the_daemon_is_running(
        self, capsys: pytest.CaptureFixture[str], config: Path, db: Path, daemon: int
    ) -> None:
        """While another esm process holds the state file, `set` fails with exit 1 and names it."""
        before = stored(db)
        code, err = self.set(capsys, config, K_UUID, SHARD0, "TRIM_HORIZON")
        assert code == 1
        assert "in use by another esm process" in err
        assert f"pid {daemon}" in err
        assert "one replica" in err
        assert stored(db) == before

    def test_an_invalid_configuration(self, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
        """A configuration with problems prints them as `FILE: path: reason` and exits 2."""
        path = tmp_path / "esm.yaml"
        path.write_text("functions: {f: {timeout: 3}}\n")
        code, err = self.set(capsys, path, K_UUID, SHARD0, "LATEST")
        assert code == 2
        assert err.startswith(f"{path}: functions.f: ")


class TestParsePosition:
    """`parse_position` reads the forms --to accepts."""

    def test_leading_zeros_are_dropped(self) -> None:
        """Sequence numbers compare as integers, so 00042 is stored as 42."""
        assert parse_position("00042") == Checkpoint(Position.AT_SEQUENCE_NUMBER, "42")

    def test_a_huge_sequence_number_is_kept_exactly(self) -> None:
        """Sequence numbers far beyond 64 bits are kept digit for digit."""
        assert parse_position(SEQ0).sequence == SEQ0

    def test_an_epoch_is_seconds(self) -> None:
        """@EPOCH_SECONDS is read as Unix seconds, fractions kept."""
        assert parse_position(f"@{time.time():.0f}").position is Position.AT_TIMESTAMP
        assert parse_position("@1.5").timestamp == 1.5


def _keyed(path: Path) -> list[tuple[CheckpointKey, Checkpoint]]:
    """Every checkpoint of a state file with its key."""

    async def read() -> list[tuple[CheckpointKey, Checkpoint]]:
        async with SqliteCheckpointStore(path, lock=False) as store:
            return await store.list_all()

    return asyncio.run(read())
