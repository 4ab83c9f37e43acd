"""Relation maps on a real catalog: saved per drill and database, read back for naming, gone with the drill."""
from __future__ import annotations

from datetime import UTC, datetime

import asyncpg

from catalog import drills, relmaps, repo
from recovery.model import InstanceRef, Storage
from recovery.relnames import RelationEntry, RelationMap

T = [datetime(2026, 1, 1, h, tzinfo=UTC) for h in range(24)]


async def _drill(pool: asyncpg.Pool, guid: str) -> int:
    i = await drills.create(pool, guid, trigger="manual", holder="h", target=None, state="running")
    assert await drills.finish(pool, i, drills.DrillResult("passed"))
    return i


async def test_saved_maps_name_files_as_of_a_time(pool: asyncpg.Pool) -> None:
    g = "rel-g1"
    await repo.register_instance(pool, InstanceRef(g, "space", "n"), Storage("b", "p"))
    first, second = await _drill(pool, g), await _drill(pool, g)
    orders = RelationEntry(16384, 16384, "public", "orders", "r")
    assert await relmaps.save(pool, g, first, [
        RelationMap(5, "postgres", T[8], (orders, RelationEntry(16389, 16389, "public", "orders_pkey", "i"))),
        RelationMap(16400, "app", T[8], (RelationEntry(16384, 16500, "sales", "other", "r"),))]) == 3
    await relmaps.save(pool, g, second, [RelationMap(5, "postgres", T[11], (RelationEntry(16384, 16384, "public",
                                                                                          "renamed", "r"),))])
    names = await relmaps.names_for(pool, g, [(5, 16384), (5, 16389), (16400, 16384)], T[12])
    hit = names.lookup(5, 16384, T[10])
    assert hit is not None and hit.qualified == "public.orders"
    assert names.lookup(5, 16384, T[12]).qualified == "public.renamed"  # type: ignore[union-attr]
    assert names.lookup(5, 16389, T[12]).qualified == "public.orders_pkey"  # type: ignore[union-attr]
    assert names.lookup(16400, 16384, T[9]).qualified == "sales.other"  # type: ignore[union-attr]
    assert names.lookup(5, 16384, T[7]) is None and names.databases() == {5: "postgres", 16400: "app"}
    early = await relmaps.names_for(pool, g, [(5, 16384)], T[9])
    assert early.lookup(5, 16384, T[23]).qualified == "public.orders"  # type: ignore[union-attr]
    await relmaps.save(pool, g, first, [RelationMap(5, "postgres", T[8], (orders,))])  # a save replaces
    assert await relmaps.count_maps(pool, g) == 2
    await pool.execute("DELETE FROM drills WHERE id = $1", first)  # drills' history pruned: its maps go too
    assert await relmaps.count_maps(pool, g) == 1
