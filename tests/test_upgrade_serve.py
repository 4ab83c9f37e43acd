"""`db status` / `db upgrade` and `serve` on a catalog of the previous release (issue 21): two `serve`
starting at once upgrade it once; a catalog upgraded by a newer release is refused with exit 2."""
from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator

import asyncpg
import pytest_asyncio

from catalog import migrate
from sandbox.s3 import free_port
from tests.catalog.releases import FILL, database, release_catalog
from tests.test_serve_credentials import clean_env, serve, stop, wait_up

UPGRADED = "catalog upgraded to schema version"


@pytest_asyncio.fixture(loop_scope="session")
async def release_dsn(catalog_dsn: str) -> AsyncIterator[str]:
    async for dsn in database(catalog_dsn):
        await release_catalog(dsn)
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(FILL)
        finally:
            await conn.close()
        yield dsn


def cli(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "backup_catalog.cli", *args], env=clean_env(CATALOG_DSN=dsn),
                          capture_output=True, text=True, timeout=120, check=False)


async def test_two_serves_starting_at_once_upgrade_once(release_dsn: str) -> None:
    pending = [m.label for m in migrate.load_migrations()[1:]]
    p = cli(release_dsn, "db", "status", "--json")
    assert p.returncode == 1, p.stderr                                   # an upgrade is pending
    assert json.loads(p.stdout) | {"newer": []} == {"version": 1, "head": migrate.load_migrations()[-1].version,
                                                     "applied": [1], "pending": pending, "newer": [],
                                                     "up_to_date": False}
    ports = [free_port(), free_port()]
    env = clean_env(CATALOG_DSN=release_dsn, S3_ENDPOINT_URL="http://127.0.0.1:9", SCAN_INTERVAL_SECONDS="86400")
    procs = [serve(env, "127.0.0.1", port) for port in ports]
    logs = []
    try:
        for proc, port in zip(procs, ports, strict=True):
            wait_up(proc, port)
    finally:
        for proc in procs:
            assert stop(proc) == 0
            logs.append(proc.stderr.read() if proc.stderr else "")
    assert sum(UPGRADED in log for log in logs) == 1, logs               # exactly one of them upgraded
    assert all("migration" not in log for log in logs), "\n".join(logs)          # none failed
    conn = await asyncpg.connect(release_dsn)
    try:
        assert [r[0] for r in await conn.fetch("SELECT version FROM schema_version ORDER BY 1")] == [
            m.version for m in migrate.load_migrations()]
        assert await conn.fetchval("SELECT count(*) FROM instance_names") == 3
    finally:
        await conn.close()
    p = cli(release_dsn, "db", "status")
    assert p.returncode == 0 and "pending: nothing" in p.stdout, p.stdout + p.stderr
    p = cli(release_dsn, "db", "upgrade", "--json")
    assert p.returncode == 0 and json.loads(p.stdout)["applied"] == [], p.stdout + p.stderr


async def test_serve_refuses_a_newer_schema(release_dsn: str) -> None:
    p = cli(release_dsn, "db", "upgrade")
    assert p.returncode == 0 and UPGRADED in p.stdout and "derived_views emptied" in p.stdout, p.stdout + p.stderr
    conn = await asyncpg.connect(release_dsn)
    try:
        await conn.execute("INSERT INTO schema_version (version) VALUES (9999)")
    finally:
        await conn.close()
    p = cli(release_dsn, "serve", "--port", str(free_port()))
    assert p.returncode == 2, p.stderr
    assert "schema is newer than this release: it records version(s) 9999" in p.stderr
    assert "Traceback" not in p.stderr
    for args in (("db", "status"), ("db", "upgrade"), ("instances", "list")):
        p = cli(release_dsn, *args)
        assert p.returncode == 2 and "schema_newer" in p.stderr, (args, p.stderr)
