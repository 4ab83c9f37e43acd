"""RELIABILITY.md scenarios 4 (stall / slow server), 10 (concurrent writer/expire during a scan), 13 (leader
loss and fencing) and the rest of 15 (TLS verification, clock skew, credentials never shown).

Real parts only: moto server over HTTP (and its stunnel TLS front), the fault proxy in front of it, the test
catalog PostgreSQL. Timeouts and TTLs are small settings so that the whole module stays fast.
"""
from __future__ import annotations

import asyncio
import base64
import itertools
import logging
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from backup_catalog.service import jobs
from backup_catalog.settings import Settings
from backup_catalog.usecases import scan as scans
from catalog import repo
from catalog.db import open_pool
from recovery.model import ArchiveSnapshot, BackupStatus, InstanceRef, Storage
from sandbox.s3 import MotoEndpoint
from scheduler import runner
from scheduler.clients import s3_client
from scheduler.storage import S3Store, StorageError
from tests.realarchives.plugin import fresh_bucket
from tests.support.faultproxy import FaultProxy
from tests.support.fixtures import make_settings

pytestmark = pytest.mark.realtools

AKID, SECRET = "sentinel-AKID-7f3a", "sentinel-SECRET-9c1e"


@pytest_asyncio.fixture(loop_scope="session")
async def proxy(s3_endpoint: MotoEndpoint) -> AsyncIterator[FaultProxy]:
    p = await FaultProxy(s3_endpoint.url).start()
    yield p
    await p.stop()


def _settings(url: str, dsn: str, **kw: Any) -> Settings:
    base: dict[str, Any] = dict(aws_access_key_id=SecretStr(AKID), aws_secret_access_key=SecretStr(SECRET),
                                s3_connect_timeout_seconds=2, s3_read_timeout_seconds=0.5, scan_deadline_seconds=20)
    return make_settings(url, dsn, **(base | kw))


async def _scan(pool: asyncpg.Pool, st: Settings, guid: str, *, full: bool = True) -> runner.ScanOutcome:
    async with s3_client(st) as c:
        return await runner.scan_instance(pool, c, guid, full=full, settings=st)


async def _register_and_scan(pool: asyncpg.Pool, guid: str, bucket: str, prefix: str, st: Settings) -> ArchiveSnapshot:
    await repo.register_instance(pool, InstanceRef(guid, "sp", guid), Storage(bucket, prefix))
    o = await _scan(pool, st, guid)
    assert o.ok, o.message
    return await repo.load_snapshot(pool, guid)


def _content(s: ArchiveSnapshot) -> tuple[Any, ...]:
    return (s.layout, s.seg_size, s.backups, s.runs, s.histories, s.edges, s.conflicts)


def _elapsed(t0: float) -> float:
    return asyncio.get_running_loop().time() - t0


# ----------------------------------------------------------------------------------------------------------
# 4. Stall / slow server
# ----------------------------------------------------------------------------------------------------------

async def test_stalled_body_fires_the_read_timeout_well_within_the_deadline(
        pool: asyncpg.Pool, proxy: FaultProxy, s3_endpoint: MotoEndpoint, catalog_dsn: str, real_archives: Any) -> None:
    arch = real_archives["pgbackrest"]
    golden = await _register_and_scan(pool, "g-stall", arch.bucket, arch.prefix, _settings(s3_endpoint.url, catalog_dsn))
    proxy.stall_suffix, proxy.stall_at = "/backup.info", 100     # headers and 100 bytes, then silence
    st = _settings(proxy.url, catalog_dsn, s3_read_timeout_seconds=0.5, scan_deadline_seconds=20)
    t0 = asyncio.get_running_loop().time()
    o = await _scan(pool, st, "g-stall")
    took = _elapsed(t0)
    assert not o.ok and o.code == "storage_timeout", o
    assert proxy.stalled >= 2, "GET + read is retried as a unit after a stall"
    assert took < 8 < st.scan_deadline_seconds, f"the per-read timeout must end it, not the deadline ({took:.1f}s)"
    assert "backup.info" in o.message and AKID not in o.message and SECRET not in o.message
    assert _content(await repo.load_snapshot(pool, "g-stall")) == _content(golden)     # previous generation kept
    state = await repo.load_scan_state(pool, "g-stall")
    assert state.last_error_code == "storage_timeout" and state.stale_since is not None
    proxy.stall_suffix = None
    assert (await _scan(pool, st, "g-stall")).ok


async def test_slow_body_that_keeps_making_progress_is_not_cut(
        pool: asyncpg.Pool, proxy: FaultProxy, s3_endpoint: MotoEndpoint, catalog_dsn: str, real_archives: Any) -> None:
    """The read timeout is an inactivity timeout (pgBackRest io-timeout): a body that takes more than twice the
    read timeout in total, but never pauses longer than the timeout, is read whole."""
    arch = real_archives["pgbackrest"]
    golden = await _register_and_scan(pool, "g-gold", arch.bucket, arch.prefix, _settings(s3_endpoint.url, catalog_dsn))
    size = s3_endpoint.client().head_object(Bucket=arch.bucket, Key=f"{arch.prefix}/backup/main/backup.info")["ContentLength"]
    proxy.drip_suffix, proxy.drip_chunk, proxy.drip_interval = "/backup.info", size // 7 + 1, 0.4   # 7 chunks, 2.4 s
    st = _settings(proxy.url, catalog_dsn, s3_read_timeout_seconds=1.0)
    await repo.register_instance(pool, InstanceRef("g-drip", "sp", "drip"), Storage(arch.bucket, arch.prefix))
    t0 = asyncio.get_running_loop().time()
    o = await _scan(pool, st, "g-drip")
    assert o.ok, o.message
    assert _elapsed(t0) >= 2.4 > 2 * st.s3_read_timeout_seconds
    assert proxy.dripped == 1, "no read timeout fired, so no re-read"
    assert _content(await repo.load_snapshot(pool, "g-drip")) == _content(golden)


async def test_five_second_latency_fails_fast_on_the_read_timeout(
        pool: asyncpg.Pool, proxy: FaultProxy, s3_endpoint: MotoEndpoint, catalog_dsn: str, real_archives: Any) -> None:
    arch = real_archives["walg"]
    golden = await _register_and_scan(pool, "g-lat", arch.bucket, arch.prefix, _settings(s3_endpoint.url, catalog_dsn))
    proxy.latency = 5.0
    st = _settings(proxy.url, catalog_dsn, s3_read_timeout_seconds=1.0, s3_max_attempts=2)
    t0 = asyncio.get_running_loop().time()
    o = await _scan(pool, st, "g-lat")
    took = _elapsed(t0)
    assert not o.ok and o.code == "storage_timeout", o
    assert took < 5.0, f"gave up before the server's first answer would have come ({took:.1f}s)"
    assert sum(proxy.methods.values()) == 2, "botocore standard mode retried the timed-out request once"
    assert _content(await repo.load_snapshot(pool, "g-lat")) == _content(golden)


async def test_slow_but_steady_server_is_cut_by_the_scan_deadline(
        pool: asyncpg.Pool, proxy: FaultProxy, s3_endpoint: MotoEndpoint, catalog_dsn: str, real_archives: Any) -> None:
    arch = real_archives["walg"]
    golden = await _register_and_scan(pool, "g-slow", arch.bucket, arch.prefix, _settings(s3_endpoint.url, catalog_dsn))
    proxy.latency = 0.4     # every answer comes, each well within the read timeout, but the scan needs many
    st = _settings(proxy.url, catalog_dsn, s3_read_timeout_seconds=2.0, scan_deadline_seconds=1.0)
    t0 = asyncio.get_running_loop().time()
    o = await _scan(pool, st, "g-slow")
    took = _elapsed(t0)
    assert not o.ok and o.code == "storage_unavailable" and "did not finish within 1 s" in o.message, o
    assert 1.0 <= took < 1.0 + 1.5
    assert _content(await repo.load_snapshot(pool, "g-slow")) == _content(golden)
    assert (await repo.load_scan_state(pool, "g-slow")).stale_since is not None


async def test_scheduled_job_never_overlaps_itself_and_the_next_tick_runs(
        pool: asyncpg.Pool, proxy: FaultProxy, catalog_dsn: str, real_archives: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    arch = real_archives["pgbackrest"]
    await repo.register_instance(pool, InstanceRef("g-tick", "sp", "tick"), Storage(arch.bucket, arch.prefix))
    st = _settings(proxy.url, catalog_dsn, scan_interval_seconds=1, s3_read_timeout_seconds=0.6, s3_max_attempts=1)
    proxy.stall_suffix = "/backup.info"        # the first tick's scan stalls for several intervals
    ticks: list[tuple[float, float, list[runner.ScanOutcome]]] = []
    loop = asyncio.get_running_loop()
    caplog.set_level(logging.WARNING, logger="apscheduler")
    async with s3_client(st) as client:
        async def tick() -> None:
            start = loop.time()
            outcomes = await scans.run_once(pool, st, client, "replica-1")
            ticks.append((start, loop.time(), outcomes))
            proxy.stall_suffix = None          # the storage recovers after the first (stalled) tick

        sched = jobs.make_scheduler(tick, st)
        sched.start()
        try:
            for _ in range(150):
                if any(o.ok for _, _, outs in ticks for o in outs):
                    break
                await asyncio.sleep(0.1)
        finally:
            sched.shutdown(wait=False)
        for _ in range(50):       # a tick in flight at shutdown ends on its own (bounded by the timeouts)
            if not await pool.fetchval("SELECT count(*) FROM scan_runs WHERE finished_at IS NULL"):
                break
            await asyncio.sleep(0.1)
    assert len(ticks) >= 2, ticks
    first_start, first_end, first = ticks[0]
    assert [o.code for o in first] == ["storage_timeout"]
    assert 1.0 < first_end - first_start < st.scan_deadline_seconds, "stalled past a tick, bounded by the timeouts"
    for (_, end, _), (start, _, _) in itertools.pairwise(ticks):
        assert start >= end, "max_instances=1: a tick never starts while the previous one runs"
    assert any(o.ok for _, _, outs in ticks[1:] for o in outs), "the next tick runs and succeeds"
    assert any("maximum number of running instances reached" in r.getMessage() for r in caplog.records), \
        "a tick came due while the stalled one ran, and was skipped"
    runs = await pool.fetch("SELECT outcome FROM scan_runs ORDER BY scheduled_for")
    assert runs[0]["outcome"] == "storage_timeout" and any(r["outcome"] == "ok" for r in runs[1:])


# ----------------------------------------------------------------------------------------------------------
# 10. Concurrent writer / expire during a scan
# ----------------------------------------------------------------------------------------------------------

def _runs(names: set[str]) -> set[tuple[int, int, int]]:
    """(timeline, first, last) of each run of consecutive segments among 24-hex-digit segment names."""
    by_tli: dict[int, list[int]] = {}
    for n in names:
        by_tli.setdefault(int(n[:8], 16), []).append(int(n[8:], 16))
    out = set()
    for tli, nums in by_tli.items():
        nums.sort()
        start = prev = nums[0]
        for x in nums[1:]:
            if x != prev + 1:
                out.add((tli, start, prev))
                start = x
            prev = x
        out.add((tli, start, prev))
    return out


async def test_writes_and_expiry_between_list_pages(pool: asyncpg.Pool, proxy: FaultProxy, s3_endpoint: MotoEndpoint,
                                                    catalog_dsn: str, real_archives: Any) -> None:
    """WAL-G archive, listed two entries per page. Between pages an archiver adds segments (one after the
    listing's position, one before it) and retention deletes a listed segment and a listed backup sentinel."""
    bucket, prefix = fresh_bucket(s3_endpoint, "walg")
    s3 = s3_endpoint.client()
    wal, base = f"{prefix}/wal_005/", f"{prefix}/basebackups_005/"
    seg = {n: f"{wal}{n}.lz4" for n in ("000000010000000000000003", "000000020000000000000007")}
    sentinel = f"{base}base_000000010000000000000002_backup_stop_sentinel.json"
    kept = {k: s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in
            (seg["000000010000000000000003"], seg["000000020000000000000007"])}
    for k in kept:       # not archived yet when the story starts
        s3.delete_object(Bucket=bucket, Key=k)
    # how far timeline 1 runs depends on the build of the archive (06 or 07): the expected runs follow it
    names = [k.rsplit("/", 1)[-1].split(".")[0] for k in _keys(s3, bucket, wal)
             if ".backup" not in k and ".history" not in k]
    tl1_last = max(int(n[8:], 16) for n in names if n.startswith("00000001") and len(n) == 24)
    assert tl1_last >= 6
    # and where timeline 2 starts (05 or 06) and ends: the expected runs are computed from the names
    listed = {n for n in names if len(n) == 24}
    assert seg["000000020000000000000007"].rsplit("/", 1)[-1].split(".")[0] not in listed   # held back above
    direct = _settings(s3_endpoint.url, catalog_dsn)
    before = await _register_and_scan(pool, "g-race", bucket, prefix, direct)
    assert {(r.timeline, r.first, r.last) for r in before.runs} == _runs(listed)
    assert (1, 1, 2) in _runs(listed) and (1, 4, tl1_last) in _runs(listed)
    # retention expires timeline 1's last segment (a run end: the scan reads it) right after the page that
    # listed it; 1/03 sorts before that position, 2/07 after it
    expired = f"00000001{tl1_last:016X}"
    seg[expired] = f"{wal}{expired}.lz4"
    order = sorted(_keys(s3, bucket, wal))
    expire_at_page = order.index(seg[expired]) // 2 + 2

    events: list[str] = []

    async def between_pages(list_prefix: str, page: int) -> None:
        def mutate() -> None:
            if list_prefix == base and page == 2:        # page 1 listed base_..02/ and its sentinel
                s3.delete_object(Bucket=bucket, Key=sentinel)
                events.append("expired sentinel")
            if list_prefix == wal and page == expire_at_page:
                for k, body in kept.items():             # 1/03 sorts before the position, 2/07 after it
                    s3.put_object(Bucket=bucket, Key=k, Body=body)
                s3.delete_object(Bucket=bucket, Key=seg[expired])
                events.append("archived 2 segments, expired TL1's last")
        await asyncio.to_thread(mutate)

    proxy.list_page_size, proxy.on_list_page = 2, between_pages
    faulty = _settings(proxy.url, catalog_dsn)
    o = await _scan(pool, faulty, "g-race")
    assert o.ok, o.message
    assert events == ["expired sentinel", "archived 2 segments, expired TL1's last"], "both races were injected"
    state = await repo.load_scan_state(pool, "g-race")
    races = {i.key for i in state.issues if i.code == "not_found_race"}
    assert races == {sentinel, seg[expired]}, state.issues
    assert not [i for i in state.issues if i.code in ("integrity_error", "metadata_error", "wal_decode_error")]
    snap1 = await repo.load_snapshot(pool, "g-race")
    # a listing is not a snapshot: 2/07 (after the position) was seen, 1/03 (before it) was not; TL1's last was
    # listed, so it is not deleted on the strength of a 404, nor is the backup whose sentinel 404ed
    assert {(r.timeline, r.first, r.last) for r in snap1.runs} == _runs(listed | {"000000020000000000000007"})
    b02 = next(b for b in snap1.backups if b.label == "base_000000010000000000000002")
    assert b02.status is BackupStatus.DONE and b02 == next(b for b in before.backups if b.label == b02.label)

    proxy.on_list_page = None          # the bucket is quiet again: two fault-free scans converge on golden
    golden = await _register_and_scan(pool, "g-golden", bucket, prefix, direct)
    everything = listed | {"000000010000000000000003", "000000020000000000000007"}
    assert {(r.timeline, r.first, r.last) for r in golden.runs} == _runs(everything - {expired})
    assert (1, 1, tl1_last - 1) in _runs(everything - {expired})
    assert next(b for b in golden.backups if b.label == b02.label).status is BackupStatus.RUNNING
    for _ in range(2):
        assert (await _scan(pool, faulty, "g-race")).ok
        assert _content(await repo.load_snapshot(pool, "g-race")) == _content(golden)
    gen = (await repo.load_scan_state(pool, "g-race")).generation
    assert (await _scan(pool, faulty, "g-race", full=False)).ok        # idempotent: nothing changed, no diff
    assert _content(await repo.load_snapshot(pool, "g-race")) == _content(golden)
    assert (await repo.load_scan_state(pool, "g-race")).generation == gen + 1
    assert not [i for i in (await repo.load_scan_state(pool, "g-race")).issues if i.code == "not_found_race"]


# ----------------------------------------------------------------------------------------------------------
# 13. Leader loss and fencing
# ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("stale_write", ["before_new_holder_saves", "after_new_holder_saved"])
async def test_paused_leader_loses_its_lease_and_its_late_write_is_fenced(
        stale_write: str, pool: asyncpg.Pool, proxy: FaultProxy, s3_endpoint: MotoEndpoint, catalog_dsn: str,
        real_archives: Any, caplog: pytest.LogCaptureFixture) -> None:
    arch = real_archives["barman"]
    golden = await _register_and_scan(pool, "g-gold", arch.bucket, arch.prefix, _settings(s3_endpoint.url, catalog_dsn))
    await repo.register_instance(pool, InstanceRef("g-lead", "sp", "lead"), Storage(arch.bucket, arch.prefix))
    ttl, tick = 3.0, 0.5   # B renews every ttl/3: a loaded machine's loop stall under a second does not fence B
    proxy_b = await FaultProxy(s3_endpoint.url).start()
    st_a = _settings(proxy.url, catalog_dsn, scan_lease_ttl_seconds=ttl, s3_read_timeout_seconds=30)
    st_b = _settings(proxy_b.url, catalog_dsn, scan_lease_ttl_seconds=ttl, s3_read_timeout_seconds=30)
    assert scans.lease_ttl(st_a) == ttl and scans.lease_ttl(Settings(scan_deadline_seconds=100)) == 160
    pool_a = await open_pool(catalog_dsn, min_size=1, max_size=2, server_settings={"application_name": "replica-a"})
    caplog.set_level(logging.WARNING, logger="backup_catalog.usecases.scan")
    slot = scans.slot_for(datetime.now(timezone.utc), 60)
    try:
        async with s3_client(st_a) as client_a, s3_client(st_b) as client_b:
            proxy.pause()                                   # replica A: takes the lease, then freezes in S3
            a = asyncio.create_task(scans.scan_with_lease(pool_a, st_a, client_a, "g-lead", "A", job=scans.SCHEDULED,
                                                         slot=slot, full=True))
            while not proxy.held:
                await asyncio.sleep(0.02)
            a_since = await pool.fetchval("SELECT acquired_at FROM scan_leases WHERE key = 'scan:g-lead'")
            # and its catalog connections are cut
            cut = await pool.fetchval("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                      "WHERE application_name = 'replica-a'")
            assert cut >= 1
            if stale_write == "before_new_holder_saves":
                proxy_b.pause()                             # B will take over, then be slow itself

            async def replica_b() -> list[runner.ScanOutcome]:
                out = []
                for k in range(1, 40):                      # B's scheduler ticks every `tick` s
                    o, _ = await scans.scan_with_lease(pool, st_b, client_b, "g-lead", "B", job=scans.SCHEDULED,
                                                      slot=slot + timedelta(seconds=k), full=True)
                    out.append(o)
                    if o.code != "lease_held":
                        return out
                    await asyncio.sleep(tick)
                return out

            b = asyncio.create_task(replica_b())
            for _ in range(200):
                row = await pool.fetchrow("SELECT holder, token, acquired_at FROM scan_leases WHERE key = 'scan:g-lead'")
                if row["holder"] == "B":
                    break
                await asyncio.sleep(0.02)
            assert row["holder"] == "B" and row["token"] == 2, "B took over with a new fencing token"
            takeover = (row["acquired_at"] - a_since).total_seconds()
            assert ttl <= takeover <= ttl + tick + 2.0, f"takeover within TTL + one tick ({takeover:.2f}s)"

            if stale_write == "after_new_holder_saved":
                outs_b = await b
                assert outs_b[-1].ok, outs_b[-1]
            proxy.resume()                                   # A wakes up, finishes its scan, tries to save
            o_a, _ = await a
            gen_after_a = (await repo.load_scan_state(pool, "g-lead")).generation
            proxy_b.resume()
            outs_b = await b
    finally:
        proxy.resume()
        proxy_b.resume()
        await proxy_b.stop()
        await pool_a.close()
    assert o_a.code == "fenced", o_a
    assert gen_after_a == (0 if stale_write == "before_new_holder_saves" else 1), "A's late save wrote nothing"
    assert outs_b[-1].ok, outs_b[-1]
    assert [o.code for o in outs_b[:-1]] and all(o.code == "lease_held" for o in outs_b[:-1])
    assert (await repo.load_scan_state(pool, "g-lead")).generation == 1, "only B's save counts"
    assert _content(await repo.load_snapshot(pool, "g-lead")) == _content(golden)
    assert any("fenced" in r.getMessage() and "g-lead" in r.getMessage() for r in caplog.records)
    runs = {r["holder"]: r["outcome"] for r in await pool.fetch(
        "SELECT holder, outcome FROM scan_runs WHERE instance_guid = 'g-lead' AND outcome <> 'skipped:lease_held'")}
    assert runs == {"A": "fenced", "B": "ok"}
    assert await pool.fetchval("SELECT count(*) FROM scan_leases WHERE expires_at > clock_timestamp()") == 0


# ----------------------------------------------------------------------------------------------------------
# 15. Security hygiene (the rest): TLS verification, clock skew, credentials never shown
# ----------------------------------------------------------------------------------------------------------

async def test_tls_verification_is_on_by_default_and_a_ca_bundle_trusts_a_private_endpoint(
        pool: asyncpg.Pool, s3_endpoint: MotoEndpoint, catalog_dsn: str, real_archives: Any) -> None:
    assert Settings().s3_verify_tls is True and Settings().s3_ca_bundle is None
    arch = real_archives["walg"]
    await repo.register_instance(pool, InstanceRef("g-tls", "sp", "tls"), Storage(arch.bucket, arch.prefix))
    st = _settings(s3_endpoint.tls_url, catalog_dsn)            # stunnel's self-signed certificate
    o = await _scan(pool, st, "g-tls")
    assert not o.ok and o.code == "tls_error" and "CERTIFICATE_VERIFY_FAILED" in o.message, o
    assert (await repo.load_scan_state(pool, "g-tls")).last_error_code == "tls_error"
    ca = s3_endpoint._tls_dir / "cert.pem"                      # type: ignore[operator]
    o = await _scan(pool, _settings(s3_endpoint.tls_url, catalog_dsn, s3_ca_bundle=str(ca)), "g-tls")
    assert o.ok, o.message


async def test_request_time_too_skewed_is_clock_skew_not_access_denied(
        pool: asyncpg.Pool, proxy: FaultProxy, catalog_dsn: str, real_archives: Any) -> None:
    arch = real_archives["walg"]
    await repo.register_instance(pool, InstanceRef("g-skew", "sp", "skew"), Storage(arch.bucket, arch.prefix))
    proxy.fail_with = (403, "RequestTimeTooSkewed",
                       "The difference between the request time and the current time is too large.")
    proxy.fail_with_extra = ("<RequestTime>20200101T000000Z</RequestTime><ServerTime>2026-01-01T00:00:00Z"
                             "</ServerTime><MaxAllowedSkewMilliseconds>900000</MaxAllowedSkewMilliseconds>")
    st = _settings(proxy.url, catalog_dsn)
    o = await _scan(pool, st, "g-skew")
    assert not o.ok and o.code == "clock_skew", o
    assert (await repo.load_scan_state(pool, "g-skew")).last_error_code == "clock_skew"
    n = proxy.injected
    async with s3_client(st) as c:      # a metadata read is not retried either: a clock does not heal itself
        with pytest.raises(StorageError) as err:
            await S3Store(c, arch.bucket).read(f"{arch.prefix}/basebackups_005/x_backup_stop_sentinel.json")
    assert err.value.code == "clock_skew" and proxy.injected - n <= st.s3_max_attempts


async def test_sentinel_credentials_never_appear_in_api_bodies_metrics_or_logs(
        pool: asyncpg.Pool, proxy: FaultProxy, catalog_dsn: str, real_archives: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    from backup_catalog.service.app import create_app

    arch = real_archives["walg"]
    await repo.register_instance(pool, InstanceRef("g-cred", "sp", "cred"), Storage(arch.bucket, arch.prefix))
    st = _settings(proxy.url, catalog_dsn, operator_username="op", operator_password=SecretStr("op-pw"),
                   s3_read_timeout_seconds=0.5)
    auth = {"Authorization": "Basic " + base64.b64encode(b"op:op-pw").decode()}
    caplog.set_level(logging.INFO)                      # the most the service logs (cli: --verbose)
    for name in ("api", "scheduler", "catalog", "backup_catalog"):
        caplog.set_level(logging.DEBUG, logger=name)
    # S3 echoes the access key id in SignatureDoesNotMatch errors; it must stop at our error classification
    echo = (f"<AWSAccessKeyId>{AKID}</AWSAccessKeyId><StringToSign>AWS4-HMAC-SHA256\n20260101T000000Z\n"
            f"{AKID}/20260101/us-east-1/s3/aws4_request</StringToSign>")
    faults: list[tuple[str | None, dict[str, Any]]] = [
        ("access_denied", dict(fail_with=(403, "SignatureDoesNotMatch", "The request signature we calculated does "
                                          "not match the signature you provided."), fail_with_extra=echo)),
        ("access_denied", dict(fail_with=(403, "InvalidAccessKeyId", f"The AWS Access Key Id {AKID} does not exist."),
                               fail_with_extra=f"<AWSAccessKeyId>{AKID}</AWSAccessKeyId>")),
        ("storage_unavailable", dict(down=True)),
        ("storage_timeout", dict(stall_suffix="_backup_stop_sentinel.json")),
        (None, dict(truncate_suffix="_backup_stop_sentinel.json", truncate_at=50, truncate_times=2)),
    ]
    bodies: list[str] = []
    app = create_app(st, pool=pool, start_scheduler=False, holder="cred-test")
    async with TestClient(TestServer(app)) as c:
        for code, fault in faults:
            for k, v in dict(fail_with=None, fail_with_extra="", down=False, stall_suffix=None, fail_first=0,
                             truncate_suffix=None).items():
                setattr(proxy, k, v)
            for k, v in fault.items():
                setattr(proxy, k, v)
            proxy.seen.clear()
            resp = await c.post("/instances/g-cred/scan?full=true", headers=auth)
            text = await resp.text()
            bodies.append(text)
            # a failed scan is a 502/503 problem carrying the outcome; a scan that recovered is a 200
            assert resp.status == (200 if code is None else 503 if code == "storage_unavailable"
                                   or code == "storage_timeout" else 502), text
            body = await resp.json(content_type=None)
            assert (body["code"] if code is None else body["scan"]["code"]) == code, body
        for path in ("/metrics", "/instances", "/reports/coverage"):
            resp = await c.get(path, headers=auth)
            bodies.append(await resp.text())
            assert resp.status == 200, path
        resp = await c.post("/instances/nope/scan", headers=auth)       # an error body too
        assert resp.status == 404
        bodies.append(await resp.text())
    states = await pool.fetch("SELECT last_error, issues::text FROM scan_state")
    texts = [*bodies, *(r.getMessage() for r in caplog.records), *(str(r.exc_info) for r in caplog.records),
             *(str(v) for r in states for v in r.values())]
    assert proxy.injected > 0 and any("storage_timeout" in b for b in bodies)
    for t in texts:
        assert AKID not in t and SECRET not in t, t[:500]
    assert set(proxy.methods) <= {"GET", "HEAD"}, "the scanner never writes to the archive"


def _keys(s3: Any, bucket: str, prefix: str) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]
