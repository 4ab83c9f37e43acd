"""Wiring of the S3 event consumer in ``serve``: SQS clients per queue, the consumer, its receive loops,
and the reconcile after a gap (the process start counts as one: the scheduled poll runs at start anyway).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import asyncpg

from backup_catalog.service import jobs
from backup_catalog.settings import Settings
from backup_catalog.usecases.event_stream import Stream
from backup_catalog.usecases.events import Consumer, Index, Observer
from scheduler.clients import sqs_client
from scheduler.sqs import SqsQueue

log = logging.getLogger(__name__)


@asynccontextmanager
async def run_events(pool: asyncpg.Pool, settings: Settings, s3: Any, holder: str, observer: Observer, *,
                     track: Callable[[asyncio.Future[Any]], Any] | None = None,
                     wait_seconds: int = 20) -> AsyncIterator[Stream]:
    """Consume ``S3_EVENTS_QUEUE_URL`` while the context is open; on exit, stop receiving, give the batch in
    hand a moment, then cancel (its messages are deleted only if committed: a cut batch comes back)."""
    async with AsyncExitStack() as stack:
        queues = [SqsQueue(await stack.enter_async_context(sqs_client(settings, url, consumer=True)), url)
                  for url in settings.event_queue_urls()]
        consumer = Consumer(pool, s3, settings, holder, Index(pool), observer,
                            max_receives=settings.s3_events_max_receives,
                            trust_sequencer=settings.s3_events_trust_sequencer)

        async def on_gap(url: str) -> None:
            task = asyncio.ensure_future(jobs.reconcile_now(pool, settings, s3, holder, on_drift=observer.drift,
                                                            track=track))
            if track is not None:
                track(task)

        stream = Stream(consumer, queues, receivers=settings.s3_events_receivers, wait_seconds=wait_seconds,
                        on_gap=on_gap, start_as_gap=True)
        task = asyncio.create_task(stream.run(), name="s3-events")
        log.info("consuming S3 events from %d queue(s), %d receive(s) in flight each", len(queues),
                 settings.s3_events_receivers)
        try:
            yield stream
        finally:
            stream.stop()     # a long poll in flight is cancelled; a batch cut short is applied again later
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout=2.0)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


__all__ = ["run_events"]
