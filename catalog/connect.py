"""Opening the catalog from the settings: ``CATALOG_DSN``, or the embedded private cluster (started on
demand), with the schema applied. Used by the CLI, ``serve``, the bench and the tests."""
from __future__ import annotations

import asyncio
from typing import Protocol

import asyncpg

from catalog import db as catalog_db


class _Secret(Protocol):
    def get_secret_value(self) -> str: ...


class CatalogConfig(Protocol):
    """Where the catalog is (None: the embedded private cluster); the product's Settings provide it."""

    @property
    def catalog_dsn(self) -> _Secret | None: ...


async def open_catalog(settings: CatalogConfig, *, light: bool = False) -> asyncpg.Pool:
    """Pool on CATALOG_DSN, or on the embedded private cluster (started on demand); schema applied.

    ``light``: a short-lived read-only command (``backups``, ``plan``): a pool of at most two connections,
    and the schema applied only when its fingerprint changed (:func:`catalog.db.ensure_schema`).
    """
    if settings.catalog_dsn is not None:
        dsn = settings.catalog_dsn.get_secret_value()
    else:
        from catalog import embedded  # only without CATALOG_DSN: it imports the cluster tooling
        dsn = await asyncio.to_thread(embedded.ensure_cluster)
    if light:
        pool = await catalog_db.open_pool(dsn, min_size=1, max_size=2)
        await catalog_db.ensure_schema(pool)
    else:
        pool = await catalog_db.open_pool(dsn)
        await catalog_db.init_schema(pool)
    return pool
