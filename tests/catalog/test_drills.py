"""The drills table on a real catalog: one running drill per instance, one-UPDATE finish, reaping of
drills whose process died (lease expired), bounded history."""
from __future__ import annotations

import asyncio

import asyncpg
import pytest

from catalog import drills, leases, repo
from catalog.errors import Conflict
from recovery.model import InstanceRef, Storage


async def _instance(pool: asyncpg.Pool, guid: str = "g1") -> str:
    await repo.register_instance(pool, InstanceRef(guid, "space", f"name-{guid}"), Storage("b", "p"))
    return guid


async def test_running_row_then_finished_in_one_update(pool: asyncpg.Pool) -> None:
    g = await _instance(pool)
    i = await drills.create(pool, g, trigger="manual", holder="h", target={"kind": "latest"}, state="running")
    row = await drills.get(pool, i)
    assert row is not None and row.state == "running" and row.started_at is not None and row.finished_at is None
    result = drills.DrillResult("failed", target={"kind": "latest", "value": None}, backup_label="B1", stage="verify",
                                reason="verify: checksum mismatch in segment S", segment="S", reached_lsn="0/5000028",
                                fetch_s=1.5, replay_s=2.0, duration_s=4.0, bytes_fetched=123,
                                postgres_log=["LOG:  redo done at 0/5000028"])
    assert await drills.finish(pool, i, result)
    row = await drills.get(pool, i)
    assert row is not None
    assert (row.state, row.stage, row.segment, str(row.reached_lsn), row.bytes_fetched, row.postgres_log) == \
        ("failed", "verify", "S", "0/5000028", 123, ("LOG:  redo done at 0/5000028",))
    assert row.finished_at is not None and row.target == {"kind": "latest", "value": None}
    assert not await drills.finish(pool, i, drills.DrillResult("passed"))    # finished once, never rewritten
    assert (await drills.get(pool, i)).state == "failed"  # type: ignore[union-attr]


async def test_one_running_drill_per_instance(pool: asyncpg.Pool) -> None:
    g = await _instance(pool)
    await drills.create(pool, g, trigger="manual", holder="h", target=None, state="running")
    with pytest.raises(Conflict, match="already running"):
        await drills.create(pool, g, trigger="manual", holder="h2", target=None, state="running")
    with pytest.raises(Conflict, match="already running"):
        await drills.create(pool, g, trigger="api", holder="h", target=None, state="queued")
    other = await _instance(pool, "g2")
    await drills.create(pool, other, trigger="manual", holder="h", target=None, state="running")


async def test_start_only_a_queued_row(pool: asyncpg.Pool) -> None:
    g = await _instance(pool)
    q = await drills.create(pool, g, trigger="api", holder="h", target=None, state="queued")
    row = await drills.start(pool, q)
    assert row.state == "running" and row.holder == "h"
    with pytest.raises(Conflict, match="not queued"):
        await drills.start(pool, q)
    with pytest.raises(Conflict, match="not queued"):
        await drills.start(pool, 99999)


async def test_reap_only_drills_whose_holder_lost_its_lease(pool: asyncpg.Pool) -> None:
    g1, g2 = await _instance(pool, "g1"), await _instance(pool, "g2")
    assert await leases.try_acquire_lease(pool, drills.lease_key(g1), "alive", 60) is not None
    assert await leases.try_acquire_lease(pool, drills.lease_key(g2), "dead", 0.2) is not None
    alive = await drills.create(pool, g1, trigger="scheduled", holder="alive", target=None, state="running")
    dead = await drills.create(pool, g2, trigger="scheduled", holder="dead", target=None, state="running")
    await asyncio.sleep(0.4)
    assert await drills.reap_abandoned(pool) == [dead]
    row = await drills.get(pool, dead)
    assert row is not None and row.state == "failed" and row.stage == "abandoned" and "dead" in (row.reason or "")
    assert (await drills.get(pool, alive)).state == "running"  # type: ignore[union-attr]
    # the reaped instance can be drilled again
    await drills.create(pool, g2, trigger="scheduled", holder="next", target=None, state="running")


async def test_history_is_bounded_and_never_prunes_active_rows(pool: asyncpg.Pool) -> None:
    g = await _instance(pool)
    ids = []
    for _ in range(6):
        i = await drills.create(pool, g, trigger="manual", holder="h", target=None, state="running")
        await drills.finish(pool, i, drills.DrillResult("passed"))
        ids.append(i)
    running = await drills.create(pool, g, trigger="manual", holder="h", target=None, state="running")
    assert await drills.prune(pool, g, 3) == 3
    assert [r.id for r in await drills.history(pool, g)] == [running, *reversed(ids[-3:])]
    active, upto = await drills.active_ids(pool)
    assert active == {running} and upto == running
