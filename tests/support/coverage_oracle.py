"""The coverage grading as it was before issue 12 (backup_catalog/report.py at c0ad835, with the corrupt
segment rule of 2b78d82), verbatim:
every instance graded from its whole snapshot. Tests compare the stored-facts path against it.

Independent of what it checks: it imports nothing of the grading (recovery.grading, usecases.coverage,
the stored facts) nor of the documents' formatting (times, windows, scan state are written here). It
reads the catalog (catalog.repo) and uses the core's window and hole algorithms (recovery.windows, with
their own tests), which both paths start from."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg

from backup_catalog.settings import Settings
from catalog import repo
from catalog.errors import NotScanned
from catalog.rows import InstanceRecord, ScanState
from recovery.model import ArchiveSnapshot, Backup, BackupStatus
from recovery.wal import segment_name
from recovery.windows import CutKind, Window, all_windows, holes

OK, WARNING, CRITICAL = "ok", "warning", "critical"
_RANK = {OK: 0, WARNING: 1, CRITICAL: 2}
OVERDUE_SCANS = 3   # a live instance not scanned for this many scan intervals is reported as overdue


async def coverage(pool: asyncpg.Pool, settings: Settings, *, now: datetime | None = None) -> list[dict[str, Any]]:
    """One graded row per catalogued instance (deleted ones included, marked), worst status first."""
    now = now or datetime.now(UTC)
    out = []
    for rec in await repo.list_instances(pool, include_deleted=True):
        try:
            snap: ArchiveSnapshot | None = await repo.load_snapshot(pool, rec.guid)
        except NotScanned:
            snap = None
        state = await repo.load_scan_state(pool, rec.guid)
        out.append(instance_row(rec, snap, state, settings, now))
    return sorted(out, key=lambda r: (-_RANK[r["status"]], r["deleted_at"] is not None, r["name"], r["instance_guid"]))


def instance_row(rec: InstanceRecord, snap: ArchiveSnapshot | None, state: ScanState | None,
                 settings: Settings, now: datetime) -> dict[str, Any]:
    """Grade one instance (pure: the caller reads the catalog)."""
    ref_time = rec.ref.deleted_at or now
    windows = [w for ws in all_windows(snap).values() for w in ws] if snap is not None else []
    backups = list(snap.backups) if snap is not None else []
    restorable = {label for w in windows for label in w.backups}
    newest = _newest([b for b in backups if b.label in restorable])
    newest_done = _newest([b for b in backups if b.status is BackupStatus.DONE])
    latest = max(windows, key=_window_end_key, default=None)
    end = latest.to_time if latest is not None else None
    rpo = _seconds(ref_time, end)
    age = _seconds(ref_time, newest.stop_time if newest else None)
    hole_rows = _holes(snap, newest) if snap is not None else []
    scan = scan_to_dict(state)
    errors = [e["message"] for e in scan["errors"]]

    reasons: list[tuple[str, str]] = []
    live = rec.ref.deleted_at is None
    if snap is None:
        reasons.append((CRITICAL, "never scanned: archive layout unknown"))
    if newest is None:
        reasons.append((CRITICAL, "no usable backup: nothing can be restored"))
    else:
        _grade(reasons, "backup age", age, settings.coverage_warning_backup_age_seconds,
               settings.coverage_critical_backup_age_seconds)
        if end is None:
            reasons.append((WARNING, "time of the last archived commit unknown: RPO cannot be measured"))
        else:
            _grade(reasons, "RPO", rpo, settings.coverage_warning_rpo_seconds, settings.coverage_critical_rpo_seconds)
    if newest_done is not None and newest_done.label not in restorable:
        reasons.append((WARNING, f"newest backup {newest_done.label} is not restorable (WAL missing)"))
    if any(h["after_newest_backup"] for h in hole_rows):
        h = next(h for h in hole_rows if h["after_newest_backup"])
        reasons.append((WARNING, f"WAL hole after the newest backup: {h['first_missing']}..{h['last_missing']} "
                                 f"missing on timeline {h['timeline']}"))
    elif latest is not None and latest.end_kind is not CutKind.END:
        reasons.append((WARNING, f"latest window ends at a WAL {latest.end_kind.value}"))
    corrupt = [{"timeline": c.timeline, "segment": segment_name(c.timeline, c.segno, snap.seg_size),
                "reason": c.reason} for c in snap.corrupt] if snap is not None else []
    if corrupt:   # replay stops before it: every window through it is cut, whatever the clock says
        more = f" (and {len(corrupt) - 1} more)" if len(corrupt) > 1 else ""
        reasons.append((CRITICAL, f"corrupt WAL segment {corrupt[0]['segment']}{more}: {corrupt[0]['reason']}; "
                                  "recovery cannot replay past it"))
    if errors:
        reasons.append((WARNING, f"{len(errors)} scan error(s): {errors[0]}"))
    if scan.get("stale_since"):
        reasons.append((WARNING, f"catalog stale since {scan['stale_since']} (scans failing)"))
    elif live and state is not None and state.last_scan is not None and \
            (now - state.last_scan).total_seconds() > OVERDUE_SCANS * settings.scan_interval_seconds:
        reasons.append((WARNING, f"last scan {iso(state.last_scan)} is overdue"))
    status = max((lvl for lvl, _ in reasons), key=_RANK.__getitem__, default=OK)

    return {
        "instance_guid": rec.guid, "name": rec.ref.name, "space_guid": rec.ref.space_guid,
        "org_guid": rec.ref.org_guid, "layout": rec.layout.value if rec.layout else None,
        "deleted": not live, "deleted_at": iso(rec.ref.deleted_at),
        "status": status, "reasons": [msg for _, msg in reasons],
        "reference_time": iso(ref_time),
        "newest_backup": newest.label if newest else None,
        "newest_backup_stop_time": iso(newest.stop_time) if newest else None,
        "newest_backup_age_seconds": age,
        "backups_total": len(backups), "backups_restorable": len(restorable & {b.label for b in backups}),
        "backups": [{"label": b.label, "type": b.type.value, "status": b.status.value,
                     "stop_time": iso(b.stop_time), "restorable": b.label in restorable}
                    for b in sorted(backups, key=lambda b: (b.stop_time is None, b.stop_time or now, b.label))],
        "windows": [window_to_dict(w) for w in windows],
        "holes": hole_rows,
        "corrupt": corrupt,
        "latest_window_end": iso(end), "latest_window_end_exact": bool(latest and latest.to_is_exact),
        "latest_window_end_kind": latest.end_kind.value if latest else None,
        "rpo_seconds": rpo,
        "last_scan": scan["last_scan"], "stale_since": scan.get("stale_since"),
        "scan_errors_count": len(errors), "scan_errors": errors,
    }


def iso(t: datetime | None) -> str | None:
    """``YYYY-MM-DDTHH:MM:SS[.ffffff]Z`` (DESIGN.md times)."""
    if t is None:
        return None
    return t.astimezone(UTC).replace(tzinfo=None).isoformat() + "Z"


def window_to_dict(w: Window) -> dict[str, Any]:
    return {"timeline_path": list(w.timeline_path), "from": iso(w.from_time), "to": iso(w.to_time),
            "to_is_exact": w.to_is_exact, "from_lsn": str(w.from_lsn), "to_lsn": str(w.to_lsn),
            "ends_at": w.end_kind.value, "backups": list(w.backups)}


def scan_to_dict(state: ScanState | None) -> dict[str, Any]:
    if state is None:
        return {"last_scan": None, "unknown_objects": 0, "errors": []}
    errors = [{"code": i.code, "key": i.key, "message": i.message} for i in state.issues
              if i.code != "foreign_object"]
    if state.last_error:
        errors.insert(0, {"code": state.last_error_code, "key": None, "message": state.last_error})
    return {"last_scan": iso(state.last_scan), "last_full_scan": iso(state.last_full_scan),
            "stale_since": iso(state.stale_since), "unknown_objects": state.unknown_objects, "errors": errors}


def _grade(reasons: list[tuple[str, str]], what: str, value: int | None, warn: int, crit: int) -> None:
    if value is None:
        return
    if value > crit:
        reasons.append((CRITICAL, f"{what} {_dur(value)} exceeds {_dur(crit)}"))
    elif value > warn:
        reasons.append((WARNING, f"{what} {_dur(value)} exceeds {_dur(warn)}"))


def _newest(backups: list[Backup]) -> Backup | None:
    return max(backups, key=lambda b: (b.stop_time is not None, b.stop_time or datetime.min.replace(tzinfo=UTC),
                                       b.stop_lsn.value if b.stop_lsn else -1, b.label), default=None)


def _window_end_key(w: Window) -> tuple[bool, datetime, int]:
    return (w.to_time is not None, w.to_time or datetime.min.replace(tzinfo=UTC), w.to_lsn.value)


def _seconds(ref: datetime, t: datetime | None) -> int | None:
    return None if t is None else max(0, int((ref - t).total_seconds()))


def _holes(snap: ArchiveSnapshot, newest: Backup | None) -> list[dict[str, Any]]:
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


def _dur(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    d, rem = divmod(int(seconds), 86400)
    h, rem = divmod(rem, 3600)
    m, s = divmod(rem, 60)
    parts = [(d, "d"), (h, "h"), (m, "m"), (s, "s")]
    nz = [f"{v}{u}" for v, u in parts if v]
    return " ".join(nz[:2]) if nz else "0s"
