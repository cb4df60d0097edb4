"""The crash loop's checker (`tests.reliability.recording.check`) catches what it must catch."""

from __future__ import annotations

from pathlib import Path

from tests.reliability.recording import Delivery, check, read_deliveries, repair_torn_tail


def _d(pid: int, batch: str, ident: int, part: str = "s0", count: int = 0) -> Delivery:
    return Delivery(pid, batch, part, ident, count)


PRODUCED = {n: "s0" for n in range(6)}


class TestStreamChecks:
    """Streams: a repeat must come from the last batch a killed process delivered on that shard."""

    def test_a_repeat_of_the_killed_process_last_batch_is_within_the_bound(self) -> None:
        """Killed during batch b2 (records 3, 4): its repeat is two duplicates, bound two."""
        deliveries = [_d(1, "b1", 0), _d(1, "b1", 1), _d(1, "b1", 2), _d(1, "b2", 3), _d(1, "b2", 4)]
        deliveries += [_d(2, "c1", 3), _d(2, "c1", 4), _d(2, "c1", 5)]
        verdict = check("kinesis", deliveries, PRODUCED, {1}, stream=True)
        assert verdict.problems() == []
        assert (verdict.duplicates, verdict.bound) == (2, 2)

    def test_a_repeat_of_an_earlier_batch_means_a_checkpoint_came_late(self) -> None:
        """Records of b1 again after the kill although b2 followed it: the checkpoint had not moved."""
        deliveries = [_d(1, "b1", 0), _d(1, "b1", 1), _d(1, "b2", 2)]
        deliveries += [_d(2, "c1", n) for n in range(6)]
        problems = check("kinesis", deliveries, PRODUCED, {1}, stream=True).problems()
        assert any("was not that process's last batch" in p for p in problems)

    def test_loss_order_and_repeats_without_a_kill_are_reported(self) -> None:
        """A record never delivered, one delivered before an earlier one, one repeated by a live process."""
        deliveries = [_d(1, "b1", 0), _d(1, "b1", 2), _d(1, "b1", 1), _d(1, "b2", 2), _d(1, "b2", 4), _d(1, "b2", 5)]
        problems = "\n".join(check("kinesis", deliveries, PRODUCED, set(), stream=True).problems())
        assert "1 records never delivered, e.g. [3]" in problems
        assert "1 after 2 in 's0'" in problems
        assert "2 twice from process 1" in problems
        assert "exceed the bound of 0" in problems

    def test_a_record_from_the_wrong_shard_is_reported(self) -> None:
        """A record must come from the shard it was put to."""
        deliveries = [_d(1, "b1", n) for n in range(5)] + [_d(1, "b2", 5, part="s1")]
        assert any("wrong shard/group" in p for p in check("k", deliveries, PRODUCED, set(), stream=True).problems())


class TestSqsChecks:
    """SQS: a kill may repeat at most the MaximumConcurrency largest batches of the killed process."""

    def test_the_bound_is_the_largest_batches_of_each_killed_process(self) -> None:
        """Batches of 3, 2 and 1 with concurrency 2: at most 5 repeats for that kill."""
        deliveries = [_d(1, "a", 0, ""), _d(1, "a", 1, ""), _d(1, "a", 2, ""), _d(1, "b", 3, ""), _d(1, "b", 4, "")]
        deliveries += [_d(1, "c", 5, "")] + [_d(2, "d", n, "", count=2) for n in range(6)]
        verdict = check("sqs", deliveries, dict.fromkeys(range(6), ""), {1}, stream=False, ordered=False, concurrency=2)
        assert (verdict.duplicates, verdict.bound) == (6, 5)
        assert verdict.problems() == ["6 duplicates exceed the bound of 5 (work in flight at the kills)"]

    def test_a_message_received_before_but_never_seen_is_no_duplicate(self) -> None:
        """A first delivery with a receive count of 2 is counted apart, not as a duplicate."""
        deliveries = [_d(2, "a", 0, "", count=2), _d(2, "a", 1, "", count=1)]
        verdict = check("sqs", deliveries, {0: "", 1: ""}, {1}, stream=False, ordered=False, concurrency=2)
        assert (verdict.duplicates, verdict.received_unseen, verdict.problems()) == (0, 1, [])


class TestTornLines:
    """A line cut short by SIGKILL is removed before the next process appends."""

    def test_the_unfinished_last_line_is_cut(self, tmp_path: Path) -> None:
        """Whole lines stay; the fragment after the last newline goes."""
        log = tmp_path / "fn.log"
        log.write_text('[1, "b", "s0", "0", 0]\n[1, "b", "s0", "1"')
        assert repair_torn_tail(log)
        assert read_deliveries(log) == [_d(1, "b", 0)]
        assert not repair_torn_tail(log)
