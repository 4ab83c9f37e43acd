"""The WAL index tables (issue 20): per-segment commit summaries, restore points, and the index job's resume
points (``wal_segment_summaries``, ``wal_restore_points``, ``wal_index_cursors``; schema.sql).

Written only by the index job, each segment in ONE transaction fenced by the scan lease the job holds
(``check_lease``: a holder paused past its TTL writes nothing). Read by exact-target planning (restore
points, the segments that may hold an xid) and by the lag metric.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias

from catalog.errors import Conflict
from catalog.leases import check_lease
from recovery.exact import RestorePoint, SegmentSummary
from recovery.model import WalRun
from recovery.walrecords import Carry

Db: TypeAlias = Any     # asyncpg.Pool | asyncpg.Connection (asyncpg ships no types)


@dataclass(frozen=True, slots=True)
class IndexedSegment:
    """What the index job read from one segment."""

    summary: SegmentSummary
    points: tuple[RestorePoint, ...] = ()
    carry: Carry | None = None
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class IndexState:
    """The catalogued WAL of an instance and how far the index got on each timeline."""

    seg_size: int | None
    runs: tuple[WalRun, ...]
    cursors: dict[int, int]            # timeline -> next segno to index


async def index_state(db: Db, guid: str) -> IndexState:
    rows = await db.fetch("SELECT timeline, first_segno, last_segno FROM wal_runs WHERE instance_guid = $1 "
                          "ORDER BY timeline, first_segno", guid)
    cur = await db.fetch("SELECT timeline, next_segno FROM wal_index_cursors WHERE instance_guid = $1", guid)
    size = await db.fetchval("SELECT seg_size FROM instances WHERE instance_guid = $1", guid)
    return IndexState(size, tuple(WalRun(r["timeline"], r["first_segno"], r["last_segno"]) for r in rows),
                      {r["timeline"]: r["next_segno"] for r in cur})


async def indexed_segnos(db: Db, guid: str, timeline: int, lo: int, hi: int) -> set[int]:
    rows = await db.fetch("SELECT segno FROM wal_segment_summaries WHERE instance_guid = $1 AND timeline = $2 "
                          "AND segno BETWEEN $3 AND $4", guid, timeline, lo, hi)
    return {r["segno"] for r in rows}


async def carry_before(db: Db, guid: str, timeline: int, segno: int) -> Carry | None:
    """The record crossing from segment ``segno - 1`` of the same timeline into ``segno``, if indexed."""
    r = await db.fetchrow("SELECT carry_lsn, carry_total, carry_head FROM wal_segment_summaries WHERE "
                          "instance_guid = $1 AND timeline = $2 AND segno = $3 AND carry_lsn IS NOT NULL",
                          guid, timeline, segno - 1)
    return None if r is None else Carry(r["carry_lsn"], r["carry_total"], bytes(r["carry_head"]))


async def save_segment(db: Db, guid: str, seg: IndexedSegment, *, next_segno: int | None,
                       lease_key: str, lease_token: int) -> None:
    """Store one indexed segment (replacing an earlier reading of it) and, when given, the timeline's new
    resume point, in one transaction fenced by the scan lease. :raises Conflict: the lease is no longer ours."""
    s = seg.summary
    async with db.acquire() as conn, conn.transaction():
        if not await check_lease(conn, lease_key, lease_token):
            raise Conflict(f"lease {lease_key} lost: WAL index of segment {s.timeline}/{s.segno} not saved")
        c = seg.carry
        await conn.execute(
            """INSERT INTO wal_segment_summaries AS w (instance_guid, timeline, segno, object_key, commits,
                   first_commit_time, last_commit_time, first_xid, last_xid, min_xid, max_xid, destructive,
                   problem, carry_lsn, carry_total, carry_head, indexed_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, now())
               ON CONFLICT (instance_guid, timeline, segno) DO UPDATE SET object_key = EXCLUDED.object_key,
                   commits = EXCLUDED.commits, first_commit_time = EXCLUDED.first_commit_time,
                   last_commit_time = EXCLUDED.last_commit_time, first_xid = EXCLUDED.first_xid,
                   last_xid = EXCLUDED.last_xid, min_xid = EXCLUDED.min_xid, max_xid = EXCLUDED.max_xid,
                   destructive = EXCLUDED.destructive, problem = EXCLUDED.problem, carry_lsn = EXCLUDED.carry_lsn,
                   carry_total = EXCLUDED.carry_total, carry_head = EXCLUDED.carry_head, indexed_at = now()""",
            guid, s.timeline, s.segno, s.key or "", s.commits, s.first_time, s.last_time, s.first_xid, s.last_xid,
            s.min_xid, s.max_xid, s.destructive, seg.problem, c.lsn if c else None, c.total_len if c else None,
            c.head if c else None)
        await conn.execute("DELETE FROM wal_restore_points WHERE instance_guid = $1 AND timeline = $2 AND segno = $3",
                           guid, s.timeline, s.segno)
        if seg.points:
            await conn.executemany(
                """INSERT INTO wal_restore_points (instance_guid, timeline, lsn, name, point_time, segno)
                   VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (instance_guid, timeline, lsn) DO UPDATE
                   SET name = EXCLUDED.name, point_time = EXCLUDED.point_time, segno = EXCLUDED.segno""",
                [(guid, p.timeline, p.lsn, p.name, p.time, s.segno) for p in seg.points])
        if next_segno is not None:
            await _set_cursor(conn, guid, s.timeline, next_segno)


async def set_cursor(db: Db, guid: str, timeline: int, next_segno: int, *, lease_key: str,
                     lease_token: int) -> None:
    async with db.acquire() as conn, conn.transaction():
        if not await check_lease(conn, lease_key, lease_token):
            raise Conflict(f"lease {lease_key} lost: WAL index cursor not saved")
        await _set_cursor(conn, guid, timeline, next_segno)


async def _set_cursor(conn: Db, guid: str, timeline: int, next_segno: int) -> None:
    await conn.execute(
        """INSERT INTO wal_index_cursors AS c (instance_guid, timeline, next_segno) VALUES ($1, $2, $3)
           ON CONFLICT (instance_guid, timeline) DO UPDATE SET next_segno = EXCLUDED.next_segno, updated_at = now()""",
        guid, timeline, next_segno)


def _point(r: Any) -> RestorePoint:
    return RestorePoint(r["name"], r["point_time"], r["lsn"], r["timeline"])


async def restore_points(db: Db, guid: str) -> list[RestorePoint]:
    """Every indexed restore point of the instance, in (LSN, timeline) order."""
    rows = await db.fetch("SELECT timeline, lsn, name, point_time FROM wal_restore_points WHERE instance_guid = $1 "
                          "ORDER BY lsn, timeline", guid)
    return [_point(r) for r in rows]


def _summary(r: Any) -> SegmentSummary:
    return SegmentSummary(r["timeline"], r["segno"], r["commits"], r["first_commit_time"], r["last_commit_time"],
                          r["first_xid"], r["last_xid"], r["min_xid"], r["max_xid"], r["destructive"],
                          r["object_key"] or None)


_SUMMARY_COLS = ("timeline, segno, object_key, commits, first_commit_time, last_commit_time, first_xid, last_xid, "
                 "min_xid, max_xid, destructive")


async def summaries_for_xid(db: Db, guid: str, xid: int) -> list[SegmentSummary]:
    """Indexed segments whose commits' xid range holds ``xid``."""
    rows = await db.fetch(f"SELECT {_SUMMARY_COLS} FROM wal_segment_summaries WHERE instance_guid = $1 "
                          "AND min_xid <= $2 AND max_xid >= $2 ORDER BY timeline, segno", guid, xid)
    return [_summary(r) for r in rows]


async def summaries_near_xid(db: Db, guid: str, xid: int, n: int = 3) -> list[SegmentSummary]:
    """Indexed segments with commits just below and just above ``xid`` (for the nearest known xids)."""
    rows = await db.fetch(
        f"""(SELECT {_SUMMARY_COLS} FROM wal_segment_summaries WHERE instance_guid = $1 AND max_xid < $2
             ORDER BY max_xid DESC LIMIT $3)
            UNION ALL
            (SELECT {_SUMMARY_COLS} FROM wal_segment_summaries WHERE instance_guid = $1 AND min_xid > $2
             ORDER BY min_xid LIMIT $3)""", guid, xid, n)
    return [_summary(r) for r in rows]


async def summaries_between(db: Db, guid: str, start: datetime, end: datetime) -> list[SegmentSummary]:
    """Indexed segments with a commit in [start, end] (what ``changes`` needs to read)."""
    rows = await db.fetch(f"SELECT {_SUMMARY_COLS} FROM wal_segment_summaries WHERE instance_guid = $1 "
                          "AND last_commit_time >= $2 AND first_commit_time <= $3 ORDER BY timeline, segno",
                          guid, start, end)
    return [_summary(r) for r in rows]


async def summaries_around(db: Db, guid: str, start: datetime, end: datetime, n: int = 8) -> list[SegmentSummary]:
    """The indexed segments whose commits all precede ``start`` (the ``n`` latest) or all follow ``end`` (the
    ``n`` earliest): where reading a time range may begin and end (``changes``)."""
    rows = await db.fetch(
        f"""(SELECT {_SUMMARY_COLS} FROM wal_segment_summaries WHERE instance_guid = $1 AND last_commit_time < $2
             ORDER BY last_commit_time DESC LIMIT $4)
            UNION ALL
            (SELECT {_SUMMARY_COLS} FROM wal_segment_summaries WHERE instance_guid = $1 AND first_commit_time > $3
             ORDER BY first_commit_time LIMIT $4)""", guid, start, end, n)
    return [_summary(r) for r in rows]


async def unindexed_segments(db: Db, guid: str) -> int:
    """Archived segments from each timeline's cursor on (the lag; see the cursor table's comment)."""
    v = await db.fetchval(_LAG_SQL + " WHERE r.instance_guid = $1", guid)
    return int(v or 0)


_LAG_SQL = """SELECT coalesce(sum(greatest(0, r.last_segno - greatest(r.first_segno, coalesce(c.next_segno, 0)) + 1)), 0)
    FROM wal_runs r LEFT JOIN wal_index_cursors c
      ON c.instance_guid = r.instance_guid AND c.timeline = r.timeline"""


async def lag_by_instance(db: Db) -> dict[str, int]:
    """The index lag of every instance with archived WAL (the Prometheus gauge)."""
    rows = await db.fetch(_LAG_SQL.replace("SELECT coalesce(", "SELECT r.instance_guid, coalesce(", 1)
                          + " GROUP BY r.instance_guid")
    return {r["instance_guid"]: int(r["coalesce"]) for r in rows}


def segments_to_index(runs: Iterable[WalRun], cursors: dict[int, int], done: dict[int, set[int]],
                      limit: int) -> list[tuple[int, int]]:
    """Pure: the next ``limit`` present segments (timeline, segno) at or after each timeline's cursor that are
    not indexed yet (``done``: indexed segnos per timeline at or after the cursor), oldest timeline first.

    >>> segments_to_index([WalRun(1, 2, 6)], {1: 4}, {1: {5}}, 10)
    [(1, 4), (1, 6)]
    """
    out: list[tuple[int, int]] = []
    for r in sorted(runs, key=lambda r: (r.timeline, r.first)):
        lo = max(r.first, cursors.get(r.timeline, 0))
        for n in range(lo, r.last + 1):
            if len(out) >= limit:
                return out
            if n not in done.get(r.timeline, set()):
                out.append((r.timeline, n))
    return out


def next_cursor(runs: Sequence[WalRun], timeline: int, cursor: int, indexed: set[int]) -> int:
    """Pure: the new resume point of ``timeline``: past every segment from ``cursor`` on that is indexed,
    stopping at the first present segment not indexed or at a hole (between runs: a late segment may fill it).

    >>> next_cursor([WalRun(1, 2, 6), WalRun(1, 9, 9)], 1, 2, {2, 3, 5})
    4
    >>> next_cursor([WalRun(1, 2, 6), WalRun(1, 9, 9)], 1, 2, {2, 3, 4, 5, 6, 9})
    7
    """
    mine = sorted((r for r in runs if r.timeline == timeline), key=lambda r: r.first)
    n = max(cursor, mine[0].first) if mine else cursor   # before the first run is not a hole
    for r in mine:
        if r.last < n:
            continue
        if r.first > n:
            return n          # a hole at n: stay before it
        while n <= r.last and n in indexed:
            n += 1
        if n <= r.last:
            return n
    return n


__all__ = ["Carry", "IndexState", "IndexedSegment", "carry_before", "index_state", "indexed_segnos",
           "lag_by_instance", "next_cursor", "restore_points", "save_segment", "segments_to_index", "set_cursor",
           "summaries_around", "summaries_between", "summaries_for_xid", "summaries_near_xid", "unindexed_segments"]
