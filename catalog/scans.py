"""Scan results and scan state in the catalog: one transaction per save, fenced by the scan generation."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import asyncpg

from catalog import rows
from catalog.db import Conn, Db, transaction
from catalog.errors import CatalogError, Conflict, UnknownInstance
from catalog.leases import check_lease
from catalog.rows import ScanState
from catalog.scanresult import ScanResult, WalMode
from recovery.model import Backup, WalRun, WindowEdge
from recovery.timeline import TimelineSwitch
from recovery.wal import merge_runs


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
            await _replace_histories(c, guid, result.histories)
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


async def _replace_histories(c: Conn, guid: str, histories: Mapping[int, Sequence[TimelineSwitch]]) -> None:
    """Each given timeline's history (its switch points) replaces the stored one."""
    for tli, switches in histories.items():
        await c.execute("DELETE FROM timelines WHERE instance_guid = $1 AND tli = $2", guid, tli)
        await c.executemany(
            "INSERT INTO timelines (instance_guid, tli, ordinal, parent, switchpoint, reason) "
            "VALUES ($1, $2, $3, $4, $5, $6)",
            [(guid, tli, i, s.parent, s.switchpoint, s.reason) for i, s in enumerate(switches)])


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
