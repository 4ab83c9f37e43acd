"""Opening the catalog from the settings: ``CATALOG_DSN``, or the embedded private cluster (started on
demand), with the schema created or upgraded (:mod:`catalog.migrate`). Used by the CLI, ``serve``, the
bench and the tests."""
from __future__ import annotations

import asyncio
import logging
from typing import Protocol

import asyncpg

from catalog import db as catalog_db
from catalog import migrate
from recovery.config import Secret

log = logging.getLogger(__name__)


class CatalogConfig(Protocol):
    """Where the catalog is (None: the embedded private cluster); the product's Settings provide it."""

    @property
    def catalog_dsn(self) -> Secret | None: ...


async def open_catalog(settings: CatalogConfig, *, upgrade: bool = True, light: bool = False) -> asyncpg.Pool:
    """Pool on CATALOG_DSN, or on the embedded private cluster (started on demand); with ``upgrade``, the
    schema created or upgraded to this release's (:mod:`catalog.migrate`, under its advisory lock).

    ``light``: a short-lived read-only command (``backups``, ``plan``): a pool of at most two connections.

    :raises catalog.migrate.SchemaTooNew: a newer release upgraded the catalog.
    """
    if settings.catalog_dsn is not None:
        dsn = settings.catalog_dsn.get_secret_value()
    else:
        from catalog import embedded  # only without CATALOG_DSN: it imports the cluster tooling
        dsn = await asyncio.to_thread(embedded.ensure_cluster)
    pool = await (catalog_db.open_pool(dsn, min_size=1, max_size=2) if light else catalog_db.open_pool(dsn))
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
