"""The WAL index job on the real pgBackRest and barman-cloud archives (PostgreSQL 15, the fork scenario): every
catalogued segment is read once, under the scan lease, within the budget, resumable; the summaries hold the
commits the builder recorded; a before-xid target resolves from them to the commit record's LSN and time."""
from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from backup_catalog.usecases import walindex as job
from backup_catalog.usecases.restore import plan_clone
from catalog import repo, walindex
from recovery.errors import PlanningError
from recovery.wal import DEFAULT_SEG_SIZE
from scheduler.clients import s3_client
from tests.support.clones import clone_request
from tests.support.fixtures import commits, make_settings, register_and_scan

pytestmark = [pytest.mark.realtools, pytest.mark.asyncio(loop_scope="session")]
TOOLS = ("pgbackrest", "barman")


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def env(_catalog_pool: asyncpg.Pool, real_archives: Any, s3_endpoint: Any,
              catalog_dsn: str) -> AsyncIterator[dict[str, Any]]:
    settings = make_settings(s3_endpoint, catalog_dsn)
    run = uuid.uuid4().hex[:8]
    async with s3_client(settings) as client:
        out: dict[str, Any] = {"settings": settings, "client": client, "space": f"wi-{run}"}
        for tool in TOOLS:
            guid = f"wi-{tool}-{run}"
            await register_and_scan(_catalog_pool, client, settings, real_archives[tool], guid, space=out["space"],
                                    name=f"prod-{tool}")
            out[tool] = guid
        yield out


@pytest.mark.parametrize("tool", TOOLS)
async def test_index_reads_each_segment_once_within_budget(env: dict[str, Any], _catalog_pool: asyncpg.Pool,
                                                           real_archives: Any, tool: str) -> None:
    pool, guid = _catalog_pool, env[tool]
    present = sum(r.count for r in (await walindex.index_state(pool, guid)).runs)
    assert present > 4
    clock = Clock()
    budget = job.Budget(24 * DEFAULT_SEG_SIZE, clock=clock, burst_seconds=300)   # 2 segments per 5 minutes
    first = await job.run_once(pool, env["settings"], env["client"], "me", budget, guids=[guid])
    assert [o.indexed for o in first] == [2] and first[0].lag == present - 2
    with pytest.raises(PlanningError) as e:     # a restore point may be in WAL not indexed yet: said
        await plan_clone(pool, env["settings"], env["space"],
                         clone_request({"clone-from": f"prod-{tool}", "restore-point": "x"}))
    assert e.value.code == "restore_point_unknown" and e.value.details["unindexed_segments"] == present - 2
    assert f"{present - 2} archived segment(s) are not indexed yet" in e.value.message
    # the lease of a running scan: not touched this tick
    token = await repo.try_acquire_lease(pool, f"scan:{guid}", "scanner", 60)
    clock.t += 300
    held = await job.run_once(pool, env["settings"], env["client"], "me", budget, guids=[guid])
    assert held[0].skipped == "lease_held" and held[0].indexed == 0
    assert token is not None and await repo.release_lease(pool, f"scan:{guid}", "scanner", token)
    # budget exhausted until the clock refills it; then the rest, never a segment twice
    assert (await job.run_once(pool, env["settings"], env["client"], "me", budget, guids=[guid]))[0].indexed == 2
    assert (await job.run_once(pool, env["settings"], env["client"], "me", budget, guids=[guid]))[0].skipped == "budget"
    rest = job.Budget(1 << 40)
    o = (await job.run_once(pool, env["settings"], env["client"], "me", rest, guids=[guid]))[0]
    assert o.indexed == present - 4 and o.lag == 0 and not o.problems, o.problems
    assert await job.run_once(pool, env["settings"], env["client"], "me", rest, guids=[guid]) == []   # up to date
    n = await pool.fetchval("SELECT count(*) FROM wal_segment_summaries WHERE instance_guid = $1", guid)
    assert n == present
    # every commit the builder recorded lies in the commit-time span of an indexed segment of its timeline
    rows = await pool.fetch("SELECT timeline, first_commit_time, last_commit_time FROM wal_segment_summaries "
                            "WHERE instance_guid = $1 AND commits > 0", guid)
    for c in commits(real_archives[tool]).values():
        assert any(r["timeline"] >= c.tl and r["first_commit_time"] <= c.time <= r["last_commit_time"] for r in rows), c


@pytest.mark.parametrize("tool", TOOLS)
async def test_before_xid_resolves_from_the_index(env: dict[str, Any], _catalog_pool: asyncpg.Pool,
                                                  real_archives: Any, tool: str) -> None:
    pool, guid = _catalog_pool, env[tool]
    await job.run_once(pool, env["settings"], env["client"], "me", job.Budget(1 << 40), guids=[guid])
    # the ticks rows: one commit each; take the one of commit 8 (TL1, before the fork, after B2)
    c8 = commits(real_archives[tool])[8]
    row = await pool.fetchrow(
        "SELECT segno, min_xid, max_xid, first_commit_time, last_commit_time FROM wal_segment_summaries "
        "WHERE instance_guid = $1 AND timeline = 1 AND first_commit_time <= $2 AND last_commit_time >= $2",
        guid, c8.time)
    assert row is not None
    body = {"clone-from": f"prod-{tool}", "timeline": 1}
    # find the xid of commit 8 by trying the segment's xid range (the index gives the range, WAL the rest)
    found = None
    for xid in range(row["min_xid"], row["max_xid"] + 1):
        try:
            doc = (await plan_clone(pool, env["settings"], env["space"],
                                    clone_request({**body, "before-xid": xid}))).to_json()
        except PlanningError as e:
            assert e.code == "xid_not_found", e
            continue
        if doc["target"]["commit_time"] == c8.time.isoformat().replace("+00:00", "Z"):
            found = doc
            break
    assert found is not None, "no xid of the segment resolved to commit 8"
    t = found["target"]
    assert t["kind"] == "xid" and t["inclusive"] is False and t["record_timeline"] == 1
    assert f"recovery_target_xid = '{t['value']}'" in found["files"]["postgresql.auto.conf"]
    assert found["replay"]["stop"] == {"kind": "before_xid", "xid": t["value"], "lsn": t["lsn"],
                                       "time": t["commit_time"]}
    assert found["backup"]["label"] == real_archives[tool].truth["scenario_backups"]["B2"]
    with pytest.raises(PlanningError) as e:
        await plan_clone(pool, env["settings"], env["space"], clone_request({**body, "before-xid": 4_000_000_000}))
    assert e.value.code == "xid_not_found" and e.value.details["nearest"]
    with pytest.raises(PlanningError) as e:
        await plan_clone(pool, env["settings"], env["space"], clone_request({**body, "restore-point": "never-made"}))
    assert e.value.code == "restore_point_unknown"
