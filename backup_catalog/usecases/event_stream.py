"""The consumer loop of ``serve``: long-poll each queue with several receives in flight, apply what they
bring in rounds (:class:`backup_catalog.usecases.events.Consumer`: one round is every message received while
the previous round was applied, up to ``round_size``), delete what is committed.

A consumer gap (a receive failing: queue unreachable, access denied; and the start of the process, whose
predecessor may have lost messages to retention) calls ``on_gap`` once the queue answers again: ``serve``
runs a reconcile of every instance then (``backup_catalog.service.jobs``), whose findings count as drift.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from backup_catalog.usecases.events import Consumer
from scheduler.sqs import Message, QueueError

log = logging.getLogger(__name__)

OnGap = Callable[[str], Awaitable[None]]


class Queue(Protocol):
    """What the stream needs of a queue (:class:`scheduler.sqs.SqsQueue`)."""

    url: str

    async def receive(self, *, wait_seconds: int = 20, max_messages: int = 10,
                      visibility_timeout: int | None = None) -> list[Message]: ...

    async def delete(self, receipts: list[str]) -> int: ...


@dataclass(slots=True)
class Stream:
    consumer: Consumer
    queues: Sequence[Queue]
    receivers: int = 2                  # receives in flight per queue
    wait_seconds: int = 20              # long polling
    on_gap: OnGap | None = None
    backoff_cap: float = 30.0
    start_as_gap: bool = False          # a (re)started consumer may have missed events: reconcile first
    round_size: int = 1000              # messages per round at most; receives pause while a round's worth waits
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    batches: int = 0                    # rounds applied
    _gap: dict[str, bool] = field(default_factory=dict)
    _gap_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _inbox: list[tuple[Queue, list[Message]]] = field(default_factory=list)
    _waiting: int = 0                   # messages received and not yet taken into a round
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def run(self) -> None:
        """Run until :meth:`stop` (or cancellation). Never raises for a queue or catalog failure."""
        await self.consumer.index.refresh(force=True)
        if self.start_as_gap:
            self._gap.update({q.url: True for q in self.queues[:1]})   # one reconcile, not one per queue
        tasks = [asyncio.create_task(self._receiver(q, n), name=f"events:{q.url}:{n}")
                 for q in self.queues for n in range(max(1, self.receivers))]
        tasks.append(asyncio.create_task(self._applier(), name="events:apply"))
        tasks.append(asyncio.create_task(self._wake_on_stop(), name="events:stop"))
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await t

    def stop(self) -> None:
        self.stopping.set()

    async def _wake_on_stop(self) -> None:
        await self.stopping.wait()
        async with self._changed:
            self._changed.notify_all()

    async def _receiver(self, q: Queue, n: int) -> None:
        failures = 0
        while not self.stopping.is_set():
            async with self._changed:        # a round waiting already: let the applier catch up (what waits in
                await self._changed.wait_for(    # hand must not outlive the queue's visibility timeout)
                    lambda: self._waiting < self.round_size or self.stopping.is_set())
            if self.stopping.is_set():
                return
            try:
                messages = await q.receive(wait_seconds=self.wait_seconds)
            except QueueError as e:
                failures += 1
                self._gap[q.url] = True
                self.consumer.observer.consumer_error(e.code)
                delay = min(self.backoff_cap, 0.5 * 2 ** min(failures, 8)) * random.uniform(0.5, 1.0)
                log.warning("receive from %s failed (%s); retrying in %.1f s", q.url, e, delay)
                await self._sleep(delay)
                continue
            failures = 0
            await self._gap_closed(q.url)
            if not messages:
                continue
            async with self._changed:
                self._inbox.append((q, messages))
                self._waiting += len(messages)
                self._changed.notify_all()

    async def _applier(self) -> None:
        while True:
            async with self._changed:
                await self._changed.wait_for(lambda: bool(self._inbox) or self.stopping.is_set())
                if not self._inbox:
                    return                   # stopping, nothing in hand
                taken: list[tuple[Queue, list[Message]]] = []
                n = 0
                while self._inbox and (not taken or n + len(self._inbox[0][1]) <= self.round_size):
                    q, ms = self._inbox.pop(0)
                    taken.append((q, ms))
                    n += len(ms)
                self._waiting -= n
                self._changed.notify_all()
            await self._apply(taken)

    async def _apply(self, taken: list[tuple[Queue, list[Message]]]) -> None:
        # a message received twice (it became visible again while it waited) is applied once, by its newest
        # receipt (the one SQS deletes by)
        newest: dict[tuple[int, str], tuple[Queue, Message]] = {}
        for q, ms in taken:
            for m in ms:
                newest[(id(q), m.id)] = (q, m)
        taken = [(q, [m]) for q, m in newest.values()]
        messages = [m for _, ms in taken for m in ms]
        try:
            res = await self.consumer.process(messages)
        except Exception:        # a bug must not stop the consumer: the messages become visible again
            log.exception("a round of %d message(s) failed", len(messages))
            self.consumer.observer.consumer_error("internal_error")
            return
        delete = set(res.delete)
        per_queue: dict[int, tuple[Queue, list[str]]] = {}
        for q, ms in taken:
            got = per_queue.setdefault(id(q), (q, []))[1]
            got.extend(m.receipt for m in ms if m.receipt in delete)
        await asyncio.gather(*(self._delete(q, receipts) for q, receipts in per_queue.values()))
        self.batches += 1

    async def _delete(self, q: Queue, receipts: list[str]) -> None:
        if not receipts:
            return
        try:
            await q.delete(receipts)
        except QueueError as e:   # applied but not deleted: redelivered, and ignored as a duplicate then
            self.consumer.observer.consumer_error("delete_failed")
            log.warning("delete on %s failed (the messages come back and are ignored): %s", q.url, e)

    async def _gap_closed(self, url: str) -> None:
        if not self._gap.get(url):
            return
        async with self._gap_lock:
            if not self._gap.get(url):
                return
            self._gap[url] = False
        log.info("queue %s answers again after a gap: reconcile", url)
        if self.on_gap is not None:
            try:
                await self.on_gap(url)
            except Exception:
                log.exception("reconcile after the gap on %s failed", url)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), timeout=seconds)


__all__ = ["OnGap", "Queue", "Stream"]
