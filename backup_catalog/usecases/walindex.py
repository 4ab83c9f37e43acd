"""Use case: the WAL index job (issue 20) and the exact-target resolution that reads it.

The job reads each archived segment ONCE, after a scan catalogued it (the segments come from ``wal_runs``),
and stores its restore points and a compact commit summary (:mod:`catalog.walindex`), so that a
``restore-point`` target needs no WAL reading at plan time and a ``before-xid`` target reads only the
segments whose xid range holds the xid.

- Under the scan's lease: an instance is indexed only while this replica holds ``scan:<guid>`` (a scan of it
  runs elsewhere: skipped this tick), and every segment is saved fenced by that lease's token.
- Resumable: per instance and timeline a cursor; segments already indexed are never read again.
- Budgeted: ``WAL_INDEX_BYTES_PER_HOUR`` of WAL (decompressed segment bytes) per replica, a token bucket
  holding at most ten minutes' worth (at least one segment); a tick indexes what the bucket allows, oldest
  timeline and segment first, then the next instance.
- Its lag (archived segments from each cursor on) is the gauge ``backup_catalog_wal_index_lag_segments``.

Decoding runs in a worker thread (a 16 MiB segment is CPU work), one segment at a time.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import asyncpg

from backup_catalog.usecases.scan import lease_ttl
from catalog import repo, walindex
from catalog.errors import CatalogError, Conflict
from catalog.rows import InstanceRecord
from catalog.walindex import IndexedSegment
from recovery.errors import PitrError, PlanningError
from recovery.exact import (
    CommitPoint,
    SegmentSummary,
    resolve_restore_point,
    resolve_xid,
    summary_on_path,
    xid_segments,
)
from recovery.model import ArchiveSnapshot
from recovery.plan import resolve_path
from recovery.target import Target, TargetKind
from recovery.walrecords import Carry, decode_segment
from recovery.walsummary import CHANGES_MASS_ROWS, segment_summary
from scheduler.edges import read_segment
from scheduler.runner import ScanConfig
from scheduler.storage import NotFound, ObjectStore, S3Store
from scheduler.walfetch import locate, wal_roots

log = logging.getLogger(__name__)

DEFAULT_BYTES_PER_HOUR = 8 << 30     # 512 segments of 16 MiB an hour per replica
BATCH = 64                            # segments located with one listing
XID_MAX_SEGMENTS = 32                 # segments a before-xid resolution may read at plan time


class WalIndexConfig(ScanConfig, Protocol):
    @property
    def wal_index_bytes_per_hour(self) -> int: ...


class Budget:
    """A token bucket of WAL bytes: ``bytes_per_hour`` refill, at most ten minutes' worth (or one segment)."""

    def __init__(self, bytes_per_hour: int, *, clock: Callable[[], float] = time.monotonic,
                 burst_seconds: float = 600.0, seg_size: int = 16 << 20) -> None:
        self.rate = max(0.0, bytes_per_hour / 3600.0)
        self.cap = max(self.rate * burst_seconds, float(seg_size)) if self.rate else 0.0
        self.tokens = self.cap
        self._clock = clock
        self._last = clock()

    def available(self) -> float:
        now = self._clock()
        self.tokens = min(self.cap, self.tokens + (now - self._last) * self.rate)
        self._last = now
        return self.tokens

    def spend(self, n: int) -> None:
        self.tokens -= n


@dataclass(slots=True)
class IndexOutcome:
    instance_guid: str
    indexed: int = 0
    restore_points: int = 0
    problems: list[str] = field(default_factory=list)
    skipped: str | None = None      # lease_held | budget | not_scanned
    lag: int = 0


async def _read(store: ObjectStore, key: str, segno: int, size: int, carry: Carry | None) -> Any:
    raw = await read_segment(store, key)
    return await asyncio.to_thread(decode_segment, raw, seg_size=size, expected_segno=segno, carry=carry)


async def index_instance(pool: asyncpg.Pool, store: ObjectStore, rec: InstanceRecord, budget: Budget, *,
                         lease_key: str, lease_token: int, mass_rows: int = CHANGES_MASS_ROWS,
                         batch: int = BATCH) -> IndexOutcome:
    """Index the instance's next not-yet-indexed segments, as many as the budget allows (at most ``batch``)."""
    out = IndexOutcome(rec.guid)
    state = await walindex.index_state(pool, rec.guid)
    size, layout = state.seg_size or rec.seg_size, rec.layout
    if not state.runs or not size or layout is None:
        out.skipped = "not_scanned"
        return out
    afford = int(budget.available() // size)
    if afford <= 0:
        out.skipped = "budget"
        out.lag = await walindex.unindexed_segments(pool, rec.guid)
        return out
    tlis = sorted({r.timeline for r in state.runs})
    done = {t: await walindex.indexed_segnos(pool, rec.guid, t, state.cursors.get(t, 0),
                                             max(r.last for r in state.runs if r.timeline == t)) for t in tlis}
    todo = walindex.segments_to_index(state.runs, state.cursors, done, min(afford, batch))
    if todo:
        roots = await wal_roots(store, layout, rec.storage.prefix, rec.stanza or rec.storage.stanza)
        objs = await locate(store, roots, todo, size)
        carries: dict[tuple[int, int], Carry | None] = {}
        for tli, segno in todo:
            obj = objs.get((tli, segno))
            seg: IndexedSegment
            if obj is None:
                seg = IndexedSegment(SegmentSummary(tli, segno), problem="not in the archive when indexed")
            else:
                carry = carries[(tli, segno - 1)] if (tli, segno - 1) in carries else \
                    await walindex.carry_before(pool, rec.guid, tli, segno)
                budget.spend(size)
                try:
                    decoded = await _read(store, obj.key, segno, size, carry)
                except NotFound:
                    seg = IndexedSegment(SegmentSummary(tli, segno, key=obj.key), problem="vanished before it was read")
                except (PitrError, ValueError) as e:      # not a segment, cannot be decompressed here, ...
                    seg = IndexedSegment(SegmentSummary(tli, segno, key=obj.key), problem=str(e)[:500])
                else:
                    summary, points, _ = segment_summary(decoded.records, tli, segno, key=obj.key, mass_rows=mass_rows)
                    seg = IndexedSegment(summary, points, decoded.carry)
                    carries[(tli, segno)] = decoded.carry
            if seg.problem:
                out.problems.append(f"{tli:08X}/{segno:X}: {seg.problem}")
            await walindex.save_segment(pool, rec.guid, seg, next_segno=None, lease_key=lease_key,
                                        lease_token=lease_token)
            done.setdefault(tli, set()).add(segno)
            out.indexed += 1
            out.restore_points += len(seg.points)
    for t in tlis:
        cur = state.cursors.get(t, 0)
        nxt = walindex.next_cursor(state.runs, t, cur, done.get(t, set()))
        if nxt != cur or t not in state.cursors:
            await walindex.set_cursor(pool, rec.guid, t, nxt, lease_key=lease_key, lease_token=lease_token)
    out.lag = await walindex.unindexed_segments(pool, rec.guid)
    return out


async def run_once(pool: asyncpg.Pool, settings: WalIndexConfig, client: Any, holder: str, budget: Budget, *,
                   guids: Sequence[str] | None = None, mass_rows: int = CHANGES_MASS_ROWS) -> list[IndexOutcome]:
    """One tick of the job: live instances with archived WAL not indexed yet (one query finds them, so a
    fleet with nothing new costs no lease), in turn, each under its scan lease, until the budget runs out."""
    lags = await walindex.lag_by_instance(pool)
    recs = [r for r in await repo.list_instances(pool, include_deleted=False)
            if (guids is None or r.guid in guids) and lags.get(r.guid, 0) > 0]
    out: list[IndexOutcome] = []
    for rec in recs:
        key = f"scan:{rec.guid}"
        try:
            token = await repo.try_acquire_lease(pool, key, holder, lease_ttl(settings))
        except (CatalogError, asyncpg.PostgresError, OSError) as e:
            log.warning("WAL index of %s not run: %s", rec.guid, type(e).__name__)
            continue
        if token is None:
            out.append(IndexOutcome(rec.guid, skipped="lease_held"))
            continue
        try:
            o = await index_instance(pool, S3Store(client, rec.storage.bucket), rec, budget, lease_key=key,
                                     lease_token=token, mass_rows=mass_rows)
        except Conflict as e:
            log.warning("WAL index of %s fenced: %s", rec.guid, e)
            o = IndexOutcome(rec.guid, skipped="fenced")
        except Exception:      # one archive's failure never stops the others
            log.exception("WAL index of %s failed", rec.guid)
            o = IndexOutcome(rec.guid, skipped="error")
        finally:
            await repo.release_lease(pool, key, holder, token)
        out.append(o)
        if o.skipped == "budget":
            break
    return out


async def index_listed(pool: asyncpg.Pool, settings: Any, guids: Sequence[str], holder: str, *,
                       mass_rows: int = CHANGES_MASS_ROWS) -> list[IndexOutcome]:
    """One index pass over ``guids`` with this process's own S3 client and a fresh budget (the CLI's ``scan``)."""
    from scheduler.clients import s3_client  # botocore: the CLI's scan only; serve hands its client in
    async with s3_client(settings) as client:
        return await run_once(pool, settings, client, holder, Budget(settings.wal_index_bytes_per_hour),
                              guids=guids, mass_rows=mass_rows)


# -- exact targets at plan time ---------------------------------------------------------------------

async def commits_in(store: ObjectStore, rec: InstanceRecord, segments: Sequence[SegmentSummary],
                     seg_size: int) -> list[CommitPoint]:
    """The commit/abort records of indexed segments, read again from the archive (by their stored keys)."""
    out: list[CommitPoint] = []
    for s in segments:
        if not s.key:
            continue
        try:
            decoded = await _read(store, s.key, s.segno, seg_size, None)
        except NotFound:
            raise PlanningError("xid_not_found", f"WAL segment {s.key} vanished from the archive since it was "
                                "indexed; scan the instance again") from None
        out.extend(segment_summary(decoded.records, s.timeline, s.segno, key=s.key)[2])
    return out


async def resolve_target(pool: asyncpg.Pool, rec: InstanceRecord, snap: ArchiveSnapshot, target: Target, *,
                         store: Callable[[], Any] | None = None) -> Target:
    """An exact target with its point resolved from the WAL index (time/LSN targets are returned as given).

    ``store``: an async context manager factory giving the archive's ObjectStore (only a before-xid target
    reads segments; None: such a target is refused as not resolvable here).
    """
    if not target.exact:
        return target
    path = resolve_path(snap, target.timeline)
    if target.kind is TargetKind.NAME:
        points = await walindex.restore_points(pool, rec.guid)
        try:
            return replace(target, point=resolve_restore_point(points, target.name, path, target.pick))
        except PlanningError as e:
            lag = await walindex.unindexed_segments(pool, rec.guid) if e.code == "restore_point_unknown" else 0
            if lag:      # the point may be in WAL the index has not read yet: say so
                e.message += f"; {lag} archived segment(s) are not indexed yet"
                e.args = (e.message,)
                e.details["unindexed_segments"] = lag
            raise
    xid = target.xid
    sums = await walindex.summaries_for_xid(pool, rec.guid, xid)
    cands = xid_segments(sums, xid, path, snap.seg_size)
    if len(cands) > XID_MAX_SEGMENTS:
        raise PlanningError("range_too_large", f"transaction {xid} may have committed in any of {len(cands)} "
                            f"segments (long-running transactions widen the xid ranges); at most "
                            f"{XID_MAX_SEGMENTS} are read for a plan", details={"segments": len(cands)})
    commits: list[CommitPoint] = []
    if cands:
        if store is None:
            raise PlanningError("invalid_target", "a before-xid target reads WAL from the archive: plan it "
                                "with S3 access (the service, or the CLI with the S3 settings)")
        async with store() as s:
            commits = await commits_in(s, rec, cands, snap.seg_size)
    near = [s for s in await walindex.summaries_near_xid(pool, rec.guid, xid) if summary_on_path(path, s, snap.seg_size)]
    unindexed = await walindex.unindexed_segments(pool, rec.guid)
    return replace(target, point=resolve_xid(xid, commits, path, summaries=[*cands, *near], seg_size=snap.seg_size,
                                             unindexed=unindexed))


__all__ = ["Budget", "DEFAULT_BYTES_PER_HOUR", "IndexOutcome", "WalIndexConfig", "commits_in", "index_instance",
           "resolve_target", "run_once"]
