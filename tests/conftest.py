"""Shared fixtures: a real moto server over HTTP and dummy AWS credentials for it.

moto runs in this process on its own thread (ThreadedMotoServer) and is reached over real HTTP
by the real aiobotocore clients, as ../shared/TESTING.md describes.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from moto.server import ThreadedMotoServer

from esm.aws import ClientFactory
from esm.config import AwsConfig

REGION = "us-east-1"
ACCOUNT = "123456789012"

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
