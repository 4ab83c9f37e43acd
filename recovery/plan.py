"""The recovery planner: a target and an archive snapshot in, a RecoveryPlan or a refusal out.

Pure: no I/O and no clock (``now`` is a parameter). Rules (LAYOUTS §7, §8; RELIABILITY 6-9):
choose the newest complete backup on the target timeline path whose stop precedes the target and
whose WAL is contiguous from its start segment to the target; refuse with a PlanningError code
otherwise (``target_before_window``, ``target_after_window``, ``wal_gap``, ``wal_conflict``,
``wal_corrupt``, ``no_usable_backup``, ``unknown_timeline``, ``integrity_error``).

``latest`` along a path whose WAL is cut after the chosen backup (a hole, a conflicting or a corrupt
segment) is planned to the last reachable point, with a warning naming what cannot be replayed:
PostgreSQL itself recovers up to the cut and promotes, and that is the newest state the archive gives.
A time or LSN target at or past the cut stays refused. Exact targets (before-xid, restore-point) arrive
resolved to their WAL record (:mod:`recovery.exact`) and are planned like an LSN at that record.

(A little over 400 lines: the settings of every target kind and the refusals they share read as one piece.)
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from recovery.errors import BadHistory, PlanningError
from recovery.exact import by_lsn
from recovery.lsn import Lsn
from recovery.model import ArchiveSnapshot, Backup
from recovery.narrow import backup_key, candidate_order, is_candidate, narrow, narrowable
from recovery.target import Target, TargetKind
from recovery.timefmt import iso
from recovery.timeline import TimelinePath
from recovery.wal import segment_name, valid_seg_size
from recovery.windows import (
    Cut,
    CutKind,
    Reach,
    WalIndex,
    Window,
    compute_windows,
    last_on_path,
    missing_reason,
    on_path,
    reach,
    usable_backups,
    window_containing,
)

Setting = tuple[str, object]   # (GUC name, datetime | Lsn | bool | int | str)
LONG_PAGE_HEADER = 40          # MAXALIGN(sizeof(XLogLongPageHeaderData)): a segment's first record starts here


@dataclass(frozen=True, slots=True)
class RecoveryPlan:
    """Restore ``backup``, replay segments ``first_segment..last_segment`` along ``timeline_path``."""

    backup: Backup
    target: Target
    timeline_path: tuple[int, ...]
    first_segment: str
    last_segment: str
    segments: int
    window: Window
    recovery_settings: tuple[Setting, ...]
    warnings: tuple[str, ...] = ()
    end_of_wal: bool = False      # no recovery_target: replay all archived WAL on the path
    pg_version: int | None = None
    # the LSN replay must reach: end of WAL plans, the later of the last decoded commit record before the
    # end and the last segment's first record position; target plans, the recovery stop the target implies
    # (None: unknown)
    end_lsn: Lsn | None = None
    last_commit_time: datetime | None = None   # end of WAL plans: the last archived commit, when decoded

    def setting(self, name: str) -> object | None:
        return next((v for k, v in self.recovery_settings if k == name), None)


# -- timeline paths ---------------------------------------------------------------------------

def _build_path(snapshot: ArchiveSnapshot, tli: int) -> TimelinePath:
    if tli != 1 and tli not in snapshot.histories:
        raise PlanningError("unknown_timeline",
                            f"timeline {tli} has WAL or backups but its history file {tli:08X}.history "
                            "is not in the archive; its ancestry is unknown", details={"timeline": tli})
    try:
        return TimelinePath.build(tli, snapshot.histories.get(tli, ()))
    except BadHistory as e:
        raise PlanningError("integrity_error", f"history of timeline {tli} is invalid: {e}",
                            details={"timeline": tli}) from None


def _observed_timelines(snapshot: ArchiveSnapshot) -> set[int]:
    return {r.timeline for r in snapshot.runs} | {b.timeline for b in snapshot.backups if b.timeline}


def resolve_path(snapshot: ArchiveSnapshot, request: str | int) -> TimelinePath:
    """The path of ``latest`` (highest timeline with a history file, or 1) or of timeline N."""
    known = {1} | set(snapshot.histories)
    observed = _observed_timelines(snapshot)
    if request == "latest":
        return _build_path(snapshot, max(known | observed))
    if isinstance(request, int):
        if request in known or request in observed:
            return _build_path(snapshot, request)
        raise PlanningError("unknown_timeline",
                            f"timeline {request} is not in the archive (known: {sorted(known | observed)})",
                            details={"timeline": request})
    raise PlanningError("invalid_target", f"timeline {request!r} cannot be resolved to a path here")


# -- selection --------------------------------------------------------------------------------

Pair = tuple[Backup, TimelinePath | PlanningError]


class WindowsUnknown(Exception):
    """The windows given with a *narrowed* snapshot lack the requested path: its windows cannot be
    computed from the candidates alone (plan from the whole snapshot instead)."""


def _pairs(snapshot: ArchiveSnapshot, target: Target, pool: Sequence[Backup],
           known: Mapping[tuple[int, ...], Sequence[Window]] | None = None,
           narrowed: bool = False) -> tuple[list[Pair], list[Window]]:
    """Candidate (backup, path) pairs and the windows to show with a refusal (``known``: precomputed;
    a path they lack is computed from the snapshot, unless it is ``narrowed``)."""
    if target.timeline == "current":
        paths: dict[int, TimelinePath | PlanningError] = {}
        pairs: list[Pair] = []
        for b in pool:
            assert b.timeline is not None
            if b.timeline not in paths:
                try:
                    paths[b.timeline] = _build_path(snapshot, b.timeline)
                except PlanningError as e:
                    paths[b.timeline] = e
            pairs.append((b, paths[b.timeline]))
        windows = [w for t, p in sorted(paths.items()) if isinstance(p, TimelinePath)
                   for w in compute_windows(snapshot, p, [b for b in pool if b.timeline == t])]
        return pairs, windows
    path = resolve_path(snapshot, target.timeline)
    if known is not None and path.tlis in known:
        windows = list(known[path.tlis])
    elif known is not None and narrowed:
        raise WindowsUnknown(path.tlis)
    else:
        windows = compute_windows(snapshot, path, pool)
    return [(b, path) for b in pool if on_path(b, path)], windows


def _newest_key(target: Target) -> Callable[[Pair], tuple[object, ...]]:
    key = backup_key(target)
    return lambda p: key(p[0])


def _seg(path: TimelinePath, segno: int, seg_size: int) -> str:
    return segment_name(path.segment_tli(segno, seg_size), segno, seg_size)


def _cut_refusal(r: Reach, snapshot: ArchiveSnapshot, windows: Sequence[Window], why: str) -> PlanningError:
    s, cut, path = snapshot.seg_size, r.cut, r.path
    first = _seg(path, cut.first_missing, s)
    last = _seg(path, cut.last_missing if cut.last_missing is not None else cut.first_missing, s)
    horizon = (f"{iso(r.end_time) or 'unknown'}{'' if r.end_exact else ' (approximate)'}, LSN {r.end_lsn}")
    before = window_containing(windows, r.backup.label)
    after = next((w for w in windows if w.timeline_path == path.tlis and w.from_lsn >= r.end_lsn), None)
    details: dict[str, object] = {"timeline_path": list(path.tlis), "first_missing": first, "last_missing": last,
                                  "horizon_time": r.end_time, "horizon_lsn": r.end_lsn,
                                  "horizon_is_exact": r.end_exact, "window_before": before, "window_after": after}
    if cut.kind is CutKind.CONFLICT:
        return PlanningError("wal_conflict",
                             f"{why}: WAL segment {first} {_conflict_reason(snapshot, path, cut.first_missing)}, so replay cannot pass it "
                             f"on timeline path {list(path.tlis)}; recoverable up to {horizon}",
                             windows=tuple(windows), details=details)
    if cut.kind is CutKind.CORRUPT:
        reason = _corrupt_reason(snapshot, path, cut.first_missing)
        details["segment"], details["reason"] = first, reason
        return PlanningError("wal_corrupt",
                             f"{why}: WAL segment {first} is corrupt ({reason}), so replay cannot pass it on "
                             f"timeline path {list(path.tlis)}; recoverable up to {horizon}",
                             windows=tuple(windows), details=details)
    nxt = (f"; the next window starts at {iso(after.from_time) or 'unknown'} (backup {after.backups[0]})"
           if after else "; no backup after the gap")
    return PlanningError("wal_gap",
                         f"{why}: WAL segments {first}..{last} are missing on timeline path {list(path.tlis)}; "
                         f"recoverable up to {horizon}{nxt}", windows=tuple(windows), details=details)


def _conflict_reason(snapshot: ArchiveSnapshot, path: TimelinePath, segno: int) -> str:
    """Tool-neutral; what the tool does with the copies is the scanner's note (the layout's own words)."""
    tli = path.segment_tli(segno, snapshot.seg_size)
    note = snapshot.conflict_notes.get((tli, segno))
    return "has conflicting archived copies" + (f" ({note})" if note else "")


def _corrupt_reason(snapshot: ArchiveSnapshot, path: TimelinePath, segno: int) -> str:
    tli = path.segment_tli(segno, snapshot.seg_size)
    return next((c.reason for c in snapshot.corrupt if (c.timeline, c.segno) == (tli, segno)),
                "not the segment its name says")


def _cut_warning(r: Reach, snapshot: ArchiveSnapshot) -> str:
    """Why ``latest`` stops before the cut, and what later WAL it cannot reach."""
    s, cut, path = snapshot.seg_size, r.cut, r.path
    first = _seg(path, cut.first_missing, s)
    last = _seg(path, cut.last_missing if cut.last_missing is not None else cut.first_missing, s)
    if cut.kind is CutKind.HOLE:
        what = f"WAL segments {first}..{last} are missing" if first != last else f"WAL segment {first} is missing"
        after = cut.last_missing + 1 if cut.last_missing is not None else cut.first_missing + 1
    elif cut.kind is CutKind.CORRUPT:
        what = f"WAL segment {first} is corrupt ({_corrupt_reason(snapshot, path, cut.first_missing)})"
        after = cut.first_missing
    else:
        what = f"WAL segment {first} {_conflict_reason(snapshot, path, cut.first_missing)}"
        after = cut.first_missing
    end = last_on_path(WalIndex.of(snapshot), path, s)
    later = (f"the later archived WAL {_seg(path, after, s)}..{_seg(path, end, s)} cannot be reached"
             if end is not None and end >= after else "no later WAL can be reached")
    how = "" if r.end_exact else "approximately (object LastModified) "
    stop = (f"the last archived commit before it, {how}at {iso(r.end_time)}" if r.end_time is not None
            else "a point whose last commit time is unknown")
    return (f"the newest reachable state is not the end of the archive: {what} on timeline path {list(path.tlis)}; "
            f"recovering to the end of WAL before it ({_seg(path, r.last_segment, s)}, {stop}); {later}")


def _unusable(pairs: Sequence[Pair], snapshot: ArchiveSnapshot, windows: Sequence[Window],
              skipped: Sequence[tuple[Backup, Cut | None]], what: str) -> PlanningError:
    details: dict[str, object] = {"backups": [p[0].label for p in pairs]}
    if skipped:
        b, cut = skipped[0]
        details["newest_candidate"] = b.label
        if cut is not None:
            path = next(p for bb, p in pairs if bb is b)
            assert isinstance(path, TimelinePath)
            details["first_missing"] = _seg(path, cut.first_missing, snapshot.seg_size)
            return PlanningError("no_usable_backup",
                                 f"no backup {what} has its own WAL: backup {b.label} needs segment "
                                 f"{details['first_missing']} ({cut.kind.value})", windows=tuple(windows),
                                 details=details)
    return PlanningError("no_usable_backup", f"no complete backup {what}", windows=tuple(windows), details=details)


def _choose(snapshot: ArchiveSnapshot, target: Target, pairs: list[Pair],
            windows: list[Window]) -> Reach:
    cands = sorted((p for p in pairs if is_candidate(p[0], target)), key=_newest_key(target), reverse=True)
    where = "on the requested timeline path" if target.timeline != "current" else "in the archive"
    if not cands:
        if not pairs:
            raise _unusable(pairs, snapshot, windows, (), where)
        if target.kind is TargetKind.TIME and all(p[0].stop_time is None for p in pairs):
            raise PlanningError("no_usable_backup", f"no backup {where} has a known stop time",
                                windows=tuple(windows))
        first = min(windows, key=lambda w: w.from_lsn) if windows else None
        since = f" (the earliest window starts at {iso(first.from_time) or 'unknown'}, LSN {first.from_lsn})" if first else ""
        raise PlanningError("target_before_window",
                            f"target {_describe(target)} is before the end of every backup {where}{since}",
                            windows=tuple(windows))
    idx = WalIndex.of(snapshot)
    skipped: list[tuple[Backup, Cut | None]] = []
    for b, path in cands:
        if isinstance(path, PlanningError):
            raise path
        r = reach(snapshot, path, b, idx)
        if r is not None:
            return r
        skipped.append((b, missing_reason(snapshot, path, b, idx)))
    raise _unusable(cands, snapshot, windows, skipped, where)


def _describe(target: Target) -> str:
    if target.kind is TargetKind.TIME:
        return iso(target.time) + ("" if target.inclusive else " (exclusive)")
    if target.kind is TargetKind.LSN:
        return str(target.lsn) + ("" if target.inclusive else " (exclusive)")
    if target.kind is TargetKind.XID:
        return f"before transaction {target.value}" + (f" (commit at {target.point.lsn})" if target.point else "")
    if target.kind is TargetKind.NAME:
        return f"restore point {target.value!r}" + (f" (at {target.point.lsn})" if target.point else "")
    return target.kind.value


# -- the planner ------------------------------------------------------------------------------

def _check_integrity(snapshot: ArchiveSnapshot) -> None:
    if snapshot.integrity_errors:
        raise PlanningError("integrity_error", "the archive's metadata is unreadable: "
                            + "; ".join(snapshot.integrity_errors),
                            details={"errors": list(snapshot.integrity_errors)})
    if not valid_seg_size(snapshot.seg_size):
        raise PlanningError("integrity_error", f"invalid WAL segment size {snapshot.seg_size}")


def pg_major(version: int | None) -> int | None:
    """Major version from 15, 150018, 90600 or 110000.

    >>> pg_major(15), pg_major(150018), pg_major(90624), pg_major(None)
    (15, 15, 9, None)
    """
    if version is None:
        return None
    return version if version < 100 else version // 10000


@dataclass(frozen=True, slots=True)
class TargetSettings:
    settings: tuple[Setting, ...]
    warnings: tuple[str, ...]
    end_of_wal: bool
    last: int                  # segment number replay ends in
    timeline: str | int        # recovery_target_timeline


def target_settings(snapshot: ArchiveSnapshot, target: Target, r: Reach,
                    path_windows: Sequence[Window]) -> TargetSettings:
    """The recovery settings a target needs once its backup and reach are chosen (or a refusal): the
    recovery_target_* lines, the warnings they imply, and whether the plan replays to the end of WAL."""
    s = snapshot.seg_size
    b = r.backup
    assert b.stop_lsn is not None and b.start_lsn is not None
    warnings: list[str] = []
    settings: list[Setting] = []
    end_of_wal = False
    last = r.last_segment
    tl = target.timeline
    if target.kind is TargetKind.IMMEDIATE:
        last = max(b.stop_lsn.value - 1, b.start_lsn.value) // s
        settings.append(("recovery_target", "immediate"))
        tl = "current"
    elif target.kind is TargetKind.LSN:
        if target.lsn >= r.end_lsn:
            if r.cut.kind is CutKind.END:
                raise PlanningError("target_after_window",
                                    f"target LSN {target.lsn} is after the end of archived WAL on timeline path "
                                    f"{list(r.path.tlis)} ({r.end_lsn})", windows=tuple(path_windows))
            raise _cut_refusal(r, snapshot, path_windows, f"target LSN {target.lsn} cannot be reached")
        last = target.lsn.segno(s)
        settings.append(("recovery_target_lsn", target.lsn))
        if not target.inclusive:
            settings.append(("recovery_target_inclusive", False))
    elif target.exact:
        last = _exact_settings(snapshot, target, r, path_windows, settings, warnings)
    elif target.kind is TargetKind.LATEST:
        if r.cut.kind is not CutKind.END:
            warnings.append(_cut_warning(r, snapshot))
        end_of_wal = True
    else:
        t = target.time
        if r.end_time is None:
            settings.append(("recovery_target_time", t))
            warnings.append(f"the last archived commit time on timeline path {list(r.path.tlis)} is unknown "
                            f"(segment {_seg(r.path, last, s)} not decoded); if no commit after the target was "
                            "archived, PostgreSQL 13+ stops with 'recovery ended before configured recovery "
                            "target was reached'")
        elif t < r.end_time or (not target.inclusive and t == r.end_time):
            settings.append(("recovery_target_time", t))
            if not r.end_exact:
                warnings.append(f"the window end {iso(r.end_time)} is approximate (object LastModified, "
                                "not a decoded commit record)")
        elif r.cut.kind is CutKind.END:
            end_of_wal = True
            how = "" if r.end_exact else "approximately (object LastModified) "
            warnings.append(f"target {iso(t)} is after the last archived commit on timeline path "
                            f"{list(r.path.tlis)}, which is {how}at {iso(r.end_time)}; recovering to the end "
                            f"of archived WAL ({_seg(r.path, last, s)}) without a recovery target")
        elif t == r.end_time and r.end_exact and target.inclusive:
            # the target is the last commit replay can reach: PostgreSQL would wait for a later commit to
            # stop at and fail (LAYOUTS §12); replaying to the cut without a target gives exactly the target
            end_of_wal = True
            warnings.append(f"target {iso(t)} is the last commit before the cut; " + _cut_warning(r, snapshot))
        else:
            raise _cut_refusal(r, snapshot, path_windows, f"target {_describe(target)} cannot be reached")
        if not end_of_wal and not target.inclusive:
            settings.append(("recovery_target_inclusive", False))
    settings.append(("recovery_target_timeline", tl))
    if not end_of_wal:
        settings.append(("recovery_target_action", target.action))
    return TargetSettings(tuple(settings), tuple(warnings), end_of_wal, last, tl)


def _exact_settings(snapshot: ArchiveSnapshot, target: Target, r: Reach, path_windows: Sequence[Window],
                    settings: list[Setting], warnings: list[str]) -> int:
    """recovery_target_xid (not inclusive) or recovery_target_name (or, for a later occurrence of a repeated
    name, recovery_target_lsn inclusive: see :func:`recovery.exact.by_lsn`); returns the last segment."""
    point = target.resolved
    if not r.path.on_path(point.timeline, point.lsn):
        raise PlanningError("invalid_target", f"target {_describe(target)} is on timeline {point.timeline}, "
                            f"not on timeline path {list(r.path.tlis)}", windows=tuple(path_windows))
    if point.lsn >= r.end_lsn:
        if r.cut.kind is CutKind.END:
            raise PlanningError("target_after_window",
                                f"target {_describe(target)} is after the end of archived WAL on timeline path "
                                f"{list(r.path.tlis)} ({r.end_lsn})", windows=tuple(path_windows))
        raise _cut_refusal(r, snapshot, path_windows, f"target {_describe(target)} cannot be reached")
    assert r.backup.start_lsn is not None
    if target.kind is TargetKind.XID:
        settings.append(("recovery_target_xid", str(target.xid)))
        settings.append(("recovery_target_inclusive", False))
    elif by_lsn(point, r.backup.start_lsn):
        settings.append(("recovery_target_lsn", point.lsn))
        warnings.append(f"restore point {target.name!r} also occurs earlier in the WAL replayed from backup "
                        f"{r.backup.label} (at {', '.join(str(e) for e in point.earlier)}), where "
                        f"recovery_target_name would stop; this occurrence is targeted by its LSN {point.lsn} "
                        "(recovery stops right after the restore point record)")
    else:
        settings.append(("recovery_target_name", target.name))
    return point.lsn.segno(snapshot.seg_size)


def plan_recovery(snapshot: ArchiveSnapshot, target: Target, *, now: datetime,
                  pg_version: int | None = None,
                  windows: Mapping[tuple[int, ...], Sequence[Window]] | None = None,
                  narrowed: bool = False) -> RecoveryPlan:
    """Choose a backup and the WAL to reach ``target``, or raise PlanningError.

    ``windows``: the archive's windows per path (:func:`recovery.windows.all_windows` of the *whole*
    snapshot), when known; a path they lack is computed here. With them the snapshot may be ``narrowed``
    to the newest candidate backups (see :func:`narrowable`): the plan is the same as from the whole
    snapshot whenever this returns one choosing a backup of the prefix. A refusal from a narrowed snapshot
    is not authoritative, nor is a path the windows lack (:class:`WindowsUnknown`): plan from the whole
    snapshot instead.
    """
    _check_integrity(snapshot)
    pool = usable_backups(snapshot.backups)
    known = windows if windows is not None and narrowable(target) else None
    pairs, path_windows = _pairs(snapshot, target, pool, known, narrowed)
    if target.kind is TargetKind.TIME and target.time > now:
        raise PlanningError("target_after_window",
                            f"target {iso(target.time)} is in the future (now {iso(now)})",
                            windows=tuple(path_windows))
    if not pool:
        incomplete = [f"{b.label} ({b.status.value})" for b in snapshot.backups]
        raise PlanningError("no_usable_backup",
                            "no complete backup in the archive" + (f"; incomplete or unusable: {', '.join(incomplete)}"
                                                                   if incomplete else ""),
                            windows=tuple(path_windows), details={"backups": incomplete})
    r = _choose(snapshot, target, pairs, path_windows)
    s = snapshot.seg_size
    b = r.backup
    assert b.stop_lsn is not None and b.start_lsn is not None
    ts = target_settings(snapshot, target, r, path_windows)
    settings, warnings = list(ts.settings), list(ts.warnings)
    end_of_wal, last, tl = ts.end_of_wal, ts.last, ts.timeline
    major = pg_major(pg_version)
    b_major = pg_major(b.pg_version or snapshot.pg_version)
    if major is not None and b_major is not None and major != b_major:
        warnings.append(f"backup {b.label} is from PostgreSQL {b_major}, but files are for PostgreSQL {major}")
    window = window_containing(path_windows, b.label) or Window(r.path.tlis, b.stop_lsn, b.stop_time, r.end_lsn,
                                                           r.end_time, r.end_exact, (b.label,), r.cut.kind)
    end_lsn: Lsn | None
    if end_of_wal:
        # into the last segment: its first record position (not its start, which the XLOG_SWITCH record
        # ending the previous segment already reaches without the last segment ever being read)
        seg_first = Lsn(last * s + LONG_PAGE_HEADER)
        end_lsn = max(r.end_commit_lsn, seg_first) if r.end_commit_lsn is not None else seg_first
    elif target.kind is TargetKind.IMMEDIATE:
        end_lsn = b.stop_lsn
    elif target.kind is TargetKind.LSN:
        end_lsn = target.lsn
    elif target.exact:
        end_lsn = target.resolved.lsn    # the commit (stop before it) or restore point record (stop after it)
    else:
        end_lsn = None        # the last commit at or before a time target is not known here
    return RecoveryPlan(b, replace(target, timeline=tl), r.path.tlis, _seg(r.path, r.first_segment, s), _seg(r.path, last, s),
                        last - r.first_segment + 1, window, tuple(settings), tuple(warnings), end_of_wal,
                        major if major is not None else b_major, end_lsn,
                        r.end_time if end_of_wal and r.end_exact else None)


__all__ = ["RecoveryPlan", "TargetSettings", "WindowsUnknown", "candidate_order", "narrow", "narrowable", "pg_major",
           "plan_recovery", "resolve_path", "target_settings"]
