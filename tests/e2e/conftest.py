"""Fixtures shared by the end-to-end tests: raw clients on the moto server."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
async def kinesis(clients: Any) -> Any:
    """A raw Kinesis client on moto."""
    async with clients.client("kinesis") as client:
        yield client


@pytest.fixture
async def dynamodb(clients: Any) -> Any:
    """A raw DynamoDB client on moto."""
    async with clients.client("dynamodb") as client:
        yield client
