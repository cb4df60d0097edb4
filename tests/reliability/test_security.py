"""Security: nothing secret in the logs, and the metrics/health server binds where it is told (issue 7, point 6).

A real `esm run` process (default log level, JSON logs) runs against moto with AWS credentials in
its environment, an HTTP target whose `Authorization` and `X-Api-Key` headers come from `${VAR}`,
and traffic whose every payload carries a marker: SQS bodies and message attributes (string and
binary), Kinesis data and partition keys, DynamoDB keys, attributes and binary values. The traffic
fails in every way a payload might reach a log line: handler exceptions, a handler's partial batch
response, an HTTP target's 500 (whose body echoes the payload) and its invalid partial response,
stream records discarded to an SQS queue and an S3 bucket (where the payload does belong), and
SQS messages redriven to a dead-letter queue. Then no credential, header secret or payload (nor
its base64) may appear anywhere in stdout, stderr, /metrics or /readyz.

The listening sockets are read from /proc (the process's own socket inodes in /proc/net/tcp and
tcp6): `http.listen: 127.0.0.1:0` gives exactly one listening socket, on 127.0.0.1, which another
loopback address and the machine's other addresses cannot reach; `[::1]:0` gives one on ::1 only;
an address that is not the machine's is refused with exit 2 instead of falling back to another.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from esm.aws import ClientFactory
from esm.testing import serve_app
from tests.conftest import REGION, unique
from tests.reliability.observe import until

ROOT = Path(__file__).resolve().parents[2]
MARK = "ZQXJ7731-PAYLOAD-MARKER"
# Distinctive fake secrets: any of them (or a long piece of one) in a log line is a leak.
ACCESS_KEY = "AKIAFAKESECRET7731ZQ"
SECRET_KEY = "fakeSecretKey/ESM+7731zqxjSECRETsecretKEY"
SESSION_TOKEN = "FakeSessionToken//ESM7731+zqxj" + "SESSIONTOKEN" * 8
HEADER_TOKEN = "esm-http-bearer-7731-zqxj-SECRET"
API_KEY = "esm-api-key-7731-zqxj-SECRET"
SECRETS = [ACCESS_KEY, SECRET_KEY, SESSION_TOKEN, HEADER_TOKEN, API_KEY]

HANDLER_MODULE = '''
"""The test's Python handler: notes which records it saw (ids only) and fails on request."""

import base64
import json
import os
from pathlib import Path

SEEN = Path(os.environ["ESM_SEC_SEEN"])


def handle(event, context):
    failures = []
    with SEEN.open("a") as seen:
        for record in event["Records"]:
            if "body" in record:
                text, ident = record["body"], record["messageId"]
            else:
                text, ident = base64.b64decode(record["kinesis"]["data"]).decode(), record["kinesis"]["sequenceNumber"]
            seen.write(json.dumps({"id": ident}) + "\\n")
            if "fail-one" in text:
                failures.append({"itemIdentifier": ident})
            elif "fail-all" in text:
                raise RuntimeError("the handler refused this batch")
    return {"batchItemFailures": failures}
'''


@dataclass
class HttpTarget:
    """The HTTP function: records requests; answers 500 echoing the body, or an invalid partial response."""

    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    def got_all(self) -> bool:
        """Both SQS messages (one batch each) and at least one DynamoDB batch arrived."""
        bodies = [body for _, body in self.requests]
        return all(any(needle in b for b in bodies) for needle in (b"http-500", b"invalid-response", b"aws:dynamodb"))

    async def invoke(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append((dict(request.headers), body))
        if b'"aws:dynamodb"' in body or b"http-500" in body:
            return web.Response(status=500, body=b"failed on: " + body)  # a function error echoing the payload
        return web.json_response({"batchItemFailures": [{"itemIdentifier": "not-a-message-of-this-batch"}]})


@contextlib.asynccontextmanager
async def http_target() -> AsyncIterator[tuple[HttpTarget, str]]:
    """The HTTP function on a free loopback port; yields it and its URL."""
    target = HttpTarget()
    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_post("/invoke", target.invoke)
    async with serve_app(app) as url:
        yield target, f"{url}/invoke"


def daemon_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The daemon's environment: the fake credentials and header secrets, nothing of esm's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ESM_", "AWS_"))}
    return env | {
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
        "PYTHONUNBUFFERED": "1",
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_SESSION_TOKEN": SESSION_TOKEN,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
        "ESM_SEC_TOKEN": HEADER_TOKEN,
        "ESM_SEC_API_KEY": API_KEY,
        "ESM_SEC_SEEN": str(tmp_path / "seen.jsonl"),
        **extra,
    }


class Daemon:
    """`python -m esm run --config FILE --log-format json` (default level), stdout and stderr to files."""

    def __init__(self, tmp_path: Path, config: dict[str, Any], env: dict[str, str]) -> None:
        self.dir = tmp_path
        (tmp_path / "esm.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        self.stdout, self.stderr = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
        with self.stdout.open("wb") as out, self.stderr.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "esm", "run", "--config", str(tmp_path / "esm.yaml"), "--log-format", "json"],
                cwd=tmp_path,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
            )

    def events(self) -> list[dict[str, Any]]:
        """The JSON log lines so far (every stderr line must be one)."""
        return [json.loads(line) for line in self.stderr.read_text().splitlines()]

    async def port(self, within: float = 30) -> int:
        """The metrics/health port, from the `http_listening` log line."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"esm exited with {self.proc.returncode}: {self.stderr.read_text()}"
            for event in self.events() if self.stderr.read_text().endswith("\n") else []:
                if event["event"] == "http_listening":
                    return int(event["port"])
            await asyncio.sleep(0.05)
        raise AssertionError(f"esm did not start listening within {within} s: {self.stderr.read_text()}")

    async def stop(self) -> int:
        """SIGTERM and wait for the exit code."""
        self.proc.send_signal(signal.SIGTERM)
        return await asyncio.to_thread(self.proc.wait, 60)

    def kill(self) -> None:
        """End the process if a test failed before stopping it."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


async def wait_for(what: str, predicate: Callable[[], Any], within: float = 45) -> None:
    """Wait until a predicate (plain or async) holds; fail naming `what` (`observe.until`)."""
    await until(predicate, within, lambda: f"({what})", interval=0.1)


def seen_count(seen: Path) -> int:
    """How many records the Python handler noted."""
    return len(seen.read_text().splitlines()) if seen.exists() else 0


def http_get(port: int, path: str, host: str = "127.0.0.1") -> str:
    """GET a page of the metrics/health server (any status)."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=10) as response:
            return str(response.read().decode())
    except urllib.error.HTTPError as exc:
        return str(exc.read().decode())


def leaks(text: str, payloads: list[bytes]) -> list[str]:
    """Every secret, long piece of a secret, marker or payload (raw or base64) found in `text`."""
    needles = {MARK: "the payload marker"}
    for secret in SECRETS:
        needles[secret] = "a secret"
        needles[secret[:12]] = "the start of a secret"
        needles[secret[-12:]] = "the end of a secret"
    for payload in payloads:
        needles[base64.b64encode(payload).decode()] = "a payload in base64"
    return [f"{why}: {needle!r}" for needle, why in needles.items() if needle in text]


# --------------------------------------------------------------------------------------------
# sockets from /proc


def _ip(hex_address: str) -> str:
    """An address as /proc/net/tcp(6) writes it (each 32-bit word in host byte order)."""
    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(words))


def listening_sockets(pid: int) -> set[tuple[str, int]]:
    """Every TCP socket process `pid` listens on, as (address, port), read from /proc."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(FileNotFoundError):
            link = os.readlink(fd)
            if link.startswith("socket:["):
                inodes.add(link[len("socket:[") : -1])
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:  # 0A: LISTEN
                address, port = local.split(":")
                found.add((_ip(address), int(port, 16)))
    return found


def other_local_addresses() -> list[str]:
    """This machine's IPv4 addresses other than 127.0.0.1 (from the kernel's local routes)."""
    lines = Path("/proc/net/fib_trie").read_text().splitlines()
    local = {lines[i - 1].split()[-1] for i, line in enumerate(lines) if "/32 host LOCAL" in line}
    return sorted(a for a in local if a != "127.0.0.1")


def refused(host: str, port: int) -> bool:
    """Whether a TCP connection to host:port is refused."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.settimeout(5)
        try:
            s.connect((host, port))
        except ConnectionRefusedError:
            return True
    return False


def unassigned_ipv4() -> str:
    """An address from the documentation ranges that is not this machine's (binding it fails)."""
    for candidate in ("203.0.113.77", "198.51.100.77", "192.0.2.77"):
        with socket.socket() as s:
            try:
                s.bind((candidate, 0))
            except OSError as exc:
                if exc.errno == errno.EADDRNOTAVAIL:
                    return candidate
    raise AssertionError("every documentation address is assigned to this machine")


# --------------------------------------------------------------------------------------------
# the traffic


@dataclass
class Resources:
    """The queues, stream, table and bucket of the test, and every payload sent."""

    queue_py: str = ""
    queue_web: str = ""
    dlq_url: str = ""
    destination_url: str = ""
    arns: dict[str, str] = field(default_factory=dict)
    stream: str = ""
    table: str = ""
    bucket: str = ""
    payloads: list[bytes] = field(default_factory=list)


async def create(clients: ClientFactory) -> Resources:
    """Queues (one with a DLQ), a Kinesis stream, a table with a stream, a destination queue and bucket."""
    r = Resources()
    async with clients.client("sqs") as sqs, clients.client("kinesis") as kinesis, clients.client("dynamodb") as ddb:

        async def queue(name: str, **attributes: str) -> tuple[str, str]:
            url = (await sqs.create_queue(QueueName=name, Attributes=attributes))["QueueUrl"]
            attrs = await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
            return url, attrs["Attributes"]["QueueArn"]

        r.dlq_url, dlq_arn = await queue(unique("sec-dlq"))
        redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 1})
        r.queue_py, r.arns["py"] = await queue(unique("sec-py"), VisibilityTimeout="2", RedrivePolicy=redrive)
        r.queue_web, r.arns["web"] = await queue(unique("sec-web"), VisibilityTimeout="2")
        r.destination_url, r.arns["destination"] = await queue(unique("sec-dest"))
        r.stream = unique("sec-stream")
        await kinesis.create_stream(StreamName=r.stream, ShardCount=1)
        summary = await kinesis.describe_stream_summary(StreamName=r.stream)
        r.arns["stream"] = summary["StreamDescriptionSummary"]["StreamARN"]
        r.table = unique("sec-table")
        await ddb.create_table(
            TableName=r.table,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        )
        r.arns["table_stream"] = (await ddb.describe_table(TableName=r.table))["Table"]["LatestStreamArn"]
    async with clients.client("s3") as s3:
        r.bucket = unique("sec-bucket")
        await s3.create_bucket(Bucket=r.bucket)
    return r


async def send_traffic(clients: ClientFactory, r: Resources) -> None:
    """Marked payloads on every source, some of them made to fail."""
    binary = MARK.encode() + b"\x00\xff binary"
    r.payloads.append(binary)
    attributes = {
        "Note": {"DataType": "String", "StringValue": f"note {MARK}"},
        "Blob": {"DataType": "Binary", "BinaryValue": binary},
    }
    async with clients.client("sqs") as sqs, clients.client("kinesis") as kinesis, clients.client("dynamodb") as ddb:
        for text in ("ok", "fail-one", "fail-all"):
            body = json.dumps({"order": f"{MARK} {text}", "card": "4111111111111111"})
            r.payloads.append(body.encode())
            await sqs.send_message(QueueUrl=r.queue_py, MessageBody=body, MessageAttributes=attributes)
        for text in ("http-500", "invalid-response"):
            await sqs.send_message(QueueUrl=r.queue_web, MessageBody=f"{MARK} {text}", MessageAttributes=attributes)
        for text in ("ok", "fail-all"):
            data = f"{MARK} kinesis {text}".encode()
            r.payloads.append(data)
            await kinesis.put_record(StreamName=r.stream, Data=data, PartitionKey=f"{MARK}-key")
        item = {"pk": {"S": f"{MARK}-item"}, "secret": {"S": MARK}, "blob": {"B": binary}}
        await ddb.put_item(TableName=r.table, Item=item)


def config(tmp_path: Path, endpoint: str, url: str, r: Resources) -> dict[str, Any]:
    """Two functions (a Python handler, the HTTP target with secret headers) and four mappings."""
    on_failure = {"MaximumRetryAttempts": 0, "StartingPosition": "TRIM_HORIZON"}
    partial = {"FunctionResponseTypes": ["ReportBatchItemFailures"]}
    return {
        "aws": {"region": REGION, "endpoint_url": endpoint},
        "state": {"sqlite": str(tmp_path / "state.db")},
        "http": {"listen": "127.0.0.1:0"},
        "shutdown": {"grace_period": 2},
        "metrics": {"queue_attributes_interval": 1},
        "streams": {
            "idle_poll_interval": 0.05,
            "discovery_interval": 1,
            "retry_delay": {"initial": 0.05, "maximum": 0.2},
            "destination_retry_delay": {"initial": 0.05, "maximum": 0.2},
        },
        "functions": {
            "py": {"handler": "sechandlers:handle", "timeout": 2},
            "web": {
                "url": url,
                "timeout": 2,
                "headers": {"Authorization": "Bearer ${ESM_SEC_TOKEN}", "X-Api-Key": "${ESM_SEC_API_KEY}"},
            },
        },
        "event_source_mappings": [
            # BatchSize 1: every message is its own batch, so each fails (or not) its own way.
            {"EventSourceArn": r.arns["py"], "FunctionName": "py", "BatchSize": 1, **partial},
            {"EventSourceArn": r.arns["web"], "FunctionName": "web", "BatchSize": 1, **partial},
            {
                "EventSourceArn": r.arns["stream"],
                "FunctionName": "py",
                "DestinationConfig": {"OnFailure": {"Destination": r.arns["destination"]}},
                **on_failure,
            },
            {
                "EventSourceArn": r.arns["table_stream"],
                "FunctionName": "web",
                "DestinationConfig": {"OnFailure": {"Destination": f"arn:aws:s3:::{r.bucket}"}},
                **on_failure,
            },
        ],
    }


def visible(clients: ClientFactory, url: str, at_least: int = 1) -> Callable[[], Any]:
    """A predicate: the queue holds at least `at_least` visible messages."""

    async def check() -> bool:
        async with clients.client("sqs") as sqs:
            attrs = await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
        return int(attrs["Attributes"]["ApproximateNumberOfMessages"]) >= at_least

    return check


def s3_objects(clients: ClientFactory, bucket: str) -> Callable[[], Any]:
    """A function returning the contents of every object in the bucket (a predicate when awaited)."""

    async def read() -> list[bytes]:
        async with clients.client("s3") as s3:
            keys = [o["Key"] for o in (await s3.list_objects_v2(Bucket=bucket)).get("Contents", [])]
            return [await (await s3.get_object(Bucket=bucket, Key=k))["Body"].read() for k in keys]

    return read


class TestNothingSecretIsLogged:
    """Credentials, header secrets and payloads never reach esm's output, even when everything fails."""

    async def test_logs_metrics_and_readiness_hold_no_secret_and_no_payload(
        self, tmp_path: Path, moto_endpoint: str, clients: ClientFactory
    ) -> None:
        """Marked traffic on every source, failing every way, leaves no trace of a secret or payload in esm's output."""
        r = await create(clients)
        (tmp_path / "sechandlers.py").write_text(HANDLER_MODULE)
        seen = tmp_path / "seen.jsonl"
        async with http_target() as (target, url):
            daemon = Daemon(tmp_path, config(tmp_path, moto_endpoint, url, r), daemon_env(tmp_path))
            try:
                port = await daemon.port()
                await send_traffic(clients, r)
                await wait_for("the handler saw every SQS message and Kinesis record", lambda: seen_count(seen) >= 5)
                await wait_for("the HTTP target got both SQS messages and the DynamoDB batch", target.got_all)
                await wait_for(
                    "a Kinesis failure record reached the SQS destination", visible(clients, r.destination_url)
                )
                await wait_for("a DynamoDB failure reached the S3 destination", s3_objects(clients, r.bucket))
                await wait_for("the failing SQS messages were redriven to the DLQ", visible(clients, r.dlq_url, 2))
                pages = {path: http_get(port, path) for path in ("/metrics", "/readyz", "/healthz")}
            finally:
                code = await daemon.stop() if daemon.proc.poll() is None else daemon.proc.returncode
                daemon.kill()
        assert code == 0, daemon.stderr.read_text()[-3000:]

        # The secrets and payloads did flow: the target got the headers and the marked events.
        headers = [h for h, _ in target.requests]
        assert all(h["Authorization"] == f"Bearer {HEADER_TOKEN}" and h["X-Api-Key"] == API_KEY for h in headers)
        assert all(MARK.encode() in body for _, body in target.requests)
        assert any(MARK.encode() in obj for obj in await s3_objects(clients, r.bucket)())

        # esm said what happened, in JSON lines only, at its default level.
        stdout, stderr = daemon.stdout.read_text(), daemon.stderr.read_text()
        assert stdout == ""
        events = daemon.events()
        logged = {e["event"] for e in events}
        assert {"daemon_started", "handler_failed", "endpoint_failed", "batch_failed", "records_discarded"} <= logged
        assert {e["outcome"] for e in events if e["event"] == "batch_failed"} >= {
            "function_error",
            "partial_failure",
            "invalid_response",
        }
        assert not any(e["level"] == "debug" for e in events)

        # ...and nothing secret.
        for name, text in {"stderr": stderr, "stdout": stdout, **pages}.items():
            assert leaks(text, r.payloads) == [], f"{name} leaks"


class TestMetricsServerBinding:
    """The metrics/health server listens exactly where `http.listen` says, and nowhere else."""

    @pytest.mark.parametrize(
        ("listen", "address", "unreachable"),
        [
            pytest.param("127.0.0.1:0", "127.0.0.1", ["127.0.0.2", "::1"], id="ipv4-loopback"),
            pytest.param("[::1]:0", "::1", ["127.0.0.1"], id="ipv6-loopback"),
        ],
    )
    async def test_one_listening_socket_on_the_configured_address(
        self, tmp_path: Path, listen: str, address: str, unreachable: list[str]
    ) -> None:
        """The process's only listening socket is on the configured address; other local addresses are refused."""
        daemon = Daemon(tmp_path, {"http": {"listen": listen}, "shutdown": {"grace_period": 1}}, daemon_env(tmp_path))
        try:
            port = await daemon.port()
            assert listening_sockets(daemon.proc.pid) == {(address, port)}
            host = f"[{address}]" if ":" in address else address
            assert json.loads(http_get(port, "/healthz", host)) == {"status": "ok"}
            others = [a for a in [*unreachable, *other_local_addresses()] if a != address]
            assert [a for a in others if not refused(a, port)] == []
        finally:
            code = await daemon.stop()
            daemon.kill()
        assert code == 0, daemon.stderr.read_text()

    async def test_an_address_of_another_machine_is_refused_not_replaced(self, tmp_path: Path) -> None:
        """An address this machine does not have stops esm with exit 2 and a log line; it binds nothing else."""
        listen = f"{unassigned_ipv4()}:9100"
        daemon = Daemon(tmp_path, {"http": {"listen": listen}}, daemon_env(tmp_path))
        try:
            code = await asyncio.to_thread(daemon.proc.wait, 60)
        finally:
            daemon.kill()
        assert code == 2
        failed = [e for e in daemon.events() if e["event"] == "http_listen_failed"]
        assert [e["listen"] for e in failed] == [listen]
        assert "cannot assign requested address" in failed[0]["reason"]
        assert not any(e["event"] == "daemon_started" for e in daemon.events())
