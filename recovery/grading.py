"""Coverage grading from facts (pure: no I/O).

Two steps, both pure:
- :func:`facts_of` reduces one stored scan (an ``ArchiveSnapshot`` and its windows) to the few
  :class:`ScanFacts` a coverage row and the metrics need. The scanner stores them per scan
  (``scan_cache_facts``, :mod:`catalog.scancache`); a request never loads a snapshot to grade.
- :func:`grade` is THE grading rule set: status (ok / warning / critical), reasons, RPO and backup age,
  from those facts, the live scan state, the newest drill, the settings and ``now``. Every path (the
  fleet page, CSV, the per-instance detail, /metrics) grades through it.

RPO is measured to the last archived commit (the end of the latest recoverable window). For a deleted
instance the clock stops at its deletion: its RPO and backup age are measured to ``deleted_at``.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from recovery.model import ArchiveSnapshot, Backup, BackupStatus
from recovery.timefmt import iso
from recovery.wal import segment_name
from recovery.windows import CutKind, Window, holes

OK, WARNING, CRITICAL = "ok", "warning", "critical"
STATUSES = (OK, WARNING, CRITICAL)
RANK = {OK: 0, WARNING: 1, CRITICAL: 2}
OVERDUE_SCANS = 3   # a live instance not scanned for this many scan intervals is reported as overdue
PURGE_STATES = ("held", "clonable", "due", "purged")


class Thresholds(Protocol):
    """The settings :func:`grade` reads (``backup_catalog.settings.Settings`` has them all)."""

    coverage_warning_rpo_seconds: int
    coverage_critical_rpo_seconds: int
    coverage_warning_backup_age_seconds: int
    coverage_critical_backup_age_seconds: int
    scan_interval_seconds: int
    drill_warning_age_seconds: int


@dataclass(frozen=True, slots=True)
class ScanFacts:
    """What one stored scan says about coverage; JSON-ready lists (windows without their backup lists)."""

    backups_total: int = 0
    backups_restorable: int = 0
    newest_backup: str | None = None                 # newest restorable backup
    newest_backup_stop_time: datetime | None = None
    newest_done_unrestorable: str | None = None      # the newest completed backup, when it is not restorable
    newest_done_stop_time: datetime | None = None    # newest completed backup (restorable or not)
    latest_end: datetime | None = None               # end of the latest recoverable window
    latest_end_exact: bool = False
    latest_end_kind: str | None = None               # None: no window at all
    first_recoverable: datetime | None = None
    holes_count: int = 0
    hole_after_newest: dict[str, Any] | None = None  # the first WAL hole after the newest backup
    archive_bytes: int = 0                           # estimate: backup sizes + WAL segments x segment size
    windows: tuple[dict[str, Any], ...] = ()
    holes: tuple[dict[str, Any], ...] = ()
    corrupt: tuple[dict[str, Any], ...] = ()         # segments the scanner proved bad: timeline, segment, reason


@dataclass(frozen=True, slots=True)
class DrillFact:
    """The newest finished drill (table ``drills``, state passed or failed)."""

    id: int
    at: datetime
    ok: bool
    target: Any = None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "at": iso(self.at), "ok": self.ok, "target": self.target, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class GradeInput:
    """Everything :func:`grade` reads about one instance."""

    deleted_at: datetime | None = None
    scanned: bool = True                       # False: archive layout unknown (never scanned)
    facts: ScanFacts | None = None         # None with ``scanned``: the facts could not be computed
    facts_error: str | None = None
    last_scan: datetime | None = None
    stale_since: datetime | None = None
    scan_errors: tuple[str, ...] = ()
    scan_errors_count: int | None = None       # None: len(scan_errors)
    drill: DrillFact | None = None


@dataclass(frozen=True, slots=True)
class Grade:
    status: str
    reasons: tuple[str, ...]
    reference_time: datetime
    rpo_seconds: int | None
    newest_backup_age_seconds: int | None
    levels: tuple[str, ...] = field(default=())   # the level of each reason


# -- facts ------------------------------------------------------------------------------------

def facts_of(snap: ArchiveSnapshot, windows: list[Window]) -> ScanFacts:
    """Reduce a stored scan and its recoverable windows to the coverage facts."""
    backups = snap.backups
    restorable = {label for w in windows for label in w.backups}
    newest = _newest([b for b in backups if b.label in restorable])
    newest_done = _newest([b for b in backups if b.status is BackupStatus.DONE])
    latest = latest_window(windows)
    hole_rows = hole_rows_of(snap, newest)
    firsts = [w.from_time for w in windows if w.from_time is not None]
    done_stops = [b.stop_time for b in backups if b.status is BackupStatus.DONE and b.stop_time]
    size = sum((b.repo_size_bytes or b.size_bytes or 0) for b in backups) + \
        sum(r.last - r.first + 1 for r in snap.runs) * snap.seg_size
    return ScanFacts(
        backups_total=len(backups), backups_restorable=len(restorable & {b.label for b in backups}),
        newest_backup=newest.label if newest else None,
        newest_backup_stop_time=newest.stop_time if newest else None,
        newest_done_unrestorable=(newest_done.label if newest_done is not None
                                  and newest_done.label not in restorable else None),
        newest_done_stop_time=max(done_stops, default=None),
        latest_end=latest.to_time if latest else None, latest_end_exact=bool(latest and latest.to_is_exact),
        latest_end_kind=latest.end_kind.value if latest else None,
        first_recoverable=min(firsts, default=None),
        holes_count=len(hole_rows),
        hole_after_newest=next((h for h in hole_rows if h["after_newest_backup"]), None),
        archive_bytes=size,
        windows=tuple(window_summary(w) for w in windows), holes=tuple(hole_rows),
        corrupt=tuple({"timeline": c.timeline, "segment": segment_name(c.timeline, c.segno, snap.seg_size),
                       "reason": c.reason} for c in snap.corrupt))


def window_summary(w: Window) -> dict[str, Any]:
    """A window as in the Backups document, without its list of backups (a year of labels)."""
    return {"timeline_path": list(w.timeline_path), "from": iso(w.from_time), "to": iso(w.to_time),
            "to_is_exact": w.to_is_exact, "from_lsn": str(w.from_lsn), "to_lsn": str(w.to_lsn),
            "ends_at": w.end_kind.value}


def hole_rows_of(snap: ArchiveSnapshot, newest: Backup | None) -> list[dict[str, Any]]:
    """Missing WAL ranges, with approximate times: after the last commit before the hole, before the
    earliest thing known to follow it (a backup start or the next run's last commit)."""
    S = snap.seg_size
    edges = {(e.timeline, e.segno): e.last_commit_time for e in snap.edges if e.last_commit_time is not None}
    run_ends = sorted((r.timeline, r.last) for r in snap.runs)
    out = []
    for tli, a, b in holes(snap.runs):
        after = edges.get((tli, a - 1))
        later = [edges[k] for k in run_ends if k[0] == tli and k[1] > b and k in edges]
        later += [x.start_time for x in snap.backups if x.timeline == tli and x.start_time is not None
                  and x.start_lsn is not None and x.start_lsn.segno(S) > b]
        nb = (newest.timeline or 0, newest.start_lsn.segno(S)) if newest and newest.start_lsn else None
        out.append({"timeline": tli, "first_missing": segment_name(tli, a, S), "last_missing": segment_name(tli, b, S),
                    "segments": b - a + 1, "after": iso(after), "before": iso(min(later, default=None)),
                    "after_newest_backup": nb is not None and tli >= nb[0] and b >= nb[1]})
    return out


def restorable_labels(windows: list[Window]) -> set[str]:
    return {label for w in windows for label in w.backups}


def _newest(backups: list[Backup]) -> Backup | None:
    return max(backups, key=lambda b: (b.stop_time is not None, b.stop_time or datetime.min.replace(tzinfo=UTC),
                                       b.stop_lsn.value if b.stop_lsn else -1, b.label), default=None)


def latest_window(windows: list[Window]) -> Window | None:
    """The window ending latest (by end time, then end LSN; the first of equals)."""
    return max(windows, key=_window_end_key, default=None)


def _window_end_key(w: Window) -> tuple[bool, datetime, int]:
    return (w.to_time is not None, w.to_time or datetime.min.replace(tzinfo=UTC), w.to_lsn.value)


# -- grading ----------------------------------------------------------------------------------

def grade(inp: GradeInput, settings: Thresholds, now: datetime, *, explain: bool = True) -> Grade:
    """Status and reasons of one instance (the one rule set; worst reason wins). ``explain=False`` applies
    the same rules without writing the reasons' text (a fleet pass that needs the statuses only)."""
    ref_time = inp.deleted_at or now
    f = inp.facts or ScanFacts()
    rpo = _seconds(ref_time, f.latest_end)
    age = _seconds(ref_time, f.newest_backup_stop_time) if f.newest_backup is not None else None
    reasons: list[tuple[str, str]] = []

    def add(level: str, text: Callable[[], str]) -> None:
        reasons.append((level, text() if explain else ""))

    live = inp.deleted_at is None
    if not inp.scanned:
        add(CRITICAL, lambda: "never scanned: archive layout unknown")
    elif inp.facts is None:
        add(CRITICAL, lambda: f"recoverable windows cannot be computed: {inp.facts_error or 'unknown error'}")
    if f.newest_backup is None:
        add(CRITICAL, lambda: "no usable backup: nothing can be restored")
    else:
        _grade(add, "backup age", age, settings.coverage_warning_backup_age_seconds,
               settings.coverage_critical_backup_age_seconds)
        if f.latest_end is None:
            add(WARNING, lambda: "time of the last archived commit unknown: RPO cannot be measured")
        else:
            _grade(add, "RPO", rpo, settings.coverage_warning_rpo_seconds, settings.coverage_critical_rpo_seconds)
    if f.newest_done_unrestorable is not None:
        add(WARNING, lambda: f"newest backup {f.newest_done_unrestorable} is not restorable (WAL missing)")
    h = f.hole_after_newest
    if h is not None:
        add(WARNING, lambda: (f"WAL hole after the newest backup: {h['first_missing']}..{h['last_missing']} "
                              f"missing on timeline {h['timeline']}"))
    elif f.latest_end_kind is not None and f.latest_end_kind != CutKind.END.value:
        add(WARNING, lambda: f"latest window ends at a WAL {f.latest_end_kind}")
    if f.corrupt:   # replay stops before it: every window through it is cut, whatever the clock says
        c0, more = f.corrupt[0], len(f.corrupt) - 1
        add(CRITICAL, lambda: (f"corrupt WAL segment {c0['segment']}{f' (and {more} more)' if more else ''}: "
                               f"{c0['reason']}; recovery cannot replay past it"))
    n_errors = inp.scan_errors_count if inp.scan_errors_count is not None else len(inp.scan_errors)
    if n_errors:
        add(WARNING, lambda: f"{n_errors} scan error(s): {inp.scan_errors[0] if inp.scan_errors else '?'}")
    if inp.stale_since is not None:
        add(WARNING, lambda: f"catalog stale since {iso(inp.stale_since)} (scans failing)")
    elif live and inp.last_scan is not None and \
            (now - inp.last_scan).total_seconds() > OVERDUE_SCANS * settings.scan_interval_seconds:
        add(WARNING, lambda: f"last scan {iso(inp.last_scan)} is overdue")
    d = inp.drill
    if d is not None:
        if not d.ok:
            add(CRITICAL, lambda: f"drill {d.id} at {iso(d.at)} failed: {d.reason or 'no reason recorded'}")
        elif live and (now - d.at).total_seconds() > settings.drill_warning_age_seconds:
            add(WARNING, lambda: (f"last drill {d.id} at {iso(d.at)} is older than "
                                  f"{_dur(settings.drill_warning_age_seconds)}"))
    status = OK
    for lvl, _ in reasons:
        if lvl == CRITICAL:
            status = CRITICAL
            break
        status = WARNING
    return Grade(status, tuple(msg for _, msg in reasons), ref_time, rpo, age, tuple(lvl for lvl, _ in reasons))


def _grade(add: Callable[[str, Callable[[], str]], None], what: str, value: int | None, warn: int,
           crit: int) -> None:
    if value is None:
        return
    if value > crit:
        add(CRITICAL, lambda: f"{what} {_dur(value)} exceeds {_dur(crit)}")
    elif value > warn:
        add(WARNING, lambda: f"{what} {_dur(value)} exceeds {_dur(warn)}")


def _seconds(ref: datetime, t: datetime | None) -> int | None:
    return None if t is None else max(0, int((ref - t).total_seconds()))


def purge_state(deleted_at: datetime | None, hold_at: datetime | None, purged_at: datetime | None,
                retention_days: float, now: datetime) -> tuple[datetime | None, str | None]:
    """(undo_until, purge state) of an instance: both None while it is live. ``purged`` (its archive is
    gone) wins over ``held`` (an operator hold: never purged), then ``clonable`` before ``undo_until``,
    ``due`` after."""
    if deleted_at is None:
        return None, None
    until = deleted_at + timedelta(days=retention_days)
    if purged_at is not None:
        return until, "purged"
    if hold_at is not None:
        return until, "held"
    return until, "clonable" if now < until else "due"


def sort_key(status: str, deleted: bool, name: str, guid: str) -> tuple[int, int, str, str]:
    """Worst first; live before deleted; then by name and GUID (a total order: the page cursor)."""
    return (-RANK[status], int(deleted), name, guid)


def _dur(seconds: int | None) -> str:
    """Compact duration: ``_dur(93784) == '1d 2h'``, ``_dur(125) == '2m 5s'``."""
    if seconds is None:
        return "-"
    d, rem = divmod(int(seconds), 86400)
    h, rem = divmod(rem, 3600)
    m, s = divmod(rem, 60)
    parts = [(d, "d"), (h, "h"), (m, "m"), (s, "s")]
    nz = [f"{v}{u}" for v, u in parts if v]
    return " ".join(nz[:2]) if nz else "0s"


dur = _dur
