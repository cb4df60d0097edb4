"""A fix, applied in the test process, for the ways moto's SQS breaks SQS's promises under concurrency.

moto 5.2's SQS serves requests on concurrent server threads with no lock around a queue's state,
and decides which FIFO message groups are held (a message in flight) once per receive:

1. **Two receives can return the same message.** Two calls that walk the queue at the same
   time both find a message visible and both hand it out (six concurrent pollers got 301
   messages for 300 here). SQS hands a message to one receive.
2. **FIFO: visible-again messages hold their group.** A message whose visibility timeout
   passed stays in moto's `pending` set until a receive walks past it, and still counts as
   holding its group; when several messages of a group were received together and their
   consumer died, moto releases them one at a time as it walks, so only the *last* of them
   finds the group free: received 0, 1, 2 of a group, let the timeout pass, receive again —
   moto returns 2, 3, 4 where SQS returns 0, 1, 2, 3, 4.
3. **FIFO: a long poll keeps its stale view.** A receive that waits re-reads the queue on every
   pass but not the held groups, so a long poll that began while a group was free hands out
   that group's *later* messages while another receive holds its earlier ones.
4. **FIFO: visibility is read at different instants within one pass.** Messages received
   together become visible a few milliseconds apart; a pass that skipped a group's visible
   messages because a later one was still invisible frees the group when it reaches that later
   one (visible by then) and hands it out first (seen in a crash loop: 70, 76, 82, 88 before
   52, 58, 64).
5. **A delete rebuilds the message list without the lock sends take**, so a send or another
   delete at the same moment can be undone: a message lost, or a deleted one back (found by
   reading moto's `Queue.delete_message`; not seen in a run).

SQS promises that each receive gets its own messages and that "messages that belong to the same
message group are always processed one by one, in a strict order relative to the message group"
(SQS Developer Guide, FIFO delivery logic). A crash loop produces every case above all the time
(a killed process leaves a batch in flight and its long poll running in the server, and the next
process polls concurrently), so the reliability tests apply this fix to the moto server they
share with the session (moto runs in the test process) while they run: sends, deletes,
visibility changes and receive passes on every queue run one at a time under one lock; a receive
is a series of passes (a long poll waits between them), each of which first forgets the
in-flight messages that are visible again and sees the held groups, and every message's
visibility, as of one instant; and a visible-again message never holds its group.
`test_moto_sqs.py` shows the fix hands each message out once and keeps FIFO order.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from moto.core.utils import unix_time_millis
from moto.sqs.models import Message, Queue, SQSBackend

__all__ = ["sqs_receive_fixed"]

_LOCK = threading.RLock()  # re-entrant: a receive may move a message to a dead-letter queue (add_message)
_LONG_POLL_INTERVAL = 0.1  # seconds between the passes of a long poll that found nothing
_pass = threading.local()  # `now`: the instant a receive pass sees every message's visibility at


def _visible(message: Message) -> bool:
    now = getattr(_pass, "now", None)
    return (now if now is not None else unix_time_millis()) > message.visible_at


def _pending_groups(queue: Queue) -> set[str]:
    """The groups with a message in flight: received, and not yet visible again."""
    return {m.group_id for m in list(queue.pending_messages) if m.group_id is not None and not m.visible}


def _locked(method: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        with _LOCK:
            return method(*args, **kwargs)

    return call


@contextlib.contextmanager
def sqs_receive_fixed() -> Iterator[None]:
    """Within this block, moto's SQS hands each message to one receive and keeps FIFO group order."""
    assert isinstance(getattr(Queue, "pending_message_groups", None), property), "moto changed: review this fix"
    assert isinstance(getattr(Message, "visible", None), property), "moto changed: review this fix"
    original = SQSBackend.receive_message

    def receive_message(
        self: SQSBackend,
        queue_name: str,
        count: int,
        wait_seconds_timeout: int,
        visibility_timeout: int,
        message_attribute_names: list[str] | None = None,
    ) -> Any:
        queue = self.get_queue(queue_name)
        deadline = time.monotonic() + wait_seconds_timeout
        while True:
            with _LOCK:
                _pass.now = unix_time_millis()
                try:
                    for message in [m for m in list(queue.pending_messages) if m.visible]:
                        queue.pending_messages.discard(message)
                    result = original(self, queue_name, count, 0, visibility_timeout, message_attribute_names)
                finally:
                    _pass.now = None
            if result or time.monotonic() >= deadline:
                return result
            time.sleep(_LONG_POLL_INTERVAL)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Message, "visible", property(_visible))
        patch.setattr(Queue, "pending_message_groups", property(_pending_groups))
        patch.setattr(Queue, "add_message", _locked(Queue.add_message))
        patch.setattr(SQSBackend, "delete_message", _locked(SQSBackend.delete_message))
        patch.setattr(SQSBackend, "change_message_visibility", _locked(SQSBackend.change_message_visibility))
        patch.setattr(SQSBackend, "receive_message", receive_message)
        yield
