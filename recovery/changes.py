"""``changes``: which segments to read for a time range, and the answer's document (DESIGN.md "Changes and
exact targets"). Pure: the use case reads the catalog and the segments, this decides and shapes.

Segments: the files recovery along the timeline path would restore (``TimelinePath.segment_tli``), from the
last one known to hold a commit before ``from`` to the first known to hold one after ``to``. What is known:
commit times anchored to segments — the WAL index's per-segment summaries, exact window edges, backups'
start and stop. Commit times follow WAL order only roughly (a commit's time is taken before its record is
inserted), so anchors are trusted with a slack of :data:`SLACK`.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from recovery.errors import PlanningError
from recovery.model import WalRun
from recovery.relnames import FIRST_NORMAL_OID, RelationEntry, RelationNames
from recovery.timefmt import iso
from recovery.timeline import TimelinePath
from recovery.wal import segment_name
from recovery.walrecords import RelFile
from recovery.walsummary import CHANGES_MASS_ROWS, CHANGES_MAX_TRANSACTIONS, RestorePoint, Summary, Transaction

SLACK = timedelta(seconds=1)
_TABLE_KINDS = ("r", "p", "m", "S")   # tables, partitioned tables, materialized views, sequences
CHANGES_MAX_SEGMENTS = 256


class RangeTooLarge(PlanningError):
    """More segments than ``CHANGES_MAX_SEGMENTS`` would have to be read."""

    def __init__(self, need: int, limit: int, first: str, last: str) -> None:
        super().__init__("range_too_large", f"the range needs {need} WAL segments ({first} .. {last}); at most "
                                            f"{limit} are read per request (CHANGES_MAX_SEGMENTS): narrow --from/--to")
        self.need, self.limit = need, limit


class NothingToRead(PlanningError):
    def __init__(self, message: str) -> None:
        super().__init__("no_wal", message)


@dataclass(frozen=True, slots=True)
class Anchor:
    """A commit at ``time`` is in segment ``segno`` (on the path)."""

    segno: int
    time: datetime


@dataclass(frozen=True, slots=True)
class SegmentRange:
    """The segment files to read, in order: (timeline of the file, segno); ``missing``: not archived."""

    files: tuple[tuple[int, int], ...]
    missing: tuple[tuple[int, int], ...]


def present_on_path(path: TimelinePath, runs: Iterable[WalRun], seg_size: int) -> dict[int, int]:
    """segno -> timeline of the file recovery restores for it, for every archived segment on the path."""
    out: dict[int, int] = {}
    for r in runs:
        for n in range(r.first, r.last + 1):
            if path.entry(r.timeline) is not None and path.segment_tli(n, seg_size) == r.timeline:
                out[n] = r.timeline
    return out


def segments_for(path: TimelinePath, runs: Sequence[WalRun], seg_size: int, anchors: Iterable[Anchor],
                 start: datetime, end: datetime, *, limit: int = CHANGES_MAX_SEGMENTS) -> SegmentRange:
    """The segments holding every commit in [start, end], as far as the anchors tell.

    :raises RangeTooLarge: more than ``limit`` files. :raises NothingToRead: no archived WAL on the path.
    """
    present = present_on_path(path, runs, seg_size)
    if not present:
        raise NothingToRead(f"no archived WAL on timeline path {list(path.tlis)}")
    lo, hi = min(present), max(present)
    known = list(anchors)
    first = max((a.segno for a in known if a.time < start - SLACK and lo <= a.segno <= hi), default=lo)
    last = min((a.segno for a in known if a.time > end + SLACK and first <= a.segno <= hi), default=hi)
    files = tuple((present[n], n) for n in range(first, last + 1) if n in present)
    missing = tuple((path.segment_tli(n, seg_size), n) for n in range(first, last + 1) if n not in present)
    if len(files) > limit:
        name = _name(files[0], seg_size), _name(files[-1], seg_size)
        raise RangeTooLarge(len(files), limit, *name)
    return SegmentRange(files, missing)


def _name(f: tuple[int, int], seg_size: int) -> str:
    return segment_name(f[0], f[1], seg_size)


# -- the document ----------------------------------------------------------------------------------------

def _user(rel: RelFile, entry: RelationEntry | None) -> bool:
    """A relation worth listing: not a system catalog (by its map entry, else by its file number)."""
    return (not entry.system) if entry is not None else rel.rel >= FIRST_NORMAL_OID


@dataclass(slots=True)
class _Namer:
    names: RelationNames
    unnamed: set[tuple[int, int]]

    def entry(self, rel: RelFile, at: datetime) -> RelationEntry | None:
        e = self.names.lookup(rel.db, rel.rel, at)
        if e is None and rel.rel >= FIRST_NORMAL_OID:
            self.unnamed.add((rel.db, rel.rel))
        return e

    def relation(self, rel: RelFile, e: RelationEntry | None) -> dict[str, Any]:
        return {"relfilenode": rel.rel, "name": e.qualified if e else None}


def _transaction(t: Transaction, timeline: int, namer: _Namer, mass_rows: int) -> dict[str, Any]:
    dropped, reasons, besides = [], [], 0
    # new files in the same database: TRUNCATE (or a rewrite) replaced the old ones; none: a DROP
    verb = "truncated or rewrote" if any(f.db == rel.db for f in t.created for rel in t.dropped) else "dropped"
    for rel in t.dropped:
        e = namer.entry(rel, t.commit_time)
        if _user(rel, e):
            dropped.append(namer.relation(rel, e))
            if e is None or e.kind in _TABLE_KINDS:
                reasons.append(f"{verb} {e.qualified if e else f'relation file {rel.rel}'}")
            else:
                besides += 1   # its indexes, TOAST table and TOAST index
    if besides:
        reasons = [*reasons[:-1], f"{reasons[-1]} (and {besides} index/TOAST file{'s' if besides > 1 else ''})"] \
            if reasons else [f"{verb} {besides} index/TOAST file{'s' if besides > 1 else ''}"]
    rows = []
    for r in t.rows:
        e = namer.entry(r.rel, t.commit_time)
        if not _user(r.rel, e):
            continue
        rows.append({"relation": namer.relation(r.rel, e), "inserted": r.inserted, "updated": r.updated,
                     "deleted": r.deleted})
        what = e.qualified if e else f"relation file {r.rel.rel}"
        if r.deleted > mass_rows:
            reasons.append(f"deleted {r.deleted} rows of {what}")
        if r.updated > mass_rows:
            reasons.append(f"updated {r.updated} rows of {what}")
    return {"xid": t.xid, "commit_time": iso(t.commit_time), "commit_lsn": str(t.commit_lsn),
            "timeline": timeline, "database_oid": t.db_oid, "destructive": bool(reasons),
            "why": reasons, "subtransactions": len(t.subxacts), "dropped": dropped, "rows": rows}


def _point(p: RestorePoint, timeline: int) -> dict[str, Any]:
    return {"name": p.name, "time": iso(p.time), "lsn": str(p.lsn), "timeline": timeline}


def changes_doc(*, instance_guid: str, path: TimelinePath, start: datetime, end: datetime, summary: Summary,
                names: RelationNames, segments_read: int, mass_rows: int = CHANGES_MASS_ROWS,
                notes: Sequence[str] = (), limit: int = CHANGES_MAX_TRANSACTIONS) -> dict[str, Any]:
    """The ``changes`` answer: transactions committed in [start, end] (destructive first, then by commit
    LSN; at most ``limit`` of them, ``transactions_total`` says how many there were) and restore points in
    it, relations named where a drill's map knows them."""
    namer = _Namer(names, set())
    chosen = [t for t in summary.transactions if start <= t.commit_time <= end]
    txs = [_transaction(t, path.tli_of(t.commit_lsn), namer, mass_rows) for t in chosen]  # WAL order
    txs.sort(key=lambda d: not d["destructive"])  # stable: destructive first, each group by commit LSN
    del txs[limit:]
    points = [_point(p, path.tli_of(p.lsn)) for p in summary.restore_points if start <= p.time <= end]
    out_notes = list(notes)
    if namer.unnamed:
        files = ", ".join(f"{rel} (database {db})" for db, rel in sorted(namer.unnamed)[:10])
        more = f" and {len(namer.unnamed) - 10} more" if len(namer.unnamed) > 10 else ""
        out_notes.append(f"no relation map taken before the change names relation file(s) {files}{more}: "
                         "name is null (maps come from passed restore drills; a drill that restores a time "
                         "before the change names them)")
    if len(chosen) > limit:
        out_notes.append(f"{limit} of {len(chosen)} transactions listed (destructive first): narrow the range "
                         "to see the others")
    return {"instance_guid": instance_guid, "timeline_path": list(path.tlis), "from": iso(start),
            "to": iso(end), "segments_read": segments_read, "mass_rows": mass_rows,
            "transactions": txs, "transactions_total": len(chosen), "truncated": len(chosen) > limit,
            "restore_points": points, "notes": out_notes}
