"""The derived views of a scan after its newest WAL run grew at the end, without recomputing them.

The common event (a WAL segment archived after the last one) moves one run's end and its window edge and
changes nothing else. Recomputing the windows, the Backups document and the coverage facts from the whole
snapshot (a year of backups) for each such event is what limited the event consumer; :func:`extend` derives
the new views from the stored ones instead, or says ``None`` when the change is not of that simple kind (a
backup that may become restorable, a run that is not the last of its timeline, a path whose timeline switch
lies within the new segments, an edge that must fall back to a parent timeline...), and the caller
recomputes as before. The result equals what :func:`recovery.windows.all_windows`,
:func:`recovery.jsonout.archive_to_dict` and :func:`recovery.grading.facts_of` give for the new snapshot
(``tests/recovery/test_viewdelta.py`` checks that over generated archives).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from recovery.grading import ScanFacts, latest_window, window_summary
from recovery.jsonout import window_to_dict
from recovery.lsn import Lsn
from recovery.model import ArchiveSnapshot, BackupStatus, WalRun, WindowEdge
from recovery.timefmt import iso
from recovery.timeline import TimelinePath, TimelineSwitch
from recovery.wal import WalSegment, segment_name
from recovery.windows import CutKind, Window, serve_end

# the members of the archive document after "backups" (recovery.jsonout.archive_to_dict), in order
TAIL_KEYS = ("wal", "holes", "conflicts", "corrupt", "windows")


@dataclass(frozen=True, slots=True)
class Extension:
    """Run ``first..old_last`` of ``timeline`` now ends at ``new_last``; its edge moved with it."""

    timeline: int
    first: int
    old_last: int
    new_last: int
    old_edge: WindowEdge | None      # the stored edge at old_last (dropped)
    new_edge: WindowEdge | None      # the edge at new_last


@dataclass(frozen=True, slots=True)
class Views:
    """The stored derived views of one scan: windows per path, the archive document's members after its
    backups (``TAIL_KEYS``), the coverage facts."""

    windows: dict[tuple[int, ...], list[Window]]
    tail: dict[str, Any]
    facts: ScanFacts


def backup_need(snap: ArchiveSnapshot) -> int:
    """The highest segment a completed backup needs replayed to be restorable (-1: no such backup): while
    the archive's runs end at or past it, more WAL makes no backup newly restorable.

    >>> from recovery.model import Backup, BackupType, Layout
    >>> b = Backup("b", BackupType.FULL, BackupStatus.DONE, 1, Lsn(0x5000028), Lsn(0x7000100), None, None)
    >>> backup_need(ArchiveSnapshot(layout=Layout.WALG, seg_size=16 << 20, backups=(b,), runs=()))
    7
    """
    s = snap.seg_size
    return max((max(b.stop_lsn.value - 1, b.start_lsn.value) // s for b in snap.backups
                if b.status is BackupStatus.DONE and b.start_lsn is not None and b.stop_lsn is not None),
               default=-1)


def system_ids(snap: ArchiveSnapshot) -> frozenset[int]:
    """The system identifiers of the snapshot's backups (what a segment read is checked against)."""
    return frozenset(b.system_id for b in snap.backups if b.system_id)


def _begin(path: TimelinePath, i: int, seg_size: int) -> int:
    return path.entries[i].begin.value // seg_size if i else 0


def extend(views: Views, ext: Extension, *, runs: Sequence[WalRun],
           histories: Mapping[int, Sequence[TimelineSwitch]], seg_size: int, need: int) -> Views | None:
    """The views after ``ext``, given the runs after it, the timeline histories, and :func:`backup_need`
    of the backups (unchanged). None: not a change this function follows; recompute."""
    t, s = ext.timeline, seg_size
    if ext.new_last <= ext.old_last or need > ext.old_last:
        return None                          # no growth, or a done backup may become restorable
    if WalRun(t, ext.first, ext.new_last) not in runs or any(r.timeline == t and r.first > ext.new_last for r in runs):
        return None                          # not the last run of its timeline: holes change
    if ext.new_edge is None or (ext.new_edge.timeline, ext.new_edge.segno) != (t, ext.new_last):
        return None
    for blocked in (*views.tail["conflicts"], *views.tail["corrupt"]):
        if blocked["timeline"] == t and WalSegment.from_name(blocked["segment"], s).segno > ext.old_last:
            return None
    cut = (ext.old_last + 1) * s
    windows: dict[tuple[int, ...], list[Window]] = {}
    for tlis, ws in views.windows.items():
        if t not in tlis:
            windows[tlis] = ws
            continue
        path = TimelinePath.build(tlis[-1], histories.get(tlis[-1], ()))
        if path.tlis != tlis:
            return None
        i = tlis.index(t)
        if i + 1 < len(tlis):                # t leads to a later timeline on this path
            lo, hi = _begin(path, i, s), serve_end(path, _begin(path, i, s), s)
            if ext.old_last < hi and ext.new_last >= lo:
                return None                  # the new segments are on the path: replay may pass the switch
            windows[tlis] = ws
            continue
        out = []
        for w in ws:
            if w.to_lsn.value != cut:
                out.append(w)
                continue
            if w.end_kind is not CutKind.END or path.segment_tli(ext.old_last + 1, s) != t:
                return None
            when = ext.new_edge.last_commit_time
            if when is None and i > 0:
                return None                  # the window's end falls back to the parent timeline's edge
            out.append(replace(w, to_lsn=Lsn((ext.new_last + 1) * s), to_time=when,
                               to_is_exact=bool(ext.new_edge.exact and when is not None)))
        windows[tlis] = out
    holes = _holes(views.facts.holes, t, ext)
    if holes is None:
        return None
    flat = [w for ws in windows.values() for w in ws]
    latest = latest_window(flat)
    facts = replace(
        views.facts, latest_end=latest.to_time if latest else None,
        latest_end_exact=bool(latest and latest.to_is_exact), latest_end_kind=latest.end_kind.value if latest else None,
        holes=holes, hole_after_newest=next((h for h in holes if h["after_newest_backup"]), None),
        archive_bytes=views.facts.archive_bytes + (ext.new_last - ext.old_last) * s,
        windows=tuple(window_summary(w) for w in flat))
    first_name = segment_name(t, ext.first, s)
    wal = []
    found = False
    for r in views.tail["wal"]:
        if r["timeline"] == t and r["first_segment"] == first_name:
            wal.append({**r, "last_segment": segment_name(t, ext.new_last, s), "segments": ext.new_last - ext.first + 1})
            found = True
        else:
            wal.append(r)
    if not found:
        return None
    tail = {**views.tail, "wal": wal, "windows": [window_to_dict(w) for w in flat]}
    return Views(windows, tail, facts)


def _holes(rows: Sequence[dict[str, Any]], t: int, ext: Extension) -> tuple[dict[str, Any], ...] | None:
    """Hole rows after the run end moved: a hole's "before" is the earliest of the later run ends' commits
    (and backup starts) on its timeline, so the moved edge may lower it; when the old edge was that
    earliest, the next one is not known here (None)."""
    old = ext.old_edge.last_commit_time if ext.old_edge is not None else None
    new = ext.new_edge.last_commit_time if ext.new_edge is not None else None
    out = []
    for h in rows:
        if h["timeline"] != t:
            out.append(h)
            continue
        if old is not None and h["before"] == iso(old):
            return None
        cur = _parse(h["before"])
        best = min((x for x in (cur, new) if x is not None), default=None)
        out.append({**h, "before": iso(best)})
    return tuple(out)


def _parse(v: str | None) -> datetime | None:
    return None if v is None else datetime.fromisoformat(v)


__all__ = ["TAIL_KEYS", "Extension", "Views", "backup_need", "extend", "system_ids"]
