"""Idle polling (`esm.sources._idle`): read on soon after records, then Lambda's cadence, capped for many shards."""

from __future__ import annotations

import math

import pytest

from esm.arns import SourceKind
from esm.config import StreamsConfig
from esm.sources._idle import idle_wait

QUIET = math.inf  # the shard never returned records (or long ago)


def _waits(settings: StreamsConfig, kind: SourceKind, shards: int, quiet: float = QUIET) -> list[float]:
    return [idle_wait(settings, kind, shards, quiet) for _ in range(200)]


def _within(waits: list[float], seconds: float) -> bool:
    """Every wait is `seconds` give or take the ±25 % jitter."""
    return all(0.75 * seconds - 1e-9 <= w <= 1.25 * seconds + 1e-9 for w in waits)


@pytest.mark.parametrize(("kind", "interval"), [(SourceKind.KINESIS, 1.0), (SourceKind.DYNAMODB, 0.25)])
def test_quiet_shard_is_read_at_lambdas_cadence(kind: SourceKind, interval: float) -> None:
    waits = _waits(StreamsConfig(), kind, shards=4)
    assert _within(waits, interval)
    assert min(waits) < interval < max(waits)  # jittered, so shards started together drift apart


def test_shard_with_records_a_moment_ago_is_read_again_soon() -> None:
    assert _within(_waits(StreamsConfig(), SourceKind.KINESIS, shards=1, quiet=0.5), 0.1)
    assert _within(_waits(StreamsConfig(), SourceKind.KINESIS, shards=1, quiet=1.0), 1.0)


def test_configured_interval_bounds_every_wait() -> None:
    settings = StreamsConfig(idle_poll_interval=0.05)
    assert _within(_waits(settings, SourceKind.KINESIS, shards=1, quiet=0.2), 0.05)
    assert _within(_waits(settings, SourceKind.KINESIS, shards=1), 0.05)


def test_many_quiet_shards_share_the_cap() -> None:
    # 1,000 shards at 30 calls/s: each quiet shard about every 33 s, whatever the interval.
    waits = _waits(StreamsConfig(idle_poll_interval=0.2), SourceKind.KINESIS, shards=1000)
    assert _within(waits, 1000 / 30)
    assert sum(waits) / len(waits) == pytest.approx(1000 / 30, rel=0.1)
    # One that had records a moment ago is not slowed.
    assert _within(_waits(StreamsConfig(), SourceKind.KINESIS, shards=1000, quiet=0.3), 0.1)


def test_cap_zero_means_no_cap() -> None:
    settings = StreamsConfig(idle_poll_interval=0.5, max_idle_polls_per_second=0)
    assert _within(_waits(settings, SourceKind.KINESIS, shards=10_000), 0.5)


def test_zero_interval_means_no_wait() -> None:
    settings = StreamsConfig(idle_poll_interval=0, max_idle_polls_per_second=0)
    assert _waits(settings, SourceKind.KINESIS, shards=3) == [0.0] * 200
    assert _waits(settings, SourceKind.KINESIS, shards=3, quiet=0.1) == [0.0] * 200
