"""Target faults: a misbehaving function never stalls the other mappings, and loses nothing once it recovers.

One in-process daemon (`tests.e2e.harness.running_daemon`) runs a healthy SQS mapping beside one
mapping per kind of target fault:

- in-process Python handlers (`tests.e2e.handlers:record`): one that times out, one that raises,
  one that never returns (blocked until the test releases it; the function has 2 threads);
- HTTP targets (`url:`, a small aiohttp endpoint in this test): 503, 429, no answer within the
  function's timeout, and a dropped connection;
- AWS Lambda through the real Invoke API client, on `esm.testing.FakeLambda` (the hand-written fake
  of the Invoke API: no emulator produces these answers, ../shared/TESTING.md): 429
  `TooManyRequestsException`, 500 `ServiceException`, `FunctionError: Unhandled`, a malformed and a
  7 MB non-JSON answer to a `ReportBatchItemFailures` mapping, and 413 for every batch of more than
  one record (split until each record fits);
- a Kinesis mapping (kinesalite) whose handler raises, with an SQS on-failure destination.

While the bad functions misbehave, the healthy mapping processes three waves of messages; the bad
ones show their documented outcome (retry after the visibility timeout, the queue's redrive to its
DLQ, the stream's on-failure destination, split on 413). Then the functions recover and every
message and record is processed (or is in the DLQ / destination where that is the outcome); the
process stays up throughout (/healthz 200) and exits 0.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import threading
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from esm.aws import ClientFactory
from esm.config import AwsConfig
from esm.testing import FakeCall, FakeLambda, FakeReply, serve_app
from tests.conftest import ACCOUNT, REGION, active_stream, unique
from tests.e2e.harness import RECORDER, create_queue, queue_counts, running_daemon
from tests.reliability.observe import get_text, metric_sum, until, watch_health

pytestmark = pytest.mark.e2e

VISIBILITY = 2  # seconds: a failed message is back this soon
PER_QUEUE = 4  # messages sent to each bad mapping's queue while its function is bad
AFTER = 2  # ... and after it recovered
WAVES, PER_WAVE = 3, 10  # the healthy mapping's messages, sent while the others misbehave
HUGE = 7 * 1024 * 1024  # a response larger than Lambda's 6 MB limit


class Faults:
    """Whether the functions misbehave now, and what each one processed successfully."""

    def __init__(self) -> None:
        self.bad = True
        self.release = threading.Event()  # lets the handler that never returns return
        self.lock = threading.Lock()
        self.processed: defaultdict[str, list[str]] = defaultdict(list)  # function -> message bodies
        self.misbehaved: defaultdict[str, int] = defaultdict(int)  # function -> bad invocations

    def ok(self, function: str, bodies: list[str]) -> None:
        with self.lock:
            self.processed[function].extend(bodies)

    def failed(self, function: str) -> None:
        with self.lock:
            self.misbehaved[function] += 1

    def done(self, function: str) -> set[str]:
        with self.lock:
            return set(self.processed[function])


def _bodies(event: dict[str, Any]) -> list[str]:
    out = []
    for r in event.get("Records", []):
        if "body" in r:
            out.append(r["body"])
        else:
            out.append(base64.b64decode(r["kinesis"]["data"]).decode())
    return out


@pytest.fixture(autouse=True)
def _fresh_recorder() -> None:
    RECORDER.calls.clear()
    RECORDER.behaviours.clear()


@pytest.fixture
async def kinesalite(kinesalite_endpoint: str) -> AsyncIterator[Any]:
    """A raw Kinesis client on kinesalite."""
    async with ClientFactory(AwsConfig(region=REGION, endpoint_url=kinesalite_endpoint)).client("kinesis") as c:
        yield c


def _python_behaviours(faults: Faults) -> dict[str, Callable[[dict[str, Any], Any], Any]]:
    """The in-process handlers' behaviours (run by `tests.e2e.handlers:record` in esm's thread pools)."""

    def finished(name: str, event: dict[str, Any], context: Any) -> None:
        # Counted only if the invocation had not timed out meanwhile (esm then no longer waits for it).
        if context.get_remaining_time_in_millis() > 0:
            faults.ok(name, _bodies(event))

    def healthy(event: dict[str, Any], context: Any) -> None:
        finished("healthy", event, context)

    def times_out(event: dict[str, Any], context: Any) -> None:
        if faults.bad:
            faults.failed("py-timeout")
            time.sleep(1.5)  # the function's timeout is 1 s: Sandbox.Timedout
            return
        finished("py-timeout", event, context)

    def raises(event: dict[str, Any], context: Any) -> None:
        if faults.bad:
            faults.failed("py-raises")
            raise RuntimeError("the function is failing")
        finished("py-raises", event, context)

    def never_returns(event: dict[str, Any], context: Any) -> None:
        if faults.bad:
            faults.failed("py-hangs")
            faults.release.wait(60)  # "never" for this test; released when the function recovers
            return
        finished("py-hangs", event, context)

    def stream(event: dict[str, Any], context: Any) -> None:
        if faults.bad:
            faults.failed("stream")
            raise RuntimeError("the stream function is failing")
        finished("stream", event, context)

    return {
        "healthy": healthy,
        "py-timeout": times_out,
        "py-raises": raises,
        "py-hangs": never_returns,
        "stream": stream,
    }


def _http_app(faults: Faults) -> web.Application:
    """The HTTP functions: 503, 429 and a late answer while bad; 200 with `null` once recovered."""

    async def handle(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        event = json.loads(await request.read())
        if faults.bad:
            faults.failed(name)
            if name == "http-5xx":
                return web.Response(status=503, text="unavailable")
            if name == "http-429":
                return web.Response(status=429, text="slow down")
            if name == "http-reset" and request.transport is not None:
                request.transport.abort()  # the connection drops: not a function error, a retried service error
                return web.Response(status=599)
            await asyncio.sleep(1.5)  # http-slow: the function's timeout is 1 s
            return web.Response(status=200, text="null")
        faults.ok(name, _bodies(event))
        return web.Response(status=200, text="null", content_type="application/json")

    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_post("/{name}", handle)
    return app


def _lambda_functions(fake: FakeLambda, faults: Faults) -> None:
    """The Lambda functions on the fake Invoke API."""

    def scripted(name: str, bad: Callable[[], FakeReply]) -> Callable[[Any, FakeCall], FakeReply]:
        def handler(event: Any, call: FakeCall) -> FakeReply:
            if faults.bad:
                faults.failed(name)
                return bad()
            faults.ok(name, _bodies(event))
            return FakeReply.ok({"batchItemFailures": []})

        return handler

    malformed = b'{"batchItemFailures": [{"itemIdentifier": '  # cut off mid-document
    fake.function("lambda-throttle", handler=scripted("lambda-throttle", FakeReply.throttle))
    fake.function("lambda-5xx", handler=scripted("lambda-5xx", FakeReply.service_error))
    fake.function(
        "lambda-unhandled",
        handler=scripted(
            "lambda-unhandled",
            lambda: FakeReply.function_error({"errorMessage": "boom", "errorType": "Error", "stackTrace": []}),
        ),
    )
    fake.function("lambda-malformed", handler=scripted("lambda-malformed", lambda: FakeReply(200, malformed)))
    fake.function("lambda-huge", handler=scripted("lambda-huge", lambda: FakeReply(200, b"x" * HUGE)))

    def split(event: Any, call: FakeCall) -> FakeReply:
        if len(event["Records"]) > 1:
            faults.failed("lambda-split")
            return FakeReply.too_large()
        faults.ok("lambda-split", _bodies(event))
        return FakeReply.ok(None)

    fake.function("lambda-split", handler=split)


class TestTargetFaults:
    """Every kind of bad function at once, beside a healthy one, in one daemon."""

    async def test_a_bad_function_never_stalls_the_others_and_loses_nothing(
        self,
        tmp_path: Path,
        moto_endpoint: str,
        kinesalite_endpoint: str,
        sqs: Any,
        kinesalite: Any,
        figures: Callable[[str], None],
    ) -> None:
        """The healthy mapping finishes while the others misbehave; after recovery nothing is missing."""
        faults = Faults()
        RECORDER.behaviours.update(_python_behaviours(faults))
        python_fns = {"py-timeout": 1, "py-raises": 1, "py-hangs": 1}
        http_fns = ["http-5xx", "http-429", "http-slow", "http-reset"]
        lambda_fns = ["lambda-throttle", "lambda-5xx", "lambda-unhandled", "lambda-malformed", "lambda-huge"]
        with_dlq = {"py-raises", "lambda-unhandled"}  # redrive after 2 receives: the DLQ is their outcome
        report_failures = {"lambda-malformed", "lambda-huge"}
        bad = [*python_fns, *http_fns, *lambda_fns]

        queues: dict[str, tuple[str, str]] = {}
        dlqs: dict[str, str] = {}
        for name in [*bad, "lambda-split"]:
            attributes: dict[str, Any] = {"VisibilityTimeout": VISIBILITY}
            if name in with_dlq:
                dlq_url, dlq_arn = await create_queue(sqs, unique(f"{name}-dlq"))
                dlqs[name] = dlq_url
                attributes["RedrivePolicy"] = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2}
            queues[name] = await create_queue(sqs, unique(name), **attributes)
        healthy_url, healthy_arn = await create_queue(sqs, unique("healthy"), VisibilityTimeout=10)
        dest_url, dest_arn = await create_queue(sqs, unique("stream-dest"))
        stream = unique("bad-stream")
        await kinesalite.create_stream(StreamName=stream, ShardCount=1)
        desc = await active_stream(kinesalite, stream)

        sent: defaultdict[str, list[str]] = defaultdict(list)

        async def send(name: str, count: int, tag: str) -> None:
            for i in range(count):
                body = f"{name}:{tag}{i}"
                await sqs.send_message(QueueUrl=queues[name][0], MessageBody=body)
                sent[name].append(body)

        async def put(count: int, tag: str) -> None:
            for i in range(count):
                data = f"stream:{tag}{i}"
                await kinesalite.put_record(StreamName=stream, Data=data.encode(), PartitionKey="k")
                sent["stream"].append(data)

        for name in [*bad, "lambda-split"]:
            await send(name, PER_QUEUE, "pre")
        await put(PER_QUEUE, "pre")

        servers = contextlib.AsyncExitStack()
        http_url = await servers.enter_async_context(serve_app(_http_app(faults)))
        health: list[int] = []
        stop_watching = asyncio.Event()
        port: int | None = None
        watcher: asyncio.Task[None] | None = None
        try:
            async with FakeLambda(region=REGION, account=ACCOUNT) as fake:
                _lambda_functions(fake, faults)
                handler = "tests.e2e.handlers:record"
                functions: dict[str, Any] = {
                    "healthy": {"handler": handler, "timeout": 3},
                    "stream": {"handler": handler, "timeout": 3},
                    **{n: {"handler": handler, "timeout": t, "max_threads": 2} for n, t in python_fns.items()},
                    **{n: {"url": f"{http_url}/{n}", "timeout": 1} for n in http_fns},
                    **{n: {"lambda": fake.arn(n), "timeout": 1} for n in [*lambda_fns, "lambda-split"]},
                }
                mappings: list[dict[str, Any]] = [
                    {"EventSourceArn": healthy_arn, "FunctionName": "healthy", "BatchSize": 5},
                    *(
                        {
                            "EventSourceArn": queues[n][1],
                            "FunctionName": n,
                            "BatchSize": 4 if n == "lambda-split" else 2,
                            "ScalingConfig": {"MaximumConcurrency": 2},
                            **({"FunctionResponseTypes": ["ReportBatchItemFailures"]} if n in report_failures else {}),
                        }
                        for n in [*bad, "lambda-split"]
                    ),
                    {
                        "EventSourceArn": desc["StreamARN"],
                        "FunctionName": "stream",
                        "StartingPosition": "TRIM_HORIZON",
                        "MaximumRetryAttempts": 1,
                        "DestinationConfig": {"OnFailure": {"Destination": dest_arn}},
                    },
                ]
                config = {
                    "aws": {
                        "region": REGION,
                        "endpoint_url": moto_endpoint,
                        "endpoints": {"lambda": fake.endpoint, "kinesis": kinesalite_endpoint},
                    },
                    "state": {"sqlite": str(tmp_path / "state.db")},
                    "streams": {"idle_poll_interval": 0.1, "retry_delay": {"initial": 0.2, "maximum": 1}},
                    "functions": functions,
                    "event_source_mappings": mappings,
                }
                async with running_daemon(tmp_path, config) as daemon:
                    port = daemon.http_port
                    watcher = asyncio.create_task(watch_health(lambda: port, health, stop_watching))

                    # ---- the bad phase: every bad function has misbehaved, and goes on (the flag stays
                    # set, the hung handler stays hung) while the healthy mapping processes every wave
                    await until(
                        lambda: all(faults.misbehaved[n] >= 1 for n in bad),
                        30,
                        lambda: f"misbehaved: {dict(faults.misbehaved)}",
                    )
                    healthy_sent: list[str] = []
                    for wave in range(WAVES):
                        bodies = [f"healthy:{wave}-{i}" for i in range(PER_WAVE)]
                        for body in bodies:
                            await sqs.send_message(QueueUrl=healthy_url, MessageBody=body)
                        healthy_sent.extend(bodies)
                        await until(lambda: faults.done("healthy") >= set(healthy_sent), 30)
                    await put(2, "bad")

                    def outcomes_shown() -> bool:
                        return all(faults.misbehaved[n] >= 2 for n in [*bad, "stream"])

                    async def in_dlqs() -> bool:
                        counts = [await queue_counts(sqs, url) for url in dlqs.values()]
                        return all(visible == PER_QUEUE for visible, _ in counts)

                    async def outcomes_and_dlqs() -> bool:
                        return outcomes_shown() and await in_dlqs()

                    await until(outcomes_and_dlqs, 40, lambda: f"misbehaved: {dict(faults.misbehaved)}")
                    healthy_while_bad = faults.done("healthy") >= set(healthy_sent)
                    bad_phase_metrics = await get_text(port, "/metrics")
                    hung_threads = [t.name for t in threading.enumerate() if t.name.startswith("esm-fn-py-hangs")]
                    assert not daemon.stop_requested.is_set()

                    # ---- recovery: everything still owed is processed
                    faults.bad = False
                    faults.release.set()
                    for name in [*bad, "lambda-split"]:
                        await send(name, AFTER, "post")
                    await put(AFTER, "post")

                    def owed(name: str) -> set[str]:
                        expected = set(sent[name])
                        if name in with_dlq:
                            expected = {b for b in expected if ":post" in b}
                        if name == "stream":
                            expected = {b for b in expected if ":post" in b}
                        return expected - faults.done(name)

                    names = [*bad, "lambda-split", "stream"]
                    await until(
                        lambda: not any(owed(n) for n in names), 40, lambda: {n: owed(n) for n in names if owed(n)}
                    )

                    async def drained() -> bool:
                        counts = [await queue_counts(sqs, queues[n][0]) for n in [*bad, "lambda-split"]]
                        return all(c == (0, 0) for c in counts)

                    await until(drained, 20)
                    metrics = await get_text(port, "/metrics")
                    stop_watching.set()
                    await watcher  # before the daemon stops serving /healthz
                    destination = await _drain(sqs, dest_url)
                    dlq_bodies = {n: {m["Body"] for m in await _drain(sqs, url)} for n, url in dlqs.items()}
        finally:
            faults.release.set()  # never leave a handler thread blocked behind the test
            stop_watching.set()
            if watcher is not None:
                await watcher
            await servers.aclose()

        # ---- while the bad functions misbehaved, the healthy one processed all it was given
        assert healthy_while_bad
        # ... and deleted nothing of the bad ones (their messages wait for the retry or the DLQ)
        deleted = {n: metric_sum(bad_phase_metrics, "esm_deleted_events_total", function_name=n) for n in bad}
        assert deleted == dict.fromkeys(bad, 0), deleted
        assert len(hung_threads) <= 2, hung_threads  # the stuck handlers never took more than their pool
        assert health, "/healthz was never read"
        assert set(health) == {200}, health
        # ---- the documented outcome of each
        for name in bad:
            if name in with_dlq:  # redriven: the messages of the bad phase are in the DLQ, unchanged
                assert dlq_bodies[name] == {b for b in sent[name] if ":pre" in b}
            else:  # retried after the visibility timeout until the function recovered
                assert faults.done(name) == set(sent[name])
        assert faults.done("lambda-split") == set(sent["lambda-split"])  # split down to single records
        reported = sum(d["KinesisBatchInfo"]["batchSize"] for d in destination)
        stream_pre = {b for b in sent["stream"] if ":post" not in b}
        assert reported + len(stream_pre & faults.done("stream")) >= len(stream_pre)
        assert {b for b in sent["stream"] if ":post" in b} <= faults.done("stream")
        assert destination, "the failing stream batches went nowhere"
        # ---- and in esm's metrics
        throttle = "lambda-throttle"
        assert metric_sum(metrics, "esm_invocations_total", function_name=throttle, outcome="throttled") > 0
        assert metric_sum(metrics, "esm_invocations_total", function_name=throttle, outcome="function_error") == 0
        split_count = metric_sum(
            metrics, "esm_invocations_total", function_name="lambda-split", outcome="payload_too_large"
        )
        assert split_count > 0
        for name in [*python_fns, "http-5xx", "http-429", "http-slow", "lambda-unhandled"]:
            assert metric_sum(metrics, "esm_invocations_total", function_name=name, outcome="function_error") > 0
        for name in ("lambda-5xx", "http-reset"):
            assert metric_sum(metrics, "esm_invocations_total", function_name=name, outcome="service_error") > 0
            assert metric_sum(metrics, "esm_invocations_total", function_name=name, outcome="function_error") == 0
        # With both threads of py-hangs stuck, later invocations waited for a thread and timed out too.
        hangs = metric_sum(metrics, "esm_invocations_total", function_name="py-hangs", outcome="function_error")
        assert hangs > faults.misbehaved["py-hangs"]
        for name in bad:
            assert metric_sum(metrics, "esm_failed_invoke_events_total", function_name=name) > 0
        assert metric_sum(metrics, "esm_on_failure_destination_delivered_events_total", function_name="stream") > 0

        figures(
            "target faults: healthy mapping processed "
            f"{len(faults.done('healthy'))}/{WAVES * PER_WAVE} while "
            f"{len(bad) + 1} bad functions misbehaved "
            f"({sum(faults.misbehaved.values())} bad invocations: "
            f"{', '.join(f'{n} {c}' for n, c in sorted(faults.misbehaved.items()))}); "
            f"after recovery every message processed, {sum(len(v) for v in dlq_bodies.values())} in DLQs, "
            f"{reported} stream records reported to the destination; hung threads <= {len(hung_threads)}"
        )


async def _drain(sqs: Any, url: str) -> list[dict[str, Any]]:
    """Every message of a queue (read directly on moto), parsed when it is JSON."""
    out: list[dict[str, Any]] = []
    while True:
        messages = (await sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0)).get(
            "Messages", []
        )
        if not messages:
            return out
        for m in messages:
            try:
                body = json.loads(m["Body"])
            except ValueError:
                body = None
            out.append(body if isinstance(body, dict) else m)
        await sqs.delete_message_batch(
            QueueUrl=url, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)]
        )
