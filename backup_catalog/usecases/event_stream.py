"""The consumer loop of ``serve``: long-poll each queue with several receives in flight, apply each batch
(:class:`backup_catalog.usecases.events.Consumer`), delete what is committed.

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

from backup_catalog.usecases.events import BatchResult, Consumer
from scheduler.sqs import QueueError, SqsQueue

log = logging.getLogger(__name__)

OnGap = Callable[[str], Awaitable[None]]


@dataclass(slots=True)
class Stream:
    consumer: Consumer
    queues: Sequence[SqsQueue]
    receivers: int = 2                  # receives in flight per queue
    wait_seconds: int = 20              # long polling
    on_gap: OnGap | None = None
    backoff_cap: float = 30.0
    start_as_gap: bool = False          # a (re)started consumer may have missed events: reconcile first
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    batches: int = 0
    _gap: dict[str, bool] = field(default_factory=dict)
    _gap_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def run(self) -> None:
        """Run until :meth:`stop` (or cancellation). Never raises for a queue or catalog failure."""
        await self.consumer.index.refresh(force=True)
        if self.start_as_gap:
            self._gap.update({q.url: True for q in self.queues[:1]})   # one reconcile, not one per queue
        tasks = [asyncio.create_task(self._receiver(q, n), name=f"events:{q.url}:{n}")
                 for q in self.queues for n in range(max(1, self.receivers))]
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

    async def _receiver(self, q: SqsQueue, n: int) -> None:
        failures = 0
        while not self.stopping.is_set():
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
            try:
                res = await self.consumer.process(messages)
            except Exception:        # a bug must not stop the consumer: the batch becomes visible again
                log.exception("batch from %s failed", q.url)
                self.consumer.observer.consumer_error("internal_error")
                continue
            await self._delete(q, res)
            self.batches += 1

    async def _delete(self, q: SqsQueue, res: BatchResult) -> None:
        if not res.delete:
            return
        try:
            await q.delete(list(res.delete))
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


__all__ = ["OnGap", "Stream"]
