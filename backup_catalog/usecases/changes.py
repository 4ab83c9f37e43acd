"""Use case: what happened between two times (issue 20, DESIGN.md "Changes and exact targets"), for the CLI's
``changes`` and ``GET /spaces/{space}/services/{name}/changes``.

Resolve the name (the holder at ``from``, as clone requests do), take the newest timeline's path, choose the
segment files covering the range (:func:`recovery.changes.segments_for`: at most ``CHANGES_MAX_SEGMENTS``),
fetch them one after the other through the storage port (each decompressed in memory, bounded by the
segment size; never a copy of the range on disk), decode them off the event loop
(:mod:`recovery.walrecords`), fold the records into committed transactions (:mod:`recovery.walsummary`) and
name their relations from drills' maps (:mod:`catalog.relmaps`). Read-only: the archive is never written.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

import asyncpg

from catalog import relmaps, repo, walindex
from catalog.errors import NotScanned
from recovery.changes import CHANGES_MAX_SEGMENTS, SLACK, Anchor, NothingToRead, SegmentRange, changes_doc, segments_for
from recovery.errors import PlanningError
from recovery.exact import SegmentSummary
from recovery.model import ArchiveSnapshot
from recovery.relnames import RelationNames
from recovery.timefmt import iso_offset
from recovery.timeline import TimelinePath, build_paths
from recovery.wal import segment_name
from recovery.walreader import BadWal
from recovery.walrecords import Carry, DecodedSegment, XactEnd, decode_segment
from recovery.walsummary import CHANGES_MASS_ROWS, CHANGES_MAX_TRANSACTIONS, Summariser
from scheduler.edges import codec_of, read_segment
from scheduler.layouts.common import decompress
from scheduler.storage import ObjectStore, S3Store
from scheduler.walfetch import locate, wal_roots


class BadRange(PlanningError):
    def __init__(self, message: str) -> None:
        super().__init__("invalid_range", message)


def check_range(start: datetime, end: datetime) -> None:
    if start.tzinfo is None or end.tzinfo is None:
        raise BadRange("--from and --to need a zone (Z or an offset such as +02:00)")
    if end <= start:
        raise BadRange(f"--to ({iso_offset(end)}) must be after --from ({iso_offset(start)})")
    if start.year < 1900 or end.year > 9000:
        raise BadRange("--from and --to must lie between the years 1900 and 9000")


def _path(snap: ArchiveSnapshot) -> TimelinePath:
    tlis = {r.timeline for r in snap.runs} | set(snap.histories)
    if not tlis:
        raise NothingToRead("the archive holds no WAL")
    return build_paths(snap.histories, sorted(tlis))[max(tlis)]


def anchors_of(snap: ArchiveSnapshot, path: TimelinePath, indexed: Sequence[SegmentSummary] = ()) -> list[Anchor]:
    """Known (segment, time) pairs on the path: the WAL index's segment summaries (first and last commit),
    backups' start and stop, exact window edges."""
    size = snap.seg_size
    out: list[Anchor] = []
    for s in indexed:   # its first commit is in it; the WAL after its last commit begins at the next segment
        if path.entry(s.timeline) is not None and path.segment_tli(s.segno, size) == s.timeline:
            out += [Anchor(n, t) for n, t in ((s.segno, s.first_time), (s.segno + 1, s.last_time)) if t is not None]
    for b in snap.backups:
        if b.timeline is None or path.entry(b.timeline) is None:
            continue
        for lsn, when in ((b.start_lsn, b.start_time), (b.stop_lsn, b.stop_time if b.stop_time_exact else None)):
            if lsn is not None and when is not None and path.on_path(b.timeline, lsn):
                out.append(Anchor(lsn.value // size, when))
    for e in snap.edges:
        if e.exact and e.last_commit_time is not None and path.segment_tli(e.segno, size) == e.timeline:
            out.append(Anchor(e.segno, e.last_commit_time))
    return out


async def _fetch(store: ObjectStore, key: str, seg_size: int) -> bytes:
    codec = codec_of(key)
    if codec == "lzo":
        return await read_segment(store, key)
    return decompress(await store.read(key), codec, max_size=seg_size)


async def _segments(store: ObjectStore, keys: dict[tuple[int, int], str], files: Sequence[tuple[int, int]],
                    seg_size: int) -> AsyncIterator[tuple[tuple[int, int], bytes | None]]:
    """The files' bytes in order (None: not found), the next one fetched while the current is decoded."""
    nxt: asyncio.Task[bytes] | None = None

    def start(i: int) -> asyncio.Task[bytes] | None:
        key = keys.get(files[i]) if i < len(files) else None
        return asyncio.ensure_future(_fetch(store, key, seg_size)) if key else None

    nxt = start(0)
    try:
        for i, f in enumerate(files):
            cur, nxt = nxt, start(i + 1)
            yield f, (await cur) if cur is not None else None
    finally:
        if nxt is not None:
            nxt.cancel()


async def changes(pool: asyncpg.Pool, client: Any, space: str, name: str, start: datetime, end: datetime, *,
                  max_segments: int = CHANGES_MAX_SEGMENTS, mass_rows: int = CHANGES_MASS_ROWS,
                  limit: int = CHANGES_MAX_TRANSACTIONS, store: ObjectStore | None = None) -> dict[str, Any]:
    """The ``changes`` document. :raises BadRange, RangeTooLarge, UnknownService, NotScanned."""
    check_range(start, end)
    rec = (await repo.resolve_name(pool, space, name, at=start)).record
    snap = await repo.load_snapshot(pool, rec.guid)
    if snap.layout is None:
        raise NotScanned(rec.guid)
    path = _path(snap)
    indexed = await walindex.summaries_around(pool, rec.guid, start - SLACK, end + SLACK)
    chosen = segments_for(path, snap.runs, snap.seg_size, anchors_of(snap, path, indexed), start, end,
                          limit=max_segments)
    store = store or S3Store(client, rec.storage.bucket)
    roots = await wal_roots(store, snap.layout, rec.storage.prefix, rec.stanza or rec.storage.stanza)
    found = await locate(store, roots, chosen.files, snap.seg_size)
    keys = {k: o.key for k, o in found.items()}
    first = chosen.files[0] if chosen.files else None
    known = await walindex.carry_before(pool, rec.guid, *first) if first else None  # the record crossing into it
    carry = Carry(known.lsn, known.total_len, known.head) if known else None
    summary, read, notes = await _read(store, keys, chosen, snap.seg_size, end, carry)
    wanted = {(f.db, f.rel) for t in summary.transactions if start <= t.commit_time <= end
              for f in (*t.dropped, *(r.rel for r in t.rows))}
    names = await relmaps.names_for(pool, rec.guid, wanted, end) if wanted else RelationNames.of(())
    notes += [f"segment {segment_name(t, n, snap.seg_size)} is not archived: what it held is not listed"
              for t, n in chosen.missing]
    notes.append("rows are counted from the WAL read (from the first segment on): a transaction that began "
                 "earlier may show fewer rows")
    return changes_doc(instance_guid=rec.guid, path=path, start=start, end=end, summary=summary, names=names,
                       segments_read=read, mass_rows=mass_rows, notes=notes, limit=limit)


async def _read(store: ObjectStore, keys: dict[tuple[int, int], str], chosen: SegmentRange, seg_size: int,
                end: datetime, carry: Carry | None) -> tuple[Any, int, list[str]]:
    """Decode the chosen files in order (``carry``: the record crossing into the first, when the index kept
    it); stop after the first one whose commits all follow ``end``."""
    acc, notes, read = Summariser(), [], 0
    prev: int | None = None
    async for (tli, segno), data in _segments(store, keys, chosen.files, seg_size):
        name = segment_name(tli, segno, seg_size)
        if data is None:
            notes.append(f"segment {name} was not found in the archive: what it held is not listed")
            carry = prev = None
            continue
        if prev is not None and segno != prev + 1:
            carry = None
        try:
            decoded: DecodedSegment = await asyncio.to_thread(
                decode_segment, data, seg_size=seg_size, expected_segno=segno, carry=carry)
        except BadWal as e:
            notes.append(f"segment {name} could not be read: {e.message}")
            carry = prev = None
            continue
        read += 1
        for r in decoded.records:
            acc.add(r)
        carry, prev = decoded.carry, segno
        if decoded.end_of_valid_wal is not None:
            notes.append(f"valid WAL ends inside segment {name} at {decoded.end_of_valid_wal}")
            break
        times = [r.time for r in decoded.records if isinstance(r, XactEnd)]
        if times and min(times) > end + SLACK:
            break
    return acc.result(), read, notes
