"""Catalog repository: scan results and scan state, snapshots and plan inputs; and the one import for
everything the catalog stores (``from catalog import repo``): instances and their name history live in
:mod:`catalog.names`, leases and the run log in :mod:`catalog.leases`, both re-exported here.

Every function takes an asyncpg Pool or Connection first; writes run in one transaction.
Rows become domain values only in :mod:`catalog.rows`.
"""
from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from catalog import rows
from catalog.db import Conn, Db
from catalog.db import transaction as transaction
from catalog.errors import CatalogError, Conflict, NotScanned, UnknownInstance
from catalog.leases import check_lease as check_lease
from catalog.leases import finish_run as finish_run
from catalog.leases import record_run as record_run
from catalog.leases import release_lease as release_lease
from catalog.leases import try_acquire_lease as try_acquire_lease
from catalog.names import CURRENT_VIEW as CURRENT_VIEW
from catalog.names import delete_instance as delete_instance
from catalog.names import get_instance as get_instance
from catalog.names import holders_with_views as holders_with_views
from catalog.names import list_instances as list_instances
from catalog.names import name_holders as name_holders
from catalog.names import register_instance as register_instance
from catalog.names import rename_instance as rename_instance
from catalog.names import resolve_name as resolve_name
from catalog.rows import ScanState
from catalog.scanresult import ScanResult, WalMode
from recovery.model import ArchiveSnapshot, Backup, WalRun, WindowEdge
from recovery.narrow import candidate_order
from recovery.target import Target, TargetKind
from recovery.wal import DEFAULT_SEG_SIZE, merge_runs

TABLES = ("instances", "instance_names", "backups", "timelines", "wal_runs", "wal_conflicts",
          "window_edges", "scan_state", "derived_views", "scan_leases", "scan_runs", "drills", "purges",
          "instance_facts")


# -- scans -------------------------------------------------------------------------------------

async def save_scan(db: Db, guid: str, result: ScanResult, *, expected_generation: int | None = None,
                    lease_key: str | None = None, lease_token: int | None = None) -> int:
    """Store one scan's findings in ONE transaction and return the new generation.

    Fencing: with ``expected_generation`` (the generation the scan started from) or a lease
    (``lease_key`` + ``lease_token`` still current), a stale writer gets Conflict and writes nothing.
    """
    try:
        async with transaction(db) as c:
            gen = await _lock_scan_state(c, guid)
            if expected_generation is not None and gen != expected_generation:
                raise Conflict(f"instance {guid}: catalog generation is {gen}, scan started from "
                               f"{expected_generation} (another writer saved since)")
            if lease_key is not None and not await check_lease(c, lease_key, lease_token):
                raise Conflict(f"instance {guid}: lease {lease_key!r} token {lease_token} is no longer held")
            await c.execute(
                """UPDATE instances SET detected_layout = $2, detected_stanza = coalesce($3, detected_stanza),
                          seg_size = coalesce($4, seg_size), pg_version = coalesce($5, pg_version),
                          system_id = coalesce($6, system_id) WHERE instance_guid = $1""",
                guid, str(result.layout), result.stanza, result.seg_size, result.pg_version, result.system_id)
            if result.backups is not None:
                await _replace_backups(c, guid, result.backups)
            for tli, switches in result.histories.items():
                await c.execute("DELETE FROM timelines WHERE instance_guid = $1 AND tli = $2", guid, tli)
                await c.executemany(
                    "INSERT INTO timelines (instance_guid, tli, ordinal, parent, switchpoint, reason) "
                    "VALUES ($1, $2, $3, $4, $5, $6)",
                    [(guid, tli, i, s.parent, s.switchpoint, s.reason) for i, s in enumerate(switches)])
            if result.listed_histories is not None:   # a full reconcile: forget histories the bucket lacks
                await c.execute("DELETE FROM timelines WHERE instance_guid = $1 AND NOT (tli = ANY($2::int[]))",
                                guid, sorted(result.listed_histories))
            former_ends = await _store_runs(c, guid, result.wal_runs, replace=result.wal_mode is WalMode.REPLACE)
            unblocked: set[tuple[int, int]] = set()
            if result.wal_mode is WalMode.REPLACE:
                old = await c.fetch("DELETE FROM wal_conflicts WHERE instance_guid = $1 RETURNING timeline, segno",
                                    guid)
                unblocked = {(r["timeline"], r["segno"]) for r in old}
            blocked = {(x.timeline, x.segno): (x.detail, "conflict") for x in result.conflicts}
            blocked.update({(x.timeline, x.segno): (x.detail, "corrupt") for x in result.corrupt})  # proof wins
            await c.executemany(
                """INSERT INTO wal_conflicts (instance_guid, timeline, segno, detail, kind) VALUES ($1, $2, $3, $4, $5)
                   ON CONFLICT (instance_guid, timeline, segno)
                   DO UPDATE SET detail = EXCLUDED.detail, kind = EXCLUDED.kind""",
                [(guid, t, n, detail, kind) for (t, n), (detail, kind) in sorted(blocked.items())])
            await _upsert_edges(c, guid, result.edges)
            # the edge before a segment that no longer blocks replay is no window's end any more
            before = {(t, n - 1) for t, n in unblocked - set(blocked)}
            await _drop_edges(c, guid, (former_ends | before) - {(e.timeline, e.segno) for e in result.edges})
            new_gen: int = await c.fetchval(
                """UPDATE scan_state SET cursors = $2::jsonb, last_scan = $3, last_attempt = $3,
                          last_full_scan = CASE WHEN $4 THEN $3 ELSE last_full_scan END,
                          unknown_objects = $5, issues = $6::jsonb, requests = requests + $7,
                          last_error = NULL, last_error_code = NULL, stale_since = NULL,
                          generation = generation + 1
                   WHERE instance_guid = $1 RETURNING generation""",
                guid, rows.cursors_to_json(result.cursors), result.finished_at, result.full,
                result.unknown_objects, rows.issues_to_json(result.issues), result.requests)
            return new_gen
    except asyncpg.UniqueViolationError as exc:
        raise Conflict(f"instance {guid}: concurrent scan write: {exc.message}") from None
    except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError, OverflowError) as exc:
        raise CatalogError(f"instance {guid}: scan result rejected by the catalog, nothing saved: {exc}") from None


async def _lock_scan_state(c: Conn, guid: str) -> int:
    gen = await c.fetchval("SELECT generation FROM scan_state WHERE instance_guid = $1 FOR UPDATE", guid)
    if gen is None:
        if await c.fetchval("SELECT 1 FROM instances WHERE instance_guid = $1", guid) is None:
            raise UnknownInstance(guid)
        await c.execute("INSERT INTO scan_state (instance_guid) VALUES ($1) ON CONFLICT DO NOTHING", guid)
        gen = await c.fetchval("SELECT generation FROM scan_state WHERE instance_guid = $1 FOR UPDATE", guid)
    return int(gen)


async def _replace_backups(c: Conn, guid: str, backups: Sequence[Backup]) -> None:
    cols = rows.BACKUP_COLUMNS
    await c.execute("DELETE FROM backups WHERE instance_guid = $1 AND NOT (label = ANY($2::text[]))",
                    guid, [b.label for b in backups])
    placeholders = ", ".join(f"${i}" for i in range(2, len(cols) + 2))
    updates = ", ".join(f"{col} = EXCLUDED.{col}" for col in cols[1:])
    await c.executemany(
        f"""INSERT INTO backups (instance_guid, {', '.join(cols)}) VALUES ($1, {placeholders})
            ON CONFLICT (instance_guid, label) DO UPDATE SET {updates}""",
        [(guid, *rows.backup_to_args(b)) for b in backups])


async def _store_runs(c: Conn, guid: str, found: Sequence[WalRun], *, replace: bool
                      ) -> set[tuple[int, int]]:
    """MERGE: stored ∪ found; REPLACE: found only (and edges on vanished segments go). O(runs).

    Returns the former run ends that no longer end a run (the run grew or merged): their edges are stale.
    """
    stored = {rows.row_to_run(r) for r in await c.fetch(
        "SELECT timeline, first_segno, last_segno FROM wal_runs WHERE instance_guid = $1", guid)}
    merged = set(merge_runs(found if replace else [*stored, *found]))
    gone, new = stored - merged, merged - stored
    if gone:
        await c.execute(
            """DELETE FROM wal_runs w USING unnest($2::int[], $3::bigint[]) AS g(timeline, first_segno)
               WHERE w.instance_guid = $1 AND w.timeline = g.timeline AND w.first_segno = g.first_segno""",
            guid, [r.timeline for r in gone], [r.first for r in gone])
    if new:
        await c.execute(
            """INSERT INTO wal_runs (instance_guid, timeline, first_segno, last_segno)
               SELECT $1, * FROM unnest($2::int[], $3::bigint[], $4::bigint[])""",
            guid, [r.timeline for r in new], [r.first for r in new], [r.last for r in new])
    if replace and gone:
        await c.execute(
            """DELETE FROM window_edges e WHERE e.instance_guid = $1 AND NOT EXISTS (
                   SELECT 1 FROM wal_runs r WHERE r.instance_guid = e.instance_guid AND r.timeline = e.timeline
                   AND e.segno BETWEEN r.first_segno AND r.last_segno)""", guid)
    return {(r.timeline, r.last) for r in gone} - {(r.timeline, r.last) for r in merged}


async def _drop_edges(c: Conn, guid: str, ends: set[tuple[int, int]]) -> None:
    """Forget the edges at ``ends`` (else one stale row per run extension piles up, and the catalog
    differs from a fresh scan of the same archive)."""
    if ends:
        await c.execute(
            """DELETE FROM window_edges e USING unnest($2::int[], $3::bigint[]) AS k(timeline, segno)
               WHERE e.instance_guid = $1 AND e.timeline = k.timeline AND e.segno = k.segno""",
            guid, [t for t, _ in ends], [n for _, n in ends])


async def _upsert_edges(c: Conn, guid: str, edges: Sequence[WindowEdge]) -> None:
    await c.executemany(
        """INSERT INTO window_edges (instance_guid, timeline, segno, last_commit_time, last_commit_lsn, exact)
           VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (instance_guid, timeline, segno) DO UPDATE SET last_commit_time = EXCLUDED.last_commit_time,
               last_commit_lsn = EXCLUDED.last_commit_lsn, exact = EXCLUDED.exact""",
        [(guid, *rows.edge_to_args(e)) for e in edges])


async def save_edges(db: Db, guid: str, edges: Sequence[WindowEdge]) -> None:
    """Upsert window edges (e.g. after decoding WAL records) outside a full scan.

    Edges are part of the snapshot, so this bumps the generation like ``save_scan``: readers that cache
    snapshots by :func:`snapshot_version` see the change, and an in-flight scan's fenced save is refused.
    """
    async with transaction(db) as c:
        if await c.fetchval("SELECT 1 FROM instances WHERE instance_guid = $1", guid) is None:
            raise UnknownInstance(guid)
        await _upsert_edges(c, guid, edges)
        await c.execute("UPDATE scan_state SET generation = generation + 1 WHERE instance_guid = $1", guid)


async def record_scan_failure(db: Db, guid: str, code: str, message: str) -> None:
    """A scan failed: keep every catalog row, note the error, mark stale from now (if not already)."""
    async with transaction(db) as c:
        await _lock_scan_state(c, guid)
        await c.execute(
            """UPDATE scan_state SET last_error = $2, last_error_code = $3, last_attempt = now(),
                      stale_since = coalesce(stale_since, now()) WHERE instance_guid = $1""",
            guid, message, code)


async def load_scan_state(db: Db, guid: str) -> ScanState:
    row = await db.fetchrow("SELECT * FROM scan_state WHERE instance_guid = $1", guid)
    if row is not None:
        return rows.row_to_scan_state(row)
    if await db.fetchval("SELECT 1 FROM instances WHERE instance_guid = $1", guid) is None:
        raise UnknownInstance(guid)
    return ScanState(instance_guid=guid)


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
    conflicts, corrupt = rows.blocked_segments(await wal_conflicts(c, guid))
    return ArchiveSnapshot(
        integrity_errors=tuple(i.message for i in state.issues if i.code == "integrity_error"),
        layout=rec.layout, seg_size=rec.seg_size or DEFAULT_SEG_SIZE,
        backups=await backups(c, guid),
        runs=await wal_runs(c, guid), histories=rows.rows_to_histories(hist),
        edges=tuple(rows.row_to_edge(e) for e in edges), pg_version=rec.pg_version,
        conflicts=conflicts, corrupt=corrupt)


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
    """What a plan for ``target`` needs when the scan's windows are stored (``derived_views``): the k
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
        SELECT i.*, '' AS name, s.issues AS scan_issues, dv.windows AS stored_windows,
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
        LEFT JOIN derived_views dv ON {CURRENT_VIEW}
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
    conflicts, corrupt = rows.blocked_segments(rows.WalConflictRow(t, n, detail, kind)
                                               for t, n, detail, kind in json.loads(r["j_conflicts"] or "[]"))
    snap = ArchiveSnapshot(
        integrity_errors=tuple(i.message for i in issues if i.code == "integrity_error"),
        layout=rec.layout, seg_size=rec.seg_size or DEFAULT_SEG_SIZE, backups=tuple(b for b, _ in backups),
        runs=tuple(WalRun(t, a, b) for t, a, b in json.loads(r["j_runs"] or "[]")),
        histories=rows.json_to_histories(json.loads(r["j_hist"] or "[]")),
        edges=tuple(rows.json_to_edge(e) for e in json.loads(r["j_edges"] or "[]")), pg_version=rec.pg_version,
        conflicts=conflicts, corrupt=corrupt)
    return PlanInputs(snap, frozenset(b.label for b, in_prefix in backups if in_prefix), r["stored_windows"])


@asynccontextmanager
async def _snapshot(db: Db) -> AsyncIterator[Conn]:
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            yield conn
    else:
        yield db


async def table_counts(db: Db) -> dict[str, int]:
    """Row count per catalog table (footprint reports)."""
    sql = " UNION ALL ".join(f"SELECT '{t}' AS t, count(*) AS n FROM {t}" for t in TABLES)
    return {r["t"]: int(r["n"]) for r in await db.fetch(sql)}
