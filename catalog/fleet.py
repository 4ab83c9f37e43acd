"""The fleet pass's SQL: one statement for every instance (name, scan state, stored coverage facts, last
drill), what /metrics adds to it, the lists a page shows, and a server-side cursor over the whole fleet.
The coverage use case (:mod:`backup_catalog.usecases.coverage`) grades what these return."""
from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from catalog import scancache
from recovery.model import Layout

_FACTS = ", ".join(f"f.{c}" for c in scancache.FACT_COLUMNS
                   if c not in ("windows", "holes", "hole_after_newest", "corrupt"))


_LAYOUTS = ", ".join(f"'{m.value}'" for m in Layout)    # the Layout enum's values (constants, not input)


FLEET_SQL = f"""
SELECT i.instance_guid, coalesce(n.name, '') AS name, i.space_guid, i.org_guid, i.deleted_at, i.hold_at,
       i.purged_at,
       coalesce(i.detected_layout, CASE WHEN i.layout IN ({_LAYOUTS}) THEN i.layout END) AS layout,
       s.last_scan, s.stale_since, s.last_error_code IS NOT NULL AS failing,
       greatest(s.last_scan, s.last_event) AS fresh_as_of,
       (nullif(s.last_error, '') IS NOT NULL)::int + coalesce(e.n, 0) AS errors_n,
       coalesce(nullif(s.last_error, ''), e.first) AS errors_first,
       f.instance_guid IS NOT NULL AS has_facts, {_FACTS}, f.hole_after_newest::text AS hole_after_newest,
       f.corrupt::text AS corrupt,
       d.id AS drill_id, d.finished_at AS drill_at, d.state AS drill_state, d.reason AS drill_reason,
       d.target::text AS drill_target, d.duration_s AS drill_duration_s
       {{extra}}
FROM instances i
LEFT JOIN (SELECT DISTINCT ON (instance_guid) instance_guid, name FROM instance_names
           ORDER BY instance_guid, valid_from DESC) n ON n.instance_guid = i.instance_guid
LEFT JOIN scan_state s ON s.instance_guid = i.instance_guid
LEFT JOIN LATERAL (SELECT count(*) AS n, (array_agg(x.e->>'message' ORDER BY x.o))[1] AS first
                   FROM jsonb_array_elements(s.issues) WITH ORDINALITY AS x(e, o)
                   WHERE x.e->>'code' IS DISTINCT FROM 'foreign_object') e ON true
LEFT JOIN scan_cache_facts f ON {scancache.CURRENT_FACTS}
LEFT JOIN (SELECT DISTINCT ON (instance_guid) instance_guid, id, finished_at, state, reason, target, duration_s
           FROM drills WHERE state IN ('passed', 'failed') AND finished_at IS NOT NULL
           ORDER BY instance_guid, finished_at DESC, id DESC) d ON d.instance_guid = i.instance_guid
{{joins}}
{{where}}
"""


_LISTS = ", f.windows::text AS windows, f.holes::text AS holes, s.issues::text AS issues, s.last_error"


def fleet_sql(*, lists: bool = False, extra: str = "", joins: str = "", where: str = "") -> str:
    return FLEET_SQL.format(extra=(_LISTS if lists else "") + extra, joins=joins, where=where)


async def fetch_fleet(db: asyncpg.Pool | asyncpg.Connection, sql: str, *args: Any) -> list[asyncpg.Record]:
    """Run a fleet statement without JIT: compiling it costs more (about 0.1 s) than the whole scan it
    would speed up, on every request."""
    async with _conn(db) as c, c.transaction(readonly=True):
        await c.execute("SET LOCAL jit = off")
        return list(await c.fetch(sql, *args))


@asynccontextmanager
async def _conn(db: asyncpg.Pool | asyncpg.Connection) -> AsyncIterator[Any]:
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as c:
            yield c
    else:
        yield db


# per instance, besides the coverage facts: the last passed drill; fleet totals as uncorrelated
# subqueries (evaluated once per statement): the whole /metrics body is one statement
METRICS_JOINS = """LEFT JOIN (SELECT instance_guid, max(finished_at) AS t FROM drills WHERE state = 'passed'
           GROUP BY instance_guid) dl ON dl.instance_guid = i.instance_guid
LEFT JOIN LATERAL (SELECT p.outcome FROM purges p WHERE p.instance_guid = i.instance_guid
                   ORDER BY p.id DESC LIMIT 1) lp ON true
LEFT JOIN (SELECT r.instance_guid, sum(greatest(0, r.last_segno - greatest(r.first_segno,
                  coalesce(c.next_segno, 0)) + 1)) AS lag
           FROM wal_runs r LEFT JOIN wal_index_cursors c ON c.instance_guid = r.instance_guid AND c.timeline = r.timeline
           GROUP BY r.instance_guid) wl ON wl.instance_guid = i.instance_guid"""


METRICS_EXTRA = """,
       dl.t AS drill_last_ok,
       wl.lag AS wal_index_lag, i.registered_at AS registered_at, lp.outcome AS last_purge_outcome,
       (SELECT coalesce(json_object_agg(state, n), '{}')::text
          FROM (SELECT state, count(*) AS n FROM drills GROUP BY state) x) AS agg_drills,
       (SELECT coalesce(json_object_agg(outcome, json_build_array(n, b, o)), '{}')::text
          FROM (SELECT outcome, count(*) AS n, sum(bytes_deleted) AS b, sum(objects_deleted) AS o
                FROM purges GROUP BY outcome) x) AS agg_purges"""




async def lists_of(pool: asyncpg.Pool, guids: list[str]) -> dict[str, asyncpg.Record]:
    """Windows, holes and every scan error of some instances (one query), by GUID."""
    recs = await pool.fetch(
        """SELECT s.instance_guid, f.windows::text AS windows, f.holes::text AS holes, s.issues::text AS issues,
                  s.last_error, f.generation IS NOT NULL AS has_facts
           FROM scan_state s LEFT JOIN scan_cache_facts f ON """ + scancache.CURRENT_FACTS + """
           WHERE s.instance_guid = ANY($1::text[])""", guids)
    return {r["instance_guid"]: r for r in recs}


async def stream(pool: asyncpg.Pool, *, batch: int) -> AsyncIterator[list[asyncpg.Record]]:
    """Every instance with its lists, in name order, in batches through a server-side cursor (one
    repeatable-read snapshot): memory stays flat whatever the fleet's size."""
    sql = fleet_sql(lists=True) + " ORDER BY name, i.instance_guid"
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        await conn.execute("SET LOCAL jit = off")
        cur = await conn.cursor(sql)
        while True:
            recs = await cur.fetch(batch)
            if not recs:
                break
            yield recs
