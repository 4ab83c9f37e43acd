"""Operator coverage report: per instance, how far back and how close to now it can be restored.

``coverage()`` reads the catalog and grades every instance ok / warning / critical against the
``coverage_*`` thresholds in settings; ``to_csv``, ``print_table`` and ``to_html`` render those rows.
Rows are plain JSON-ready dicts because they *are* the JSON document of ``report coverage --json``
and ``GET /reports/coverage``.

RPO is measured to the last archived commit (the end of the latest recoverable window), not to an
object's LastModified: that is the newest point a restore can actually reach (DESIGN.md). For a
deleted instance the clock stops at its deletion: its RPO and backup age are measured to ``deleted_at``.
"""
from __future__ import annotations

import csv
import html
import io
from datetime import UTC, datetime
from typing import Any

import asyncpg
from rich.console import Console
from rich.table import Table

from backup_catalog.documents import iso, scan_to_dict
from backup_catalog.settings import Settings
from backup_catalog.usecases.snapshots import SnapshotCache, snapshot_of, windows_of
from catalog import repo
from catalog.errors import NotScanned
from catalog.rows import InstanceRecord, ScanState
from recovery.jsonout import window_to_dict
from recovery.model import ArchiveSnapshot, Backup, BackupStatus
from recovery.wal import segment_name
from recovery.windows import CutKind, Window, holes

OK, WARNING, CRITICAL = "ok", "warning", "critical"
_RANK = {OK: 0, WARNING: 1, CRITICAL: 2}
OVERDUE_SCANS = 3   # a live instance not scanned for this many scan intervals is reported as overdue


async def coverage(pool: asyncpg.Pool, settings: Settings, *, now: datetime | None = None,
                   cache: SnapshotCache | None = None) -> list[dict[str, Any]]:
    """One graded row per catalogued instance (deleted ones included, marked), worst status first."""
    now = now or datetime.now(UTC)
    out = []
    for rec in await repo.list_instances(pool, include_deleted=True):
        try:
            snap: ArchiveSnapshot | None = await snapshot_of(pool, rec.guid, cache)
        except NotScanned:
            snap = None
        state = await repo.load_scan_state(pool, rec.guid)
        out.append(instance_row(rec, snap, state, settings, now, cache))
    return sorted(out, key=lambda r: (-_RANK[r["status"]], r["deleted_at"] is not None, r["name"], r["instance_guid"]))


def instance_row(rec: InstanceRecord, snap: ArchiveSnapshot | None, state: ScanState | None,
                 settings: Settings, now: datetime, cache: SnapshotCache | None = None) -> dict[str, Any]:
    """Grade one instance (pure: the caller reads the catalog)."""
    ref_time = rec.ref.deleted_at or now
    windows = windows_of(rec.guid, snap, cache) if snap is not None else []
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
        "latest_window_end": iso(end), "latest_window_end_exact": bool(latest and latest.to_is_exact),
        "latest_window_end_kind": latest.end_kind.value if latest else None,
        "rpo_seconds": rpo,
        "last_scan": scan["last_scan"], "stale_since": scan.get("stale_since"),
        "scan_errors_count": len(errors), "scan_errors": errors,
    }


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
    """Compact duration: ``_dur(93784) == '1d 2h'``, ``_dur(125) == '2m 5s'``."""
    if seconds is None:
        return "-"
    d, rem = divmod(int(seconds), 86400)
    h, rem = divmod(rem, 3600)
    m, s = divmod(rem, 60)
    parts = [(d, "d"), (h, "h"), (m, "m"), (s, "s")]
    nz = [f"{v}{u}" for v, u in parts if v]
    return " ".join(nz[:2]) if nz else "0s"


# -- CSV ---------------------------------------------------------------------------------------

CSV_COLUMNS = ("instance_guid", "name", "space_guid", "org_guid", "layout", "deleted", "deleted_at", "status",
               "newest_backup", "newest_backup_stop_time", "newest_backup_age_seconds", "backups_total",
               "backups_restorable", "windows", "holes", "latest_window_end", "latest_window_end_exact",
               "rpo_seconds", "last_scan", "stale_since", "scan_errors_count", "scan_errors", "reasons")


def to_csv(rows: list[dict[str, Any]]) -> str:
    """One line per instance, columns ``CSV_COLUMNS``; list cells are joined with ``; ``."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for r in rows:
        cells = {**r,
                 "windows": "; ".join(f"{x['from']}..{x['to']} tl{'>'.join(map(str, x['timeline_path']))}"
                                      for x in r["windows"]),
                 "holes": "; ".join(f"{h['first_missing']}..{h['last_missing']}" for h in r["holes"]),
                 "scan_errors": "; ".join(r["scan_errors"]), "reasons": "; ".join(r["reasons"])}
        w.writerow(["" if cells.get(c) is None else _cell(cells[c]) for c in CSV_COLUMNS])
    return buf.getvalue()


def _cell(v: Any) -> str:
    return ("true" if v else "false") if isinstance(v, bool) else str(v)


# -- terminal ----------------------------------------------------------------------------------

_STYLE = {OK: "green", WARNING: "yellow", CRITICAL: "bold red"}


def print_table(rows: list[dict[str, Any]], console: Console) -> None:
    """The ``backup-catalog report coverage`` table; on narrow terminals the reasons follow the table."""
    wide = console.width >= 160
    t = Table(title="backup coverage", expand=False)
    t.add_column("status", no_wrap=True)
    t.add_column("name", overflow="fold")
    if wide:
        t.add_column("instance", no_wrap=True)
        t.add_column("layout", no_wrap=True)
    for col in ("newest backup", "age", "RPO", "latest end", "holes", "last scan"):
        t.add_column(col, overflow="fold", justify="right" if col in ("age", "RPO", "holes") else "left")
    if wide:
        t.add_column("why", overflow="fold", ratio=1)
    for r in rows:
        name = r["name"] + (" (deleted)" if r["deleted"] else "")
        end = _short(r["latest_window_end"]) if r["latest_window_end"] else "-"
        end += "" if r["latest_window_end_exact"] or not r["latest_window_end"] else " ~"
        cells = [f"[{_STYLE[r['status']]}]{r['status']}[/]", _esc(name)]
        if wide:
            cells += [r["instance_guid"], r["layout"] or "-"]
        cells += [_esc(r["newest_backup"] or "-"), _dur(r["newest_backup_age_seconds"]), _dur(r["rpo_seconds"]), end,
                  str(len(r["holes"])), _short(r["last_scan"]) if r["last_scan"] else "never"]
        if wide:
            cells.append(_esc("; ".join(r["reasons"])))
        t.add_row(*cells)
    console.print(t)
    if not wide:
        for r in rows:
            if r["reasons"]:
                console.print(f"[{_STYLE[r['status']]}]{r['status']}[/] {_esc(r['name'])} ({r['instance_guid']}): "
                              + _esc("; ".join(r["reasons"])))
    counts = {s: sum(1 for r in rows if r["status"] == s) for s in (OK, WARNING, CRITICAL)}
    console.print(f"{len(rows)} instance(s): " + ", ".join(f"{n} {s}" for s, n in counts.items()))


def _esc(text: str) -> str:
    from rich.markup import escape
    return escape(text)


# -- HTML --------------------------------------------------------------------------------------

BAR_W, BAR_H = 380, 22

_CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#1d232a;background:#fff}
h1{font-size:20px;margin:0 0 4px} .sub{color:#5b6570;margin:0 0 16px}
table{border-collapse:collapse;width:100%} th,td{padding:6px 8px;border-bottom:1px solid #e3e7eb;text-align:left;
vertical-align:middle} th{font-size:12px;text-transform:uppercase;letter-spacing:.04em;color:#5b6570}
td.num,td.nw{white-space:nowrap} td.num{text-align:right} .guid{font:11px ui-monospace,monospace;color:#5b6570;white-space:nowrap}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;color:#fff}
.b-ok{background:#2e7d32} .b-warning{background:#ef8f00} .b-critical{background:#c62828}
.b-deleted{background:#6b7280;margin-left:6px} tr.deleted td{opacity:.7}
.why{font-size:12px;color:#5b6570;max-width:260px;overflow-wrap:anywhere} .legend span{margin-right:14px;font-size:12px}
.sw{display:inline-block;width:12px;height:10px;margin-right:4px;vertical-align:middle}
svg text{font:10px system-ui,sans-serif;fill:#5b6570}
"""


def to_html(rows: list[dict[str, Any]], *, now: datetime | None = None) -> str:
    """A self-contained page (inline CSS and SVG, no scripts, no external assets), one row per instance
    with a timeline bar on a common time axis: windows green, WAL holes red, backups as ticks."""
    now = now or datetime.now(UTC)
    t0, t1 = _axis(rows, now)
    counts = {s: sum(1 for r in rows if r["status"] == s) for s in (OK, WARNING, CRITICAL)}
    head = "".join(f"<th>{h}</th>" for h in ("status", "service", "newest backup", "RPO", "latest end",
                                             "last scan", f"coverage {_axis_svg(t0, t1)}", "why"))
    body = "\n".join(_html_row(r, t0, t1) for r in rows) or '<tr><td colspan="8">no instances</td></tr>'
    legend = ('<p class="legend"><span><i class="sw" style="background:#43a047"></i>recoverable window</span>'
              '<span><i class="sw" style="background:#a5d6a7"></i>window end approximate (~)</span>'
              '<span><i class="sw" style="background:#e53935"></i>WAL hole</span>'
              '<span><i class="sw" style="background:#1f3a93;width:3px"></i>backup</span>'
              '<span><i class="sw" style="background:#9aa4ae;width:3px"></i>backup not restorable</span>'
              '</p>')
    summary = ", ".join(f"{n} {s}" for s, n in counts.items())
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<title>Backup coverage</title>"
            f"<style>{_CSS}</style></head><body>\n<h1>Backup coverage</h1>\n"
            f"<p class=\"sub\">generated {_e(iso(now))} &middot; {len(rows)} instance(s): {_e(summary)}</p>\n"
            f"{legend}\n<table id=\"coverage\"><thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody></table>\n"
            "</body></html>\n")


def _e(v: Any) -> str:
    return html.escape("" if v is None else str(v), quote=True)


def _parse(s: str | None) -> datetime | None:
    return datetime.fromisoformat(s) if s else None


def _axis(rows: list[dict[str, Any]], now: datetime) -> tuple[datetime, datetime]:
    times = [t for r in rows for t in (
        *(_parse(w["from"]) for w in r["windows"]), *(_parse(w["to"]) for w in r["windows"]),
        *(_parse(b["stop_time"]) for b in r["backups"]), *(_parse(h["after"]) for h in r["holes"]))
        if t is not None]
    t0 = min(times, default=now)
    t1 = max([now, *times])
    span = max((t1 - t0).total_seconds(), 3600.0)
    return datetime.fromtimestamp(t1.timestamp() - span * 1.03, UTC), t1


def _x(t: datetime, t0: datetime, t1: datetime) -> float:
    f = (t - t0).total_seconds() / max((t1 - t0).total_seconds(), 1.0)
    return round(min(max(f, 0.0), 1.0) * BAR_W, 1)


def _axis_svg(t0: datetime, t1: datetime) -> str:
    parts = [f'<svg class="axis" width="{BAR_W}" height="16" viewBox="0 0 {BAR_W} 16" role="img" '
             f'aria-label="time axis">']
    for i in range(4):
        t = datetime.fromtimestamp(t0.timestamp() + (t1 - t0).total_seconds() * i / 3, UTC)
        x = _x(t, t0, t1)
        anchor = "start" if i == 0 else "end" if i == 3 else "middle"
        parts.append(f'<text x="{x}" y="12" text-anchor="{anchor}">{_e(t.strftime("%m-%d %H:%M"))}</text>')
    return "".join(parts) + "</svg>"


def _bar(r: dict[str, Any], t0: datetime, t1: datetime) -> str:
    out = [f'<svg class="bar" width="{BAR_W}" height="{BAR_H}" viewBox="0 0 {BAR_W} {BAR_H}" role="img" '
           f'aria-label="{_e(r["name"])} coverage">',
           f'<rect x="0" y="4" width="{BAR_W}" height="{BAR_H - 8}" fill="#eef1f4"/>']
    for w in r["windows"]:
        a, b = _parse(w["from"]), _parse(w["to"]) or _parse(w["from"])
        if a is None or b is None:
            continue
        xa, xb = _x(a, t0, t1), _x(b, t0, t1)
        fill = "#43a047" if w["to_is_exact"] else "#a5d6a7"
        tip = f"window {w['from']} .. {w['to']} timeline path {w['timeline_path']}"
        out.append(f'<rect class="window" x="{xa}" y="4" width="{max(xb - xa, 2)}" height="{BAR_H - 8}" '
                   f'fill="{fill}"><title>{_e(tip)}</title></rect>')
    for h in r["holes"]:
        a, b = _parse(h["after"]), _parse(h["before"])
        if a is None and b is None:
            continue
        xa = _x(a or b, t0, t1)  # type: ignore[arg-type]
        xb = _x(b, t0, t1) if b is not None else xa
        tip = f"WAL hole {h['first_missing']} .. {h['last_missing']} ({h['segments']} segments)"
        out.append(f'<rect class="hole" x="{xa}" y="2" width="{max(xb - xa, 3)}" height="{BAR_H - 4}" '
                   f'fill="#e53935"><title>{_e(tip)}</title></rect>')
    for bk in r["backups"]:
        t = _parse(bk["stop_time"])
        if t is None:
            continue
        x = _x(t, t0, t1)
        color = "#1f3a93" if bk["restorable"] else "#9aa4ae"
        out.append(f'<line class="backup" x1="{x}" x2="{x}" y1="1" y2="{BAR_H - 1}" stroke="{color}" '
                   f'stroke-width="2"><title>{_e(bk["label"] + " " + bk["status"] + " " + str(bk["stop_time"]))}'
                   f'</title></line>')
    if r["deleted_at"]:
        x = _x(_parse(r["deleted_at"]), t0, t1)  # type: ignore[arg-type]
        out.append(f'<line class="deleted-at" x1="{x}" x2="{x}" y1="0" y2="{BAR_H}" stroke="#374151" '
                   f'stroke-dasharray="3,2"><title>deleted {_e(r["deleted_at"])}</title></line>')
    return "".join(out) + "</svg>"


def _short(ts: str | None) -> str:
    """``2026-03-10T11:58:00Z`` -> ``2026-03-10 11:58Z`` (the full value goes in a tooltip)."""
    return "-" if not ts else ts[:10] + " " + ts[11:16] + "Z"


def _short_guid(guid: str) -> str:
    return guid if len(guid) <= 13 else guid[:8] + "\u2026"


def _html_row(r: dict[str, Any], t0: datetime, t1: datetime) -> str:
    deleted = (f'<span class="badge b-deleted" title="deleted at {_e(r["deleted_at"])}">deleted</span>'
               if r["deleted"] else "")
    approx = "" if r["latest_window_end_exact"] or not r["latest_window_end"] else " ~"
    why = "<br>".join(_e(x) for x in r["reasons"]) or "&mdash;"
    gone = f'<div class="guid">deleted {_e(_short(r["deleted_at"]))}</div>' if r["deleted"] else ""
    return (f'<tr class="instance {"deleted" if r["deleted"] else "live"}" data-guid="{_e(r["instance_guid"])}" '
            f'data-status="{_e(r["status"])}">'
            f'<td><span class="badge b-{_e(r["status"])}">{_e(r["status"])}</span></td>'
            f'<td><strong>{_e(r["name"])}</strong>{deleted}'
            f'<div class="guid" title="{_e(r["instance_guid"])}">{_e(_short_guid(r["instance_guid"]))} &middot; '
            f'{_e(r["layout"] or "?")}</div>{gone}</td>'
            f'<td class="nw">{_e(r["newest_backup"] or "none")}'
            f'<div class="guid">{_e(_dur(r["newest_backup_age_seconds"]))} old</div></td>'
            f'<td class="num">{_e(_dur(r["rpo_seconds"]))}</td>'
            f'<td class="num" title="{_e(r["latest_window_end"])}">{_e(_short(r["latest_window_end"]))}{approx}</td>'
            f'<td class="num" title="{_e(r["last_scan"])}">{_e(_short(r["last_scan"]))}</td>'
            f'<td>{_bar(r, t0, t1)}</td><td class="why">{why}</td></tr>')
