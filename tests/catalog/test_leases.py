"""Leases with fencing tokens and the scheduled-run log."""
from __future__ import annotations

import asyncio

import pytest

from catalog import repo
from tests.catalog.factories import t

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_two_holders_one_wins(pool) -> None:
    tok = await repo.try_acquire_lease(pool, "scan:x", "a", 30)
    assert tok == 1
    assert await repo.try_acquire_lease(pool, "scan:x", "b", 30) is None
    assert await repo.try_acquire_lease(pool, "scan:x", "a", 30) == 1       # renewal keeps the token
    assert await repo.try_acquire_lease(pool, "scan:y", "b", 30) == 1       # per key


async def test_expiry_allows_takeover_with_higher_token(pool) -> None:
    assert await repo.try_acquire_lease(pool, "k", "a", 0.1) == 1
    await asyncio.sleep(0.2)
    assert await repo.try_acquire_lease(pool, "k", "b", 30) == 2
    assert await repo.check_lease(pool, "k", 1) is False
    assert await repo.check_lease(pool, "k", 2) is True
    assert await repo.release_lease(pool, "k", "a", 1) is False            # stale holder cannot release
    assert await repo.release_lease(pool, "k", "b", 2) is True
    assert await repo.check_lease(pool, "k", 2) is False
    assert await repo.try_acquire_lease(pool, "k", "a", 30) == 3           # tokens never go back
    assert await repo.try_acquire_lease(pool, "k", "a", 30) == 3


async def test_concurrent_acquire_exactly_one(pool) -> None:
    got = await asyncio.gather(*(repo.try_acquire_lease(pool, "race", f"h{i}", 30) for i in range(8)))
    assert sorted(g for g in got if g is not None) == [1]
    assert await pool.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") == 0


async def test_run_log_rejects_duplicate_slots(pool) -> None:
    assert await repo.record_run(pool, "scan", t(0), "i1", "a", "started") is True
    assert await repo.record_run(pool, "scan", t(0), "i1", "b", "started") is False
    assert await repo.record_run(pool, "scan", t(0), "i2", "b", "started") is True
    assert await repo.record_run(pool, "sweep", t(0), None, "b", "started") is True
    assert await repo.record_run(pool, "sweep", t(0), None, "a", "started") is False
    assert await repo.finish_run(pool, "scan", t(0), "i1", "ok") is True
    assert await repo.finish_run(pool, "scan", t(1), "i1", "ok") is False
    row = await pool.fetchrow("SELECT holder, outcome, finished_at FROM scan_runs WHERE instance_guid = 'i1'")
    assert row["holder"] == "a" and row["outcome"] == "ok" and row["finished_at"] is not None
    assert (await repo.table_counts(pool))["scan_runs"] == 3


async def test_many_leases_at_once_as_one_by_one(pool) -> None:
    assert await repo.try_acquire_lease(pool, "scan:b", "other", 30) == 1
    got = await repo.try_acquire_leases(pool, ["scan:c", "scan:a", "scan:b", "scan:a"], "me", 30)
    assert got == {"scan:a": 1, "scan:c": 1}                                  # b is another holder's
    assert await repo.try_acquire_leases(pool, ["scan:a"], "me", 30) == {"scan:a": 1}     # renewal keeps it
    from catalog.leases import check_leases
    assert await check_leases(pool, {"scan:a": 1, "scan:b": 1, "scan:c": 2}) == {"scan:a", "scan:b"}
    assert await repo.release_leases(pool, "me", {"scan:a": 1, "scan:b": 1, "scan:c": 1}) == 2   # b is not mine
    assert await repo.check_lease(pool, "scan:a", 1) is False and await repo.check_lease(pool, "scan:b", 1)
    assert await repo.try_acquire_leases(pool, ["scan:a", "scan:b"], "you", 30) == {"scan:a": 2}
    assert await repo.try_acquire_leases(pool, [], "you", 30) == {}


async def test_renewal_extends_only_leases_still_held(pool) -> None:
    got = await repo.try_acquire_leases(pool, ["scan:r1", "scan:r2"], "me", 0.3)
    assert await repo.renew_leases(pool, "me", {"scan:r1": got["scan:r1"]}, 30) == {"scan:r1"}
    await asyncio.sleep(0.4)
    assert await repo.check_lease(pool, "scan:r1", got["scan:r1"]) is True        # renewed
    assert await repo.renew_leases(pool, "me", got, 30) == {"scan:r1"}           # r2 expired: not taken again
    assert await repo.check_lease(pool, "scan:r2", got["scan:r2"]) is False
