"""The recording target of the reliability tests, and what its records prove.

`HANDLER` is a Python handler module (written into the test's folder, configured as
`recorder:handle`) that appends one JSON line per record to `<function name>.log` with a single
`write` per batch, before it returns: a record counts as delivered the moment the function saw
it, as at-least-once delivery means. Each line is `[process, request id, part, id, receive
count]`: the process tells which `esm run` delivered it (the number the test gave it in
`ESM_RECORDER_RUN`, else its pid), the request id which batch, the part its shard (Kinesis),
message group (SQS FIFO) or "" (SQS standard; DynamoDB Streams on moto, whose stream has one
shard), the id the number the producer put in it.

`check()` turns the lines into a `Verdict`. Duplicates are function-level repeats (a record the
function saw before); their bound is the work in flight at each kill, from what the recorder saw:

- **Streams** (ParallelizationFactor 1): a shard's lane writes the checkpoint durably after each
  batch and before it invokes the next (`ShardConsumer._process` awaits `_commit`), so at a kill
  only the last batch each process delivered on a shard can be past the checkpoint. Every repeat
  must be of a record whose previous delivery was in such a last batch of a killed process, and
  the duplicates are at most the sum of those batches over the kills.
- **SQS**: a message the function saw is deleted after the invocation returns; each of the
  mapping's pollers (at most `MaximumConcurrency`) holds one batch at a time, so at a kill at
  most that many batches of the killed process were seen and not yet deleted; they come back
  after the visibility timeout. The bound per kill is the sum of the killed process's
  `MaximumConcurrency` largest batches. A message the killed process received but had not yet
  handed to the function also comes back (its receive count shows it) but is no duplicate.
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["HANDLER", "Delivery", "Verdict", "check", "read_deliveries", "repair_torn_tail"]

HANDLER = '''
"""Records every record it receives (see tests/reliability/recording.py); pauses ESM_RECORDER_PAUSE s per batch."""
import base64, json, os, time
from pathlib import Path

FOLDER = Path(__file__).parent
PAUSE = float(os.environ.get("ESM_RECORDER_PAUSE", "0"))
PROCESS = int(os.environ.get("ESM_RECORDER_RUN") or os.getpid())


def _entry(record):
    source = record["eventSource"]
    if source == "aws:sqs":
        attributes = record["attributes"]
        return attributes.get("MessageGroupId", ""), record["body"], int(attributes["ApproximateReceiveCount"])
    if source == "aws:kinesis":
        return record["eventID"].split(":")[0], base64.b64decode(record["kinesis"]["data"]).decode(), 0
    if source == "aws:dynamodb":
        return "", record["dynamodb"]["Keys"]["id"]["N"], 0
    raise ValueError(f"unexpected event source {source!r}")


def handle(event, context):
    lines = "".join(json.dumps([PROCESS, context.aws_request_id, *_entry(r)]) + "\\n" for r in event["Records"])
    fd = os.open(FOLDER / f"{context.function_name}.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, lines.encode())
    finally:
        os.close(fd)
    if PAUSE:
        time.sleep(PAUSE)
'''


@dataclass(frozen=True, slots=True)
class Delivery:
    """One record as the function saw it."""

    process: int
    """Which `esm run` process delivered it."""
    batch: str
    part: str
    id: int
    receive_count: int


def read_deliveries(path: Path) -> list[Delivery]:
    """Every record the recorder wrote to `path`, in delivery order."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        process, batch, part, ident, count = json.loads(line)
        out.append(Delivery(process, batch, part, int(ident), count))
    return out


def repair_torn_tail(path: Path) -> bool:
    """Cut a last line left unfinished by SIGKILL (a fatal signal may cut a write short); True if cut.

    The records cut off were seen by the function but are no longer recorded, so at worst a later
    repeat of them counts as their first delivery: the duplicate count can only err low by the
    records of that one batch, and nothing can be reported lost that was not.
    """
    if not path.exists():
        return False
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return False
    os.truncate(path, data.rfind(b"\n") + 1)
    return True


@dataclass
class Verdict:
    """What the recorder proves for one source."""

    source: str
    produced: int
    deliveries: int
    duplicates: int
    bound: int
    missing: list[int] = field(default_factory=list)
    unexpected: list[int] = field(default_factory=list)
    misplaced: list[str] = field(default_factory=list)
    out_of_order: list[str] = field(default_factory=list)
    unexplained_repeats: list[str] = field(default_factory=list)
    hit: int = 0
    """Kills of a process that had delivered records of this source (the others hit it before its
    first delivery: during start-up, or while its first batch was read)."""
    bound_rule: str = ""
    """How the bound was counted, for the figures."""
    received_unseen: int = 0
    """Records whose first delivery already had a receive count above 1 (SQS): a killed process
    received them but never handed them to the function; they are no duplicates."""

    def problems(self) -> list[str]:
        """Every violated property, each with a few examples; empty if the source kept its promises."""
        found = []
        if self.missing:
            found.append(f"{len(self.missing)} records never delivered, e.g. {self.missing[:10]}")
        if self.unexpected:
            found.append(f"{len(self.unexpected)} records delivered that were never produced: {self.unexpected[:10]}")
        if self.misplaced:
            found.append(f"{len(self.misplaced)} records delivered from the wrong shard/group: {self.misplaced[:5]}")
        if self.out_of_order:
            found.append(f"order broken {len(self.out_of_order)} times: {self.out_of_order[:5]}")
        if self.unexplained_repeats:
            found.append(
                f"{len(self.unexplained_repeats)} repeats not explained by a kill: {self.unexplained_repeats[:5]}"
            )
        if self.duplicates > self.bound:
            found.append(f"{self.duplicates} duplicates exceed the bound of {self.bound} (work in flight at the kills)")
        return found

    def figures(self, kills: int) -> str:
        """One line for the CI log."""
        extra = f", {self.received_unseen} received by a killed process before the function saw them" * (
            self.received_unseen > 0
        )
        return (
            f"crash loop {self.source}: {kills} kills ({self.hit} after it had delivered), "
            f"{self.produced} records, {self.deliveries} deliveries, "
            f"{self.duplicates} duplicates (bound {self.bound}: {self.bound_rule}){extra}"
        )


def check(
    source: str,
    deliveries: list[Delivery],
    produced: dict[int, str],
    killed: set[int],
    *,
    stream: bool,
    ordered: bool = True,
    concurrency: int = 1,
) -> Verdict:
    """Check every delivery of one source against what was produced (id -> its shard or group).

    `killed` are the processes killed with SIGKILL; `stream` selects the duplicate
    bound (see the module docstring); `ordered` checks the order per part (not for SQS standard
    queues, which keep none); `concurrency` is the SQS mapping's MaximumConcurrency.
    """
    ids = {d.id for d in deliveries}
    verdict = Verdict(
        source=source,
        produced=len(produced),
        deliveries=len(deliveries),
        duplicates=len(deliveries) - len(ids),
        bound=0,
        missing=sorted(set(produced) - ids),
        unexpected=sorted(ids - set(produced)),
    )
    batch_sizes: Counter[tuple[int, str]] = Counter((d.process, d.batch) for d in deliveries)
    verdict.hit = len(killed & {d.process for d in deliveries})
    last_batch: dict[tuple[int, str], str] = {}  # (process, part) -> the last batch it delivered there
    first: dict[int, Delivery] = {}
    previous: dict[int, Delivery] = {}
    highest: dict[str, int] = defaultdict(lambda: -1)  # per part: the highest id delivered for the first time
    for d in deliveries:
        if d.id in produced and d.part != produced[d.id]:
            verdict.misplaced.append(f"{d.id} from {d.part!r}, put to {produced[d.id]!r}")
        last_batch[d.process, d.part] = d.batch
        prior = previous.get(d.id)
        previous[d.id] = d
        if prior is None:
            first[d.id] = d
            # First deliveries per shard / group follow the order of production (ids grow per part).
            if ordered and d.id < highest[d.part]:
                verdict.out_of_order.append(f"{d.id} after {highest[d.part]} in {d.part!r}")
            highest[d.part] = max(highest[d.part], d.id)
            continue
        if prior.process == d.process:
            verdict.unexplained_repeats.append(f"{d.id} twice from process {d.process}")
        elif prior.process not in killed:
            verdict.unexplained_repeats.append(f"{d.id} again after process {prior.process}, which was not killed")
    if stream:
        verdict.bound_rule = "the last batch per shard of each killed process"
        in_flight = {batch for (process, _), batch in last_batch.items() if process in killed}
        verdict.bound = sum(batch_sizes[p, batch] for (p, _), batch in last_batch.items() if p in killed)
        # Every repeat is of a record whose previous delivery was in such a last batch.
        seen: dict[int, Delivery] = {}
        for d in deliveries:
            prior = seen.get(d.id)
            seen[d.id] = d
            if prior is not None and prior.process != d.process and prior.batch not in in_flight:
                verdict.unexplained_repeats.append(
                    f"{d.id} repeated, but its delivery by process {prior.process} was not that process's last batch "
                    f"on {prior.part!r}: the checkpoint had passed it"
                )
    else:
        verdict.bound_rule = f"the {concurrency} largest batches of each killed process"
        for process in killed:
            sizes = sorted((n for (p, _), n in batch_sizes.items() if p == process), reverse=True)
            verdict.bound += sum(sizes[:concurrency])
        verdict.received_unseen = sum(d.receive_count > 1 for d in first.values())
    return verdict
