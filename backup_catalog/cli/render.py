"""Terminal output of the CLI: every table and summary a command prints for a person (``--json`` prints
the documents themselves, in the command modules). rich is imported only here and in the progress
displays, so ``backups --json`` and ``plan --json`` never load it.

Each function takes the document (or result) and the console to print on. Output is for reading and for
copying: GUIDs, labels and segment names are never cut; on a terminal tables use its full width, piped they
have no width limit, and ``--plain`` prints every table as tab-separated lines (:func:`console`, :func:`emit`).
"""
from __future__ import annotations

import shlex
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rich import filesize
from rich.console import Console
from rich.markup import escape as _esc
from rich.table import Table
from rich.text import Text

from backup_catalog.formats.report import short_time
from recovery.grading import CRITICAL, OK, PURGE_STATES, WARNING
from recovery.grading import dur as _dur

if TYPE_CHECKING:
    from backup_catalog.usecases.drill import DrillOutcome
    from executor import RestoreError, RestoreResult
    from recovery.plandoc import PlanDoc
    from scheduler.runner import ScanOutcome


# -- consoles and tables ----------------------------------------------------------------------------

PIPE_WIDTH = 4096       # piped output: wide enough that no table or line is ever wrapped or cut


class _Mode:
    plain = False       # --plain: tables as tab-separated lines (set once, by main, before any output)


def set_plain(on: bool) -> None:
    _Mode.plain = on


def console(*, stderr: bool = False) -> Console:
    """A console for a person's output: the terminal's own width, or no practical limit when piped."""
    c = Console(stderr=stderr)
    if not c.is_terminal:
        c = Console(stderr=stderr, width=PIPE_WIDTH, no_color=True)
    return c


def emit(table: Table, out: Console, *, whole: Sequence[str] = ()) -> None:
    """Print a table. Columns named in ``whole`` (GUIDs, labels, segments) never wrap and are never cut: they
    are at least as wide as their widest cell. ``--plain``: header and rows as tab-separated lines."""
    if _Mode.plain:
        rows = [[Text.from_markup(str(c.header)).plain for c in table.columns]]
        cells = [[_plain_cell(v) for v in c.cells] for c in table.columns]
        rows += [list(r) for r in zip(*cells)] if cells else []
        for r in rows:   # written as is: rich would expand the tabs
            print("\t".join(v.replace("\t", " ").replace("\n", " ") for v in r), file=out.file)
        return
    for col in table.columns:
        if str(col.header) in whole:
            col.no_wrap, col.overflow = True, "ignore"
            col.min_width = max([len(_plain_cell(v)) for v in col.cells] + [len(str(col.header))])
    out.print(table)


def _plain_cell(v: Any) -> str:
    return v.plain if isinstance(v, Text) else Text.from_markup(str(v)).plain


# -- instances, scan, backups, plan ----------------------------------------------------------------

def print_instances(rows: Sequence[dict[str, Any]], out: Console) -> None:
    t = Table("instance", "space", "name", "layout", "bucket/prefix", "deleted")
    for r in rows:
        t.add_row(r["instance_guid"], r["space_guid"], r["name"], r["layout"] or "auto",
                  f"{r['bucket']}/{r['prefix']}", r["deleted_at"] or "")
    emit(t, out, whole=("instance", "space"))


def print_scans(outcomes: Sequence[ScanOutcome], out: Console, err: Console) -> None:
    t = Table("instance", "result", "backups", "wal runs", "unknown", "issues", "requests", "seconds")
    for o in outcomes:
        t.add_row(o.instance_guid, "ok" if o.ok else f"[red]{o.code}[/red]", str(o.backups),
                  str(o.wal_runs), str(o.unknown_objects), str(o.issues), str(o.requests), f"{o.seconds:.2f}")
    emit(t, out, whole=("instance",))
    for o in outcomes:
        if not o.ok:
            err.print(f"[red]{o.instance_guid}[/red]: {o.message}")


def print_backups(doc: dict[str, Any], console: Console) -> None:
    console.print(f"[bold]{doc['name']}[/bold] in space {doc['space_guid']}")
    for inst in doc["instances"]:
        gone = f" [red](deleted {inst['deleted_at']})[/red]" if inst["deleted_at"] else ""
        if inst.get("purged_at") or inst.get("purge_policy"):
            gone += f" [red]archive purged {inst.get('purged_at') or '(in progress)'} ({inst.get('purge_policy')})[/red]"
        elif inst.get("undo_until"):
            gone += f" clonable until {inst['undo_until']}"
        console.print(f"\ninstance {inst['instance_guid']} ({inst['layout']}), now named {inst['name']}{gone}")
        t = Table("label", "type", "status", "TL", "start lsn", "stop lsn", "stop time", "depends on")
        for b in inst["backups"]:
            t.add_row(b["label"], b["type"], b["status"], str(b["timeline"]), b["start_lsn"] or "", b["stop_lsn"] or "",
                      b["stop_time"] or "", ",".join(b["depends_on"]))
        emit(t, console, whole=("label", "start lsn", "stop lsn", "stop time", "depends on"))
        w = Table("timeline", "first segment", "last segment", "segments")
        for r in inst["wal"]:
            w.add_row(str(r["timeline"]), r["first_segment"], r["last_segment"], str(r["segments"]))
        for h in inst["holes"]:
            w.add_row(str(h["timeline"]), f"[red]missing {h['first_missing']}[/red]", f"[red]{h['last_missing']}[/red]", "")
        emit(w, console, whole=("first segment", "last segment"))
        for win in inst["windows"]:
            exact = "" if win["to_is_exact"] else " (approximate end)"
            console.print(f"  recoverable on timeline path {win['timeline_path']}: {win['from']} .. {win['to']}{exact}")
        if inst["scan"]["errors"]:
            for e in inst["scan"]["errors"]:
                console.print(f"  [yellow]scan issue {e['code']}[/yellow]: {e['message']}")


def print_plan(doc: PlanDoc, console: Console) -> None:
    src, b, t, w, st, r = doc.source, doc.backup, doc.target, doc.wal, doc.storage, doc.replay
    console.print(f"[bold]clone of[/bold] {src.name} (instance {src.instance_guid}"
                  f"{', deleted ' + src.deleted_at if src.deleted_at else ''}): {src.resolution or ''}")
    console.print(f"base backup [bold]{b.label}[/bold] ({b.type}, timeline {b.timeline}, "
                  f"stop {b.stop_time} at {b.stop_lsn})" + (f", depends on {', '.join(b.depends_on)}" if b.depends_on else ""))
    console.print(f"target {t.kind} {t.value or ''} (inclusive={t.inclusive}, timeline {t.timeline}) "
                  f"along timeline path {list(doc.timeline_path)}", markup=False, highlight=False)
    if t.lsn:     # an exact target: the record it resolved to
        what = (f"commit of transaction {t.value} at {t.commit_time}" if t.kind == "xid"
                else f"restore point {t.value!r} made at {t.time}")
        console.print(f"  resolved: {what}, LSN {t.lsn} on timeline {t.record_timeline}",
                      markup=False, highlight=False)
    console.print(f"WAL {w.first_segment} .. {w.last_segment} ({w.segments} segments)")
    where = f"s3://{st.bucket}/{st.prefix}" + (f" {st.stanza}" if st.stanza else "")
    console.print(f"archive {st.layout} {where}, PostgreSQL {doc.pg_version or 'unknown'}",
                  markup=False, highlight=False)
    reach = (f"replay to the end of WAL, at least {r.end_lsn} (segment {r.end_segment})"
             if r.mode == "end_of_wal" else
             "replay to the target" + (f", stopping at {r.end_lsn}" if r.end_lsn else ""))
    last = f"; last commit {r.last_commit_time}" if r.last_commit_time else ""
    console.print(reach + last, markup=False, highlight=False)
    for name, text in doc.files.items():
        console.print(f"[dim]--- {name}[/dim]")
        console.print(text or "(empty)", markup=False, highlight=False)
    for warn in doc.warnings:
        console.print(f"[yellow]warning:[/yellow] {warn}")


# -- report coverage ---------------------------------------------------------------------------------

_STYLE = {OK: "green", WARNING: "yellow", CRITICAL: "bold red"}


def print_page(doc: dict[str, Any], console: Console) -> None:
    """A page of the coverage document: the fleet summary, the rows, how to get the next page."""
    sm = doc["summary"]
    console.print(f"fleet: {sm['instances']} instance(s): " + ", ".join(f"{sm[s]} {s}" for s in (OK, WARNING, CRITICAL))
                  + f"; {sm['deleted']} deleted (" + ", ".join(f"{sm['purge'][p]} {p}" for p in PURGE_STATES) + ")")
    print_table(doc["instances"], console, totals=False)
    shown = len(doc["instances"])
    line = f"{shown} of {doc['matched']} matching instance(s)"
    if doc["filters"]:
        line += " (" + ", ".join(f"{k}={v}" for k, v in doc["filters"].items()) + ")"
    console.print(_esc(line))
    if doc["next_cursor"]:
        console.print(f"next page: --cursor {doc['next_cursor']}")


def print_table(rows: list[dict[str, Any]], console: Console, *, totals: bool = True) -> None:
    """The ``backup-catalog report coverage`` table; on narrow terminals the reasons follow the table."""
    wide = _Mode.plain or console.width >= 160
    t = Table(title=None if _Mode.plain else "backup coverage", expand=False)
    t.add_column("status", no_wrap=True)
    t.add_column("name", overflow="fold", min_width=min(24, max([len(r["name"]) for r in rows] + [4])))
    if wide:
        t.add_column("instance", no_wrap=True)
        t.add_column("layout", no_wrap=True)
    for col in ("newest backup", "age", "RPO", "latest end", "holes", "last scan"):
        t.add_column(col, overflow="fold", justify="right" if col in ("age", "RPO", "holes") else "left")
    if wide:
        t.add_column("why", overflow="fold", ratio=1)
    for r in rows:
        name = r["name"] + (f" (deleted, {r['purge']})" if r["deleted"] and r.get("purge") else
                            " (deleted)" if r["deleted"] else "")
        end = short_time(r["latest_window_end"]) if r["latest_window_end"] else "-"
        end += "" if r["latest_window_end_exact"] or not r["latest_window_end"] else " ~"
        cells = [f"[{_STYLE[r['status']]}]{r['status']}[/]", _esc(name)]
        if wide:
            cells += [r["instance_guid"], r["layout"] or "-"]
        cells += [_esc(r["newest_backup"] or "-"), _dur(r["newest_backup_age_seconds"]), _dur(r["rpo_seconds"]), end,
                  str(len(r["holes"])), short_time(r["last_scan"]) if r["last_scan"] else "never"]
        if wide:
            cells.append(_esc("; ".join(r["reasons"])))
        t.add_row(*cells)
    emit(t, console, whole=("instance", "newest backup", "latest end", "last scan"))
    if not wide:
        for r in rows:
            if r["reasons"]:
                console.print(f"[{_STYLE[r['status']]}]{r['status']}[/] {_esc(r['name'])} ({r['instance_guid']}): "
                              + _esc("; ".join(r["reasons"])))
    if totals:
        counts = {s: sum(1 for r in rows if r["status"] == s) for s in (OK, WARNING, CRITICAL)}
        console.print(f"{len(rows)} instance(s): " + ", ".join(f"{n} {s}" for s, n in counts.items()))


# -- purge, restore, drill -----------------------------------------------------------------------------

def print_purge(doc: dict[str, Any], console: Console) -> None:
    what = "dry run" if doc["dry_run"] else "run"
    console.print(f"purge {what} at {doc['at']} (policy {doc['policy']})", highlight=False)
    if not doc["instances"]:
        console.print("nothing is due: no deleted instance is past its undo period")
        return
    style = {"due": "bold", "deleted": "green", "grace": "cyan", "refused": "yellow", "failed": "red"}
    for e in doc["instances"]:
        console.print(f"\n[{style.get(e['state'], '')}]{e['state']}[/]  instance {e['instance_guid']} "
                      f"(last named {e['name']!r} in space {e['space_guid']}, {e['layout'] or 'layout unknown'}): "
                      f"{e['objects']} object(s), {filesize.decimal(e['bytes'])}; undo period ended {e['undo_until']}",
                      highlight=False, soft_wrap=True)
        for p in e["prefixes"]:
            console.print(f"  s3://{e['bucket']}/{p}", highlight=False, soft_wrap=True)
        if e["reason"]:
            console.print(f"  reason: {e['reason']}", highlight=False, soft_wrap=True)
        if e["objects_deleted"]:
            console.print(f"  deleted {e['objects_deleted']} object(s), {filesize.decimal(e['bytes_deleted'])}")
    if not doc["dry_run"]:
        console.print(f"\ndeleted {doc['objects_deleted']} object(s), {filesize.decimal(doc['bytes_deleted'])}")


def print_restored(res: RestoreResult, out: Console) -> None:
    out.print(f"[green]restored and verified[/green]: {res.pgdata}")
    out.print(f"  backup {res.backup.label} -> timeline {res.timeline}; replay reached {res.reached_lsn}"
              f", last commit {res.last_commit_time or 'unknown'}")
    out.print(f"  {res.bytes_fetched / 2**20:.1f} MiB fetched in {res.fetch_s:.1f}s, replay {res.replay_s:.1f}s, "
              f"total {res.duration_s:.1f}s")
    if res.check_result is not None:
        out.print(f"  check query: {res.check_result}")
    for w in res.warnings:
        out.print(f"  [yellow]warning[/yellow]: {w}")
    out.print("  " + ("the server is running (started with the command below)" if res.running else
                      "shut down cleanly; archive_mode is off (configure its own archive first). Start it with:"))
    if res.start_command:
        line = " ".join(shlex.quote(a) for a in res.start_command)
        out.print(f"    {line}", markup=False, highlight=False, soft_wrap=True)
        out.print(f"  then: psql -h {res.socket_dir} -p {res.port} -U postgres", markup=False, highlight=False)


def print_restore_error(e: RestoreError, err: Console) -> None:
    err.print(f"[red]restore {'refused' if e.code == 'refused' else 'failed'}[/red] ({e.code}, {e.stage}): "
              f"{e.message}", highlight=False)
    if e.segment:
        err.print(f"  segment: {e.segment}", highlight=False)
    if e.refusal is not None:
        for w in e.refusal.get("error", {}).get("windows", []):
            err.print(f"  recoverable: timeline path {w['timeline_path']}: {w['from']} .. {w['to']}", highlight=False)
    if e.postgres_log:
        err.print("  PostgreSQL log:", highlight=False)
        for ln in e.postgres_log[-20:]:
            err.print(f"    {ln}", highlight=False, markup=False)


def print_drill(o: DrillOutcome, out: Console) -> None:
    t = o.target or {}
    what = f"{t.get('kind', '?')} {t.get('value') or ''}".strip()
    label = (o.backup or {}).get("label", "-")
    if o.ok:
        r = o.reached or {}
        out.print(f"[green]drill {o.id} passed[/green]: instance {o.instance_guid}, target {what}, backup {label}, "
                  f"reached {r.get('lsn')} (last commit {r.get('last_commit_time')}) in {o.duration_s:.1f} s"
                  + (f"; {o.checked_segments} segment checksums verified" if o.checked_segments else ""))
        return
    e = o.error or {}
    colour = "red" if o.state == "failed" else "yellow"
    out.print(f"[{colour}]drill {o.id} {o.state}[/{colour}]: instance {o.instance_guid}, target {what}, "
              f"backup {label}", highlight=False)
    out.print(f"  {e.get('message')}", markup=False, highlight=False)
    for line in (e.get("postgres_log") or [])[-10:]:
        out.print(f"  | {line}", markup=False, highlight=False)


# -- changes -----------------------------------------------------------------------------------------

CHANGES_SHOWN = 20   # ordinary transactions printed; --json lists them all


def _rel(r: dict[str, Any]) -> str:
    return r["name"] or f"relation file {r['relfilenode']}"   # the notes say which files have no name


def print_changes(doc: dict[str, Any], out: Console) -> None:
    txs = doc["transactions"]
    bad = [t for t in txs if t["destructive"]]
    total = doc.get("transactions_total", len(txs))
    out.print(f"[bold]{total}[/bold] transactions committed from {doc['from']} to {doc['to']} "
              f"(instance {doc['instance_guid']}, timeline path {doc['timeline_path']}, "
              f"{doc['segments_read']} WAL segments read); [bold]{len(bad)} destructive[/bold]")
    table = Table("", "xid", "commit time", "commit LSN", "TL", "what it did", box=None, pad_edge=False)
    shown = bad + [t for t in txs if not t["destructive"]][:CHANGES_SHOWN]
    for t in shown:
        did = list(t["why"]) if t["destructive"] else []
        did += [f"{_rel(r['relation'])}: +{r['inserted']} ~{r['updated']} -{r['deleted']}"
                for r in t["rows"] if not t["destructive"] or not any(_rel(r["relation"]) in w for w in t["why"])]
        table.add_row("[red]![/red]" if t["destructive"] else "", str(t["xid"]), t["commit_time"], t["commit_lsn"],
                      str(t["timeline"]), _esc("; ".join(did) or "(no user rows)"))
    emit(table, out, whole=("xid", "commit time", "commit LSN"))
    if len(shown) < len(txs):
        out.print(f"... and {len(txs) - len(shown)} more (--json lists them all)")
    for p in doc["restore_points"]:
        out.print(f"restore point [bold]{_esc(p['name'])}[/bold] at {p['time']} ({p['lsn']}, timeline {p['timeline']})")
    for note in doc["notes"]:
        out.print(f"[dim]note: {_esc(note)}[/dim]")
