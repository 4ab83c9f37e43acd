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
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

import asyncpg

from backup_catalog.usecases.event_types import BatchResult, Index, NullObserver, Observer
from backup_catalog.usecases.event_views import known_loader, view_after
from backup_catalog.usecases.scan import lease_ttl
from catalog import eventround, repo, scancache
from catalog import events as cat_events
from catalog.errors import CatalogError, Conflict, NotScanned, UnknownInstance
from recovery.errors import PitrError
from recovery.model import Layout
from recovery.wal import DEFAULT_SEG_SIZE
from scheduler import runner, scanning
from scheduler.eventapply import Outcome, Pending, apply_events, key_event
from scheduler.eventroute import Applied, Kind, Target, Verdict, classify, verdict
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


@dataclass(slots=True)
class _Work:
    """One instance's share of a round."""

    guid: str
    items: list[tuple[str, S3Event, str]]
    state: eventround.RoundState | None = None
    token: int | None = None
    pending: list[Pending] = field(default_factory=list)
    prev: scanning.Previous | None = None
    outcome: Outcome | None = None
    done: bool | None = None             # committed (True) / left on the queue (False) / not yet (None)
    reconciled: bool = False
    full_scan: str | None = None         # why this instance gets a full scan instead


@dataclass(slots=True)
class Consumer:
    """Everything a round needs; one per ``serve`` process (its per-instance locks serialise rounds that
    share an instance).

    A round is every message handed to :meth:`process` at once (the stream hands it what several receives
    brought): the instances' leases are taken, their state read, their event keys looked up and their
    writes stored in a handful of statements for all of them; the WAL reads run ``reads`` at a time.
    """

    pool: asyncpg.Pool
    s3: Any
    settings: runner.ScanConfig
    holder: str
    index: Index
    observer: Observer = field(default_factory=NullObserver)
    max_receives: int = 5
    trust_sequencer: bool = True     # false: events are handled as if they had no sequencer
    reads: int = 32                  # WAL segment reads (edge reads) in flight per round
    followed: int = 0                # writes whose derived views were followed, not recomputed (diagnostics)
    recomputed: int = 0              # ... and those recomputed after the write
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
        work = [_Work(g, items) for g, items in sorted(per_guid.items())]
        if work:
            async with contextlib.AsyncExitStack() as stack:
                for w in work:                       # in instance order: concurrent rounds never cross-wait
                    await stack.enter_async_context(self.locks[w.guid])
                await self._round(work)
        for w in work:
            if not w.done:
                failed.update(mid for mid, _, _ in w.items)
        by_id = {m.id: m for m in messages}
        return BatchResult(tuple(by_id[i].receipt for i in sorted(ok - failed)), tuple(sorted(failed)),
                           tuple(w.guid for w in work if w.reconciled))

    # -- the round ------------------------------------------------------------------------------------

    async def _round(self, work: list[_Work]) -> None:
        holder = self.holder + EVENTS_HOLDER_SUFFIX
        try:
            tokens = await repo.try_acquire_leases(self.pool, [f"scan:{w.guid}" for w in work], holder,
                                                   min(EVENTS_LEASE_TTL, lease_ttl(self.settings)))
        except (CatalogError, asyncpg.PostgresError, OSError) as e:
            self._all_failed(work, e)
            return
        held = {f"scan:{w.guid}": tokens[f"scan:{w.guid}"] for w in work if f"scan:{w.guid}" in tokens}
        renewing = asyncio.create_task(self._renew(holder, held))
        try:
            await self._leased(work, tokens)
        except (CatalogError, asyncpg.PostgresError, OSError, PitrError) as e:
            self._all_failed([w for w in work if w.done is None], e)
        finally:
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing
            try:
                await repo.release_leases(self.pool, holder, held)
            except (asyncpg.PostgresError, OSError) as e:    # they expire (EVENTS_LEASE_TTL)
                log.warning("event leases not released: %s", e)

    async def _renew(self, holder: str, held: dict[str, int]) -> None:
        """Keep the round's leases while it runs (a long round outlives EVENTS_LEASE_TTL): a consumer that
        dies stops renewing, and its instances are free again within the TTL."""
        ttl = min(EVENTS_LEASE_TTL, lease_ttl(self.settings))
        while True:
            await asyncio.sleep(ttl / 3)
            try:
                await repo.renew_leases(self.pool, holder, held, ttl)
            except (asyncpg.PostgresError, OSError) as e:      # the save is fenced if they are lost
                log.warning("event leases not renewed: %s", e)

    def _all_failed(self, work: Sequence[_Work], e: Exception) -> None:
        for w in work:
            w.done = False
            self.observer.consumer_error(getattr(e, "code", None) or type(e).__name__)
        log.warning("events for %d instance(s) not applied (left on the queue): %s", len(work), e)

    async def _leased(self, work: list[_Work], tokens: dict[str, int]) -> None:
        t0 = time.monotonic()
        states = await eventround.load_round(self.pool, [w.guid for w in work])
        t1 = time.monotonic()
        live: list[_Work] = []
        for w in work:
            w.token = tokens.get(f"scan:{w.guid}")
            w.state = states.get(w.guid)
            if w.state is None:
                self._drop(w, "no_instance", "unknown instance")
            elif w.state.rec.purged_at is not None or w.state.rec.purge_policy is not None:
                self._drop(w, "purged", None)
            elif w.token is None:
                self.observer.consumer_error("lease_held")
                w.done = False
            elif w.state.generation is None or w.state.rec.detected_layout is None:
                w.full_scan = "first scan"      # never scanned: the first scan is a full one, events or not
            else:
                live.append(w)
        applied = await eventround.applied_keys_of(self.pool, [(w.guid, e.key) for w in live for _, e, _ in w.items])
        sem = asyncio.Semaphore(self.reads)

        async def one(w: _Work) -> None:
            async with sem:
                try:
                    await self._apply(w, applied)
                except (Conflict, CatalogError, asyncpg.PostgresError, OSError, PitrError) as e:
                    w.done = False
                    self.observer.consumer_error(getattr(e, "code", None) or type(e).__name__)
                    log.warning("events for %s not applied (left on the queue): %s", w.guid, e)
        t2 = time.monotonic()
        await asyncio.gather(*(one(w) for w in live))
        t3 = time.monotonic()
        writes = [w for w in live if w.done is None and w.outcome is not None and w.outcome.write is not None]
        await self._save(writes)
        t4 = time.monotonic()
        slow = [w for w in work if w.done is None and w.full_scan is not None]
        await asyncio.gather(*(self._reconcile(w) for w in slow))
        log.debug("round of %d instance(s): load %.3f s, keys %.3f s, reads %.3f s, save %.3f s, %d full scan(s) "
                  "%.3f s", len(work), t1 - t0, t2 - t1, t3 - t2, t4 - t3, len(slow), time.monotonic() - t4)

    def _drop(self, w: _Work, reason: str, why: str | None) -> None:
        for _ in w.items:
            self.observer.event("dropped", reason)
        if why:
            log.info("events for %s dropped: %s", w.guid, why)
        w.done = True

    async def _apply(self, w: _Work, applied: dict[tuple[str, str], cat_events.KeyEvent]) -> None:
        """The verdicts and the reads of one instance; its write is left in ``w.outcome``."""
        st = w.state
        assert st is not None
        rec = st.rec
        assert rec.detected_layout is not None
        layout: Layout = rec.detected_layout
        seg_size = rec.seg_size or DEFAULT_SEG_SIZE
        stanza = rec.stanza

        def meaning(rel: str) -> Target:
            return classify(layout, stanza, rel, seg_size)

        view = st.view
        needs_backups = view is None or view.system_ids is None or any(
            meaning(rel).kind in (Kind.BACKUP_META, Kind.BACKUP_PAYLOAD) for _, _, rel in w.items)
        if needs_backups:     # backup events (rare) read the backups, as a scan's incremental start does
            prev = await runner.previous_of(self.pool, w.guid, rec, full=False)
        else:
            prev = scanning.Previous(layout=layout, stanza=stanza, seg_size=rec.seg_size, runs=st.runs,
                                     histories=frozenset(st.histories), edges=st.edges)
        w.prev = prev
        labels = {b.label for b in prev.backups}
        for _, e, rel in w.items:
            t = meaning(rel)
            if t.kind in (Kind.IGNORED, Kind.FOREIGN):
                self.observer.event("ignored", t.kind.value)
                continue
            if t.kind is Kind.BACKUP_PAYLOAD and e.action is Action.REMOVED:
                self.observer.event("ignored", "payload_removed")
                continue
            a = applied.get((w.guid, e.key))
            v = verdict(e, t, Applied(Action(a.action), a.sequencer) if a else None)
            if v is not Verdict.APPLY:
                self.observer.event("ignored", v.value)
                continue
            if t.kind is Kind.BACKUP_PAYLOAD and t.label in labels:
                self.observer.event("ignored", "payload_of_known_backup")
                continue
            w.pending.append(Pending(e, rel, t))
        if not w.pending:
            w.done = True
            return
        root = rec.storage.normalized_prefix()
        known = known_loader(self.pool, w.guid, root, w.pending, seg_size, meaning)
        store = S3Store(self.s3, rec.storage.bucket)
        ids = None if needs_backups or view is None else view.system_ids
        out = await apply_events(store, root, prev, w.pending, known, meaning, system_ids=ids)
        for _ in range(out.stale_removals):
            self.observer.event("ignored", "stale_removal")
        if out.reconcile is not None:
            log.info("events on %s ask for a reconcile: %s", w.guid, out.reconcile)
            w.full_scan = out.reconcile
        w.outcome = out

    async def _save(self, writes: list[_Work]) -> None:
        """The round's writes in one transaction (the derived views with them where they follow); if the
        catalog refuses it, each instance on its own, so that one bad write does not hold back the rest."""
        if not writes:
            return
        items = []
        for w in writes:
            assert w.state is not None and w.state.generation is not None and w.outcome is not None
            assert w.outcome.write is not None and w.token is not None
            items.append(eventround.RoundWrite(
                w.guid, w.outcome.write, f"scan:{w.guid}", w.token, w.state.generation, w.state.runs,
                view_after(w.state, w.outcome.write)))
        try:
            saved = await eventround.save_round(self.pool, items)
        except (CatalogError, asyncpg.PostgresError) as e:
            log.warning("a round of %d instance(s) not saved at once (%s); saving them one by one", len(items), e)
            await asyncio.gather(*(self._save_one(w) for w in writes))
            return
        stale = []
        for w in writes:
            if w.guid in saved.lost:
                self.observer.consumer_error("lease_lost")
                w.done = False
                continue
            w.done = True
            self._applied(w)
            if w.guid not in saved.views:
                stale.append(w.guid)
        self.followed += len(saved.views)
        self.recomputed += len(stale)
        await self._refresh(stale)

    async def _save_one(self, w: _Work) -> None:
        assert w.outcome is not None and w.outcome.write is not None and w.token is not None
        try:
            await cat_events.save_events(self.pool, w.guid, w.outcome.write, lease_key=f"scan:{w.guid}",
                                         lease_token=w.token)
        except (Conflict, CatalogError, asyncpg.PostgresError, OSError) as e:
            w.done = False
            self.observer.consumer_error(getattr(e, "code", None) or type(e).__name__)
            log.warning("events for %s not applied (left on the queue): %s", w.guid, e)
            return
        w.done = True
        self._applied(w)
        await scancache.refresh_quietly(self.pool, w.guid)

    def _applied(self, w: _Work) -> None:
        for p in w.pending:
            self.observer.event("applied", p.target.kind.value)

    async def _refresh(self, guids: Sequence[str]) -> None:
        """Derived views recomputed where the round could not follow them (a few at a time)."""
        sem = asyncio.Semaphore(4)

        async def one(g: str) -> None:
            async with sem:
                await scancache.refresh_quietly(self.pool, g)
        await asyncio.gather(*(one(g) for g in guids))

    async def _reconcile(self, w: _Work) -> None:
        assert w.full_scan is not None
        if w.token is None:
            w.done = False
            return
        events = [p.event for p in w.pending] if w.pending else [e for _, e, _ in w.items]
        w.done = await self._full_scan(w.guid, events, f"scan:{w.guid}", w.token, w.full_scan,
                                       [key_event(p) for p in w.pending] if w.outcome is not None else ())
        w.reconciled = True

    async def _full_scan(self, guid: str, events: Sequence[S3Event], key: str, token: int, why: str,
                         remember: Sequence[cat_events.KeyEvent]) -> bool:
        # the same holder renews its lease (same token) for as long as a scan may take
        try:
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
        except (UnknownInstance, NotScanned) as e:
            for _ in events:
                self.observer.event("dropped", "no_instance")
            log.info("events for %s dropped: %s", guid, e)
            return True
        except (Conflict, CatalogError, asyncpg.PostgresError, OSError, PitrError) as e:
            self.observer.consumer_error(getattr(e, "code", None) or type(e).__name__)
            log.warning("events for %s not applied (left on the queue): %s", guid, e)
            return False
        for _ in events:
            self.observer.event("applied", "reconcile")
        return True


__all__ = ["BatchResult", "Consumer", "Index", "NullObserver", "Observer"]
