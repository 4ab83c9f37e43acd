"""Scanner races with retention/expire that must not look like corruption (RELIABILITY.md 3, 9, 10), and a full
reconcile that forgets what the bucket no longer holds.

- a listed pgBackRest ``backup.info``/``archive.info`` or barman ``backup.info`` that 404s at GET is
  ``not_found_race``: the catalog keeps the backups it knew (no ``integrity_error``, the planner still plans);
- a duplicate WAL copy that 404s while the copies are compared is ``not_found_race``, not a ``wal_conflict``:
  the surviving copy is the segment;
- a ``.history`` file gone from the archive leaves the catalog at the next *full* scan, never at an incremental one.

Real parts only: moto server over HTTP, the fault proxy in front of it (``before_get`` expires an object between
its listing and its read, so the 404 is S3's own), the test catalog PostgreSQL.
"""
from __future__ import annotations

import asyncio
import gzip
import hashlib
import itertools
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

import asyncpg
import lz4.frame
import pytest
import pytest_asyncio
import zstandard

from backup_catalog.settings import Settings
from catalog import repo
from recovery.errors import PlanningError
from recovery.model import ArchiveSnapshot, Backup, BackupStatus, InstanceRef, Storage
from recovery.plan import plan_recovery
from recovery.target import make_target
from recovery.wal import WalSegment
from sandbox.cache import ensure_cache, load_objects, load_truth, upload_objects
from sandbox.s3 import MotoEndpoint
from scheduler import runner
from scheduler.clients import s3_client
from tests.support.faultproxy import FaultProxy
from tests.support.fixtures import make_settings

pytestmark = pytest.mark.realtools
_seq = itertools.count(1)
NOW = datetime(2100, 1, 1, tzinfo=timezone.utc)


@pytest_asyncio.fixture(loop_scope="session")
async def proxy(s3_endpoint: MotoEndpoint) -> AsyncIterator[FaultProxy]:
    p = await FaultProxy(s3_endpoint.url).start()
    yield p
    await p.stop()


def _bucket(s3_endpoint: MotoEndpoint, tool: str) -> tuple[str, str]:
    """A new bucket with ``tool``'s archive, without backup payload (the scanner never reads it)."""
    d = ensure_cache()
    bucket = f"races-{tool}-{next(_seq)}-{s3_endpoint.port}"
    upload_objects(s3_endpoint, bucket, d, tool,
                   [o for o in load_objects(d, tool) if "/pg_data/" not in o.key and "/tar_partitions/" not in o.key])
    return bucket, str(load_truth(d)[tool]["prefix"])


def _settings(url: str, dsn: str) -> Settings:
    return make_settings(url, dsn, scan_deadline_seconds=20)


async def _scan(pool: asyncpg.Pool, st: Settings, guid: str, *, full: bool = True) -> runner.ScanOutcome:
    async with s3_client(st) as c:
        o = await runner.scan_instance(pool, c, guid, full=full, settings=st)
    assert o.ok, o.message
    return o


def _expire(s3_endpoint: MotoEndpoint, bucket: str, victims: Callable[[str], list[str]],
            gone: list[str]) -> Callable[[str], Any]:
    """A ``before_get`` hook: deletes ``victims(key)`` (retention/expire) right before the GET of ``key``."""
    s3 = s3_endpoint.client()

    async def hook(key: str) -> None:
        doomed = victims(key)
        if doomed:
            await asyncio.to_thread(lambda: [s3.delete_object(Bucket=bucket, Key=k) for k in doomed])
            gone.extend(doomed)
    return hook


def _codes(state: Any, *codes: str) -> dict[str, set[str | None]]:
    return {c: {i.key for i in state.issues if i.code == c} for c in codes}


def _unsourced(backups: tuple[Backup, ...]) -> tuple[Backup, ...]:
    return tuple(replace(b, metadata_key=None) for b in backups)


def _plan_latest(snap: ArchiveSnapshot, timeline: object = "latest") -> Any:
    return plan_recovery(snap, make_target(latest=True, timeline=timeline), now=NOW)


# ----------------------------------------------------------------------------------------------------------
# 1. info files that 404 after the listing
# ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("vanish", ["main_and_copy", "main_only"])
async def test_pgbackrest_info_files_vanishing_after_listing_keep_the_known_backups(
        vanish: str, pool: asyncpg.Pool, proxy: FaultProxy, s3_endpoint: MotoEndpoint, catalog_dsn: str) -> None:
    bucket, prefix = _bucket(s3_endpoint, "pgbackrest")
    binfo, ainfo = f"{prefix}/backup/main/backup.info", f"{prefix}/archive/main/archive.info"
    await repo.register_instance(pool, InstanceRef("g-pbr", "sp", "pbr"), Storage(bucket, prefix))
    await _scan(pool, _settings(s3_endpoint.url, catalog_dsn), "g-pbr")
    before = await repo.load_snapshot(pool, "g-pbr")
    assert len(before.backups) == 3 and not before.integrity_errors
    targets = {binfo, ainfo} | ({binfo + ".copy", ainfo + ".copy"} if vanish == "main_and_copy" else set())
    gone: list[str] = []
    proxy.before_get = _expire(s3_endpoint, bucket, lambda k: [k] if k in targets else [], gone)
    await _scan(pool, _settings(proxy.url, catalog_dsn), "g-pbr")
    assert set(gone) == targets, "every info file was listed, then expired before its GET"

    state = await repo.load_scan_state(pool, "g-pbr")
    found = _codes(state, "not_found_race", "integrity_error", "integrity_warning", "metadata_error")
    assert found == {"not_found_race": targets, "integrity_error": set(), "integrity_warning": set(),
                     "metadata_error": set()}, state.issues
    snap = await repo.load_snapshot(pool, "g-pbr")
    assert not snap.integrity_errors
    if vanish == "main_and_copy":
        assert snap.backups == before.backups, "not known to be gone until a complete listing lacks them"
    else:       # read from the .copy (the one difference: which file they were read from)
        assert _unsourced(snap.backups) == _unsourced(before.backups)
        assert {b.metadata_key for b in snap.backups} == {binfo + ".copy"}
    assert (snap.runs, snap.histories, snap.conflicts) == (before.runs, before.histories, before.conflicts)
    assert _plan_latest(snap).backup.label == _plan_latest(before).backup.label, "the planner does not refuse"

    proxy.before_get = None       # the next complete listing lacks what is gone for good
    await _scan(pool, _settings(proxy.url, catalog_dsn), "g-pbr")
    snap = await repo.load_snapshot(pool, "g-pbr")
    if vanish == "main_and_copy":
        assert snap.integrity_errors, "both info files absent from a complete listing: the stanza is invalid"
        with pytest.raises(PlanningError) as err:
            _plan_latest(snap)
        assert err.value.code == "integrity_error"
    else:
        assert not snap.integrity_errors and _unsourced(snap.backups) == _unsourced(before.backups)   # the .copy
        state = await repo.load_scan_state(pool, "g-pbr")
        assert _codes(state, "integrity_warning")["integrity_warning"] == {binfo, ainfo}, state.issues


async def test_barman_backup_info_vanishing_after_listing_keeps_the_known_backup(
        pool: asyncpg.Pool, proxy: FaultProxy, s3_endpoint: MotoEndpoint, catalog_dsn: str) -> None:
    bucket, prefix = _bucket(s3_endpoint, "barman")
    base = f"{prefix}/main/base/"
    s3 = s3_endpoint.client()
    await repo.register_instance(pool, InstanceRef("g-bm", "sp", "bm"), Storage(bucket, prefix))
    await _scan(pool, _settings(s3_endpoint.url, catalog_dsn), "g-bm")
    before = await repo.load_snapshot(pool, "g-bm")
    oldest = min(b.label for b in before.backups)
    assert len(before.backups) == 3 and all(b.status is BackupStatus.DONE for b in before.backups)
    # a backup in progress (barman-cloud < 3.19 uploads backup.info last): never a race, and never read
    s3.put_object(Bucket=bucket, Key=f"{base}20991231T000000/data.tar.gz", Body=b"payload")

    info = f"{base}{oldest}/backup.info"            # retention deletes the oldest backup between LIST and GET
    gone: list[str] = []
    proxy.before_get = _expire(s3_endpoint, bucket,
                               lambda k: [k, f"{base}{oldest}/data.tar.gz"] if k == info else [], gone)
    seen_gets: list[str] = []
    hook = proxy.before_get

    async def spy(key: str) -> None:
        seen_gets.append(key)
        await hook(key)
    proxy.before_get = spy
    await _scan(pool, _settings(proxy.url, catalog_dsn), "g-bm")
    assert gone, "the backup was expired after the listing"
    assert not [k for k in seen_gets if k.startswith(f"{base}20991231T000000/")], "nothing to read there"
    state = await repo.load_scan_state(pool, "g-bm")
    assert _codes(state, "not_found_race", "metadata_error") == {"not_found_race": {info}, "metadata_error": set()}
    snap = await repo.load_snapshot(pool, "g-bm")
    kept = next(b for b in snap.backups if b.label == oldest)
    assert kept == next(b for b in before.backups if b.label == oldest), "kept as the catalog knew it"
    running = next(b for b in snap.backups if b.label == "20991231T000000")
    assert running.status is BackupStatus.RUNNING and "backup.info" in (running.error or "")

    proxy.before_get = None       # a complete listing lacks the expired backup: now it goes
    await _scan(pool, _settings(proxy.url, catalog_dsn), "g-bm")
    snap = await repo.load_snapshot(pool, "g-bm")
    assert {b.label for b in snap.backups} == {b.label for b in before.backups} - {oldest} | {"20991231T000000"}
    assert not (await repo.load_scan_state(pool, "g-bm")).issues


# ----------------------------------------------------------------------------------------------------------
# 2. a duplicate WAL copy that 404s during the content comparison
# ----------------------------------------------------------------------------------------------------------

def _tamper(raw: bytes) -> bytes:
    b = bytearray(raw)
    b[5000] ^= 0xFF
    return bytes(b)


async def test_walg_duplicate_that_vanishes_during_comparison_is_a_race_not_a_conflict(
        pool: asyncpg.Pool, proxy: FaultProxy, s3_endpoint: MotoEndpoint, catalog_dsn: str) -> None:
    bucket, prefix = _bucket(s3_endpoint, "walg")
    s3 = s3_endpoint.client()
    wal = f"{prefix}/wal_005/"
    await repo.register_instance(pool, InstanceRef("g-gold", "sp", "gold"), Storage(bucket, prefix))
    await _scan(pool, _settings(s3_endpoint.url, catalog_dsn), "g-gold")
    golden = await repo.load_snapshot(pool, "g-gold")
    assert golden.edges and all(e.exact for e in golden.edges)
    # 1/05 (WAL of the newest backup on timeline 1): a different second copy (two writers); 1/06, the end of
    # timeline 1's run: an identical .zst copy
    seg5, seg6 = (f"{wal}00000001000000000000000{n}" for n in (5, 6))
    raw5, raw6 = (lz4.frame.decompress(s3.get_object(Bucket=bucket, Key=k + ".lz4")["Body"].read()) for k in (seg5, seg6))
    s3.put_object(Bucket=bucket, Key=seg5 + ".zst", Body=zstandard.ZstdCompressor().compress(_tamper(raw5)))
    s3.put_object(Bucket=bucket, Key=seg6 + ".zst", Body=zstandard.ZstdCompressor().compress(raw6))

    await repo.register_instance(pool, InstanceRef("g-dup", "sp", "dup"), Storage(bucket, prefix))
    await _scan(pool, _settings(proxy.url, catalog_dsn), "g-dup")
    snap = await repo.load_snapshot(pool, "g-dup")
    assert snap.conflicts == ((1, 5),), "control: both copies present and different is a conflict"
    with pytest.raises(PlanningError) as err:     # a time past the conflicting segment is refused
        plan_recovery(snap, make_target(point_in_time=NOW.isoformat(), timeline=1), now=NOW)
    assert err.value.code == "wal_conflict"
    blocked = _plan_latest(snap, 1)                 # latest stops before it and says so
    assert blocked.last_segment == WalSegment(1, 4).name and WalSegment(1, 5).name in blocked.warnings[0]

    # now retention/cleanup removes the odd 1/05 copy, and the *listed-first* 1/06 copy, between LIST and GET
    doomed = {seg5 + ".zst", seg6 + ".lz4"}
    gone: list[str] = []
    proxy.before_get = _expire(s3_endpoint, bucket, lambda k: [k] if k in doomed else [], gone)
    await _scan(pool, _settings(proxy.url, catalog_dsn), "g-dup")
    assert set(gone) == doomed
    state = await repo.load_scan_state(pool, "g-dup")
    assert _codes(state, "not_found_race", "wal_decode_error") == {"not_found_race": doomed,
                                                                   "wal_decode_error": set()}, state.issues
    snap = await repo.load_snapshot(pool, "g-dup")
    assert snap.conflicts == (), "a copy that 404s is no evidence of a second, different segment"
    assert snap.runs == golden.runs
    assert snap.edges == golden.edges, "the surviving copy (1/06 .zst) is the segment: the exact edge is read from it"
    plan = _plan_latest(snap, 1)
    assert plan.last_segment >= WalSegment(1, 6).name and plan == _plan_latest(golden, 1)


async def test_pgbackrest_duplicate_checksum_copy_that_vanishes_during_comparison_is_a_race(
        pool: asyncpg.Pool, proxy: FaultProxy, s3_endpoint: MotoEndpoint, catalog_dsn: str) -> None:
    bucket, prefix = _bucket(s3_endpoint, "pgbackrest")
    s3 = s3_endpoint.client()
    hdir = f"{prefix}/archive/main/15-1/0000000100000000/"
    original = next(o.key for o in load_objects(ensure_cache(), "pgbackrest")
                    if o.key.startswith(hdir + "000000010000000000000005-"))
    raw = _tamper(gzip.decompress(s3.get_object(Bucket=bucket, Key=original)["Body"].read()))
    other = f"{hdir}000000010000000000000005-{hashlib.sha1(raw).hexdigest()}.gz"     # a second writer's copy
    s3.put_object(Bucket=bucket, Key=other, Body=gzip.compress(raw))
    await repo.register_instance(pool, InstanceRef("g-pdup", "sp", "pdup"), Storage(bucket, prefix))
    await _scan(pool, _settings(proxy.url, catalog_dsn), "g-pdup")
    snap = await repo.load_snapshot(pool, "g-pdup")
    assert snap.conflicts == ((1, 5),), "control: two checksums for one segment, both present"

    gone: list[str] = []
    proxy.before_get = _expire(s3_endpoint, bucket, lambda k: [k] if k == other else [], gone)
    await _scan(pool, _settings(proxy.url, catalog_dsn), "g-pdup")
    assert gone == [other]
    state = await repo.load_scan_state(pool, "g-pdup")
    assert _codes(state, "not_found_race")["not_found_race"] == {other}, state.issues
    snap = await repo.load_snapshot(pool, "g-pdup")
    assert snap.conflicts == ()
    assert _plan_latest(snap, 1).last_segment >= WalSegment(1, 5).name


# ----------------------------------------------------------------------------------------------------------
# 3. timeline history files gone from the archive
# ----------------------------------------------------------------------------------------------------------

async def test_full_scan_forgets_a_vanished_history_and_an_incremental_scan_does_not(
        pool: asyncpg.Pool, proxy: FaultProxy, s3_endpoint: MotoEndpoint, catalog_dsn: str) -> None:
    bucket, prefix = _bucket(s3_endpoint, "walg")
    s3 = s3_endpoint.client()
    hist = f"{prefix}/wal_005/00000002.history.lz4"
    body = s3.get_object(Bucket=bucket, Key=hist)["Body"].read()
    st = _settings(proxy.url, catalog_dsn)
    await repo.register_instance(pool, InstanceRef("g-tl", "sp", "tl"), Storage(bucket, prefix))
    await _scan(pool, st, "g-tl")
    golden = await repo.load_snapshot(pool, "g-tl")
    assert set(golden.histories) == {2} and _plan_latest(golden).timeline_path == (1, 2)

    s3.delete_object(Bucket=bucket, Key=hist)
    await _scan(pool, st, "g-tl", full=False)
    assert (await repo.load_snapshot(pool, "g-tl")).histories == golden.histories, \
        "an incremental scan did not see a complete listing: it deletes nothing"

    await _scan(pool, st, "g-tl", full=True)
    snap = await repo.load_snapshot(pool, "g-tl")
    assert snap.histories == {}, "the catalog is a cache of the bucket: a full reconcile forgets the history"
    state = await repo.load_scan_state(pool, "g-tl")
    assert _codes(state, "missing_history")["missing_history"] == {f"{prefix}/wal_005/00000002.history"}
    with pytest.raises(PlanningError):          # timeline 2's path cannot be followed without its history
        _plan_latest(snap, 2)

    s3.put_object(Bucket=bucket, Key=hist, Body=body)
    await _scan(pool, st, "g-tl", full=True)
    assert (await repo.load_snapshot(pool, "g-tl")).histories == golden.histories
    # listed by the full scan, then expired before its GET: a race, not a complete listing lacking it
    gone: list[str] = []
    proxy.before_get = _expire(s3_endpoint, bucket, lambda k: [k] if k == hist else [], gone)
    await _scan(pool, st, "g-tl", full=True)
    assert gone == [hist]
    assert _codes(await repo.load_scan_state(pool, "g-tl"), "not_found_race")["not_found_race"] == {hist}
    assert (await repo.load_snapshot(pool, "g-tl")).histories == golden.histories
    proxy.before_get = None
    await _scan(pool, st, "g-tl", full=True)
    assert (await repo.load_snapshot(pool, "g-tl")).histories == {}
