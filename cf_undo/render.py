"""What cf-undo shows a person (rich): the space's instances, one name's backups and windows, a plan
preview, a refusal with the windows that exist, the changes in a range."""
from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def _t(ts: str | None) -> str:
    return "-" if not ts else ts.replace("T", " ").replace("+00:00", "Z")


def age(seconds: float | None) -> str:
    """
    >>> age(93784), age(125), age(None)
    ('1d 2h', '2m 5s', '-')
    """
    if seconds is None:
        return "-"
    d, rem = divmod(int(seconds), 86400)
    h, rem = divmod(rem, 3600)
    m, s = divmod(rem, 60)
    parts = [f"{v}{u}" for v, u in ((d, "d"), (h, "h"), (m, "m"), (s, "s")) if v]
    return " ".join(parts[:2]) if parts else "0s"


def _span(windows: list[dict[str, Any]]) -> str:
    if not windows:
        return "nothing recoverable"
    return f"{_t(windows[0].get('from'))} .. {_t(windows[-1].get('to'))}" + (
        f" ({len(windows)} windows)" if len(windows) > 1 else "")


def _state(inst: dict[str, Any]) -> str:
    if inst.get("purge") == "purged":
        return "[red]deleted, purged[/]"
    if inst.get("deleted_at"):
        return f"[yellow]deleted {_t(inst['deleted_at'])}[/], undo until {_t(inst.get('undo_until'))}"
    return "[green]live[/]"


def services_table(console: Console, doc: dict[str, Any], space_label: str, *, deleted: bool) -> None:
    rows = [i for i in doc.get("instances", []) if deleted or not i.get("deleted_at")]
    hidden = len(doc.get("instances", [])) - len(rows)
    t = Table(title=f"Backups in space {space_label}", title_justify="left")
    for col in ("name", "state", "layout", "recoverable", "newest backup", "drill", "undo"):
        t.add_column(col)
    for i in rows:
        former = ", ".join(f["name"] for f in i.get("former_names", []))
        nb = i.get("newest_backup") or {}
        drill = i.get("drill")
        t.add_row(i["name"] + (f" (was {former})" if former else ""), _state(i), i.get("layout") or "-",
                  _span(i.get("windows") or []), f"{nb.get('label', '-')} ({age(nb.get('age_seconds'))} ago)"
                  if nb else "none", "-" if not drill else ("[green]passed[/]" if drill.get("ok") else "[red]failed[/]"),
                  "[green]yes[/]" if i.get("can_undo") else "no")
    console.print(t)
    if hidden:
        console.print(f"{hidden} deleted instance(s) not shown: cf-undo list --deleted")


def windows_table(console: Console, windows: list[dict[str, Any]], title: str = "Recoverable windows") -> None:
    t = Table(title=title, title_justify="left")
    for col in ("timelines", "from", "to", "ends at"):
        t.add_column(col)
    for w in windows:
        t.add_row(" -> ".join(map(str, w.get("timeline_path", []))), _t(w.get("from")),
                  _t(w.get("to")) + ("" if w.get("to_is_exact", True) else " (approx.)"), str(w.get("ends_at") or "-"))
    console.print(t)


def show(console: Console, doc: dict[str, Any], listing: dict[str, Any] | None) -> None:
    by_guid = {i["instance_guid"]: i for i in (listing or {}).get("instances", [])}
    for inst in doc.get("instances", []):
        meta = by_guid.get(inst["instance_guid"], {})
        console.rule(f"{inst['name']}  ({inst['instance_guid']})")
        console.print(f"state: {_state({**meta, **inst})}    layout: {inst.get('layout') or '-'}    "
                      f"can undo: {'yes' if meta.get('can_undo') else 'no'}")
        windows_table(console, inst.get("windows", []))
        for h in inst.get("holes", []):
            console.print(f"[yellow]hole[/] on timeline {h['timeline']}: {h['first_missing']} .. {h['last_missing']}")
        backups = sorted(inst.get("backups", []), key=lambda b: b.get("stop_time") or "", reverse=True)
        t = Table(title=f"Backups ({len(backups)})", title_justify="left")
        for col in ("label", "type", "status", "timeline", "stopped"):
            t.add_column(col)
        for b in backups[:15]:
            t.add_row(b["label"], b["type"], b["status"], str(b.get("timeline")), _t(b.get("stop_time")))
        console.print(t)
        if len(backups) > 15:
            console.print(f"... and {len(backups) - 15} older backup(s) (--json lists all)")
        drill = meta.get("drill")
        console.print("last drill: " + ("never" if not drill else
                                        f"{'passed' if drill.get('ok') else 'FAILED'} at {_t(drill.get('at'))}"
                                        + (f" ({drill['reason']})" if drill.get("reason") else "")))


def preview(console: Console, plan: dict[str, Any], new_name: str, plan_name: str) -> None:
    src, b, tgt = plan.get("source", {}), plan.get("backup", {}), plan.get("target", {})
    console.rule(f"Undo preview: {new_name}")
    held = f"{src.get('name')} ({src.get('instance_guid')})"
    if src.get("deleted_at"):
        held += f", [yellow]deleted {_t(src['deleted_at'])}[/]"
    console.print(f"source:    {held}")
    console.print(f"backup:    {b.get('label')} ({b.get('type')}, stopped {_t(b.get('stop_time'))})")
    target = tgt.get("kind", "")
    if tgt.get("value") is not None:
        target += f" {tgt['value']}"
    console.print(f"target:    {target}, timeline path {' -> '.join(map(str, plan.get('timeline_path', [])))}")
    w = plan.get("window", {})
    console.print(f"the clone holds every change committed up to the target; the window is "
                  f"{_t(w.get('earliest'))} .. {_t(w.get('latest'))}")
    console.print(f"WAL:       {plan.get('wal', {}).get('segments', '?')} segment(s) to replay")
    console.print(f"new instance: {new_name}, plan {plan_name}")
    for warning in plan.get("warnings", []):
        console.print(f"[yellow]warning:[/] {warning.get('message', warning) if isinstance(warning, dict) else warning}")


def refusal(console: Console, message: str, doc: dict[str, Any]) -> None:
    err = doc.get("error", {}) if isinstance(doc, dict) else {}
    console.print(f"[red]Refused:[/] {err.get('message') or message}")
    windows = err.get("windows") or []
    if windows:
        windows_table(console, windows, "What can be restored")


def changes(console: Console, doc: dict[str, Any]) -> None:
    t = Table(title=f"Changes {_t(doc.get('from'))} .. {_t(doc.get('to'))}", title_justify="left")
    for col in ("xid", "committed", "lsn", "destructive", "what"):
        t.add_column(col)
    for x in doc.get("transactions", []):
        what = [f"dropped {d.get('name') or d.get('relfilenode')}" for d in x.get("dropped", [])]
        what += [f"{r['relation'].get('name') or r['relation'].get('relfilenode')}: +{r.get('inserted', 0)} "
                 f"~{r.get('updated', 0)} -{r.get('deleted', 0)}" for r in x.get("rows", [])]
        t.add_row(str(x.get("xid")), _t(x.get("commit_time")), str(x.get("commit_lsn")),
                  "[red]yes[/]" if x.get("destructive") else "no", "; ".join(what)[:200])
    console.print(t)
    for p in doc.get("restore_points", []):
        console.print(f"restore point {p.get('name')!r} at {_t(p.get('time'))} ({p.get('lsn')})")

