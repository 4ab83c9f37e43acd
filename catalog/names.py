"""Instances and their name history: register, rename, delete, look up, resolve a name at a time.

Every function takes an asyncpg Pool or Connection first; writes run in one transaction.
(Re-exported by :mod:`catalog.repo`.)
"""
from __future__ import annotations

from datetime import UTC, datetime

import asyncpg

from catalog import rows
from catalog.db import Conn, Db, transaction
from catalog.errors import Conflict, UnknownInstance, UnknownService
from catalog.rows import InstanceRecord, Resolution, ScanState
from recovery.model import InstanceRef, Storage
from recovery.timefmt import iso_offset


def _now() -> datetime:
    return datetime.now(UTC)


_INSTANCE_SELECT = """
SELECT i.*, coalesce(n.name, '') AS name
FROM instances i
LEFT JOIN LATERAL (SELECT name FROM instance_names
                   WHERE instance_guid = i.instance_guid ORDER BY valid_from DESC LIMIT 1) n ON true
"""


async def register_instance(db: Db, ref: InstanceRef, storage: Storage, *, at: datetime | None = None,
                            existed_before: bool = False) -> bool:
    """Create or update an instance. True when created.

    A new instance's name is valid from ``at`` (its creation), or from the beginning of time with
    ``existed_before``. For an existing GUID the storage, space and org are updated, and a different
    name (or space) is a rename at ``at``.
    :raises Conflict: the name is held by another live instance in that space.
    """
    at = at or _now()
    try:
        async with transaction(db) as c:
            cur = await c.fetchrow("SELECT deleted_at FROM instances WHERE instance_guid = $1 FOR UPDATE",
                                   ref.instance_guid)
            if cur is None:
                await c.execute(
                    """INSERT INTO instances (instance_guid, space_guid, org_guid, bucket, prefix, layout,
                                              stanza, created_at, deleted_at)
                       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)""",
                    ref.instance_guid, ref.space_guid, ref.org_guid, storage.bucket, storage.prefix,
                    storage.layout, storage.stanza, None if existed_before else at, ref.deleted_at)
                await _take_name(c, ref.instance_guid, ref.space_guid, ref.name, None if existed_before else at, at)
                return True
            await c.execute(
                """UPDATE instances SET space_guid = $2, org_guid = coalesce($3, org_guid), bucket = $4,
                          prefix = $5, layout = $6, stanza = $7, deleted_at = coalesce(deleted_at, $8)
                   WHERE instance_guid = $1""",
                ref.instance_guid, ref.space_guid, ref.org_guid, storage.bucket, storage.prefix,
                storage.layout, storage.stanza, ref.deleted_at)
            held = await c.fetchrow("""SELECT space_guid, name FROM instance_names WHERE instance_guid = $1
                                       ORDER BY valid_from DESC LIMIT 1""", ref.instance_guid)
            if held is None or (held["space_guid"], held["name"]) != (ref.space_guid, ref.name):
                await _rename(c, ref.instance_guid, ref.space_guid, ref.name, at)
            return False
    except (asyncpg.UniqueViolationError, asyncpg.CheckViolationError) as exc:
        raise Conflict(f"instance {ref.instance_guid}: name {ref.name!r} in space {ref.space_guid}: "
                       f"{exc.message}") from None


async def rename_instance(db: Db, guid: str, new_name: str, *, at: datetime | None = None) -> None:
    """Close the instance's current name interval at ``at`` and open ``new_name`` from then on."""
    at = at or _now()
    try:
        async with transaction(db) as c:
            row = await c.fetchrow("SELECT space_guid FROM instances WHERE instance_guid = $1 FOR UPDATE", guid)
            if row is None:
                raise UnknownInstance(guid)
            await _rename(c, guid, row["space_guid"], new_name, at)
    except (asyncpg.UniqueViolationError, asyncpg.CheckViolationError) as exc:
        raise Conflict(f"instance {guid}: cannot rename to {new_name!r}: {exc.message}") from None


async def delete_instance(db: Db, guid: str, *, at: datetime | None = None) -> bool:
    """Mark the instance deleted (keeps its data and its last name). True if newly deleted."""
    async with transaction(db) as c:
        row = await c.fetchrow("SELECT deleted_at FROM instances WHERE instance_guid = $1 FOR UPDATE", guid)
        if row is None:
            raise UnknownInstance(guid)
        if row["deleted_at"] is not None:
            return False
        await c.execute("UPDATE instances SET deleted_at = $2 WHERE instance_guid = $1", guid, at or _now())
        return True


async def _rename(c: Conn, guid: str, space: str, name: str, at: datetime) -> None:
    cur = await c.fetchrow(
        """SELECT n.space_guid, n.name, NULLIF(n.valid_from, '-infinity') AS valid_from, i.deleted_at
           FROM instance_names n JOIN instances i USING (instance_guid)
           WHERE n.instance_guid = $1 AND n.valid_to = 'infinity' FOR UPDATE OF n""", guid)
    if cur is None:
        raise Conflict(f"instance {guid} no longer holds a name (deleted and its name taken over)")
    if (cur["space_guid"], cur["name"]) == (space, name):
        return
    if cur["deleted_at"] is not None:
        raise Conflict(f"instance {guid} is deleted: it keeps its last name {cur['name']!r}")
    if cur["valid_from"] is not None and at <= cur["valid_from"]:
        raise Conflict(f"instance {guid}: rename at {iso_offset(at)} is not after its current name's "
                       f"start {iso_offset(cur['valid_from'])}")
    await c.execute("UPDATE instance_names SET valid_to = $2 WHERE instance_guid = $1 AND valid_to = 'infinity'",
                    guid, at)
    await _take_name(c, guid, space, name, at, at)


async def _take_name(c: Conn, guid: str, space: str, name: str, start: datetime | None,
                     at: datetime) -> None:
    """Open [start, infinity) for ``guid``; ``start`` None = -infinity. A deleted current holder's
    interval is closed where ours begins; a live holder is a Conflict."""
    holder = await c.fetchrow(
        """SELECT n.instance_guid, NULLIF(n.valid_from, '-infinity') AS valid_from, i.deleted_at
           FROM instance_names n JOIN instances i USING (instance_guid)
           WHERE n.space_guid = $1 AND n.name = $2 AND n.valid_to = 'infinity' FOR UPDATE OF n""", space, name)
    if holder is not None and holder["instance_guid"] != guid:
        if holder["deleted_at"] is None:
            raise Conflict(f"name {name!r} in space {space} is held by live instance {holder['instance_guid']}")
        since = holder["valid_from"]
        if since is not None and (start is None or start <= since):
            # we existed before but learn of it after a deleted holder: start where that holder ended
            start = holder["deleted_at"] if holder["deleted_at"] > since else at
            if start <= since:
                raise Conflict(f"name {name!r} in space {space}: cannot start a new holder before "
                               f"{iso_offset(since)}")
        await c.execute(
            """UPDATE instance_names SET valid_to = coalesce($4, '-infinity'::timestamptz)
               WHERE space_guid = $1 AND name = $2 AND instance_guid = $3 AND valid_to = 'infinity'""",
            space, name, holder["instance_guid"], start)
    await c.execute(
        """INSERT INTO instance_names (space_guid, name, instance_guid, valid_from)
           VALUES ($1, $2, $3, coalesce($4, '-infinity'::timestamptz))""", space, name, guid, start)


async def get_instance(db: Db, guid: str) -> InstanceRecord:
    row = await db.fetchrow(_INSTANCE_SELECT + " WHERE i.instance_guid = $1", guid)
    if row is None:
        raise UnknownInstance(guid)
    return rows.row_to_instance(row)


async def list_instances(db: Db, *, include_deleted: bool = True) -> list[InstanceRecord]:
    """All instances, oldest registration first."""
    where = "" if include_deleted else " WHERE i.deleted_at IS NULL"
    recs = await db.fetch(_INSTANCE_SELECT + where + " ORDER BY i.registered_at, i.instance_guid")
    return [rows.row_to_instance(r) for r in recs]


async def name_holders(db: Db, space: str, name: str) -> list[InstanceRecord]:
    """Every instance that held NAME in SPACE, newest first (the current holder first)."""
    return [rec for rec, _ in await _holders(db, space, name, None)]


# scan_cache row ``sc`` of the current scan of scan_state row ``s`` (catalog.scancache)
CURRENT_SCAN_CACHE = ("sc.instance_guid = s.instance_guid AND sc.generation = s.generation "
                "AND sc.last_scan IS NOT DISTINCT FROM s.last_scan")

_HOLDERS = """
    WITH h AS (SELECT instance_guid, max(valid_from) AS since,
                      bool_or($3::timestamptz IS NOT NULL AND valid_from <= $3 AND $3 < valid_to) AS held_at
               FROM instance_names WHERE space_guid = $1 AND name = $2 GROUP BY instance_guid)
    SELECT i.*, coalesce(n.name, '') AS name, h.held_at {extra}
    FROM h JOIN instances i USING (instance_guid)
    LEFT JOIN LATERAL (SELECT name FROM instance_names WHERE instance_guid = i.instance_guid
                       ORDER BY valid_from DESC LIMIT 1) n ON true
    {joins}
    ORDER BY h.since DESC, i.registered_at DESC"""


async def _holders(db: Db, space: str, name: str, at: datetime | None) -> list[tuple[InstanceRecord, bool]]:
    """:func:`name_holders`, each with whether it held the name at ``at`` (one query)."""
    recs = await db.fetch(_HOLDERS.format(extra="", joins=""), space, name, at)
    return [(rows.row_to_instance(r), bool(r["held_at"])) for r in recs]


async def holders_with_scan_cache(db: Db, space: str, name: str) -> list[tuple[InstanceRecord, ScanState, str | None]]:
    """:func:`name_holders`, each with its scan state and the archive document stored for its current
    scan (``scan_cache``), or None when that is missing or stale — one query for a Backups request."""
    recs = await db.fetch(_HOLDERS.format(
        extra=", s.cursors, s.last_scan, s.last_full_scan, s.last_attempt, s.last_error, s.last_error_code, "
              "s.stale_since, s.unknown_objects, s.issues, s.generation, s.requests, "
              "s.instance_guid IS NOT NULL AS has_state, sc.archive AS stored_archive",
        joins="LEFT JOIN scan_state s ON s.instance_guid = i.instance_guid "
              f"LEFT JOIN scan_cache sc ON {CURRENT_SCAN_CACHE}"), space, name, None)
    return [(rows.row_to_instance(r),
             rows.row_to_scan_state(r) if r["has_state"] else ScanState(instance_guid=r["instance_guid"]),
             r["stored_archive"]) for r in recs]


async def resolve_name(db: Db, space: str, name: str, at: datetime | None = None) -> Resolution:
    """The instance that held NAME in SPACE at ``at``; else the most recent holder (deleted ones
    included); with no time, the most recent holder.
    :raises UnknownService: no instance ever held NAME in SPACE.
    """
    found = await _holders(db, space, name, at)
    if not found:
        raise UnknownService(space, name)
    holders = [rec for rec, _ in found]
    if at is not None:
        rec_at = next((rec for rec, held in found if held), None)
        if rec_at is not None:
            return Resolution(rec_at, f"instance {rec_at.guid} held the name {name!r} at {iso_offset(at)}"
                              + _deleted_note(rec_at), "held_at_time")
        rec = holders[0]
        return Resolution(rec, f"no instance held the name {name!r} at {iso_offset(at)}: using its most recent "
                          f"holder, instance {rec.guid}" + _deleted_note(rec), "most_recent_holder")
    rec = holders[0]
    rule = "current_holder" if rec.ref.deleted_at is None else "most_recent_holder"
    return Resolution(rec, f"no target time: using the most recent holder of the name {name!r}, instance "
                      f"{rec.guid}" + _deleted_note(rec), rule)


def _deleted_note(rec: InstanceRecord) -> str:
    d = rec.ref.deleted_at
    return f" (deleted at {iso_offset(d)})" if d is not None else ""
