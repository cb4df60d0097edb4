"""`make bench`'s engine case still runs and checks itself (benchmarks/engine.py; figures in docs/benchmarks.md).

The benchmarks are not part of `make test` (they take minutes and measure time): this runs the
engine case on a small shard, one round, so a change to esm's stream path that breaks the
benchmark's setup, or makes the floor's events differ from esm's, fails here. No figure is
asserted (performance is shown by `make bench`, never by a timing assertion in a test).
"""

from __future__ import annotations

import asyncio

import pytest

from benchmarks import engine


def test_the_engine_benchmark_runs_and_reports_both_goals(capsys: pytest.CaptureFixture[str]) -> None:
    """Every record invoked and checkpointed to SHARD_END (run_esm raises otherwise); both goals reported."""
    spent, parts = asyncio.run(engine.measure(2_000, 1))  # main() would also set the process's logging up
    results = engine.report(2_000, 1, spent, parts)
    assert [r.figure for r in results] == ["1. engine overhead: esm / floor", "1. engine throughput, 1 KB records"]
    out = capsys.readouterr().out
    assert "where esm's" in out
    assert "durable checkpoint" in out
    for name in engine.CONTENDERS:
        assert f"\n{name} " in out
