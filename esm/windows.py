"""Tumbling windows for Kinesis and DynamoDB Streams mappings (ESM-SPEC.md §3.5, §4.5).

With `TumblingWindowInSeconds` > 0 every record belongs to the window its arrival time falls in
(Kinesis `approximateArrivalTimestamp`, DynamoDB `ApproximateCreationDateTime`). Windows are
aligned on multiples of the window length since the epoch, as AWS's documented example shows
(a 120 s window from 07:04:00 to 07:06:00 for a record that arrived at 07:04:35).

- Batches never mix windows. The first invocation of a window receives `"state": {}`; every
  later one receives the `state` the function returned last. A response without a JSON object
  `state` is a failed invocation (retried, bisected, discarded like any function error).
- When the window is over (a record of a later window was read, the shard ended, or the shard is
  caught up and `streams.window_close_delay` passed since the window's end), the function is
  invoked once more with `"Records": []`, the final state and `isFinalInvokeForWindow: true`.
  That final invocation is retried until it succeeds (AWS "suspends further processing until a
  successful invocation"); the next window starts with a fresh state.
- A returned state larger than 1 MB terminates the window early: before the next batch the
  function is invoked with that state, `"Records": []` and `isWindowTerminatedEarly: true` (and
  `isFinalInvokeForWindow: true`, so a handler that only looks at the final flag still flushes
  its aggregate); the window then continues with a fresh state.

Better than AWS: the window (its bounds and state) is written with every checkpoint
(`Checkpoint.window_state`), so a restart continues the window where it stopped instead of
replaying or losing it.

This module is pure: window arithmetic, the event, the response, and the checkpoint form.
`esm.shard_consumer` drives it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from esm.events import EVENT_LIMIT_BYTES, assemble_event

__all__ = [
    "STATE_LIMIT_BYTES",
    "StateReading",
    "Window",
    "read_state",
    "window_bounds",
]

STATE_LIMIT_BYTES: Final = 1024 * 1024
"""A state larger than this (compact UTF-8 JSON) terminates the window early (ESM-SPEC.md §4.5)."""

_EMPTY_STATE: Final = b"{}"
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def window_bounds(arrival: float, seconds: int) -> tuple[int, int]:
    """The window `[start, end)` (epoch seconds) a record that arrived at `arrival` belongs to."""
    start = math.floor(arrival / seconds) * seconds
    return start, start + seconds


def _rfc3339(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Window:
    """One shard's open window: its bounds and the state the function returned last.

    `state` is kept as compact JSON bytes, spliced into each event as it is and decoded afresh
    for in-process handlers (which may change the object they are given).
    """

    start: int
    end: int
    state: bytes = field(default=_EMPTY_STATE)
    invoked: bool = False
    """True once an invocation of this window was sent: only then is there a state to finish."""

    @classmethod
    def for_arrival(cls, arrival: float, seconds: int) -> Window:
        """A fresh window for a record that arrived at `arrival`."""
        start, end = window_bounds(arrival, seconds)
        return cls(start, end)

    @property
    def oversized(self) -> bool:
        """True when the state exceeds 1 MB: the window is terminated early before the next batch."""
        return len(self.state) > STATE_LIMIT_BYTES

    def holds(self, arrival: float) -> bool:
        """True if a record that arrived at `arrival` goes in this window.

        Records never reopen a closed window: one that arrives late, with a timestamp before this
        window, joins it (arrival times within a shard only go forward, apart from that lateness).
        """
        return arrival < self.end

    def fields(self, shard_id: str, source_arn: str, *, final: bool, terminated: bool) -> bytes:
        """The event's fields after `Records`, serialized: `,"window":{...},...,"isWindowTerminatedEarly":b`."""
        return b"".join(
            (
                b',"window":{"start":"',
                _rfc3339(self.start).encode(),
                b'","end":"',
                _rfc3339(self.end).encode(),
                b'"},"state":',
                self.state,
                b',"shardId":',
                _encode(shard_id).encode(),
                b',"eventSourceARN":',
                _encode(source_arn).encode(),
                b',"isFinalInvokeForWindow":',
                b"true" if final else b"false",
                b',"isWindowTerminatedEarly":',
                b"true" if terminated else b"false",
            )
        )

    def event(
        self, records: list[Any], shard_id: str, source_arn: str, *, final: bool, terminated: bool
    ) -> dict[str, Any]:
        """The same event as `fields` describes, as Python objects (a fresh copy of the state)."""
        return {
            "Records": records,
            "window": {"start": _rfc3339(self.start), "end": _rfc3339(self.end)},
            "state": json.loads(self.state),
            "shardId": shard_id,
            "eventSourceARN": source_arn,
            "isFinalInvokeForWindow": final,
            "isWindowTerminatedEarly": terminated,
        }

    @staticmethod
    def payload(encoded_records: Sequence[bytes], fields: bytes) -> bytes:
        """The serialized event: `{"Records":[...]` followed by the window `fields`."""
        return assemble_event(encoded_records)[:-1] + fields + b"}"

    def record_budget(self, shard_id: str, source_arn: str) -> int:
        """How many bytes of `{"Records":[...]}` fit in one 6 MB event beside the window fields."""
        return EVENT_LIMIT_BYTES - len(self.fields(shard_id, source_arn, final=False, terminated=False))

    # the checkpoint form --------------------------------------------------------------------

    def to_checkpoint(self) -> str:
        """The JSON kept in `Checkpoint.window_state`."""
        return f'{{"start":{self.start},"end":{self.end},"state":{self.state.decode()}}}'

    @classmethod
    def from_checkpoint(cls, text: str) -> Window:
        """Read `to_checkpoint`'s form back; ValueError if it is not that form.

        A window stored with another length (TumblingWindowInSeconds changed while esm was
        stopped) keeps its stored bounds: it is closed as it was opened.
        """
        try:
            document = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"window state is not JSON: {exc}") from None
        if not isinstance(document, dict):
            raise ValueError("window state is not a JSON object")
        start, end, state = document.get("start"), document.get("end"), document.get("state")
        if (
            not isinstance(start, int)
            or not isinstance(end, int)
            or isinstance(start, bool)
            or isinstance(end, bool)
            or end <= start
        ):
            raise ValueError("window state has no valid start and end")
        if not isinstance(state, dict):
            raise ValueError("window state has no state object")
        return cls(start, end, _encode(state).encode())


@dataclass(frozen=True, slots=True)
class StateReading:
    """What a windowed invocation's response says about the state.

    - `state`: the returned `state` as compact JSON bytes; None when the response has none.
    - `problem`: why the response counts as a failed invocation (empty when `state` is set).
    """

    state: bytes | None
    problem: str = ""


def read_state(payload: bytes) -> StateReading:
    """Read the `state` of a windowed invocation's response (`TimeWindowEventResponse`).

    The response must be a JSON object with a `state` that is a JSON object (AWS documents the
    state as an object; Go and Java type it as a map); anything else is a failed invocation
    (ESM-SPEC.md §3.6: "A response without a state property is treated as a failed invocation").
    Never raises.
    """
    try:
        document = json.loads(payload.decode("utf-8")) if payload.strip() else None
    except (UnicodeDecodeError, ValueError, RecursionError):
        return StateReading(None, "tumbling window response is not valid JSON")
    if not isinstance(document, dict):
        return StateReading(None, "tumbling window response is not a JSON object")
    if "state" not in document:
        return StateReading(None, "tumbling window response has no state")
    state = document["state"]
    if not isinstance(state, dict):
        return StateReading(None, "tumbling window response state is not a JSON object")
    try:
        return StateReading(_encode(state).encode())
    except ValueError:  # NaN or Infinity inside the state
        return StateReading(None, "tumbling window response state is not valid JSON")
