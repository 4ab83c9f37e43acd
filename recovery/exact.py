"""Exact targets: a transaction (``before-xid``) or a named restore point (``restore-point``), resolved to
the WAL position recovery stops at (LAYOUTS §8.1, §13). Pure: the facts come from the WAL index (restore
points, per-segment commit summaries) and from commit records read by the caller.

- ``recovery_target_xid`` stops at the commit record of that transaction, in WAL order; with
  ``recovery_target_inclusive = off`` nothing of it is applied. Resolving an xid gives its commit record's
  LSN, time and timeline; the backup is then the newest whose stop LSN precedes that LSN.
- ``recovery_target_name`` stops at the FIRST restore point of that name that replay meets. A name that
  occurs more than once on the timeline path is ambiguous unless ``restore-point-lsn`` picks one; a later
  occurrence cannot be reached by name when an earlier one lies in the replayed WAL (from the backup's start
  on), so the planner then targets that occurrence by LSN (``recovery_target_lsn``, inclusive: replay stops
  right after the restore point record, the same state as stopping at it) — see :func:`by_lsn`.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from recovery.errors import PlanningError
from recovery.lsn import Lsn
from recovery.timefmt import iso_offset
from recovery.timeline import TimelinePath

MAX_NAME_BYTES = 63        # MAXFNAMELEN - 1: pg_create_restore_point's limit
NEAREST = 5                # known xids listed with xid_not_found


@dataclass(frozen=True, slots=True)
class RestorePoint:
    """An ``XLOG_RESTORE_POINT`` record: its name, ``rp_time``, start LSN and the timeline of its file."""

    name: str
    time: datetime
    lsn: Lsn
    timeline: int


@dataclass(frozen=True, slots=True)
class CommitPoint:
    """A transaction's commit (or abort) record read from WAL: ``xid`` is the record header's top xid."""

    xid: int
    time: datetime
    lsn: Lsn
    timeline: int
    kind: str = "commit"     # commit | commit_prepared | abort | abort_prepared

    @property
    def committed(self) -> bool:
        return self.kind in ("commit", "commit_prepared")


@dataclass(frozen=True, slots=True)
class SegmentSummary:
    """The WAL index's compact summary of one archived segment (timeline = the file's, segno = its number):
    commit records in it (count, first and last by WAL order, lowest and highest xid) and how many of its
    transactions were destructive (a drop or truncate, or a mass delete/update)."""

    timeline: int
    segno: int
    commits: int = 0
    first_time: datetime | None = None
    last_time: datetime | None = None
    first_xid: int | None = None
    last_xid: int | None = None
    min_xid: int | None = None
    max_xid: int | None = None
    destructive: int = 0
    key: str | None = None     # the archive object it was read from

    def may_hold(self, xid: int) -> bool:
        return self.min_xid is not None and self.max_xid is not None and self.min_xid <= xid <= self.max_xid


@dataclass(frozen=True, slots=True)
class ExactPoint:
    """A resolved exact target: where recovery stops (``lsn``: the commit or restore point record's start) on
    ``timeline``, at ``time`` (commit time / restore point time). ``earlier``: LSNs of earlier restore points
    of the same name on the path (the planner targets by LSN when one of them would be replayed)."""

    lsn: Lsn
    timeline: int
    time: datetime
    xid: int | None = None
    name: str | None = None
    earlier: tuple[Lsn, ...] = ()


def on_path(path: TimelinePath, timeline: int, lsn: Lsn) -> bool:
    """A record at ``lsn`` in timeline ``timeline``'s WAL is replayed on ``path`` (LAYOUTS §7)."""
    return path.on_path(timeline, lsn)


def summary_on_path(path: TimelinePath, s: SegmentSummary, seg_size: int) -> bool:
    """The segment file is the one recovery along ``path`` restores for its number (XLogFileReadAnyTLI)."""
    return path.entry(s.timeline) is not None and path.segment_tli(s.segno, seg_size) == s.timeline


# -- restore points -------------------------------------------------------------------------------

def _point_dict(p: RestorePoint) -> dict[str, object]:
    return {"name": p.name, "time": p.time, "lsn": p.lsn, "timeline": p.timeline}


def resolve_restore_point(points: Iterable[RestorePoint], name: str, path: TimelinePath,
                          pick: Lsn | None = None) -> ExactPoint:
    """The restore point ``name`` on ``path`` (``pick``: the occurrence at that LSN), or a refusal:
    ``restore_point_unknown`` (the known points on the path listed), ``restore_point_ambiguous`` (each
    occurrence listed)."""
    allp = sorted(points, key=lambda p: (p.lsn, p.timeline))
    here = [p for p in allp if on_path(path, p.timeline, p.lsn)]
    same = [p for p in here if p.name == name]
    where = f"timeline path {list(path.tlis)}"
    if not same:
        elsewhere = [p for p in allp if p.name == name]
        names = sorted({p.name for p in here})
        also = (f"; a restore point of that name exists off this path, on timeline(s) "
                f"{sorted({p.timeline for p in elsewhere})} (choose that timeline)" if elsewhere else "")
        known = f"known: {', '.join(repr(n) for n in names)}" if names else "no restore point is known there"
        raise PlanningError("restore_point_unknown", f"no restore point {name!r} on {where} ({known}){also}",
                            details={"name": name, "timeline_path": list(path.tlis),
                                     "known": [_point_dict(p) for p in here],
                                     "elsewhere": [_point_dict(p) for p in elsewhere]})
    if pick is not None:
        chosen = next((p for p in same if p.lsn == pick), None)
        if chosen is None:
            raise PlanningError("restore_point_unknown",
                                f"restore point {name!r} has no occurrence at LSN {pick} on {where} (occurrences "
                                f"at {', '.join(str(p.lsn) for p in same)})",
                                details={"name": name, "timeline_path": list(path.tlis),
                                         "occurrences": [_point_dict(p) for p in same]})
    elif len(same) > 1:
        raise PlanningError("restore_point_ambiguous",
                            f"restore point {name!r} occurs {len(same)} times on {where}: "
                            + "; ".join(f"{iso_offset(p.time)} at {p.lsn}" for p in same)
                            + "; choose one with restore-point-lsn", details={
                                "name": name, "timeline_path": list(path.tlis),
                                "occurrences": [_point_dict(p) for p in same]})
    else:
        chosen = same[0]
    return ExactPoint(chosen.lsn, chosen.timeline, chosen.time, name=name,
                      earlier=tuple(p.lsn for p in same if p.lsn < chosen.lsn))


def by_lsn(point: ExactPoint, backup_start: Lsn) -> bool:
    """Must a restore point target be written as ``recovery_target_lsn``? Yes when an earlier restore point of
    the same name lies in the WAL replayed from the backup's start: ``recovery_target_name`` would stop there."""
    return any(e >= backup_start for e in point.earlier)


# -- transactions ---------------------------------------------------------------------------------

def xid_segments(summaries: Iterable[SegmentSummary], xid: int, path: TimelinePath,
                 seg_size: int) -> list[SegmentSummary]:
    """The indexed segments on ``path`` whose commits' xid range holds ``xid`` (WAL order): the only ones
    that can hold its commit record."""
    return sorted((s for s in summaries if s.may_hold(xid) and summary_on_path(path, s, seg_size)),
                  key=lambda s: s.segno)


def nearest_xids(xid: int, summaries: Iterable[SegmentSummary], commits: Iterable[CommitPoint],
                 path: TimelinePath, seg_size: int, n: int = NEAREST) -> list[dict[str, object]]:
    """Known committed xids on ``path`` nearest to ``xid``: those read from WAL, and the first and last
    commit of each indexed segment (with their commit times)."""
    known: dict[int, datetime | None] = {}
    for c in commits:
        if c.committed and on_path(path, c.timeline, c.lsn):
            known[c.xid] = c.time
    for s in summaries:
        if not summary_on_path(path, s, seg_size):
            continue
        for x, t in ((s.first_xid, s.first_time), (s.last_xid, s.last_time), (s.min_xid, None), (s.max_xid, None)):
            if x is not None and known.get(x) is None:
                known[x] = t      # the lowest and highest of a segment committed there, at a time not kept
    near = sorted(known, key=lambda x: (abs(x - xid), x))[:n]
    return [{"xid": x, "commit_time": known[x]} for x in sorted(near)]


def resolve_xid(xid: int, commits: Iterable[CommitPoint], path: TimelinePath, *,
                summaries: Sequence[SegmentSummary] = (), seg_size: int = 16 << 20,
                unindexed: int = 0) -> ExactPoint:
    """The commit of ``xid`` on ``path`` among the records read (``commits``), or ``xid_not_found`` with the
    nearest known xids. ``unindexed``: segments on the path the WAL index has not read yet (said in the
    refusal, since the commit may be in one of them)."""
    read = list(commits)
    mine = sorted((c for c in read if c.xid == xid and on_path(path, c.timeline, c.lsn)), key=lambda c: c.lsn)
    done = [c for c in mine if c.committed]
    if done:
        c = done[0]      # PostgreSQL stops at the first commit record of that xid in WAL order
        return ExactPoint(c.lsn, c.timeline, c.time, xid=xid)
    near = nearest_xids(xid, summaries, read, path, seg_size)
    why = (f"transaction {xid} aborted at {iso_offset(mine[0].time)} ({mine[0].lsn}): it changed nothing"
           if mine else f"transaction {xid} did not commit in the archived WAL on timeline path {list(path.tlis)}")
    lag = f"; {unindexed} segment(s) on the path are not indexed yet" if unindexed else ""
    listed = ", ".join(str(d["xid"]) for d in near)
    raise PlanningError("xid_not_found", f"{why}{lag}" + (f" (nearest known: {listed})" if near else ""),
                        details={"xid": xid, "timeline_path": list(path.tlis), "nearest": near,
                                 "aborted": bool(mine), "unindexed_segments": unindexed})


def parse_xid(value: object) -> int:
    """A transaction id as PostgreSQL's ``recovery_target_xid`` takes it: a normal 32-bit xid (>= 3).

    >>> parse_xid("748"), parse_xid(1000)
    (748, 1000)
    """
    if isinstance(value, bool):
        raise PlanningError("invalid_target", f"not a transaction id: {value!r}")
    if isinstance(value, int):
        n = value
    elif isinstance(value, str) and value.strip().isdigit():
        n = int(value.strip())
    else:
        raise PlanningError("invalid_target", f"not a transaction id: {value!r} (expected a number, e.g. 748)")
    if not 3 <= n <= 0xFFFFFFFF:
        raise PlanningError("invalid_target", f"transaction id {value!r} is not a normal xid (3..4294967295)")
    return n


def parse_point_name(value: object) -> str:
    """A restore point name as ``pg_create_restore_point`` accepts it (non-empty, at most 63 bytes)."""
    if not isinstance(value, str) or not value:
        raise PlanningError("invalid_target", f"restore-point must be a non-empty name, got {value!r}")
    if len(value.encode()) > MAX_NAME_BYTES:
        raise PlanningError("invalid_target", f"restore point name {value[:20]!r}... is longer than "
                            f"{MAX_NAME_BYTES} bytes (PostgreSQL's limit)")
    if "\0" in value:
        raise PlanningError("invalid_target", "restore point name contains a NUL byte")
    return value


__all__ = ["CommitPoint", "ExactPoint", "RestorePoint", "SegmentSummary", "by_lsn", "nearest_xids", "on_path",
           "parse_point_name", "parse_xid", "resolve_restore_point", "resolve_xid", "summary_on_path",
           "xid_segments"]
