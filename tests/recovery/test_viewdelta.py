"""recovery.viewdelta: the views after a run grew at its end equal the views recomputed from the whole
snapshot, whenever ``extend`` gives them (generated archives: one or two timelines, holes, backups done and
not, blocked segments, edges exact or not)."""
from __future__ import annotations

import json
from dataclasses import asdict, replace
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from recovery.grading import facts_of
from recovery.jsonout import archive_to_dict, windows_from_json, windows_to_json
from recovery.model import ArchiveSnapshot, BackupStatus, CorruptSegment, WalRun, WindowEdge
from recovery.viewdelta import TAIL_KEYS, Extension, Views, backup_need, extend
from recovery.wal import merge_runs
from recovery.windows import all_windows
from tests.recovery.builders import SWITCH, S, at, backup_at, edge, make_snapshot, run, switch


def _views(snap: ArchiveSnapshot) -> Views:
    """The views as stored and read back (JSON round trips)."""
    w = all_windows(snap)
    facts = facts_of(snap, [x for ws in w.values() for x in ws])
    doc = json.loads(json.dumps(archive_to_dict(snap, w), separators=(",", ":")))
    return Views(windows_from_json(json.loads(json.dumps(windows_to_json(w)))), {k: doc[k] for k in TAIL_KEYS}, facts)


def _same(a: Views, b: Views) -> None:
    assert json.dumps(windows_to_json(a.windows)) == json.dumps(windows_to_json(b.windows))
    assert json.dumps(a.tail, separators=(",", ":")) == json.dumps(b.tail, separators=(",", ":"))
    fa, fb = (json.loads(json.dumps(asdict(f), default=str, sort_keys=True)) for f in (a.facts, b.facts))
    assert fa == fb


def _grow(snap: ArchiveSnapshot, tli: int, by: int, new_edge: WindowEdge) -> tuple[ArchiveSnapshot, Extension]:
    """What the event consumer writes: the timeline's last run longer, the old end's edge gone."""
    last = max((r for r in snap.runs if r.timeline == tli), key=lambda r: r.last)
    runs = tuple(merge_runs([*[r for r in snap.runs if r != last], WalRun(tli, last.first, last.last + by)]))
    old = next((e for e in snap.edges if (e.timeline, e.segno) == (tli, last.last)), None)
    edges = tuple(e for e in snap.edges if (e.timeline, e.segno) != (tli, last.last)) + (new_edge,)
    return (replace(snap, runs=runs, edges=edges),
            Extension(tli, last.first, last.last, last.last + by, old, new_edge))


def _extend(snap: ArchiveSnapshot, tli: int, by: int, new_edge: WindowEdge) -> tuple[Views | None, Views]:
    after, ext = _grow(snap, tli, by, new_edge)
    got = extend(_views(snap), ext, runs=after.runs, histories=snap.histories, seg_size=S, need=backup_need(snap))
    return got, _views(after)


def test_the_common_event_is_followed() -> None:
    snap = make_snapshot()                       # F1 at segment 2, WAL 2..9, edge at 9
    got, full = _extend(snap, 1, 1, edge(1, 10, 31))
    assert got is not None
    _same(got, full)
    assert got.facts.latest_end == at(31) and got.tail["wal"][0]["segments"] == 9


def test_a_second_timeline_and_a_hole_before_the_run() -> None:
    snap = make_snapshot(backups=(backup_at("B1", 2, 1), backup_at("B2", 0xC, 40, timeline=2),
                                  backup_at("B3", 0x11, 55, timeline=2)),     # the hole's "before"
                         runs=(run(1, 2, 0xF), run(2, 0xB, 0xD), run(2, 0x10, 0x12)),
                         histories={2: (switch(1, SWITCH),)},
                         edges=(edge(1, 0xA, 35), edge(1, 0xF, 45), edge(2, 0xD, 50), edge(2, 0x12, 60)))
    got, full = _extend(snap, 2, 3, edge(2, 0x15, 70))
    assert got is not None
    _same(got, full)
    # the old timeline's run grows past the switch, which the path to timeline 2 never reads: followed too
    got, full = _extend(replace(snap, backups=snap.backups[:2]), 1, 2, edge(1, 0x11, 50))
    assert got is not None
    _same(got, full)


def test_what_is_not_followed() -> None:
    snap = make_snapshot()
    # a done backup needing segments past the old end may become restorable
    pending = replace(snap, backups=(*snap.backups, backup_at("F2", 11, 40)))
    assert _extend(pending, 1, 2, edge(1, 11, 41))[0] is None
    # the new end has no commit on a path that would fall back to its parent timeline
    two = make_snapshot(runs=(run(1, 2, 0xB), run(2, 0xB, 0xD)), histories={2: (switch(1, SWITCH),)},
                        backups=(backup_at("B1", 2, 1),), edges=(edge(1, 0xB, 20), edge(2, 0xD, 30)))
    assert _extend(two, 2, 1, edge(2, 0xE, None, exact=False))[0] is None
    # the hole's "before" was the moved edge's time
    holed = make_snapshot(runs=(run(1, 2, 5), run(1, 7, 9)), edges=(edge(1, 5, 20), edge(1, 9, 30)))
    assert _extend(holed, 1, 1, edge(1, 10, 40))[0] is None


@st.composite
def archives(draw: Any) -> tuple[ArchiveSnapshot, int, int, WindowEdge]:
    two = draw(st.booleans())
    runs: list[WalRun] = []
    for tli, lo, hi in ((1, 1, 30), *(((2, 0xB, 40),) if two else ())):
        n = lo + draw(st.integers(0, 3))
        for _ in range(draw(st.integers(1, 3))):
            if n > hi:
                break
            length = draw(st.integers(0, 6))
            runs.append(run(tli, n, min(hi, n + length)))
            n += length + 1 + draw(st.integers(1, 4))
    tlis = sorted({r.timeline for r in runs})
    backups = []
    for i in range(draw(st.integers(0, 4))):
        tli = draw(st.sampled_from(tlis))
        seg = draw(st.integers(1 if tli == 1 else 0xB, 45))
        status = draw(st.sampled_from([BackupStatus.DONE, BackupStatus.DONE, BackupStatus.FAILED]))
        backups.append(backup_at(f"B{i}", seg, 10 + i, timeline=tli, status=status))
    ends = {(r.timeline, r.last) for r in runs}
    edges = []
    for tli, segno in sorted(ends):
        minute = draw(st.one_of(st.none(), st.integers(0, 100)))
        edges.append(edge(tli, segno, minute, exact=draw(st.booleans()) and minute is not None))
    corrupt: tuple[CorruptSegment, ...] = ()
    conflicts: tuple[tuple[int, int], ...] = ()
    if draw(st.booleans()):
        r = draw(st.sampled_from(runs))
        seg = draw(st.integers(r.first, r.last))
        if draw(st.booleans()):
            corrupt = (CorruptSegment(r.timeline, seg, "bad"),)
        else:
            conflicts = ((r.timeline, seg),)
    snap = make_snapshot(runs=tuple(merge_runs(runs)), backups=tuple(backups), edges=tuple(edges),
                         histories={2: (switch(1, SWITCH),)} if 2 in tlis else {}, corrupt=corrupt,
                         conflicts=conflicts)
    tli = draw(st.sampled_from(tlis))
    last = max(r.last for r in snap.runs if r.timeline == tli)
    by = draw(st.integers(1, 5))
    minute = draw(st.one_of(st.none(), st.integers(0, 120)))
    new = edge(tli, last + by, minute, exact=draw(st.booleans()) and minute is not None)
    return snap, tli, by, new


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(archives())
def test_extend_equals_recompute(case: tuple[ArchiveSnapshot, int, int, WindowEdge]) -> None:
    snap, tli, by, new = case
    got, full = _extend(snap, tli, by, new)
    event("followed" if got is not None else "recomputed")
    if got is not None:
        _same(got, full)
