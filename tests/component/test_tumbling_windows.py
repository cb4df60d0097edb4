"""Tumbling windows in the shard consumer (ESM-SPEC.md §3.5, §4.5), on scripted arrival times.

Window boundaries come from the records' arrival times, so these tests need records that arrived
at chosen moments (a window already over, two windows apart, a record late for its window):
no emulator lets a test choose arrival times. `ScriptedStream` (tests/component/
test_shard_consumer.py) is the hand-written Kinesis stand-in that serves them; the checkpoint
store is the real SQLite store. The handler below answers as a tumbling-window function does on
AWS (`{"state": ...}`) and records every event it receives.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from esm.config import FunctionConfig
from esm.errors import PayloadTooLargeError
from esm.logging import get_logger
from esm.sources._shards import Page
from esm.state import Checkpoint, Position
from esm.targets.base import Invocation, InvokeResult
from esm.targets.python import PythonInvoker
from esm.windows import STATE_LIMIT_BYTES, Window
from tests.component.test_shard_consumer import Destination, ScriptedStream, consume

Answer = Callable[[dict[str, Any], int], InvokeResult | None]


def counting(event: dict[str, Any]) -> InvokeResult:
    """The AWS documentation's aggregation: count records per partition key into the state."""
    state = event["state"]
    for record in event["Records"]:
        key = record["kinesis"]["partitionKey"]
        state[key] = state.get(key, 0) + 1
    return InvokeResult(None, json.dumps({"state": state}).encode())


class WindowHandler:
    """A windowed function: `answer(event, n)` may override the counting answer of invocation n."""

    name = "fn"
    timeout = 5.0

    def __init__(self, answer: Answer | None = None) -> None:
        self.events: list[dict[str, Any]] = []
        self.answer = answer

    async def invoke(self, invocation: Invocation) -> InvokeResult:
        event = invocation.event
        # The serialized payload (what Lambda and HTTP targets receive) is the same event.
        assert json.loads(invocation.payload) == event
        assert list(json.loads(invocation.payload)) == list(event)
        self.events.append(copy.deepcopy(event))
        answer = self.answer(event, len(self.events)) if self.answer else None
        return answer if answer is not None else counting(event)

    def summary(self) -> list[tuple[list[str], dict[str, Any], bool, bool]]:
        """Each invocation as (sequence numbers, state received, final, terminated early)."""
        return [
            (
                [r["kinesis"]["sequenceNumber"] for r in e["Records"]],
                e["state"],
                e["isFinalInvokeForWindow"],
                e["isWindowTerminatedEarly"],
            )
            for e in self.events
        ]


class TestWindows:
    """Batches of one window at a time, state from invocation to invocation, final invocations."""

    async def test_state_flows_through_a_window_and_each_window_ends_with_a_final_invocation(
        self, tmp_path: Path
    ) -> None:
        # Window length 10 s: 100..110 holds the first three records, 110..120 the last two.
        stream = ScriptedStream([100.0, 101.5, 109.9, 110.0, 115.0])
        handler = WindowHandler()
        reason, checkpoints, _ = await consume(tmp_path, stream, handler, None, TumblingWindowInSeconds=10, BatchSize=2)
        assert handler.summary() == [
            (["1000", "1001"], {}, False, False),
            (["1002"], {"k": 2}, False, False),
            ([], {"k": 3}, True, False),  # the window ends: its final state, no records
            (["1003", "1004"], {}, False, False),  # a new window starts with a fresh state
            ([], {"k": 2}, True, False),  # the shard ends: so does its window
        ]
        first = handler.events[0]
        assert list(first) == [
            "Records",
            "window",
            "state",
            "shardId",
            "eventSourceARN",
            "isFinalInvokeForWindow",
            "isWindowTerminatedEarly",
        ]
        assert first["window"] == {"start": "1970-01-01T00:01:40Z", "end": "1970-01-01T00:01:50Z"}
        assert handler.events[3]["window"] == {"start": "1970-01-01T00:01:50Z", "end": "1970-01-01T00:02:00Z"}
        assert first["shardId"] == "shardId-000000000000"
        assert first["eventSourceARN"] == "arn:aws:kinesis:us-east-1:123456789012:stream/scripted"
        assert reason == "SHARD_END"
        assert checkpoints["shardId-000000000000"].position is Position.SHARD_END

    async def test_windows_are_aligned_on_multiples_of_their_length(self, tmp_path: Path) -> None:
        """AWS's example: a record at 07:04:35 in a 120 s window is in 07:04:00..07:06:00."""
        arrival = 1607497475.0  # 2020-12-09T07:04:35Z, the documented record
        handler = WindowHandler()
        await consume(tmp_path, ScriptedStream([arrival]), handler, None, TumblingWindowInSeconds=120)
        assert handler.events[0]["window"] == {"start": "2020-12-09T07:04:00Z", "end": "2020-12-09T07:06:00Z"}

    async def test_a_response_without_state_fails_the_batch_which_is_retried_with_the_old_state(
        self, tmp_path: Path
    ) -> None:
        def answer(event: dict[str, Any], n: int) -> InvokeResult | None:
            event["state"]["changed"] = True  # an in-process handler changing what it was given
            return InvokeResult(None, b'{"batchItemFailures": []}') if n == 2 else None

        handler = WindowHandler(answer)
        await consume(tmp_path, ScriptedStream([100.0, 101.0]), handler, None, TumblingWindowInSeconds=10, BatchSize=1)
        summary = handler.summary()
        assert summary[1] == (["1001"], {"k": 1, "changed": True}, False, False)
        # The same record again, with the state from before the failed invocation.
        assert summary[2] == (["1001"], {"k": 1, "changed": True}, False, False)
        assert summary[3] == ([], {"k": 2, "changed": True}, True, False)

    async def test_missing_state_exhausts_retries_like_an_invalid_response(self, tmp_path: Path) -> None:
        destination = Destination()
        handler = WindowHandler(lambda event, n: InvokeResult(None, b"null") if n <= 2 else None)
        await consume(
            tmp_path,
            ScriptedStream([100.0, 101.0]),
            handler,
            destination,
            TumblingWindowInSeconds=10,
            BatchSize=1,
            MaximumRetryAttempts=1,
            DestinationConfig={"OnFailure": {"Destination": Destination.arn}},
        )
        [failed] = destination.batches
        assert (failed.info.start_sequence, failed.approximate_invoke_count) == ("1000", 2)
        assert failed.response is not None
        assert failed.response.function_error is None
        # The discarded record left the state as it was: the next record starts from {}.
        assert handler.summary()[2:] == [(["1001"], {}, False, False), ([], {"k": 1}, True, False)]

    async def test_a_partial_failure_keeps_the_returned_state_and_retries_the_rest(self, tmp_path: Path) -> None:
        def answer(event: dict[str, Any], n: int) -> InvokeResult | None:
            if n == 1:
                body = {"state": {"seen": ["1000"]}, "batchItemFailures": [{"itemIdentifier": "1001"}]}
                return InvokeResult(None, json.dumps(body).encode())
            return None

        handler = WindowHandler(answer)
        await consume(
            tmp_path,
            ScriptedStream([100.0, 101.0, 102.0]),
            handler,
            None,
            TumblingWindowInSeconds=10,
            BatchSize=3,
            FunctionResponseTypes=["ReportBatchItemFailures"],
        )
        assert handler.summary() == [
            (["1000", "1001", "1002"], {}, False, False),
            (["1001", "1002"], {"seen": ["1000"]}, False, False),
            ([], {"seen": ["1000"], "k": 2}, True, False),
        ]

    async def test_a_state_over_1_mb_terminates_the_window_early(self, tmp_path: Path) -> None:
        big = "x" * STATE_LIMIT_BYTES

        def answer(event: dict[str, Any], n: int) -> InvokeResult | None:
            return InvokeResult(None, json.dumps({"state": {"big": big}}).encode()) if n == 1 else None

        handler = WindowHandler(answer)
        _, _, registry = await consume(
            tmp_path, ScriptedStream([100.0, 101.0]), handler, None, TumblingWindowInSeconds=10, BatchSize=1
        )
        summary = handler.summary()
        assert summary[0] == (["1000"], {}, False, False)
        assert summary[1] == ([], {"big": big}, True, True)  # the oversized state, delivered once
        assert summary[2:] == [(["1001"], {}, False, False), ([], {"k": 1}, True, False)]
        assert handler.events[2]["window"] == handler.events[0]["window"]  # the same window goes on
        labels = {"event_source_mapping_uuid": mapping_uuid(registry), "function_name": "fn", "source": "kinesis"}
        assert registry.get_sample_value("esm_tumbling_windows_closed_total", {**labels, "reason": "final"}) == 1
        early = {**labels, "reason": "terminated_early"}
        assert registry.get_sample_value("esm_tumbling_windows_closed_total", early) == 1

    async def test_a_failing_final_invocation_is_retried_until_it_succeeds(self, tmp_path: Path) -> None:
        def answer(event: dict[str, Any], n: int) -> InvokeResult | None:
            if event["isFinalInvokeForWindow"] and n in (2, 3):
                return InvokeResult("Unhandled", b'{"errorMessage": "final failed"}')
            return None

        handler = WindowHandler(answer)
        await consume(
            tmp_path,
            ScriptedStream([100.0, 120.0]),
            handler,
            None,
            TumblingWindowInSeconds=10,
            MaximumRetryAttempts=0,  # retry limits are for records; a final invocation has none
        )
        assert handler.summary() == [
            (["1000"], {}, False, False),
            ([], {"k": 1}, True, False),
            ([], {"k": 1}, True, False),
            ([], {"k": 1}, True, False),
            (["1001"], {}, False, False),  # the next window only after the final invocation succeeded
            ([], {"k": 1}, True, False),
        ]

    async def test_a_late_record_joins_the_open_window(self, tmp_path: Path) -> None:
        """Arrival times go forward within a shard, but not strictly: a record stamped before the
        open window never reopens a closed one."""
        handler = WindowHandler()
        await consume(
            tmp_path, ScriptedStream([100.0, 111.0, 109.0]), handler, None, TumblingWindowInSeconds=10, BatchSize=1
        )
        assert handler.summary() == [
            (["1000"], {}, False, False),
            ([], {"k": 1}, True, False),
            (["1001"], {}, False, False),
            (["1002"], {"k": 1}, False, False),
            ([], {"k": 2}, True, False),
        ]

    async def test_filtered_out_records_do_not_open_a_window(self, tmp_path: Path) -> None:
        handler = WindowHandler()
        stream = ScriptedStream([100.0, 111.0])
        stream.records = [stream.records[0], stream.relabel(1, b'{"keep": true}')]
        await consume(
            tmp_path,
            stream,
            handler,
            None,
            TumblingWindowInSeconds=10,
            FilterCriteria={"Filters": [{"Pattern": '{"data": {"keep": [true]}}'}]},
        )
        assert handler.summary() == [(["1001"], {}, False, False), ([], {"k": 1}, True, False)]


class TestExampleHandler:
    """config/handlers/windows.py (the README's handler) through the real in-process Python target."""

    async def test_the_example_counts_per_partition_key_and_prints_the_totals(
        self, tmp_path: Path, capsys: Any
    ) -> None:
        config_dir = Path(__file__).parents[2] / "config"
        fn = FunctionConfig.model_validate({"handler": "handlers.windows:handle"})
        invoker = PythonInvoker(
            "windows", fn, base_dir=config_dir, region="us-east-1", account="123456789012", logger=get_logger()
        )
        async with invoker:
            reason, _, _ = await consume(
                tmp_path, ScriptedStream([100.0, 101.0, 102.0]), invoker, None, TumblingWindowInSeconds=10
            )
        assert reason == "SHARD_END"
        assert "window 1970-01-01T00:01:40Z totals {'k': 3}" in capsys.readouterr().out


class TestIdleWindows:
    """A window with no later record ends once the shard was read to its tip after the window's end."""

    async def test_an_idle_window_closes_after_its_end_and_the_close_delay(self, tmp_path: Path) -> None:
        over = (time.time() // 5 - 6) * 5  # the start of a 5 s window that ended 25 s ago or more
        stream = ScriptedStream([over + 1, over + 2], closed=False)  # shard open, no later record
        handler = WindowHandler()
        reason, checkpoints, _ = await consume(
            tmp_path,
            stream,
            handler,
            None,
            stop_when=lambda: len(handler.events) >= 2,
            settings={"window_close_delay": 0},
            TumblingWindowInSeconds=5,
            BatchSize=10,
        )
        assert handler.summary() == [(["1000", "1001"], {}, False, False), ([], {"k": 2}, True, False)]
        assert reason == "SHUTDOWN"
        saved = checkpoints["shardId-000000000000"]
        assert (saved.sequence, saved.window_state) == ("1001", None)  # the window is closed

    async def test_a_window_not_yet_over_stays_open(self, tmp_path: Path) -> None:
        now = time.time()
        stream = ScriptedStream([now], closed=False)
        handler = WindowHandler()
        reads_after_first = 0

        def enough() -> bool:
            nonlocal reads_after_first
            if handler.events:
                reads_after_first = stream.reads
            return bool(handler.events) and stream.reads >= 20

        _, checkpoints, _ = await consume(
            tmp_path, stream, handler, None, stop_when=enough, TumblingWindowInSeconds=900, BatchSize=10
        )
        assert handler.summary() == [(["1000"], {}, False, False)]  # no final invocation: the window is open
        saved = checkpoints["shardId-000000000000"]
        assert saved.window_state is not None
        window = Window.from_checkpoint(saved.window_state)
        assert json.loads(window.state) == {"k": 1}

    async def test_a_record_stamped_inside_a_closed_window_goes_to_the_next_window(self, tmp_path: Path) -> None:
        """Review finding: after an idle close, a late record (DynamoDB's rounded-down times, lag)
        must not reopen the closed window and give it a second final invocation."""
        over = (time.time() // 5 - 6) * 5
        stream = ScriptedStream([over + 1], closed=False)

        def answer(event: dict[str, Any], n: int) -> InvokeResult | None:
            if event["isFinalInvokeForWindow"] and n == 2:
                stream.append(over + 2)  # stamped inside the window just closed, readable only now
            return None

        handler = WindowHandler(answer)
        await consume(
            tmp_path,
            stream,
            handler,
            None,
            stop_when=lambda: len(handler.events) >= 4,
            settings={"window_close_delay": 0},
            TumblingWindowInSeconds=5,
        )
        first, second = handler.events[0]["window"], handler.events[2]["window"]
        assert handler.summary() == [
            (["1000"], {}, False, False),
            ([], {"k": 1}, True, False),
            (["1001"], {}, False, False),
            ([], {"k": 1}, True, False),
        ]
        assert second["start"] == first["end"]  # the late record went to the window after the closed one

    async def test_filtered_out_traffic_after_the_window_closes_it(self, tmp_path: Path) -> None:
        """Review finding: DynamoDB pages say nothing about lag, and a shard busy with records that
        are filtered out is never "caught up"; a record read that arrived past the window's end
        (and the close delay) shows the window is over."""
        over = (time.time() // 5 - 6) * 5

        class Busy(ScriptedStream):
            async def read(self, shard_id: str, iterator: str, limit: int) -> Page:
                self.append(time.time())  # a record arrives before every read, and is filtered out
                return await super().read(shard_id, iterator, limit)

        stream = Busy([over + 1], closed=False)
        stream.records[0] = stream.relabel(0, b'{"keep": true}')
        stream.unknown_lag = True
        handler = WindowHandler()
        await consume(
            tmp_path,
            stream,
            handler,
            None,
            stop_when=lambda: len(handler.events) >= 2,
            settings={"window_close_delay": 1},
            TumblingWindowInSeconds=5,
            FilterCriteria={"Filters": [{"Pattern": '{"data": {"keep": [true]}}'}]},
        )
        assert handler.summary() == [(["1000"], {}, False, False), ([], {"k": 1}, True, False)]

    async def test_a_window_whose_records_never_reached_the_function_has_no_final_invocation(
        self, tmp_path: Path
    ) -> None:
        """Review finding: a record rejected as too large (413) is discarded unseen; the function
        processed nothing in that window, so it gets no final invocation for it."""

        class TooLargeFirst(WindowHandler):
            async def invoke(self, invocation: Invocation) -> InvokeResult:
                if (
                    invocation.event["Records"]
                    and invocation.event["Records"][0]["kinesis"]["sequenceNumber"] == "1000"
                ):
                    raise PayloadTooLargeError(
                        "Request must be smaller than 6291456 bytes for the InvokeFunction operation"
                    )
                return await super().invoke(invocation)

        handler = TooLargeFirst()
        await consume(tmp_path, ScriptedStream([100.0, 111.0]), handler, None, TumblingWindowInSeconds=10)
        assert handler.summary() == [(["1001"], {}, False, False), ([], {"k": 1}, True, False)]


class TestRestart:
    """Better than AWS: the window is kept with the checkpoint, so a restart continues it."""

    async def test_a_restart_continues_the_window_with_its_state(self, tmp_path: Path) -> None:
        now = time.time()  # records of the current window, which stays open (close delay 120 s)
        arrivals = [now, now, now, now]
        stream = ScriptedStream(arrivals)
        first = WindowHandler()
        stopped, checkpoints, _ = await consume(
            tmp_path,
            ScriptedStream(arrivals, closed=False),
            first,
            None,
            stop_when=lambda: len(first.events) >= 2,
            settings={"window_close_delay": 120},
            TumblingWindowInSeconds=900,
            BatchSize=2,
        )
        assert stopped == "SHUTDOWN"
        saved = checkpoints["shardId-000000000000"]
        assert saved.sequence == "1003"
        assert saved.window_state is not None
        start = int(now // 900 * 900)
        assert json.loads(saved.window_state) == {"start": start, "end": start + 900, "state": {"k": 4}}
        # Started again from that checkpoint (the shard has since closed): the window goes on.
        second = WindowHandler()
        reason, _, _ = await consume(tmp_path, stream, second, None, start=saved, TumblingWindowInSeconds=900)
        assert second.summary() == [([], {"k": 4}, True, False)]
        assert reason == "SHARD_END"

    async def test_a_restored_window_ends_when_a_later_record_arrives(self, tmp_path: Path) -> None:
        stream = ScriptedStream([100.0, 101.0, 200.0])
        start = Checkpoint(
            Position.AFTER_SEQUENCE_NUMBER, "1001", window_state='{"start":100,"end":110,"state":{"k":2}}'
        )
        handler = WindowHandler()
        await consume(tmp_path, stream, handler, None, start=start, TumblingWindowInSeconds=10)
        assert handler.summary() == [
            ([], {"k": 2}, True, False),
            (["1002"], {}, False, False),
            ([], {"k": 1}, True, False),
        ]
        assert handler.events[0]["window"]["start"] == "1970-01-01T00:01:40Z"

    async def test_an_unreadable_stored_window_is_logged_and_a_fresh_one_started(self, tmp_path: Path) -> None:
        stream = ScriptedStream([100.0, 101.0, 102.0])
        start = Checkpoint(Position.AFTER_SEQUENCE_NUMBER, "1001", window_state="not json")
        handler = WindowHandler()
        await consume(tmp_path, stream, handler, None, start=start, TumblingWindowInSeconds=10)
        assert handler.summary() == [(["1002"], {}, False, False), ([], {"k": 1}, True, False)]


def mapping_uuid(registry: Any) -> str:
    """The mapping label of the one mapping that `consume` registered."""
    for family in registry.collect():
        for sample in family.samples:
            if "event_source_mapping_uuid" in sample.labels:
                return str(sample.labels["event_source_mapping_uuid"])
    raise AssertionError("no mapping metrics")
