"""Watching a running daemon from the outside: /healthz, /metrics, and waiting for conditions.

Shared by the fault tests (tests/reliability/test_aws_faults.py, test_target_faults.py): they read
the daemon only through its HTTP endpoints, as Kubernetes and Prometheus do.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import Callable
from typing import Any

import aiohttp

__all__ = ["get_text", "metric_samples", "metric_sum", "until", "watch_health"]


async def get_text(port: int | None, path: str) -> str:
    """GET http://127.0.0.1:PORT/PATH and return the body."""
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}{path}") as r:
        return await r.text()


def metric_samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """Every sample of one metric from Prometheus' text format: (labels, value)."""
    out = []
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        labels_text, value = line[len(name) + 1 :].rsplit("} ", 1)
        labels = dict(part.split("=", 1) for part in labels_text.split('",') if "=" in part)
        out.append(({k: v.strip('"') for k, v in labels.items()}, float(value)))
    return out


def metric_sum(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels`."""
    return sum(v for found, v in metric_samples(text, name) if all(found.get(k) == x for k, x in labels.items()))


async def until(
    predicate: Callable[[], Any], within: float, why: Callable[[], Any] | None = None, interval: float = 0.2
) -> None:
    """Wait until `predicate()` (plain or async) is true; fail with `why()` after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        ok = predicate()
        if inspect.isawaitable(ok):
            ok = await ok
        if ok:
            return
        if time.monotonic() > deadline:
            reason = why() if why is not None else ""
            if inspect.isawaitable(reason):
                reason = await reason
            raise AssertionError(f"condition not met within {within} s {reason}")
        await asyncio.sleep(interval)


async def watch_health(port: Callable[[], int | None], out: list[int], stop: asyncio.Event) -> None:
    """GET /healthz every 0.5 s until `stop` is set; each status goes to `out` (0: no answer)."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        while not stop.is_set():
            p = port()
            if p is not None:
                try:
                    async with session.get(f"http://127.0.0.1:{p}/healthz") as r:
                        out.append(r.status)
                except (aiohttp.ClientError, TimeoutError):
                    out.append(0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
