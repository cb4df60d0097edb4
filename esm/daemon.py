"""The daemon: startup -> serve (and reload) -> drain -> shutdown, with signals and exit codes (DESIGN.md rule 7).

Lifecycle:
1. Start the observability server, open AWS clients, open every target (handlers are imported,
   Lambda timeouts learned). A target that cannot be opened is a configuration error: exit 2.
2. Preflight every enabled mapping (queue URL and attributes). A function timeout above the
   queue's visibility timeout is AWS's InvalidParameterValueException: exit 2 before polling.
   A missing queue is not fatal: that mapping reports unhealthy and keeps retrying.
3. Run every mapping in its own task; one mapping's failure never stops the others.
4. On SIGHUP, or when the configuration file's content changes (`reload.watch`), reload it:
   only the mappings that were added, removed or changed (`esm.reload.diff_configs`) are
   stopped and started; the others keep their task, leases and in-flight work. An invalid file
   is rejected (logged, counted) and the running configuration stays. A reload never exits.
5. On SIGTERM/SIGINT: stop receiving (messages gathered but not yet invoked go back to the
   queue at once), let in-flight invocations finish within `shutdown.grace_period`, then abandon
   the rest (their messages go back too), close targets and clients in reverse order, exit 0.
   A second signal forces the exit at once (exit code 1).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, disable_created_metrics
from prometheus_client.metrics import MetricWrapperBase
from structlog.typing import FilteringBoundLogger

from esm.arns import SourceKind, parse_function_arn
from esm.aws import ClientFactory
from esm.config import AwsConfig, Config, ConfigError, ConfigFile, FunctionConfig, MappingConfig
from esm.destinations import Destinations
from esm.errors import AwsError, EsmError, InvokeError, RetriableAwsError
from esm.health import HealthServer, MappingHealth, MappingState
from esm.leases import LeaseCheckpointStore, LeaseCoordinator, LeaseSettings, replica_id
from esm.logging import get_logger
from esm.metrics import Metrics
from esm.reload import ConfigDiff, diff_configs, parse_snapshot, running_spec, snapshot
from esm.runner import SqsMappingRunner
from esm.sources._shards import StreamSource
from esm.sources.dynamodb_streams import DynamoDbStream
from esm.sources.kinesis import KinesisStream
from esm.sources.sqs import SqsQueue
from esm.state import CheckpointStore, SqliteCheckpointStore
from esm.state.dynamodb import LeaseTable
from esm.stream_runner import StreamMappingRunner
from esm.targets.base import Invoker
from esm.targets.factory import build_invoker

__all__ = ["Daemon", "exit_past_abandoned_threads", "function_arn", "run_daemon"]

Runner = SqsMappingRunner | StreamMappingRunner

EXIT_OK, EXIT_FORCED, EXIT_CONFIG = 0, 1, 2
_FORCE_SECONDS = 5.0  # after a second signal, the time cancelled batches get to return their messages
_ABANDON_SECONDS = 10.0  # after the grace period, the time abandoned batches get to return their messages
_FALLBACK_REGION = "us-east-1"
_STATE_RETRY_START, _STATE_RETRY_MAX = 0.5, 30.0  # backoff while the lease table fails transiently at startup


def function_arn(name: str, fn: FunctionConfig, m: MappingConfig) -> str:
    """The function ARN shown in failure records: the Lambda's own, else one in the source's account."""
    if fn.lambda_ is not None:
        ref = parse_function_arn(fn.lambda_)
        if ref.arn is not None:
            return ref.arn
        bare = ref.function_name.split(":")[-1]
    else:
        bare = name
    return f"arn:{m.source.partition}:lambda:{m.source.region}:{m.source.account}:function:{bare}"


class _Env:
    """What the mappings of one `aws` section share: source clients, destinations and targets.

    Each is opened on first need and kept while a mapping uses it; a reload that changes `aws`
    replaces the whole environment (every mapping is then restarted on the new one).
    """

    def __init__(self, aws: AwsConfig) -> None:
        self.aws = aws
        self.clients = ClientFactory(aws, default_region=_FALLBACK_REGION)
        self.region = self.clients.region or _FALLBACK_REGION
        self.targets: dict[str, tuple[FunctionConfig, Invoker, contextlib.AsyncExitStack]] = {}
        self._sources: dict[SourceKind, Any] = {}
        self._destinations: Destinations | None = None
        self._stack = contextlib.AsyncExitStack()

    async def source(self, kind: SourceKind) -> Any:
        """The shared client of a source kind, opened on first use."""
        if kind not in self._sources:
            if kind is SourceKind.SQS:
                cm: Any = self.clients.client("sqs", read_timeout=40, max_pool=200)
            elif kind is SourceKind.KINESIS:
                cm = self.clients.client("kinesis", max_pool=200)
            else:
                cm = self.clients.client("dynamodbstreams", max_pool=200)
            self._sources[kind] = await self._stack.enter_async_context(cm)
        return self._sources[kind]

    async def destinations(self) -> Destinations:
        """The on-failure destination senders of the stream mappings, opened on first use."""
        if self._destinations is None:
            self._destinations = await self._stack.enter_async_context(Destinations(self.clients))
        return self._destinations

    async def target(self, name: str, fn: FunctionConfig, opener: Callable[[], Invoker]) -> Invoker:
        """The open invoker of function `name` (opened by `opener()` if new or its entry changed)."""
        held = self.targets.get(name)
        if held is not None and held[0] == fn:
            return held[1]
        if held is not None:
            await self.close_target(name)
        stack = contextlib.AsyncExitStack()
        invoker = await stack.enter_async_context(opener())
        self.targets[name] = (fn, invoker, stack)
        return invoker

    async def close_target(self, name: str) -> None:
        """Close one target (no mapping uses it any more)."""
        _, _, stack = self.targets.pop(name)
        await stack.aclose()

    async def aclose(self) -> None:
        """Close clients and destinations, then the targets (the reverse of the startup order)."""
        await self._stack.aclose()
        for name in reversed(list(self.targets)):
            await self.close_target(name)


@dataclass
class _Mapping:
    """A configured mapping: its runner and task (None while it could not be started)."""

    config: MappingConfig
    health: MappingHealth
    labels: tuple[str, str, str]
    runner: Runner | None = None
    task: asyncio.Task[None] | None = None


@dataclass
class Daemon:
    """The long-running process for one configuration."""

    config: Config
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    log: FilteringBoundLogger = field(default_factory=get_logger)
    stop_requested: asyncio.Event = field(default_factory=asyncio.Event)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    health: list[MappingHealth] = field(default_factory=list)
    http_port: int | None = None
    _forced: bool = False
    _mappings: dict[str, _Mapping] = field(default_factory=dict)
    _retiring: set[asyncio.Task[None]] = field(default_factory=set)
    _reload_now: asyncio.Event = field(default_factory=asyncio.Event)
    _reload_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _file: tuple[str | None, ConfigFile] = (None, ConfigFile())  # the file as last read: (digest, content)
    _stack: contextlib.AsyncExitStack | None = None
    _env: _Env | None = None
    _store: CheckpointStore | None = None
    _leases: LeaseCoordinator | None = None
    _metrics: Metrics | None = None

    @property
    def tasks(self) -> dict[str, asyncio.Task[None]]:
        """The task of every running mapping, by UUID (a reload leaves unchanged mappings' tasks alone)."""
        return {u: m.task for u, m in self._mappings.items() if m.task is not None}

    def request_stop(self) -> None:
        """First call: drain and stop. Second call: force (cancel everything now)."""
        if self.stop_requested.is_set():
            if not self._forced:
                self._forced = True
                self.log.warning("shutdown_forced")
                for task in [*self.tasks.values(), *self._retiring]:
                    task.cancel()
                # Cancelled batches return their messages; if even that hangs, leave anyway.
                asyncio.get_running_loop().call_later(_FORCE_SECONDS, _hard_exit, EXIT_FORCED)
            else:
                _hard_exit(EXIT_FORCED)
            return
        self.log.info("shutdown_requested", grace_period=self.config.spec.shutdown.grace_period)
        self.stop_requested.set()

    def request_reload(self) -> None:
        """Reload the configuration file as soon as possible (SIGHUP)."""
        self.log.info("reload_requested", file=str(self.config.path))
        self._reload_now.set()

    def _alive(self) -> bool:
        """Liveness: no mapping task died of an unexpected exception."""
        return not any(t.done() and not t.cancelled() and t.exception() is not None for t in self.tasks.values())

    async def run_with_signals(self) -> int:
        """`run()` with SIGTERM/SIGINT wired to `request_stop()` (the second one forces), SIGHUP to reload."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        return await self.run()

    async def run(self) -> int:
        """Run until stopped; returns the process exit code."""
        spec = self.config.spec
        # No `_created` twin of every counter and histogram: twice the series, and nothing in the
        # dashboards or alerts reads them (Prometheus 2.42 stores them as plain gauges).
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self._metrics = Metrics(self.registry)
        for outcome in ("applied", "rejected"):
            self._metrics.config_reloads.labels(outcome)
        self._metrics.config_last_reload_success.set(time.time())
        self._metrics.config_last_reload_successful.set(1)
        self._file = self._read_baseline()
        mappings = list(spec.event_source_mappings)
        entries = [self._entry(m) for m in mappings]
        self.health[:] = [e.health for e in entries]
        async with contextlib.AsyncExitStack() as stack:
            self._stack = stack
            try:
                server = await stack.enter_async_context(
                    HealthServer(spec.http.host, spec.http.port, self.registry, self.health, self._alive)
                )
            except OSError as exc:  # an unknown host, an address not on this machine, a port in use
                self.log.error("http_listen_failed", listen=spec.http.listen, reason=str(exc))
                return EXIT_CONFIG
            self.http_port = server.bound_port
            self.log.info("http_listening", address=spec.http.host, port=server.bound_port)
            stack.push_async_callback(self._close_env)
            self._env = _Env(spec.aws)
            try:
                for m in mappings:
                    await self._target(m)
            except InvokeError as exc:
                self.log.error("target_unusable", reason=str(exc))
                return EXIT_CONFIG
            for e in entries:
                try:
                    e.runner = await self._runner(e)
                except EsmError:
                    return EXIT_FORCED  # the checkpoint store cannot be opened (logged by _open_store)
            problems = []
            for i, e in enumerate(entries):
                if self.stop_requested.is_set():
                    return EXIT_FORCED if self._forced else EXIT_OK
                assert e.runner is not None
                if e.config.Enabled:
                    text = await e.runner.preflight()
                    if text is not None:
                        problems.append(f"event_source_mappings.{i}: {text}")
            if problems:
                for p in problems:
                    self.log.error("config_invalid", file=str(self.config.path), problem=p)
                return EXIT_CONFIG
            return await self._serve(entries)
        return EXIT_OK  # pragma: no cover - the stack above always returns

    def _read_baseline(self) -> tuple[str | None, ConfigFile]:
        """The file as it is now, which later reloads are compared with (the running spec if unreadable).

        The running configuration may differ from its file (`esm dev` rewrites `aws`); reloads
        compare file with file and keep whatever the file did not change (`esm.reload.running_spec`).
        """
        snap = snapshot(self.config.path)
        try:
            return snap.digest, parse_snapshot(self.config.path, snap).spec
        except ConfigError:
            return snap.digest, self.config.spec

    def _entry(self, m: MappingConfig) -> _Mapping:
        labels = (m.uuid, m.FunctionName, m.source.kind.value)
        return _Mapping(m, MappingHealth(m.uuid, m.FunctionName, m.EventSourceArn), labels)

    async def _target(self, m: MappingConfig) -> Invoker:
        """The open target of a mapping (raises InvokeError if it cannot be opened)."""
        assert self._env is not None
        env = self._env
        name, fn = self.config.function_for(m)

        def opener() -> Invoker:
            logger = self.log.bind(function=name)
            account = m.source.account
            return build_invoker(
                name,
                fn,
                base_dir=self.config.base_dir,
                clients=env.clients,
                region=env.region,
                account=account,
                logger=logger,
            )

        return await env.target(name, fn, opener)

    async def _open_store(self, stack: contextlib.AsyncExitStack) -> CheckpointStore:
        """Open the stream mappings' checkpoint store for the daemon's life; log and raise EsmError if unusable."""
        if self.config.spec.state.dynamodb is not None:
            return await self._open_leases(stack)
        path = self.config.sqlite_path
        assert path is not None  # the configuration rules require it for stream mappings
        try:
            return await stack.enter_async_context(SqliteCheckpointStore(path))
        except EsmError as exc:
            self.log.error("state_unusable", path=str(path), reason=str(exc))
            raise

    async def _open_leases(self, stack: contextlib.AsyncExitStack) -> CheckpointStore:
        """The DynamoDB lease table (created if missing and allowed) and this replica's lease coordinator."""
        assert self._env is not None
        assert self._metrics is not None
        settings = self.config.spec.state.dynamodb
        assert settings is not None
        client = await stack.enter_async_context(self._env.clients.client("dynamodb", max_pool=50))
        table = LeaseTable(client, settings.table)
        failover = settings.failover_time
        coordinator = LeaseCoordinator(
            table,
            LeaseSettings(
                failover_time=failover,
                renew_interval=failover / 3 - 0.025,
                balance_interval=settings.balance_interval or failover / 2,
                max_steal_per_round=settings.max_steal_per_round,
                max_leases_per_replica=settings.max_leases_per_replica,
            ),
            replica_id(dict(os.environ)),
            self._metrics,
            self.log,
        )
        delay = _STATE_RETRY_START
        while True:
            try:
                if await table.ensure(create=settings.create):
                    self.log.info("lease_table_created", table=settings.table)
                await coordinator.start()
                break
            except RetriableAwsError as exc:
                # Throttling, a 5xx, a reset connection: DynamoDB will answer again; exiting would only
                # turn a passing fault into a crash loop. Not ready meanwhile (the mappings are starting).
                if self.stop_requested.is_set():
                    self.log.error("state_unusable", table=settings.table, reason=str(exc))
                    raise
                self.log.warning("state_unavailable", table=settings.table, reason=str(exc), retry_in=delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop_requested.wait(), delay)
                delay = min(delay * 2, _STATE_RETRY_MAX)
            except AwsError as exc:
                self.log.error("state_unusable", table=settings.table, reason=str(exc))
                raise
        stack.push_async_callback(coordinator.stop)  # if the daemon ends before a graceful handoff
        self._leases = coordinator
        return LeaseCheckpointStore(coordinator)

    async def _runner(self, e: _Mapping) -> Runner:
        """The runner for one mapping, by source kind (its target is open already)."""
        assert self._env is not None
        assert self._metrics is not None
        assert self._stack is not None
        m, env = e.config, self._env
        # The state series exist before anything can fail: a mapping whose target cannot be opened
        # shows as unhealthy in the metrics (and alerts), as it does in /readyz.
        mapping_metrics = self._metrics.for_mapping(*e.labels)
        mapping_metrics.describe(m.EventSourceArn)
        e.health.on_change = lambda health: mapping_metrics.state(health.state.value)
        mapping_metrics.state(e.health.state.value)
        invoker = await self._target(m)
        log = self.log.bind(mapping=m.uuid, function=m.FunctionName, source=m.EventSourceArn)
        client = await env.source(m.source.kind)
        if m.source.kind is SourceKind.SQS:
            return SqsMappingRunner(
                m,
                SqsQueue(client, m.source, log),
                invoker,
                mapping_metrics,
                e.health,
                log,
                queue_attributes_interval=self.config.spec.metrics.queue_attributes_interval,
            )
        if self._store is None:
            self._store = await self._open_store(self._stack)
        destinations = await env.destinations()
        name, fn = self.config.function_for(m)
        stream: StreamSource
        if m.source.kind is SourceKind.KINESIS:
            role = fn.role or f"arn:{m.source.partition}:iam::{m.source.account}:role/esm"
            stream = KinesisStream(client, m.source, role)
        else:
            stream = DynamoDbStream(client, m.source)
        destination = m.on_failure_destination
        return StreamMappingRunner(
            m,
            stream,
            invoker,
            self._store,
            destinations.sender(destination) if destination else None,
            self.config.spec.streams,
            mapping_metrics,
            e.health,
            log,
            function_arn=function_arn(name, fn, m),
            # A disabled mapping takes no leases: its share is left to the replicas that run it.
            leases=self._leases.view(m.uuid, m.EventSourceArn) if self._leases is not None and m.Enabled else None,
        )

    async def _close_env(self) -> None:
        if self._env is not None:
            await self._env.aclose()

    # serving ----------------------------------------------------------------------------------

    def _start(self, e: _Mapping) -> None:
        assert e.runner is not None
        e.task = asyncio.create_task(e.runner.run(), name=f"mapping-{e.config.uuid}")
        e.task.add_done_callback(self._runner_done)

    async def _serve(self, entries: list[_Mapping]) -> int:
        for e in entries:
            self._mappings[e.config.uuid] = e
            self._start(e)
        self.started.set()
        self.log.info("daemon_started", mappings=len(entries))
        watcher = asyncio.create_task(self._watch(), name="config-watcher")
        await self.stop_requested.wait()
        stopping_since = time.monotonic()
        if self._leases is not None:
            self._leases.pause_balancing()  # take nothing more; keep renewing while the consumers drain
        grace = self.config.spec.shutdown.grace_period
        # A reload in progress notices the stop and ends; one stuck opening a target is cancelled.
        _, late = await asyncio.wait({watcher}, timeout=grace)
        for task in late:
            task.cancel()
        await asyncio.wait({watcher})
        for e in self._mappings.values():
            if e.runner is not None:
                e.runner.stop()
        tasks = {*self.tasks.values(), *self._retiring}
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=grace)
            if late:
                self.log.warning("grace_period_expired", abandoned_mappings=len(late))
                await self._abandon(late)
        if self._leases is not None:
            # Final checkpoints are written: give every lease up, so the other replicas take the shards
            # on their next balance round instead of waiting for the leases to expire.
            await self._leases.stop(since=stopping_since)
        crashed = not self._alive()
        self.log.info("daemon_stopped", forced=self._forced, crashed=crashed)
        return EXIT_FORCED if self._forced or crashed else EXIT_OK

    async def _abandon(self, late: set[asyncio.Task[None]]) -> None:
        """Cancel runners past their grace period; their cancelled batches return their messages."""
        for task in late:
            task.cancel()
        _, stuck = await asyncio.wait(late, timeout=_ABANDON_SECONDS)
        if stuck:
            self.log.error("shutdown_incomplete", mappings=len(stuck))

    def _runner_done(self, task: asyncio.Task[None]) -> None:
        self._retiring.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.log.error("mapping_crashed", task=task.get_name(), exc_info=task.exception())

    # reload -----------------------------------------------------------------------------------

    async def _watch(self) -> None:
        """Reload on request (SIGHUP) and whenever the file's content changes (`reload.watch`)."""
        while not self.stop_requested.is_set():
            settings = self.config.spec.reload
            stop = asyncio.ensure_future(self.stop_requested.wait())
            now = asyncio.ensure_future(self._reload_now.wait())
            try:
                await asyncio.wait({stop, now}, timeout=settings.interval, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stop.cancel()
                now.cancel()
            if self.stop_requested.is_set():
                return
            if self._reload_now.is_set():
                self._reload_now.clear()
            elif not (settings.watch and snapshot(self.config.path).digest != self._file[0]):
                continue
            try:
                await self.reload()
            except Exception:  # a bug in a reload must not end hot reload: log it loudly, keep watching
                self.log.exception("reload_crashed", file=str(self.config.path))

    async def reload(self) -> ConfigDiff | None:
        """Read the configuration file and apply what changed; None if it was rejected (or stopping).

        Unchanged mappings are not touched. Never raises for a bad file or a mapping that cannot
        start: the first is rejected (running configuration unchanged), the second logged and left
        stopped (retried by the next reload).
        """
        if not self.started.is_set():
            raise RuntimeError("the daemon is not serving yet")
        async with self._reload_lock:
            if self.stop_requested.is_set():
                return None
            assert self._metrics is not None
            path = self.config.path
            snap = snapshot(path)
            try:
                new = parse_snapshot(path, snap)
            except ConfigError as exc:
                self._file = (snap.digest, self._file[1])
                self._metrics.config_reloads.labels("rejected").inc()
                self._metrics.config_last_reload_successful.set(0)
                self.log.error("reload_rejected", file=str(path), problems=exc.lines())
                return None
            old = self._file[1]
            diff = diff_configs(old, new.spec)
            for section in diff.needs_restart:
                self.log.warning(
                    "reload_needs_restart", file=str(path), section=section, note="the running value stays"
                )
            self._file = (snap.digest, new.spec)
            await self._apply(diff, Config(path, running_spec(self.config.spec, old, new.spec, diff)))
            if self.stop_requested.is_set():
                return None
            self._metrics.config_reloads.labels("applied").inc()
            self._metrics.config_last_reload_successful.set(1)
            self._metrics.config_last_reload_success.set(time.time())
            self.log.info("config_reloaded", file=str(path), **diff.counts, changed_mappings=dict(diff.reasons))
            return diff

    async def _apply(self, diff: ConfigDiff, new: Config) -> None:
        """Stop what was removed or changed, then open and start what was added or changed."""
        assert self._env is not None
        # A mapping that could not start before (target, store or preflight) is tried again.
        retry = [u for u in diff.unchanged if u in self._mappings and self._mappings[u].task is None]
        leaving = [self._mappings.pop(u) for u in (*diff.removed, *diff.changed, *retry) if u in self._mappings]
        await self._retire(leaving, new.spec.shutdown.grace_period)
        if self.stop_requested.is_set():
            return
        if self._leases is not None:
            # A mapping that is gone (or reads another stream) releases its leases; a changed one keeps them.
            staying = {(m.uuid, m.EventSourceArn) for m in new.spec.event_source_mappings}
            for e in leaving:
                if (e.config.uuid, e.config.EventSourceArn) not in staying:
                    await self._leases.forget(e.config.uuid, e.config.EventSourceArn)
        new_labels = {m.uuid: self._entry(m).labels for m in new.spec.event_source_mappings}
        new_arns = {m.uuid: m.EventSourceArn for m in new.spec.event_source_mappings}
        for e in leaving:
            e.health.on_change = None  # a late STOPPED must not bring the series back
            if new_labels.get(e.config.uuid) != e.labels:
                self._forget_series(e.labels)
            elif new_arns.get(e.config.uuid) != e.config.EventSourceArn and self._metrics is not None:
                with contextlib.suppress(KeyError):
                    self._metrics.mapping_info.remove(*e.labels, e.config.EventSourceArn)
        self.config = new
        if new.spec.aws != self._env.aws:  # every mapping was changed, so none uses the old clients
            await self._env.aclose()
            self._env = _Env(new.spec.aws)
        wanted = dict(new.function_for(m) for m in new.spec.event_source_mappings if m.uuid in self._mappings)
        for name, (fn, _, _) in list(self._env.targets.items()):
            if wanted.get(name) != fn:
                await self._env.close_target(name)
        starting = {*diff.added, *diff.changed, *retry}
        entries: list[_Mapping] = []
        for m in new.spec.event_source_mappings:
            if self.stop_requested.is_set():
                return
            entries.append(self._mappings[m.uuid] if m.uuid not in starting else await self._prepare(m))
        if self.stop_requested.is_set():
            return
        self._mappings = {e.config.uuid: e for e in entries}
        self.health[:] = [e.health for e in entries]
        for e in entries:
            if e.config.uuid in starting and e.runner is not None:
                self._start(e)

    async def _prepare(self, m: MappingConfig) -> _Mapping:
        """A new runner for `m`, preflighted; without a runner (logged, unhealthy) if it cannot start."""
        e = self._entry(m)
        try:
            e.runner = await self._runner(e)
            text = await e.runner.preflight() if m.Enabled else None
        except InvokeError as exc:
            text = f"function unusable: {exc}"
        except EsmError as exc:
            text = f"checkpoint store unusable: {exc}"
        except Exception as exc:  # a reload must never end the daemon: log loudly, leave this mapping stopped
            self.log.exception("mapping_build_crashed", mapping=m.uuid)
            text = f"{type(exc).__name__}: {exc}"
        if text is not None:
            e.runner = None
            e.health.set(MappingState.UNHEALTHY, text)
            self.log.error(
                "mapping_not_started", mapping=m.uuid, function=m.FunctionName, source=m.EventSourceArn, reason=text
            )
        return e

    async def _retire(self, leaving: list[_Mapping], grace: float) -> None:
        """Stop runners gracefully: wait up to `grace`, then cancel (a stop request ends the wait)."""
        tasks = set()
        for e in leaving:
            if e.runner is not None:
                e.runner.stop()
            if e.task is not None and not e.task.done():
                tasks.add(e.task)
        if not tasks:
            return
        self._retiring |= tasks
        stop = asyncio.ensure_future(self.stop_requested.wait())
        try:
            async with asyncio.timeout(grace):
                while not stop.done() and not all(t.done() for t in tasks):
                    await asyncio.wait({stop, *tasks}, return_when=asyncio.FIRST_COMPLETED)
        except TimeoutError:
            pass
        finally:
            stop.cancel()
        late = {t for t in tasks if not t.done()}
        if late and not self.stop_requested.is_set():
            self.log.warning("reload_grace_period_expired", abandoned_mappings=len(late))
            await self._abandon(late)

    def _forget_series(self, labels: tuple[str, str, str]) -> None:
        """Drop every metric series of a mapping that no longer exists (label sets stay bounded)."""
        assert self._metrics is not None
        for family in vars(self._metrics).values():
            if not isinstance(family, MetricWrapperBase):
                continue
            seen: set[tuple[str, ...]] = set()
            for metric in family.collect():
                for sample in metric.samples:
                    values = tuple(v for k, v in sample.labels.items() if k != "le")
                    if values[:3] == labels and values not in seen:
                        seen.add(values)
                        with contextlib.suppress(KeyError):
                            family.remove(*values)


def run_daemon(config: Config) -> int:
    """Run the daemon for a loaded configuration with signal handling; returns the exit code."""

    async def main(daemon: Daemon) -> int:
        freezer = asyncio.create_task(_freeze_when_started(daemon))
        try:
            return await daemon.run_with_signals()
        finally:
            freezer.cancel()

    code = asyncio.run(main(Daemon(config)))
    exit_past_abandoned_threads(code)
    return code


async def _freeze_when_started(daemon: Daemon) -> None:
    """Once the daemon serves, move every object alive (botocore's service models above all: tens of
    thousands of dicts, the configuration, the handlers' modules) out of the garbage collector's view.

    They live as long as the process; each collection of the older generations walked them all
    again. Measured in one process (docs/benchmarks.md, section 2): about 30 % less CPU per record
    on a DynamoDB stream. A process-wide policy, so it is done here, by `esm run`, not by `Daemon`
    (which tests and benchmarks run many times in one process). The price: frozen objects that
    later become garbage in a cycle are not collected (a configuration replaced by a reload, say).
    """
    await daemon.started.wait()
    gc.collect()
    gc.freeze()
    get_logger().info("startup_objects_frozen", count=gc.get_freeze_count())


def _hard_exit(code: int) -> None:
    """Leave now, without waiting for anything (the last resort of a forced stop)."""
    get_logger().warning("exited_hard", exit_code=code)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def exit_past_abandoned_threads(code: int) -> None:
    """Exit now if abandoned handler threads are still running.

    A synchronous handler that outlived its timeout or the grace period cannot be killed; Python
    would otherwise wait for it at exit (concurrent.futures joins its workers), so a handler that
    never returns would keep the pod from stopping. Their messages were already returned.
    """
    stuck = [t for t in threading.enumerate() if t is not threading.main_thread() and t.is_alive() and not t.daemon]
    if stuck:
        get_logger().warning("abandoned_threads_left", count=len(stuck), exit_code=code)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
