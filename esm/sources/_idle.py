"""How long a caught-up shard waits before its next GetRecords call (idle polling).

A read that returned records is followed by the next as soon as the shard's read limit allows
(Kinesis 5 calls a second, DynamoDB Streams 4): more records are likely, and that keeps the
put-to-invoke latency of a busy shard near half the read interval. So is a read that found
nothing less than `ACTIVE_SECONDS` after the shard last returned records (a pause in steady
traffic, a producer that stalled for a moment). A shard quiet for longer is read every
`streams.idle_poll_interval`: by default once a second on Kinesis and 4 times a second on
DynamoDB Streams, as Lambda polls (ESM-SPEC.md §5.2, §5.3); a Kinesis shard serves 5 reads a
second to all of its consumers together, so an idle consumer must not take them all.

Every call costs CPU in this process whether it returns records or not (1.5–2.5 ms in botocore,
docs/benchmarks.md), so one process cannot poll thousands of idle shards once a second (1,000
shards would take two cores): `streams.max_idle_polls_per_second` caps the idle calls of a
mapping's shards together. With more shards than the interval and the cap allow, an idle shard
is read every `shards / cap` seconds instead (1,000 shards at the default 30 calls/s: about
33 s, under 10 % of a core); a shard that is busy, or was a moment ago, is not slowed. The waits
are jittered by ±25 %, so that shards started together soon fall out of step (calls in bursts
would need many connections at once, which then expire unused between the bursts).
"""

from __future__ import annotations

import random

from esm.arns import SourceKind
from esm.config import StreamsConfig

__all__ = ["ACTIVE_SECONDS", "ACTIVE_WAIT", "IDLE_POLL_INTERVAL", "idle_wait"]

IDLE_POLL_INTERVAL = {SourceKind.KINESIS: 1.0, SourceKind.DYNAMODB: 0.25}
"""Lambda's idle polling per source kind: the default of `streams.idle_poll_interval`."""
ACTIVE_SECONDS = 1.0
"""A shard that returned records less than this long ago is read again at its read limit's pace."""
ACTIVE_WAIT = 0.1
"""The wait after an empty read of such a shard (the read limit's own wait, 0.2 s on Kinesis, is longer)."""


def idle_wait(settings: StreamsConfig, kind: SourceKind, shards: int, quiet: float) -> float:
    """Seconds a shard waits after a read that found nothing, `quiet` s after its last records, among `shards`."""
    interval = settings.idle_poll_interval
    if interval is None:
        interval = IDLE_POLL_INTERVAL.get(kind, 1.0)
    if quiet < ACTIVE_SECONDS:
        wait = min(interval, ACTIVE_WAIT)
    else:
        cap = settings.max_idle_polls_per_second
        wait = max(interval, shards / cap) if cap > 0 else interval
    return wait * random.uniform(0.75, 1.25)  # noqa: S311 - spreading calls, not security
