"""Behavioural fakes shipped with the package, for esm's tests and for users testing their setups.

`FakeLambda` is a small aiohttp server that speaks the AWS Lambda Invoke API's wire protocol, so
the real, unchanged aiobotocore Lambda client talks to it over real HTTP. It is hand-written only
because no emulator produces function errors, timeouts, throttles (429) or payload-too-large (413)
over the Invoke API (../shared/TESTING.md, "Lambda Invoke failure paths" and moto item 7); for the
happy path prefer moto's Lambda API.

Each function's behaviour is scripted with a callable that receives the parsed event and the
`FakeCall` and returns a `FakeReply`; `replies(...)` scripts a fixed sequence. Like the real
service the fake answers 404 `ResourceNotFoundException` for an unknown function and 413
`RequestEntityTooLargeException` for a request body over 6,291,456 bytes by itself, sets
`X-Amz-Executed-Version`, and serves `GetFunctionConfiguration` (with the scripted `Timeout`).

`serve_app` serves any aiohttp application on a loopback port for the length of a block: an HTTP
function of your own for an `http` target, say.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from esm.arns import parse_function_arn
from esm.events import EVENT_LIMIT_BYTES

__all__ = ["FakeCall", "FakeHandler", "FakeLambda", "FakeReply", "replies", "serve_app"]

MAX_INVOKE_BYTES = EVENT_LIMIT_BYTES
"""Lambda's synchronous invocation request limit (6 MB), enforced by the fake as by AWS."""


@contextlib.asynccontextmanager
async def serve_app(app: web.Application, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
    """Serve `app` on `host`:`port` (0: a free port) for the block; yields its base URL, `http://host:port`.

    On leaving, the server stops at once: requests still being answered get half a second.
    """
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        yield f"http://{host}:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@dataclass(frozen=True, slots=True)
class FakeCall:
    """One Invoke request that reached a fake function (`at` is `time.monotonic()` on arrival)."""

    function: str
    qualifier: str | None
    invocation_type: str
    event: Any
    size: int
    request_id: str
    at: float


@dataclass(frozen=True, slots=True)
class FakeReply:
    """What the fake answers to one Invoke request: status, body, headers, after `delay` seconds."""

    status: int = 200
    body: bytes = b"null"
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    executed_version: str | None = None

    @classmethod
    def ok(cls, payload: Any = None, *, delay: float = 0.0, executed_version: str | None = None) -> FakeReply:
        """The function returned `payload` (JSON-serialized; bytes are sent as they are)."""
        return cls(200, _body(payload), delay=delay, executed_version=executed_version)

    @classmethod
    def function_error(cls, payload: Any, kind: str = "Unhandled", *, delay: float = 0.0) -> FakeReply:
        """The function failed: 200 with `X-Amz-Function-Error: kind` and the error document."""
        return cls(200, _body(payload), {"X-Amz-Function-Error": kind}, delay=delay)

    @classmethod
    def error(cls, status: int, code: str, document: Mapping[str, Any], *, delay: float = 0.0) -> FakeReply:
        """An AWS error response: `x-amzn-ErrorType: code` and the JSON error document."""
        return cls(status, _body(dict(document)), {"x-amzn-ErrorType": code}, delay=delay)

    @classmethod
    def throttle(
        cls, *, reason: str = "ReservedFunctionConcurrentInvocationLimitExceeded", delay: float = 0.0
    ) -> FakeReply:
        """429 `TooManyRequestsException`, as Lambda throttles a synchronous invocation."""
        document = {"Reason": reason, "Type": "User", "message": "Rate Exceeded."}
        return cls.error(429, "TooManyRequestsException", document, delay=delay)

    @classmethod
    def service_error(cls, *, delay: float = 0.0) -> FakeReply:
        """500 `ServiceException`: the Lambda service failed internally."""
        document = {"Type": "Service", "Message": "The Lambda service encountered an internal error."}
        return cls.error(500, "ServiceException", document, delay=delay)

    @classmethod
    def too_large(cls, *, delay: float = 0.0) -> FakeReply:
        """413 `RequestEntityTooLargeException`, as for a request over the 6 MB limit."""
        return cls.error(413, "RequestEntityTooLargeException", _too_large_document(), delay=delay)


FakeHandler = Callable[[Any, FakeCall], FakeReply | Awaitable[FakeReply]]
"""A fake function's behaviour: `(event, call) -> FakeReply`, plain or async."""


def replies(*script: FakeReply) -> FakeHandler:
    """A handler answering with `script` in order, then repeating its last reply."""
    if not script:
        raise ValueError("replies() needs at least one FakeReply")
    remaining = list(script)

    def handler(event: Any, call: FakeCall) -> FakeReply:
        return remaining.pop(0) if len(remaining) > 1 else remaining[0]

    return handler


def echo(event: Any, call: FakeCall) -> FakeReply:
    """The default behaviour: return the event unchanged."""
    return FakeReply.ok(event)


@dataclass(slots=True)
class _Function:
    name: str
    timeout: int
    memory: int
    handler: FakeHandler
    aliases: dict[str, str]

    def version(self, qualifier: str | None) -> str:
        if qualifier is None or qualifier == "$LATEST":
            return "$LATEST"
        return self.aliases.get(qualifier, qualifier)


class FakeLambda:
    """A Lambda Invoke API server on 127.0.0.1 with scripted functions; an async context manager."""

    def __init__(
        self, *, host: str = "127.0.0.1", port: int = 0, region: str = "us-east-1", account: str = "123456789012"
    ) -> None:
        self.calls: list[FakeCall] = []
        """Every Invoke request that reached a registered function (not 404s or automatic 413s)."""
        self.handler_errors: list[BaseException] = []
        """Exceptions raised by scripted handlers (each answered with a 500 ServiceException)."""
        self._host = host
        self._port = port
        self._region = region
        self._account = account
        self._functions: dict[str, _Function] = {}
        self._server: contextlib.AsyncExitStack | None = None
        self._endpoint = ""

    @property
    def endpoint(self) -> str:
        """The base URL to give aiobotocore as `endpoint_url`."""
        if self._server is None:
            raise RuntimeError("FakeLambda is not running: use it with `async with`")
        return self._endpoint

    def function(
        self,
        name: str,
        *,
        timeout: int = 3,
        handler: FakeHandler | None = None,
        memory: int = 128,
        aliases: Mapping[str, str] | None = None,
    ) -> None:
        """Register (or replace) function `name`; `handler` defaults to echoing the event.

        `aliases` maps alias names to the version they run (reported as `X-Amz-Executed-Version`).
        """
        self._functions[name] = _Function(name, timeout, memory, handler or echo, dict(aliases or {}))

    def arn(self, name: str, qualifier: str | None = None) -> str:
        """The function ARN the fake reports for `name` (with `:qualifier` if given)."""
        base = f"arn:aws:lambda:{self._region}:{self._account}:function:{name}"
        return f"{base}:{qualifier}" if qualifier else base

    def calls_to(self, name: str) -> list[FakeCall]:
        """The recorded calls of one function, in arrival order."""
        return [c for c in self.calls if c.function == name]

    async def __aenter__(self) -> FakeLambda:
        """Start serving on the configured port (0: a free one)."""
        app = web.Application(client_max_size=4 * MAX_INVOKE_BYTES)
        app.router.add_post("/2015-03-31/functions/{name}/invocations", self._invoke)
        app.router.add_get("/2015-03-31/functions/{name}/configuration", self._configuration)
        server = contextlib.AsyncExitStack()
        self._endpoint = await server.enter_async_context(serve_app(app, self._host, self._port))
        self._port = int(self._endpoint.rsplit(":", 1)[1])  # started again, it serves on the same port
        self._server = server
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Stop serving; replies still waiting on a `delay` are dropped."""
        server, self._server = self._server, None
        if server is not None:
            await server.aclose()

    # ------------------------------------------------------------------------------------------

    def _lookup(self, request: web.Request) -> tuple[_Function | None, str | None, str]:
        """The function, qualifier and display ARN a request addresses."""
        raw = request.match_info["name"]
        try:
            ref = parse_function_arn(raw)
        except ValueError:
            return None, None, raw
        qualifier = request.query.get("Qualifier") or ref.qualifier
        name = ref.display_name.split(":")[-1]
        return self._functions.get(name), qualifier, self.arn(name, qualifier)

    async def _invoke(self, request: web.Request) -> web.Response:
        fn, qualifier, arn = self._lookup(request)
        if fn is None:
            return _error(404, "ResourceNotFoundException", {"Type": "User", "Message": f"Function not found: {arn}"})
        body = await request.read()
        if len(body) > MAX_INVOKE_BYTES:
            return _error(413, "RequestEntityTooLargeException", _too_large_document())
        invocation_type = request.headers.get("X-Amz-Invocation-Type", "RequestResponse")
        if invocation_type == "DryRun":
            return web.Response(status=204, headers=_headers())
        try:
            event = json.loads(body) if body else {}
        except ValueError as exc:
            document = {"Type": "User", "message": f"Could not parse request body into json: {exc}"}
            return _error(400, "InvalidRequestContentException", document)
        call = FakeCall(fn.name, qualifier, invocation_type, event, len(body), str(uuid.uuid4()), time.monotonic())
        self.calls.append(call)
        try:
            outcome = fn.handler(event, call)
            reply = await outcome if inspect.isawaitable(outcome) else outcome
        except Exception as exc:  # noqa: BLE001  # a broken script is reported as Lambda would: a 500
            self.handler_errors.append(exc)
            reply = FakeReply.service_error()
        if invocation_type == "Event":
            return web.Response(status=202, headers=_headers(call.request_id))
        if reply.delay > 0:
            await asyncio.sleep(reply.delay)
        headers = _headers(call.request_id)
        if reply.status == 200:
            headers["X-Amz-Executed-Version"] = reply.executed_version or fn.version(qualifier)
        headers.update(reply.headers)
        return web.Response(status=reply.status, body=reply.body, headers=headers)

    async def _configuration(self, request: web.Request) -> web.Response:
        fn, qualifier, arn = self._lookup(request)
        if fn is None:
            return _error(404, "ResourceNotFoundException", {"Type": "User", "Message": f"Function not found: {arn}"})
        document = {
            "FunctionName": fn.name,
            "FunctionArn": arn,
            "Runtime": "python3.12",
            "Role": f"arn:aws:iam::{self._account}:role/{fn.name}-role",
            "Handler": "index.handler",
            "CodeSize": 0,
            "Description": "",
            "Timeout": fn.timeout,
            "MemorySize": fn.memory,
            "LastModified": "2024-01-01T00:00:00.000+0000",
            "CodeSha256": "",
            "Version": fn.version(qualifier),
            "State": "Active",
            "LastUpdateStatus": "Successful",
            "PackageType": "Zip",
            "Architectures": ["x86_64"],
        }
        return web.Response(status=200, body=_body(document), headers=_headers())


def _body(payload: Any) -> bytes:
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    return json.dumps(payload).encode()


def _too_large_document() -> dict[str, str]:
    return {
        "Type": "User",
        "message": f"Request must be smaller than {MAX_INVOKE_BYTES} bytes for the InvokeFunction operation",
    }


def _headers(request_id: str | None = None) -> dict[str, str]:
    return {"Content-Type": "application/json", "x-amzn-RequestId": request_id or str(uuid.uuid4())}


def _error(status: int, code: str, document: Mapping[str, Any]) -> web.Response:
    headers = _headers()
    headers["x-amzn-ErrorType"] = code
    return web.Response(status=status, body=_body(dict(document)), headers=headers)
