"""Shared fixtures: a real moto server and a real kinesalite over HTTP, and dummy AWS credentials.

moto runs in this process on its own thread (ThreadedMotoServer) and is reached over real HTTP
by the real aiobotocore clients, as ../shared/TESTING.md describes. kinesalite (the Kinesis
emulator that reshards correctly) runs as a Node.js child process from the project-local
`.kinesalite` folder that `make kinesalite` (part of `make check`) installs.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from moto.server import ThreadedMotoServer

from esm.aws import ClientFactory
from esm.config import AwsConfig

REGION = "us-east-1"
ACCOUNT = "123456789012"
REPO_ROOT = Path(__file__).resolve().parents[1]
KINESALITE_MODULE = REPO_ROOT / ".kinesalite" / "node_modules" / "kinesalite"
KINESALITE_START_SECONDS = 30.0  # generous: CI machines may be loaded

# Binds loopback only (kinesalite's own CLI binds every interface) on a port the OS picks, and
# prints that port once listening. Zero delays make CreateStream/SplitShard take effect at once.
_KINESALITE_SCRIPT = """
const server = require(process.argv[1])({createStreamMs: 0, deleteStreamMs: 0, updateStreamMs: 0, shardLimit: 100});
server.listen(0, '127.0.0.1', () => console.log(server.address().port));
"""

# Dummy credentials for the emulator, set before any client is created.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", REGION)
os.environ.pop("AWS_PROFILE", None)


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A moto server on a free loopback port, shared by the whole session."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="session")
def kinesalite_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A kinesalite server on a free loopback port, shared by the whole session.

    Fails (never skips) when kinesalite or Node.js is missing: Kinesis resharding is only tested
    here, because moto gets it wrong (../shared/TESTING.md).
    """
    if not KINESALITE_MODULE.is_dir():
        pytest.fail(
            f"kinesalite is not installed in {KINESALITE_MODULE.parents[1]}: run `make check` "
            "(it sets up the virtual environment and kinesalite), or just `make kinesalite`"
        )
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not on PATH: kinesalite needs Node.js (Debian: apt-get install nodejs npm)")
    logs = tmp_path_factory.mktemp("kinesalite")
    stdout_path, stderr_path = logs / "stdout.txt", logs / "stderr.txt"
    with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [node, "-e", _KINESALITE_SCRIPT, str(KINESALITE_MODULE)],
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            cwd=REPO_ROOT,
        )
    try:
        port = _wait_for_kinesalite(process, stdout_path, stderr_path)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_for_kinesalite(process: subprocess.Popen[bytes], stdout: Path, stderr: Path) -> int:
    """The port kinesalite printed, once it accepts connections; fail with its stderr otherwise."""
    deadline = time.monotonic() + KINESALITE_START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"kinesalite exited with status {process.returncode}:\n{stderr.read_text(errors='replace')}")
        printed, newline, _ = stdout.read_text().partition("\n")  # a whole line: the port is complete
        if newline and printed.strip().isdigit():
            try:
                with socket.create_connection(("127.0.0.1", int(printed)), timeout=1):
                    return int(printed)
            except OSError:
                pass
        time.sleep(0.05)
    pytest.fail(
        f"kinesalite did not accept connections within {KINESALITE_START_SECONDS:.0f} s:\n"
        f"{stderr.read_text(errors='replace')}"
    )


@pytest.fixture
def aws_config(moto_endpoint: str) -> AwsConfig:
    """The `aws:` section pointing at the moto server."""
    return AwsConfig(region=REGION, endpoint_url=moto_endpoint)


@pytest.fixture
def clients(aws_config: AwsConfig) -> ClientFactory:
    """A client factory for the moto server."""
    return ClientFactory(aws_config)


@pytest.fixture
async def sqs(clients: ClientFactory) -> AsyncIterator[Any]:
    """A raw aiobotocore SQS client on moto, for arranging and inspecting queues in tests."""
    async with clients.client("sqs") as client:
        yield client


def unique(prefix: str) -> str:
    """A resource name unique to one test, so tests sharing a moto server never collide."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def active_stream(kinesis: Any, name: str, within: float = 10.0) -> dict[str, Any]:
    """A new Kinesis stream's description (`StreamARN`, `Shards`, ...) once it is ACTIVE; fails after `within` s."""
    until = time.monotonic() + within
    while True:
        desc: dict[str, Any] = (await kinesis.describe_stream(StreamName=name))["StreamDescription"]
        if desc["StreamStatus"] == "ACTIVE":
            return desc
        if time.monotonic() >= until:
            raise AssertionError(f"stream {name} did not become ACTIVE within {within} s")
        await asyncio.sleep(0.05)
