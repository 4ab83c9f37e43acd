"""Use cases shared by the CLI, the HTTP API and the scheduler: scan, list backups, plan a clone."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import asyncpg

from backup_catalog.settings import Settings
from catalog import db as catalog_db
from catalog import repo
from catalog.errors import CatalogError, NotScanned
from recovery.model import Layout

if TYPE_CHECKING:
    from scheduler.scan import Previous

log = logging.getLogger(__name__)


async def open_catalog(settings: Settings) -> asyncpg.Pool:
    """Pool on CATALOG_DSN, or on the embedded private cluster (started on demand); schema applied."""
    if settings.catalog_dsn is not None:
        dsn = settings.catalog_dsn.get_secret_value()
    else:
        from catalog import embedded
        dsn = await asyncio.to_thread(embedded.ensure_cluster)
    pool = await catalog_db.open_pool(dsn)
    await catalog_db.init_schema(pool)
    return pool


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
    from scheduler.scan import Previous
    state = await repo.load_scan_state(pool, guid)
    try:
        snap = await repo.load_snapshot(pool, guid)
    except NotScanned:
        return Previous(stanza=rec.stanza, cursors=dict(state.cursors or {}) if not full else {})
    return Previous(layout=Layout(rec.detected_layout) if rec.detected_layout else None, stanza=rec.stanza,
                    seg_size=rec.seg_size, backups=tuple(snap.backups), runs=tuple(snap.runs),
                    histories=frozenset(snap.histories), edges=tuple(snap.edges),
                    cursors=dict(state.cursors or {}) if state else {})


async def scan_instance(pool: asyncpg.Pool, client: Any, guid: str, *, full: bool, settings: Settings,
                        expected_generation: int | None = None) -> ScanOutcome:
    """Scan one instance and store the result in one transaction; on failure keep the previous generation."""
    # S3 code is imported only where it is used: `backups` and `plan` never pay for botocore
    from scheduler.scan import ScanFailed, scan_archive
    from scheduler.storage import S3Store
    t0 = asyncio.get_running_loop().time()
    rec = await repo.get_instance(pool, guid)
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
    except asyncio.TimeoutError:
        msg = f"scan did not finish within {settings.scan_deadline_seconds:.0f} s (storage too slow or unavailable)"
        await repo.record_scan_failure(pool, guid, "storage_unavailable", msg)
        return ScanOutcome(guid, False, "storage_unavailable", msg, requests=store.requests,
                           seconds=asyncio.get_running_loop().time() - t0)
    await repo.save_scan(pool, guid, result, expected_generation=expected_generation)
    return ScanOutcome(guid, True, None, "ok", backups=len(result.backups or ()), wal_runs=len(result.wal_runs),
                       unknown_objects=result.unknown_objects, issues=len(result.issues), requests=store.requests,
                       seconds=asyncio.get_running_loop().time() - t0)


async def scan_many(pool: asyncpg.Pool, settings: Settings, guids: list[str], *, full: bool,
                    on_done: Callable[[ScanOutcome], None] | None = None, concurrency: int = 8) -> list[ScanOutcome]:
    """Scan instances concurrently; one instance's failure never stops the others."""
    from backup_catalog.s3 import s3_client
    sem = asyncio.Semaphore(concurrency)
    out: list[ScanOutcome] = []
    async with s3_client(settings) as client:
        async def one(g: str) -> None:
            async with sem:
                try:
                    o = await scan_instance(pool, client, g, full=full, settings=settings)
                except (CatalogError, asyncpg.PostgresError) as e:
                    o = ScanOutcome(g, False, getattr(e, "code", "catalog_error") or "catalog_error", str(e))
                except Exception as e:  # a bug must not stop the fleet scan: report it per instance
                    log.exception("scan of %s failed", g)
                    o = ScanOutcome(g, False, "internal_error", f"{type(e).__name__}: {e}")
                out.append(o)
                if on_done:
                    on_done(o)
        await asyncio.gather(*(one(g) for g in guids))
    return out

