"""`make bench`: the performance figures of issue 7, each measured side by side in one run.

    python -m benchmarks                     every case (several minutes)
    python -m benchmarks --quick             every case, smaller and shorter (noisier)
    python -m benchmarks sqs kinesis         only the cases named

Cases, in the order they run (docs/benchmarks.md has the method of each):

    engine     1. esm's full stream path without network against the floor (benchmarks/engine.py)
    sqs        2. CPU per message against a bare aiobotocore loop, SQS on moto
    kinesis    2. CPU per record against a bare GetRecords loop, Kinesis on kinesalite
    dynamodb   2. CPU per record against a bare GetRecords loop, DynamoDB Streams on moto
    latency    3. put-to-invoke latency p50/p99, SQS (moto) and Kinesis (kinesalite)
    scale      4. one esm process on 1,000 idle kinesalite shards: memory and idle CPU
    replicas   5. failover, handoff and rebalance of 3 replicas against KCL's defaults
    filtering  compiled filter evaluation against a reference matcher (for information)

The emulators run in their own processes; esm's CPU is this process's (or, for scale, the esm
process's) CPU time, not wall time, and the contenders alternate and are compared by medians,
because the machine may be shared. A summary of every goal, met or missed, ends the output.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import traceback
from collections.abc import Callable

from benchmarks._common import Result, machine, moto_server
from esm.logging import configure_logging

CASES = ("engine", "sqs", "kinesis", "dynamodb", "latency", "scale", "replicas", "filtering")


def _engine(quick: bool) -> list[Result]:
    try:
        from benchmarks import engine
    except ImportError as exc:  # the engine case lives in its own module, written separately
        print(f"\n== 1. Engine overhead: not run ({exc})")
        return [Result("1. engine overhead", "not run", "<= 1.3x, >= 100,000 rec/s", None)]
    records, rounds = (20_000, 3) if quick else (50_000, 5)
    print("\n== 1. Engine overhead without network (benchmarks/engine.py)")
    return engine.main(records=records, rounds=rounds)


def _sqs(quick: bool) -> list[Result]:
    from benchmarks import sqs

    return asyncio.run(sqs.cpu(messages=200 if quick else 300, rounds=3 if quick else 7))


def _kinesis(quick: bool) -> list[Result]:
    from benchmarks import kinesis

    return asyncio.run(kinesis.cpu(records=5000 if quick else 20_000, rounds=3 if quick else 7))


def _dynamodb(quick: bool) -> list[Result]:
    from benchmarks import dynamodb

    return asyncio.run(dynamodb.cpu(records=2000 if quick else 5000, rounds=3 if quick else 7))


def _latency(quick: bool) -> list[Result]:
    from benchmarks import kinesis, sqs

    results = asyncio.run(sqs.latency(messages=100 if quick else 200))
    return results + asyncio.run(kinesis.latency(steady=150 if quick else 250, sparse=10 if quick else 20))


def _scale(quick: bool) -> list[Result]:
    from benchmarks import scale

    return scale.main(shards=1000, settle=20.0, window=30.0 if quick else 60.0)


def _replicas(quick: bool) -> list[Result]:
    from benchmarks import replicas

    with moto_server() as endpoint:
        return asyncio.run(replicas.main(endpoint))


def _filtering(quick: bool) -> list[Result]:
    from benchmarks import filtering

    print()
    filtering.main(records=10_000 if quick else 20_000, rounds=3)
    return []


RUNNERS: dict[str, Callable[[bool], list[Result]]] = {
    "engine": _engine,
    "sqs": _sqs,
    "kinesis": _kinesis,
    "dynamodb": _dynamodb,
    "latency": _latency,
    "scale": _scale,
    "replicas": _replicas,
    "filtering": _filtering,
}


def _summary(results: list[Result], failed: list[str]) -> None:
    print("\n== Summary (goals of issue 7; figures from this run)")
    width = max((len(r.figure) for r in results), default=10)
    for r in results:
        state = "-" if r.met is None else ("met" if r.met else "MISSED")
        print(f"{r.figure:<{width}}  {r.measured:>22}  goal {r.goal:<28} {state}")
    for name in failed:
        print(f"{name:<{width}}  {'ERROR':>22}  (the case failed; see its traceback above)")


def main(argv: list[str] | None = None) -> int:
    """Run the selected cases; exit status 1 if one of them failed to run (a missed goal is not a failure)."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("cases", nargs="*", metavar="CASE", help=f"any of: {' '.join(CASES)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="smaller volumes and fewer rounds (noisier figures)")
    args = parser.parse_args(argv)
    unknown = [c for c in args.cases if c not in CASES]
    if unknown:
        parser.error(f"unknown case {', '.join(unknown)}: choose from {' '.join(CASES)}")
    selected: list[str] = args.cases or list(CASES)
    configure_logging("error", "json")
    started = time.monotonic()
    print("esm benchmarks (issue 7)" + (" --quick" if args.quick else ""))
    for line in machine():
        print(f"  {line}")
    results: list[Result] = []
    failed: list[str] = []
    for name in CASES:
        if name not in selected:
            continue
        try:
            results.extend(RUNNERS[name](args.quick))
        except Exception:  # noqa: BLE001 - one broken case must not hide the others' figures
            traceback.print_exc()
            failed.append(name)
        sys.stdout.flush()
    _summary(results, failed)
    print(f"\n{time.monotonic() - started:.0f} s in all; load average now {_load()}")
    return 1 if failed else 0


def _load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


if __name__ == "__main__":
    sys.exit(main())
