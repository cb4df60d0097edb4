"""The daemon: startup -> serve -> drain -> shutdown, with signals and exit codes (DESIGN.md rule 7).

Lifecycle:
1. Start the observability server, open AWS clients, open every target (handlers are imported,
   Lambda timeouts learned). A target that cannot be opened is a configuration error: exit 2.
2. Preflight every enabled mapping (queue URL and attributes). A function timeout above the
   queue's visibility timeout is AWS's InvalidParameterValueException: exit 2 before polling.
   A missing queue is not fatal: that mapping reports unhealthy and keeps retrying.
3. Run every mapping in its own task; one mapping's failure never stops the others.
4. On SIGTERM/SIGINT: stop receiving (messages gathered but not yet invoked go back to the
   queue at once), let in-flight invocations finish within `shutdown.grace_period`, then abandon
   the rest (their messages go back too), close targets and clients in reverse order, exit 0.
   A second signal forces the exit at once (exit code 1).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import threading
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry
from structlog.typing import FilteringBoundLogger

from esm.arns import SourceKind, parse_function_arn
from esm.aws import ClientFactory
from esm.config import Config, FunctionConfig, MappingConfig
from esm.destinations import Destinations
from esm.errors import EsmError, InvokeError
from esm.health import HealthServer, MappingHealth
from esm.logging import get_logger
from esm.metrics import Metrics
from esm.runner import SqsMappingRunner
from esm.sources._shards import StreamSource
from esm.sources.dynamodb_streams import DynamoDbStream
from esm.sources.kinesis import KinesisStream
from esm.sources.sqs import SqsQueue
from esm.state import CheckpointStore, SqliteCheckpointStore
from esm.stream_runner import StreamMappingRunner
from esm.targets.base import Invoker
from esm.targets.factory import build_invoker

__all__ = ["Daemon", "exit_past_abandoned_threads", "function_arn", "run_daemon"]

Runner = SqsMappingRunner | StreamMappingRunner

EXIT_OK, EXIT_FORCED, EXIT_CONFIG = 0, 1, 2
_FORCE_SECONDS = 5.0  # after a second signal, the time cancelled batches get to return their messages
_ABANDON_SECONDS = 10.0  # after the grace period, the time abandoned batches get to return their messages
_FALLBACK_REGION = "us-east-1"


@dataclass
class _Sources:
    """The source clients and stores the configured mappings need (opened once, shared)."""

    sqs: Any = None
    kinesis: Any = None
    dynamodbstreams: Any = None
    store: CheckpointStore | None = None
    destinations: Destinations | None = None


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
    _runner_tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def request_stop(self) -> None:
        """First call: drain and stop. Second call: force (cancel everything now)."""
        if self.stop_requested.is_set():
            if not self._forced:
                self._forced = True
                self.log.warning("shutdown_forced")
                for task in self._runner_tasks:
                    task.cancel()
                # Cancelled batches return their messages; if even that hangs, leave anyway.
                asyncio.get_running_loop().call_later(_FORCE_SECONDS, _hard_exit, EXIT_FORCED)
            else:
                _hard_exit(EXIT_FORCED)
            return
        self.log.info("shutdown_requested", grace_period=self.config.spec.shutdown.grace_period)
        self.stop_requested.set()

    def _alive(self) -> bool:
        """Liveness: no mapping task died of an unexpected exception."""
        return not any(t.done() and not t.cancelled() and t.exception() is not None for t in self._runner_tasks)

    async def run_with_signals(self) -> int:
        """`run()` with SIGTERM/SIGINT wired to `request_stop()` (the second one forces)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        return await self.run()

    async def run(self) -> int:
        """Run until stopped; returns the process exit code."""
        spec = self.config.spec
        metrics = Metrics(self.registry)
        clients = ClientFactory(spec.aws, default_region=_FALLBACK_REGION)
        region = clients.region or _FALLBACK_REGION
        mappings = [m for m in spec.event_source_mappings]
        self.health = [MappingHealth(m.uuid, m.FunctionName, m.EventSourceArn) for m in mappings]
        kinds = {m.source.kind for m in mappings}
        async with contextlib.AsyncExitStack() as stack:
            server = await stack.enter_async_context(
                HealthServer(spec.http.host, spec.http.port, self.registry, self.health, self._alive)
            )
            self.http_port = server.bound_port
            self.log.info("http_listening", address=spec.http.host, port=server.bound_port)
            invokers: dict[str, Invoker] = {}
            try:
                for m in mappings:
                    name, fn = self.config.function_for(m)
                    if name not in invokers:
                        invoker = build_invoker(
                            name,
                            fn,
                            base_dir=self.config.base_dir,
                            clients=clients,
                            region=region,
                            account=m.source.account,
                            logger=self.log.bind(function=name),
                        )
                        invokers[name] = await stack.enter_async_context(invoker)
            except InvokeError as exc:
                self.log.error("target_unusable", reason=str(exc))
                return EXIT_CONFIG
            sources = _Sources()
            if SourceKind.SQS in kinds:
                sources.sqs = await stack.enter_async_context(clients.client("sqs", read_timeout=40, max_pool=200))
            if SourceKind.KINESIS in kinds:
                sources.kinesis = await stack.enter_async_context(clients.client("kinesis", max_pool=200))
            if SourceKind.DYNAMODB in kinds:
                sources.dynamodbstreams = await stack.enter_async_context(
                    clients.client("dynamodbstreams", max_pool=200)
                )
            if kinds - {SourceKind.SQS}:
                path = self.config.sqlite_path
                assert path is not None  # the configuration rules require it for stream mappings
                try:
                    sources.store = await stack.enter_async_context(SqliteCheckpointStore(path))
                except EsmError as exc:
                    self.log.error("state_unusable", path=str(path), reason=str(exc))
                    return EXIT_FORCED
                sources.destinations = await stack.enter_async_context(Destinations(clients))

            runners = [
                self._runner(m, h, invokers[m.FunctionName], sources, metrics)
                for m, h in zip(mappings, self.health, strict=True)
            ]
            problems = []
            for i, r in enumerate(runners):
                if self.stop_requested.is_set():
                    return EXIT_FORCED if self._forced else EXIT_OK
                if r.mapping.Enabled:
                    text = await r.preflight()
                    if text is not None:
                        problems.append(f"event_source_mappings.{i}: {text}")
            if problems:
                for p in problems:
                    self.log.error("config_invalid", file=str(self.config.path), problem=p)
                return EXIT_CONFIG
            return await self._serve(runners)
        return EXIT_OK  # pragma: no cover - the stack above always returns

    def _runner(
        self, m: MappingConfig, health: MappingHealth, invoker: Invoker, sources: _Sources, metrics: Metrics
    ) -> Runner:
        """The runner for one mapping, by source kind."""
        log = self.log.bind(mapping=m.uuid, function=m.FunctionName, source=m.EventSourceArn)
        mapping_metrics = metrics.for_mapping(m.uuid, m.FunctionName, m.source.kind.value)
        if m.source.kind is SourceKind.SQS:
            return SqsMappingRunner(m, SqsQueue(sources.sqs, m.source, log), invoker, mapping_metrics, health, log)
        name, fn = self.config.function_for(m)
        stream: StreamSource
        if m.source.kind is SourceKind.KINESIS:
            role = fn.role or f"arn:{m.source.partition}:iam::{m.source.account}:role/esm"
            stream = KinesisStream(sources.kinesis, m.source, role)
        else:
            stream = DynamoDbStream(sources.dynamodbstreams, m.source)
        assert sources.store is not None
        assert sources.destinations is not None
        destination = m.on_failure_destination
        return StreamMappingRunner(
            m,
            stream,
            invoker,
            sources.store,
            sources.destinations.sender(destination) if destination else None,
            self.config.spec.streams,
            mapping_metrics,
            health,
            log,
            function_arn=function_arn(name, fn, m),
        )

    async def _serve(self, runners: list[Runner]) -> int:
        self._runner_tasks = [asyncio.create_task(r.run(), name=f"mapping-{r.mapping.uuid}") for r in runners]
        for task in self._runner_tasks:
            task.add_done_callback(self._runner_done)
        self.started.set()
        self.log.info("daemon_started", mappings=len(runners))
        await self.stop_requested.wait()
        for r in runners:
            r.stop()
        if self._runner_tasks:
            grace = self.config.spec.shutdown.grace_period
            _, late = await asyncio.wait(self._runner_tasks, timeout=grace)
            if late:
                self.log.warning("grace_period_expired", abandoned_mappings=len(late))
                for task in late:
                    task.cancel()
                _, stuck = await asyncio.wait(late, timeout=_ABANDON_SECONDS)
                if stuck:
                    self.log.error("shutdown_incomplete", mappings=len(stuck))
        crashed = not self._alive()
        self.log.info("daemon_stopped", forced=self._forced, crashed=crashed)
        return EXIT_FORCED if self._forced or crashed else EXIT_OK

    def _runner_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.log.error("mapping_crashed", task=task.get_name(), exc_info=task.exception())


def run_daemon(config: Config) -> int:
    """Run the daemon for a loaded configuration with signal handling; returns the exit code."""

    code = asyncio.run(Daemon(config).run_with_signals())
    exit_past_abandoned_threads(code)
    return code


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
