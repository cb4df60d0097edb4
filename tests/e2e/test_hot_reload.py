"""Hot reload end to end: the real daemon on moto applies a new configuration file per mapping (issue #5).

Mappings that were added start, removed ones stop after their in-flight batch, changed ones restart
with their new settings, and every other mapping keeps its very task. An invalid file changes
nothing. A reload comes from `Daemon.reload()`, from the watcher noticing new content (a plain
rewrite or a Kubernetes-style `..data` symlink swap), or from SIGHUP to a real `esm run` process.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest
from structlog.testing import capture_logs

from esm.config import MappingConfig, load_config
from esm.daemon import Daemon
from esm.health import MappingState
from tests.conftest import REGION, unique
from tests.e2e.harness import RECORDER, create_queue, queue_counts, running_daemon, wait_for, write_config

pytestmark = pytest.mark.e2e
HANDLER = "tests.e2e.handlers:record"


@pytest.fixture(autouse=True)
def _fresh_recorder() -> Iterator[None]:
    RECORDER.behaviours.clear()
    RECORDER.calls.clear()
    yield
    RECORDER.behaviours.clear()


def config(endpoint: str, mappings: list[dict[str, Any]], timeout: float = 10, **extra: Any) -> dict[str, Any]:
    """A configuration with the recording handler under every function name the mappings use."""
    names = {m["FunctionName"] for m in mappings}
    return {
        "aws": {"region": REGION, "endpoint_url": endpoint},
        "http": {"listen": "127.0.0.1:0"},
        "shutdown": {"grace_period": 5},
        "functions": {n: {"handler": HANDLER, "timeout": timeout} for n in sorted(names)},
        "event_source_mappings": mappings,
        **extra,
    }


def uuid_of(mapping: dict[str, Any]) -> str:
    """The UUID the daemon derives for a mapping entry."""
    return MappingConfig.model_validate(mapping).uuid


def series(daemon: Daemon, name: str) -> list[str]:
    """The exposition lines of one metric family."""
    return [line for line in generate_latest(daemon.registry).decode().splitlines() if line.startswith(name)]


def blocking(release: threading.Event) -> Any:
    """A handler behaviour that holds its batch until the test releases it."""

    def behaviour(event: dict[str, Any], context: Any) -> None:
        release.wait(15)

    return behaviour


@contextlib.asynccontextmanager
async def daemon_at(path: Path) -> AsyncIterator[Daemon]:
    """Run the daemon for the configuration file at `path` (which may be a symlink); stop it after."""
    daemon = Daemon(load_config(path))
    task = asyncio.create_task(daemon.run())
    started = asyncio.create_task(daemon.started.wait())
    done, _ = await asyncio.wait({task, started}, timeout=20, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        started.cancel()
        raise AssertionError(f"daemon exited during startup with {task.result()}")
    try:
        yield daemon
    finally:
        if not daemon.stop_requested.is_set():
            daemon.request_stop()
        assert await asyncio.wait_for(task, 30) == 0


class TestMappingsFollowTheFile:
    """Added mappings start, removed ones stop, changed ones restart; the rest are not touched."""

    async def test_added_mapping_starts_delivering(self, sqs: Any, moto_endpoint: str, tmp_path: Path) -> None:
        """A mapping added to the file starts; the mapping that was there keeps its task."""
        _, arn_a = await create_queue(sqs, unique("add-a"))
        url_b, arn_b = await create_queue(sqs, unique("add-b"))
        a = {"EventSourceArn": arn_a, "FunctionName": unique("fa")}
        b = {"EventSourceArn": arn_b, "FunctionName": unique("fb")}
        await sqs.send_message(QueueUrl=url_b, MessageBody="for b")
        async with running_daemon(tmp_path, config(moto_endpoint, [a])) as daemon:
            task_a = daemon.tasks[uuid_of(a)]
            write_config(tmp_path, config(moto_endpoint, [a, b]))
            diff = await daemon.reload()
            assert diff is not None
            assert diff.counts == {"added": 1, "removed": 0, "changed": 0, "unchanged": 1}
            await wait_for(lambda: RECORDER.bodies_of(b["FunctionName"]) == ["for b"])
            assert daemon.tasks[uuid_of(a)] is task_a
            assert [h.uuid for h in daemon.health] == [uuid_of(a), uuid_of(b)]
            assert 'esm_config_reloads_total{outcome="applied"} 1.0' in series(daemon, "esm_config_reloads_total")
        assert await queue_counts(sqs, url_b) == (0, 0)

    async def test_removed_mapping_finishes_its_in_flight_batch_and_stops(
        self, sqs: Any, moto_endpoint: str, tmp_path: Path
    ) -> None:
        """The removed mapping's running batch completes and is deleted; its health and metrics go away."""
        url_a, arn_a = await create_queue(sqs, unique("rm-a"))
        _, arn_b = await create_queue(sqs, unique("rm-b"))
        a = {"EventSourceArn": arn_a, "FunctionName": unique("fa")}
        b = {"EventSourceArn": arn_b, "FunctionName": unique("fb")}
        release = threading.Event()
        RECORDER.behaviours[a["FunctionName"]] = blocking(release)
        await sqs.send_message(QueueUrl=url_a, MessageBody="in flight")
        async with running_daemon(tmp_path, config(moto_endpoint, [a, b])) as daemon:
            await wait_for(lambda: len(RECORDER.calls_of(a["FunctionName"])) == 1)
            task_a, task_b = daemon.tasks[uuid_of(a)], daemon.tasks[uuid_of(b)]
            write_config(tmp_path, config(moto_endpoint, [b]))
            reload = asyncio.create_task(daemon.reload())
            await wait_for(lambda: daemon.health[0].state is MappingState.STOPPING)
            assert not reload.done(), "the reload waits for the in-flight batch"
            release.set()
            diff = await reload
            assert diff is not None
            assert diff.removed == (uuid_of(a),)
            assert task_a.done()
            assert not task_a.cancelled()
            assert RECORDER.calls_of(a["FunctionName"])[0].ended > 0
            assert daemon.tasks == {uuid_of(b): task_b}
            assert [h.uuid for h in daemon.health] == [uuid_of(b)]
            assert not [line for line in series(daemon, "esm_") if uuid_of(a) in line]
            assert [line for line in series(daemon, "esm_mapping_up") if uuid_of(b) in line]
        assert await queue_counts(sqs, url_a) == (0, 0)

    async def test_changed_mapping_restarts_while_an_unchanged_one_keeps_delivering(
        self, sqs: Any, moto_endpoint: str, tmp_path: Path
    ) -> None:
        """BatchSize 10 -> 1 restarts A; B keeps its task and delivers while A drains, nothing twice."""
        url_a, arn_a = await create_queue(sqs, unique("chg-a"), VisibilityTimeout=6)
        url_b, arn_b = await create_queue(sqs, unique("chg-b"), VisibilityTimeout=6)
        a = {"EventSourceArn": arn_a, "FunctionName": unique("fa"), "BatchSize": 10}
        b = {"EventSourceArn": arn_b, "FunctionName": unique("fb")}
        release = threading.Event()
        RECORDER.behaviours[a["FunctionName"]] = blocking(release)
        await sqs.send_message(QueueUrl=url_a, MessageBody="old-0")
        async with running_daemon(tmp_path, config(moto_endpoint, [a, b], timeout=5)) as daemon:
            await sqs.send_message(QueueUrl=url_b, MessageBody="b-before")
            await wait_for(lambda: len(RECORDER.calls_of(a["FunctionName"])) == 1)
            await wait_for(lambda: RECORDER.bodies_of(b["FunctionName"]) == ["b-before"])
            task_a, task_b = daemon.tasks[uuid_of(a)], daemon.tasks[uuid_of(b)]
            write_config(tmp_path, config(moto_endpoint, [{**a, "BatchSize": 1}, b], timeout=5))
            reload = asyncio.create_task(daemon.reload())
            await wait_for(lambda: daemon.health[0].state is MappingState.STOPPING)
            # While A drains its batch, B receives and delivers new messages: it never paused.
            await sqs.send_message(QueueUrl=url_b, MessageBody="b-during")
            await wait_for(lambda: RECORDER.bodies_of(b["FunctionName"]) == ["b-before", "b-during"])
            assert not reload.done()
            release.set()
            diff = await reload
            assert diff is not None
            assert diff.changed == (uuid_of(a),)
            assert dict(diff.reasons) == {uuid_of(a): ("BatchSize",)}
            assert daemon.tasks[uuid_of(b)] is task_b
            assert daemon.tasks[uuid_of(a)] is not task_a
            for i in range(4):
                await sqs.send_message(QueueUrl=url_a, MessageBody=f"new-{i}")
            await sqs.send_message(QueueUrl=url_b, MessageBody="b-after")
            # A long poll the old runner abandoned may still be handed some of these by the queue: they
            # come back after the (short) visibility timeout, and are delivered once.
            await wait_for(lambda: len(RECORDER.bodies_of(a["FunctionName"])) == 5)
            await wait_for(lambda: len(RECORDER.bodies_of(b["FunctionName"])) == 3)
        new_calls = RECORDER.calls_of(a["FunctionName"])[1:]
        assert sorted(b for c in new_calls for b in c.bodies) == [f"new-{i}" for i in range(4)]
        assert all(len(c.bodies) == 1 for c in new_calls), "the new BatchSize applies"
        assert RECORDER.bodies_of(b["FunctionName"]) == ["b-before", "b-during", "b-after"]
        assert await queue_counts(sqs, url_a) == (0, 0)
        assert await queue_counts(sqs, url_b) == (0, 0)

    async def test_stream_mapping_is_untouched_by_an_unrelated_change(
        self, sqs: Any, kinesis: Any, moto_endpoint: str, tmp_path: Path
    ) -> None:
        """Changing an SQS mapping leaves a Kinesis mapping's task and shard position alone: no record twice."""
        _, arn_q = await create_queue(sqs, unique("kin-q"))
        name = unique("kin")
        await kinesis.create_stream(StreamName=name, ShardCount=1)
        arn_s = (await kinesis.describe_stream_summary(StreamName=name))["StreamDescriptionSummary"]["StreamARN"]
        q = {"EventSourceArn": arn_q, "FunctionName": unique("fq")}
        s = {"EventSourceArn": arn_s, "FunctionName": unique("fs"), "StartingPosition": "TRIM_HORIZON"}
        extra = {"state": {"sqlite": str(tmp_path / "state.db")}, "streams": {"idle_poll_interval": 0.05}}

        def delivered() -> list[str]:
            return [
                base64.b64decode(r["kinesis"]["data"]).decode()
                for c in RECORDER.calls_of(s["FunctionName"])
                for r in c.event["Records"]
            ]

        async with running_daemon(tmp_path, config(moto_endpoint, [q, s], **extra)) as daemon:
            await kinesis.put_record(StreamName=name, Data=b"r0", PartitionKey="k")
            await wait_for(lambda: delivered() == ["r0"])
            task_s = daemon.tasks[uuid_of(s)]
            write_config(tmp_path, config(moto_endpoint, [{**q, "BatchSize": 3}, s], **extra))
            diff = await daemon.reload()
            assert diff is not None
            assert diff.changed == (uuid_of(q),)
            assert diff.unchanged == (uuid_of(s),)
            assert daemon.tasks[uuid_of(s)] is task_s
            await kinesis.put_record(StreamName=name, Data=b"r1", PartitionKey="k")
            await wait_for(lambda: delivered() == ["r0", "r1"])


class TestInvalidFile:
    """A file that does not validate is rejected as a whole; everything keeps running as it was."""

    async def test_invalid_file_changes_nothing(self, sqs: Any, moto_endpoint: str, tmp_path: Path) -> None:
        """`reload_rejected` names the file and every problem; the old mapping keeps its task and works."""
        url_a, arn_a = await create_queue(sqs, unique("bad-a"))
        _, arn_b = await create_queue(sqs, unique("bad-b"))
        a = {"EventSourceArn": arn_a, "FunctionName": unique("fa")}
        b = {"EventSourceArn": arn_b, "FunctionName": unique("fb")}
        async with running_daemon(tmp_path, config(moto_endpoint, [a])) as daemon:
            task_a = daemon.tasks[uuid_of(a)]
            path = write_config(
                tmp_path, {**config(moto_endpoint, [{**a, "BatchSize": 0}, b]), "http": {"listen": "nowhere"}}
            )
            with capture_logs() as logs:
                assert await daemon.reload() is None
            rejected = [e for e in logs if e["event"] == "reload_rejected"]
            assert len(rejected) == 1
            assert rejected[0]["log_level"] == "error"
            assert rejected[0]["file"] == str(path)
            problems = rejected[0]["problems"]
            assert len(problems) == 2
            assert problems[0].startswith(f"{path}: http.listen: must be HOST:PORT")
            assert problems[1].startswith(f"{path}: event_source_mappings.0.BatchSize: 1 validation error detected")
            assert daemon.tasks == {uuid_of(a): task_a}
            assert 'esm_config_reloads_total{outcome="rejected"} 1.0' in series(daemon, "esm_config_reloads_total")
            assert series(daemon, "esm_config_last_reload_successful ") == ["esm_config_last_reload_successful 0.0"]
            await sqs.send_message(QueueUrl=url_a, MessageBody="still served")
            await wait_for(lambda: RECORDER.bodies_of(a["FunctionName"]) == ["still served"])
            write_config(tmp_path, config(moto_endpoint, [a]))  # the file is mended
            assert await daemon.reload() is not None
            assert series(daemon, "esm_config_last_reload_successful ") == ["esm_config_last_reload_successful 1.0"]

    async def test_mapping_that_fails_preflight_is_not_started_and_the_daemon_stays(
        self, sqs: Any, moto_endpoint: str, tmp_path: Path
    ) -> None:
        """A function timeout above the queue's visibility timeout: logged, unhealthy, not started, no exit."""
        _, arn_a = await create_queue(sqs, unique("pf-a"))
        _, arn_b = await create_queue(sqs, unique("pf-b"), VisibilityTimeout=5)
        a = {"EventSourceArn": arn_a, "FunctionName": unique("fa")}
        b = {"EventSourceArn": arn_b, "FunctionName": unique("fb")}
        async with running_daemon(tmp_path, config(moto_endpoint, [a])) as daemon:
            task_a = daemon.tasks[uuid_of(a)]
            write_config(tmp_path, config(moto_endpoint, [a, b]))  # function timeout 10 > 5
            with capture_logs() as logs:
                assert await daemon.reload() is not None
            failed = [e for e in logs if e["event"] == "mapping_not_started"]
            assert [e["mapping"] for e in failed] == [uuid_of(b)]
            assert (
                "Queue visibility timeout: 5 seconds is less than Function timeout: 10 seconds" in failed[0]["reason"]
            )
            assert daemon.tasks == {uuid_of(a): task_a}
            assert daemon.health[1].state is MappingState.UNHEALTHY
            states = {
                line.split('state="')[1].split('"')[0]
                for line in series(daemon, "esm_mapping_state{")
                if f'event_source_mapping_uuid="{uuid_of(b)}"' in line and line.endswith(" 1.0")
            }
            assert states == {"unhealthy"}


class TestWatcher:
    """Without any signal, new content of the file is noticed within `reload.interval`."""

    async def test_rewritten_file_is_applied(self, sqs: Any, moto_endpoint: str, tmp_path: Path) -> None:
        """Writing the file is enough: the added mapping starts delivering."""
        _, arn_a = await create_queue(sqs, unique("w-a"))
        url_b, arn_b = await create_queue(sqs, unique("w-b"))
        a = {"EventSourceArn": arn_a, "FunctionName": unique("fa")}
        b = {"EventSourceArn": arn_b, "FunctionName": unique("fb")}
        fast = {"reload": {"watch": True, "interval": 0.2}}
        await sqs.send_message(QueueUrl=url_b, MessageBody="noticed")
        async with running_daemon(tmp_path, config(moto_endpoint, [a], **fast)) as daemon:
            task_a = daemon.tasks[uuid_of(a)]
            write_config(tmp_path, config(moto_endpoint, [a, b], **fast))
            await wait_for(lambda: RECORDER.bodies_of(b["FunctionName"]) == ["noticed"])
            assert daemon.tasks[uuid_of(a)] is task_a

    async def test_kubernetes_configmap_symlink_swap_is_applied(
        self, sqs: Any, moto_endpoint: str, tmp_path: Path
    ) -> None:
        """`config.yaml -> ..data/config.yaml`, `..data` swapped atomically to a new folder: applied."""
        _, arn_a = await create_queue(sqs, unique("k8s-a"))
        url_b, arn_b = await create_queue(sqs, unique("k8s-b"))
        a = {"EventSourceArn": arn_a, "FunctionName": unique("fa")}
        b = {"EventSourceArn": arn_b, "FunctionName": unique("fb")}
        fast = {"reload": {"watch": True, "interval": 0.2}}
        mount = tmp_path / "mount"
        mount.mkdir()
        for folder, mappings in (("..2026_01", [a]), ("..2026_02", [a, b])):
            (mount / folder).mkdir()
            (mount / folder / "config.yaml").write_text(yaml.safe_dump(config(moto_endpoint, mappings, **fast)))
        (mount / "..data").symlink_to("..2026_01")
        (mount / "config.yaml").symlink_to("..data/config.yaml")
        await sqs.send_message(QueueUrl=url_b, MessageBody="swapped")
        async with daemon_at(mount / "config.yaml") as daemon:
            task_a = daemon.tasks[uuid_of(a)]
            (mount / "..data_tmp").symlink_to("..2026_02")
            os.replace(mount / "..data_tmp", mount / "..data")
            await wait_for(lambda: RECORDER.bodies_of(b["FunctionName"]) == ["swapped"])
            assert daemon.tasks[uuid_of(a)] is task_a


class TestStopDuringReload:
    """SIGTERM while a reload waits for a removed mapping's batch still shuts down cleanly."""

    async def test_stop_requested_mid_reload_exits_0_and_finishes_the_batch(
        self, sqs: Any, moto_endpoint: str, tmp_path: Path
    ) -> None:
        """The reload gives up at once; shutdown drains the batch within the grace period; exit code 0."""
        url_a, arn_a = await create_queue(sqs, unique("stop-a"))
        url_b, arn_b = await create_queue(sqs, unique("stop-b"))
        a = {"EventSourceArn": arn_a, "FunctionName": unique("fa")}
        b = {"EventSourceArn": arn_b, "FunctionName": unique("fb")}
        release = threading.Event()
        RECORDER.behaviours[a["FunctionName"]] = blocking(release)
        await sqs.send_message(QueueUrl=url_a, MessageBody="draining")
        await sqs.send_message(QueueUrl=url_b, MessageBody="never started")
        async with daemon_at(write_config(tmp_path, config(moto_endpoint, [a]))) as daemon:
            await wait_for(lambda: len(RECORDER.calls_of(a["FunctionName"])) == 1)
            write_config(tmp_path, config(moto_endpoint, [b]))
            reload = asyncio.create_task(daemon.reload())
            await wait_for(lambda: daemon.health[0].state is MappingState.STOPPING)
            daemon.request_stop()
            assert await reload is None
            release.set()
        # daemon_at asserted exit code 0 on leaving the block.
        assert RECORDER.calls_of(a["FunctionName"])[0].ended > 0
        assert await queue_counts(sqs, url_a) == (0, 0)
        assert RECORDER.calls_of(b["FunctionName"]) == []
        assert await queue_counts(sqs, url_b) == (1, 0)


_HANDLER = textwrap.dedent(
    """
    from pathlib import Path

    LOG = Path(__file__).with_name("calls.log")

    def handle(event, context):
        with LOG.open("a") as f:
            for r in event["Records"]:
                f.write(context.function_name + " " + r["body"] + "\\n")
    """
)


def _spawn(config: Path) -> subprocess.Popen[bytes]:
    """Start `esm run` with its JSON logs going to `stderr.log` beside the config."""
    with (config.parent / "stderr.log").open("wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "esm", "run", "--config", str(config), "--log-format", "json"],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


class TestSighup:
    """A real `esm run` process reloads on SIGHUP (with the watcher off) and still exits 0 on SIGTERM."""

    async def test_sighup_applies_the_new_file(self, sqs: Any, moto_endpoint: str, tmp_path: Path) -> None:
        """The mapping added to the file starts after SIGHUP; `config_reloaded` reports the counts."""
        (tmp_path / "hup_handler.py").write_text(_HANDLER)
        url_a, arn_a = await create_queue(sqs, unique("hup-a"))
        url_b, arn_b = await create_queue(sqs, unique("hup-b"))
        base = {
            "aws": {"region": REGION, "endpoint_url": moto_endpoint},
            "http": {"listen": "127.0.0.1:0"},
            "shutdown": {"grace_period": 5},
            "reload": {"watch": False},
            "functions": {"fa": {"handler": "hup_handler:handle", "timeout": 5}},
        }
        path = write_config(
            tmp_path, {**base, "event_source_mappings": [{"EventSourceArn": arn_a, "FunctionName": "fa"}]}
        )
        log, stderr = tmp_path / "calls.log", tmp_path / "stderr.log"
        proc = _spawn(path)
        try:
            await sqs.send_message(QueueUrl=url_a, MessageBody="one")
            await wait_for(lambda: log.exists() and "fa one" in log.read_text(), within=15)
            mappings = [
                {"EventSourceArn": arn_a, "FunctionName": "fa"},
                {"EventSourceArn": arn_b, "FunctionName": "fa"},
            ]
            write_config(tmp_path, {**base, "event_source_mappings": mappings})
            await sqs.send_message(QueueUrl=url_b, MessageBody="two")
            proc.send_signal(signal.SIGHUP)
            await wait_for(lambda: "fa two" in log.read_text(), within=15)
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(proc.wait, 15)
        finally:
            if proc.poll() is None:
                proc.kill()
        text = stderr.read_text()
        assert code == 0, text[-2000:]
        reloaded = [line for line in text.splitlines() if '"event": "config_reloaded"' in line]
        assert len(reloaded) == 1
        assert '"added": 1' in reloaded[0]
        assert '"unchanged": 1' in reloaded[0]
        assert log.read_text().splitlines() == ["fa one", "fa two"]
        assert await queue_counts(sqs, url_b) == (0, 0)
