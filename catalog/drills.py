"""The ``drills`` table: one row per restore drill (issue 11).

A row is ``queued`` (created by a supervisor that hands its id to a worker) or ``running`` while the
drill runs, and is finished (``passed``/``failed``/``skipped``) in ONE UPDATE, so a reader never sees a
half-written result. ``drills_one_running`` (a unique partial index) keeps one running drill per
instance (``drills_one_active``: nor one queued and one running). A running/queued row whose holder's lease ``drill:<guid>`` expired belongs to a process that
died without recording: :func:`reap_abandoned` finishes it as failed.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeAlias

import asyncpg

from catalog.errors import Conflict
from recovery.lsn import Lsn

Db: TypeAlias = Any     # asyncpg.Pool | asyncpg.Connection (asyncpg ships no types)

ACTIVE = ("queued", "running")
FINISHED = ("passed", "failed", "skipped")


def lease_key(guid: str) -> str:
    return f"drill:{guid}"


@dataclass(frozen=True, slots=True)
class DrillRow:
    id: int
    instance_guid: str
    state: str
    trigger: str
    requested_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    holder: str | None = None
    target: Mapping[str, Any] | None = None
    backup_label: str | None = None
    stage: str | None = None
    reason: str | None = None
    segment: str | None = None
    reached_lsn: Lsn | None = None
    fetch_s: float | None = None
    replay_s: float | None = None
    duration_s: float | None = None
    bytes_fetched: int | None = None
    postgres_log: tuple[str, ...] = ()
    server_pid: int | None = None
    server_pgdata: str | None = None
    cleanup: str | None = None


@dataclass(frozen=True, slots=True)
class Abandoned:
    """A drill just finished as abandoned, with the recovery server it recorded (for the reaper)."""

    id: int
    instance_guid: str
    server_pid: int | None
    server_pgdata: str | None


@dataclass(frozen=True, slots=True)
class DrillResult:
    """What finishes a drill row (the one UPDATE)."""

    state: str                       # passed | failed | skipped
    target: Mapping[str, Any] | None = None
    backup_label: str | None = None
    stage: str | None = None
    reason: str | None = None
    segment: str | None = None
    reached_lsn: str | None = None
    fetch_s: float | None = None
    replay_s: float | None = None
    duration_s: float | None = None
    bytes_fetched: int | None = None
    postgres_log: Sequence[str] = field(default_factory=tuple)


_COLS = ("id, instance_guid, state, trigger, requested_at, started_at, finished_at, holder, target::text AS target, "
         "backup_label, stage, reason, segment, reached_lsn, fetch_s, replay_s, duration_s, bytes_fetched, "
         "postgres_log::text AS postgres_log, server_pid, server_pgdata, cleanup")


def row_to_drill(r: asyncpg.Record) -> DrillRow:
    return DrillRow(id=r["id"], instance_guid=r["instance_guid"], state=r["state"], trigger=r["trigger"],
                    requested_at=r["requested_at"], started_at=r["started_at"], finished_at=r["finished_at"],
                    holder=r["holder"], target=json.loads(r["target"]) if r["target"] else None,
                    backup_label=r["backup_label"], stage=r["stage"], reason=r["reason"], segment=r["segment"],
                    reached_lsn=r["reached_lsn"], fetch_s=r["fetch_s"], replay_s=r["replay_s"],
                    duration_s=r["duration_s"], bytes_fetched=r["bytes_fetched"],
                    postgres_log=tuple(json.loads(r["postgres_log"] or "[]")), server_pid=r["server_pid"],
                    server_pgdata=r["server_pgdata"], cleanup=r["cleanup"])


async def create(db: Db, guid: str, *, trigger: str, holder: str, target: Mapping[str, Any] | None,
                 state: str = "queued") -> int:
    """A new drill row (``queued``, or ``running`` with ``started_at``). :raises Conflict: a drill of
    this instance is already running (``drills_one_running``)."""
    try:
        drill_id: int = await db.fetchval(
            """INSERT INTO drills (instance_guid, state, trigger, holder, target, started_at)
               VALUES ($1, $2, $3, $4, $5::jsonb, CASE WHEN $2 = 'running' THEN clock_timestamp() END)
               RETURNING id""", guid, state, trigger, holder, json.dumps(target) if target is not None else None)
    except asyncpg.UniqueViolationError:
        raise Conflict(f"a drill of instance {guid!r} is already running or queued") from None
    return drill_id


async def start(db: Db, drill_id: int) -> DrillRow:
    """``queued`` -> ``running`` (the holder, whose lease covers it, stays). :raises Conflict: the row is
    not queued any more (reaped) or another drill of the instance is running."""
    try:
        r = await db.fetchrow(
            f"""UPDATE drills SET state = 'running', started_at = clock_timestamp()
                WHERE id = $1 AND state = 'queued' RETURNING {_COLS}""", drill_id)
    except asyncpg.UniqueViolationError:
        raise Conflict(f"drill {drill_id}: another drill of its instance is running") from None
    if r is None:
        raise Conflict(f"drill {drill_id} is not queued (unknown, already run or abandoned)")
    return row_to_drill(r)


async def finish(db: Db, drill_id: int, result: DrillResult) -> bool:
    """Finish an active drill in one UPDATE. False when it was already finished (e.g. reaped)."""
    status = await db.execute(
        """UPDATE drills SET state = $2, finished_at = clock_timestamp(),
               started_at = coalesce(started_at, clock_timestamp()),
               target = coalesce($3::jsonb, target), backup_label = coalesce($4, backup_label),
               stage = $5, reason = $6, segment = $7, reached_lsn = $8::text::pg_lsn, fetch_s = $9, replay_s = $10,
               duration_s = $11, bytes_fetched = $12, postgres_log = $13::jsonb
           WHERE id = $1 AND state IN ('queued', 'running')""",
        drill_id, result.state, json.dumps(result.target) if result.target is not None else None,
        result.backup_label, result.stage, result.reason, result.segment, result.reached_lsn, result.fetch_s,
        result.replay_s, result.duration_s, result.bytes_fetched, json.dumps(list(result.postgres_log)))
    return str(status).endswith(" 1")


async def reap_abandoned(db: Db, guid: str | None = None) -> list[int]:
    """Finish as failed (stage ``abandoned``) every active drill whose holder no longer holds the
    instance's drill lease: its process died without recording. Returns the ids."""
    return [a.id for a in await abandon(db, guid)]


async def abandon(db: Db, guid: str | None = None) -> list[Abandoned]:
    """:func:`reap_abandoned`, returning what the reaper needs to clean (the recorded server)."""
    rows = await db.fetch(
        """UPDATE drills d SET state = 'failed', finished_at = clock_timestamp(), stage = 'abandoned',
               started_at = coalesce(d.started_at, d.requested_at),
               reason = 'abandoned: the drill''s process (' || coalesce(d.holder, '?') ||
                        ') ended without recording a result'
           WHERE d.state IN ('queued', 'running') AND ($1::text IS NULL OR d.instance_guid = $1)
             AND NOT EXISTS (SELECT 1 FROM scan_leases l
                             WHERE l.key = 'drill:' || d.instance_guid AND l.holder = d.holder
                               AND l.expires_at > clock_timestamp())
           RETURNING d.id, d.instance_guid, d.server_pid, d.server_pgdata""", guid)
    return [Abandoned(r["id"], r["instance_guid"], r["server_pid"], r["server_pgdata"]) for r in rows]


async def record_server(db: Db, drill_id: int, pid: int, pgdata: str) -> None:
    """The recovery server a running drill started (what the reaper stops if the drill's process dies)."""
    await db.execute("UPDATE drills SET server_pid = $2, server_pgdata = $3 WHERE id = $1", drill_id, pid, pgdata)


async def record_cleanup(db: Db, drill_id: int, cleanup: str) -> None:
    """What was cleaned after a drill whose process died (appended: several reapers may each find a part)."""
    await db.execute("""UPDATE drills SET cleanup = CASE WHEN cleanup IS NULL THEN $2 ELSE cleanup || '; ' || $2 END
                        WHERE id = $1""", drill_id, cleanup)


async def get(db: Db, drill_id: int) -> DrillRow | None:
    r = await db.fetchrow(f"SELECT {_COLS} FROM drills WHERE id = $1", drill_id)
    return row_to_drill(r) if r else None


async def history(db: Db, guid: str, limit: int = 50) -> list[DrillRow]:
    """The instance's drills, newest first."""
    return [row_to_drill(r) for r in await db.fetch(
        f"SELECT {_COLS} FROM drills WHERE instance_guid = $1 ORDER BY id DESC LIMIT $2", guid, limit)]


async def last_started(db: Db, guid: str) -> datetime | None:
    """When the instance's newest drill was requested (any state), or None."""
    t: datetime | None = await db.fetchval(
        "SELECT max(requested_at) FROM drills WHERE instance_guid = $1", guid)
    return t


async def last_requested_all(db: Db) -> dict[str, datetime]:
    """Per instance, when its newest drill was requested (one query for a scheduler tick)."""
    return {r["instance_guid"]: r["t"] for r in await db.fetch(
        "SELECT instance_guid, max(requested_at) AS t FROM drills GROUP BY instance_guid")}


async def prune(db: Db, guid: str, keep: int) -> int:
    """Keep the newest ``keep`` finished drills of an instance (active ones are never pruned)."""
    status = await db.execute(
        """DELETE FROM drills WHERE instance_guid = $1 AND state NOT IN ('queued', 'running') AND id NOT IN
               (SELECT id FROM drills WHERE instance_guid = $1 AND state NOT IN ('queued', 'running')
                ORDER BY id DESC LIMIT $2)""", guid, max(1, keep))
    return int(status.split()[-1])


async def active_ids(db: Db) -> tuple[set[int], int]:
    """Ids of active drills, and the highest id at that moment (one snapshot)."""
    r = await db.fetchrow("""SELECT coalesce(array_agg(id) FILTER (WHERE state IN ('queued', 'running')), '{}') AS a,
                                    coalesce(max(id), 0) AS m FROM drills""")
    return set(r["a"]), int(r["m"])
