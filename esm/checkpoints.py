"""`esm checkpoints list` and `esm checkpoints set`: read and move stream checkpoints.

`list` shows every checkpoint in the configuration's SQLite state file (`state.sqlite`): mapping,
function, stream, shard, position, sequence number or timestamp, and when it was written. It opens
the file without its lock, so it works while the daemon runs, and never creates the file.

`set` moves one shard's checkpoint, or every shard's of a mapping (`--shard all`), to a sequence
number (that record is processed again: AT_SEQUENCE_NUMBER), TRIM_HORIZON, LATEST, or a time
(AT_TIMESTAMP, Kinesis only): the replay AWS cannot do. It takes the state file's lock like the
daemon does, so it refuses to run while the daemon holds the file (`StateLockedError`): a
checkpoint is only moved while the daemon is stopped. A moved checkpoint drops the tumbling-window
state kept with it, since the window it belonged to is no longer being continued.

Exit codes as everywhere in esm: 0 success, 2 usage or configuration problem, 1 the state file is
locked or unusable. Every refusal is one line naming the problem, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from esm.arns import SourceKind
from esm.config import Config, ConfigError, MappingConfig, load_config
from esm.state import Checkpoint, CheckpointKey, Position, SqliteCheckpointStore, StateUnusableError
from esm.windows import Window

__all__ = ["list_checkpoints", "parse_position", "run_checkpoints", "set_checkpoint"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

_PROG = "esm checkpoints"
_SEQUENCE_RE = re.compile(r"^[0-9]+$")
_POSITION_FORMS = (
    "a sequence number, TRIM_HORIZON, LATEST, an ISO 8601 time with a zone (2026-11-22T10:00:00Z) or @EPOCH_SECONDS"
)


class _Refused(Exception):
    """A request esm will not carry out; the message names the problem, `code` is the exit code."""

    def __init__(self, message: str, code: int = EXIT_USAGE, *, prefix: bool = True) -> None:
        super().__init__(message)
        self.code = code
        self.prefix = prefix


# ----------------------------------------------------------------------------------------------
# entry points


def run_checkpoints(args: argparse.Namespace) -> int:
    """Carry out `esm checkpoints ACTION` from parsed arguments; return the exit code."""
    if args.action == "list":
        return list_checkpoints(args)
    return set_checkpoint(args)


def list_checkpoints(args: argparse.Namespace) -> int:
    """`esm checkpoints list --config FILE [--mapping UUID] [--format table|json]`."""
    try:
        config = _load(args.config)
        path = _state_path(config)
        wanted = None if args.mapping is None else _uuid(args.mapping)
        rows = asyncio.run(_read_all(path)) if path.exists() else []
    except _Refused as exc:
        return _refuse(exc)
    rows = [(k, c) for k, c in rows if wanted is None or k.mapping_uuid == wanted]
    functions = {(m.uuid, m.EventSourceArn): m.FunctionName for m in config.spec.event_source_mappings}
    if args.format == "json":
        print(json.dumps([_json_row(k, c, functions.get((k.mapping_uuid, k.stream_arn))) for k, c in rows], indent=2))
        if not rows:
            print(_nothing_yet(path, wanted), file=sys.stderr)
        return EXIT_OK
    if not rows:
        print(_nothing_yet(path, wanted))
        return EXIT_OK
    header = ("MAPPING", "FUNCTION", "STREAM", "SHARD", "POSITION", "SEQUENCE/TIMESTAMP", "UPDATED", "WINDOW")
    table = [
        (
            k.mapping_uuid,
            functions.get((k.mapping_uuid, k.stream_arn), "-"),
            k.stream_arn,
            k.shard_id,
            c.position.value,
            _where(c),
            _iso(c.updated_at),
            _window(c),
        )
        for k, c in rows
    ]
    print(_format_table(header, table))
    return EXIT_OK


def set_checkpoint(args: argparse.Namespace) -> int:
    """`esm checkpoints set --config FILE --mapping UUID --shard SHARD_ID|all --to POSITION`."""
    try:
        config = _load(args.config)
        path = _state_path(config)
        mapping = _stream_mapping(config, _uuid(args.mapping))
        try:
            target = parse_position(args.to)
        except ValueError as exc:
            raise _Refused(f"--to {args.to}: {exc}") from None
        _check_allowed(mapping, target, args.to, now=time.time())
        if not path.exists():
            raise _Refused(
                f"mapping {mapping.uuid} has no checkpoints yet ({path} does not exist); "
                "a shard without a checkpoint starts at the mapping's StartingPosition"
            )
        changes = asyncio.run(_move(path, mapping, args.shard, target))
    except _Refused as exc:
        return _refuse(exc)
    except StateUnusableError as exc:  # locked by the daemon, or an unreadable file
        print(f"{_PROG}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"mapping {mapping.uuid} (function {mapping.FunctionName}), stream {mapping.EventSourceArn}:")
    for shard_id, old in changes:
        note = " (tumbling-window state cleared)" if old.window_state is not None else ""
        print(f"  {shard_id}: {_describe(old)} -> {_describe(target)}{note}")
    return EXIT_OK


# ----------------------------------------------------------------------------------------------
# positions


def parse_position(text: str) -> Checkpoint:
    """The checkpoint `--to TEXT` asks for; ValueError with the reason when TEXT is none of the forms.

    Digits are a sequence number, resumed AT it (that record is processed again); TRIM_HORIZON and
    LATEST are themselves (any case); an ISO 8601 time with a zone or `@EPOCH_SECONDS` is
    AT_TIMESTAMP. SHARD_END is refused: only the daemon can know a shard is closed and drained.
    """
    value = text.strip()
    word = value.upper()
    if word == Position.SHARD_END:
        raise ValueError(
            "SHARD_END cannot be set: it records that a closed shard was read to its end, which only the "
            "daemon can know; use LATEST to skip a shard's remaining records"
        )
    if word in (Position.TRIM_HORIZON, Position.LATEST):
        return Checkpoint(Position(word))
    if word in (Position.AT_SEQUENCE_NUMBER, Position.AFTER_SEQUENCE_NUMBER, Position.AT_TIMESTAMP):
        raise ValueError(f"give the sequence number or the time itself, not {word}; accepted: {_POSITION_FORMS}")
    if _SEQUENCE_RE.match(value):
        return Checkpoint(Position.AT_SEQUENCE_NUMBER, value.lstrip("0") or "0")
    if value.startswith("@"):
        try:
            seconds = float(value[1:])
        except ValueError:
            raise ValueError("not @EPOCH_SECONDS (for example @1795000000)") from None
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError("not a time after 1970-01-01T00:00:00Z")
        return Checkpoint(Position.AT_TIMESTAMP, timestamp=seconds)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"not a position; accepted: {_POSITION_FORMS}") from None
    if moment.tzinfo is None:
        raise ValueError("the time has no time zone: add Z for UTC or an offset (2026-11-22T10:00:00Z)")
    return Checkpoint(Position.AT_TIMESTAMP, timestamp=moment.timestamp())


def _check_allowed(mapping: MappingConfig, target: Checkpoint, text: str, *, now: float) -> None:
    if target.position is not Position.AT_TIMESTAMP:
        return
    assert target.timestamp is not None  # Checkpoint guarantees it for AT_TIMESTAMP
    if mapping.source.kind is SourceKind.DYNAMODB:
        raise _Refused(
            f"--to {text}: DynamoDB Streams has no AT_TIMESTAMP shard iterator; "
            "move the checkpoint to a sequence number, TRIM_HORIZON or LATEST"
        )
    if target.timestamp > now:
        raise _Refused(f"--to {text}: {_iso(target.timestamp)} is in the future (now is {_iso(now)})")


# ----------------------------------------------------------------------------------------------
# the store


async def _read_all(path: Path) -> list[tuple[CheckpointKey, Checkpoint]]:
    try:
        async with SqliteCheckpointStore(path, lock=False) as store:
            return await store.list_all()
    except StateUnusableError as exc:
        raise _Refused(str(exc), EXIT_FAILURE) from None


async def _move(path: Path, mapping: MappingConfig, shard: str, target: Checkpoint) -> list[tuple[str, Checkpoint]]:
    """Write `target` to the chosen shards under the state file's lock; return each shard's old checkpoint."""
    async with SqliteCheckpointStore(path, lock=True) as store:
        current = await store.load(mapping.uuid, mapping.EventSourceArn)
        if not current:
            raise _Refused(
                f"mapping {mapping.uuid} has no checkpoints yet; "
                "a shard without a checkpoint starts at the mapping's StartingPosition"
            )
        if shard == "all":
            shards = sorted(current)
        elif shard in current:
            shards = [shard]
        else:
            raise _Refused(
                f"--shard {shard}: mapping {mapping.uuid} has no checkpoint for this shard "
                f"(shards with checkpoints: {', '.join(sorted(current))}; or use --shard all)"
            )
        for shard_id in shards:
            await store.save(CheckpointKey(mapping.uuid, mapping.EventSourceArn, shard_id), target)
        return [(shard_id, current[shard_id]) for shard_id in shards]


# ----------------------------------------------------------------------------------------------
# configuration


def _load(file: str) -> Config:
    try:
        return load_config(file)
    except ConfigError as exc:
        # Already `FILE: path: reason` lines, as `esm validate` prints them (DESIGN.md §2).
        raise _Refused("\n".join(exc.lines()), prefix=False) from None


def _state_path(config: Config) -> Path:
    path = config.sqlite_path
    if path is None:
        elsewhere = (
            f" (the DynamoDB lease table {config.spec.state.dynamodb.table} is not handled by this command)"
            if config.spec.state.dynamodb is not None
            else ""
        )
        raise _Refused(
            f"{config.path}: state.sqlite is null, so there is no SQLite checkpoint file; "
            f"`esm checkpoints` works on the SQLite state file only{elsewhere}"
        )
    return path


def _uuid(text: str) -> str:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise _Refused(f"--mapping {text}: not a UUID (`esm checkpoints list` shows each mapping's UUID)") from None


def _stream_mapping(config: Config, wanted: str) -> MappingConfig:
    mappings = config.spec.event_source_mappings
    mapping = next((m for m in mappings if m.uuid == wanted), None)
    if mapping is None:
        streams = [f"{m.uuid} ({m.FunctionName})" for m in mappings if m.source.kind is not SourceKind.SQS]
        known = f"its stream mappings: {', '.join(streams)}" if streams else "it has no stream mappings"
        raise _Refused(f"--mapping {wanted}: no mapping with this UUID in {config.path}; {known}")
    if mapping.source.kind is SourceKind.SQS:
        raise _Refused(
            f"--mapping {wanted}: mapping of SQS queue {mapping.EventSourceArn} has no checkpoints; "
            "only Kinesis and DynamoDB Streams mappings do"
        )
    return mapping


# ----------------------------------------------------------------------------------------------
# output


def _refuse(exc: _Refused) -> int:
    print(f"{_PROG}: {exc}" if exc.prefix else str(exc), file=sys.stderr)
    return exc.code


def _nothing_yet(path: Path, mapping: str | None) -> str:
    if not path.exists():
        return f"no checkpoints yet ({path} does not exist)"
    return f"no checkpoints yet for mapping {mapping}" if mapping else f"no checkpoints yet in {path}"


def _iso(seconds: float) -> str:
    """ISO 8601 UTC with a Z; milliseconds only when the time has a fraction of a second."""
    spec = "seconds" if float(seconds).is_integer() else "milliseconds"
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec=spec).replace("+00:00", "Z")


def _where(checkpoint: Checkpoint) -> str:
    if checkpoint.sequence is not None:
        return checkpoint.sequence
    if checkpoint.timestamp is not None:
        return _iso(checkpoint.timestamp)
    return "-"


def _window(checkpoint: Checkpoint) -> str:
    """The open tumbling window kept with a checkpoint, as START/END (the state stays out of the table)."""
    if checkpoint.window_state is None:
        return "-"
    try:
        window = Window.from_checkpoint(checkpoint.window_state)
    except ValueError:
        return "unreadable"
    return f"{_iso(window.start)}/{_iso(window.end)}"


def _describe(checkpoint: Checkpoint) -> str:
    where = _where(checkpoint)
    return checkpoint.position.value if where == "-" else f"{checkpoint.position.value} {where}"


def _json_row(key: CheckpointKey, checkpoint: Checkpoint, function: str | None) -> dict[str, Any]:
    return {
        "mapping_uuid": key.mapping_uuid,
        "function": function,
        "stream_arn": key.stream_arn,
        "shard_id": key.shard_id,
        "position": checkpoint.position.value,
        "sequence": checkpoint.sequence,
        "timestamp": None if checkpoint.timestamp is None else _iso(checkpoint.timestamp),
        "updated_at": _iso(checkpoint.updated_at),
        "window_state": checkpoint.window_state,
    }


def _format_table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in (header, *rows)]
    return "\n".join(lines)
