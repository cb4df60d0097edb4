"""Crash loop: SIGKILL a real `esm run` at random moments while records flow, restart it, repeat.

One `esm run` process reads all four sources at once — an SQS standard queue, an SQS FIFO queue
with six message groups, a Kinesis stream with four shards (kinesalite) and a DynamoDB stream
(moto, one shard) — with its checkpoints in SQLite, while producers write numbered records to
each. The process is killed with SIGKILL `ESM_CRASH_KILLS` times (20 by default; `make soak` runs
100) at random moments: some during start-up, most at a random delay after a record reached the
function (of the source whose work was interrupted least so far). Each kill hits every source at
once. Then a last process drains everything and stops with SIGTERM. moto's SQS gets
`tests.reliability.moto_sqs`'s fix for the duration: a crash loop hits its bugs (a message handed
to two receives, FIFO order lost when a dead consumer's batch comes back), which are not esm's.

The recording target (`tests.reliability.recording`) proves, per source: every record delivered
at least once; the first deliveries in each shard and message group follow the order of
production; no record repeated within one process or after a graceful stop; and the duplicates
within the work in flight at the kills (the last batch per shard of each killed process for
streams; its `MaximumConcurrency` largest batches for SQS). The figures are printed in the
"reliability figures" section of the pytest output. `ESM_CRASH_SEED` repeats a run's choices of
kill moments (the timings themselves vary).
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import write_config
from tests.reliability.esm_process import EsmProcess
from tests.reliability.moto_sqs import sqs_receive_fixed
from tests.reliability.recording import Verdict, check, read_deliveries, repair_torn_tail
from tests.reliability.settings import env_int
from tests.reliability.traffic import Source, produce, sources

KILLS = env_int("ESM_CRASH_KILLS", 20)
SEED = env_int("ESM_CRASH_SEED", random.SystemRandom().randrange(2**32))
VISIBILITY_TIMEOUT = 4  # seconds: a message seen by a killed process returns this long after it was received
SQS_CONCURRENCY = 2
FIFO_GROUPS = 6
PAUSE = 0.1  # seconds each invocation takes after recording: kills often land inside an invocation
RATES = {"sqs": 5.0, "fifo": 5.0, "kinesis": 50.0, "dynamodb": 5.0}  # records per second while killing
STARTUP_KILLS = 0.2  # the share of kills at a random moment of start-up, before waiting for any delivery
STARTED_WITHIN = 60.0
DELIVERY_WITHIN = 45.0
DRAIN_WITHIN = 150.0
# Start-ups dominate: about 3 s per kill here, several times that on a loaded machine.
TIMEOUT = 300 + 12 * KILLS

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(TIMEOUT)]


@dataclass
class CrashRun:
    """The outcome of one crash loop over the four sources."""

    kills: int
    startup_kills: int
    torn_writes: int
    seconds: float
    verdicts: dict[str, Verdict]


_SQS = {"BatchSize": 10, "ScalingConfig": {"MaximumConcurrency": SQS_CONCURRENCY}}
# Streams: the default BatchSize (100) without a window: a batch is what one read returned.
_STREAM = {"ParallelizationFactor": 1}


async def _await(predicate: Any, within: float, failure: Any, interval: float = 0.1) -> None:
    """Wait for predicate(); fail with failure() (a message) after `within` seconds."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(failure())
        await asyncio.sleep(interval)


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


async def _crash_loop(folder: Path, moto_endpoint: str, kinesalite_endpoint: str) -> CrashRun:
    began = time.monotonic()
    rng = random.Random(SEED)  # noqa: S311 - test randomness, seeded so the kill moments can be repeated
    async with sources(
        moto_endpoint,
        kinesalite_endpoint,
        sqs=_SQS,
        fifo=_SQS,
        kinesis=_STREAM,
        dynamodb=_STREAM,
        visibility_timeout=VISIBILITY_TIMEOUT,
        fifo_groups=FIFO_GROUPS,
    ) as srcs:
        srcs.write_handler(folder)
        config = write_config(
            folder,
            {
                "aws": srcs.aws,
                "http": {"listen": "127.0.0.1:0"},
                "state": {"sqlite": "./state.db"},
                "streams": {"idle_poll_interval": 0.1},
                "metrics": {"queue_attributes_interval": 0},
                "functions": srcs.functions(timeout=VISIBILITY_TIMEOUT),
                "event_source_mappings": [s.mapping for s in srcs.items],
            },
        )
        logs = [folder / s.log_name for s in srcs.items]
        process = EsmProcess(config, folder / "esm.log", env={"ESM_RECORDER_PAUSE": str(PAUSE)})

        stop = asyncio.Event()
        producers = [asyncio.create_task(produce(s, RATES[s.name], stop)) for s in srcs.items]
        killed: set[int] = set()
        startup_kills = torn = 0
        try:
            hits = dict.fromkeys(logs, 0)  # kills of a process that had delivered records of that source
            for run in range(KILLS):
                sizes = {log: _size(log) for log in logs}
                process.start(env={"ESM_RECORDER_RUN": str(run)})
                try:
                    if rng.random() < STARTUP_KILLS:
                        startup_kills += 1
                        await asyncio.sleep(rng.uniform(0.0, 2.0))
                    else:
                        await _await(
                            lambda: process.logged("daemon_started") or process.exit_code() is not None,
                            STARTED_WITHIN,
                            lambda: f"esm did not start within {STARTED_WITHIN} s: {process.tail()}",
                        )
                        assert process.exit_code() is None, f"esm exited with {process.exit_code()}: {process.tail()}"
                        # Wait for a delivery of the source whose work was interrupted least so far, so
                        # that kills land in the work of every source (Kinesis on kinesalite is usually
                        # the quickest to start; FIFO groups wait out the visibility timeout).
                        fewest = min(hits.values())
                        trigger = rng.choice([log for log, n in hits.items() if n == fewest])
                        before = _size(trigger)
                        await _await(
                            lambda t=trigger, b=before: _size(t) > b,
                            DELIVERY_WITHIN,
                            lambda t=trigger: f"nothing reached {t.stem} within {DELIVERY_WITHIN} s: {process.tail()}",
                        )
                        await asyncio.sleep(rng.uniform(0.0, 1.0))
                    assert process.exit_code() is None, f"esm exited with {process.exit_code()}: {process.tail()}"
                finally:
                    process.kill()
                killed.add(run)
                for log in logs:
                    hits[log] += _size(log) > sizes[log]
                torn += sum(repair_torn_tail(p) for p in logs)
        finally:
            stop.set()
            await asyncio.gather(*producers)

        def undelivered() -> dict[str, int]:
            left = {}
            for s in srcs.items:
                missing = set(s.produced) - {d.id for d in read_deliveries(folder / s.log_name)}
                if missing:
                    left[s.name] = len(missing)
            return left

        process.start(env={"ESM_RECORDER_RUN": str(KILLS)})
        try:
            await _await(
                lambda: not undelivered(),
                DRAIN_WITHIN,
                lambda: (
                    f"after the last kill, still undelivered within {DRAIN_WITHIN} s: {undelivered()}; "
                    f"log: {process.tail()}"
                ),
                interval=0.5,
            )
            await asyncio.sleep(1.0)  # let any repeat of the last kill's work show before stopping
        finally:
            code = process.stop()
        assert code == 0, f"the last esm run exited with {code}: {process.tail()}"
        verdicts = {s.name: _verdict(s, folder, killed) for s in srcs.items}
    return CrashRun(KILLS, startup_kills, torn, time.monotonic() - began, verdicts)


def _verdict(source: Source, folder: Path, killed: set[int]) -> Verdict:
    return check(
        source.name,
        read_deliveries(folder / source.log_name),
        source.produced,
        killed,
        stream=source.kind != "sqs",
        ordered=source.name != "sqs",
        concurrency=SQS_CONCURRENCY,
    )


@pytest.fixture(scope="module")
def crash_run(
    tmp_path_factory: pytest.TempPathFactory, moto_endpoint: str, kinesalite_endpoint: str, figures: Any
) -> CrashRun:
    """Run the crash loop once for the module's tests, and report its figures."""
    folder = tmp_path_factory.mktemp("crash-loop")
    with sqs_receive_fixed():  # moto hands a message out twice and loses FIFO order (see moto_sqs)
        run = asyncio.run(_crash_loop(folder, moto_endpoint, kinesalite_endpoint))
    figures(
        f"crash loop: {run.kills} kills ({run.startup_kills} during start-up), seed {SEED}, "
        f"{run.torn_writes} recorder lines cut by a kill, {run.seconds:.0f} s"
    )
    for verdict in run.verdicts.values():
        figures(verdict.figures(run.kills))
    return run


def _assert_kept(run: CrashRun, source: str) -> Verdict:
    verdict = run.verdicts[source]
    assert run.kills >= KILLS
    assert verdict.produced > 0, f"nothing was produced to {source}"
    problems = verdict.problems()
    assert not problems, f"{source} after {run.kills} kills (seed {SEED}):\n" + "\n".join(problems)
    return verdict


class TestCrashLoop:
    """SIGKILL at random moments: nothing lost, order kept, duplicates only from the work in flight."""

    def test_sqs_standard(self, crash_run: CrashRun) -> None:
        """Every message reaches the function; a repeat is a message a killed process saw and had not deleted."""
        _assert_kept(crash_run, "sqs")

    def test_sqs_fifo(self, crash_run: CrashRun) -> None:
        """Every message arrives, in order within each message group, repeats only from the kills' batches."""
        verdict = _assert_kept(crash_run, "fifo")
        assert verdict.produced >= 8, "too few messages to cover every group"

    def test_kinesis(self, crash_run: CrashRun) -> None:
        """Every record arrives, in order per shard; a repeat is from the last batch a killed process delivered."""
        _assert_kept(crash_run, "kinesis")

    def test_dynamodb_streams(self, crash_run: CrashRun) -> None:
        """Every stream record arrives in order; a repeat is from the last batch a killed process delivered."""
        _assert_kept(crash_run, "dynamodb")
