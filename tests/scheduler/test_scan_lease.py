"""One lease rule for every scan (issue #15): a CLI scan and a scheduled scan of the same instance at the
same time. Whichever comes second skips (``lease_held``) and writes nothing; the first one's save is the
only update, and it is complete (the snapshot equals a scan of the same archive alone). Afterwards the
other caller scans normally: nothing stays locked.

The CLI is the real command in a subprocess; the scan that must come first is held mid-listing by a
proxy in front of moto, so the overlap is certain, not a race.
"""
from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from backup_catalog.settings import Settings
from backup_catalog.usecases import scan as scans
from catalog import repo
from recovery.model import ArchiveSnapshot, InstanceRef, Storage
from sandbox.s3 import MotoEndpoint
from scheduler.clients import s3_client
from tests.support.faultproxy import FaultProxy
from tests.support.fixtures import make_settings

pytestmark = pytest.mark.realtools

GUID = "g-both"


@pytest_asyncio.fixture(loop_scope="session")
async def proxy(s3_endpoint: MotoEndpoint) -> AsyncIterator[FaultProxy]:
    p = await FaultProxy(s3_endpoint.url).start()
    yield p
    p.resume()
    await p.stop()


def settings(url: str, dsn: str) -> Settings:
    return make_settings(url, dsn, s3_read_timeout_seconds=60, scan_deadline_seconds=120)


def cli_env(url: str, dsn: str) -> dict[str, str]:
    return {**os.environ, "CATALOG_DSN": dsn, "S3_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "x",
            "AWS_SECRET_ACCESS_KEY": "x", "S3_MAX_ATTEMPTS": "2", "S3_READ_TIMEOUT_SECONDS": "60"}


async def start_cli_scan(env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "backup_catalog.cli", "scan", "--instance", GUID, "--json", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


async def finish(proc: asyncio.subprocess.Process) -> tuple[int, dict[str, Any]]:
    out, err = await asyncio.wait_for(proc.communicate(), timeout=180)
    assert proc.returncode is not None
    try:
        doc = json.loads(out)
    except ValueError:
        raise AssertionError(f"not one JSON document: {out!r} {err.decode()[-2000:]}") from None
    return proc.returncode, doc


def content(s: ArchiveSnapshot) -> tuple[Any, ...]:
    return (s.layout, s.seg_size, s.backups, s.runs, s.histories, s.edges, s.conflicts)


async def generation(pool: asyncpg.Pool) -> int:
    return (await repo.load_scan_state(pool, GUID)).generation


async def run_log(pool: asyncpg.Pool) -> list[tuple[str, str]]:
    rows = await pool.fetch("SELECT job, outcome FROM scan_runs WHERE instance_guid = $1 ORDER BY id", GUID)
    return [(r["job"], r["outcome"]) for r in rows]


async def wait_held(proxy: FaultProxy) -> None:
    for _ in range(1500):
        if proxy.held:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the first scan never reached S3")


@pytest_asyncio.fixture(loop_scope="session")
async def golden(pool: asyncpg.Pool, s3_endpoint: MotoEndpoint, catalog_dsn: str, real_archives: Any) -> Any:
    """The instance registered (never scanned), and the content of a scan of the same archive alone."""
    arch = real_archives["barman"]
    st = settings(s3_endpoint.url, catalog_dsn)
    await repo.register_instance(pool, InstanceRef("g-alone", "sp", "alone"), Storage(arch.bucket, arch.prefix))
    async with s3_client(st) as client:
        o, _ = await scans.scan_now(pool, st, client, "g-alone", "alone", full=True)
    assert o.ok, o.message
    snap = await repo.load_snapshot(pool, "g-alone")
    await repo.delete_instance(pool, "g-alone")          # the scheduled tick scans live instances only
    await repo.register_instance(pool, InstanceRef(GUID, "sp", "both"), Storage(arch.bucket, arch.prefix))
    return content(snap)


async def test_cli_scan_skips_while_the_scheduled_scan_holds_the_lease(
        pool: asyncpg.Pool, proxy: FaultProxy, s3_endpoint: MotoEndpoint, catalog_dsn: str, golden: Any) -> None:
    st = settings(proxy.url, catalog_dsn)
    async with s3_client(st) as client:
        proxy.pause()                                    # the scheduled scan takes the lease, then waits in S3
        tick = asyncio.create_task(scans.run_once(pool, st, client, "replica-1"))
        try:
            await wait_held(proxy)
            code, doc = await finish(await start_cli_scan(cli_env(s3_endpoint.url, catalog_dsn)))
            assert code == 1, doc
            [o] = doc["scans"]
            assert (o["instance_guid"], o["ok"], o["code"]) == (GUID, False, "lease_held"), o
            assert "another scan of this instance is running" in o["message"]
            assert await generation(pool) == 0, "the CLI saved nothing"
        finally:
            proxy.resume()
        [scheduled] = await tick
    assert scheduled.ok, scheduled.message
    assert await generation(pool) == 1, "one save: the scheduled scan's"
    assert content(await repo.load_snapshot(pool, GUID)) == golden, "the save is whole"
    assert sorted(await run_log(pool)) == sorted([(scans.SCHEDULED, "ok"), (scans.MANUAL, "skipped:lease_held")])

    code, doc = await finish(await start_cli_scan(cli_env(s3_endpoint.url, catalog_dsn)))   # the lease is free
    assert code == 0 and doc["scans"][0]["ok"], doc
    assert await generation(pool) == 2
    assert content(await repo.load_snapshot(pool, GUID)) == golden


async def test_scheduled_scan_skips_while_a_cli_scan_holds_the_lease(
        pool: asyncpg.Pool, proxy: FaultProxy, s3_endpoint: MotoEndpoint, catalog_dsn: str, golden: Any) -> None:
    st = settings(s3_endpoint.url, catalog_dsn)
    proxy.pause()                                        # the CLI takes the lease, then waits in S3
    cli = await start_cli_scan(cli_env(proxy.url, catalog_dsn))
    try:
        await wait_held(proxy)
        holder = await pool.fetchval("SELECT holder FROM scan_leases WHERE key = $1 AND expires_at > now()",
                                     f"scan:{GUID}")
        assert holder is not None and holder.endswith(f":{cli.pid}"), holder
        async with s3_client(st) as client:
            outs = await scans.run_once(pool, st, client, "replica-1")
        assert [(o.instance_guid, o.code) for o in outs] == [(GUID, "lease_held")]
        assert await generation(pool) == 0, "the scheduled scan saved nothing"
    finally:
        proxy.resume()
    code, doc = await finish(cli)
    assert code == 0 and doc["scans"][0]["ok"], doc
    assert await generation(pool) == 1, "one save: the CLI's"
    assert content(await repo.load_snapshot(pool, GUID)) == golden
    assert sorted(await run_log(pool)) == sorted([(scans.MANUAL, "ok"), (scans.SCHEDULED, "skipped:lease_held")])
    assert await pool.fetchval("SELECT count(*) FROM scan_leases WHERE key = $1 AND expires_at > now()",
                               f"scan:{GUID}") == 0, "the CLI released its lease"
