"""The JSON documents of the contracts (instances, scan state) and their terminal rendering
(backups, plan), shared by the CLI and the HTTP API. No I/O: the use cases (backup_catalog.usecases) build
the documents from the catalog."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from catalog.rows import InstanceRecord, ScanState
from recovery.jsonout import json_time

if TYPE_CHECKING:    # rich only for the terminal tables: `backups --json` and `plan --json` never import it
    from rich.console import Console

    from recovery.plandoc import PlanDoc

iso = json_time


def instance_to_dict(r: InstanceRecord) -> dict[str, Any]:
    return {"instance_guid": r.guid, "space_guid": r.ref.space_guid, "org_guid": r.ref.org_guid, "name": r.ref.name,
            "deleted_at": iso(r.ref.deleted_at), "bucket": r.storage.bucket, "prefix": r.storage.prefix,
            "layout": (r.layout.value if r.layout else None), "stanza": r.stanza,
            "pg_version": r.pg_version, "seg_size": r.seg_size,
            "hold_at": iso(r.hold_at), "purged_at": iso(r.purged_at)}   # issue 13: operator hold, purge


def scan_to_dict(state: ScanState | None) -> dict[str, Any]:
    if state is None:
        return {"last_scan": None, "unknown_objects": 0, "errors": []}
    errors = [{"code": i.code, "key": i.key, "message": i.message} for i in state.issues
              if i.code != "foreign_object"]
    if state.last_error:
        errors.insert(0, {"code": state.last_error_code, "key": None, "message": state.last_error})
    return {"last_scan": iso(state.last_scan), "last_full_scan": iso(state.last_full_scan),
            "stale_since": iso(state.stale_since), "unknown_objects": state.unknown_objects, "errors": errors}


def print_backups(doc: dict[str, Any], console: Console) -> None:
    from rich.table import Table
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
        console.print(t)
        w = Table("timeline", "first segment", "last segment", "segments")
        for r in inst["wal"]:
            w.add_row(str(r["timeline"]), r["first_segment"], r["last_segment"], str(r["segments"]))
        for h in inst["holes"]:
            w.add_row(str(h["timeline"]), f"[red]missing {h['first_missing']}[/red]", f"[red]{h['last_missing']}[/red]", "")
        console.print(w)
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
                  f"along timeline path {list(doc.timeline_path)}")
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
