"""The ``relation_maps`` / ``relation_map_entries`` tables: relation names seen by passed drills (issue 20).

Written once per passed drill (one transaction: every database of its clone); read by ``changes`` to name
relation file numbers (:class:`recovery.relnames.RelationNames`). Rows go with their drill's row.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, TypeAlias

from recovery.relnames import RelationEntry, RelationMap, RelationNames

Db: TypeAlias = Any     # asyncpg.Pool | asyncpg.Connection (asyncpg ships no types)


async def save(pool: Db, guid: str, drill_id: int, maps: Sequence[RelationMap]) -> int:
    """Store the maps of one drill (replacing an earlier save of the same drill); returns entries stored."""
    stored = 0
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("DELETE FROM relation_maps WHERE drill_id = $1", drill_id)
        for m in maps:
            map_id = await conn.fetchval(
                "INSERT INTO relation_maps (instance_guid, drill_id, database_oid, database_name, as_of) "
                "VALUES ($1, $2, $3, $4, $5) RETURNING id", guid, drill_id, m.database_oid, m.database_name, m.as_of)
            await conn.copy_records_to_table(
                "relation_map_entries", columns=["map_id", "relfilenode", "rel_oid", "schema_name", "rel_name", "kind"],
                records=[(map_id, e.relfilenode, e.oid, e.schema, e.name, e.kind) for e in m.entries])
            stored += len(m.entries)
    return stored


async def names_for(db: Db, guid: str, wanted: Iterable[tuple[int, int]], until: datetime) -> RelationNames:
    """The maps of ``guid`` taken as of ``until`` or before, limited to the (database OID, relfilenode)
    pairs ``wanted`` (what a ``changes`` answer needs to name)."""
    by_db: dict[int, set[int]] = {}
    for dbo, node in wanted:
        by_db.setdefault(dbo, set()).add(node)
    maps: list[RelationMap] = []
    for dbo, nodes in sorted(by_db.items()):
        rows = await db.fetch(
            "SELECT m.id, m.database_name, m.as_of, e.relfilenode, e.rel_oid, e.schema_name, e.rel_name, e.kind "
            "FROM relation_maps m JOIN relation_map_entries e ON e.map_id = m.id "
            "WHERE m.instance_guid = $1 AND m.database_oid = $2 AND m.as_of <= $3 AND e.relfilenode = ANY($4) "
            "ORDER BY m.as_of DESC, m.id", guid, dbo, until, sorted(nodes))
        grouped: dict[int, tuple[Any, list[RelationEntry]]] = {}
        for r in rows:
            grouped.setdefault(r["id"], (r, []))[1].append(
                RelationEntry(r["relfilenode"], r["rel_oid"], r["schema_name"], r["rel_name"], r["kind"]))
        maps += [RelationMap(dbo, head["database_name"], head["as_of"], tuple(entries))
                 for head, entries in grouped.values()]
    return RelationNames.of(maps)


async def count_maps(db: Db, guid: str) -> int:
    return int(await db.fetchval("SELECT count(*) FROM relation_maps WHERE instance_guid = $1", guid))
