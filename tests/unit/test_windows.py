"""The tumbling-window building blocks (esm/windows.py): bounds, the event, the response, the checkpoint form."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from esm.events import EVENT_LIMIT_BYTES, encode_record
from esm.policy import Attempt, StreamPolicy, decide_stream
from esm.targets.base import InvokeResult
from esm.windows import STATE_LIMIT_BYTES, Window, read_state, window_bounds

SHARD = "shardId-000000000006"
ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/lambda-stream"


class TestBounds:
    def test_the_documented_example(self) -> None:
        # ESM-SPEC.md §3.5: a record at 2020-12-09T07:04:35Z, 120 s window, 07:04:00 to 07:06:00.
        start, end = window_bounds(1607497475.0, 120)
        assert (start, end) == (1607497440, 1607497560)

    @given(st.floats(min_value=0, max_value=4e9), st.integers(min_value=1, max_value=900))
    def test_every_arrival_is_in_exactly_its_window(self, arrival: float, seconds: int) -> None:
        start, end = window_bounds(arrival, seconds)
        assert start <= arrival < end
        assert end - start == seconds
        assert start % seconds == 0

    def test_a_late_record_joins_the_open_window_and_a_later_one_does_not(self) -> None:
        window = Window(100, 110)
        assert window.holds(95.0)
        assert window.holds(109.999)
        assert not window.holds(110.0)


class TestEvent:
    def test_payload_and_event_are_the_same_event_in_aws_field_order(self) -> None:
        record = {"kinesis": {"partitionKey": "1", "data": "SGVsbG8="}, "eventSource": "aws:kinesis"}
        window = Window(1607497440, 1607497560, b'{"1":282,"2":715}')
        fields = window.fields(SHARD, ARN, final=False, terminated=False)
        payload = window.payload([encode_record(record)], fields)
        event = window.event([record], SHARD, ARN, final=False, terminated=False)
        assert payload == json.dumps(event, separators=(",", ":")).encode()
        # The documented KinesisTimeWindowEvent, apart from the record.
        assert event == {
            "Records": [record],
            "window": {"start": "2020-12-09T07:04:00Z", "end": "2020-12-09T07:06:00Z"},
            "state": {"1": 282, "2": 715},
            "shardId": SHARD,
            "eventSourceARN": ARN,
            "isFinalInvokeForWindow": False,
            "isWindowTerminatedEarly": False,
        }

    def test_a_final_invocation_has_no_records_and_both_flags_when_terminated_early(self) -> None:
        window = Window(0, 60)
        event = json.loads(window.payload([], window.fields(SHARD, ARN, final=True, terminated=True)))
        assert event["Records"] == []
        assert event["state"] == {}
        assert (event["isFinalInvokeForWindow"], event["isWindowTerminatedEarly"]) == (True, True)

    def test_each_in_process_event_gets_its_own_copy_of_the_state(self) -> None:
        window = Window(0, 60, b'{"n":1}')
        first = window.event([], SHARD, ARN, final=False, terminated=False)
        first["state"]["n"] = 99
        assert window.event([], SHARD, ARN, final=False, terminated=False)["state"] == {"n": 1}

    def test_the_record_budget_leaves_room_for_the_window_fields(self) -> None:
        window = Window(0, 60, b'{"k":"' + b"x" * 1000 + b'"}')
        fields = window.fields(SHARD, ARN, final=False, terminated=False)
        assert window.record_budget(SHARD, ARN) == EVENT_LIMIT_BYTES - len(fields)
        assert len(window.payload([], fields)) == len(b'{"Records":[]}') + len(fields)

    def test_non_ascii_state_is_sent_as_utf8(self) -> None:
        state = read_state('{"state": {"city": "Zürich"}}'.encode()).state
        assert state == '{"city":"Zürich"}'.encode()


class TestResponse:
    @pytest.mark.parametrize(
        ("payload", "state", "problem"),
        [
            pytest.param(b'{"state": {"1": 282}}', b'{"1":282}', "", id="documented"),
            pytest.param(b'{"state": {}, "batchItemFailures": []}', b"{}", "", id="empty-state-with-failures"),
            pytest.param(b'{"state": {"a": [1, {"b": null}]}}', b'{"a":[1,{"b":null}]}', "", id="nested"),
            pytest.param(b"", None, "tumbling window response is not a JSON object", id="no-response"),
            pytest.param(b"null", None, "tumbling window response is not a JSON object", id="null"),
            pytest.param(b"{}", None, "tumbling window response has no state", id="empty-object"),
            pytest.param(
                b'{"batchItemFailures": []}', None, "tumbling window response has no state", id="failures-only"
            ),
            pytest.param(b'{"state": null}', None, "tumbling window response state is not a JSON object", id="null"),
            pytest.param(b'{"state": [1]}', None, "tumbling window response state is not a JSON object", id="array"),
            pytest.param(b'{"state": "s"}', None, "tumbling window response state is not a JSON object", id="str"),
            pytest.param(b"{nope", None, "tumbling window response is not valid JSON", id="not-json"),
            pytest.param(b"\xff\xfe", None, "tumbling window response is not valid JSON", id="not-utf8"),
            pytest.param(b'{"state": {"x": NaN}}', None, "tumbling window response state is not valid JSON", id="nan"),
            pytest.param(b"[]", None, "tumbling window response is not a JSON object", id="array-response"),
        ],
    )
    def test_read_state(self, payload: bytes, state: bytes | None, problem: str) -> None:
        reading = read_state(payload)
        assert (reading.state, reading.problem) == (state, problem)

    @given(st.binary(max_size=200))
    def test_read_state_never_raises(self, payload: bytes) -> None:
        reading = read_state(payload)
        assert (reading.state is None) == bool(reading.problem)

    def test_a_missing_state_is_an_invalid_response_even_without_report_batch_item_failures(self) -> None:
        decision = decide_stream(
            StreamPolicy(maximum_retry_attempts=0),
            InvokeResult(None, b"{}"),
            ["1", "2"],
            Attempt().invoked(),
            "tumbling window response has no state",
        )
        assert (decision.action, decision.outcome, decision.done) == ("discard", "invalid_response", 0)

    def test_a_missing_state_bisects_like_a_function_error(self) -> None:
        decision = decide_stream(
            StreamPolicy(bisect=True), InvokeResult(None, b"{}"), ["1", "2"], Attempt().invoked(), "no state"
        )
        assert (decision.action, decision.mid) == ("bisect", 1)


class TestCheckpointForm:
    def test_round_trip(self) -> None:
        window = Window(1607497440, 1607497560, b'{"1":282}')
        text = window.to_checkpoint()
        assert json.loads(text) == {"start": 1607497440, "end": 1607497560, "state": {"1": 282}}
        again = Window.from_checkpoint(text)
        assert (again.start, again.end, again.state) == (window.start, window.end, window.state)

    @pytest.mark.parametrize(
        ("text", "reason"),
        [
            ("nope", "window state is not JSON"),
            ("[]", "window state is not a JSON object"),
            ('{"start": 1, "end": 1, "state": {}}', "window state has no valid start and end"),
            ('{"start": "1", "end": 2, "state": {}}', "window state has no valid start and end"),
            ('{"start": 1, "end": 2}', "window state has no state object"),
        ],
    )
    def test_unreadable_forms_are_refused(self, text: str, reason: str) -> None:
        with pytest.raises(ValueError, match=reason):
            Window.from_checkpoint(text)

    def test_oversized_is_over_one_megabyte(self) -> None:
        just = b'{"k":"' + b"x" * (STATE_LIMIT_BYTES - 8) + b'"}'
        assert len(just) == STATE_LIMIT_BYTES
        assert not Window(0, 1, just).oversized
        assert Window(0, 1, just[:-2] + b'x"}').oversized
