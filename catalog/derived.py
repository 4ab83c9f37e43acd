"""Derived views: what requests need from one stored scan, computed once instead of per request.

For one instance and one stored scan (``scan_state`` generation and last_scan) the ``derived_views``
row holds the recoverable windows per timeline path and the archive part of the Backups document. The
scanner refreshes it after each save; a reader that finds it missing or stale computes it from the
catalog rows and stores it (write-through). A row is stored only while its scan is still the current one,
so a late writer can never leave a view of an older scan behind. Like the rest of the catalog it is a
cache: deleting every row loses nothing.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from catalog import repo
from catalog.db import Db
from recovery.jsonout import archive_to_dict, windows_from_json, windows_to_json
from recovery.model import ArchiveSnapshot
from recovery.windows import Window, all_windows

log = logging.getLogger(__name__)

Version = tuple[int, datetime | None]


@dataclass(frozen=True, slots=True)
class Derived:
    version: Version
    windows: dict[tuple[int, ...], list[Window]]
    archive: str          # JSON object text: backups, wal, holes, conflicts, windows


async def stored_archive(db: Db, guid: str) -> str | None:
    """The stored archive document of the instance's current scan, or None (missing or stale)."""
    val = await db.fetchval(
        f"SELECT dv.archive FROM derived_views dv JOIN scan_state s ON {repo.CURRENT_VIEW} "
        "WHERE dv.instance_guid = $1", guid)
    return None if val is None else str(val)


def parse_windows(text: str) -> dict[tuple[int, ...], list[Window]]:
    """Stored windows; :raises ValueError: the stored text is not a windows document."""
    return windows_from_json(json.loads(text))


async def refresh(pool: asyncpg.Pool, guid: str) -> tuple[Derived, ArchiveSnapshot]:
    """Compute the instance's derived view from its current scan and store it (if that scan is still
    current). Returns it with the whole snapshot it was computed from.

    :raises NotScanned: the archive layout is unknown. Errors computing windows (an invalid history
    file) propagate: the caller's whole-snapshot path reports them as it always has.
    """
    version, snap = await repo.load_versioned_snapshot(pool, guid)
    windows = all_windows(snap)
    d = Derived(version, windows, json.dumps(archive_to_dict(snap, windows), separators=(",", ":")))
    await store(pool, guid, d)
    return d, snap


async def store(db: Db, guid: str, d: Derived) -> bool:
    """Store ``d`` unless its scan is no longer the instance's current one. True when stored."""
    gen, last_scan = d.version
    status = await db.execute(
        """INSERT INTO derived_views (instance_guid, generation, last_scan, windows, archive)
           SELECT $1, $2, $3, $4, $5 FROM scan_state
           WHERE instance_guid = $1 AND generation = $2 AND last_scan IS NOT DISTINCT FROM $3
           ON CONFLICT (instance_guid) DO UPDATE
             SET generation = EXCLUDED.generation, last_scan = EXCLUDED.last_scan, windows = EXCLUDED.windows,
                 archive = EXCLUDED.archive, computed_at = now()""",
        guid, gen, last_scan, json.dumps(windows_to_json(d.windows), separators=(",", ":")), d.archive)
    stored: bool = status.endswith(" 1")
    if not stored:
        log.info("derived view of %s not stored: scan generation %s is no longer current", guid, gen)
    return stored


async def refresh_quietly(pool: asyncpg.Pool, guid: str) -> bool:
    """:func:`refresh` after a scan: a failure only costs the next reader the computation."""
    try:
        await refresh(pool, guid)
        return True
    except Exception as e:   # derived data must never fail a scan that has been saved
        log.warning("derived view of %s not refreshed: %s: %s", guid, type(e).__name__, e)
        return False
