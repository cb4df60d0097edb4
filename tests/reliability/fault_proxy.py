"""A fault-injecting HTTP proxy between esm and an AWS emulator (moto server, kinesalite).

esm's `aws.endpoint_url` (or `aws.endpoints.<service>`) points at the proxy; the proxy forwards
each request unchanged to the emulator, except for a share of the calls, chosen per operation,
which it answers with one of the faults of `Fault`:

- `throttle`: the service's own throttling error, in its wire format: HTTP 400 with the JSON
  `__type` (and, for SQS, whose JSON protocol is "query compatible", the `x-amzn-query-error`
  header botocore reads the code from): SQS `RequestThrottled`, Kinesis
  `ProvisionedThroughputExceededException` (data calls) or `LimitExceededException` (control
  calls), DynamoDB `ProvisionedThroughputExceededException` (item calls) or
  `ThrottlingException` (table calls), DynamoDB Streams `LimitExceededException`;
- `server_error`: 500 `InternalFailure` (DynamoDB: `InternalServerError`) or 503
  `ServiceUnavailable`, alternately;
- `reset`: the connection is reset (RST) without an answer; the request never reaches the emulator;
- `lost_response`: the request is forwarded and applied, then the connection is reset instead of
  answering, so the caller cannot know that its call took effect (the nastiest case for deletes,
  checkpoints and sends);
- `slow`: the request is forwarded after a delay.

The installed botocore speaks the JSON protocol to SQS, Kinesis, DynamoDB and DynamoDB Streams
(`X-Amz-Target: AmazonSQS.ReceiveMessage`, `Kinesis_20131202.GetRecords`, ...); a request in the
query protocol (`Action=...` in a form body) is recognised too and answered with the XML error
document of that protocol. The service is read from the target prefix, else from the SigV4
credential scope of the `Authorization` header.

Which calls fail is decided per operation (`sqs.DeleteMessageBatch`, `dynamodb.UpdateItem`, ...):
each operation has its own seeded random stream and rate, so the plan does not depend on how the
calls of different operations interleave, and the kinds of one operation's faults go round the
configured kinds in order, so that an operation faulted N times saw min(N, kinds) kinds.
`first_call_fails` makes the first call of rarely called operations (GetShardIterator,
DescribeTable) fail for sure. Every call and every injected fault is counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import random
import re
import socket
import struct
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import aiohttp
from aiohttp import web

from esm.testing import serve_app

__all__ = ["ALL_FAULTS", "Exchange", "Fault", "FaultProxy"]


class Fault(enum.StrEnum):
    """What the proxy does instead of (or besides) forwarding a call."""

    THROTTLE = "throttle"
    SERVER_ERROR = "server_error"
    RESET = "reset"
    LOST_RESPONSE = "lost_response"
    SLOW = "slow"


ALL_FAULTS: tuple[Fault, ...] = tuple(Fault)

_TARGET_PREFIXES = {
    "AmazonSQS": "sqs",
    "Kinesis_20131202": "kinesis",
    "DynamoDB_20120810": "dynamodb",
    "DynamoDBStreams_20120810": "dynamodbstreams",
}
_NAMESPACES = {
    "sqs": "com.amazonaws.sqs",
    "dynamodb": "com.amazonaws.dynamodb.v20120810",
    "dynamodbstreams": "com.amazonaws.dynamodb.v20120810",
}
_KINESIS_DATA_CALLS = frozenset({"GetRecords", "GetShardIterator", "PutRecord", "PutRecords"})
_DYNAMODB_TABLE_CALLS = frozenset({"CreateTable", "DeleteTable", "DescribeTable", "UpdateTable", "ListTables"})
_SCOPE = re.compile(r"Credential=[^/]+/[^/]+/[^/]+/([^/]+)/aws4_request")
# Not forwarded in either direction: they describe one hop, not the message.
_HOP_HEADERS = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "proxy-connection", "te", "upgrade"}
)


@dataclass(frozen=True, slots=True)
class Exchange:
    """One call through the proxy: when it arrived and was answered (or reset), and what it was."""

    arrived: float
    answered: float
    operation: str
    fault: Fault | None
    body: bytes


@dataclass(frozen=True, slots=True)
class _Operation:
    service: str
    name: str
    protocol: str  # "json" (with its content type) or "query"
    content_type: str = ""

    @property
    def key(self) -> str:
        return f"{self.service}.{self.name}"


@dataclass
class _Plan:
    rate: float
    rng: random.Random
    calls: int = 0
    faults: int = 0


class FaultProxy:
    """An aiohttp reverse proxy to `upstream` that injects faults; an async context manager.

    `rates` maps `service.Operation` or `service` to the share of calls to fault (the most
    specific entry wins, else `default_rate`); `faults` are the kinds used, in turn per
    operation; `slow` is the range of the delay of a slow call, in seconds. Set `enabled`
    to False to forward everything (the faults stop at once, counts are kept).
    """

    def __init__(
        self,
        upstream: str,
        *,
        rates: Mapping[str, float] | None = None,
        default_rate: float = 0.0,
        faults: Sequence[Fault] = ALL_FAULTS,
        first_call_fails: Iterable[str] = (),
        slow: tuple[float, float] = (0.2, 1.0),
        seed: int = 0,
    ) -> None:
        if not faults:
            raise ValueError("at least one kind of fault")
        self.upstream = upstream.rstrip("/")
        self.enabled = True
        self.calls: Counter[str] = Counter()
        """Calls seen, by `service.Operation` (faulted ones included)."""
        self.injected: Counter[tuple[str, Fault]] = Counter()
        """Faults injected, by (`service.Operation`, kind)."""
        self.history: list[Exchange] = []
        """Every call, in the order they were answered (monotonic times)."""
        self._rates = dict(rates or {})
        self._default_rate = default_rate
        self.faults = tuple(faults)
        """The kinds of fault used, in turn per operation (may be changed while running)."""
        self._first = frozenset(first_call_fails)
        self._slow = slow
        self._seed = seed
        self._plans: dict[str, _Plan] = {}
        self._server: contextlib.AsyncExitStack | None = None
        self._session: aiohttp.ClientSession | None = None
        self._endpoint = ""
        self._slow_rng = random.Random(f"{seed}:slow")  # noqa: S311 - test jitter, not crypto

    # ------------------------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """The URL to give esm (and aiobotocore) as the endpoint."""
        if self._server is None:
            raise RuntimeError("FaultProxy is not running: use it with `async with`")
        return self._endpoint

    def set_rate(self, key: str, rate: float) -> None:
        """Change the share of faulted calls of `service.Operation` (or a whole `service`) from now on."""
        self._rates[key] = rate
        for op, plan in self._plans.items():
            if op == key or (op.split(".", 1)[0] == key and op not in self._rates):
                plan.rate = rate

    def by_kind(self) -> Counter[Fault]:
        """Faults injected, by kind."""
        out: Counter[Fault] = Counter()
        for (_, kind), n in self.injected.items():
            out[kind] += n
        return out

    def faults_on(self, operation: str) -> int:
        """Faults injected on one `service.Operation` (every kind)."""
        return sum(n for (op, _), n in self.injected.items() if op == operation)

    def summary(self) -> str:
        """One line: the faults by kind, then by operation."""
        kinds = ", ".join(f"{k.value}={n}" for k, n in sorted(self.by_kind().items()))
        per_op: Counter[str] = Counter()
        for (op, _), n in self.injected.items():
            per_op[op] += n
        ops = ", ".join(f"{op} {per_op[op]}/{self.calls[op]}" for op in sorted(per_op))
        return f"faults by kind: {kinds}; faulted/calls by operation: {ops}"

    async def __aenter__(self) -> FaultProxy:
        """Start listening on a free loopback port."""
        self._session = aiohttp.ClientSession(
            auto_decompress=False,
            skip_auto_headers=("Accept-Encoding", "User-Agent", "Content-Type"),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=120),
            connector=aiohttp.TCPConnector(limit=0),
        )
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        server = contextlib.AsyncExitStack()
        self._endpoint = await server.enter_async_context(serve_app(app))
        self._server = server
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Stop listening and close the upstream connections."""
        server, self._server = self._server, None
        if server is not None:
            await server.aclose()
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ------------------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        arrived = time.monotonic()
        body = await request.read()
        operation = _identify(request, body)
        fault = self._decide(operation)
        try:
            if fault is Fault.THROTTLE or fault is Fault.SERVER_ERROR:
                return _error_response(operation, fault, self.injected[(operation.key, fault)] - 1)
            if fault is Fault.RESET:
                return _reset(request)
            if fault is Fault.SLOW:
                await asyncio.sleep(self._slow_rng.uniform(*self._slow))
            response = await self._forward(request, body)
            if fault is Fault.LOST_RESPONSE:
                return _reset(request)
            return response
        finally:
            self.history.append(Exchange(arrived, time.monotonic(), operation.key, fault, body))

    def _decide(self, operation: _Operation) -> Fault | None:
        key = operation.key
        self.calls[key] += 1
        plan = self._plans.get(key)
        if plan is None:
            rate = self._rates.get(key, self._rates.get(operation.service, self._default_rate))
            plan = self._plans[key] = _Plan(rate, random.Random(f"{self._seed}:{key}"))  # noqa: S311 - test plan
        draw = plan.rng.random()  # drawn for every call, so the plan of later calls does not depend on `enabled`
        if not self.enabled:
            return None
        n = plan.calls  # calls while enabled: `first_call_fails` means the first call made while faults are on
        plan.calls += 1
        if not (n == 0 and key in self._first) and draw >= plan.rate:
            return None
        kind = self.faults[plan.faults % len(self.faults)]
        plan.faults += 1
        self.injected[(key, kind)] += 1
        return kind

    async def _forward(self, request: web.Request, body: bytes) -> web.Response:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        async with self._session.request(
            request.method, self.upstream + request.path_qs, headers=headers, data=body, allow_redirects=False
        ) as upstream:
            payload = await upstream.read()
            out = [(k, v) for k, v in upstream.headers.items() if k.lower() not in _HOP_HEADERS]
            response = web.Response(status=upstream.status, body=payload)
            response.headers.clear()
            response.headers.extend(out)
            return response


def _identify(request: web.Request, body: bytes) -> _Operation:
    """The service and operation of a call, and the protocol to answer a fault in."""
    scope = _SCOPE.search(request.headers.get("Authorization", ""))
    scoped = scope.group(1) if scope else "unknown"
    target = request.headers.get("X-Amz-Target")
    content_type = request.headers.get("Content-Type", "application/x-amz-json-1.0")
    if target and "." in target:
        prefix, name = target.rsplit(".", 1)
        return _Operation(_TARGET_PREFIXES.get(prefix, scoped), name, "json", content_type)
    if "x-www-form-urlencoded" in content_type:
        action = parse_qs(body.decode("utf-8", "replace")).get("Action")
        if action:
            return _Operation(scoped, action[0], "query")
    return _Operation(scoped, f"{request.method} {request.path}", "json", "application/json")


def _error_code(operation: _Operation, fault: Fault, nth: int) -> tuple[int, str, bool]:
    """(HTTP status, AWS error code, sender's fault) of an injected error."""
    service, name = operation.service, operation.name
    if fault is Fault.THROTTLE:
        if service == "sqs":
            return 400, "RequestThrottled", True
        if service == "kinesis":
            code = "ProvisionedThroughputExceededException" if name in _KINESIS_DATA_CALLS else "LimitExceededException"
            return 400, code, True
        if service == "dynamodb":
            code = "ThrottlingException" if name in _DYNAMODB_TABLE_CALLS else "ProvisionedThroughputExceededException"
            return 400, code, True
        if service == "dynamodbstreams":
            return 400, "LimitExceededException", True
        return 400, "ThrottlingException", True
    if nth % 2 == 1:
        return 503, "ServiceUnavailable", False
    return 500, "InternalServerError" if service.startswith("dynamodb") else "InternalFailure", False


def _error_response(operation: _Operation, fault: Fault, nth: int) -> web.Response:
    """An AWS error answer in the operation's protocol."""
    status, code, sender = _error_code(operation, fault, nth)
    message = "Rate exceeded" if fault is Fault.THROTTLE else "We encountered an internal error. Please try again."
    request_id = str(uuid.uuid4())
    if operation.protocol == "query":
        xml = (
            "<ErrorResponse><Error>"
            f"<Type>{'Sender' if sender else 'Receiver'}</Type><Code>{code}</Code><Message>{message}</Message>"
            f"</Error><RequestId>{request_id}</RequestId></ErrorResponse>"
        )
        return web.Response(status=status, body=xml.encode(), headers={"Content-Type": "text/xml"})
    namespace = _NAMESPACES.get(operation.service)
    document: dict[str, Any] = {"__type": f"{namespace}#{code}" if namespace else code, "message": message}
    headers = {
        "Content-Type": operation.content_type,
        "x-amzn-RequestId": request_id,
        "X-Amzn-ErrorType": code,
    }
    if operation.service == "sqs":  # SQS's JSON protocol is query compatible: botocore reads the code here
        headers["x-amzn-query-error"] = f"{code};{'Sender' if sender else 'Receiver'}"
    return web.Response(status=status, body=json.dumps(document).encode(), headers=headers)


def _reset(request: web.Request) -> web.Response:
    """Reset the client's connection (RST, no answer); the returned response is never sent."""
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    return web.Response(status=599)
