"""Regression tests for an independent review of the lease coordinator and the leased runner.

The lease table is the real moto DynamoDB over HTTP (see tests/component/test_lease_protocol.py).
Where a test needs DynamoDB to be slow or to fail for one replica, it wraps a public method of
that replica's `LeaseTable` (the client of the lease table), never a private method of the code
under test. The stream in the runner test is `ScriptedStream` (tests/component/test_shard_consumer.py),
which can make ListShards fail as Kinesis does under its 5 calls/s limit.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from prometheus_client import CollectorRegistry

from esm.config import MappingConfig, StreamsConfig
from esm.errors import RetriableAwsError
from esm.health import MappingHealth
from esm.leases import LeaseCheckpointStore, LeaseCoordinator, LeaseSettings
from esm.logging import get_logger
from esm.metrics import Metrics
from esm.sources._shards import Shard, eligible_shards
from esm.state.base import Checkpoint, Position
from esm.state.dynamodb import LeaseTable
from esm.stream_runner import StreamMappingRunner
from tests.component.test_lease_protocol import (
    ARN,
    MAPPING,
    Harness,
    coordinator,
    create_leases,
    held,
    owners,
    shard,
)
from tests.component.test_shard_consumer import ARN as STREAM_ARN
from tests.component.test_shard_consumer import Handler, ScriptedStream


async def test_one_slow_renewal_does_not_drop_the_other_leases(harness: Harness) -> None:
    """Renewals are bounded one by one: a call slower than the failover time (a 10 s connect
    timeout against the default 10 s failover) costs that lease at most, not every other one."""
    table = harness.table
    shards = await create_leases(table, 4)
    a = coordinator(table, "a", failover_time=1.0, renew_interval=0.3, balance_interval=100)
    real_renew = table.renew
    slowed: list[str] = []

    async def renew(key: str, counter: int, owner: str) -> bool:
        if key.endswith(shards[0]) and not slowed:
            slowed.append(key)
            await asyncio.sleep(1.5)
        return await real_renew(key, counter, owner)

    table.renew = renew  # type: ignore[method-assign]
    await a.start()
    try:
        await asyncio.sleep(2.5)
        assert slowed
        assert set(shards[1:]) <= set(held(a))
    finally:
        await a.stop()


async def test_a_replica_gives_a_lease_up_before_another_can_take_it(harness: Harness) -> None:
    """Renewals failing fast (throttling): the holder stops before the other replica can take over."""
    table = harness.table
    await create_leases(table, 1)
    a = coordinator(table, "a", failover_time=1.0, renew_interval=0.3, balance_interval=100)
    b_table = LeaseTable(table.client, table.name)
    b = coordinator(b_table, "b", failover_time=1.0, renew_interval=0.3, balance_interval=100)
    await a.start()
    try:
        while not held(a):  # noqa: ASYNC110 - polling the public view
            await asyncio.sleep(0.02)
        await b.balance_round()  # b sees the lease now; it may take it 1 s after it next sees it unchanged
        real_renew = table.renew

        async def throttled(key: str, counter: int, owner: str) -> bool:
            raise RetriableAwsError("UpdateItem", "ProvisionedThroughputExceededException", "throttled")

        table.renew = throttled  # type: ignore[method-assign]
        gave_up = took = 0.0
        started = time.monotonic()
        while not took and time.monotonic() - started < 5:
            if not gave_up and not held(a):
                gave_up = time.monotonic()
            await b.balance_round()
            if held(b):
                took = time.monotonic()
            await asyncio.sleep(0.02)
        table.renew = real_renew  # type: ignore[method-assign]
        assert took
        assert gave_up
        assert gave_up <= took
    finally:
        await a.stop()


async def test_forgetting_a_mapping_during_a_balance_round_leaves_no_lease_held(harness: Harness) -> None:
    """A hot reload removes a mapping while a round is taking its leases: none may stay held."""
    table = harness.table
    await create_leases(table, 2)
    a = coordinator(table, "a")
    gate, entered = asyncio.Event(), asyncio.Event()
    real_take = table.take

    async def take(*args: Any, **kwargs: Any) -> bool:
        entered.set()
        await gate.wait()
        return await real_take(*args, **kwargs)

    table.take = take  # type: ignore[method-assign]
    round_ = asyncio.create_task(a.balance_round())
    await entered.wait()
    forgetting = asyncio.create_task(a.forget(MAPPING, ARN))
    gate.set()
    await round_
    await forgetting
    assert held(a) == {}
    assert set((await owners(table)).values()) == {None}


async def test_a_trimmed_unfinished_parent_does_not_block_its_child(harness: Harness) -> None:
    """A parent read part way and then trimmed (not listed any more) never reaches SHARD_END: its
    lease is dropped and the child is taken and started (spec/LEASES.md §13.6)."""
    table = harness.table
    parent, child = shard(0), shard(1)
    assert await table.create(MAPPING, ARN, parent, Checkpoint(Position.AFTER_SEQUENCE_NUMBER, "42"), [])
    assert await table.create(MAPPING, ARN, child, Checkpoint(Position.TRIM_HORIZON), [parent])
    a = coordinator(table, "a")
    await a.balance_round()
    listed = [Shard(child, parents=(parent,))]  # ListShards no longer returns the parent
    view = a.view(MAPPING, ARN)
    await view.sync(listed, first=lambda s: Checkpoint(Position.LATEST), later=lambda s: Checkpoint(Position.LATEST))
    await a.balance_round()
    startable = [s.shard_id for s in eligible_shards(listed, view.finished()) if s.shard_id in held(a)]
    assert startable == [child]
    assert parent not in await owners(table)


async def test_the_consumer_of_a_lost_lease_stops_while_the_stream_cannot_be_listed(harness: Harness) -> None:
    """ListShards throttled while another replica takes the lease: the consumer still stops at once."""
    table = harness.table
    a = LeaseCoordinator(
        table,
        LeaseSettings(failover_time=1.0, renew_interval=0.3, balance_interval=0.2),
        "a",
        Metrics(CollectorRegistry()),
        get_logger(),
    )
    await a.start()
    m = MappingConfig.model_validate(
        {"EventSourceArn": STREAM_ARN, "FunctionName": "fn", "StartingPosition": "TRIM_HORIZON"}
    )
    stream = ScriptedStream([time.time()] * 3, closed=False)

    async def retention() -> float:
        return 86400.0

    stream.retention_seconds = retention  # type: ignore[attr-defined]
    handler = Handler(poison={"1000"})  # a batch the function keeps failing: retried, never checkpointed
    settings = StreamsConfig.model_validate(
        {"idle_poll_interval": 0.01, "retry_delay": {"initial": 0.05, "maximum": 0.05}}
    )
    runner = StreamMappingRunner(
        m,
        stream,
        handler,  # type: ignore[arg-type]  # the Invoker protocol's context methods are unused here
        LeaseCheckpointStore(a),
        None,
        settings,
        Metrics(CollectorRegistry()).for_mapping(m.uuid, "fn", "kinesis"),
        MappingHealth(m.uuid, "fn", STREAM_ARN),
        get_logger(),
        function_arn="arn:aws:lambda:us-east-1:123456789012:function:fn",
        leases=a.view(m.uuid, STREAM_ARN),
    )
    task = asyncio.create_task(runner.run())
    try:
        deadline = time.monotonic() + 10
        while not handler.events:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)

        async def throttled() -> list[Shard]:
            raise RetriableAwsError("ListShards", "LimitExceededException", "Rate exceeded for stream")

        stream.list_shards = throttled  # type: ignore[method-assign]
        # Another replica takes the lease (it sees it expired: a failover time of 0).
        b = LeaseCoordinator(
            LeaseTable(table.client, table.name),
            LeaseSettings(failover_time=0.0),
            "b",
            Metrics(CollectorRegistry()),
            get_logger(),
        )
        b_view = b.view(m.uuid, STREAM_ARN)
        await b.balance_round()
        assert b_view.held()
        while a.view(m.uuid, STREAM_ARN).held():
            assert time.monotonic() < deadline + 10
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)  # the runner notices within its wait on the lease change
        before = len(handler.events)
        await asyncio.sleep(1.0)
        assert len(handler.events) - before <= 1  # at most the batch in flight
    finally:
        runner.stop()
        await asyncio.wait_for(task, 10)
        await a.stop()


async def test_a_take_whose_answer_was_lost_is_taken_again_at_the_next_round(harness: Harness) -> None:
    """The take was applied but its answer lost: the table names this replica, which does not know it
    holds the lease. The next round takes it again at once (no wait for the lease to look expired)."""
    table = harness.table
    await create_leases(table, 1)
    a = coordinator(table, "a", failover_time=60.0, balance_interval=100)
    try:
        harness.wire.fail("a", "applied", "take")
        await a.balance_round()
        assert held(a) == {}
        assert list((await owners(table)).values()) == ["a"]
        await a.balance_round()
        assert len(held(a)) == 1
        assert [w.kind for w in harness.wire.applied] == ["take", "take"]
    finally:
        await a.stop()
