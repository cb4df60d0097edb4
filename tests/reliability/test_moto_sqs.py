"""The moto fix the reliability tests rely on (`tests.reliability.moto_sqs`) restores SQS's promises."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from esm.aws import ClientFactory
from tests.conftest import unique
from tests.e2e.harness import create_queue
from tests.reliability.moto_sqs import sqs_receive_fixed


async def _bodies(sqs: Any, url: str, count: int) -> list[str]:
    resp = await sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=count, WaitTimeSeconds=0)
    return [m["Body"] for m in resp.get("Messages", [])]


class TestMotoSqsFix:
    """With the fix, moto hands each message to one receive and keeps FIFO group order."""

    async def test_concurrent_receives_never_share_a_message(self, sqs: Any, clients: ClientFactory) -> None:
        """Six pollers drain 100 messages: each message reaches exactly one of them (moto alone: some twice)."""
        url, _ = await create_queue(sqs, unique("moto-race"), VisibilityTimeout=60)
        for start in range(0, 100, 10):
            entries = [{"Id": str(n), "MessageBody": str(n)} for n in range(start, start + 10)]
            await sqs.send_message_batch(QueueUrl=url, Entries=entries)
        got: Counter[str] = Counter()

        async def poller() -> None:
            async with clients.client("sqs") as client:
                while bodies := await _bodies(client, url, 10):
                    got.update(bodies)

        with sqs_receive_fixed():
            await asyncio.gather(*(poller() for _ in range(6)))
        assert got == Counter(str(n) for n in range(100))

    async def test_visible_again_messages_come_first_and_in_order(self, sqs: Any) -> None:
        """Received 0, 1, 2 of a group and never deleted: after the timeout, 0 to 4 in order (moto alone: 2, 3, 4)."""
        url, _ = await create_queue(sqs, unique("moto-fifo") + ".fifo", VisibilityTimeout=1)
        for n in range(5):
            await sqs.send_message(QueueUrl=url, MessageBody=str(n), MessageGroupId="g", MessageDeduplicationId=str(n))
        with sqs_receive_fixed():
            assert await _bodies(sqs, url, 3) == ["0", "1", "2"]
            assert await _bodies(sqs, url, 10) == [], "the group is held while its messages are in flight"
            await asyncio.sleep(1.5)
            assert await _bodies(sqs, url, 10) == ["0", "1", "2", "3", "4"]

    async def test_a_group_in_flight_still_holds_its_later_messages(self, sqs: Any) -> None:
        """A visible-again message of one group does not release another group still in flight."""
        url, _ = await create_queue(sqs, unique("moto-fifo") + ".fifo", VisibilityTimeout=1)
        for n, group in enumerate("aabb"):
            await sqs.send_message(
                QueueUrl=url, MessageBody=str(n), MessageGroupId=group, MessageDeduplicationId=str(n)
            )
        with sqs_receive_fixed():
            first = (await sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1))["Messages"][0]
            assert first["Body"] == "0"
            second = (await sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1))["Messages"][0]
            assert second["Body"] == "2"
            await sqs.change_message_visibility(
                QueueUrl=url, ReceiptHandle=second["ReceiptHandle"], VisibilityTimeout=30
            )
            await asyncio.sleep(1.5)
            assert await _bodies(sqs, url, 10) == ["0", "1"], "group b stays held by message 2"
