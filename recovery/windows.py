"""Recoverable windows: how far each base backup can replay along a timeline path (LAYOUTS §7, §8.4).

A backup on path P replays WAL from ``seg(start_lsn)``, taking segment n from the timeline
``P.segment_tli(n)`` (XLogFileReadAnyTLI), until the first segment that is missing or whose
archived copies conflict. It is usable only if that covers ``seg(stop_lsn - 1)``; it can then
stop anywhere from its stop LSN to the cut. The cut's time is the last commit record before it,
taken from a ``WindowEdge`` (exact when decoded from WAL, approximate when only LastModified).

(A little over 400 lines: the index of present segments, the walk along a path, each backup's reach and the
merge into windows are one algorithm, and read best together.)
"""
from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from recovery.lsn import Lsn
from recovery.model import ArchiveSnapshot, Backup, BackupStatus, WalRun, WindowEdge
from recovery.timeline import TimelinePath

INF = 1 << 64   # past any segment number


class CutKind(StrEnum):
    END = "end"            # end of archived WAL on the path
    HOLE = "hole"          # missing segments, with later segments archived on the path
    CONFLICT = "conflict"  # a segment whose archived copies differ (blocks replay through it)
    CORRUPT = "corrupt"    # a segment proved not to be what its name says (replay stops before it)


@dataclass(frozen=True, slots=True)
class Cut:
    """Where replay along a path stops: segments ``first_missing..last_missing`` (path segnos)."""

    kind: CutKind
    first_missing: int
    last_missing: int | None   # None for END (open-ended)


@dataclass(frozen=True, slots=True)
class Reach:
    """How far one backup replays on a path."""

    backup: Backup
    path: TimelinePath
    first_segment: int       # seg(start_lsn)
    last_segment: int        # last contiguous present segment (>= seg(stop_lsn - 1))
    cut: Cut
    end_lsn: Lsn             # first position not replayable: cut.first_missing * S
    end_time: datetime | None
    end_exact: bool
    end_commit_lsn: Lsn | None = None   # start of the last commit record before the cut, when decoded


@dataclass(frozen=True, slots=True)
class Window:
    """Targets on ``timeline_path`` reachable from some backup: from its stop to the cut."""

    timeline_path: tuple[int, ...]
    from_lsn: Lsn
    from_time: datetime | None
    to_lsn: Lsn
    to_time: datetime | None
    to_is_exact: bool
    backups: tuple[str, ...]
    end_kind: CutKind = CutKind.END


class WalIndex:
    """Present segments per timeline (merged runs, bisectable) and the segments replay cannot pass:
    conflicting copies and corrupt segments (``blocks``)."""

    def __init__(self, runs: Iterable[WalRun], conflicts: Iterable[tuple[int, int]] = (),
                 corrupt: Iterable[tuple[int, int]] = ()) -> None:
        merged: dict[int, list[tuple[int, int]]] = {}
        for r in sorted(runs, key=lambda r: (r.timeline, r.first, r.last)):
            spans = merged.setdefault(r.timeline, [])
            if spans and r.first <= spans[-1][1] + 1:
                spans[-1] = (spans[-1][0], max(spans[-1][1], r.last))
            else:
                spans.append((r.first, r.last))
        self._spans = merged
        self._firsts = {t: [s[0] for s in spans] for t, spans in merged.items()}
        kinds: dict[tuple[int, int], CutKind] = dict.fromkeys(conflicts, CutKind.CONFLICT)
        kinds.update(dict.fromkeys(corrupt, CutKind.CORRUPT))   # proven bad wins over "copies differ"
        blocks: dict[int, list[int]] = {}
        for tli, segno in sorted(kinds):
            blocks.setdefault(tli, []).append(segno)
        self._blocks = blocks
        self._kinds = kinds

    @classmethod
    def of(cls, snapshot: ArchiveSnapshot) -> WalIndex:
        return cls(snapshot.runs, snapshot.conflicts, ((c.timeline, c.segno) for c in snapshot.corrupt))

    def runs(self) -> list[WalRun]:
        return [WalRun(t, a, b) for t in sorted(self._spans) for a, b in self._spans[t]]

    def span_containing(self, tli: int, segno: int) -> tuple[int, int] | None:
        firsts = self._firsts.get(tli)
        if not firsts:
            return None
        i = bisect.bisect_right(firsts, segno) - 1
        if i >= 0 and self._spans[tli][i][1] >= segno:
            return self._spans[tli][i]
        return None

    def present(self, tli: int, segno: int) -> bool:
        return self.span_containing(tli, segno) is not None

    def first_present_in(self, tli: int, lo: int, hi: int) -> int | None:
        """Lowest present segment of ``tli`` within ``lo..hi``."""
        firsts = self._firsts.get(tli)
        if not firsts or lo > hi:
            return None
        i = max(bisect.bisect_right(firsts, lo) - 1, 0)
        for a, b in self._spans[tli][i:]:
            if a > hi:
                return None
            if b >= lo:
                return max(a, lo)
        return None

    def last_present_in(self, tli: int, lo: int, hi: int) -> int | None:
        """Highest present segment of ``tli`` within ``lo..hi``."""
        firsts = self._firsts.get(tli)
        if not firsts or lo > hi:
            return None
        i = bisect.bisect_right(firsts, hi) - 1   # the last span starting at or before hi
        if i < 0 or self._spans[tli][i][1] < lo:
            return None
        return min(self._spans[tli][i][1], hi)

    def first_block_in(self, tli: int, lo: int, hi: int) -> tuple[int, CutKind] | None:
        """Lowest segment of ``tli`` within ``lo..hi`` that replay cannot pass, and why."""
        segs = self._blocks.get(tli)
        if not segs:
            return None
        i = bisect.bisect_left(segs, lo)
        if i < len(segs) and segs[i] <= hi:
            return segs[i], self._kinds[(tli, segs[i])]
        return None


def holes(runs: Iterable[WalRun]) -> list[tuple[int, int, int]]:
    """Missing ranges ``(tli, first_missing, last_missing)`` between runs of the same timeline.

    >>> holes([WalRun(1, 2, 5), WalRun(1, 9, 9), WalRun(2, 11, 12), WalRun(1, 6, 7)])
    [(1, 8, 8)]
    """
    out: list[tuple[int, int, int]] = []
    prev: WalRun | None = None
    for r in WalIndex(runs).runs():
        if prev is not None and prev.timeline == r.timeline:
            out.append((r.timeline, prev.last + 1, r.first - 1))
        prev = r
    return out


def _begin_seg(path: TimelinePath, i: int, seg_size: int) -> int:
    return path.entries[i].begin.value // seg_size if i else 0


def serve_end(path: TimelinePath, segno: int, seg_size: int) -> int:
    """Last segment served by the same timeline as ``segno`` on ``path`` (INF when open-ended)."""
    later = [_begin_seg(path, i, seg_size) for i in range(1, len(path.entries))]
    return min((b for b in later if b > segno), default=INF) - 1


def edge_segments(snapshot: ArchiveSnapshot) -> set[tuple[int, int]]:
    """Segments whose last commit the planner may ask for, as (tli, segno), all present.

    The last segment of every run; the segment before a conflicting or corrupt one; and the parent's
    last segment before each timeline switch (a path leaves the parent there even if it kept going).
    """
    idx = WalIndex.of(snapshot)
    out = {(r.timeline, r.last) for r in idx.runs()}
    for tli, segno in (*snapshot.conflicts, *((c.timeline, c.segno) for c in snapshot.corrupt)):
        if segno > 0 and idx.present(tli, segno - 1):
            out.add((tli, segno - 1))
    for tli, history in snapshot.histories.items():
        try:
            path = TimelinePath.build(tli, history)
        except Exception:   # a bad history is reported by the planner, not here
            continue
        for i in range(1, len(path.entries)):
            b = _begin_seg(path, i, snapshot.seg_size)
            if b > 0:
                t = path.segment_tli(b - 1, snapshot.seg_size)
                if idx.present(t, b - 1):
                    out.add((t, b - 1))
    return out


def usable_backups(backups: Sequence[Backup]) -> list[Backup]:
    """Done backups with LSNs whose whole ``depends_on`` chain is present and done."""
    by_label = {b.label: b for b in backups}

    def ok(b: Backup, seen: frozenset[str]) -> bool:
        if not b.usable or b.label in seen:
            return False
        for dep in b.depends_on:
            d = by_label.get(dep)
            if d is None or d.status is not BackupStatus.DONE or not ok(d, seen | {b.label}):
                return False
        return True

    return [b for b in backups if ok(b, frozenset())]


def on_path(backup: Backup, path: TimelinePath) -> bool:
    """LAYOUTS §7: tli_b is in P's history and stop_lsn <= end(tli_b) on P."""
    if backup.timeline is None or backup.stop_lsn is None or path.entry(backup.timeline) is None:
        return False
    end = path.end_of(backup.timeline)
    return end is None or backup.stop_lsn <= end


def _next_present(idx: WalIndex, path: TimelinePath, after: int, seg_size: int) -> int | None:
    """First segment > ``after`` present on the path (from the timeline that serves it)."""
    best: int | None = None
    for i, e in enumerate(path.entries):
        lo = max(_begin_seg(path, i, seg_size), after + 1)
        hi = serve_end(path, _begin_seg(path, i, seg_size), seg_size) if i + 1 < len(path.entries) else INF
        if lo <= hi and path.segment_tli(lo, seg_size) == e.tli:
            n = idx.first_present_in(e.tli, lo, hi)
            if n is not None and (best is None or n < best):
                best = n
    return best


def last_on_path(idx: WalIndex, path: TimelinePath, seg_size: int) -> int | None:
    """The highest segment present on ``path`` (from the timeline that serves it), or None."""
    for i in range(len(path.entries) - 1, -1, -1):
        lo = _begin_seg(path, i, seg_size)
        hi = serve_end(path, lo, seg_size) if i + 1 < len(path.entries) else INF
        if path.segment_tli(lo, seg_size) != path.entries[i].tli:
            continue
        n = idx.last_present_in(path.entries[i].tli, lo, hi)
        if n is not None:
            return n
    return None


def walk(idx: WalIndex, path: TimelinePath, first: int, seg_size: int) -> tuple[int, Cut]:
    """Replay from segment ``first``: (last contiguous present segment, the cut after it)."""
    n = first
    while True:
        tli = path.segment_tli(n, seg_size)
        span = idx.span_containing(tli, n)
        if span is None:
            nxt = _next_present(idx, path, n, seg_size)
            cut = Cut(CutKind.END, n, None) if nxt is None else Cut(CutKind.HOLE, n, nxt - 1)
            return n - 1, cut
        hi = min(span[1], serve_end(path, n, seg_size))
        block = idx.first_block_in(tli, n, hi)
        if block is not None:
            c, kind = block
            return c - 1, Cut(kind, c, c)
        n = hi + 1


def edge_at(snapshot: ArchiveSnapshot, path: TimelinePath, segno: int) -> WindowEdge | None:
    """The last commit at or before path segment ``segno``, falling back to the parent timeline."""
    edges = {(e.timeline, e.segno): e for e in snapshot.edges}
    s = snapshot.seg_size
    while segno >= 0:
        tli = path.segment_tli(segno, s)
        e = edges.get((tli, segno))
        if e is None or e.last_commit_time is not None:
            return e
        # no commit in this timeline's own files: look at the path's previous timeline
        i = path.tlis.index(tli)
        if i == 0:
            return e
        segno = _begin_seg(path, i, s) - 1
    return None


WalkMemo = dict[tuple[int, int, int | None], tuple[int, Cut]]


def _walk_memo(idx: WalIndex, path: TimelinePath, first: int, seg_size: int, memo: WalkMemo | None) -> tuple[int, Cut]:
    """``walk``, shared by backups starting in the same span: from any segment of one present span of one
    timeline, with the same next blocked segment, replay runs into the same cut."""
    if memo is None:
        return walk(idx, path, first, seg_size)
    tli = path.segment_tli(first, seg_size)
    span = idx.span_containing(tli, first)
    if span is None:
        return walk(idx, path, first, seg_size)
    block = idx.first_block_in(tli, first, span[1])
    key = (tli, span[0], None if block is None else block[0])
    if key not in memo:
        memo[key] = walk(idx, path, first, seg_size)
    return memo[key]


def reach(snapshot: ArchiveSnapshot, path: TimelinePath, backup: Backup, idx: WalIndex | None = None,
          memo: WalkMemo | None = None, edge_memo: dict[int, WindowEdge | None] | None = None) -> Reach | None:
    """How far ``backup`` replays on ``path``, or None if it is not usable there."""
    if not on_path(backup, path) or backup.start_lsn is None or backup.stop_lsn is None:
        return None
    s = snapshot.seg_size
    idx = idx or WalIndex.of(snapshot)
    first = backup.start_lsn.segno(s)
    need = max(backup.stop_lsn.value - 1, backup.start_lsn.value) // s
    last, cut = _walk_memo(idx, path, first, s, memo)
    if last < need:
        return None
    if edge_memo is None:
        edge = edge_at(snapshot, path, last)
    elif last in edge_memo:
        edge = edge_memo[last]
    else:
        edge = edge_memo[last] = edge_at(snapshot, path, last)
    when = edge.last_commit_time if edge else None
    exact = bool(edge and edge.exact and when is not None)
    return Reach(backup, path, first, last, cut, Lsn(cut.first_missing * s), when, exact,
                 edge.last_commit_lsn if edge is not None and exact else None)


def missing_reason(snapshot: ArchiveSnapshot, path: TimelinePath, backup: Backup,
                   idx: WalIndex | None = None) -> Cut | None:
    """Why ``backup`` is unusable on ``path``: the cut inside its own start..stop WAL."""
    if not on_path(backup, path) or backup.start_lsn is None:
        return None
    idx = idx or WalIndex.of(snapshot)
    _, cut = walk(idx, path, backup.start_lsn.segno(snapshot.seg_size), snapshot.seg_size)
    return cut


def reaches(snapshot: ArchiveSnapshot, path: TimelinePath, backups: Sequence[Backup] | None = None) -> list[Reach]:
    """Reach of every usable backup on ``path``, oldest stop first."""
    idx = WalIndex.of(snapshot)
    pool = usable_backups(snapshot.backups) if backups is None else backups
    memo: WalkMemo = {}
    edge_memo: dict[int, WindowEdge | None] = {}
    out = [r for b in pool if (r := reach(snapshot, path, b, idx, memo, edge_memo)) is not None]
    return sorted(out, key=lambda r: (r.backup.stop_lsn.value if r.backup.stop_lsn else -1, r.backup.label))


def window_of(r: Reach) -> Window:
    return Window(r.path.tlis, r.backup.stop_lsn or Lsn(0), r.backup.stop_time, r.end_lsn, r.end_time,
                  r.end_exact, (r.backup.label,), r.cut.kind)


def merge(windows: Iterable[Window]) -> list[Window]:
    """Merge overlapping windows of one path (backups sharing the same stretch of WAL).

    Linear after the sort: a merged group is accumulated (labels in a list) and built once.
    """
    out: list[Window] = []
    group: list[Window] = []

    def close() -> None:
        if len(group) == 1:
            out.append(group[0])
            return
        first = group[0]    # sorted: the lowest from_lsn
        times = [w.from_time for w in group if w.from_time is not None]
        later = first
        for w in group[1:]:
            if w.to_lsn.value > later.to_lsn.value:
                later = w
        out.append(Window(first.timeline_path, first.from_lsn, min(times) if times else None,
                          later.to_lsn, later.to_time, later.to_is_exact,
                          tuple(label for w in group for label in w.backups), later.end_kind))

    to_lsn = 0
    for w in sorted(windows, key=lambda w: (w.timeline_path, w.from_lsn.value)):
        if group and group[0].timeline_path == w.timeline_path and w.from_lsn.value <= to_lsn:
            group.append(w)
            to_lsn = max(to_lsn, w.to_lsn.value)
        else:
            if group:
                close()
            group, to_lsn = [w], w.to_lsn.value
    if group:
        close()
    return out


def compute_windows(snapshot: ArchiveSnapshot, path: TimelinePath,
                    backups: Sequence[Backup] | None = None) -> list[Window]:
    """Merged recoverable windows on ``path`` (from usable backups, or the given ones). Pure and
    uncached: a long-running caller keeps windows per snapshot generation itself
    (``backup_catalog.usecases.snapshots``)."""
    return merge(window_of(r) for r in reaches(snapshot, path, backups))


def all_paths(snapshot: ArchiveSnapshot) -> list[TimelinePath]:
    """Every followable timeline path of the archive: one per timeline seen (runs, histories, backups),
    except timelines above 1 without a history file (their ancestry is unknown)."""
    tlis = ({r.timeline for r in snapshot.runs} | set(snapshot.histories)
            | {b.timeline for b in snapshot.backups if b.timeline})
    return [TimelinePath.build(t, snapshot.histories.get(t, ())) for t in sorted(tlis)
            if t == 1 or t in snapshot.histories]


def all_windows(snapshot: ArchiveSnapshot) -> dict[tuple[int, ...], list[Window]]:
    """Windows of every path of :func:`all_paths`, keyed by the path's timelines (from usable backups)."""
    return {p.tlis: compute_windows(snapshot, p) for p in all_paths(snapshot)}


def window_containing(windows: Sequence[Window], label: str) -> Window | None:
    return next((w for w in windows if label in w.backups), None)
