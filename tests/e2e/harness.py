"""Running the real daemon in-process against moto, and recording what handlers saw.

The daemon under test is `esm.daemon.Daemon` with a configuration file written to a temporary
folder; its handlers are the functions of `tests.e2e.handlers`, whose behaviour each test sets in
`Recorder` (an in-process record of every invocation: events, times, concurrency).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from esm.config import load_config
from esm.daemon import Daemon

Behaviour = Callable[[dict[str, Any], Any], Any]


@dataclass
class Call:
    """One invocation as the handler saw it."""

    function: str
    event: dict[str, Any]
    started: float
    ended: float = 0.0

    @property
    def bodies(self) -> list[str]:
        """The message bodies of the batch, in order."""
        return [r["body"] for r in self.event["Records"]]


@dataclass
class Recorder:
    """Every invocation of the test handlers, and the behaviour each function should show."""

    behaviours: dict[str, Behaviour] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    active: int = 0
    max_active: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def calls_of(self, function: str) -> list[Call]:
        """The calls made to one function, in start order."""
        with self.lock:
            return [c for c in self.calls if c.function == function]

    def bodies_of(self, function: str) -> list[str]:
        """Every body delivered to one function, in delivery order."""
        return [b for c in self.calls_of(function) for b in c.bodies]


RECORDER = Recorder()


async def wait_for(predicate: Callable[[], bool], within: float = 20.0, interval: float = 0.05) -> None:
    """Wait until predicate() is true; fail the test with a clear message after `within` seconds."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within} s")
        await asyncio.sleep(interval)


def write_config(tmp_path: Path, config: dict[str, Any]) -> Path:
    """Write a configuration dictionary as the YAML file the daemon reads."""
    path = tmp_path / "esm.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@contextlib.asynccontextmanager
async def running_daemon(tmp_path: Path, config: dict[str, Any]) -> AsyncIterator[Daemon]:
    """Start the daemon for `config`, yield it once it serves, then stop it and check it exited 0."""
    config.setdefault("http", {"listen": "127.0.0.1:0"})
    config.setdefault("shutdown", {"grace_period": 5})
    daemon = Daemon(load_config(write_config(tmp_path, config)))
    task = asyncio.create_task(daemon.run())
    started = asyncio.create_task(daemon.started.wait())
    done, _ = await asyncio.wait({task, started}, timeout=20, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        started.cancel()
        raise AssertionError(f"daemon exited during startup with {task.result()}")
    assert started in done, "daemon did not start within 20 s"
    try:
        yield daemon
    finally:
        daemon.request_stop()
        code = await asyncio.wait_for(task, 30)
        assert code == 0, f"daemon exited with {code}"


async def queue_counts(sqs: Any, url: str) -> tuple[int, int]:
    """(visible, in flight) message counts of a queue."""
    attrs = (
        await sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]), int(attrs["ApproximateNumberOfMessagesNotVisible"])


async def create_queue(sqs: Any, name: str, **attributes: Any) -> tuple[str, str]:
    """Create a queue with attributes (values JSON-encoded where needed); returns (url, arn)."""
    attrs = {k: json.dumps(v) if isinstance(v, dict) else str(v) for k, v in attributes.items()}
    if name.endswith(".fifo"):
        attrs.setdefault("FifoQueue", "true")
    url = (await sqs.create_queue(QueueName=name, Attributes=attrs))["QueueUrl"]
    arn = (await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"]))["Attributes"]["QueueArn"]
    return url, arn
