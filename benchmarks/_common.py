"""What the benchmark cases share: emulators in their own processes, CPU and memory readings, the machine.

Every case measures CPU time rather than wall time where it can (the machine may be shared), runs
its contenders alternately and reports medians, and prints each goal of issue 7 with whether this
run met it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REGION = "us-east-1"
REPO_ROOT = Path(__file__).resolve().parents[1]
KINESALITE = REPO_ROOT / ".kinesalite" / "node_modules" / "kinesalite"
_KINESALITE_SCRIPT = (
    "const s = require(process.argv[1])({createStreamMs: 0, deleteStreamMs: 0, updateStreamMs: 0,"
    " shardLimit: Number(process.argv[2])});"
    "s.listen(0, '127.0.0.1', () => console.log(s.address().port));"
)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")  # the emulators accept any credentials
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")


def free_port() -> int:
    """A free loopback TCP port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Emulator:
    """An emulator process: its endpoint and process id (to read its CPU)."""

    def __init__(self, endpoint: str, proc: subprocess.Popen[bytes]) -> None:
        self.endpoint = endpoint
        self.proc = proc

    @property
    def pid(self) -> int:
        """The emulator's process id."""
        return self.proc.pid


@contextlib.contextmanager
def moto_process() -> Iterator[Emulator]:
    """A moto server in its own process, so that its CPU is not charged to the contenders.

    Its server (werkzeug's) closes the connection after every response, so each call opens a new TCP
    connection, in every contender alike; AWS keeps connections alive.
    """
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("moto server did not start")
            time.sleep(0.1)
        yield Emulator(f"http://127.0.0.1:{port}", proc)
    finally:
        proc.terminate()
        proc.wait(10)


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """A moto server in its own process; yields its endpoint."""
    with moto_process() as emulator:
        yield emulator.endpoint


@contextlib.contextmanager
def kinesalite_process(workdir: Path, shard_limit: int = 100) -> Iterator[Emulator]:
    """kinesalite (../shared/TESTING.md) in its own Node.js process on a free loopback port."""
    if not KINESALITE.exists():
        raise SystemExit(f"kinesalite is not installed at {KINESALITE}: run `make kinesalite`")
    out = workdir / f"kinesalite-{time.time_ns()}.port"
    with out.open("w") as port_file:
        proc = subprocess.Popen(
            ["node", "-e", _KINESALITE_SCRIPT, str(KINESALITE), str(shard_limit)],
            stdout=port_file,
            stderr=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + 15
        while not out.read_text().strip():
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("kinesalite did not start")
            time.sleep(0.05)
        yield Emulator(f"http://127.0.0.1:{out.read_text().strip()}", proc)
    finally:
        proc.terminate()
        proc.wait(10)


@contextlib.contextmanager
def kinesalite_server(workdir: Path, shard_limit: int = 100) -> Iterator[str]:
    """kinesalite in its own process; yields its endpoint."""
    with kinesalite_process(workdir, shard_limit) as emulator:
        yield emulator.endpoint


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far, from /proc/PID/stat (10 ms ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After the command's closing parenthesis: state is field 3, utime 14 and stime 15 (1-based).
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def process_rss(pid: int) -> tuple[int, int]:
    """(resident set size, its peak) of a process in bytes, from /proc/PID/status."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) * 1024
    return values["VmRSS"], values["VmHWM"]


def quantiles(values: Sequence[float]) -> tuple[float, float]:
    """(p50, p99) of a sample."""
    q = statistics.quantiles(values, n=100, method="inclusive")
    return q[49], q[98]


@dataclass(frozen=True)
class Result:
    """One goal of issue 7 as measured in this run, for the summary at the end of `make bench`."""

    figure: str
    measured: str
    goal: str
    met: bool | None  # None: no goal, for information


def verdict(met: bool) -> str:
    """How a goal reads in the output."""
    return "goal met" if met else "goal MISSED"


def machine() -> list[str]:
    """The machine the figures come from: CPU, cores, memory, load, Python, OS (read now)."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = "?"
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    system = platform.platform()
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                system = f"{line.split('=', 1)[1].strip(chr(34))}, Linux {platform.release()}"
    node = "not found"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        node = subprocess.run(["node", "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return [
        f"CPU      {cpu}, {os.cpu_count()} logical cores (this process may use {len(os.sched_getaffinity(0))})",
        f"memory   {memory}",
        f"OS       {system}",
        f"Python   {platform.python_implementation()} {platform.python_version()}; Node.js {node}",
        f"load     {load} (1, 5, 15 min averages at start: other work on the machine adds noise)",
    ]


class CountingProxy:
    """A TCP proxy in a thread of this process that counts the API calls passing through it.

    It forwards bytes unchanged and counts occurrences of `X-Amz-Target: <prefix>.<Operation>` in
    what the client sends (every AWS JSON-protocol request names its operation there), so a
    benchmark can report how many GetRecords calls a process made without instrumenting it.
    """

    def __init__(self, upstream: str) -> None:
        host_port = upstream.split("://", 1)[1]
        self._host, _, port = host_port.rpartition(":")
        self._port = int(port)
        self.counts: dict[str, int] = {}
        self.connections = 0
        self.endpoint = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    def __enter__(self) -> CountingProxy:
        self._thread = threading.Thread(target=self._run, name="counting-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise SystemExit("the counting proxy did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def count(self, operation: str) -> int:
        """Calls of `operation` seen so far."""
        return self.counts.get(operation, 0)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        server = loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            server.close()
            loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(self._host, self._port)
        except OSError:
            writer.close()
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, count: bool) -> None:
            tail = b""
            try:
                while chunk := await src.read(65536):
                    if count:
                        data = tail + chunk
                        for match in _TARGET.finditer(data):
                            if match.end() > len(tail):  # not counted with the previous chunk
                                op = match.group(1).decode()
                                self.counts[op] = self.counts.get(op, 0) + 1
                        tail = data[-80:]
                    dst.write(chunk)
                    await dst.drain()
            except OSError:
                pass
            finally:
                with contextlib.suppress(OSError):
                    dst.close()

        await asyncio.gather(pipe(reader, up_writer, True), pipe(up_reader, writer, False))


_TARGET = re.compile(rb"X-Amz-Target: [A-Za-z0-9_]+\.([A-Za-z]+)\r\n", re.IGNORECASE)


class HandledCount:
    """Records handed to `count_handler` so far (the handler may run on several threads at once).

    The contenders wait on this, without polling: `reach` sleeps until the handler that counts the
    last record wakes it. Polling esm's Prometheus registry instead costs about a millisecond per
    look, and even a 10 ms sleep loop costs a few percent of a run; either would be charged to esm.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = 0
        self._target: int | None = None
        self._done: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def add(self, n: int) -> None:
        """Count `n` more records (from any thread)."""
        with self._lock:
            self.value += n
            reached = self._target is not None and self.value >= self._target
        if reached and self._loop is not None and self._done is not None:
            self._loop.call_soon_threadsafe(self._done.set)

    def reset(self) -> None:
        """Start counting again from 0."""
        with self._lock:
            self.value = 0
            self._target = None

    async def reach(self, n: int, task: asyncio.Task[Any] | None = None) -> None:
        """Wait until `n` records were handled (or `task`, the daemon, ended: an error)."""
        self._loop = asyncio.get_running_loop()
        self._done = asyncio.Event()
        with self._lock:
            self._target = n
            if self.value >= n:
                return
        done = asyncio.ensure_future(self._done.wait())
        await asyncio.wait({done} if task is None else {done, task}, return_when=asyncio.FIRST_COMPLETED)
        done.cancel()
        if self.value < n:
            raise RuntimeError(f"esm exited early: {task.result() if task and not task.cancelled() else 'cancelled'}")


HANDLED = HandledCount()


class Clock:
    """A contender's CPU and wall clocks, started after a full collection of the garbage left so far.

    Every run then starts from the same collector state. Without it a run paid for the garbage of
    the run before it: a full collection (about 50 ms here, most of it walking the objects
    botocore's service models leave) fell into whichever run crossed the collector's threshold,
    which moved the DynamoDB ratio between 1.06x and 1.23x from one `make bench` to the next.
    Collections caused by a run's own objects still count.
    """

    def __init__(self) -> None:
        gc.collect()
        self.cpu, self.wall = time.process_time(), time.perf_counter()

    def spent(self) -> tuple[float, float]:
        """(CPU seconds of the whole process, wall seconds) since the start."""
        return time.process_time() - self.cpu, time.perf_counter() - self.wall


async def esm_cpu(daemon: Any, count: int, settled: Callable[[], bool] | None = None) -> tuple[float, float]:
    """Run `daemon` (an `esm.daemon.Daemon` whose functions are `count_handler`) until `count` records
    were handled; (CPU seconds, wall seconds) from its start-up's end, so start and stop are excluded.

    `settled`: then also until it answers True, asked every 50 ms (rarely: reading esm's registry
    costs CPU); SQS waits for the last delete this way.
    """
    HANDLED.reset()
    task = asyncio.create_task(daemon.run())
    await daemon.started.wait()
    clock = Clock()
    await HANDLED.reach(count, task)
    while settled is not None and not settled():
        if task.done():
            raise RuntimeError(f"esm exited early with {task.result()}")
        await asyncio.sleep(0.05)
    spent = clock.spent()
    daemon.request_stop()
    await task
    return spent


def count_handler(event: dict[str, Any], context: Any) -> None:
    """The contenders' function: only counts the records, so that the engines' costs are what is measured."""
    HANDLED.add(len(event["Records"]))


async def hand_over_shard(client: Any, iterator: str, count: int, page: int, batch: int) -> None:
    """The bare loop's reading: GetRecords pages of up to `page` records from `iterator`, each page handed
    to `count_handler` in batches of `batch` as the raw records, until `count` records were read."""
    seen = 0
    while seen < count:
        answer = await client.get_records(ShardIterator=iterator, Limit=page)
        records = answer["Records"]
        for i in range(0, len(records), batch):
            count_handler({"Records": records[i : i + batch]}, None)
        seen += len(records)
        iterator = answer["NextShardIterator"]


async def wait_for_count(values: Sequence[Any], count: int, within: float = 30.0) -> None:
    """Until `values` (filled by a handler on another thread: no event to await) holds `count`, or `within` s."""
    for _ in range(round(within / 0.05)):
        if len(values) >= count:
            return
        await asyncio.sleep(0.05)


CPU_GOAL_RATIO = 1.15
"""Issue 7's goal for figure 2: esm's CPU per record at most this many times the bare loop's."""


def cpu_result(source: str, unit: str, count: int, results: dict[str, list[tuple[float, float]]]) -> list[Result]:
    """Print the contenders' CPU table and the goal's verdict; the summary row of figure 2 for `source`."""
    ratio = print_cpu_table(unit, count, results)
    met = ratio <= CPU_GOAL_RATIO
    print(f"goal <= {CPU_GOAL_RATIO}x: {verdict(met)}")
    return [Result(f"2. CPU per record vs bare loop: {source}", f"{ratio:.2f}x", f"<= {CPU_GOAL_RATIO}x", met)]


def paired_ratio(results: dict[str, list[tuple[float, float]]], a: str, b: str) -> float:
    """The median over the rounds of contender a's CPU / contender b's CPU."""
    return statistics.median(x / y for (x, _), (y, _) in zip(results[a], results[b], strict=True))


def print_cpu_table(unit: str, count: int, results: dict[str, list[tuple[float, float]]]) -> float:
    """Print every contender's CPU per 1,000 `unit`s (medians of the rounds); return the esm/baseline ratio.

    The ratio is the median of the rounds' own ratios: each round runs the contenders one right
    after the other, so a change in the machine's load between rounds cancels out. The ratio of
    the two medians is printed too. A contender other than "baseline" and "esm" is for information.
    """
    print(f"{'contender':<14} {f'CPU ms / 1000 {unit}':>19} {f'{unit}/s (info)':>14}   rounds (CPU s)")
    for name, runs in results.items():
        per = statistics.median(c for c, _ in runs) / count * 1_000_000
        wall = statistics.median(w for _, w in runs)
        rounds_text = " ".join(f"{c:.3f}" for c, _ in runs)
        print(f"{name:<14} {per:>19.1f} {count / wall:>14.0f}   {rounds_text}")
    paired = paired_ratio(results, "esm", "baseline")
    of_medians = statistics.median(c for c, _ in results["esm"]) / statistics.median(c for c, _ in results["baseline"])
    print(
        f"ratio esm/baseline (CPU per {unit[:-1]}): {paired:.2f}x (median of the rounds' ratios; ratio of the medians "
        f"{of_medians:.2f}x)"
    )
    for name in results:
        if name not in ("baseline", "esm"):
            print(f"ratio esm/{name}: {paired_ratio(results, 'esm', name):.2f}x (for information)")
    return paired


def aws_client(service: str, endpoint: str, *, fast_timestamps: bool = False) -> Any:
    """An aiobotocore client for an emulator; `fast_timestamps`: with esm's timestamp parser (`esm.aws`)."""
    from aiobotocore.session import get_session

    from esm.aws import parse_timestamp_fast

    session = get_session()
    if fast_timestamps:
        session.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=parse_timestamp_fast)
    return session.create_client(
        service, region_name=REGION, endpoint_url=endpoint, aws_access_key_id="bench", aws_secret_access_key="bench"
    )
