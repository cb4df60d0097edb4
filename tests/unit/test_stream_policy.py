"""The pure core of stream mappings: decide_stream, record age, the checkpointer and shard lineage.

ESM-SPEC.md §4.2 and §8 vectors 5–7 are the specification; Hypothesis checks the properties
DESIGN.md rule 11 names (bisected halves partition the batch; the checkpoint never passes an
unacknowledged record; per-key order under any completion order).
"""

from __future__ import annotations

import json
import zlib
from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from esm.policy import Attempt, StreamPolicy, decide_stream, expired
from esm.sources._shards import Checkpointer, Shard, StreamRecord, eligible_shards
from esm.targets.base import InvokeResult

SEQS = ["100", "101", "102", "103"]
OK = InvokeResult(None, b"")
THROWN = InvokeResult("Unhandled", b'{"errorMessage":"boom"}')


def reply(document: object) -> InvokeResult:
    """A successful invocation that returned `document` as JSON."""
    return InvokeResult(None, json.dumps(document).encode())


def record(sequence: int, key: str = "k") -> StreamRecord:
    """A minimal stream record."""
    return StreamRecord(sequence, str(sequence), key, 0.0, {}, b"{}")


RBIF = StreamPolicy(report_batch_item_failures=True, maximum_retry_attempts=2)


class TestSuccess:
    """A batch is committed whole when the function succeeded (ESM-SPEC.md §4.2 default checkpointing)."""

    def test_without_report_batch_item_failures_the_response_is_ignored(self) -> None:
        """A response listing failures means nothing unless ReportBatchItemFailures is on."""
        d = decide_stream(StreamPolicy(), reply({"batchItemFailures": [{"itemIdentifier": "101"}]}), SEQS, Attempt(1))
        assert (d.action, d.done, d.outcome) == ("commit", 4, "success")

    @pytest.mark.parametrize(
        "payload",
        [b"", b"null", b"[]", b"{}", b'{"batchItemFailures": []}', b'{"batchItemFailures": null}', b'""'],
        ids=["none", "null", "empty_list", "empty_dict", "empty_failures", "null_failures", "empty_string"],
    )
    def test_recorded_success_responses_commit_with_one_invocation(self, payload: bytes) -> None:
        """§8 vector 5: these responses are a whole-batch success (recorded *_success scenarios)."""
        d = decide_stream(RBIF, InvokeResult(None, payload), SEQS, Attempt(1))
        assert (d.action, d.done) == ("commit", 4)


class TestFailures:
    """Function errors and invalid responses retry the batch until MaximumRetryAttempts (§4.2)."""

    @pytest.mark.parametrize(
        "result",
        [
            THROWN,
            reply({"batchItemFailures": [{"itemIdentifier": ""}]}),
            reply({"batchItemFailures": [{"itemIdentifier": None}]}),
            reply({"batchItemFailures": [{"itemIdentifier": 123}]}),
            reply({"batchItemFailures": [{"foo": 123}]}),
            reply({"batchItemFailures": [{"foo": None}]}),
        ],
        ids=["unhandled", "empty_string", "null", "not_in_batch", "invalid_key", "invalid_key_null"],
    )
    def test_recorded_failures_take_one_plus_maximum_retry_attempts_invocations(self, result: InvokeResult) -> None:
        """§8 vector 5: 1 + MaximumRetryAttempts invocations, then a discard of the whole batch."""
        attempt = Attempt()
        actions = []
        while True:
            attempt = attempt.invoked()
            d = decide_stream(RBIF, result, SEQS, attempt)
            actions.append(d.action)
            if d.action != "retry":
                break
            attempt = d.attempt
        assert actions == ["retry", "retry", "discard"]
        assert d.attempt.invocations == 3
        assert d.done == 0

    def test_a_thrown_error_is_a_function_error_and_an_invalid_response_is_not(self) -> None:
        """Failure records say functionError Unhandled for the first and null for the second (§4.3)."""
        assert decide_stream(RBIF, THROWN, SEQS, Attempt(1)).outcome == "function_error"
        bad = reply({"batchItemFailures": [{"foo": 1}]})
        assert decide_stream(RBIF, bad, SEQS, Attempt(1)).outcome == "invalid_response"

    def test_minus_one_retries_forever(self) -> None:
        """MaximumRetryAttempts -1 never discards for retries (records leave by age only)."""
        d = decide_stream(StreamPolicy(), THROWN, SEQS, Attempt(10_000, 10_000))
        assert d.action == "retry"

    def test_zero_retries_discards_after_the_first_failure(self) -> None:
        """MaximumRetryAttempts 0: one invocation, then the records go to the destination."""
        d = decide_stream(StreamPolicy(maximum_retry_attempts=0), THROWN, SEQS, Attempt(1))
        assert (d.action, d.attempt.invocations) == ("discard", 1)


class TestPartialBatchResponse:
    """The lowest reported sequence number becomes the checkpoint (KIN-BFR, DDB-BFR)."""

    def test_records_before_the_lowest_failure_are_done(self) -> None:
        """Several failures: the lowest wins, compared as integers, and everything after it is retried."""
        seqs = ["9", "10", "11", "12"]
        result = reply({"batchItemFailures": [{"itemIdentifier": "11"}, {"itemIdentifier": "10"}]})
        d = decide_stream(RBIF, result, seqs, Attempt(1))
        assert (d.action, d.done, d.outcome, d.attempt.retries) == ("retry", 1, "partial_failure", 1)

    def test_recorded_last_record_failing_is_retried_alone_until_exhausted(self) -> None:
        """Recorded test_kinesis_report_batch_item_failures: #6 alone, approximateInvokeCount 4."""
        policy = StreamPolicy(report_batch_item_failures=True, maximum_retry_attempts=3)
        batch = ["4", "5", "6"]
        attempt = Attempt().invoked()
        d = decide_stream(policy, reply({"batchItemFailures": [{"itemIdentifier": "6"}]}), batch, attempt)
        assert (d.action, d.done) == ("retry", 2)
        batch, attempt = batch[d.done :], d.attempt
        while d.action == "retry":
            attempt = attempt.invoked()
            d = decide_stream(policy, reply({"batchItemFailures": [{"itemIdentifier": "6"}]}), batch, attempt)
            attempt = d.attempt
        assert (d.action, d.done, d.attempt.invocations) == ("discard", 0, 4)

    def test_partial_response_with_bisect_retries_from_the_returned_sequence_number(self) -> None:
        """With bisect on, a partial response is not halved: only the remaining records are retried."""
        policy = StreamPolicy(report_batch_item_failures=True, bisect=True)
        d = decide_stream(policy, reply({"batchItemFailures": [{"itemIdentifier": "102"}]}), SEQS, Attempt(1))
        assert (d.action, d.done) == ("retry", 2)


class TestBisect:
    """BisectBatchOnFunctionError splits on function errors without consuming retries (§4.2)."""

    def test_a_function_error_bisects_and_keeps_the_retry_count(self) -> None:
        """Splitting does not count toward MaximumRetryAttempts."""
        d = decide_stream(StreamPolicy(bisect=True, maximum_retry_attempts=0), THROWN, SEQS, Attempt(1))
        assert (d.action, d.mid, d.attempt) == ("bisect", 2, Attempt(1, 0))

    def test_an_invalid_response_bisects_too(self) -> None:
        """An invocation that failed by its response is bisected regardless of ReportBatchItemFailures."""
        policy = StreamPolicy(bisect=True, report_batch_item_failures=True)
        d = decide_stream(policy, reply({"batchItemFailures": [{"foo": 1}]}), SEQS, Attempt(1))
        assert d.action == "bisect"

    def test_a_single_record_is_retried_then_discarded(self) -> None:
        """A batch of one cannot be split: the retry quota applies."""
        policy = StreamPolicy(bisect=True, maximum_retry_attempts=0)
        assert decide_stream(policy, THROWN, ["7"], Attempt(3)).action == "discard"

    @given(st.integers(min_value=1, max_value=200), st.integers(min_value=0, max_value=199))
    def test_bisecting_down_to_a_poison_record_discards_exactly_it(self, size: int, poison: int) -> None:
        """Bisected halves partition the batch: every other record is committed once, the poison one discarded."""
        poison %= size
        seqs = [str(1000 + i) for i in range(size)]
        policy = StreamPolicy(bisect=True, maximum_retry_attempts=1)
        todo = deque([(0, size, Attempt())])
        committed: list[int] = []
        discarded: list[int] = []
        while todo:
            lo, hi, attempt = todo.popleft()
            attempt = attempt.invoked()
            result = THROWN if lo <= poison < hi else OK
            d = decide_stream(policy, result, seqs[lo:hi], attempt)
            if d.action == "commit":
                committed.extend(range(lo, hi))
            elif d.action == "bisect":
                assert 0 < d.mid < hi - lo
                todo.extendleft([(lo + d.mid, hi, d.attempt), (lo, lo + d.mid, d.attempt)])
            elif d.action == "retry":
                todo.appendleft((lo + d.done, hi, d.attempt))
            else:
                discarded.extend(range(lo + d.done, hi))
        assert discarded == [poison]
        assert committed == [i for i in range(size) if i != poison]


class TestRecordAge:
    """MaximumRecordAgeInSeconds discards old records before invocation (§4.2, §8 vector 7)."""

    def test_only_records_older_than_the_limit_are_expired(self) -> None:
        """The rest of the batch is still delivered."""
        assert expired([0.0, 70.0, 100.0], now=120.0, maximum_record_age=60) == (0,)

    def test_minus_one_keeps_everything(self) -> None:
        """-1 is no limit."""
        assert expired([0.0], now=1e9, maximum_record_age=-1) == ()


class TestCheckpointer:
    """The checkpoint covers the contiguous completed prefix only (DESIGN.md rule 2)."""

    def test_out_of_order_completion_waits_for_the_gap(self) -> None:
        """Completing 2 before 1 does not move the checkpoint past 1."""
        c = Checkpointer()
        rs = [record(i) for i in range(1, 4)]
        c.add(rs)
        assert not c.complete([rs[1]])
        assert c.position is None
        assert c.complete([rs[0]])
        assert (c.position, c.outstanding) == ("2", 1)

    def test_completing_a_record_that_is_not_outstanding_changes_nothing(self) -> None:
        """A record completed twice, or one never read, neither moves nor blocks the checkpoint."""
        c = Checkpointer()
        rs = [record(i) for i in range(1, 4)]
        c.add(rs)
        assert c.complete([rs[0]])
        assert not c.complete([rs[0], record(99)])
        assert (c.position, c.outstanding) == ("1", 2)
        assert c.complete(rs[1:])
        assert (c.position, c.outstanding) == ("3", 0)

    @settings(max_examples=200)
    @given(st.data())
    def test_the_checkpoint_never_passes_an_unacknowledged_record(self, data: st.DataObject) -> None:
        """Under any completion order the position is the end of the completed prefix."""
        n = data.draw(st.integers(min_value=1, max_value=60))
        rs = [record(i * 7 + 3) for i in range(n)]
        c = Checkpointer()
        c.add(rs)
        order = data.draw(st.permutations(range(n)))
        done: set[int] = set()
        for i in order:
            c.complete([rs[i]])
            done.add(i)
            prefix = 0
            while prefix in done:
                prefix += 1
            assert c.position == (rs[prefix - 1].sequence_number if prefix else None)

    @settings(max_examples=100)
    @given(st.data())
    def test_lanes_keep_order_per_key_under_any_completion_order(self, data: st.DataObject) -> None:
        """Records hashed to lanes by key, each lane completed in its own order: per-key order holds."""
        lanes_n = data.draw(st.integers(min_value=1, max_value=10))
        keys = data.draw(st.lists(st.sampled_from("abcdefgh"), min_size=1, max_size=80))
        rs = [record(i, k) for i, k in enumerate(keys)]
        lanes: list[deque[StreamRecord]] = [deque() for _ in range(lanes_n)]
        for r in rs:
            lanes[zlib.crc32(r.key.encode()) % lanes_n].append(r)
        seen: dict[str, list[int]] = {}
        while any(lanes):
            lane = data.draw(st.sampled_from([q for q in lanes if q]))
            r = lane.popleft()
            seen.setdefault(r.key, []).append(r.sequence)
        for sequence in seen.values():
            assert sequence == sorted(sequence)


class TestLineage:
    """A child shard starts only after its parents reached SHARD_END or left the listing (§4.2)."""

    def test_children_wait_for_every_parent(self) -> None:
        """After a merge, the child waits for both parents."""
        shards = [Shard("p1", closed=True), Shard("p2", closed=True), Shard("c", ("p1", "p2"))]
        assert [s.shard_id for s in eligible_shards(shards, [])] == ["p1", "p2"]
        assert [s.shard_id for s in eligible_shards(shards, ["p1"])] == ["p2"]
        assert [s.shard_id for s in eligible_shards(shards, ["p1", "p2"])] == ["c"]

    def test_a_parent_no_longer_listed_does_not_block(self) -> None:
        """A parent trimmed past retention cannot be read, so its children start."""
        assert [s.shard_id for s in eligible_shards([Shard("c", ("gone",))], [])] == ["c"]
