"""The scheduled scan job against real pgBackRest archives in moto, and multi-replica exclusivity."""
from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from backup_catalog.service import jobs
from backup_catalog.settings import Settings
from backup_catalog.usecases import scan as scans
from catalog import repo
from recovery.model import InstanceRef, Storage
from sandbox.s3 import MotoEndpoint
from scheduler.clients import s3_client
from tests.realarchives.plugin import fresh_bucket
from tests.support.fixtures import make_settings

INTERVAL = 60


def settings_for(ep: MotoEndpoint, **kw: Any) -> Settings:
    base: dict[str, Any] = dict(scan_interval_seconds=INTERVAL, full_scan_every=3, scan_deadline_seconds=60)
    return make_settings(ep, **(base | kw))


@pytest.fixture(scope="module")
def buckets(s3_endpoint: MotoEndpoint, real_archives: Any) -> list[tuple[str, str]]:
    return [fresh_bucket(s3_endpoint, "pgbackrest") for _ in range(3)]


@pytest_asyncio.fixture
async def fleet(pool: asyncpg.Pool, buckets: list[tuple[str, str]]) -> list[str]:
    """Three instances on real archives and one on a bucket that does not exist."""
    guids = []
    for i, (bucket, prefix) in enumerate(buckets):
        guid = f"inst-{i}"
        await repo.register_instance(pool, InstanceRef(guid, "space", f"db-{i}"),
                                     Storage(bucket, prefix, "auto", "main"))
        guids.append(guid)
    await repo.register_instance(pool, InstanceRef("broken", "space", "broken"),
                                 Storage("no-such-bucket", "pgbackrest", "auto", "main"))
    return guids


@pytest_asyncio.fixture
async def s3(s3_endpoint: MotoEndpoint) -> AsyncIterator[Any]:
    async with s3_client(settings_for(s3_endpoint)) as client:
        yield client


async def advisory_locks(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"))


async def test_run_once_scans_every_instance_and_isolates_failures(pool: asyncpg.Pool, s3: Any, fleet: list[str],
                                                                   s3_endpoint: MotoEndpoint) -> None:
    seen: list[str] = []
    outcomes = await scans.run_once(pool, settings_for(s3_endpoint), s3, "r1",
                                   on_done=lambda o: seen.append(o.instance_guid))
    by = {o.instance_guid: o for o in outcomes}
    assert sorted(seen) == sorted(by) == sorted([*fleet, "broken"])
    for g in fleet:
        assert by[g].ok and by[g].backups == 3, by[g]
        assert len(await repo.backups(pool, g)) == 3
    assert not by["broken"].ok and by["broken"].code
    state = await repo.load_scan_state(pool, "broken")
    assert state.last_error_code == by["broken"].code and state.stale_since is not None
    runs = await pool.fetch("SELECT instance_guid, outcome, finished_at FROM scan_runs ORDER BY instance_guid")
    assert {r["instance_guid"]: r["outcome"] for r in runs} == {**dict.fromkeys(fleet, "ok"),
                                                                "broken": by["broken"].code}
    assert all(r["finished_at"] is not None for r in runs)
    live = await pool.fetchval("SELECT count(*) FROM scan_leases WHERE expires_at > clock_timestamp()")
    assert live == 0                       # every lease released
    assert await advisory_locks(pool) == 0


async def test_deleted_instances_are_not_scanned(pool: asyncpg.Pool, s3: Any, fleet: list[str],
                                                 s3_endpoint: MotoEndpoint) -> None:
    await repo.delete_instance(pool, fleet[0])
    outcomes = await scans.run_once(pool, settings_for(s3_endpoint), s3, "r1")
    assert fleet[0] not in {o.instance_guid for o in outcomes}


async def test_first_run_is_full_then_incremental(pool: asyncpg.Pool, s3: Any, fleet: list[str],
                                                  s3_endpoint: MotoEndpoint) -> None:
    settings = settings_for(s3_endpoint)
    g = fleet[0]
    t0 = datetime.now(timezone.utc)
    o1, full1 = await scans.scan_with_lease(pool, settings, s3, g, "r1", job=scans.SCHEDULED,
                                           slot=scans.slot_for(t0, INTERVAL))
    first_full = (await repo.load_scan_state(pool, g)).last_full_scan
    o2, full2 = await scans.scan_with_lease(pool, settings, s3, g, "r1", job=scans.SCHEDULED,
                                           slot=scans.slot_for(t0, INTERVAL) + timedelta(seconds=INTERVAL))
    assert o1.ok and o2.ok and (full1, full2) == (True, False)
    assert first_full is not None and (await repo.load_scan_state(pool, g)).last_full_scan == first_full
    assert len(await repo.backups(pool, g)) == 3


@pytest.mark.parametrize("minutes_since_full, due", [(None, True), (0, False), (1, False), (2, False),
                                                    (2.5, True), (3, True), (30, True)])
def test_full_due_every_third_interval(minutes_since_full: float | None, due: bool) -> None:
    from catalog.rows import ScanState
    settings = Settings(scan_interval_seconds=INTERVAL, full_scan_every=3)
    now = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
    last = None if minutes_since_full is None else now - timedelta(minutes=minutes_since_full)
    assert scans.full_due(ScanState("g", last_full_scan=last), now, settings) is due


async def test_two_replicas_same_slots_each_instance_once(pool: asyncpg.Pool, s3: Any, fleet: list[str],
                                                          s3_endpoint: MotoEndpoint) -> None:
    settings = settings_for(s3_endpoint)
    t0 = datetime.now(timezone.utc)
    rounds = 3
    for k in range(rounds):
        now = t0 + timedelta(seconds=k * INTERVAL)
        r1, r2 = await asyncio.gather(scans.run_once(pool, settings, s3, "r1", now=now),
                                      scans.run_once(pool, settings, s3, "r2", now=now))
        ran = Counter(o.instance_guid for o in [*r1, *r2] if o.code not in scans.SKIPPED)
        assert ran == Counter(dict.fromkeys([*fleet, "broken"], 1)), (r1, r2)
    await assert_run_log_sound(pool, expected_slots=rounds, instances=len(fleet) + 1)
    for g in fleet:       # no lost rows: every instance holds the full archive
        assert len(await repo.backups(pool, g)) == 3
        assert await repo.wal_runs(pool, g) == await repo.wal_runs(pool, fleet[0])


async def test_two_replicas_different_slots_never_overlap(pool: asyncpg.Pool, s3: Any, fleet: list[str],
                                                          s3_endpoint: MotoEndpoint) -> None:
    settings = settings_for(s3_endpoint)
    t0 = datetime.now(timezone.utc)
    for k in range(3):   # replica 2's clock is one slot ahead: both want every instance at once
        a = t0 + timedelta(seconds=2 * k * INTERVAL)
        await asyncio.gather(scans.run_once(pool, settings, s3, "r1", now=a),
                             scans.run_once(pool, settings, s3, "r2", now=a + timedelta(seconds=INTERVAL)))
    await assert_run_log_sound(pool, expected_slots=6, instances=len(fleet) + 1)


async def assert_run_log_sound(pool: asyncpg.Pool, *, expected_slots: int, instances: int) -> None:
    rows = await pool.fetch("SELECT job, scheduled_for, instance_guid, holder, started_at, finished_at, outcome "
                            "FROM scan_runs ORDER BY instance_guid, started_at")
    keys = [(r["job"], r["scheduled_for"], r["instance_guid"]) for r in rows]
    assert len(keys) == len(set(keys)) == expected_slots * instances      # every slot once per instance
    assert all(r["finished_at"] is not None and r["outcome"] != "running" for r in rows)
    assert all(r["outcome"] in ("ok", "skipped:lease_held") or r["instance_guid"] == "broken" for r in rows)
    scanned: dict[str, list[asyncpg.Record]] = {}
    for r in rows:
        if not r["outcome"].startswith("skipped"):
            scanned.setdefault(r["instance_guid"], []).append(r)
    for guid, runs in scanned.items():      # one scan of an instance at a time
        for prev, nxt in itertools.pairwise(runs):
            assert prev["finished_at"] <= nxt["started_at"] or prev["holder"] == nxt["holder"], (guid, prev, nxt)
    assert await advisory_locks(pool) == 0
    assert await pool.fetchval("SELECT count(*) FROM scan_leases WHERE expires_at > clock_timestamp()") == 0


async def test_two_apscheduler_replicas(pool: asyncpg.Pool, s3: Any, fleet: list[str],
                                        s3_endpoint: MotoEndpoint) -> None:
    settings = settings_for(s3_endpoint, scan_interval_seconds=1)
    outcomes: list[Any] = []

    def replica(holder: str) -> Any:
        async def tick() -> None:
            outcomes.extend(await scans.run_once(pool, settings, s3, holder))
        return jobs.make_scheduler(tick, settings)

    scheds = [replica("r1"), replica("r2")]
    for s in scheds:
        s.start()
    job = scheds[0].get_job(jobs.JOB_ID)
    assert job.max_instances == 1 and job.coalesce is True
    # both replicas tick every second; run until two slots were taken and every instance scanned once
    # (4.5 s on a quiet machine; a loaded one takes longer)
    deadline = time.monotonic() + 60
    await asyncio.sleep(4.5)
    while time.monotonic() < deadline and not (
            sum(1 for o in outcomes if o.ok) >= len(fleet)
            and await pool.fetchval("SELECT count(DISTINCT scheduled_for) FROM scan_runs") >= 2):
        await asyncio.sleep(0.2)
    for s in scheds:
        s.shutdown(wait=False)
    await asyncio.sleep(0)
    # let in-flight ticks end (shutdown cancels them; cancelled runs are recorded as such)
    for _ in range(100):
        if not await pool.fetchval("SELECT count(*) FROM scan_runs WHERE finished_at IS NULL"):
            break
        await asyncio.sleep(0.1)
    rows = await pool.fetch("SELECT scheduled_for, instance_guid, outcome, finished_at FROM scan_runs")
    keys = [(r["scheduled_for"], r["instance_guid"]) for r in rows]
    assert len(keys) == len(set(keys)) and len({k[0] for k in keys}) >= 2, rows
    assert all(r["finished_at"] is not None for r in rows)
    assert sum(1 for o in outcomes if o.ok) >= len(fleet)
    assert await advisory_locks(pool) == 0


@pytest.mark.parametrize("kw, added", [({}, True), ({"wal_index_enabled": False}, False),
                                        ({"wal_index_bytes_per_hour": 0}, False)])
async def test_the_wal_index_job_follows_its_settings(kw: dict[str, Any], added: bool) -> None:
    from apscheduler.schedulers.asyncio import AsyncIOScheduler
    sched = AsyncIOScheduler(timezone=timezone.utc)
    settings = make_settings(wal_index_interval_seconds=30, **kw)
    assert jobs.add_wal_index(sched, None, settings, None, "me") is added  # type: ignore[arg-type]
    job = sched.get_job(jobs.WAL_INDEX_JOB_ID)
    assert (job is not None) is added
    if job is not None:
        assert job.max_instances == 1 and job.coalesce and job.trigger.interval == timedelta(seconds=30)
