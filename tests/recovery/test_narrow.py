"""Planning from a narrowed snapshot with precomputed windows gives the whole snapshot's plan.

The HTTP path loads only the newest candidate backups (``recovery.narrow.narrow``, mirrored in SQL by
``catalog.repo.load_plan_snapshot``) and the windows stored at scan time. Invariant: whenever that
plans, the plan equals the one from the whole snapshot; when the whole snapshot is refused, so is the
narrowed one (its refusal is never shown: the caller re-plans from the whole snapshot).
"""
from __future__ import annotations

import json
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

from recovery.errors import PlanningError
from recovery.jsonout import windows_from_json, windows_to_json
from recovery.model import ArchiveSnapshot, Backup, BackupStatus, BackupType
from recovery.narrow import narrow, narrowable
from recovery.plan import RecoveryPlan, WindowsUnknown, plan_recovery
from recovery.target import Target, make_target
from recovery.timeline import TimelinePath
from recovery.windows import all_windows
from tests.recovery.builders import NOW, SWITCH, at, backup_at, edge, lsn, make_snapshot, run, switch


@st.composite
def snapshots(draw: st.DrawFn) -> ArchiveSnapshot:
    forked = draw(st.booleans())
    runs = [run(1, 2, 0x18)]
    holes = draw(st.lists(st.integers(3, 0x17), max_size=3, unique=True))
    for h in sorted(holes, reverse=True):   # cut TL1 runs around each hole
        new = []
        for r in runs:
            if r.first <= h <= r.last:
                if r.first <= h - 1:
                    new.append(run(1, r.first, h - 1))
                if h + 1 <= r.last:
                    new.append(run(1, h + 1, r.last))
            else:
                new.append(r)
        runs = new
    histories = {}
    edges = [edge(1, r.last, 3.0 * r.last + draw(st.sampled_from([0.5, 1.5])),
                  exact=draw(st.booleans())) for r in runs]
    if forked:
        runs.append(run(2, 0xB, 0x1C))
        histories = {2: (switch(1, SWITCH),)}
        edges.append(edge(2, 0x1C, 90))
    backups: list[Backup] = []
    n = draw(st.integers(0, 9))
    for i in range(n):
        seg = draw(st.integers(2, 0x1B))
        tl = 2 if forked and seg >= 0xC and draw(st.booleans()) else 1
        minute = 3.0 * seg + draw(st.sampled_from([0.2, 0.7]))
        status = draw(st.sampled_from([BackupStatus.DONE] * 4 + [BackupStatus.FAILED, BackupStatus.RUNNING]))
        deps: tuple[str, ...] = ()
        btype = BackupType.FULL
        if backups and draw(st.booleans()):
            dep = draw(st.sampled_from([b.label for b in backups] + ["GONE"]))
            deps, btype = (dep,), BackupType.INCR
        b = backup_at(f"B{i:02d}", seg, minute, timeline=tl, status=status, depends_on=deps, type=btype)
        if draw(st.integers(0, 9)) == 0:
            b = replace(b, stop_time=None)
        backups.append(b)
    conflicts = tuple((1, c) for c in draw(st.lists(st.integers(3, 0x17), max_size=1)))
    return make_snapshot(backups=tuple(backups), runs=tuple(runs), histories=histories, edges=tuple(edges),
                         conflicts=conflicts)


@st.composite
def targets(draw: st.DrawFn) -> Target:
    timeline = draw(st.sampled_from(["latest", "latest", 1, 2, "current"]))
    kind = draw(st.sampled_from(["time", "time", "lsn", "latest", "immediate"]))
    exclusive = draw(st.booleans())
    if kind == "time":
        return make_target(point_in_time=at(draw(st.floats(0, 100)).__round__(1)), timeline=timeline,
                           exclusive=exclusive)
    if kind == "lsn":
        return make_target(lsn=lsn(draw(st.integers(1, 0x1D)), draw(st.integers(0, 0x200))), timeline=timeline,
                           exclusive=exclusive)
    if kind == "immediate":
        return make_target(immediate=True)
    return make_target(latest=True, timeline=timeline)


def outcome(snap: ArchiveSnapshot, target: Target, **kw: object) -> object:
    try:
        return plan_recovery(snap, target, now=NOW, pg_version=15, **kw)  # type: ignore[arg-type]
    except PlanningError as e:
        return ("refused", e.code)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(snapshots(), targets(), st.integers(1, 4))
def test_narrowed_plan_equals_whole_plan(snap: ArchiveSnapshot, target: Target, k: int) -> None:
    whole = outcome(snap, target)
    try:
        windows = all_windows(snap)
    except Exception:    # an invalid history: the whole-snapshot planner refuses it; nothing to narrow
        assert isinstance(whole, tuple)
        return
    if not narrowable(target):
        return
    part, prefix = narrow(snap, target, k)
    try:
        narrowed = outcome(part, target, windows=windows, narrowed=True)
    except WindowsUnknown:
        return       # the caller plans from the whole snapshot
    if isinstance(narrowed, tuple):
        return       # a narrowed refusal is never shown: the caller re-plans from the whole snapshot
    assert isinstance(narrowed, RecoveryPlan)
    if narrowed.backup.label not in prefix:
        return       # chose a dependency outside the prefix: inconclusive, the caller re-plans
    note(f"snap={snap!r}\ntarget={target!r} k={k}\nnarrowed={narrowed!r}\nwhole={whole!r}")
    event("narrowed plan compared")
    assert narrowed == whole


def test_narrow_keeps_newest_candidates_and_their_chains() -> None:
    f = backup_at("F", 2, 1)
    i1 = backup_at("I1", 4, 10, depends_on=("F",), type=BackupType.INCR)
    i2 = backup_at("I2", 6, 20, depends_on=("I1", "F"), type=BackupType.INCR)
    late = backup_at("LATE", 9, 40)
    failed = backup_at("X", 8, 30, status=BackupStatus.FAILED)
    snap = make_snapshot(backups=(f, i1, i2, failed, late), runs=(run(1, 2, 12),))
    t = make_target(point_in_time=at(25))
    part, prefix = narrow(snap, t, 1)
    assert {b.label for b in part.backups} == {"I2", "I1", "F"} and prefix == {"I2"}
    part, prefix = narrow(snap, t, 3)
    assert {b.label for b in part.backups} == {"I2", "I1", "F"} and prefix == {"I2", "I1", "F"}
    part, prefix = narrow(snap, make_target(latest=True), 1)
    assert {b.label for b in part.backups} == {"LATE"} and prefix == {"LATE"}
    assert narrow(snap, make_target(point_in_time=at(0)), 4) == (replace(snap, backups=()), frozenset())


def test_windows_for_an_unknown_path_are_not_guessed() -> None:
    snap = make_snapshot()
    windows = {(1,): all_windows(snap)[(1,)]}
    forked = replace(snap, runs=snap.runs + (run(2, 0xB, 0xC),), histories={2: (switch(1, SWITCH),)})
    try:
        plan_recovery(forked, make_target(latest=True), now=NOW, windows=windows, narrowed=True)
    except WindowsUnknown as e:
        assert e.args[0] == TimelinePath.build(2, (switch(1, SWITCH),)).tlis
    else:
        raise AssertionError("a path without precomputed windows must not be planned from partial data")
    # the whole snapshot: the path's windows are computed, the plan is the one made without windows
    whole = plan_recovery(forked, make_target(latest=True), now=NOW, windows=windows)
    assert whole == plan_recovery(forked, make_target(latest=True), now=NOW)


def test_windows_json_round_trip_is_exact() -> None:
    snap = make_snapshot(backups=(backup_at("F1", 2, 1), backup_at("F2", 4, 7.123456)),
                         runs=(run(1, 2, 5), run(1, 7, 9)), edges=(edge(1, 5, 16), edge(1, 9, 30, exact=False)))
    w = all_windows(snap)
    assert windows_from_json(json.loads(json.dumps(windows_to_json(w)))) == w
    with pytest.raises(ValueError, match="windows"):
        windows_from_json([[[1], [["x", None, 1, None, True, [], "end"]]]])
    with pytest.raises(ValueError, match="windows"):
        windows_from_json({"not": "windows"})

