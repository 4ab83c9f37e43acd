"""Operator coverage report: the CSV and HTML renderings of the coverage rows and pages (pure).

Rows and pages come from :mod:`backup_catalog.usecases.coverage` (graded from stored facts by
:func:`recovery.grading.grade`); CLI and HTTP render the same documents. The terminal table is the CLI's
(:mod:`backup_catalog.cli.render`).
"""
from __future__ import annotations

import csv
import html
import io
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

from backup_catalog.formats import pages
from recovery import timefmt
from recovery.grading import CRITICAL, OK, PURGE_STATES, WARNING
from recovery.grading import dur as _dur
from recovery.timefmt import iso

# -- CSV ---------------------------------------------------------------------------------------

CSV_COLUMNS = ("instance_guid", "name", "space_guid", "org_guid", "layout", "deleted", "deleted_at", "status",
               "newest_backup", "newest_backup_stop_time", "newest_backup_age_seconds", "backups_total",
               "backups_restorable", "windows", "holes", "latest_window_end", "latest_window_end_exact",
               "rpo_seconds", "last_scan", "stale_since", "scan_errors_count", "scan_errors", "reasons",
               "drill_at", "drill_ok", "drill_reason", "undo_until", "purge")


def csv_lines(rows: Iterable[dict[str, Any]], *, header: bool = True) -> Iterable[str]:
    """The CSV text, one instance per line (columns ``CSV_COLUMNS``; list cells joined with ``; ``)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    if header:
        w.writerow(CSV_COLUMNS)
        yield _take(buf)
    for r in rows:
        w.writerow(csv_cells(r))
        yield _take(buf)


def _take(buf: io.StringIO) -> str:
    text = buf.getvalue()
    buf.seek(0)
    buf.truncate()
    return text


def csv_cells(r: dict[str, Any]) -> list[str]:
    drill = r.get("drill") or {}
    cells = {**r,
             "windows": "; ".join(f"{x['from']}..{x['to']} tl{'>'.join(map(str, x['timeline_path']))}"
                                  for x in r["windows"]),
             "holes": "; ".join(f"{h['first_missing']}..{h['last_missing']}" for h in r["holes"]),
             "scan_errors": "; ".join(r["scan_errors"]), "reasons": "; ".join(r["reasons"]),
             "drill_at": drill.get("at"), "drill_ok": drill.get("ok"), "drill_reason": drill.get("reason")}
    return ["" if cells.get(c) is None else _cell(cells[c]) for c in CSV_COLUMNS]


def to_csv(rows: Iterable[dict[str, Any]]) -> str:
    return "".join(csv_lines(rows))


async def csv_stream(rows: AsyncIterator[dict[str, Any]], *, chunk: int = 256) -> AsyncIterator[str]:
    """CSV text in chunks of ``chunk`` rows, as ``rows`` arrive (flat memory)."""
    buf: list[str] = ["".join(csv_lines([], header=True))]
    async for r in rows:
        buf.append("".join(csv_lines([r], header=False)))
        if len(buf) >= chunk:
            yield "".join(buf)
            buf = []
    if buf:
        yield "".join(buf)


def _cell(v: Any) -> str:
    return ("true" if v else "false") if isinstance(v, bool) else str(v)


# -- HTML --------------------------------------------------------------------------------------

BAR_W, BAR_H = 260, 22       # the page fits 1280 px with the bar and the reasons visible (tests/test_report_page.py)
MIN_WINDOW_W = 6             # a window shorter than this many pixels is drawn this wide, centred on itself

_CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#1d232a;background:#fff}
h1{font-size:20px;margin:0 0 4px} .sub{color:#5b6570;margin:0 0 12px} a{color:#1f4fa3}
table{border-collapse:collapse;width:100%} th,td{padding:6px 8px;border-bottom:1px solid #e3e7eb;text-align:left;
vertical-align:middle} th{font-size:12px;text-transform:uppercase;letter-spacing:.04em;color:#5b6570}
td.num,td.nw{white-space:nowrap} td.num{text-align:right} .guid{font:11px ui-monospace,monospace;color:#5b6570;white-space:nowrap}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;color:#fff}
.b-ok{background:#2e7d32} .b-warning{background:#ef8f00} .b-critical{background:#c62828}
.b-deleted{background:#6b7280;margin-left:6px} tr.deleted td{opacity:.7}
.why{font-size:12px;color:#5b6570;min-width:160px;max-width:300px;overflow-wrap:anywhere}
td.label{font-size:12px;min-width:120px;max-width:150px} .space{font:11px ui-monospace,monospace;color:#8a4b00}
.guid.wrap{white-space:normal} td.when{white-space:nowrap;text-align:right;font-size:13px}
td.service{max-width:300px} .legend span{margin-right:14px;font-size:12px}
.sw{display:inline-block;width:12px;height:10px;margin-right:4px;vertical-align:middle}
svg text{font:10px system-ui,sans-serif;fill:#5b6570}
.summary a{margin-right:12px;text-decoration:none} .summary .n{font-weight:700;font-size:16px}
form.filters{margin:8px 0 12px;display:flex;gap:8px;flex-wrap:wrap;align-items:end}
form.filters label{font-size:12px;color:#5b6570;display:flex;flex-direction:column}
form.filters input,form.filters select{font:13px system-ui,sans-serif;padding:3px 4px}
.pager{margin:10px 0;display:flex;gap:16px;align-items:center}
"""

_LEGEND = ('<p class="legend"><span><i class="sw" style="background:#43a047"></i>recoverable window</span>'
           '<span><i class="sw" style="background:#a5d6a7"></i>window end approximate (~)</span>'
           '<span><i class="sw" style="background:#e53935"></i>WAL hole</span>'
           '<span><i class="sw" style="background:#1f3a93;width:3px"></i>backup</span>'
           '<span><i class="sw" style="background:#9aa4ae;width:3px"></i>backup not restorable</span>'
           '</p>')


def to_html(doc: dict[str, Any] | list[dict[str, Any]], *, now: datetime | None = None,
            detail_base: str = "../instances/") -> str:
    """The coverage page: the fleet summary (each count links to its filter), the filter form, one page
    of rows worst first with a timeline bar each (windows green, WAL holes red, the newest backup a tick),
    each row linking to its detail, and links to the first and the next page. Self-contained: inline CSS
    and SVG, no scripts, no external assets. ``doc`` is a page document (or bare rows: one page of them)."""
    now = now or datetime.now(UTC)
    if isinstance(doc, list):
        doc = _as_page(doc, now)
    rows = doc["instances"]
    filters: dict[str, str] = doc["filters"]
    t0, t1 = _axis(rows, now)
    shared = _shared_names(rows)
    head = "".join(f"<th>{h}</th>" for h in ("status", "service", "newest backup", "RPO", "latest end",
                                             "last scan", "drill", f"coverage {_axis_svg(t0, t1)}", "why"))
    body = "\n".join(_html_row(r, t0, t1, detail_base, show_space=r["name"] in shared) for r in rows) or \
        '<tr><td colspan="9">no instance matches</td></tr>'
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<title>Backup coverage</title>"
            f"<style>{_CSS}</style></head><body>\n<h1>Backup coverage</h1>\n"
            f"<p class=\"sub\">generated {_e(iso(now))}</p>\n{_summary_html(doc['summary'])}\n"
            f"{_filter_form(filters, doc['limit'])}\n{_pager(doc)}\n{_LEGEND}\n"
            f"<table id=\"coverage\"><thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody></table>\n"
            f"{_pager(doc)}\n</body></html>\n")


def _as_page(rows: list[dict[str, Any]], now: datetime) -> dict[str, Any]:
    summ: dict[str, Any] = {"instances": len(rows), **{s: sum(1 for r in rows if r["status"] == s)
                                                       for s in (OK, WARNING, CRITICAL)},
                            "deleted": sum(1 for r in rows if r["deleted"]),
                            "purge": {p: sum(1 for r in rows if r.get("purge") == p) for p in PURGE_STATES}}
    summ["live"] = summ["instances"] - summ["deleted"]
    return {"generated_at": iso(now), "summary": summ, "filters": {}, "matched": len(rows),
            "limit": max(len(rows), 1), "instances": rows, "next_cursor": None}


def _href(params: dict[str, Any]) -> str:
    """A link to this page with ``params`` as its query (relative: works behind any path prefix)."""
    q = urlencode({k: v for k, v in params.items() if v not in (None, "")})
    return "?" + q if q else "?"


def _summary_html(sm: dict[str, Any]) -> str:
    parts = [f'<a class="all" href="{_e(_href({}))}"><span class="n">{sm["instances"]:,}</span> instances</a>']
    for st in (CRITICAL, WARNING, OK):
        parts.append(f'<a class="s-{st}" href="{_e(_href({"status": st}))}"><span class="badge b-{st}">'
                     f'{sm[st]:,}</span> {st}</a>')
    parts.append(f'<a class="deleted" href="{_e(_href({"deleted": "true"}))}">{sm["deleted"]:,} deleted</a>')
    purge = ", ".join(f"{sm['purge'][p]:,} {p}" for p in PURGE_STATES)
    return f'<p class="summary" id="summary">{"".join(parts)}<span class="guid">({_e(purge)})</span></p>'


def _filter_form(f: dict[str, str], limit: int) -> str:
    def select(name: str, options: tuple[str, ...]) -> str:
        opts = "".join(f'<option value="{_e(o)}"{" selected" if f.get(name, "") == o else ""}>{_e(o or "any")}</option>'
                       for o in ("", *options))
        return f'<label>{name}<select name="{name}">{opts}</select></label>'

    def text(name: str, label: str) -> str:
        return f'<label>{label}<input type="text" name="{name}" value="{_e(f.get(name, ""))}" size="14"></label>'

    return ('<form class="filters" method="get" action="">'
            + select("status", (CRITICAL, WARNING, OK)) + text("space", "space") + text("org", "org")
            + text("name", "name starts with") + select("layout", (*pages.LAYOUTS, "unknown"))
            + select("deleted", ("false", "true"))
            + f'<label>per page<input type="number" name="limit" min="1" max="{pages.MAX_LIMIT}" '
              f'value="{limit}" size="5"></label>'
            + '<button type="submit">filter</button>'
            + f'<a href="{_e(_href({}))}">clear</a></form>')


def _pager(doc: dict[str, Any]) -> str:
    params: dict[str, Any] = dict(doc["filters"])
    if doc["limit"] != pages.DEFAULT_LIMIT:
        params["limit"] = doc["limit"]
    parts = [f'<span>{len(doc["instances"]):,} of {doc["matched"]:,} matching</span>',
             f'<a class="first" href="{_e(_href(params))}">first page</a>']
    if doc["next_cursor"]:
        parts.append(f'<a class="next" rel="next" href="{_e(_href({**params, "cursor": doc["next_cursor"]}))}">'
                     'next page &rarr;</a>')
    return '<nav class="pager">' + "".join(parts) + "</nav>"


def detail_html(row: dict[str, Any], *, now: datetime | None = None, list_href: str = "../../reports/coverage.html"
                ) -> str:
    """One instance: its grade, its timeline with every backup, and its backups."""
    now = now or datetime.now(UTC)
    t0, t1 = _axis([row], now)
    why = "".join(f"<li>{_e(x)}</li>" for x in row["reasons"]) or "<li>nothing to report</li>"
    backups = "".join(
        f'<tr><td class="nw">{_e(b["label"])}</td><td>{_e(b["type"])}</td><td>{_e(b["status"])}</td>'
        f'<td class="nw">{_e(b["stop_time"])}</td><td>{"yes" if b["restorable"] else "no"}</td></tr>'
        for b in reversed(row.get("backups", [])))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_e(row['name'])}: backup coverage</title><style>{_CSS}</style></head><body>\n"
            f'<p><a href="{_e(list_href)}">&larr; all instances</a></p>'
            f'<h1>{_e(row["name"])} <span class="badge b-{_e(row["status"])}">{_e(row["status"])}</span></h1>\n'
            f'<p class="sub">{_e(row["instance_guid"])} &middot; {_e(row["layout"] or "layout unknown")} &middot; '
            f'space {_e(row["space_guid"])}'
            + (f' &middot; deleted {_e(row["deleted_at"])}, undo until {_e(row["undo_until"])} ({_e(row["purge"])})'
               if row["deleted"] else "") + "</p>\n"
            f"<ul class=\"why\">{why}</ul>\n{_LEGEND}\n<div>{_axis_svg(t0, t1)}<br>{_bar(row, t0, t1)}</div>\n"
            f"<h2>backups</h2><table><thead><tr><th>label</th><th>type</th><th>status</th><th>stop time</th>"
            f"<th>restorable</th></tr></thead><tbody>{backups}</tbody></table>\n</body></html>\n")


def _e(v: Any) -> str:
    return html.escape("" if v is None else str(v), quote=True)


def _parse(s: str | None) -> datetime | None:
    return datetime.fromisoformat(s) if s else None


def _axis(rows: list[dict[str, Any]], now: datetime) -> tuple[datetime, datetime]:
    times = [t for r in rows for t in (
        *(_parse(w["from"]) for w in r["windows"]), *(_parse(w["to"]) for w in r["windows"]),
        *(_parse(b["stop_time"]) for b in r.get("backups", ())), _parse(r.get("newest_backup_stop_time")),
        *(_parse(h["after"]) for h in r["holes"]))
        if t is not None]
    t0 = min(times, default=now)
    t1 = max([now, *times])
    span = max((t1 - t0).total_seconds(), 3600.0)
    return datetime.fromtimestamp(t1.timestamp() - span * 1.03, UTC), t1


def _x(t: datetime, t0: datetime, t1: datetime) -> float:
    f = (t - t0).total_seconds() / max((t1 - t0).total_seconds(), 1.0)
    return round(min(max(f, 0.0), 1.0) * BAR_W, 1)


def axis_format(span_seconds: float) -> str:
    """How the axis labels a span: dates for weeks, date and time under three days, times under three hours
    (so that no two labels of a short span read the same).

    >>> [axis_format(s) for s in (30 * 86400, 2 * 86400, 3600)]
    ['%Y-%m-%d', '%m-%d %H:%M', '%H:%M:%S']
    """
    if span_seconds < 3 * 3600:
        return "%H:%M:%S"
    if span_seconds < 3 * 86400:
        return "%m-%d %H:%M"
    return "%Y-%m-%d"


def _axis_svg(t0: datetime, t1: datetime) -> str:
    parts = [(f'<svg class="axis" width="{BAR_W}" height="16" viewBox="0 0 {BAR_W} 16" role="img" '
             f'aria-label="time axis">')]
    fmt = axis_format((t1 - t0).total_seconds())
    for i in range(4):
        t = datetime.fromtimestamp(t0.timestamp() + (t1 - t0).total_seconds() * i / 3, UTC)
        x = _x(t, t0, t1)
        anchor = "start" if i == 0 else "end" if i == 3 else "middle"
        parts.append(f'<text x="{x}" y="12" text-anchor="{anchor}">{_e(t.strftime(fmt))}</text>')
    return "".join(parts) + "</svg>"


def _shared_names(rows: list[dict[str, Any]]) -> set[str]:
    """Names that more than one row of the page carries (their rows show the space, which tells them apart)."""
    seen: dict[str, int] = {}
    for r in rows:
        seen[r["name"]] = seen.get(r["name"], 0) + 1
    return {n for n, c in seen.items() if c > 1}


def _bar(r: dict[str, Any], t0: datetime, t1: datetime) -> str:
    out = [(f'<svg class="bar" width="{BAR_W}" height="{BAR_H}" viewBox="0 0 {BAR_W} {BAR_H}" role="img" '
           f'aria-label="{_e(r["name"])} coverage">'),
           f'<rect x="0" y="4" width="{BAR_W}" height="{BAR_H - 8}" fill="#eef1f4"/>']
    for w in r["windows"]:
        a, b = _parse(w["from"]), _parse(w["to"]) or _parse(w["from"])
        if a is None or b is None:
            continue
        xa, xb = _x(a, t0, t1), _x(b, t0, t1)
        if xb - xa < MIN_WINDOW_W:     # a short window stays visible beside a backup tick drawn on it
            mid = (xa + xb) / 2
            xa = round(min(max(mid - MIN_WINDOW_W / 2, 0.0), BAR_W - MIN_WINDOW_W), 1)
            xb = xa + MIN_WINDOW_W
        fill = "#43a047" if w["to_is_exact"] else "#a5d6a7"
        tip = f"window {w['from']} .. {w['to']} timeline path {w['timeline_path']}"
        out.append(f'<rect class="window" x="{xa}" y="4" width="{round(xb - xa, 1)}" height="{BAR_H - 8}" '
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
    ticks = r.get("backups")
    if ticks is None:   # a fleet page: only the newest restorable backup
        ticks = [{"label": r["newest_backup"], "status": "newest", "stop_time": r["newest_backup_stop_time"],
                  "restorable": True}] if r["newest_backup"] else []
    for bk in ticks:
        t = _parse(bk["stop_time"])
        if t is None:
            continue
        x = _x(t, t0, t1)
        color = "#1f3a93" if bk["restorable"] else "#9aa4ae"
        out.append(f'<line class="backup" x1="{x}" x2="{x}" y1="1" y2="{BAR_H - 1}" stroke="{color}" '
                   f'stroke-width="1.5"><title>{_e(bk["label"] + " " + bk["status"] + " " + str(bk["stop_time"]))}'
                   f'</title></line>')
    if r["deleted_at"]:
        x = _x(_parse(r["deleted_at"]), t0, t1)  # type: ignore[arg-type]
        out.append(f'<line class="deleted-at" x1="{x}" x2="{x}" y1="0" y2="{BAR_H}" stroke="#374151" '
                   f'stroke-dasharray="3,2"><title>deleted {_e(r["deleted_at"])}</title></line>')
    return "".join(out) + "</svg>"


def short_time(ts: str | None) -> str:
    """A document's time to the minute (:func:`recovery.timefmt.short_time`), ``-`` for none.

    >>> short_time("2026-03-10T11:58:00Z"), short_time(None)
    ('2026-03-10 11:58Z', '-')
    """
    return "-" if not ts else timefmt.short_time(datetime.fromisoformat(ts))


def _short_guid(guid: str) -> str:
    return guid if len(guid) <= 13 else guid[:8] + "\u2026"


def _breakable(label: str) -> str:
    """A backup label that may break after its separators (pgBackRest's ``F_`` between full and incremental)."""
    return "".join(_e(c) + ("<wbr>" if c in "_-" else "") for c in label)


def _when(ts: str | None) -> str:
    """A time on two short lines (date, then time): the columns stay narrow and every digit stays visible."""
    return "-" if not ts else f"{_e(ts[:10])}<br>{_e(ts[11:16])}Z"


def _drill_cell(r: dict[str, Any]) -> str:
    d = r.get("drill")
    if not d:
        return '<td class="nw guid">never</td>'
    word = "passed" if d["ok"] else "FAILED"
    return (f'<td class="nw" title="{_e(d.get("reason") or "")}">{word}'
            f'<div class="guid">{_e(short_time(d["at"]))}</div></td>')


def _html_row(r: dict[str, Any], t0: datetime, t1: datetime, detail_base: str = "../instances/", *,
              show_space: bool = False) -> str:
    deleted = (f'<span class="badge b-deleted" title="deleted at {_e(r["deleted_at"])}">deleted</span>'
               if r["deleted"] else "")
    approx = "" if r["latest_window_end_exact"] or not r["latest_window_end"] else " ~"
    why = "<br>".join(_e(x) for x in r["reasons"]) or "&mdash;"
    gone = ""
    if r["deleted"]:
        gone = (f'<div class="guid wrap">deleted {_e(short_time(r["deleted_at"]))}'
                + (f' &middot; {_e(r.get("purge"))} until {_e(short_time(r.get("undo_until")))}' if r.get("purge") else "")
                + "</div>")
    space = (f'<div class="space" title="this name is held by several instances on the page">space '
             f'{_e(r["space_guid"])}</div>' if show_space else "")
    link = f'{detail_base}{quote(r["instance_guid"], safe="")}/coverage.html'
    return (f'<tr class="instance {"deleted" if r["deleted"] else "live"}" data-guid="{_e(r["instance_guid"])}" '
            f'data-status="{_e(r["status"])}">'
            f'<td><span class="badge b-{_e(r["status"])}">{_e(r["status"])}</span></td>'
            f'<td class="service"><a class="detail" href="{_e(link)}"><strong>{_e(r["name"])}</strong></a>{deleted}'
            f'<div class="guid" title="{_e(r["instance_guid"])}">{_e(_short_guid(r["instance_guid"]))} &middot; '
            f'{_e(r["layout"] or "?")}</div>{space}{gone}</td>'
            f'<td class="label">{_breakable(r["newest_backup"] or "none")}'
            f'<div class="guid">{_e(_dur(r["newest_backup_age_seconds"]))} old</div></td>'
            f'<td class="num">{_e(_dur(r["rpo_seconds"]))}</td>'
            f'<td class="when" title="{_e(r["latest_window_end"])}">{_when(r["latest_window_end"])}{approx}</td>'
            f'<td class="when" title="{_e(r["last_scan"])}">{_when(r["last_scan"])}</td>'
            f'{_drill_cell(r)}<td>{_bar(r, t0, t1)}</td><td class="why">{why}</td></tr>')
