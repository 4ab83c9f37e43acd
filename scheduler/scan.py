"""Scan one instance's archive prefix into a ScanResult (incremental by default, ``full`` reconciles).

The layout's module (:func:`scheduler.layouts.spec_of`) reads the small metadata (never backup payload)
and lists WAL with StartAfter from a resume point ``lookback`` segments before the newest known segment
(:mod:`scheduler.scanning`); here: which layout, duplicate copies of a segment compared by the layout's
rule, and the commit timestamps of segments at window edges decoded.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from datetime import datetime, timezone

from catalog.scanresult import ScanResult, WalConflict, WalMode
from recovery.model import Layout, Storage
from recovery.wal import merge_runs
from scheduler import edges as edge_mod
from scheduler.edges import SegmentChecks, read_segment
from scheduler.layouts import spec_of
from scheduler.layouts.common import UnknownLayout
from scheduler.layouts.detect import detect_layout, guess_walg_or_wale
from scheduler.scanning import Acc, Previous, ScanFailed
from scheduler.storage import NotFound, ObjectStore, StorageError
from scheduler.walscan import RunTail

log = logging.getLogger(__name__)


async def scan_archive(store: ObjectStore, storage: Storage, previous: Previous, *, full: bool,
                       lookback: int = 32, now: datetime | None = None) -> ScanResult:
    """Scan one archive. Raises ScanFailed (storage unreachable, unknown prefix, …); never partial results."""
    started = now or datetime.now(timezone.utc)
    root = storage.normalized_prefix()
    acc = Acc()
    acc.builder.watch = frozenset(previous.corrupt) if full else frozenset()   # incremental scans keep them
    if not full:
        acc.cursors.update({k: v for k, v in previous.cursors.items() if k.startswith("etag:")})
    try:
        layout = await _layout(store, storage, previous, root)
        res = await spec_of(layout).scan(store, storage, previous, root, acc, full, lookback)
        await _check_duplicates(store, layout, acc)
    except StorageError as e:
        raise ScanFailed(e.code, str(e)) from None
    stanza, seg_size, backups, pg_version, system_id = (res.stanza, res.seg_size, res.backups, res.pg_version,
                                                        res.system_id)
    runs = acc.builder.wal_runs()
    mode = WalMode.REPLACE if full else WalMode.MERGE
    all_runs = runs if full else merge_runs((*previous.runs, *runs))
    # a full reconcile re-reads every run end (objects may have been replaced); incremental reuses known edges.
    # Segments read are checked against their names and the archive's system identifiers.
    system_ids = {b.system_id for b in (backups if backups is not None else previous.backups) if b.system_id}
    checks = SegmentChecks(layout, frozenset(system_ids | ({system_id} if system_id else set())))
    found = await edge_mod.decode_edges(store, acc.builder.runs, all_runs, () if full else previous.edges,
                                        seg_size, acc.issues, checks=checks,
                                        recheck={k: v for k, v in acc.builder.watched.items() if k in acc.builder.watch},
                                        blocked={(c.timeline, c.segno): acc.builder.watched[(c.timeline, c.segno)]
                                                 for c in acc.conflicts if (c.timeline, c.segno) in acc.builder.watched})
    edges = tuple({(e.timeline, e.segno): e for e in found.edges}.values())
    # a segment with several copies: the edge reader judged one copy; the conflict is what blocks restores
    bad = {(c.timeline, c.segno): c.detail for c in found.corrupt}
    conflicts = tuple(replace(c, detail=f"{c.detail}; one copy is not the segment its name says: "
                                        f"{bad[(c.timeline, c.segno)]}")
                      if (c.timeline, c.segno) in bad else c for c in acc.conflicts)
    corrupt = tuple(c for c in found.corrupt if (c.timeline, c.segno) not in {(x.timeline, x.segno)
                                                                               for x in acc.conflicts})
    return ScanResult(
        layout=layout, full=full, started_at=started, finished_at=datetime.now(timezone.utc), stanza=stanza,
        seg_size=seg_size, pg_version=pg_version, system_id=system_id, backups=backups,
        histories=acc.histories, listed_histories=frozenset(acc.listed_histories) if full else None,
        wal_mode=mode, wal_runs=runs, conflicts=conflicts, corrupt=corrupt, edges=edges,
        cursors=acc.cursors, unknown_objects=acc.unknown, issues=tuple(acc.issues),
        requests=store.requests, integrity_ok=acc.integrity_ok)


async def _layout(store: ObjectStore, storage: Storage, previous: Previous, root: str) -> Layout:
    if storage.layout and storage.layout != "auto":
        return Layout(storage.layout)
    if previous.layout:
        return previous.layout
    listing = await store.list_dir(root)
    entries = {p[len(root):] for p in listing.prefixes} | {o.key[len(root):] for o in listing.objects}
    if not entries:
        raise ScanFailed("empty_prefix", f"nothing found under s3://{getattr(store, 'bucket', '?')}/{root}: "
                         "is the prefix right?")
    try:
        layout = detect_layout(entries)
    except UnknownLayout as e:
        raise ScanFailed(getattr(e, "code", "unknown_layout"),
                         f"s3://{getattr(store, 'bucket', '?')}/{root}: {e}; pass --layout") from None
    return layout or await _walg_or_wale(store, root)


async def _walg_or_wale(store: ObjectStore, root: str) -> Layout:
    """Tell WAL-G from WAL-E by one sentinel's fields, sentinel names, or WAL suffixes."""
    listing = await store.list_dir(root + "basebackups_005/")
    sentinels = [o.key for o in listing.objects if o.key.endswith("_backup_stop_sentinel.json")]
    data = None
    if sentinels:
        try:
            data = await store.read(sentinels[0])
        except NotFound:
            pass
    sample: list[str] = []
    async for o in store.list_keys(root + "wal_005/"):
        sample.append(o.key)
        if len(sample) >= 20:
            break
    return guess_walg_or_wale(sample, data, sentinels)


async def _check_duplicates(store: ObjectStore, layout: Layout, acc: Acc) -> None:
    """Compare the copies of every segment listed twice; different content is a ``wal_conflict``.

    A copy that 404s was listed a moment ago: a race with retention or cleanup (``not_found_race``), never a
    conflict (that would block planning through the segment on no evidence). The surviving copy is the
    segment: run ends that pointed at the vanished key now point at it (their commit times are read from it).
    """
    vanished: set[str] = set()
    stand_in: dict[str, str] = {}     # a vanished first copy -> the copy that stands for it (a third copy
    for tli, segno, first, b in acc.builder.duplicates:   # was recorded against the first one)
        a = stand_in.get(first, first)
        detail = await _compare_duplicates(store, layout, a, b, vanished, acc)
        if detail:
            acc.conflicts.append(WalConflict(tli, segno, detail))
        for gone, survivor in ((a, b), (b, a)):
            if gone in vanished and survivor not in vanished:
                acc.builder.replace_key(gone, survivor)
                stand_in[gone] = survivor


async def _compare_duplicates(store: ObjectStore, layout: Layout, a: str, b: str, vanished: set[str],
                              acc: Acc) -> str | None:
    """Two objects for one segment: the layout's rule on their names decides when it can (``same_segment``:
    pgBackRest's archive-get refuses two checksums whatever the bytes), else identical content is fine and
    different content is a conflict (the tools that fetch one copy without comparing them).
    """
    spec = spec_of(layout)
    by_name = spec.same_segment(a, b)
    if by_name is True:
        return None
    refused = by_name is False
    if a in vanished or b in vanished:
        return None
    got = await asyncio.gather(read_segment(store, a), read_segment(store, b), return_exceptions=True)
    for k, r in zip((a, b), got):
        if isinstance(r, NotFound):
            vanished.add(k)
            acc.issue("not_found_race", k, "duplicate copy of a segment vanished after listing, while the copies "
                      "were compared: the other copy is the segment")
    if a in vanished or b in vanished:
        return None
    for r in got:                # storage trouble (after retries) fails the scan, like anywhere else
        if isinstance(r, StorageError):
            raise r
    for r in got:
        if isinstance(r, BaseException) and not isinstance(r, Exception):
            raise r
    if refused:
        same = "identical" if got[0] == got[1] and not isinstance(got[0], Exception) else "different"
        return (f"two copies with different checksums for one segment ({same} content): {a} and {b}; "
                f"{spec.duplicates_note}")
    for r in got:
        if isinstance(r, Exception):
            return f"duplicate objects {a} and {b} could not be compared: {r}"   # e.g. an undecodable copy
    if got[0] == got[1]:
        return None
    return f"two objects with different content for one segment: {a} and {b}"


__all__ = ["Previous", "RunTail", "ScanFailed", "scan_archive"]
