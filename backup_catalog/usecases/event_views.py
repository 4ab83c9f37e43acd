"""What a round of the event consumer computes besides the reads (:mod:`backup_catalog.usecases.events`):
the instance's derived views after its write, followed from the stored ones (:mod:`recovery.viewdelta`), and
the loader of the segment keys earlier events taught (asked only when an edge read needs them).
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from datetime import datetime

import asyncpg

from catalog import eventround, scancache
from catalog import events as cat_events
from recovery import viewdelta
from recovery.errors import PitrError
from recovery.jsonout import windows_to_json
from recovery.wal import DEFAULT_SEG_SIZE, merge_runs
from scheduler.eventapply import Known, Pending, neighbour_patterns
from scheduler.eventroute import Kind, Target

log = logging.getLogger("backup_catalog.usecases.events")


def known_loader(pool: asyncpg.Pool, guid: str, root: str, pending: Sequence[Pending], seg_size: int,
                  meaning: Callable[[str], Target]) -> Known:
    """The segment keys earlier events taught near this batch's segments: asked once, when needed."""
    memo: list[dict[tuple[int, int], tuple[str, datetime | None]]] = []

    async def load() -> dict[tuple[int, int], tuple[str, datetime | None]]:
        if memo:
            return memo[0]
        known: dict[tuple[int, int], tuple[str, datetime | None]] = {}
        patterns = sorted({pat for p in pending if p.target.kind is Kind.SEGMENT
                           for pat in neighbour_patterns(p, seg_size)})
        if patterns:
            for k in await cat_events.created_keys(pool, guid, root, like=patterns):
                t = meaning(k.key[len(root):])
                if t.kind is Kind.SEGMENT and t.timeline is not None and t.segno is not None:
                    lm = k.event_time.replace(microsecond=0) if k.event_time else None
                    known[(t.timeline, t.segno)] = (k.key, lm)
        memo.append(known)
        return known
    return load


def view_after(st: eventround.RoundState, w: cat_events.EventWrite) -> eventround.ViewWrite | None:
    """The instance's derived views after ``w``, followed from the stored ones (:mod:`recovery.viewdelta`)
    when ``w`` only grew one run at its end; None: recompute them after the write."""
    v = st.view
    if v is None or v.backup_need is None:
        log.debug("derived view of %s not followed: none stored for this scan", st.rec.guid)
        return None
    if w.corrupt or w.backups is not None or w.histories or w.pg_version is not None or w.system_id is not None \
            or w.resolved:
        log.debug("derived view of %s not followed: the write is not only WAL", st.rec.guid)
        return None
    merged = merge_runs([*st.runs, *w.runs])
    grown, gone = set(merged) - set(st.runs), set(st.runs) - set(merged)
    new, old = (next(iter(grown)), next(iter(gone))) if len(grown) == len(gone) == 1 else (None, None)
    if new is None or old is None or len(w.edges) != 1 or (new.timeline, new.first) != (old.timeline, old.first):
        log.debug("derived view of %s not followed: not one run grown at its end (%s -> %s, %d edges)",
                  st.rec.guid, gone, grown, len(w.edges))
        return None
    seg_size = st.rec.seg_size or DEFAULT_SEG_SIZE
    old_edge = next((e for e in st.edges if (e.timeline, e.segno) == (old.timeline, old.last)), None)
    try:
        tail = json.loads("{" + v.archive_tail[1:])
        views = viewdelta.Views(scancache.parse_windows(v.windows), tail, v.facts)
        got = viewdelta.extend(views, viewdelta.Extension(new.timeline, new.first, old.last, new.last, old_edge,
                                                          w.edges[0]),
                               runs=merged, histories=st.histories, seg_size=seg_size, need=v.backup_need)
    except (ValueError, KeyError, TypeError, PitrError) as e:     # a view it cannot read: recompute
        log.info("derived view of %s not followed: %s", st.rec.guid, e)
        return None
    if got is None:
        log.debug("derived view of %s not followed: viewdelta declines (backup need %s, run end %s -> %s)",
                  st.rec.guid, v.backup_need, old.last, new.last)
        return None
    sep = (",", ":")
    return eventround.ViewWrite(json.dumps(windows_to_json(got.windows), separators=sep),
                                "," + json.dumps(got.tail, separators=sep)[1:], got.facts)


__all__ = ["known_loader", "view_after"]
