"""Soak: steady traffic through one `esm run` process; memory and open descriptors stay flat.

One real `esm run` process reads an SQS queue (moto), a Kinesis stream with two shards
(kinesalite) and a DynamoDB stream (moto) while producers write to each at a steady rate for
`ESM_SOAK_SECONDS` (120 s by default in CI; `make soak` runs 30 minutes). Every few seconds the
test reads the process's resident memory (VmRSS), open file descriptors and sockets from /proc.

After a warm-up (caches, connection pools, thread pools and pollers reach their working size),
the samples are split into two halves of equal time: a leak grows without bound, so the second
half's maximum must not exceed the first half's by more than a small margin. This is a
resource-growth check, not a timing assertion. Every record must reach the function exactly
once (nothing is killed here; moto's SQS gets `tests.reliability.moto_sqs`'s fix, without which
it can hand one message to two concurrent receives), and the process must stop cleanly on SIGTERM. The figures are
printed in the "reliability figures" section of the pytest output.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import write_config
from tests.reliability.esm_process import EsmProcess, ResourceSample
from tests.reliability.moto_sqs import sqs_receive_fixed
from tests.reliability.recording import read_deliveries
from tests.reliability.settings import env_int
from tests.reliability.traffic import produce, sources

SOAK_SECONDS = env_int("ESM_SOAK_SECONDS", 120)
SAMPLE_EVERY = max(2.0, SOAK_SECONDS / 120)  # seconds; at least 60 samples a run
WARM_UP = max(20.0, SOAK_SECONDS / 6)  # seconds of traffic before the samples that count
RATES = {"sqs": 10.0, "kinesis": 100.0, "dynamodb": 10.0}  # records per second
# The second half's maximum may pass the first half's by this much: what esm holds legitimately
# varies with load (each stream shard reads up to 2,000 records ahead, SQS pollers carry messages).
RSS_MARGIN_KIB = 8 * 1024
FD_MARGIN = 8  # descriptors (and sockets): a few connections more may be open at one moment
DRAIN_WITHIN = 120.0
STARTED_WITHIN = 60.0
TIMEOUT = SOAK_SECONDS + 300

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(TIMEOUT)]


def _halves(samples: list[ResourceSample], start: float) -> tuple[list[ResourceSample], list[ResourceSample]]:
    """The samples after the warm-up, split at the middle of their time span."""
    counted = [s for s in samples if s.at - start >= WARM_UP]
    assert len(counted) >= 10, f"only {len(counted)} samples after the warm-up"
    middle = (counted[0].at + counted[-1].at) / 2
    return [s for s in counted if s.at < middle], [s for s in counted if s.at >= middle]


def _growth(
    samples: list[ResourceSample], start: float, value: Callable[[ResourceSample], int], margin: int
) -> tuple[int, int, int]:
    """(first-half max, second-half max, allowed second-half max) of one measure."""
    first, second = _halves(samples, start)
    before, after = max(map(value, first)), max(map(value, second))
    return before, after, before + margin


class TestSoak:
    """Steady traffic for a long time: nothing lost or repeated, no memory or descriptor growth."""

    async def test_steady_traffic_keeps_memory_and_descriptors_flat(
        self, tmp_path: Path, moto_endpoint: str, kinesalite_endpoint: str, figures: Any
    ) -> None:
        """Every record delivered exactly once; RSS, descriptors and sockets flat after the warm-up."""
        # moto may hand one message to two concurrent receives; the fix makes SQS's exactly-once
        # hand-out hold, so a repeat here can only be esm's.
        with sqs_receive_fixed():
            await self._soak(tmp_path, moto_endpoint, kinesalite_endpoint, figures)

    async def _soak(self, tmp_path: Path, moto_endpoint: str, kinesalite_endpoint: str, figures: Any) -> None:
        async with sources(
            moto_endpoint,
            kinesalite_endpoint,
            sqs={"BatchSize": 10},
            kinesis={"BatchSize": 100, "MaximumBatchingWindowInSeconds": 1},
            dynamodb={},
            kinesis_shards=2,
        ) as srcs:
            srcs.write_handler(tmp_path)
            config = write_config(
                tmp_path,
                {
                    "aws": srcs.aws,
                    "http": {"listen": "127.0.0.1:0"},
                    "state": {"sqlite": "./state.db"},
                    "functions": srcs.functions(timeout=30),
                    "event_source_mappings": [s.mapping for s in srcs.items],
                },
            )
            process = EsmProcess(config, tmp_path / "esm.log").start()
            try:
                started = time.monotonic() + STARTED_WITHIN
                while not process.logged("daemon_started"):
                    assert process.exit_code() is None, f"esm exited with {process.exit_code()}: {process.tail()}"
                    assert time.monotonic() < started, f"esm did not start within {STARTED_WITHIN} s: {process.tail()}"
                    await asyncio.sleep(0.1)
                # `esm run` moves its start-up objects out of the garbage collector's view: frozen objects
                # are never collected, so this soak is also what shows that memory stays flat with them.
                while not process.logged("startup_objects_frozen"):
                    assert time.monotonic() < started, f"esm did not freeze its start-up objects: {process.tail()}"
                    await asyncio.sleep(0.1)
                stop = asyncio.Event()
                producers = [asyncio.create_task(produce(s, RATES[s.name], stop)) for s in srcs.items]
                samples: list[ResourceSample] = []
                start = time.monotonic()
                try:
                    while (now := time.monotonic()) - start < SOAK_SECONDS:
                        assert process.exit_code() is None, f"esm exited with {process.exit_code()}: {process.tail()}"
                        samples.append(process.sample(now))
                        await asyncio.sleep(SAMPLE_EVERY - (time.monotonic() - now) % SAMPLE_EVERY)
                        for task in producers:
                            if task.done():
                                task.result()  # a producer that failed fails the test with its error
                finally:
                    stop.set()
                    await asyncio.gather(*producers)
                seconds = time.monotonic() - start

                def undelivered() -> dict[str, int]:
                    left = {}
                    for s in srcs.items:
                        missing = len(set(s.produced) - {d.id for d in read_deliveries(tmp_path / s.log_name)})
                        if missing:
                            left[s.name] = missing
                    return left

                deadline = time.monotonic() + DRAIN_WITHIN
                while left := undelivered():
                    assert time.monotonic() < deadline, f"undelivered after {DRAIN_WITHIN} s: {left}; {process.tail()}"
                    await asyncio.sleep(1.0)
                samples.append(process.sample(time.monotonic()))
                code = process.stop()
                assert code == 0, f"esm exited with {code} on SIGTERM: {process.tail()}"
            finally:
                if process.exit_code() is None:  # a failure above: do not leave it running
                    process.kill()

            rss = _growth(samples, start, lambda s: s.rss_kib, RSS_MARGIN_KIB)
            fds = _growth(samples, start, lambda s: s.fds, FD_MARGIN)
            sockets = _growth(samples, start, lambda s: s.sockets, FD_MARGIN)
            counts = {s.name: (len(s.produced), read_deliveries(tmp_path / s.log_name)) for s in srcs.items}

        first, last = samples[0], samples[-1]
        rates = ", ".join(f"{name} {n / seconds:.1f}/s" for name, (n, _) in counts.items())
        figures(
            f"soak: {seconds:.0f} s, {len(samples)} samples, {sum(n for n, _ in counts.values())} records ({rates})"
        )
        figures(
            f"soak RSS MiB: started {first.rss_kib / 1024:.1f}, end {last.rss_kib / 1024:.1f}, "
            f"max {max(s.rss_kib for s in samples) / 1024:.1f}; after warm-up: first half max {rss[0] / 1024:.1f}, "
            f"second half max {rss[1] / 1024:.1f} (allowed {rss[2] / 1024:.1f})"
        )
        figures(
            f"soak descriptors: started {first.fds}, end {last.fds}, max {max(s.fds for s in samples)}; "
            f"halves {fds[0]} -> {fds[1]} (allowed {fds[2]}); sockets: started {first.sockets}, end {last.sockets}, "
            f"halves {sockets[0]} -> {sockets[1]} (allowed {sockets[2]}); threads: end {last.threads}"
        )
        for name, (produced, deliveries) in counts.items():
            repeats = len(deliveries) - len({d.id for d in deliveries})
            assert repeats == 0, f"{name}: {repeats} records delivered more than once without any crash"
            assert len(deliveries) == produced, f"{name}: {len(deliveries)} deliveries of {produced} records"
        assert rss[1] <= rss[2], f"resident memory grew: {rss[0]} KiB -> {rss[1]} KiB (allowed {rss[2]} KiB)"
        assert fds[1] <= fds[2], f"open descriptors grew: {fds[0]} -> {fds[1]} (allowed {fds[2]})"
        assert sockets[1] <= sockets[2], f"open sockets grew: {sockets[0]} -> {sockets[1]} (allowed {sockets[2]})"
