"""Use case: apply one batch of SQS messages carrying S3 events to the catalog.

1. decode each body (:mod:`scheduler.s3events`); a message that is not an S3 event is left on the queue
   (the queue's redrive policy moves it to the dead-letter queue after ``S3_EVENTS_MAX_RECEIVES``);
2. route each event to its instance (:class:`scheduler.eventroute.PrefixIndex`, longest registered prefix;
   keys of no instance are counted and dropped) and give the key its meaning in the instance's layout;
3. per instance, under its scan lease (the scanner's ``scan:<guid>``, fenced the same way) and one at a
   time in this process: drop events older than (or equal to) the newest applied for their key, apply the
   rest with the scanner's readers (:mod:`scheduler.eventapply`) and store them in ONE transaction
   (:func:`catalog.events.save_events`), or run a full scan when the events ask for a reconcile (a
   removal, a second copy of a segment) or the instance was never scanned;
4. return the messages whose effects are all committed: only those are deleted. A failing instance
   leaves its messages to become visible again.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Protocol

import asyncpg

from backup_catalog.usecases.scan import lease_ttl
from catalog import derived, repo
from catalog import events as cat_events
from catalog.errors import CatalogError, Conflict, NotScanned, UnknownInstance
from recovery.errors import PitrError
from recovery.model import Layout
from recovery.wal import DEFAULT_SEG_SIZE
from scheduler import runner
from scheduler.eventapply import Pending, apply_events, key_event, neighbour_patterns
from scheduler.eventroute import Applied, Kind, PrefixIndex, Verdict, classify, verdict
from scheduler.s3events import Action, BadEventMessage, S3Event, decode_body
from scheduler.sqs import Message
from scheduler.storage import S3Store

log = logging.getLogger(__name__)

EVENTS_HOLDER_SUFFIX = "/events"
# Applying a batch takes its instance's scan lease for this long (a reconcile scan renews it for a scan's
# length): a consumer that dies holding it delays that instance's events by at most this much. The queue's
# visibility timeout times S3_EVENTS_MAX_RECEIVES must exceed it (events setup: 5 x 360 s), or a batch left
# while the lease is held could reach the dead-letter queue.
EVENTS_LEASE_TTL = 30.0


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


@dataclass(slots=True)
class Consumer:
    """Everything one batch needs; one per ``serve`` process (its per-instance locks serialise batches)."""

    pool: asyncpg.Pool
    s3: Any
    settings: runner.ScanConfig
    holder: str
    index: Index
    observer: Observer = field(default_factory=NullObserver)
    max_receives: int = 5
    trust_sequencer: bool = True     # false: events are handled as if they had no sequencer
    locks: dict[str, asyncio.Lock] = field(default_factory=lambda: defaultdict(asyncio.Lock))

    async def process(self, messages: Sequence[Message], *, now: Callable[[], datetime] | None = None) -> BatchResult:
        clock = now or (lambda: datetime.now(timezone.utc))
        per_guid: dict[str, list[tuple[str, S3Event, str]]] = defaultdict(list)
        ok: set[str] = set()
        failed: set[str] = set()
        for m in messages:
            try:
                decoded = decode_body(m.body)
            except BadEventMessage as exc:
                self.observer.consumer_error("bad_message")
                if m.receive_count >= self.max_receives:
                    self.observer.event("dropped", "dead_letter")
                log.warning("message %s is not an S3 event (receive %d of %d, then the dead-letter queue): %s",
                            m.id, m.receive_count, self.max_receives, exc)
                failed.add(m.id)
                continue
            ok.add(m.id)
            if decoded.test_event:
                self.observer.event("received", "test_event")
                self.observer.event("ignored", "test_event")
            for _ in range(decoded.other):
                self.observer.event("received", "other")
                self.observer.event("ignored", "other_event_type")
            events = decoded.events if self.trust_sequencer else tuple(replace(x, sequencer=None)
                                                                       for x in decoded.events)
            for e in events:
                self.observer.event("received", e.action.value)
                if e.time is not None:
                    self.observer.lag(max(0.0, (clock() - e.time).total_seconds()))
                route = self.index.ix.lookup(e.bucket, e.key)
                if route is None:
                    await self.index.refresh()
                    route = self.index.ix.lookup(e.bucket, e.key)
                if route is None:
                    self.observer.event("dropped", "no_instance")
                    continue
                per_guid[route.guid].append((m.id, e, route.rel))
        results = await asyncio.gather(*(self._instance(g, items) for g, items in per_guid.items()))
        reconciled: list[str] = []
        for (guid, items), (good, rec) in zip(per_guid.items(), results):
            if not good:
                failed.update(mid for mid, _, _ in items)
            if rec:
                reconciled.append(guid)
        by_id = {m.id: m for m in messages}
        return BatchResult(tuple(by_id[i].receipt for i in sorted(ok - failed)), tuple(sorted(failed)),
                           tuple(reconciled))

    async def _instance(self, guid: str, items: list[tuple[str, S3Event, str]]) -> tuple[bool, bool]:
        """Apply one instance's events. (committed, reconciled by a full scan)."""
        async with self.locks[guid]:
            try:
                return await self._locked(guid, items)
            except (UnknownInstance, NotScanned) as e:
                for _ in items:
                    self.observer.event("dropped", "no_instance")
                log.info("events for %s dropped: %s", guid, e)
                return True, False
            except (Conflict, CatalogError, asyncpg.PostgresError, OSError, PitrError) as e:
                self.observer.consumer_error(getattr(e, "code", None) or type(e).__name__)
                log.warning("events for %s not applied (left on the queue): %s", guid, e)
                return False, False

    async def _locked(self, guid: str, items: list[tuple[str, S3Event, str]]) -> tuple[bool, bool]:
        rec = await repo.get_instance(self.pool, guid)
        if rec.purged_at is not None or rec.purge_policy is not None:
            for _ in items:
                self.observer.event("dropped", "purged")
            return True, False
        key = f"scan:{guid}"
        holder = self.holder + EVENTS_HOLDER_SUFFIX
        token = await repo.try_acquire_lease(self.pool, key, holder, min(EVENTS_LEASE_TTL, lease_ttl(self.settings)))
        if token is None:
            self.observer.consumer_error("lease_held")
            return False, False
        try:
            return await self._leased(guid, rec, items, key, token)
        finally:
            await repo.release_lease(self.pool, key, holder, token)

    async def _leased(self, guid: str, rec: Any, items: list[tuple[str, S3Event, str]], key: str,
                      token: int) -> tuple[bool, bool]:
        prev = await runner.previous_of(self.pool, guid, rec, full=False)
        if prev.layout is None:            # never scanned: the first scan is a full one, events or not
            return await self._full_scan(guid, [e for _, e, _ in items], key, token, "first scan", ()), True
        layout: Layout = prev.layout
        seg_size = prev.seg_size or DEFAULT_SEG_SIZE
        stanza = prev.stanza or rec.stanza

        def meaning(rel: str) -> Any:
            return classify(layout, stanza, rel, seg_size)

        applied = await cat_events.applied_keys(self.pool, guid, [e.key for _, e, _ in items])
        pending: list[Pending] = []
        for _, e, rel in items:
            t = meaning(rel)
            if t.kind in (Kind.IGNORED, Kind.FOREIGN):
                self.observer.event("ignored", t.kind.value)
                continue
            if t.kind is Kind.BACKUP_PAYLOAD and e.action is Action.REMOVED:
                self.observer.event("ignored", "payload_removed")
                continue
            a = applied.get(e.key)
            v = verdict(e, t, Applied(Action(a.action), a.sequencer) if a else None)
            if v is not Verdict.APPLY:
                self.observer.event("ignored", v.value)
                continue
            if t.kind is Kind.BACKUP_PAYLOAD and t.label in {b.label for b in prev.backups}:
                self.observer.event("ignored", "payload_of_known_backup")
                continue
            pending.append(Pending(e, rel, t))
        if not pending:
            return True, False
        root = rec.storage.normalized_prefix()
        known: dict[tuple[int, int], tuple[str, datetime | None]] = {}
        patterns = sorted({pat for p in pending if p.target.kind is Kind.SEGMENT
                           for pat in neighbour_patterns(p, seg_size)})
        if patterns:
            for k in await cat_events.created_keys(self.pool, guid, root, like=patterns):
                t = meaning(k.key[len(root):])
                if t.kind is Kind.SEGMENT and t.timeline is not None and t.segno is not None:
                    lm = k.event_time.replace(microsecond=0) if k.event_time else None
                    known[(t.timeline, t.segno)] = (k.key, lm)
        store = S3Store(self.s3, rec.storage.bucket)
        out = await apply_events(store, root, prev, pending, known, meaning)
        for _ in range(out.stale_removals):
            self.observer.event("ignored", "stale_removal")
        if out.reconcile is not None:
            log.info("events on %s ask for a reconcile: %s", guid, out.reconcile)
            return await self._full_scan(guid, [p.event for p in pending], key, token, out.reconcile,
                                         [key_event(p) for p in pending]), True
        assert out.write is not None
        await cat_events.save_events(self.pool, guid, out.write, lease_key=key, lease_token=token)
        await derived.refresh_quietly(self.pool, guid)
        for p in pending:
            self.observer.event("applied", p.target.kind.value)
        return True, False

    async def _full_scan(self, guid: str, events: Sequence[S3Event], key: str, token: int, why: str,
                         remember: Sequence[cat_events.KeyEvent]) -> bool:
        # the same holder renews its lease (same token) for as long as a scan may take
        if await repo.try_acquire_lease(self.pool, key, self.holder + EVENTS_HOLDER_SUFFIX,
                                        lease_ttl(self.settings)) != token:
            self.observer.consumer_error("lease_lost")
            return False
        o = await runner.scan_instance(self.pool, self.s3, guid, full=True, settings=self.settings,
                                       lease_key=key, lease_token=token)
        if not o.ok:
            self.observer.consumer_error(o.code or "scan_failed")
            log.warning("reconcile of %s (%s) failed: %s", guid, why, o.message)
            return False
        await cat_events.remember_keys(self.pool, guid, remember,
                                       max((e.time for e in events if e.time is not None), default=None))
        for _ in events:
            self.observer.event("applied", "reconcile")
        return True


__all__ = ["BatchResult", "Consumer", "Index", "NullObserver", "Observer"]
