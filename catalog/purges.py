"""Catalog side of the undo period and purge: operator holds and the purge audit (table ``purges``).

Audit rows: ``outcome`` running -> done | refused | failed. At most one unfinished row (running: its
process died; failed: S3 gave up) per instance; a re-run resumes that row, so a purge interrupted any
number of times still leaves exactly one record. ``instances.purge_policy`` is set when deletion starts
(from then on the archive is incomplete: clones are refused) and ``instances.purged_at`` when it is done.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from catalog import rows
from catalog.db import Conn, Db, transaction
from catalog.errors import Conflict, UnknownInstance
from catalog.names import _INSTANCE_SELECT
from catalog.rows import InstanceRecord
from recovery.timefmt import iso_offset


@dataclass(frozen=True, slots=True)
class PurgeRecord:
    id: int
    instance_guid: str
    bucket: str
    prefix: str
    prefixes: tuple[str, ...]
    policy: str
    started_at: datetime
    finished_at: datetime | None
    objects_deleted: int
    bytes_deleted: int
    outcome: str
    reason: str | None
    pending: dict[str, int]        # key -> size of the batch in flight when the row was last written


def _record(r: asyncpg.Record) -> PurgeRecord:
    return PurgeRecord(r["id"], r["instance_guid"], r["bucket"], r["prefix"], tuple(r["prefixes"] or ()), r["policy"],
                       r["started_at"], r["finished_at"], int(r["objects_deleted"]), int(r["bytes_deleted"]),
                       r["outcome"], r["reason"], _pending(r["pending"]))


def _pending(raw: str | None) -> dict[str, int]:
    if not raw:
        return {}
    doc = json.loads(raw)
    return dict(zip(doc["keys"], doc["sizes"], strict=True))


async def set_hold(db: Db, guid: str, reason: str | None, *, at: datetime | None = None) -> InstanceRecord:
    """Place an operator hold (kept if already held, with the new reason when one is given).
    :raises Conflict: the instance's archive is already purged."""
    async with transaction(db) as c:
        row = await c.fetchrow("SELECT purged_at FROM instances WHERE instance_guid = $1 FOR UPDATE", guid)
        if row is None:
            raise UnknownInstance(guid)
        if row["purged_at"] is not None:
            raise Conflict(f"instance {guid}: its archive was already purged at {iso_offset(row['purged_at'])}")
        await c.execute("""UPDATE instances SET hold_at = coalesce(hold_at, $2), hold_reason = coalesce($3, hold_reason)
                           WHERE instance_guid = $1""", guid, at or datetime.now(UTC), reason)
        return await _get(c, guid)


async def clear_hold(db: Db, guid: str) -> InstanceRecord:
    async with transaction(db) as c:
        if await c.fetchval("SELECT 1 FROM instances WHERE instance_guid = $1 FOR UPDATE", guid) is None:
            raise UnknownInstance(guid)
        await c.execute("UPDATE instances SET hold_at = NULL, hold_reason = NULL WHERE instance_guid = $1", guid)
        return await _get(c, guid)


async def _get(c: Conn, guid: str) -> InstanceRecord:
    row = await c.fetchrow(_INSTANCE_SELECT + " WHERE i.instance_guid = $1", guid)
    if row is None:
        raise UnknownInstance(guid)
    return rows.row_to_instance(row)


async def lock_instances(c: Conn, guid: str) -> tuple[InstanceRecord, list[InstanceRecord]]:
    """Inside a transaction: lock ``guid``'s row (holds, renames and deletes of it wait) and read every
    instance, for the re-check right before deletion starts."""
    if await c.fetchval("SELECT 1 FROM instances WHERE instance_guid = $1 FOR UPDATE", guid) is None:
        raise UnknownInstance(guid)
    recs = [rows.row_to_instance(r) for r in await c.fetch(_INSTANCE_SELECT)]
    return next(r for r in recs if r.guid == guid), recs


async def begin(c: Conn, guid: str, *, bucket: str, prefix: str, prefixes: Sequence[str], policy: str,
                holder: str) -> PurgeRecord:
    """Resume the instance's unfinished audit row or open one; mark the instance as being purged."""
    row = await c.fetchrow(
        """UPDATE purges SET outcome = 'running', reason = NULL, holder = $2, finished_at = NULL,
                  prefixes = $3, policy = $4
           WHERE instance_guid = $1 AND outcome IN ('running', 'failed') RETURNING *""",
        guid, holder, list(prefixes), policy)
    if row is None:
        row = await c.fetchrow(
            """INSERT INTO purges (instance_guid, bucket, prefix, prefixes, policy, holder)
               VALUES ($1, $2, $3, $4, $5, $6) RETURNING *""", guid, bucket, prefix, list(prefixes), policy, holder)
    assert row is not None
    await c.execute("UPDATE instances SET purge_policy = $2 WHERE instance_guid = $1", guid, policy)
    return _record(row)


async def set_pending(db: Db, purge_id: int, sizes: dict[str, int]) -> None:
    """Record the batch about to be sent (committed first: after a crash the next run can tell which of its
    keys S3 deleted, so the counts stay exact)."""
    await db.execute("UPDATE purges SET pending = $2::jsonb WHERE id = $1", purge_id,
                     json.dumps({"keys": list(sizes), "sizes": list(sizes.values())}))


async def progress(db: Db, purge_id: int, objects: int, nbytes: int) -> None:
    """Add one deleted batch to the audit row and clear the pending batch (committed at once)."""
    await db.execute("""UPDATE purges SET objects_deleted = objects_deleted + $2, bytes_deleted = bytes_deleted + $3,
                               pending = NULL WHERE id = $1""", purge_id, objects, nbytes)


async def finish(db: Db, purge_id: int, outcome: str, reason: str | None = None,
                 *, at: datetime | None = None) -> PurgeRecord:
    """Close the audit row; ``done`` also marks the instance purged (``purged_at``)."""
    at = at or datetime.now(UTC)
    async with transaction(db) as c:
        row = await c.fetchrow("""UPDATE purges SET outcome = $2, reason = $3, finished_at = $4 WHERE id = $1
                                  RETURNING *""", purge_id, outcome, reason, at)
        if row is None:
            raise Conflict(f"purge {purge_id} vanished from the audit")
        if outcome == "done":
            await c.execute("UPDATE instances SET purged_at = $2 WHERE instance_guid = $1", row["instance_guid"], at)
        return _record(row)


async def record_refusal(db: Db, guid: str, *, bucket: str, prefix: str, prefixes: Sequence[str], policy: str,
                         reason: str, holder: str) -> None:
    """Audit a refusal by a run; the same refusal seen again by later runs updates its row (no pile-up)."""
    async with transaction(db) as c:
        last = await c.fetchrow("SELECT id, outcome, reason FROM purges WHERE instance_guid = $1 "
                                "ORDER BY id DESC LIMIT 1 FOR UPDATE", guid)
        if last is not None and last["outcome"] in ("running", "failed"):
            # an unfinished purge refused now (e.g. held after a crash): it ends here, counts kept
            await c.execute("UPDATE purges SET outcome = 'refused', reason = $2, finished_at = now(), holder = $3 "
                            "WHERE id = $1", last["id"], reason, holder)
        elif last is not None and last["outcome"] == "refused" and last["reason"] == reason:
            await c.execute("UPDATE purges SET finished_at = now(), holder = $2 WHERE id = $1", last["id"], holder)
        else:
            await c.execute(
                """INSERT INTO purges (instance_guid, bucket, prefix, prefixes, policy, outcome, reason, finished_at,
                                       holder) VALUES ($1, $2, $3, $4, $5, 'refused', $6, now(), $7)""",
                guid, bucket, prefix, list(prefixes), policy, reason, holder)


async def history(db: Db, guid: str | None = None) -> list[PurgeRecord]:
    """Audit rows, newest first (one instance's, or all)."""
    if guid is None:
        recs = await db.fetch("SELECT * FROM purges ORDER BY id DESC")
    else:
        recs = await db.fetch("SELECT * FROM purges WHERE instance_guid = $1 ORDER BY id DESC", guid)
    return [_record(r) for r in recs]


async def hold_of(db: Db, guid: str) -> datetime | None:
    """The instance's hold time now (checked between deletion batches)."""
    v: datetime | None = await db.fetchval("SELECT hold_at FROM instances WHERE instance_guid = $1", guid)
    return v
