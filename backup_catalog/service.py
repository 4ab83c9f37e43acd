"""What the CLI needs around the use cases: open the catalog, scan many instances with its own S3 client."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import asyncpg

from backup_catalog.settings import Settings
from catalog import db as catalog_db
from catalog import migrate

if TYPE_CHECKING:
    from scheduler.runner import ScanOutcome

log = logging.getLogger(__name__)


async def open_catalog(settings: Settings, *, upgrade: bool = True) -> asyncpg.Pool:
    """Pool on CATALOG_DSN, or on the embedded private cluster (started on demand); with ``upgrade``, the
    schema created or upgraded to this release's (:mod:`catalog.migrate`, under its advisory lock).

    :raises catalog.migrate.SchemaTooNew: a newer release upgraded the catalog.
    """
    if settings.catalog_dsn is not None:
        dsn = settings.catalog_dsn.get_secret_value()
    else:
        from catalog import embedded
        dsn = await asyncio.to_thread(embedded.ensure_cluster)
    pool = await catalog_db.open_pool(dsn)
    if upgrade:
        try:
            result = await migrate.ensure_current(pool)
        except BaseException:
            await pool.close()
            raise
        if result is not None and result.applied:
            log.warning("%s", result.describe())     # an upgrade is worth a line in any log
        elif result is not None:
            log.info("%s", result.describe())
    return pool


async def scan_many(pool: asyncpg.Pool, settings: Settings, guids: list[str], *, full: bool,
                    on_done: Callable[[ScanOutcome], None] | None = None, concurrency: int = 8) -> list[ScanOutcome]:
    """Scan instances concurrently with this process's own S3 client (the CLI's ``scan``), each under its
    scan lease like every other scan (:func:`backup_catalog.usecases.scan.scan_many`)."""
    # S3 code is imported only where it is used: `backups` and `plan` never pay for botocore
    from backup_catalog.s3 import s3_client
    from backup_catalog.usecases import scan
    async with s3_client(settings) as client:
        return await scan.scan_many(pool, settings, client, guids, full=full, on_done=on_done,
                                    concurrency=concurrency)
