"""Mapping health and the observability HTTP server: /metrics, /healthz, /readyz.

- `/healthz` (liveness): the event loop answers and every mapping task is alive. A crashed
  mapping task (a bug, not an AWS error) makes it fail, so Kubernetes restarts the pod.
- `/readyz` (readiness): every enabled mapping reached its source on its last attempt. A missing
  queue or denied access shows here with the reason, while other mappings keep running.
- `/metrics`: the injected Prometheus registry in the text exposition format.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

__all__ = ["HealthServer", "MappingHealth", "MappingState"]


class MappingState(enum.StrEnum):
    """Where a mapping is in its life."""

    STARTING = "starting"
    RUNNING = "running"
    UNHEALTHY = "unhealthy"
    DISABLED = "disabled"
    STOPPING = "stopping"
    STOPPED = "stopped"


@dataclass(slots=True)
class MappingHealth:
    """The health of one mapping, updated by its runner and read by the HTTP server."""

    uuid: str
    function_name: str
    source_arn: str
    state: MappingState = MappingState.STARTING
    reason: str = ""
    since: float = field(default_factory=time.time)
    on_change: Callable[[MappingHealth], None] | None = None

    def set(self, state: MappingState, reason: str = "") -> None:
        """Move to `state` (with a reason for unhealthy states); no-op if nothing changed."""
        if state is self.state and reason == self.reason:
            return
        self.state, self.reason, self.since = state, reason, time.time()
        if self.on_change is not None:
            self.on_change(self)

    @property
    def ready(self) -> bool:
        """True when this mapping does not hold readiness back."""
        return self.state in (MappingState.RUNNING, MappingState.DISABLED)

    def as_dict(self) -> dict[str, object]:
        """The JSON shape shown by /readyz."""
        return {
            "uuid": self.uuid,
            "function": self.function_name,
            "source": self.source_arn,
            "state": self.state.value,
            "reason": self.reason,
            "since": self.since,
        }


class HealthServer:
    """The aiohttp server for /metrics, /healthz and /readyz, as an async context manager."""

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        mappings: list[MappingHealth],
        alive: Callable[[], bool],
    ) -> None:
        self._host, self._port = host, port
        self._registry = registry
        self._mappings = mappings
        self._alive = alive
        self._runner: web.AppRunner | None = None
        self.bound_port: int | None = None

    async def __aenter__(self) -> HealthServer:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        server = site._server  # aiohttp exposes the bound socket only here
        sockets = getattr(server, "sockets", None) or []
        self.bound_port = sockets[0].getsockname()[1] if sockets else self._port
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _metrics(self, _request: web.Request) -> web.Response:
        body = generate_latest(self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _request: web.Request) -> web.Response:
        if self._alive():
            return web.json_response({"status": "ok"})
        return web.json_response({"status": "failed"}, status=503)

    async def _readyz(self, _request: web.Request) -> web.Response:
        ready = all(m.ready for m in self._mappings)
        body = {"status": "ready" if ready else "not ready", "mappings": [m.as_dict() for m in self._mappings]}
        return web.json_response(body, status=200 if ready else 503)
