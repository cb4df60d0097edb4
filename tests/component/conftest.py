"""Fixtures shared by the component tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from esm.aws import ClientFactory
from esm.state.dynamodb import LeaseTable
from tests.component.test_lease_protocol import Harness, Wire
from tests.conftest import unique


@pytest.fixture
async def harness(clients: ClientFactory) -> AsyncIterator[Harness]:
    """A fresh lease table on the moto server (deleted afterwards) and a recorder of what it applied."""
    async with clients.client("dynamodb") as client:
        h = Harness(LeaseTable(client, unique("leases")), Wire(client))
        await h.table.ensure(create=True)
        try:
            yield h
        finally:
            await client.delete_table(TableName=h.table.name)
