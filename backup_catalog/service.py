"""Use cases of the CLI and the HTTP API: open the catalog, scan many instances (see scheduler.runner)."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import asyncpg

from backup_catalog.settings import Settings
from catalog import db as catalog_db
from catalog.errors import CatalogError

if TYPE_CHECKING:
    from scheduler.runner import ScanOutcome

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


async def scan_many(pool: asyncpg.Pool, settings: Settings, guids: list[str], *, full: bool,
                    on_done: Callable[[ScanOutcome], None] | None = None, concurrency: int = 8) -> list[ScanOutcome]:
    """Scan instances concurrently; one instance's failure never stops the others."""
    # S3 code is imported only where it is used: `backups` and `plan` never pay for botocore
    from backup_catalog.s3 import s3_client
    from scheduler.runner import ScanOutcome, scan_instance
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

