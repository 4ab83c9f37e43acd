"""Scan one instance and store the result: the unit of work of the scan use case (backup_catalog.usecases.scan)."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import asyncpg

from catalog import repo, scancache, tracing
from catalog.errors import NotScanned
from catalog.scanresult import ScanResult
from recovery.model import Layout
from scheduler.scan import Previous, ScanFailed, scan_archive
from scheduler.storage import S3Store

log = logging.getLogger(__name__)


class ScanConfig(Protocol):
    """The settings a scan needs (``backup_catalog.settings.Settings`` provides them)."""

    scan_lookback_segments: int
    scan_deadline_seconds: float
    scan_interval_seconds: int
    full_scan_every: int


@dataclass(frozen=True, slots=True)
class ScanOutcome:
    instance_guid: str
    ok: bool
    code: str | None
    message: str
    backups: int = 0
    wal_runs: int = 0
    unknown_objects: int = 0
    issues: int = 0
    requests: int = 0
    seconds: float = 0.0


async def previous_of(pool: asyncpg.Pool, guid: str, rec: Any, *, full: bool) -> Previous:
    state = await repo.load_scan_state(pool, guid)
    try:
        snap = await repo.load_snapshot(pool, guid)
    except NotScanned:
        return Previous(stanza=rec.stanza, cursors=dict(state.cursors or {}) if not full else {})
    return Previous(layout=Layout(rec.detected_layout) if rec.detected_layout else None, stanza=rec.stanza,
                    seg_size=rec.seg_size, backups=tuple(snap.backups), runs=tuple(snap.runs),
                    histories=frozenset(snap.histories), edges=tuple(snap.edges),
                    corrupt=tuple((c.timeline, c.segno) for c in snap.corrupt),
                    cursors=dict(state.cursors or {}) if state else {})


Observe = Callable[[str, Previous, ScanResult], None]   # (guid, what the catalog held, what the scan found)


@tracing.traced("scan", lambda a: {"instance.guid": a.get("guid"), "scan.full": a.get("full")})
async def scan_instance(pool: asyncpg.Pool, client: Any, guid: str, *, full: bool, settings: ScanConfig,
                        expected_generation: int | None = None, lease_key: str | None = None,
                        lease_token: int | None = None, observe: Observe | None = None) -> ScanOutcome:
    """Scan one instance and store the result in one transaction; on failure keep the previous generation.

    Fenced save (``catalog.repo.save_scan``): with ``expected_generation`` another writer's save in the
    meantime, and with ``lease_key``/``lease_token`` a lost lease, make the save raise Conflict, writing nothing.
    """
    t0 = asyncio.get_running_loop().time()
    rec = await repo.get_instance(pool, guid)
    if rec.purged_at is not None or rec.purge_policy is not None:   # issue 13: nothing left to read
        return ScanOutcome(guid, True, "purged", "archive purged (or being purged) by the purge policy "
                           f"{rec.purge_policy}: not scanned")
    store = S3Store(client, rec.storage.bucket)
    try:
        prev = await previous_of(pool, guid, rec, full=full)
        result = await asyncio.wait_for(
            scan_archive(store, rec.storage, prev, full=full, lookback=settings.scan_lookback_segments),
            timeout=settings.scan_deadline_seconds)
    except ScanFailed as e:
        await repo.record_scan_failure(pool, guid, e.code, str(e))
        return ScanOutcome(guid, False, e.code, str(e), requests=store.requests,
                           seconds=asyncio.get_running_loop().time() - t0)
    except TimeoutError:
        msg = f"scan did not finish within {settings.scan_deadline_seconds:.0f} s (storage too slow or unavailable)"
        await repo.record_scan_failure(pool, guid, "storage_unavailable", msg)
        return ScanOutcome(guid, False, "storage_unavailable", msg, requests=store.requests,
                           seconds=asyncio.get_running_loop().time() - t0)
    await repo.save_scan(pool, guid, result, expected_generation=expected_generation, lease_key=lease_key,
                         lease_token=lease_token)
    if observe is not None:
        observe(guid, prev, result)
    await scancache.refresh_quietly(pool, guid)   # windows and the Backups document of this scan, for requests
    return ScanOutcome(guid, True, None, "ok", backups=len(result.backups or ()), wal_runs=len(result.wal_runs),
                       unknown_objects=result.unknown_objects, issues=len(result.issues), requests=store.requests,
                       seconds=asyncio.get_running_loop().time() - t0)


