"""A fix for moto's FIFO ReceiveMessage, applied by tests that check FIFO order under concurrency.

moto breaks FIFO order by itself, without faults, proxy or esm (each reproduced with plain boto3
clients against ThreadedMotoServer):

1. ReceiveMessage is not atomic: concurrent receives on one FIFO queue each take messages of the
   same group (8 threads receiving and deleting: groups out of order, one message handed out twice).
2. A long poll keeps the set of held groups it computed at its start, so it does not see a group
   released by a delete meanwhile.
3. When several in-flight messages of one group expire at (nearly) the same time, a receive can skip
   the first and hand out a later one (receive 0, 1, 2 of a group, let them expire, receive: moto
   answers 2, 3, 4, ...; 0 and 1 come later).

`make_fifo_receives_atomic` fixes 1 and 2 for the duration of a test: the receives of one FIFO
queue scan it one at a time under a lock, and a long poll scans without waiting, again every 0.1 s
until its wait time is over. It does not fix 3: keep at most one message of a group in flight
(BatchSize 1 on FIFO mappings) where order is checked; with one, moto's scan is right.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from typing import Any

import pytest

__all__ = ["make_fifo_receives_atomic"]


def make_fifo_receives_atomic(monkeypatch: pytest.MonkeyPatch) -> None:
    """Patch the in-process moto server's SQS backend (undone with `monkeypatch`)."""
    from moto.sqs.models import SQSBackend

    original = SQSBackend.receive_message
    locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)

    def receive_message(
        self: Any,
        queue_name: str,
        count: int,
        wait_seconds_timeout: int,
        visibility_timeout: int,
        message_attribute_names: list[str] | None = None,
    ) -> Any:
        if not self.get_queue(queue_name).fifo_queue:
            return original(self, queue_name, count, wait_seconds_timeout, visibility_timeout, message_attribute_names)
        deadline = time.monotonic() + wait_seconds_timeout
        while True:
            with locks[queue_name]:
                result = original(self, queue_name, count, 0, visibility_timeout, message_attribute_names)
            if result or time.monotonic() >= deadline:
                return result
            time.sleep(0.1)

    monkeypatch.setattr(SQSBackend, "receive_message", receive_message)
