"""pytest plugin: a private PostgreSQL catalog for the test run.

Fixtures:
- ``catalog_dsn`` (session): a DSN of a database nobody else uses. With ``TEST_CATALOG_DSN`` set,
  a uniquely named database is created on that server (and dropped at the end); otherwise a
  throwaway cluster is started with :mod:`catalog.embedded` in a temp dir (and removed at the end).
- ``private_catalog(catalog_dsn, prefix)``: an async context manager for a database of a test's own.
- ``pool`` (function, session loop): an asyncpg pool on that database with the schema applied and
  every table emptied before the test. Async tests that use it must run in the session loop:
  ``pytestmark = pytest.mark.asyncio(loop_scope="session")`` (or the ini option
  ``asyncio_default_test_loop_scope = "session"``).
"""
from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import pytest_asyncio

from catalog import embedded
from catalog.db import open_pool
from catalog.migrate import init_schema
from catalog.repo import TABLES


def _with_database(dsn: str, db: str) -> str:
    u = urlsplit(dsn)
    return urlunsplit((u.scheme, u.netloc, "/" + db, u.query, u.fragment))


async def _admin(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@asynccontextmanager
async def private_catalog(catalog_dsn: str, prefix: str) -> AsyncIterator[tuple[str, asyncpg.Pool]]:
    """A catalog database of its own on the session's server, schema applied, dropped at the end: for tests
    whose reaper, scheduler or sweep must see only their own instances. Yields (dsn, pool)."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    await _admin(catalog_dsn, f'CREATE DATABASE "{name}"')
    dsn = _with_database(catalog_dsn, name)
    try:
        pool = await open_pool(dsn, min_size=1, max_size=6)
        try:
            await init_schema(pool)
            yield dsn, pool
        finally:
            await pool.close()
    finally:
        await _admin(catalog_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def catalog_dsn() -> Iterator[str]:
    server = os.environ.get("TEST_CATALOG_DSN")
    if server:
        name = f"bc_test_{uuid.uuid4().hex[:12]}"
        asyncio.run(_admin(server, f'CREATE DATABASE "{name}"'))
        try:
            yield _with_database(server, name)
        finally:
            asyncio.run(_admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        return
    tmp = Path(tempfile.mkdtemp(prefix="bc-pg-", dir="/tmp"))
    tmp.chmod(0o711)    # the server may run as `postgres`: it must be able to enter
    base = tmp / "pg"
    try:
        yield embedded.ensure_cluster(base)
    finally:
        try:
            embedded.stop_cluster(base)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def _catalog_pool(catalog_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await open_pool(catalog_dsn, min_size=1, max_size=8)
    await init_schema(pool)
    try:
        yield pool
    finally:
        await pool.close()


@pytest_asyncio.fixture(loop_scope="session")
async def pool(_catalog_pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Pool]:
    """The catalog with the schema applied and all tables empty."""
    await _catalog_pool.execute(f"TRUNCATE {', '.join(t for t in TABLES)} RESTART IDENTITY CASCADE")
    yield _catalog_pool
