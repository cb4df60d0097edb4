"""The HTTP target: events POSTed to a real local aiohttp server, answers mapped onto Lambda's."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import structlog
from aiohttp import web

from esm.config import FunctionConfig, parse_config
from esm.errors import InvokeServiceError
from esm.targets.base import Invocation
from esm.targets.http import HttpInvoker
from esm.testing import serve_app


@dataclass
class Endpoint:
    """A running test server: its base URL and the requests it received."""

    url: str
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)


@pytest.fixture
async def endpoint() -> AsyncIterator[Endpoint]:
    """An aiohttp server on a free loopback port with one route per behaviour."""
    received: list[tuple[dict[str, str], bytes]] = []

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        received.append((dict(request.headers), body))
        return web.json_response({"received": json.loads(body)})

    async def empty(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=204)

    async def fail(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=500, body=b'{"error": "database down"}', content_type="application/json")

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response(status=200)

    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_post("/echo", echo)
    app.router.add_post("/empty", empty)
    app.router.add_post("/fail", fail)
    app.router.add_post("/slow", slow)
    async with serve_app(app) as url:
        yield Endpoint(url, received)


def http_invoker(url: str, *, timeout: float | None = None, headers: dict[str, str] | None = None) -> HttpInvoker:
    """An HttpInvoker POSTing to `url`."""
    fn = FunctionConfig(url=url, timeout=timeout, headers=headers or {})
    return HttpInvoker("audit", fn, logger=structlog.get_logger())


def invocation(event: Any) -> Invocation:
    """An invocation of `event` with a fresh request id."""
    return Invocation(payload=json.dumps(event).encode(), event=event, request_id=str(uuid.uuid4()))


class TestSuccess:
    """A 2xx answer is the function's response."""

    async def test_json_body_is_the_payload(self, endpoint: Endpoint) -> None:
        """The event arrives as the JSON body and the response body comes back as the payload."""
        event = {"Records": [{"messageId": "m-1"}]}
        async with http_invoker(f"{endpoint.url}/echo") as invoker:
            result = await invoker.invoke(invocation(event))
        assert result.ok
        assert json.loads(result.payload) == {"received": event}
        [(headers, body)] = endpoint.requests
        assert json.loads(body) == event
        assert headers["Content-Type"] == "application/json"

    async def test_empty_body_is_an_empty_payload(self, endpoint: Endpoint) -> None:
        """A 2xx without a body succeeds with an empty payload (the engine reads it as null)."""
        async with http_invoker(f"{endpoint.url}/empty") as invoker:
            result = await invoker.invoke(invocation({}))
        assert result.ok
        assert result.payload == b""

    async def test_large_payload_arrives_intact(self, endpoint: Endpoint) -> None:
        """A 5 MB event is sent whole (streamed, without aiohttp's large-body warning)."""
        event = {"data": "x" * (5 * 1024 * 1024)}
        async with http_invoker(f"{endpoint.url}/echo", timeout=10) as invoker:
            result = await invoker.invoke(invocation(event))
        assert json.loads(result.payload) == {"received": event}


class TestHeaders:
    """The request carries the request id and the configured headers."""

    async def test_configured_headers_and_request_id_arrive(self, endpoint: Endpoint) -> None:
        """Headers from the configuration, one expanded from an environment variable, arrive with the request id."""
        text = f"""
functions:
  audit:
    url: {endpoint.url}/echo
    headers:
      Authorization: Bearer ${{AUDIT_TOKEN}}
      X-Team: payments
"""
        fn = parse_config(text, "esm.yaml", env={"AUDIT_TOKEN": "t0ken"}).functions["audit"]
        call = invocation({"id": 1})
        async with HttpInvoker("audit", fn, logger=structlog.get_logger()) as invoker:
            await invoker.invoke(call)
        [(headers, _)] = endpoint.requests
        assert headers["Authorization"] == "Bearer t0ken"
        assert headers["X-Team"] == "payments"
        assert headers["Lambda-Runtime-Aws-Request-Id"] == call.request_id
        assert int(headers["Lambda-Runtime-Deadline-Ms"]) > 0


class TestFunctionErrors:
    """Answers that are not 2xx, and no answer in time, are function errors."""

    async def test_non_2xx_is_a_function_error_with_the_body(self, endpoint: Endpoint) -> None:
        """A 500 answer is an Unhandled function error carrying the response body."""
        async with http_invoker(f"{endpoint.url}/fail") as invoker:
            result = await invoker.invoke(invocation({}))
        assert result.function_error == "Unhandled"
        assert json.loads(result.payload) == {"error": "database down"}
        assert result.status_code == 500

    async def test_unknown_path_is_a_function_error(self, endpoint: Endpoint) -> None:
        """A 404 from the endpoint is a function error too: the endpoint was reached."""
        async with http_invoker(f"{endpoint.url}/nowhere") as invoker:
            result = await invoker.invoke(invocation({}))
        assert result.function_error == "Unhandled"
        assert result.status_code == 404

    async def test_timeout_is_a_sandbox_timedout_function_error(self, endpoint: Endpoint) -> None:
        """No answer within the timeout gives Lambda's Sandbox.Timedout function error."""
        call = invocation({})
        async with http_invoker(f"{endpoint.url}/slow", timeout=0.2) as invoker:
            result = await invoker.invoke(call)
        assert result.function_error == "Unhandled"
        assert json.loads(result.payload) == {
            "errorType": "Sandbox.Timedout",
            "errorMessage": f"RequestId: {call.request_id} Error: Task timed out after 0.20 seconds",
        }

    async def test_default_timeout_is_three_seconds(self) -> None:
        """Without a configured timeout the endpoint gets Lambda's default of 3 seconds."""
        assert http_invoker("http://127.0.0.1:1/").timeout == 3.0


class TestUnreachable:
    """Failing to reach the endpoint raises, so the engine retries."""

    async def test_connection_refused_is_a_service_error(self) -> None:
        """A closed port raises InvokeServiceError."""
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        async with http_invoker(f"http://127.0.0.1:{port}/invoke") as invoker:
            with pytest.raises(InvokeServiceError, match="audit"):
                await invoker.invoke(invocation({}))
