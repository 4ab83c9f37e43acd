"""The scan cache: what requests need from one stored scan, computed once instead of per request.

For one instance and one stored scan (``scan_state`` generation and last_scan) the ``scan_cache``
row holds the recoverable windows per timeline path and the archive part of the Backups document, and the
``scan_cache_facts`` row the coverage facts (``recovery.grading.facts_of``) a fleet report grades from. The
scanner refreshes it after each save; a reader that finds it missing or stale computes it from the
catalog rows and stores it (write-through). A row is stored only while its scan is still the current one,
so a late writer can never leave a view of an older scan behind. Like the rest of the catalog it is a
cache: deleting every row loses nothing. (One name, issue 18: these tables were ``derived_views`` and
``instance_facts`` until migration 0009, the process tier is :class:`~backup_catalog.usecases.snapshots.ProcessScanCache`.)
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from catalog import repo
from catalog.db import Db
from recovery import viewdelta
from recovery.grading import ScanFacts, facts_of
from recovery.jsonout import archive_to_dict, windows_from_json, windows_to_json
from recovery.model import ArchiveSnapshot
from recovery.windows import Window, all_windows

log = logging.getLogger(__name__)

Version = tuple[int, datetime | None]


@dataclass(frozen=True, slots=True)
class CachedScan:
    version: Version
    windows: dict[tuple[int, ...], list[Window]]
    archive: str          # JSON object text: backups, wal, holes, conflicts, windows
    facts: ScanFacts | None = None
    system_ids: frozenset[int] | None = None     # of the scan's backups (the event consumer's segment checks)
    backup_need: int | None = None               # recovery.viewdelta.backup_need (-1: no done backup)


async def stored_archive(db: Db, guid: str) -> str | None:
    """The stored archive document of the instance's current scan, or None (missing or stale)."""
    val = await db.fetchval(
        f"SELECT sc.archive FROM scan_cache sc JOIN scan_state s ON {repo.CURRENT_SCAN_CACHE} "
        "WHERE sc.instance_guid = $1", guid)
    return None if val is None else str(val)


def parse_windows(text: str) -> dict[tuple[int, ...], list[Window]]:
    """Stored windows; :raises ValueError: the stored text is not a windows document."""
    return windows_from_json(json.loads(text))


async def refresh(pool: asyncpg.Pool, guid: str) -> tuple[CachedScan, ArchiveSnapshot]:
    """Compute the instance's scan cache from its current scan and store it (if that scan is still
    current). Returns it with the whole snapshot it was computed from.

    :raises NotScanned: the archive layout is unknown. Errors computing windows (an invalid history
    file) propagate: the caller's whole-snapshot path reports them as it always has.
    """
    version, snap = await repo.load_versioned_snapshot(pool, guid)
    windows = all_windows(snap)
    facts = facts_of(snap, [w for ws in windows.values() for w in ws])
    d = CachedScan(version, windows, json.dumps(archive_to_dict(snap, windows), separators=(",", ":")), facts,
                viewdelta.system_ids(snap), viewdelta.backup_need(snap))
    await store(pool, guid, d)
    return d, snap


async def store(db: Db, guid: str, d: CachedScan) -> bool:
    """Store ``d`` (and its facts) unless its scan is no longer the instance's current one. True when stored."""
    async with repo.transaction(db) as c:
        stored = await _store_view(c, guid, d)
        if stored and d.facts is not None:
            await store_facts(c, guid, d.version, d.facts)
    return stored


async def _store_view(db: Db, guid: str, d: CachedScan) -> bool:
    gen, last_scan = d.version
    status = await db.execute(
        """INSERT INTO scan_cache (instance_guid, generation, last_scan, windows, archive, system_ids, backup_need)
           SELECT $1, $2, $3, $4, $5, $6, $7 FROM scan_state
           WHERE instance_guid = $1 AND generation = $2 AND last_scan IS NOT DISTINCT FROM $3
           ON CONFLICT (instance_guid) DO UPDATE
             SET generation = EXCLUDED.generation, last_scan = EXCLUDED.last_scan, windows = EXCLUDED.windows,
                 archive = EXCLUDED.archive, system_ids = EXCLUDED.system_ids, backup_need = EXCLUDED.backup_need,
                 computed_at = now()""",
        guid, gen, last_scan, json.dumps(windows_to_json(d.windows), separators=(",", ":")), d.archive,
        None if d.system_ids is None else sorted(d.system_ids), d.backup_need)
    stored: bool = status.endswith(" 1")
    if not stored:
        log.info("scan cache of %s not stored: scan generation %s is no longer current", guid, gen)
    return stored


async def refresh_quietly(pool: asyncpg.Pool, guid: str) -> bool:
    """:func:`refresh` after a scan: a failure only costs the next reader the computation."""
    try:
        await refresh(pool, guid)
        return True
    except Exception as e:   # the cache must never fail a scan that has been saved
        log.warning("scan cache of %s not refreshed: %s: %s", guid, type(e).__name__, e)
        return False


# -- coverage facts (scan_cache_facts) -------------------------------------------------------------

FACT_COLUMNS = ("backups_total", "backups_restorable", "newest_backup", "newest_backup_stop_time",
                "newest_done_unrestorable", "newest_done_stop_time", "latest_end", "latest_end_exact",
                "latest_end_kind", "first_recoverable", "holes_count", "hole_after_newest", "archive_bytes",
                "windows", "holes", "corrupt")
_JSON_FACTS = ("hole_after_newest", "windows", "holes", "corrupt")

# scan_cache_facts row ``f`` of the current scan of scan_state row ``s``
CURRENT_FACTS = ("f.instance_guid = s.instance_guid AND f.generation = s.generation "
                 "AND f.last_scan IS NOT DISTINCT FROM s.last_scan")


def _facts_args(f: ScanFacts) -> list[object]:
    out: list[object] = []
    for col in FACT_COLUMNS:
        v = getattr(f, col)
        if col in _JSON_FACTS:
            v = None if v is None else json.dumps(list(v) if isinstance(v, tuple) else v, separators=(",", ":"))
        out.append(v)
    return out


def row_to_facts(r: asyncpg.Record, *, lists: bool = True) -> ScanFacts:
    """Facts from a row holding FACT_COLUMNS (``windows``/``holes`` as JSON text; skipped unless ``lists``)."""
    h = r["hole_after_newest"]
    return ScanFacts(
        backups_total=r["backups_total"], backups_restorable=r["backups_restorable"],
        newest_backup=r["newest_backup"], newest_backup_stop_time=r["newest_backup_stop_time"],
        newest_done_unrestorable=r["newest_done_unrestorable"], newest_done_stop_time=r["newest_done_stop_time"],
        latest_end=r["latest_end"], latest_end_exact=r["latest_end_exact"], latest_end_kind=r["latest_end_kind"],
        first_recoverable=r["first_recoverable"], holes_count=r["holes_count"],
        hole_after_newest=json.loads(h) if h else None, archive_bytes=r["archive_bytes"],
        windows=tuple(json.loads(r["windows"])) if lists else (),
        holes=tuple(json.loads(r["holes"])) if lists else (),
        corrupt=tuple(json.loads(r["corrupt"])))


async def store_facts(db: Db, guid: str, version: Version, f: ScanFacts) -> bool:
    """Store the coverage facts of scan ``version`` unless it is no longer current. True when stored."""
    gen, last_scan = version
    cols = ", ".join(FACT_COLUMNS)
    params = ", ".join(f"${i}" + ("::jsonb" if c in _JSON_FACTS else "") for i, c in enumerate(FACT_COLUMNS, 4))
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in FACT_COLUMNS)
    status = await db.execute(
        f"""INSERT INTO scan_cache_facts (instance_guid, generation, last_scan, {cols})
            SELECT $1, $2, $3, {params} FROM scan_state
            WHERE instance_guid = $1 AND generation = $2 AND last_scan IS NOT DISTINCT FROM $3
            ON CONFLICT (instance_guid) DO UPDATE
              SET generation = EXCLUDED.generation, last_scan = EXCLUDED.last_scan, {updates},
                  computed_at = now()""",
        guid, gen, last_scan, *_facts_args(f))
    return bool(status.endswith(" 1"))
