"""What the planner reads from the catalog: archive snapshots (repeatable read) and narrowed plan inputs."""
from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from catalog import rows
from catalog.db import Conn, Db
from catalog.errors import NotScanned, UnknownInstance
from catalog.names import CURRENT_SCAN_CACHE, get_instance
from catalog.scans import load_scan_state
from recovery.model import ArchiveSnapshot, Backup, WalRun
from recovery.narrow import candidate_order
from recovery.target import Target, TargetKind
from recovery.wal import DEFAULT_SEG_SIZE


async def backups(db: Db, guid: str) -> tuple[Backup, ...]:
    recs = await db.fetch("SELECT * FROM backups WHERE instance_guid = $1 "
                          "ORDER BY start_time NULLS LAST, start_lsn NULLS LAST, label", guid)
    return tuple(rows.row_to_backup(r) for r in recs)


async def wal_runs(db: Db, guid: str) -> tuple[WalRun, ...]:
    recs = await db.fetch("SELECT timeline, first_segno, last_segno FROM wal_runs WHERE instance_guid = $1 "
                          "ORDER BY timeline, first_segno", guid)
    return tuple(rows.row_to_run(r) for r in recs)


async def wal_conflicts(db: Db, guid: str) -> tuple[rows.WalConflictRow, ...]:
    recs = await db.fetch("SELECT * FROM wal_conflicts WHERE instance_guid = $1 ORDER BY timeline, segno", guid)
    return tuple(rows.row_to_conflict(r) for r in recs)


async def snapshot_version(db: Db, guid: str) -> tuple[int, datetime | None]:
    """What identifies the instance's stored scan: (generation, last scan time); both change with every
    ``save_scan``, and the time also tells apart a catalog rebuilt from scratch (generation restarting)."""
    row = await db.fetchrow("SELECT generation, last_scan FROM scan_state WHERE instance_guid = $1", guid)
    return (int(row["generation"]), row["last_scan"]) if row else (0, None)


async def load_snapshot(db: Db, guid: str) -> ArchiveSnapshot:
    """Everything the planner needs about one instance, read in one repeatable-read snapshot.
    :raises NotScanned: the archive layout is unknown (never scanned, requested ``auto``).
    """
    async with _snapshot(db) as c:
        return await _load_snapshot(c, guid)


async def load_versioned_snapshot(db: Db, guid: str) -> tuple[tuple[int, datetime | None], ArchiveSnapshot]:
    """:func:`load_snapshot` and the :func:`snapshot_version` it belongs to, read in the same snapshot."""
    async with _snapshot(db) as c:
        version = await snapshot_version(c, guid)
        return version, await _load_snapshot(c, guid)


async def _load_snapshot(c: Conn, guid: str) -> ArchiveSnapshot:
    rec = await get_instance(c, guid)
    if rec.layout is None:
        raise NotScanned(guid)
    hist = await c.fetch("SELECT tli, ordinal, parent, switchpoint, reason FROM timelines "
                         "WHERE instance_guid = $1 ORDER BY tli, ordinal", guid)
    edges = await c.fetch("SELECT * FROM window_edges WHERE instance_guid = $1 ORDER BY timeline, segno", guid)
    state = await load_scan_state(c, guid)
    blocked = rows.blocked_segments(await wal_conflicts(c, guid))
    return ArchiveSnapshot(
        integrity_errors=tuple(i.message for i in state.issues if i.code == "integrity_error"),
        layout=rec.layout, seg_size=rec.seg_size or DEFAULT_SEG_SIZE,
        backups=await backups(c, guid),
        runs=await wal_runs(c, guid), histories=rows.rows_to_histories(hist),
        edges=tuple(rows.row_to_edge(e) for e in edges), pg_version=rec.pg_version,
        conflicts=blocked.conflicts, conflict_notes=blocked.conflict_notes, corrupt=blocked.corrupt)


_USABLE = ("status = 'done' AND timeline IS NOT NULL AND start_lsn IS NOT NULL AND stop_lsn IS NOT NULL")
_ORDER = {"time": 'stop_time DESC NULLS LAST, stop_lsn DESC, label COLLATE "C" DESC',
          "lsn": 'stop_lsn DESC, stop_time DESC NULLS LAST, label COLLATE "C" DESC'}


@dataclass(frozen=True, slots=True)
class PlanInputs:
    """A snapshot narrowed to the newest candidates (``recovery.narrow.narrow``, in SQL), the labels of
    that prefix, and the stored windows (JSON text) of the same scan."""

    snapshot: ArchiveSnapshot
    prefix: frozenset[str]
    windows_json: str


async def load_plan_inputs(db: Db, guid: str, target: Target, k: int) -> PlanInputs | None:
    """What a plan for ``target`` needs when the scan's windows are stored (``scan_cache``): the k
    newest usable candidate backups and their ``depends_on`` chains, not the whole history. One statement
    (one consistent snapshot, one round trip). None when the stored windows are missing or belong to
    another scan (the caller plans from the whole snapshot).
    :raises NotScanned: the archive layout is unknown. :raises UnknownInstance: no such instance.
    """
    order = candidate_order(target)
    args: list[object]
    if target.kind is TargetKind.TIME:
        cond, args = ("stop_time <= $2" if target.inclusive else "stop_time < $2"), [target.time]
    elif target.kind is TargetKind.LSN:
        cond, args = "stop_lsn <= $2", [target.lsn]
    elif target.exact:      # the resolved commit or restore point record (recovery.narrow.is_candidate)
        cond, args = "stop_lsn <= $2", [target.resolved.lsn]
    else:
        cond, args = "true", []
    r = await db.fetchrow(f"""
        WITH RECURSIVE prefix AS (
            SELECT label FROM backups WHERE instance_guid = $1 AND {_USABLE} AND {cond}
            ORDER BY {_ORDER[order]} LIMIT {int(k)}),
        chain(label) AS (
            SELECT label FROM prefix
            UNION
            SELECT d.label FROM chain JOIN backups b ON b.instance_guid = $1 AND b.label = chain.label,
                   unnest(b.depends_on) AS d(label))
        SELECT i.*, '' AS name, s.issues AS scan_issues, sc.windows AS stored_windows,
          (SELECT json_agg(json_build_array(tli, parent, switchpoint::text, reason) ORDER BY tli, ordinal)
             FROM timelines WHERE instance_guid = $1) AS j_hist,
          (SELECT json_agg(json_build_array(timeline, segno, last_commit_time, last_commit_lsn::text, exact)
                           ORDER BY timeline, segno) FROM window_edges WHERE instance_guid = $1) AS j_edges,
          (SELECT json_agg(json_build_array(timeline, first_segno, last_segno) ORDER BY timeline, first_segno)
             FROM wal_runs WHERE instance_guid = $1) AS j_runs,
          (SELECT json_agg(json_build_array(timeline, segno, detail, kind) ORDER BY timeline, segno)
             FROM wal_conflicts WHERE instance_guid = $1) AS j_conflicts,
          (SELECT json_agg(json_build_object(
                  'label', b.label, 'type', type, 'status', status, 'timeline', timeline,
                  'start_lsn', start_lsn - '0/0', 'stop_lsn', stop_lsn - '0/0', 'start_time', start_time,
                  'stop_time', stop_time, 'stop_time_exact', stop_time_exact, 'depends_on', depends_on,
                  'parent', parent, 'size_bytes', size_bytes, 'repo_size_bytes', repo_size_bytes,
                  'pg_version', pg_version, 'system_id', system_id::text, 'seg_size', seg_size, 'error', error,
                  'metadata_key', metadata_key, 'in_prefix', b.label IN (SELECT label FROM prefix))
                  ORDER BY start_time NULLS LAST, start_lsn NULLS LAST, b.label)
             FROM backups b WHERE b.instance_guid = $1 AND b.label = ANY(ARRAY(SELECT label FROM chain))
          ) AS j_backups
        FROM instances i
        LEFT JOIN scan_state s USING (instance_guid)
        LEFT JOIN scan_cache sc ON {CURRENT_SCAN_CACHE}
        WHERE i.instance_guid = $1""", guid, *args)
    if r is None:
        raise UnknownInstance(guid)
    rec = rows.row_to_instance(r)
    if rec.layout is None:
        raise NotScanned(guid)
    if r["stored_windows"] is None:
        return None
    backups = [rows.json_to_backup(b) for b in json.loads(r["j_backups"] or "[]")]
    issues = rows.issues_from_json(r["scan_issues"])
    blocked = rows.blocked_segments(rows.WalConflictRow(t, n, detail, kind)
                                    for t, n, detail, kind in json.loads(r["j_conflicts"] or "[]"))
    snap = ArchiveSnapshot(
        integrity_errors=tuple(i.message for i in issues if i.code == "integrity_error"),
        layout=rec.layout, seg_size=rec.seg_size or DEFAULT_SEG_SIZE, backups=tuple(b for b, _ in backups),
        runs=tuple(WalRun(t, a, b) for t, a, b in json.loads(r["j_runs"] or "[]")),
        histories=rows.json_to_histories(json.loads(r["j_hist"] or "[]")),
        edges=tuple(rows.json_to_edge(e) for e in json.loads(r["j_edges"] or "[]")), pg_version=rec.pg_version,
        conflicts=blocked.conflicts, conflict_notes=blocked.conflict_notes, corrupt=blocked.corrupt)
    return PlanInputs(snap, frozenset(b.label for b, in_prefix in backups if in_prefix), r["stored_windows"])


@asynccontextmanager
async def _snapshot(db: Db) -> AsyncIterator[Conn]:
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            yield conn
    else:
        yield db
