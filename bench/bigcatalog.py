"""A large catalog inserted straight into PostgreSQL (COPY): instances with a year of daily backups,
WAL runs split by a few holes, exact window edges, names and scan state. For query plans and indexes
without S3. Instance ``i`` is ``big-<i>`` in space ``bench-space-<i // 100>``, named ``svc-<i>``.

The year ends now, so the fleet grades as a real one would: most instances ok; every tenth archives 30
minutes behind (RPO warning), every tenth 50 hours behind (its newest backups lack WAL: critical); every
50th is deleted (some held, some past the undo period); every fifth has passed drills (some too old), every
97th's newest drill failed.
"""
from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import asyncpg

SEG = 16 * 1024 * 1024
DAY = 1440                      # segments a day (one a minute)
# the catalog's year ends at the current minute (days are counted back from there)
T0 = datetime.now(timezone.utc).replace(second=0, microsecond=0) - timedelta(days=365)
HOLES_AT = (73, 146, 219, 292)  # days with a missing segment at 12:00
SYSID = 7712075212762715131


def guid(i: int) -> str:
    return f"big-{i:06d}"


def space(i: int) -> str:
    return f"bench-space-{i // 100:04d}"


def name(i: int) -> str:
    return f"svc-{i:06d}"


def at(segno: int, days: int = 365) -> datetime:
    return t0_for(days) + timedelta(minutes=segno)


def holes(days: int) -> list[int]:
    return [d * DAY + 720 for d in HOLES_AT if d < days]


def lag(i: int) -> int:
    """Segments (minutes) instance ``i``'s archive ends before now."""
    return {8: 30, 9: 3000}.get(i % 10, 0)


def runs(days: int, lag_segments: int = 0) -> list[tuple[int, int]]:
    end = days * DAY - lag_segments
    out, first = [], 1
    for h in holes(days):
        if h >= end:
            break
        out.append((first, h - 1))
        first = h + 1
    out.append((first, end))
    return out


def t0_for(days: int) -> datetime:
    return T0 + timedelta(days=365 - days)


def _backups(g: str, days: int) -> Iterator[tuple[Any, ...]]:
    for d in range(days):
        s = d * DAY + 1
        t = at(s, days)
        yield (g, t.strftime("base_%Y%m%dT%H%M%S"), "full", "done", 1, s * SEG + 0x28, s * SEG + 0x138, t,
               t + timedelta(seconds=40), True, [], None, 2604967632, 858502390, 150020, SYSID, SEG, None,
               f"p/{g}/basebackups_005/base_{d}_backup_stop_sentinel.json")


async def build(dsn: str, instances: int, days: int = 365, *, batch: int = 250) -> dict[str, int]:
    """Insert ``instances`` instances (COPY, binary). Returns rows inserted per table."""
    now = datetime.now(timezone.utc)
    counts = {"instances": 0, "instance_names": 0, "scan_state": 0, "backups": 0, "wal_runs": 0, "window_edges": 0}
    conn = await asyncpg.connect(dsn)   # built-in binary codecs (pg_lsn as int) for COPY
    try:
        for lo in range(0, instances, batch):
            ids = range(lo, min(instances, lo + batch))
            inst = [(guid(i), space(i), "bench-org", "bench-big", f"p/{guid(i)}", "walg", "walg", SEG, 150020,
                     SYSID, now - timedelta(days=days + 1)) for i in ids]
            await conn.copy_records_to_table("instances", records=inst, columns=[
                "instance_guid", "space_guid", "org_guid", "bucket", "prefix", "layout", "detected_layout",
                "seg_size", "pg_version", "system_id", "created_at"])
            names = [(space(i), name(i), guid(i), now - timedelta(days=days + 1)) for i in ids]
            await conn.copy_records_to_table("instance_names", records=names,
                                             columns=["space_guid", "name", "instance_guid", "valid_from"])
            state = [(guid(i), now, now, 1) for i in ids]
            await conn.copy_records_to_table("scan_state", records=state,
                                             columns=["instance_guid", "last_scan", "last_full_scan", "generation"])
            backups = [r for i in ids for r in _backups(guid(i), days)]
            await conn.copy_records_to_table("backups", records=backups, columns=[
                "instance_guid", "label", "type", "status", "timeline", "start_lsn", "stop_lsn", "start_time",
                "stop_time", "stop_time_exact", "depends_on", "parent", "size_bytes", "repo_size_bytes",
                "pg_version", "system_id", "seg_size", "error", "metadata_key"])
            wal = [(guid(i), 1, a, b) for i in ids for a, b in runs(days, lag(i))]
            await conn.copy_records_to_table("wal_runs", records=wal,
                                             columns=["instance_guid", "timeline", "first_segno", "last_segno"])
            edges = [(guid(i), 1, b, at(b, days) - timedelta(seconds=10), b * SEG + 0x100000, True)
                     for i in ids for _, b in runs(days, lag(i))]
            await conn.copy_records_to_table("window_edges", records=edges, columns=[
                "instance_guid", "timeline", "segno", "last_commit_time", "last_commit_lsn", "exact"])
            for k, n in (("instances", len(inst)), ("instance_names", len(names)), ("scan_state", len(state)),
                         ("backups", len(backups)), ("wal_runs", len(wal)), ("window_edges", len(edges))):
                counts[k] += n
        await _fleet_life(conn, instances, now)
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    return counts


async def _fleet_life(conn: asyncpg.Connection, instances: int, now: datetime) -> None:
    """Deletions, holds and drills (see the module docstring)."""
    await conn.execute(
        # only the big catalog's own instances (big-NNNNNN): the bench's others (year-walg, ...) have no number;
        # OFFSET 0 keeps the LIKE filter below the cast (a flattened subquery could cast them first)
        """UPDATE instances i SET deleted_at = $1::timestamptz - make_interval(days => b.n % 40),
                  hold_at = CASE WHEN b.n % 200 = 7 THEN $1::timestamptz END
             FROM (SELECT instance_guid, substr(instance_guid, 5)::int AS n FROM instances
                    WHERE instance_guid LIKE 'big-%' OFFSET 0) b
            WHERE i.instance_guid = b.instance_guid AND b.n % 50 = 7""", now)
    drills: list[tuple[Any, ...]] = []
    for i in range(0, instances, 5):
        at_ = now - timedelta(days=i % 12, hours=3)
        drills.append((guid(i), at_ - timedelta(minutes=5), at_ - timedelta(minutes=4), at_, "passed", "scheduled",
                       '{"kind": "latest"}', None, 60.0 + i % 100))
    for i in range(0, instances, 97):
        at_ = now - timedelta(hours=1)
        drills.append((guid(i), at_ - timedelta(minutes=5), at_ - timedelta(minutes=4), at_, "failed", "scheduled",
                       '{"kind": "latest"}', f"replay stopped in segment 00000001000000{i % 256:02X}000000A3", 41.0))
    await conn.copy_records_to_table("drills", records=drills, columns=[
        "instance_guid", "requested_at", "started_at", "finished_at", "state", "trigger", "target", "reason",
        "duration_s"])


async def _derive_range(dsn: str, lo: int, hi: int) -> int:
    from catalog import db as catalog_db
    from catalog import scancache
    pool = await catalog_db.open_pool(dsn, min_size=1, max_size=2)
    try:
        for i in range(lo, hi):
            await scancache.refresh(pool, guid(i))
    finally:
        await pool.close()
    return hi - lo


def _derive_chunk(args: tuple[str, int, int]) -> int:
    return asyncio.run(_derive_range(*args))


def derive(dsn: str, instances: int, *, workers: int = 2) -> int:
    """What the scanner stores after each scan (``catalog.scancache.refresh``: windows and the Backups
    document of the scan), for every instance — the same code, run in ``workers`` processes."""
    from concurrent.futures import ProcessPoolExecutor
    step = max(1, -(-instances // (workers * 8)))
    chunks = [(dsn, lo, min(instances, lo + step)) for lo in range(0, instances, step)]
    with ProcessPoolExecutor(workers) as ex:
        return sum(ex.map(_derive_chunk, chunks))


async def claim_slots(dsn: str, slot: datetime) -> int:
    """Mark scheduled slot ``slot`` as already run for every instance (as another replica would have), so a
    server started for the latency runs does not spend its first tick scanning 10,000 fake prefixes."""
    conn = await asyncpg.connect(dsn)
    try:
        return int((await conn.execute(
            """INSERT INTO scan_runs (job, scheduled_for, instance_guid, holder, finished_at, outcome)
               SELECT 'scan', $1, instance_guid, 'bench', now(), 'ok' FROM instances
               ON CONFLICT DO NOTHING""", slot)).split()[-1])
    finally:
        await conn.close()


def targets(instances: int, days: int, n: int, seed: int = 7) -> list[tuple[str, str, str]]:
    """(space, name, point-in-time) triples for plan requests: 03:00 on a random day (never across a hole,
    never past the end of a lagging archive)."""
    import random
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        i, d = rnd.randrange(instances), rnd.randrange(days - 3)
        t = at(d * DAY + 180, days)
        out.append((space(i), name(i), t.strftime("%Y-%m-%dT%H:%M:%SZ")))
    return out


if __name__ == "__main__":   # manual: python -m bench.bigcatalog DSN N
    import sys
    print(asyncio.run(build(sys.argv[1], int(sys.argv[2]))))
