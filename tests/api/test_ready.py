"""GET /readyz (issue 21): 503 naming what is not ready while the catalog is down, its schema behind or the
scheduler stopped; 200 once they are back. The catalog is a private PostgreSQL cluster of this test, really
stopped and started; the app runs its real scheduler."""
from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from backup_catalog.api import keys
from backup_catalog.service.app import create_app
from catalog import db as catalog_db
from catalog import embedded, migrate
from tests.api.conftest import make_settings


@pytest_asyncio.fixture(loop_scope="session")
async def cluster() -> AsyncIterator[tuple[Path, str]]:
    tmp = Path(tempfile.mkdtemp(prefix="bc-ready-", dir="/tmp"))
    tmp.chmod(0o711)
    base = tmp / "pg"
    try:
        dsn = await asyncio.to_thread(embedded.ensure_cluster, base)
        yield base, dsn
    finally:
        try:
            await asyncio.to_thread(embedded.stop_cluster, base)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


async def ready(client: TestClient) -> tuple[int, dict[str, Any]]:
    resp = await client.get("/readyz")
    return resp.status, await resp.json(content_type=None)


async def until_ready(client: TestClient) -> dict[str, Any]:
    async with asyncio.timeout(20):
        while True:
            status, doc = await ready(client)
            if status == 200:
                return doc
            await asyncio.sleep(0.2)


async def test_readyz_follows_the_catalog_and_the_scheduler(cluster: tuple[Path, str]) -> None:
    base, dsn = cluster
    pool = await catalog_db.open_pool(dsn, min_size=1, max_size=2, timeout=3)
    head = migrate.load_migrations()[-1].version
    try:
        await migrate.upgrade(pool)
        app = create_app(make_settings(scan_interval_seconds=86400), pool=pool, start_scheduler=True, holder="r1")
        async with TestClient(TestServer(app)) as client:
            status, doc = await ready(client)
            assert status == 200, doc
            assert doc == {"status": "ready", "catalog": "ok", "schema_version": head, "schema_expected": head,
                           "schema_pending": [], "scheduler": "running"}
            health = await client.get("/healthz")
            assert health.status == 200

            # the schema behind: a migration of this release not applied
            await pool.execute("DELETE FROM schema_version WHERE version = $1", head)
            status, doc = await ready(client)
            assert status == 503 and doc["code"] == "not_ready" and doc["title"] == "Not ready", doc
            label = migrate.load_migrations()[-1].label
            assert f"catalog schema behind: version {doc['checks']['schema_version']}, this release needs {head} " \
                   f"(pending: {label}; run backup-catalog db upgrade)" in doc["detail"]
            assert doc["checks"]["schema_pending"] == [label] and doc["checks"]["scheduler"] == "running"
            await migrate.upgrade(pool)
            assert (await ready(client))[0] == 200

            # the catalog down: its server stopped
            await asyncio.to_thread(embedded.stop_cluster, base)
            status, doc = await ready(client)
            assert status == 503 and doc["detail"].startswith("catalog unreachable: "), doc
            assert doc["checks"]["catalog"] == "unreachable" and doc["checks"]["schema_version"] is None
            assert (await client.get("/healthz")).status == 503
            await asyncio.to_thread(embedded.ensure_cluster, base)
            assert (await until_ready(client))["schema_version"] == head

            # the scheduler stopped in a replica that runs it
            app[keys.SCHEDULER].pause()
            status, doc = await ready(client)
            assert status == 503 and doc["detail"] == "scheduler not running", doc
            assert doc["checks"]["scheduler"] == "not running"
            app[keys.SCHEDULER].resume()
            assert (await ready(client))[0] == 200

        # a replica that runs no scheduler is ready without one
        app = create_app(make_settings(), pool=pool, start_scheduler=False, holder="r2")
        async with TestClient(TestServer(app)) as client:
            status, doc = await ready(client)
            assert status == 200 and doc["scheduler"] == "not run by this replica", doc
    finally:
        await pool.close()


async def test_readyz_is_public_and_a_problem_document(cluster: tuple[Path, str]) -> None:
    _, dsn = cluster
    admin = await asyncpg.connect(dsn)
    await admin.execute("CREATE DATABASE never_upgraded")
    await admin.close()
    u = urlsplit(dsn)
    pool = await catalog_db.open_pool(urlunsplit((u.scheme, u.netloc, "/never_upgraded", u.query, "")),
                                      min_size=1, max_size=2)
    try:
        app = create_app(make_settings(), pool=pool, start_scheduler=False, holder="r3")
        async with TestClient(TestServer(app)) as client:
            resp = await client.get("/readyz")
            assert resp.status == 503 and resp.content_type == "application/problem+json"
            doc = await resp.json(content_type=None)
            assert doc["detail"] == "catalog schema missing (run backup-catalog db upgrade)"
    finally:
        await pool.close()
