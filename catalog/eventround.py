"""A round of the event consumer in the catalog: many instances read in one snapshot and written in one
transaction (:mod:`backup_catalog.usecases.events`), the common write set-based, the derived views stored
with it when the consumer followed them (:mod:`recovery.viewdelta`). One instance's write on its own is
:func:`catalog.events.save_events`; both leave the same rows.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from catalog import rows
from catalog.db import Conn, Db, transaction
from catalog.errors import CatalogError
from catalog.events import EventWrite, KeyEvent, write_one
from catalog.leases import check_leases
from catalog.names import CURRENT_SCAN_CACHE
from catalog.rows import InstanceRecord
from catalog.scancache import CURRENT_FACTS, FACT_COLUMNS, row_to_facts
from recovery.grading import ScanFacts
from recovery.model import WalRun, WindowEdge
from recovery.timeline import TimelineSwitch
from recovery.wal import merge_runs

TAIL_MARK = ',"wal":['     # where the archive document's members after its backups begin (the first one)


@dataclass(frozen=True, slots=True)
class StoredView:
    """The derived views of the instance's current scan, as far as the consumer follows them: the windows
    text, the archive document's members after its backups (JSON object text), the facts, and what
    scan_cache keeps for events (None: stored before it was kept)."""

    windows: str
    archive_tail: str
    facts: ScanFacts
    system_ids: frozenset[int] | None
    backup_need: int | None


@dataclass(frozen=True, slots=True)
class RoundState:
    """One instance as a round of the consumer reads it, under its lease."""

    rec: InstanceRecord
    generation: int | None            # None: no scan state (never scanned)
    runs: tuple[WalRun, ...]
    edges: tuple[WindowEdge, ...]
    histories: dict[int, tuple[TimelineSwitch, ...]]
    view: StoredView | None


async def load_round(db: asyncpg.Pool, guids: Sequence[str]) -> dict[str, RoundState]:
    """The instances ``guids`` (absent: unknown) with their runs, edges, histories and current derived
    views: four statements in one repeatable-read snapshot, whatever the number of instances; no backups."""
    ids = sorted(set(guids))
    cols = ", ".join(f"f.{c}" for c in FACT_COLUMNS)
    async with db.acquire() as c, c.transaction(isolation="repeatable_read", readonly=True):
        recs = await c.fetch(
            f"""SELECT i.*, '' AS name, s.generation AS s_generation,
                       sc.windows AS dv_windows, sc.system_ids AS dv_system_ids, sc.backup_need AS dv_need,
                       substr(sc.archive, nullif(strpos(sc.archive, $2), 0)) AS dv_tail,
                       f.instance_guid IS NOT NULL AS has_facts, {cols}
                FROM instances i
                LEFT JOIN scan_state s USING (instance_guid)
                LEFT JOIN scan_cache sc ON {CURRENT_SCAN_CACHE}
                LEFT JOIN scan_cache_facts f ON {CURRENT_FACTS}
                WHERE i.instance_guid = ANY($1::text[])""", ids, TAIL_MARK)
        runs = await c.fetch("SELECT instance_guid, timeline, first_segno, last_segno FROM wal_runs "
                             "WHERE instance_guid = ANY($1::text[]) ORDER BY instance_guid, timeline, first_segno", ids)
        edges = await c.fetch("SELECT * FROM window_edges WHERE instance_guid = ANY($1::text[]) "
                              "ORDER BY instance_guid, timeline, segno", ids)
        hist = await c.fetch("SELECT instance_guid, tli, ordinal, parent, switchpoint, reason FROM timelines "
                             "WHERE instance_guid = ANY($1::text[]) ORDER BY instance_guid, tli, ordinal", ids)
    by_runs: dict[str, list[WalRun]] = {}
    for r in runs:
        by_runs.setdefault(r["instance_guid"], []).append(rows.row_to_run(r))
    by_edges: dict[str, list[WindowEdge]] = {}
    for r in edges:
        by_edges.setdefault(r["instance_guid"], []).append(rows.row_to_edge(r))
    by_hist: dict[str, list[asyncpg.Record]] = {}
    for r in hist:
        by_hist.setdefault(r["instance_guid"], []).append(r)
    out = {}
    for r in recs:
        g = r["instance_guid"]
        view = None
        if r["dv_windows"] is not None and r["dv_tail"] is not None and r["has_facts"]:
            ids_ = r["dv_system_ids"]
            view = StoredView(r["dv_windows"], r["dv_tail"], row_to_facts(r),
                              None if ids_ is None else frozenset(int(x) for x in ids_), r["dv_need"])
        out[g] = RoundState(rows.row_to_instance(r), r["s_generation"], tuple(by_runs.get(g, ())),
                            tuple(by_edges.get(g, ())), rows.rows_to_histories(by_hist.get(g, [])), view)
    return out


async def applied_keys_of(db: Db, pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], KeyEvent]:
    """:func:`applied_keys` for many (instance, key) pairs in one statement."""
    ps = sorted(set(pairs))
    if not ps:
        return {}
    recs = await db.fetch(
        """SELECT e.instance_guid, e.key, e.action, e.sequencer, e.event_time
           FROM unnest($1::text[], $2::text[]) AS u(g, k)
           JOIN event_keys e ON e.instance_guid = u.g AND e.key = u.k""", [g for g, _ in ps], [k for _, k in ps])
    return {(r["instance_guid"], r["key"]): KeyEvent(r["key"], r["action"], r["sequencer"], r["event_time"])
            for r in recs}


@dataclass(frozen=True, slots=True)
class ViewWrite:
    """The derived views after a write (:mod:`recovery.viewdelta`), stored with it."""

    windows: str               # windows_to_json text
    archive_tail: str          # the archive document's members after its backups, from TAIL_MARK on
    facts: ScanFacts


@dataclass(frozen=True, slots=True)
class RoundWrite:
    """One instance's share of a round: what to write, under which lease, from which state."""

    guid: str
    write: EventWrite
    lease_key: str
    lease_token: int
    generation: int             # the generation the round read (the derived view's)
    runs: tuple[WalRun, ...]    # the runs the round read
    view: ViewWrite | None = None


@dataclass(frozen=True, slots=True)
class RoundSaved:
    generations: dict[str, int]      # instance -> its new generation
    lost: frozenset[str]             # instances whose lease was lost (nothing written for them)
    views: frozenset[str]            # instances whose derived views were stored with the write


def _simple(w: EventWrite) -> bool:
    return (w.backups is None and not w.histories and w.pg_version is None and w.system_id is None
            and not w.resolved)


def _dedupe(rows_: Iterable[tuple[Any, ...]], width: int) -> list[tuple[Any, ...]]:
    """The last row for each key (the first ``width`` values): one statement may not touch a row twice."""
    return list({r[:width]: r for r in rows_}.values())


async def save_round(db: Db, items: Sequence[RoundWrite]) -> RoundSaved:
    """Store the effects of one round for many instances in ONE transaction.

    Each instance's scan_state row is locked (in instance order) and its lease checked (fencing): an
    instance whose lease is lost is left out (``lost``), the others are written. The common case (runs,
    edges, corrupt segments, keys) is written set-based, a few statements for all of them; an instance
    whose write carries backups, histories or resolved issues, or whose generation moved since the round
    read it, is written on its own (its stored runs re-read). Derived views given with a write are stored
    at the new generation when the instance's views were still those of the generation read.
    """
    if not items:
        return RoundSaved({}, frozenset(), frozenset())
    by = {i.guid: i for i in items}
    try:
        async with transaction(db) as c:
            locked = {r["instance_guid"]: int(r["generation"]) for r in await c.fetch(
                "SELECT instance_guid, generation FROM scan_state WHERE instance_guid = ANY($1::text[]) "
                "ORDER BY instance_guid FOR UPDATE", sorted(by))}
            held = await check_leases(c, {i.lease_key: i.lease_token for i in items})
            ok = [i for i in items if i.lease_key in held and i.guid in locked]
            lost = frozenset(by) - {i.guid for i in ok}
            bulk = [i for i in ok if locked[i.guid] == i.generation and _simple(i.write)]
            one = [i for i in ok if not (locked[i.guid] == i.generation and _simple(i.write))]
            for i in one:
                await write_one(c, i.guid, i.write)
            await _write_bulk(c, bulk)
            gens = {r["instance_guid"]: int(r["generation"]) for r in await c.fetch(
                """UPDATE scan_state s SET generation = s.generation + 1, last_event = greatest(s.last_event, u.t)
                   FROM unnest($1::text[], $2::timestamptz[]) AS u(g, t) WHERE s.instance_guid = u.g
                   RETURNING s.instance_guid, s.generation""",
                [i.guid for i in ok], [i.write.last_event for i in ok])}
            views = await _store_views(c, [i for i in bulk if i.view is not None], gens)
            return RoundSaved(gens, lost, views)
    except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError, OverflowError) as exc:
        raise CatalogError(f"a round of events rejected by the catalog, nothing saved: {exc}") from None


async def _write_bulk(c: Conn, items: Sequence[RoundWrite]) -> None:
    """Runs merged, corrupt segments, edges upserted and dropped, keys remembered: set-based."""
    gone: list[tuple[str, int, int]] = []
    new: list[tuple[str, int, int, int]] = []
    drop: list[tuple[str, int, int]] = []
    for i in items:
        w = i.write
        if not w.runs:
            continue
        stored = set(i.runs)
        merged = set(merge_runs([*stored, *w.runs]))
        g_, n_ = stored - merged, merged - stored
        gone += [(i.guid, r.timeline, r.first) for r in g_]
        new += [(i.guid, r.timeline, r.first, r.last) for r in n_]
        ends = {(r.timeline, r.last) for r in g_} - {(r.timeline, r.last) for r in merged}
        drop += [(i.guid, t, n) for t, n in ends - {(e.timeline, e.segno) for e in w.edges}]
    if gone:
        await c.execute(
            """DELETE FROM wal_runs w USING unnest($1::text[], $2::int[], $3::bigint[]) AS g(guid, timeline, first_segno)
               WHERE w.instance_guid = g.guid AND w.timeline = g.timeline AND w.first_segno = g.first_segno""",
            *_columns(gone, 3))
    if new:
        await c.execute(
            """INSERT INTO wal_runs (instance_guid, timeline, first_segno, last_segno)
               SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[], $4::bigint[])""", *_columns(new, 4))
    corrupt = _dedupe(((i.guid, x.timeline, x.segno, x.detail) for i in items for x in i.write.corrupt), 3)
    if corrupt:
        await c.execute(
            """INSERT INTO wal_conflicts (instance_guid, timeline, segno, detail, kind)
               SELECT g, t, n, d, 'corrupt' FROM unnest($1::text[], $2::int[], $3::bigint[], $4::text[]) AS u(g, t, n, d)
               ON CONFLICT (instance_guid, timeline, segno) DO UPDATE SET detail = EXCLUDED.detail, kind = 'corrupt'""",
            *_columns(corrupt, 4))
    edges = _dedupe(((i.guid, *rows.edge_to_args(e)) for i in items for e in i.write.edges), 3)
    if edges:
        await c.execute(
            """INSERT INTO window_edges (instance_guid, timeline, segno, last_commit_time, last_commit_lsn, exact)
               SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[], $4::timestamptz[], $5::pg_lsn[], $6::bool[])
               ON CONFLICT (instance_guid, timeline, segno) DO UPDATE SET last_commit_time = EXCLUDED.last_commit_time,
                   last_commit_lsn = EXCLUDED.last_commit_lsn, exact = EXCLUDED.exact""", *_columns(edges, 6))
    if drop:
        await c.execute(
            """DELETE FROM window_edges e USING unnest($1::text[], $2::int[], $3::bigint[]) AS k(guid, timeline, segno)
               WHERE e.instance_guid = k.guid AND e.timeline = k.timeline AND e.segno = k.segno""", *_columns(drop, 3))
    keys = [(i.guid, k.key, k.action, k.sequencer, k.event_time) for i in items for k in i.write.keys]
    keys = _dedupe(keys, 2)
    if keys:
        await c.execute(
            """INSERT INTO event_keys (instance_guid, key, action, sequencer, event_time)
               SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[])
               ON CONFLICT (instance_guid, key) DO UPDATE SET action = EXCLUDED.action,
                   sequencer = EXCLUDED.sequencer, event_time = EXCLUDED.event_time, applied_at = now()""",
            *_columns(keys, 5))


def _columns(rows_: Sequence[tuple[Any, ...]], width: int) -> list[list[Any]]:
    return [[r[n] for r in rows_] for n in range(width)]


async def _store_views(c: Conn, items: Sequence[RoundWrite], gens: dict[str, int]) -> frozenset[str]:
    """The derived views given with the writes, at each instance's new generation, where the stored views
    were those of the generation the round read (both rows, or neither: the reader recomputes)."""
    todo = [i for i in items if i.view is not None and i.guid in gens]
    if not todo:
        return frozenset()
    guids = [i.guid for i in todo]
    old = [i.generation for i in todo]
    new = [gens[i.guid] for i in todo]
    views = [i.view for i in todo if i.view is not None]
    done_v = {r["instance_guid"] for r in await c.fetch(
        """UPDATE scan_cache sc SET generation = u.new, windows = u.windows,
                  archive = substr(sc.archive, 1, strpos(sc.archive, $6) - 1) || u.tail, computed_at = now()
           FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::text[]) AS u(g, old, new, windows, tail)
           WHERE sc.instance_guid = u.g AND sc.generation = u.old AND strpos(sc.archive, $6) > 0
           RETURNING sc.instance_guid""",
        guids, old, new, [v.windows for v in views], [v.archive_tail for v in views], TAIL_MARK)}
    done_f = {r["instance_guid"] for r in await c.fetch(
        """UPDATE scan_cache_facts f SET generation = u.new, latest_end = u.latest_end, latest_end_exact = u.exact,
                  latest_end_kind = u.kind, hole_after_newest = u.hole::jsonb, archive_bytes = u.bytes,
                  windows = u.windows::jsonb, holes = u.holes::jsonb, computed_at = now()
           FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::timestamptz[], $5::bool[], $6::text[], $7::text[],
                       $8::bigint[], $9::text[], $10::text[])
                AS u(g, old, new, latest_end, exact, kind, hole, bytes, windows, holes)
           WHERE f.instance_guid = u.g AND f.generation = u.old
           RETURNING f.instance_guid""",
        guids, old, new, [v.facts.latest_end for v in views], [v.facts.latest_end_exact for v in views],
        [v.facts.latest_end_kind for v in views],
        [None if v.facts.hole_after_newest is None else _json(v.facts.hole_after_newest) for v in views],
        [v.facts.archive_bytes for v in views], [_json(list(v.facts.windows)) for v in views],
        [_json(list(v.facts.holes)) for v in views])}
    return frozenset(done_v & done_f)


def _json(v: Any) -> str:
    return json.dumps(v, separators=(",", ":"))


__all__ = ["TAIL_MARK", "RoundSaved", "RoundState", "RoundWrite", "StoredView", "ViewWrite", "applied_keys_of",
           "load_round", "save_round"]
