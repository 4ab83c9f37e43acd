"""The stream's rounds (backup_catalog.usecases.event_stream): what several receives bring while a round is
applied is applied together in the next one, at most ``round_size`` messages; deletes go to the queue each
message came from, only for what the consumer committed; a failing round deletes nothing; stop ends it."""
from __future__ import annotations

import asyncio
from typing import Any

from backup_catalog.usecases.event_stream import Stream
from backup_catalog.usecases.events import BatchResult, NullObserver
from scheduler.sqs import Message


class FakeQueue:
    def __init__(self, url: str, n: int) -> None:
        self.url = url
        self.todo = [Message(f"{url}-{i}", f"{url}-r{i}", "{}", 1, None) for i in range(n)]
        self.deleted: list[str] = []

    async def receive(self, *, wait_seconds: int = 20, max_messages: int = 10,
                      visibility_timeout: int | None = None) -> list[Message]:
        await asyncio.sleep(0.001)
        got, self.todo = self.todo[:max_messages], self.todo[max_messages:]
        return got

    async def delete(self, receipts: list[str]) -> int:
        self.deleted += receipts
        return len(receipts)


class FakeIndex:
    async def refresh(self, *, force: bool = False) -> None:
        pass


class FakeConsumer:
    """Commits every message but those whose id ends in 7; the second round fails outright."""

    def __init__(self) -> None:
        self.rounds: list[int] = []
        self.committed: set[str] = set()
        self.index = FakeIndex()
        self.observer = NullObserver()

    async def process(self, messages: list[Message]) -> BatchResult:
        self.rounds.append(len(messages))
        await asyncio.sleep(0.05)                  # receives go on meanwhile
        if len(self.rounds) == 2:
            raise RuntimeError("a bug")
        done = tuple(m.receipt for m in messages if not m.id.endswith("7"))
        self.committed.update(done)
        return BatchResult(done, ())


async def test_rounds_gather_what_receives_bring() -> None:
    a, b = FakeQueue("a", 300), FakeQueue("b", 200)
    consumer: Any = FakeConsumer()
    stream = Stream(consumer, [a, b], receivers=2, wait_seconds=0, round_size=120)
    task = asyncio.create_task(stream.run())
    for _ in range(500):
        if not a.todo and not b.todo and sum(consumer.rounds) >= 500:
            break
        await asyncio.sleep(0.01)
    stream.stop()
    await asyncio.wait_for(task, 5)
    assert sum(consumer.rounds) == 500 and max(consumer.rounds) <= 120 and len(consumer.rounds) >= 5
    assert consumer.rounds[1] > 10                  # more than one receive's worth in a round
    deleted = a.deleted + b.deleted
    assert all(r.startswith("a-") for r in a.deleted) and all(r.startswith("b-") for r in b.deleted)
    assert sorted(deleted) == sorted(consumer.committed)          # the failed round's messages stay
    assert len(deleted) < 500 - consumer.rounds[1] + 1
    assert stream.batches == len(consumer.rounds) - 1


async def test_stop_ends_an_idle_stream() -> None:
    consumer: Any = FakeConsumer()
    stream = Stream(consumer, [FakeQueue("q", 0)], receivers=3, wait_seconds=0)
    task = asyncio.create_task(stream.run())
    await asyncio.sleep(0.05)
    stream.stop()
    await asyncio.wait_for(task, 2)
    assert consumer.rounds == []
