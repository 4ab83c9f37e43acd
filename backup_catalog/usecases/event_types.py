"""The event consumer's surroundings: where its counts go (:class:`Observer`), the prefix index it routes
keys with (:class:`Index`), what a round returns (:class:`BatchResult`). Re-exported by
:mod:`backup_catalog.usecases.events`.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Protocol

import asyncpg

from catalog import events as cat_events
from scheduler.eventroute import PrefixIndex


class Observer(Protocol):
    """Where the consumer's counts go (``backup_catalog.api.metrics.ApiMetrics`` implements it)."""

    def event(self, what: str, reason: str) -> None: ...          # received|applied|ignored|dropped
    def lag(self, seconds: float) -> None: ...
    def consumer_error(self, kind: str) -> None: ...
    def drift(self, objects: int) -> None: ...


class NullObserver:
    def event(self, what: str, reason: str) -> None:
        pass

    def lag(self, seconds: float) -> None:
        pass

    def consumer_error(self, kind: str) -> None:
        pass

    def drift(self, objects: int) -> None:
        pass


@dataclass(slots=True)
class Index:
    """The prefix index, rebuilt from the catalog at most every ``min_age`` seconds when a key misses."""

    pool: asyncpg.Pool
    min_age: float = 5.0
    ix: PrefixIndex = field(default_factory=lambda: PrefixIndex(()))
    built: float = float("-inf")
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def refresh(self, *, force: bool = False) -> None:
        async with self.lock:
            if force or time.monotonic() - self.built >= self.min_age:
                self.ix = PrefixIndex(await cat_events.routes(self.pool))
                self.built = time.monotonic()


@dataclass(frozen=True, slots=True)
class BatchResult:
    delete: tuple[str, ...]        # receipt handles whose effects are committed (or that carry nothing)
    failed: tuple[str, ...]        # message ids left on the queue
    reconciled: tuple[str, ...] = ()


__all__ = ["BatchResult", "Index", "NullObserver", "Observer"]
