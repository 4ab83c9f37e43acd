"""What S3 events change in the catalog: the scan's own writes (runs merged, edges, histories, backups,
blocked segments) in ONE transaction fenced by the instance's scan lease, plus the per-key memory of the
newest event applied (``event_keys``) and the instance's ``last_event`` time ("fresh as of").
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from catalog.db import Conn, Db, transaction
from catalog.errors import CatalogError, Conflict
from catalog.leases import check_lease
from catalog.scanresult import WalConflict
from catalog.scans import (
    _drop_edges,
    _lock_scan_state,
    _replace_backups,
    _replace_histories,
    _store_runs,
    _upsert_edges,
)
from recovery.model import Backup, WalRun, WindowEdge
from recovery.timeline import TimelineSwitch


@dataclass(frozen=True, slots=True)
class KeyEvent:
    """The newest event applied for one key."""

    key: str
    action: str                 # created | removed
    sequencer: str | None
    event_time: datetime | None


@dataclass(frozen=True, slots=True)
class EventWrite:
    """What a batch of events found for one instance (built by :mod:`scheduler.eventapply`)."""

    runs: tuple[WalRun, ...] = ()                                    # merged into the stored runs
    edges: tuple[WindowEdge, ...] = ()
    corrupt: tuple[WalConflict, ...] = ()
    histories: dict[int, tuple[TimelineSwitch, ...]] = field(default_factory=dict)
    backups: tuple[Backup, ...] | None = None                        # None: the backup set is unchanged
    pg_version: int | None = None
    system_id: int | None = None
    keys: tuple[KeyEvent, ...] = ()
    last_event: datetime | None = None
    resolved: tuple[str, ...] = ()      # keys read fine now: the stored scan issues about them are forgotten


async def save_events(db: Db, guid: str, w: EventWrite, *, lease_key: str, lease_token: int) -> int:
    """Store one batch's effects for ``guid`` and return the new generation. A lost lease raises Conflict
    and writes nothing (fencing, as a scan's save)."""
    try:
        async with transaction(db) as c:
            await _lock_scan_state(c, guid)
            if not await check_lease(c, lease_key, lease_token):
                raise Conflict(f"instance {guid}: lease {lease_key!r} token {lease_token} is no longer held")
            await write_one(c, guid, w)
            gen: int = await c.fetchval(
                """UPDATE scan_state SET generation = generation + 1,
                          last_event = greatest(last_event, $2) WHERE instance_guid = $1 RETURNING generation""",
                guid, w.last_event)
            return gen
    except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError, OverflowError) as exc:
        raise CatalogError(f"instance {guid}: events rejected by the catalog, nothing saved: {exc}") from None


async def write_one(c: Conn, guid: str, w: EventWrite) -> None:
    """Everything of ``w`` but the generation, for one instance (the stored runs re-read here)."""
    if w.pg_version is not None or w.system_id is not None:
        await c.execute("""UPDATE instances SET pg_version = coalesce($2, pg_version),
                                  system_id = coalesce($3, system_id) WHERE instance_guid = $1""",
                        guid, w.pg_version, w.system_id)
    if w.backups is not None:
        await _replace_backups(c, guid, w.backups)
    await _replace_histories(c, guid, w.histories)
    former_ends = await _store_runs(c, guid, w.runs, replace=False) if w.runs else set()
    await c.executemany(
        """INSERT INTO wal_conflicts (instance_guid, timeline, segno, detail, kind) VALUES ($1, $2, $3, $4, 'corrupt')
           ON CONFLICT (instance_guid, timeline, segno) DO UPDATE SET detail = EXCLUDED.detail, kind = 'corrupt'""",
        [(guid, x.timeline, x.segno, x.detail) for x in w.corrupt])
    await _upsert_edges(c, guid, w.edges)
    await _drop_edges(c, guid, former_ends - {(e.timeline, e.segno) for e in w.edges})
    await remember(c, guid, w.keys)
    if w.resolved:
        await c.execute(
            """UPDATE scan_state SET issues = (SELECT coalesce(jsonb_agg(i), '[]'::jsonb)
                   FROM jsonb_array_elements(issues) i WHERE NOT coalesce(i->>'key' = ANY($2::text[]), false))
               WHERE instance_guid = $1""", guid, list(w.resolved))


async def remember(c: Db, guid: str, keys: Sequence[KeyEvent]) -> None:
    if keys:
        await c.executemany(
            """INSERT INTO event_keys (instance_guid, key, action, sequencer, event_time) VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT (instance_guid, key) DO UPDATE SET action = EXCLUDED.action,
                   sequencer = EXCLUDED.sequencer, event_time = EXCLUDED.event_time, applied_at = now()""",
            [(guid, k.key, k.action, k.sequencer, k.event_time) for k in keys])


async def remember_keys(db: Db, guid: str, keys: Sequence[KeyEvent], last_event: datetime | None) -> None:
    """Record keys whose events were applied by other means (a scan of the instance) and ``last_event``."""
    async with transaction(db) as c:
        await remember(c, guid, keys)
        await c.execute("UPDATE scan_state SET last_event = greatest(last_event, $2) WHERE instance_guid = $1",
                        guid, last_event)


async def applied_keys(db: Db, guid: str, keys: Iterable[str]) -> dict[str, KeyEvent]:
    rows = await db.fetch("SELECT key, action, sequencer, event_time FROM event_keys "
                          "WHERE instance_guid = $1 AND key = ANY($2::text[])", guid, sorted(set(keys)))
    return {r["key"]: KeyEvent(r["key"], r["action"], r["sequencer"], r["event_time"]) for r in rows}


async def created_keys(db: Db, guid: str, under: str = "", *, like: Sequence[str] = ()) -> list[KeyEvent]:
    """Keys created (newest event) under ``under`` (and matching one of the ``like`` patterns, if given):
    the WAL keys events taught, for edge reads."""
    if like:
        rows = await db.fetch("SELECT key, action, sequencer, event_time FROM event_keys WHERE instance_guid = $1 "
                              "AND action = 'created' AND key LIKE ANY($2::text[])", guid, list(like))
        return [KeyEvent(r["key"], r["action"], r["sequencer"], r["event_time"]) for r in rows]
    rows = await db.fetch("SELECT key, action, sequencer, event_time FROM event_keys WHERE instance_guid = $1 "
                          "AND action = 'created' AND starts_with(key, $2)", guid, under)
    return [KeyEvent(r["key"], r["action"], r["sequencer"], r["event_time"]) for r in rows]


async def prune_keys(db: Db, guid: str, before: datetime) -> int:
    status = await db.execute("DELETE FROM event_keys WHERE instance_guid = $1 AND applied_at < $2", guid, before)
    return int(status.split()[-1])


async def routes(db: Db) -> list[tuple[str, str, str]]:
    """(bucket, prefix, guid) of every live instance: the consumer's prefix index."""
    rows = await db.fetch("SELECT bucket, prefix, instance_guid FROM instances "
                          "WHERE deleted_at IS NULL AND purged_at IS NULL")
    return [(r["bucket"], r["prefix"], r["instance_guid"]) for r in rows]


async def last_event(db: Db, guid: str) -> datetime | None:
    t: datetime | None = await db.fetchval("SELECT last_event FROM scan_state WHERE instance_guid = $1", guid)
    return t


__all__ = ["EventWrite", "KeyEvent", "applied_keys", "created_keys", "last_event", "prune_keys", "remember_keys",
           "routes", "save_events", "write_one"]
