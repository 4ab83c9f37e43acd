"""Starting drills on a real catalog (no restore): one active drill per instance, also within one replica."""
from __future__ import annotations

import asyncpg
import pytest

from backup_catalog.settings import Settings
from backup_catalog.usecases import drill as uc
from catalog import drills, repo
from catalog.errors import UnknownInstance
from recovery.model import InstanceRef, Storage


async def test_a_second_request_in_the_same_replica_leaves_the_first_drill_alone(pool: asyncpg.Pool) -> None:
    await repo.register_instance(pool, InstanceRef("g1", "s", "n"), Storage("b", "p"))
    settings = Settings(drill_lease_ttl_seconds=30)
    first, lease = await uc.begin(pool, settings, "g1", point=uc.LATEST, trigger="api", holder="replica-1",
                                  state="queued")
    try:
        with pytest.raises(uc.DrillBusy):
            await uc.begin(pool, settings, "g1", point=uc.LATEST, trigger="api", holder="replica-1", state="queued")
        # the first drill's lease is still held: nothing to reap, its row stays queued
        assert await drills.reap_abandoned(pool, "g1") == []
        row = await drills.get(pool, first)
        assert row is not None and row.state == "queued" and (row.holder or "").startswith("replica-1#")
        assert row.target == {"kind": "latest", "value": None, "timeline": "latest",
                              "why": "the newest window's end"}
    finally:
        await lease.release()
    # its holder gone (lease released without finishing): the next drill reaps it and starts
    second, lease2 = await uc.begin(pool, settings, "g1", point=uc.LATEST, trigger="api", holder="replica-2",
                                    state="running")
    await lease2.release()
    reaped = await drills.get(pool, first)
    assert reaped is not None and reaped.state == "failed" and reaped.stage == "abandoned"
    assert (await drills.get(pool, second)).state == "running"  # type: ignore[union-attr]


async def test_unknown_instance_is_refused_before_anything_is_written(pool: asyncpg.Pool) -> None:
    with pytest.raises(UnknownInstance):
        await uc.begin(pool, Settings(), "nope", point=uc.LATEST, trigger="api", holder="r", state="queued")
    assert await pool.fetchval("SELECT count(*) FROM drills") == 0
    assert await pool.fetchval("SELECT count(*) FROM scan_leases") == 0
