"""Shard leases shared by several replicas through the DynamoDB lease table (spec/LEASES.md part B).

One `LeaseCoordinator` per daemon runs two loops:

- the **renewer** (every `renew_interval`, fixed rate): bumps the counter of every lease this
  replica holds and of its own worker row. A renewal refused by its condition is re-read: if the
  item is still ours one counter further, an earlier write went through after all; otherwise the
  lease is **lost**: its shard consumer is stopped at once (and its checkpoint writes are fenced:
  they fail from the moment another replica took the lease). A lease whose renewals failed for
  longer than `failover_time` on this replica's monotonic clock is given up the same way, before
  any other replica can see it expire.
- the **balancer** (every `balance_interval`, ±10 % jitter, and at once when a mapping creates
  leases): scans the table; judges expiry on this replica's monotonic clock (a lease is expired
  when its counter did not move for `failover_time` since *this* replica saw it move: no clocks are
  compared across pods); counts the live replicas (worker rows that heartbeat, owners of leases
  that are not expired, and itself); and for each mapping takes its fair share
  ceil(ready leases / replicas) of the **ready** leases (not at SHARD_END, every parent at
  SHARD_END or gone), first the unowned and expired ones, and only when none is left, steals from
  the most loaded replica that is above the target (at most `max_steal_per_round`).

Checkpoints go through `checkpoint()`: a conditional write on the lease's counter and owner, and
on the acquisition token the consumer was started with, so a consumer of a lost lease can never
write again even if this replica later takes the lease back. `release()` gives a lease up (owner
removed, counter bumped) after SHARD_END and at shutdown, so other replicas take it on their next
round instead of waiting for it to expire (KCL never releases on shutdown: its users wait
20–40 s, LEASES.md §2.3).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from structlog.typing import FilteringBoundLogger

from esm.errors import AwsError, LeaseLostError
from esm.state.base import Checkpoint, CheckpointKey, Position
from esm.state.dynamodb import LeaseItem, LeaseTable, lease_key, mapping_key

if TYPE_CHECKING:
    from esm.metrics import Metrics
    from esm.sources._shards import Shard

__all__ = ["LeaseCheckpointStore", "LeaseCoordinator", "LeaseSettings", "MappingLeases", "replica_id"]


def replica_id(environ: dict[str, str]) -> str:
    """This replica's worker id: the pod name (or host name) and a random suffix.

    The suffix makes a restarted pod with the same name a new worker, so it never believes it
    still holds the leases its previous life held (they may have been taken meanwhile).
    """
    base = environ.get("ESM_REPLICA_NAME") or environ.get("POD_NAME") or environ.get("HOSTNAME") or "esm"
    return f"{base}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True, slots=True)
class LeaseSettings:
    """The lease protocol's timing (LEASES.md §13.2; defaults mirror KCL's)."""

    failover_time: float = 10.0
    renew_interval: float = 10.0 / 3 - 0.025
    balance_interval: float = 5.0
    max_steal_per_round: int = 5
    max_leases_per_replica: int | None = None


@dataclass
class _Seen:
    """A lease (or worker row) as this replica last saw it, with when it saw its counter move."""

    item: LeaseItem
    changed_at: float


@dataclass
class _Held:
    """A lease this replica holds."""

    item: LeaseItem
    counter: int
    token: str
    checkpoint: Checkpoint
    renewed_at: float
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class MappingLeases:
    """One stream mapping's side of the leases: what this replica holds, what is finished, creation."""

    def __init__(self, coordinator: LeaseCoordinator, mapping_uuid: str, stream_arn: str) -> None:
        self.coordinator = coordinator
        self.mapping_uuid = mapping_uuid
        self.stream_arn = stream_arn
        self.changed = asyncio.Event()
        """Set when a lease of this mapping was taken or lost (the runner looks again)."""
        self.listed: set[str] | None = None
        """The shards the stream listed at the last `sync` (None before the first)."""

    def _mine(self, item: LeaseItem) -> bool:
        return item.mapping_uuid == self.mapping_uuid and item.stream_arn == self.stream_arn

    def held(self) -> dict[str, tuple[Checkpoint, str]]:
        """The shards whose lease this replica holds: their checkpoint and the acquisition token."""
        return {h.item.shard_id: (h.checkpoint, h.token) for h in self.coordinator.held.values() if self._mine(h.item)}

    def finished(self) -> set[str]:
        """Shards whose lease is at SHARD_END (as last seen, or as written here)."""
        done = {s.item.shard_id for s in self.coordinator.seen.values() if self._mine(s.item) and _ended(s.item)}
        done |= {
            h.item.shard_id for h in self.coordinator.held.values() if self._mine(h.item) and h.checkpoint.finished
        }
        return done

    async def sync(
        self, listed: Sequence[Shard], first: Callable[[Shard], Checkpoint], later: Callable[[Shard], Checkpoint]
    ) -> None:
        """Create the lease of every listed shard that has none (conditional: one replica wins).

        A mapping's first start stores `first(shard)` for every shard listed then, and records
        that it did (the mapping row) only afterwards, so a crash in between resumes the first
        start instead of sending the remaining shards to `later` (TRIM_HORIZON).
        """
        c = self.coordinator
        known = {s.item.shard_id for s in c.seen.values() if self._mine(s.item)}
        first_start = mapping_key(self.mapping_uuid, self.stream_arn) not in c.mapping_rows
        created = 0
        for shard in listed:
            if shard.shard_id in known:
                continue
            start = first(shard) if first_start else later(shard)
            if await c.table.create(self.mapping_uuid, self.stream_arn, shard.shard_id, start, shard.parents):
                created += 1
        if first_start:
            await c.table.mark_started(self.mapping_uuid, self.stream_arn)
            c.mapping_rows.add(mapping_key(self.mapping_uuid, self.stream_arn))
        if created:
            c.log.info("leases_created", mapping=self.mapping_uuid, count=created, first_start=first_start)
            c.poke()
        self.listed = {shard.shard_id for shard in listed}
        await self._drop_unlisted(c, self.listed)

    async def _drop_unlisted(self, c: LeaseCoordinator, listed: set[str]) -> None:
        """Delete the leases of shards the stream no longer lists (trimmed past its retention).

        Nothing is left to read in them, and a parent that is gone must not block its children
        (spec/LEASES.md §13.6). A lease this replica holds is released first; one another live
        replica holds is left to it (its own listing will drop it).
        """
        now = time.monotonic()
        for key, seen in list(c.seen.items()):
            item = seen.item
            if not self._mine(item) or item.shard_id in listed:
                continue
            if key in c.held:
                await c.release(key)
                current = await c.table.get(key)
                if current is None or current.owner is not None:
                    continue
                item = current
            elif item.owner is not None and not c.expired(seen, now):
                continue
            if await c.table.delete(key, item.counter):
                c.seen.pop(key, None)
                c.log.warning("lease_deleted", mapping=self.mapping_uuid, shard=item.shard_id, reason="not listed")

    async def release(self, shard_id: str) -> None:
        """Give up this shard's lease (after SHARD_END, or when the consumer stopped for good)."""
        await self.coordinator.release(lease_key(self.mapping_uuid, self.stream_arn, shard_id))


def _same(stored: Checkpoint, written: Checkpoint) -> bool:
    """True if a stored checkpoint is `written` (what a lease row keeps of it)."""
    return (stored.position, stored.sequence, stored.timestamp, stored.window_state) == (
        written.position,
        written.sequence,
        written.timestamp,
        written.window_state,
    )


def _ended(item: LeaseItem) -> bool:
    return item.checkpoint.position is Position.SHARD_END


class LeaseCoordinator:
    """The renewer and balancer of one replica (see the module docstring)."""

    def __init__(
        self,
        table: LeaseTable,
        settings: LeaseSettings,
        replica: str,
        metrics: Metrics,
        log: FilteringBoundLogger,
    ) -> None:
        self.table = table
        self.settings = settings
        self.replica = replica
        self.metrics = metrics
        self.log = log.bind(replica=replica)
        self.seen: dict[str, _Seen] = {}
        self.held: dict[str, _Held] = {}
        self.workers: dict[str, _Seen] = {}
        self.mapping_rows: set[str] = set()
        self.views: dict[tuple[str, str], MappingLeases] = {}
        self._poked = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._worker_counter = 0
        self._paused = False
        self._stopped = False
        self._round_lock = asyncio.Lock()
        self.rounds = 0

    # lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Register this replica, read the table once, and start the renewer and the balancer."""
        await self.table.heartbeat(self.replica, self._worker_counter)
        self._worker_counter += 1
        await self._scan()
        self.metrics.replica_info.labels(self.replica).set(1)
        self._tasks = [
            asyncio.create_task(self._renew_loop(), name="lease-renewer"),
            asyncio.create_task(self._balance_loop(), name="lease-balancer"),
            asyncio.create_task(self._watchdog(), name="lease-watchdog"),
        ]
        self.log.info("leases_started", table=self.table.name, leases=len(self.seen), replicas=len(self.workers))

    def pause_balancing(self) -> None:
        """Take no more leases (shutdown began); renewals go on until `stop`."""
        self._paused = True

    async def stop(self, since: float | None = None) -> None:
        """Stop the loops and release every lease still held (after the consumers wrote their last checkpoints).

        `since`: the monotonic time the shutdown began, to report how long the handoff took.
        """
        if self._stopped:
            return
        self._stopped = True
        self._paused = True
        async with self._round_lock:  # a round in progress finishes its takes (none is half-known)
            for task in self._tasks:
                task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        count = len(self.held)
        # Bounded: a DynamoDB that does not answer must not hold the pod past its termination grace
        # period; leases not released in time simply expire for the others.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.settings.failover_time):
                await asyncio.gather(*(self.release(key) for key in list(self.held)))
                with contextlib.suppress(AwsError):
                    await self.table.remove_worker(self.replica)
        self.metrics.replica_info.labels(self.replica).set(0)
        handoff = None if since is None else round(time.monotonic() - since, 3)
        if handoff is not None:
            self.metrics.lease_handoff_seconds.set(handoff)
        self.log.info("leases_released", count=count, handoff_seconds=handoff)

    def view(self, mapping_uuid: str, stream_arn: str) -> MappingLeases:
        """The lease view of one mapping (registered: the balancer takes leases for it)."""
        view = self.views.get((mapping_uuid, stream_arn))
        if view is None:
            view = self.views[(mapping_uuid, stream_arn)] = MappingLeases(self, mapping_uuid, stream_arn)
            self.metrics.lease_mapping(mapping_uuid)
        return view

    async def forget(self, mapping_uuid: str, stream_arn: str) -> None:
        """A mapping stops here (hot reload removed it): release its leases, take no more."""
        async with self._round_lock:  # no round may take a lease for it after this
            view = self.views.pop((mapping_uuid, stream_arn), None)
            with contextlib.suppress(KeyError):
                self.metrics.lease_unowned.remove(mapping_uuid)
            if view is not None:
                await asyncio.gather(*(self.release(k) for k, h in list(self.held.items()) if view._mine(h.item)))

    def poke(self) -> None:
        """Run a balance round now (leases were created)."""
        self._poked.set()

    # checkpoints ------------------------------------------------------------------------------

    async def checkpoint(self, key: CheckpointKey, checkpoint: Checkpoint) -> None:
        """Write a checkpoint of a held lease, fenced by its counter, owner and acquisition token.

        Raises LeaseLostError when the lease is not (or no longer) held with `key.token`; AwsError
        when DynamoDB could not be reached (the caller retries).
        """
        lkey = lease_key(key.mapping_uuid, key.stream_arn, key.shard_id)
        held = self.held.get(lkey)
        if held is None or (key.token is not None and held.token != key.token):
            raise LeaseLostError(key.shard_id)
        async with held.lock:
            if self.held.get(lkey) is not held:
                raise LeaseLostError(key.shard_id)
            sent = time.monotonic()
            written = await self.table.checkpoint(lkey, held.counter, self.replica, checkpoint)
            while not written:
                item = await self.table.get(lkey)
                if item is None or not self._went_through(held, item):
                    self._lose(lkey, held, "checkpoint refused: another replica holds the lease")
                    raise LeaseLostError(key.shard_id)
                held.counter += 1  # an earlier write of ours, whose answer was lost, moved the counter
                if _same(item.checkpoint, checkpoint):
                    break  # it was this very checkpoint (a retry after that lost answer): written once
                # A renewal or an older checkpoint: write this one on top of it.
                written = await self.table.checkpoint(lkey, held.counter, self.replica, checkpoint)
            else:
                held.counter += 1
                held.renewed_at = max(held.renewed_at, sent)
            held.checkpoint = checkpoint

    def _went_through(self, held: _Held, item: LeaseItem | None) -> bool:
        """After a refused write: did an earlier write of ours, whose answer was lost, move the counter?

        Only this replica writes a lease it owns, so "still ours, exactly one further" can only be
        that write (a write that fails is never retried at the same counter, so there is at most one).
        """
        return item is not None and item.owner == self.replica and item.counter == held.counter + 1

    async def release(self, key: str) -> None:
        """Give a held lease up: no owner, counter bumped (others may take it at once)."""
        held = self.held.pop(key, None)
        if held is None:
            return
        self._changed(held.item)
        async with held.lock:
            try:
                while not (released := await self.table.release(key, held.counter, self.replica)):
                    # A write of ours whose answer was lost (a renewal cancelled at shutdown, say)?
                    if not self._went_through(held, await self.table.get(key)):
                        break
                    held.counter += 1
            except AwsError as exc:
                self.log.warning("lease_release_failed", shard=held.item.shard_id, code=exc.code)
                return
        if released:
            self.metrics.lease_event(held.item.mapping_uuid, "released")
            self.log.info("lease_released", mapping=held.item.mapping_uuid, shard=held.item.shard_id)

    # the renewer ------------------------------------------------------------------------------

    async def _renew_loop(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            due += self.settings.renew_interval
            await asyncio.sleep(max(0.0, due - loop.time()))
            # Each call is bounded by the period, so one slow answer holds up neither the others nor
            # the next round (an abandoned write is recognised later: see `_went_through`).
            await asyncio.gather(
                *(
                    self._bounded(call)
                    for call in (self._beat(), *(self._renew(key, held) for key, held in list(self.held.items())))
                )
            )

    async def _bounded(self, call: Coroutine[Any, Any, None]) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.settings.renew_interval):
                await call

    async def _watchdog(self) -> None:
        """Give a lease up once its last successful renewal was *sent* 80 % of the failover time ago.

        Another replica can take it only `failover_time` after it saw the counter move, which is
        after that send: this replica's consumer is stopped first, whatever state its renewals are in.
        """
        limit = 0.8 * self.settings.failover_time
        while True:
            await asyncio.sleep(self.settings.failover_time / 20)
            now = time.monotonic()
            for key, held in list(self.held.items()):
                if now - held.renewed_at > limit:
                    self._lose(key, held, "not renewed within the failover time")

    async def _beat(self) -> None:
        try:
            await self.table.heartbeat(self.replica, self._worker_counter)
            self._worker_counter += 1
        except AwsError as exc:
            self.log.warning("worker_heartbeat_failed", code=exc.code)

    async def _renew(self, key: str, held: _Held) -> None:
        async with held.lock:
            if self.held.get(key) is not held:
                return
            sent = time.monotonic()
            try:
                if await self.table.renew(key, held.counter, self.replica):
                    held.counter += 1
                    held.renewed_at = max(held.renewed_at, sent)
                    return
                item = await self.table.get(key)
            except AwsError as exc:
                self.log.warning("lease_renew_failed", shard=held.item.shard_id, code=exc.code)
                return
            if self._went_through(held, item):
                held.counter += 1  # not counted as renewed: when that write landed is not known
                return
            self._lose(key, held, "taken by another replica")

    def _lose(self, key: str, held: _Held, reason: str) -> None:
        if self.held.pop(key, None) is None:
            return
        self.metrics.lease_event(held.item.mapping_uuid, "lost")
        self.log.warning("lease_lost", mapping=held.item.mapping_uuid, shard=held.item.shard_id, reason=reason)
        self._changed(held.item)

    def _changed(self, item: LeaseItem) -> None:
        view = self.views.get((item.mapping_uuid, item.stream_arn))
        if view is not None:
            view.changed.set()
        self.metrics.set_leases_held(
            item.mapping_uuid, sum(1 for h in self.held.values() if h.item.mapping_uuid == item.mapping_uuid)
        )

    # the balancer -----------------------------------------------------------------------------

    async def _balance_loop(self) -> None:
        while True:
            try:
                await self.balance_round()
            except AwsError as exc:
                self.log.warning("lease_balance_failed", code=exc.code, reason=exc.message)
            delay = self.settings.balance_interval * random.uniform(0.9, 1.1)  # noqa: S311 - jitter, not crypto
            self._poked.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._poked.wait()

    async def _scan(self) -> None:
        leases, workers, mappings = await self.table.scan()
        now = time.monotonic()
        self.seen = {item.key: self._observe(self.seen.get(item.key), item, now) for item in leases}
        self.workers = {item.key: self._observe(self.workers.get(item.key), item, now) for item in workers}
        self.mapping_rows = mappings
        for key, held in list(self.held.items()):
            seen = self.seen.get(key)
            if seen is None or seen.item.owner != self.replica:
                self._lose(key, held, "the table shows another owner")

    @staticmethod
    def _observe(previous: _Seen | None, item: LeaseItem, now: float) -> _Seen:
        if previous is None:
            # Never seen: an owned lease counts as just renewed; an unowned one is available at once.
            return _Seen(item, now if item.owner is not None else -math.inf)
        if previous.item.counter != item.counter:
            return _Seen(item, now)
        return _Seen(item, previous.changed_at)

    def expired(self, seen: _Seen, now: float) -> bool:
        return now - seen.changed_at > self.settings.failover_time

    async def balance_round(self) -> None:
        """One scan, then take (and if need be steal) this replica's share of every mapping."""
        async with self._round_lock:
            await self._balance()

    async def _balance(self) -> None:
        await self._scan()
        if self._paused:
            return
        self.rounds += 1
        self.metrics.lease_balance_rounds.inc()
        for view in list(self.views.values()):
            await self._balance_mapping(view)
        self._count_unowned()
        await self._forget_dead_workers()

    async def _forget_dead_workers(self) -> None:
        """Delete worker rows silent for ten failover times (replicas killed without a goodbye)."""
        now = time.monotonic()
        for key, seen in list(self.workers.items()):
            if now - seen.changed_at > 10 * self.settings.failover_time and seen.item.owner != self.replica:
                with contextlib.suppress(AwsError):
                    if await self.table.delete(key, seen.item.counter):
                        self.workers.pop(key, None)
                        self.log.info("worker_forgotten", worker=seen.item.owner)

    def _judge(self) -> tuple[set[str], int]:
        """From the last scan: the available leases and the number of live replicas.

        Available: unowned, expired, or owned by this replica in the table but not held here (the
        answer to its take was lost, or the watchdog gave it up): taking it again at once beats
        leaving the shard idle until the lease looks expired.
        """
        now = time.monotonic()
        available = {
            k
            for k, s in self.seen.items()
            if s.item.owner is None or self.expired(s, now) or (s.item.owner == self.replica and k not in self.held)
        }
        live = {s.item.owner for k, s in self.seen.items() if k not in available and s.item.owner is not None}
        live |= {s.item.owner for s in self.workers.values() if s.item.owner and not self.expired(s, now)}
        live.add(self.replica)
        return available, len(live)

    def _ready(self, view: MappingLeases) -> list[_Seen]:
        """The mapping's leases that can be read now: listed, not ended, every parent ended."""
        mine = [s for s in self.seen.values() if view._mine(s.item)]
        if view.listed is not None:  # shards no longer listed have nothing to read (and block nothing)
            mine = [s for s in mine if s.item.shard_id in view.listed]
        by_shard = {s.item.shard_id: s.item for s in mine}
        return [
            s
            for s in mine
            if not _ended(s.item) and all(p not in by_shard or _ended(by_shard[p]) for p in s.item.parents)
        ]

    def _count_unowned(self) -> None:
        """Export, per mapping, the ready leases that neither a live replica nor this one holds."""
        available, _ = self._judge()
        for view in self.views.values():
            unowned = sum(1 for s in self._ready(view) if s.item.key in available and s.item.key not in self.held)
            self.metrics.lease_unowned.labels(view.mapping_uuid).set(unowned)

    async def _balance_mapping(self, view: MappingLeases, *, fresh: bool = False) -> None:
        available, replicas = self._judge()
        ready = self._ready(view)
        if not ready:
            return
        target = math.ceil(len(ready) / replicas)
        held = sum(1 for s in ready if s.item.key in self.held)
        if self.settings.max_leases_per_replica is not None:  # across all mappings
            target = min(target, held + self.settings.max_leases_per_replica - len(self.held))
        needed = target - held
        if needed <= 0:
            return
        free = [s for s in ready if s.item.key in available and s.item.key not in self.held]
        random.shuffle(free)
        if free:
            for s in free[:needed]:
                await self._take(s, stolen=False)
            return
        # Stealing interrupts another replica's work: decide it on a fresh view, not on a scan that
        # other replicas' takes of this round may have made stale (that churn is what slows KCL down).
        if not fresh:
            await self._scan()
            await self._balance_mapping(view, fresh=True)
            return
        owners = Counter(s.item.owner for s in ready if s.item.key not in available and s.item.owner != self.replica)
        budget = self.settings.max_steal_per_round
        # One lease at a time from whoever is the most loaded now (never taking anyone below the
        # share, except one from a replica at the share while this one lacks more than one, as KCL).
        while needed > 0 and budget > 0 and owners:
            victim, count = owners.most_common(1)[0]
            if not (count > target or (count == target and needed > 1)):
                return
            candidates = [
                s
                for s in ready
                if s.item.owner == victim and s.item.key not in available and s.item.key not in self.held
            ]
            if not candidates:
                return
            budget -= 1
            owners[victim] -= 1
            if await self._take(random.choice(candidates), stolen=True):  # noqa: S311 - spread, not crypto
                needed -= 1
                if count == target:
                    return

    async def _take(self, seen: _Seen, *, stolen: bool) -> bool:
        """Take (or steal) a lease as last seen; False if another replica was faster or DynamoDB failed."""
        item = seen.item
        if self._paused:
            return False  # shutting down: take nothing more
        sent = time.monotonic()
        try:
            taken = await self.table.take(item.key, item.counter, self.replica, item.owner)
        except AwsError as exc:
            self.log.warning("lease_take_failed", shard=item.shard_id, code=exc.code)
            return False
        if not taken:
            return False  # another replica was faster: a normal outcome
        self.held[item.key] = _Held(
            item=item,
            counter=item.counter + 1,
            token=uuid.uuid4().hex,
            checkpoint=item.checkpoint,
            renewed_at=sent,
        )
        self.seen[item.key] = _Seen(item, time.monotonic())
        self.metrics.lease_event(item.mapping_uuid, "stolen" if stolen else "taken")
        self.log.info(
            "lease_taken", mapping=item.mapping_uuid, shard=item.shard_id, previous_owner=item.owner, stolen=stolen
        )
        self._changed(item)
        return True


class LeaseCheckpointStore:
    """The CheckpointStore of stream mappings when leases are in use: every write is a fenced lease write."""

    def __init__(self, coordinator: LeaseCoordinator) -> None:
        self.coordinator = coordinator

    async def load(self, mapping_uuid: str, stream_arn: str) -> dict[str, Checkpoint]:
        """The checkpoints of one mapping's stream as last seen in the table."""
        return {
            s.item.shard_id: s.item.checkpoint
            for s in self.coordinator.seen.values()
            if s.item.mapping_uuid == mapping_uuid and s.item.stream_arn == stream_arn
        }

    async def save(self, key: CheckpointKey, checkpoint: Checkpoint) -> None:
        """Write a checkpoint of a held lease (LeaseLostError if it is not held any more)."""
        await self.coordinator.checkpoint(key, checkpoint)

    async def save_all(self, checkpoints: Sequence[tuple[CheckpointKey, Checkpoint]]) -> None:
        """Write several checkpoints of held leases, one after the other."""
        for key, checkpoint in checkpoints:
            await self.coordinator.checkpoint(key, checkpoint)

    async def list_all(self) -> list[tuple[CheckpointKey, Checkpoint]]:
        """Every checkpoint in the table (a fresh scan)."""
        leases, _, _ = await self.coordinator.table.scan()
        rows = [(CheckpointKey(i.mapping_uuid, i.stream_arn, i.shard_id), i.checkpoint) for i in leases]
        return sorted(rows, key=lambda r: (r[0].mapping_uuid, r[0].stream_arn, r[0].shard_id))

    async def __aenter__(self) -> LeaseCheckpointStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None
