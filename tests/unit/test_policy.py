"""The pure SQS ack decision: what is deleted and what is left to reappear (ESM-SPEC.md §4.1, §8)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from esm.policy import SqsDecision, decide_sqs
from esm.targets.base import InvokeResult

IDS = ["m1", "m2", "m3", "m4"]


def ok(response: Any = None, *, raw: bytes | None = None) -> InvokeResult:
    """A successful invocation that returned `response` (as JSON) or the `raw` bytes."""
    return InvokeResult(None, raw if raw is not None else json.dumps(response).encode())


def failures(*ids: str) -> dict[str, Any]:
    """A partial batch response listing `ids`."""
    return {"batchItemFailures": [{"itemIdentifier": i} for i in ids]}


class TestFunctionError:
    """A function error retries the whole batch, whatever the response (SQS-ERR, §8 vector 3)."""

    @pytest.mark.parametrize("report", [True, False], ids=["with-report", "without-report"])
    def test_function_error_retries_all(self, report: bool) -> None:
        """A thrown error or timeout deletes nothing, with or without ReportBatchItemFailures."""
        result = InvokeResult("Unhandled", json.dumps(failures("m1")).encode())
        decision = decide_sqs(result, IDS, report_batch_item_failures=report)
        assert decision == SqsDecision((), (0, 1, 2, 3), "function_error", "function error: Unhandled")


class TestWithoutReportBatchItemFailures:
    """Without ReportBatchItemFailures the response body is ignored (ESM-SPEC.md §3.6)."""

    @pytest.mark.parametrize(
        "payload",
        [b"", b"null", json.dumps(failures("m1")).encode(), b"{not json"],
        ids=["empty", "null", "listed-failure-ignored", "invalid-json-ignored"],
    )
    def test_success_deletes_everything(self, payload: bytes) -> None:
        """Any answer without a function error deletes the whole batch."""
        decision = decide_sqs(ok(raw=payload), IDS, report_batch_item_failures=False)
        assert decision == SqsDecision((0, 1, 2, 3), (), "success")


class TestWithReportBatchItemFailures:
    """With ReportBatchItemFailures the response decides per message (ESM-SPEC.md §4.1, §8 vectors 3 and 4)."""

    def test_empty_object_deletes_everything(self) -> None:
        """`{}` is a whole-batch success: every message is deleted (§8 vector 3)."""
        assert decide_sqs(ok({}), IDS, report_batch_item_failures=True) == SqsDecision((0, 1, 2, 3), (), "success")

    def test_foo_key_retries_everything(self) -> None:
        """`{"batchItemFailures":[{"foo":"notvalid"}]}` fails the whole batch (§8 vector 3)."""
        decision = decide_sqs(ok({"batchItemFailures": [{"foo": "notvalid"}]}), IDS, report_batch_item_failures=True)
        assert (decision.delete, decision.retry, decision.outcome) == ((), (0, 1, 2, 3), "invalid_response")
        assert "no itemIdentifier" in decision.reason

    def test_listed_messages_are_retried_the_rest_deleted(self) -> None:
        """Reporting 2, 3 and 4 deletes only 1 (§8 vector 4)."""
        decision = decide_sqs(ok(failures("m2", "m3", "m4")), IDS, report_batch_item_failures=True)
        assert (decision.delete, decision.retry, decision.outcome) == ((0,), (1, 2, 3), "partial_failure")
        assert decision.reason == "function reported 3 failed of 4 messages"

    def test_every_copy_of_a_listed_id_is_retried(self) -> None:
        """If SQS delivered one message twice in a batch, both copies are retried when it is listed."""
        decision = decide_sqs(ok(failures("m1")), ["m1", "m2", "m1"], report_batch_item_failures=True)
        assert (decision.delete, decision.retry) == ((1,), (0, 2))

    def test_empty_batch(self) -> None:
        """An empty batch needs no action."""
        assert decide_sqs(ok({}), [], report_batch_item_failures=True) == SqsDecision((), (), "success")


class TestFifoOrder:
    """In a FIFO batch nothing is deleted ahead of a retried message of its group (ESM-SPEC.md §4.1)."""

    def test_later_messages_of_a_failed_group_are_retried(self) -> None:
        """The function lists only m2 of group a: m4 (a, later) is retried too, group b is deleted."""
        decision = decide_sqs(ok(failures("m2")), IDS, report_batch_item_failures=True, group_ids=["a", "a", "b", "a"])
        assert (decision.delete, decision.retry) == ((0, 2), (1, 3))
        assert "1 later messages of the same message groups" in decision.reason

    def test_earlier_messages_of_the_group_are_still_deleted(self) -> None:
        """Messages before the first failure of their group are done and deleted (recorded vector 4)."""
        decision = decide_sqs(ok(failures("m2", "m3", "m4")), IDS, report_batch_item_failures=True, group_ids=["1"] * 4)
        assert (decision.delete, decision.retry) == ((0,), (1, 2, 3))
        assert decision.reason == "function reported 3 failed of 4 messages"

    def test_messages_without_group_are_not_held(self) -> None:
        """A message without a group id is never held back."""
        decision = decide_sqs(ok(failures("m1")), IDS, report_batch_item_failures=True, group_ids=[None] * 4)
        assert decision.retry == (0,)

    def test_standard_queue_is_not_held(self) -> None:
        """Without group ids (a standard queue) only the listed messages are retried."""
        assert decide_sqs(ok(failures("m1")), IDS, report_batch_item_failures=True).retry == (0,)

    def test_group_ids_must_match_the_batch(self) -> None:
        """A group id list of the wrong length is a programming error."""
        with pytest.raises(ValueError, match="3 entries for 4 messages"):
            decide_sqs(ok({}), IDS, report_batch_item_failures=True, group_ids=["a"] * 3)


batches = st.integers(min_value=0, max_value=12).flatmap(
    lambda n: st.tuples(
        st.just([f"m{i}" for i in range(n)]),
        st.lists(st.sampled_from(["a", "b", "c"]) | st.none(), min_size=n, max_size=n),
    )
)
results = st.one_of(
    st.builds(lambda: InvokeResult("Unhandled", b"")),
    st.builds(lambda ids: ok(failures(*ids)), st.lists(st.sampled_from([f"m{i}" for i in range(12)]), max_size=6)),
    st.sampled_from([ok({}), ok(None), ok(raw=b"{bad"), ok({"batchItemFailures": [{"foo": 1}]})]),
)


class TestProperties:
    """Invariants of the decision for any batch, response and queue type."""

    @given(batches, results, st.booleans(), st.booleans())
    def test_delete_and_retry_partition_the_batch(
        self, batch: tuple[list[str], list[str | None]], result: InvokeResult, report: bool, fifo: bool
    ) -> None:
        """delete and retry are sorted, disjoint, and together every index exactly once."""
        ids, groups = batch
        decision = decide_sqs(result, ids, report_batch_item_failures=report, group_ids=groups if fifo else None)
        assert sorted(decision.delete + decision.retry) == list(range(len(ids)))
        assert list(decision.delete) == sorted(decision.delete)
        assert list(decision.retry) == sorted(decision.retry)
        assert decision.outcome in ("success", "function_error", "partial_failure", "invalid_response")

    @given(batches, results)
    def test_fifo_never_deletes_after_a_retry_in_its_group(
        self, batch: tuple[list[str], list[str | None]], result: InvokeResult
    ) -> None:
        """In a FIFO batch no deleted message follows a retried message of the same group."""
        ids, groups = batch
        decision = decide_sqs(result, ids, report_batch_item_failures=True, group_ids=groups)
        for r in decision.retry:
            for d in decision.delete:
                assert not (d > r and groups[d] is not None and groups[d] == groups[r])

    @given(batches, st.binary(max_size=64))
    def test_success_without_report_deletes_everything(
        self, batch: tuple[list[str], list[str | None]], payload: bytes
    ) -> None:
        """Without ReportBatchItemFailures a successful invocation deletes every message, whatever it returned."""
        ids, groups = batch
        decision = decide_sqs(ok(raw=payload), ids, report_batch_item_failures=False, group_ids=groups)
        assert decision.delete == tuple(range(len(ids)))
        assert decision.retry == ()

    @given(batches, st.lists(st.integers(min_value=0, max_value=11), min_size=1, max_size=6))
    def test_standard_partial_retries_exactly_the_listed(
        self, batch: tuple[list[str], list[str | None]], picks: list[int]
    ) -> None:
        """For a standard queue a valid partial response retries exactly the listed messages."""
        ids, _ = batch
        listed = {ids[p % len(ids)] for p in picks} if ids else set()
        decision = decide_sqs(ok(failures(*sorted(listed))), ids, report_batch_item_failures=True)
        assert {ids[i] for i in decision.retry} == listed
