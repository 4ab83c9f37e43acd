"""Documents of the JSON contracts (backups, plan) built from the catalog, shared by CLI and HTTP API."""
from __future__ import annotations

import json
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

import asyncpg
from rich.console import Console
from rich.table import Table

from backup_catalog.settings import Settings
from catalog import derived, repo
from catalog.errors import NotScanned, UnknownService
from catalog.rows import InstanceRecord, ScanState
from recovery import jsonout
from recovery.errors import PlanningError
from recovery.jsonout import json_time
from recovery.model import ArchiveSnapshot
from recovery.plan import RecoveryPlan, WindowsUnknown, narrowable, plan_recovery
from recovery.target import Target
from recovery.wal import DEFAULT_SEG_SIZE
from recovery.windows import Window
from recovery.windows import all_windows as windows_by_path

iso = json_time


def instance_to_dict(r: InstanceRecord) -> dict[str, Any]:
    return {"instance_guid": r.guid, "space_guid": r.ref.space_guid, "org_guid": r.ref.org_guid, "name": r.ref.name,
            "deleted_at": iso(r.ref.deleted_at), "bucket": r.storage.bucket, "prefix": r.storage.prefix,
            "layout": (r.layout.value if r.layout else None), "stanza": r.stanza,
            "pg_version": r.pg_version, "seg_size": r.seg_size}


class SnapshotCache:
    """Per-process snapshots (and their windows) keyed by instance, valid while the stored generation is.

    Bounded by the number of backups held, not of instances: every cached backup is a few objects the
    cyclic garbage collector must traverse on each full collection, so a cache of millions of objects
    turns into pauses of hundreds of milliseconds. A few thousand backups keep the instances being worked
    on warm; everything else takes the cold path (one catalog snapshot, a few milliseconds).
    """

    def __init__(self, max_backups: int = 20_000) -> None:
        self.max_backups = max_backups
        self._entries: OrderedDict[str, tuple[object, ArchiveSnapshot, list[Window] | None]] = OrderedDict()
        self._held = 0

    @staticmethod
    def _weight(snap: ArchiveSnapshot) -> int:
        return len(snap.backups) + len(snap.runs) + 1

    def get(self, guid: str, gen: object) -> ArchiveSnapshot | None:
        hit = self._entries.get(guid)
        if hit is None or hit[0] != gen:
            return None
        self._entries.move_to_end(guid)
        return hit[1]

    def put(self, guid: str, gen: object, snap: ArchiveSnapshot) -> None:
        self.discard(guid)
        w = self._weight(snap)
        if w > self.max_backups:
            return
        self._entries[guid] = (gen, snap, None)
        self._held += w
        while self._held > self.max_backups:
            _, (_, old, _) = self._entries.popitem(last=False)
            self._held -= self._weight(old)

    def discard(self, guid: str) -> None:
        old = self._entries.pop(guid, None)
        if old is not None:
            self._held -= self._weight(old[1])

    def windows(self, guid: str, snap: ArchiveSnapshot) -> list[Window]:
        hit = self._entries.get(guid)
        if hit is None or hit[1] is not snap:
            return all_windows(snap)
        if hit[2] is None:
            self._entries[guid] = (hit[0], snap, all_windows(snap))
        return self._entries[guid][2] or []

    def clear(self) -> None:
        self._entries.clear()
        self._held = 0


SNAPSHOTS = SnapshotCache()


async def snapshot_of(pool: asyncpg.Pool, guid: str) -> ArchiveSnapshot:
    """The instance's snapshot, cached per process until a scan stores a new generation.

    Only ``save_scan``/``save_edges`` change what a snapshot holds, and they change the snapshot version:
    one cheap query replaces the snapshot's several (a stale hit is impossible; a race only causes a reload).
    """
    gen = await repo.snapshot_version(pool, guid)
    snap = SNAPSHOTS.get(guid, gen)
    if snap is None:
        snap = await repo.load_snapshot(pool, guid)
        SNAPSHOTS.put(guid, gen, snap)
    return snap


def windows_of(guid: str, snap: ArchiveSnapshot) -> list[Window]:
    """All windows of a snapshot obtained from :func:`snapshot_of`, computed once per generation."""
    return SNAPSHOTS.windows(guid, snap)


def all_windows(snap: ArchiveSnapshot) -> list[Window]:
    return [w for ws in windows_by_path(snap).values() for w in ws]


def scan_to_dict(state: ScanState | None) -> dict[str, Any]:
    if state is None:
        return {"last_scan": None, "unknown_objects": 0, "errors": []}
    errors = [{"code": i.code, "key": i.key, "message": i.message} for i in state.issues
              if i.code not in ("foreign_object",)]
    if state.last_error:
        errors.insert(0, {"code": state.last_error_code, "key": None, "message": state.last_error})
    return {"last_scan": iso(state.last_scan), "last_full_scan": iso(state.last_full_scan),
            "stale_since": iso(state.stale_since), "unknown_objects": state.unknown_objects, "errors": errors}


_EMPTY = ArchiveSnapshot(layout=None, seg_size=DEFAULT_SEG_SIZE, backups=(), runs=())  # type: ignore[arg-type]


async def archive_text(pool: asyncpg.Pool, guid: str, stored: str | None = None) -> str:
    """The archive part of an instance's Backups entry as JSON object text: ``stored`` (for the current
    scan), else computed and stored."""
    if stored is None:
        stored = await derived.stored_archive(pool, guid)
    if stored is None:
        try:
            stored = (await derived.refresh(pool, guid))[0].archive
        except NotScanned:
            stored = json.dumps(jsonout.archive_to_dict(_EMPTY, {}), separators=(",", ":"))
    return stored


def _join_objects(head: dict[str, Any], tail: str) -> str:
    """JSON text of ``head`` with the members of the JSON object text ``tail`` appended."""
    h = json.dumps(head, separators=(",", ":"))
    t = tail.strip()
    if not (t.startswith("{") and t.endswith("}")):
        raise ValueError("not a JSON object")
    return h if t == "{}" else h[:-1] + "," + t[1:]


async def backups_body(pool: asyncpg.Pool, space: str, name: str) -> str:
    """The Backups document as JSON text, every holder of the name newest first.

    Each instance entry is its live part (name, deletion, scan state) joined with the archive document
    stored for its current scan, without re-encoding a year of backups per request.
    """
    found = await repo.holders_with_views(pool, space, name)
    if not found:
        raise UnknownService(space, name)
    parts = []
    for rec, state, stored in found:
        head = {"instance_guid": rec.guid, "name": rec.ref.name, "deleted_at": iso(rec.ref.deleted_at),
                "layout": rec.layout.value if rec.layout else None, "scan": scan_to_dict(state)}
        parts.append(_join_objects(head, await archive_text(pool, rec.guid, stored)))
    return _join_objects({"space_guid": space, "name": name}, '{"instances":[' + ",".join(parts) + "]}")


async def backups_doc(pool: asyncpg.Pool, space: str, name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(await backups_body(pool, space, name))
    return doc


def print_backups(doc: dict[str, Any], console: Console) -> None:
    console.print(f"[bold]{doc['name']}[/bold] in space {doc['space_guid']}")
    for inst in doc["instances"]:
        gone = f" [red](deleted {inst['deleted_at']})[/red]" if inst["deleted_at"] else ""
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


_CLONE_KEYS = {"clone-from", "point-in-time", "lsn", "latest", "immediate", "timeline", "exclusive", "pg-version"}


def _target_from_body(body: dict[str, Any]) -> Any:
    from recovery.target import make_target
    unknown = set(body) - _CLONE_KEYS
    if unknown:
        raise PlanningError("invalid_target", f"unknown fields: {', '.join(sorted(unknown))}")
    return make_target(point_in_time=body.get("point-in-time"), lsn=body.get("lsn"),
                       latest=bool(body.get("latest")), immediate=bool(body.get("immediate")),
                       timeline=body.get("timeline") or "latest", exclusive=bool(body.get("exclusive")))


async def plan_doc(pool: asyncpg.Pool, settings: Settings, space: str, body: dict[str, Any],
                   *, now: datetime | None = None) -> dict[str, Any]:
    """Resolve ``clone-from`` in the space at the target time and plan the recovery (or raise a refusal)."""
    from recovery.jsonout import plan_to_dict
    from recovery.render import render_files, restore_command
    from recovery.target import TargetKind

    name = body.get("clone-from")
    if not isinstance(name, str) or not name:
        raise PlanningError("invalid_target", "clone-from must name a service instance")
    target = _target_from_body(body)
    at = target.time if target.kind is TargetKind.TIME else None
    async with pool.acquire() as c:     # one connection for the common path: resolve, narrowed load
        res = await repo.resolve_name(c, space, name, at)
        rec = res.record
        inputs = (await repo.load_plan_inputs(c, rec.guid, target, PLAN_CANDIDATES)
                  if narrowable(target) else None)
    plan, snap = await _plan(pool, rec, target, now or datetime.now(UTC), body.get("pg-version"), inputs)
    pg_version = plan.pg_version or 15
    layout = rec.layout or snap.layout
    cmd = restore_command(layout, bucket=rec.storage.bucket, prefix=rec.storage.prefix.strip("/"),
                          stanza=rec.stanza or rec.storage.stanza or "main", endpoint_url=settings.s3_endpoint_url)
    files = render_files(plan, cmd, pg_version)
    doc = plan_to_dict(plan, files, cmd)
    return {"source": {"instance_guid": rec.guid, "space_guid": rec.ref.space_guid, "name": rec.ref.name,
                       "deleted_at": iso(rec.ref.deleted_at), "layout": layout.value if layout else None,
                       "resolution": res.reason, "resolution_rule": res.rule}, **doc}


PLAN_CANDIDATES = 4   # newest candidate backups loaded for a plan (recovery.plan.narrow)


async def _plan(pool: asyncpg.Pool, rec: InstanceRecord, target: Target, now: datetime,
                requested_pg: int | None, inputs: repo.PlanInputs | None) -> tuple[RecoveryPlan, ArchiveSnapshot]:
    """Plan from the newest candidates and the stored windows (``inputs``, from ``repo.load_plan_inputs``;
    None when not stored for the current scan) when that is conclusive, else from the whole snapshot (the
    result is the same; see ``recovery.plan.narrow``). Refusals always come from the whole snapshot."""
    def pg(snap: ArchiveSnapshot) -> int:
        return requested_pg or _major(rec.pg_version or snap.pg_version) or 15

    if narrowable(target):
        if inputs is None:     # no stored windows for this scan yet: compute and store them on the way
            d, whole = await derived.refresh(pool, rec.guid)
            try:
                return plan_recovery(whole, target, now=now, pg_version=pg(whole), windows=d.windows), whole
            except WindowsUnknown:   # no window at all on the requested path: the whole-snapshot refusal
                return plan_recovery(whole, target, now=now, pg_version=pg(whole)), whole
        try:
            plan = plan_recovery(inputs.snapshot, target, now=now, pg_version=pg(inputs.snapshot),
                                 windows=derived.parse_windows(inputs.windows_json))
            if plan.backup.label in inputs.prefix:
                return plan, inputs.snapshot
        except (PlanningError, WindowsUnknown, ValueError):
            pass
    snap = await snapshot_of(pool, rec.guid)
    return plan_recovery(snap, target, now=now, pg_version=pg(snap)), snap


def _major(v: int | None) -> int | None:
    """server_version_num → major (150018 → 15, 90624 → 9); small numbers are majors already."""
    if v is None:
        return None
    return v // 10000 if v >= 100000 else (v // 10000 if v >= 90000 else v)


def print_plan(doc: dict[str, Any], console: Console) -> None:
    src, b = doc["source"], doc["backup"]
    console.print(f"[bold]clone of[/bold] {src['name']} (instance {src['instance_guid']}"
                  f"{', deleted ' + src['deleted_at'] if src['deleted_at'] else ''}): {src.get('resolution', '')}")
    console.print(f"base backup [bold]{b['label']}[/bold] ({b['type']}, timeline {b['timeline']}, "
                  f"stop {b['stop_time']} at {b['stop_lsn']})" + (f", depends on {', '.join(b['depends_on'])}" if b["depends_on"] else ""))
    t = doc["target"]
    console.print(f"target {t['kind']} {t.get('value') or ''} (inclusive={t['inclusive']}, timeline {t['timeline']}) "
                  f"along timeline path {doc['timeline_path']}")
    w = doc["wal"]
    console.print(f"WAL {w['first_segment']} .. {w['last_segment']} ({w['segments']} segments)")
    for name, text in doc["files"].items():
        console.print(f"[dim]--- {name}[/dim]")
        console.print(text or "(empty)", markup=False, highlight=False)
    for warn in doc.get("warnings", []):
        console.print(f"[yellow]warning:[/yellow] {warn}")
