"""RELIABILITY.md scenarios 1–3 and 15 (partly): transient errors, outage, truncated bodies, read-only."""
from __future__ import annotations

import asyncio
from typing import Any

import pytest
import pytest_asyncio
from pydantic import SecretStr

from backup_catalog.settings import Settings
from catalog import repo
from recovery.model import InstanceRef, Storage
from scheduler import runner
from scheduler.clients import s3_client
from tests.support.faultproxy import FaultProxy
from tests.support.fixtures import make_settings

pytestmark = pytest.mark.realtools


@pytest_asyncio.fixture(loop_scope="session")
async def proxy(s3_endpoint: Any) -> Any:
    p = await FaultProxy(s3_endpoint.url).start()
    yield p
    await p.stop()


def _settings(url: str, dsn: str, **kw: Any) -> Settings:
    return make_settings(url, dsn, aws_access_key_id=SecretStr("sentinel-AKID-123"),
                         aws_secret_access_key=SecretStr("sentinel-SECRET-456"), **({"s3_max_attempts": 5} | kw))


async def _golden(pool: Any, arch: Any, s3_endpoint: Any, dsn: str) -> Any:
    await repo.register_instance(pool, InstanceRef("g-gold", "sp", "gold"), Storage(arch.bucket, arch.prefix))
    st = _settings(s3_endpoint.url, dsn)
    async with s3_client(st) as c:
        assert (await runner.scan_instance(pool, c, "g-gold", full=True, settings=st)).ok
    return await repo.load_snapshot(pool, "g-gold")


@pytest.mark.parametrize("tool", ["pgbackrest", "walg"])
async def test_transient_errors_are_retried_and_catalog_equals_golden(tool: str, pool: Any, proxy: FaultProxy,
                                                                      s3_endpoint: Any, catalog_dsn: str,
                                                                      real_archives: Any) -> None:
    arch = real_archives[tool]
    golden = await _golden(pool, arch, s3_endpoint, catalog_dsn)
    proxy.fail_first = 2          # < max attempts, for every LIST/HEAD/GET
    st = _settings(proxy.url, catalog_dsn, s3_max_attempts=4)
    await repo.register_instance(pool, InstanceRef("g-flaky", "sp", "flaky"), Storage(arch.bucket, arch.prefix))
    async with s3_client(st) as c:
        o = await runner.scan_instance(pool, c, "g-flaky", full=True, settings=st)
    assert o.ok, o.message
    assert proxy.injected > 0
    snap = await repo.load_snapshot(pool, "g-flaky")
    assert (snap.backups, snap.runs, snap.histories, snap.edges) == \
        (golden.backups, golden.runs, golden.histories, golden.edges)
    assert set(proxy.methods) <= {"GET", "HEAD"}, "the scanner must never write to the archive"


async def test_sustained_outage_fails_within_deadline_and_keeps_catalog(pool: Any, proxy: FaultProxy,
                                                                        s3_endpoint: Any, catalog_dsn: str,
                                                                        real_archives: Any) -> None:
    arch = real_archives["barman"]
    golden = await _golden(pool, arch, s3_endpoint, catalog_dsn)
    proxy.down = True
    st = _settings(proxy.url, catalog_dsn, s3_max_attempts=3, scan_deadline_seconds=10)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    async with s3_client(st) as c:
        o = await runner.scan_instance(pool, c, "g-gold", full=True, settings=st)
    assert loop.time() - t0 < 10 + 2
    assert not o.ok and o.code == "storage_unavailable"
    assert "sentinel-SECRET-456" not in o.message and "sentinel-AKID-123" not in o.message
    assert await repo.load_snapshot(pool, "g-gold") == golden
    state = await repo.load_scan_state(pool, "g-gold")
    assert state.stale_since is not None
    proxy.down = False
    async with s3_client(st) as c:
        assert (await runner.scan_instance(pool, c, "g-gold", full=True, settings=st)).ok
    assert (await repo.load_scan_state(pool, "g-gold")).stale_since is None


async def test_truncated_metadata_body_is_retried_never_parsed(pool: Any, proxy: FaultProxy, s3_endpoint: Any,
                                                               catalog_dsn: str, real_archives: Any) -> None:
    arch = real_archives["pgbackrest"]
    golden = await _golden(pool, arch, s3_endpoint, catalog_dsn)
    proxy.truncate_suffix, proxy.truncate_at, proxy.truncate_times = "/backup.info", 200, 2
    st = _settings(proxy.url, catalog_dsn)
    await repo.register_instance(pool, InstanceRef("g-trunc", "sp", "trunc"), Storage(arch.bucket, arch.prefix))
    async with s3_client(st) as c:
        o = await runner.scan_instance(pool, c, "g-trunc", full=True, settings=st)
    assert o.ok, o.message
    assert proxy.truncate_times == 0, "the truncation was injected"
    snap = await repo.load_snapshot(pool, "g-trunc")
    assert snap.backups == golden.backups
    state = await repo.load_scan_state(pool, "g-trunc")
    assert not any(i.code in ("integrity_warning", "integrity_error", "metadata_error") for i in state.issues), \
        "a truncated body must be re-read, not parsed"
