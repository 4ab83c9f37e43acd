from __future__ import annotations

from dataclasses import replace

import pytest

from recovery.lsn import Lsn
from recovery.model import BackupStatus, BackupType, WalRun
from recovery.timeline import TimelinePath
from recovery.windows import (
    CutKind,
    WalIndex,
    compute_windows,
    edge_segments,
    holes,
    on_path,
    reach,
    serve_end,
    usable_backups,
    walk,
)
from tests.recovery.builders import (
    SWITCH,
    S,
    at,
    backup_at,
    edge,
    forked_snapshot,
    holed_snapshot,
    lsn,
    make_backup,
    make_snapshot,
    run,
    switch,
)

TL2 = TimelinePath.build(2, (switch(1, SWITCH),))
TL1 = TimelinePath.build(1, ())


def test_holes_between_runs_of_one_timeline() -> None:
    runs = [run(1, 2, 5), run(1, 7, 20), run(1, 30, 30), run(2, 11, 12), run(2, 14, 15)]
    assert holes(runs) == [(1, 6, 6), (1, 21, 29), (2, 13, 13)]


def test_holes_merges_overlapping_and_adjacent_runs_first() -> None:
    assert holes([run(1, 5, 9), run(1, 2, 4), run(1, 3, 7), run(1, 10, 10)]) == []
    assert WalIndex([run(1, 5, 9), run(1, 2, 4), run(1, 11, 12)]).runs() == [WalRun(1, 2, 9), WalRun(1, 11, 12)]


def test_wal_index_queries() -> None:
    idx = WalIndex([run(1, 2, 5), run(1, 7, 20)], [(1, 9)])
    assert idx.present(1, 2) and idx.present(1, 5) and not idx.present(1, 6) and not idx.present(2, 3)
    assert idx.first_present_in(1, 6, 100) == 7
    assert idx.first_present_in(1, 21, 100) is None
    assert idx.first_present_in(1, 0, 1) is None
    assert idx.first_block_in(1, 2, 9) == (9, CutKind.CONFLICT)
    assert idx.first_block_in(1, 10, 20) is None
    assert idx.last_present_in(1, 0, 100) == 20 and idx.last_present_in(1, 0, 6) == 5
    assert idx.last_present_in(1, 6, 6) is None and idx.last_present_in(1, 21, 99) is None
    assert idx.last_present_in(1, 8, 12) == 12 and idx.last_present_in(2, 0, 99) is None
    both = WalIndex([run(1, 2, 20)], [(1, 9), (1, 12)], [(1, 12), (1, 15)])
    assert both.first_block_in(1, 10, 20) == (12, CutKind.CORRUPT)     # corrupt wins over a conflict
    assert both.first_block_in(1, 13, 20) == (15, CutKind.CORRUPT)
    assert both.first_block_in(1, 0, 8) is None


def test_serve_end_and_segment_choice_follow_the_path() -> None:
    assert serve_end(TL2, 3, S) == 0xA
    assert serve_end(TL2, 0xB, S) >= 1 << 60
    assert [TL2.segment_tli(n, S) for n in (0xA, 0xB, 0xC)] == [1, 2, 2]


def test_walk_takes_the_new_timelines_switch_segment() -> None:
    idx = WalIndex([run(1, 2, 0xF), run(2, 0xB, 0x12)])
    last, cut = walk(idx, TL2, 2, S)
    assert (last, cut.kind, cut.first_missing) == (0x12, CutKind.END, 0x13)
    last1, cut1 = walk(idx, TL1, 2, S)
    assert (last1, cut1.first_missing) == (0xF, 0x10)


def test_walk_ignores_old_timeline_copy_when_new_switch_segment_missing() -> None:
    # TL1's own 0x0B is archived, TL2's is not: TL2's path is cut at 0x0B (hole: 0x0C.. present)
    idx = WalIndex([run(1, 2, 0xF), run(2, 0xC, 0x12)])
    last, cut = walk(idx, TL2, 2, S)
    assert (last, cut.kind, cut.first_missing, cut.last_missing) == (0xA, CutKind.HOLE, 0xB, 0xB)


def test_walk_stops_before_a_conflicting_segment() -> None:
    idx = WalIndex([run(1, 2, 9)], [(1, 6)])
    last, cut = walk(idx, TL1, 2, S)
    assert (last, cut.kind, cut.first_missing) == (5, CutKind.CONFLICT, 6)
    # a conflict on a timeline the path does not read there is harmless
    idx2 = WalIndex([run(1, 2, 0xF), run(2, 0xB, 0x12)], [(1, 0xD)])
    assert walk(idx2, TL2, 2, S)[1].kind is CutKind.END


def test_backup_on_path_rule() -> None:
    b1, b2 = backup_at("B1", 2, 1), backup_at("B2", 0xC, 40)
    assert on_path(b1, TL2) and on_path(b1, TL1)
    assert not on_path(b2, TL2)        # TL1 backup ending after the switchpoint
    assert on_path(b2, TL1)
    exactly = make_backup(start_lsn=lsn(0xA), stop_lsn=SWITCH)
    assert on_path(exactly, TL2)
    assert not on_path(make_backup(timeline=3), TL2)
    assert on_path(backup_at("C", 0xD, 50, timeline=2), TL2)


def test_usable_backups_filters_status_and_dependency_chains() -> None:
    f1 = make_backup(label="F1")
    i_ok = make_backup(label="I1", type=BackupType.INCR, depends_on=("F1",))
    i_missing = make_backup(label="I2", type=BackupType.INCR, depends_on=("F0",))
    failed = make_backup(label="F9", status=BackupStatus.FAILED)
    i_on_failed = make_backup(label="I3", type=BackupType.INCR, depends_on=("F9",))
    running = make_backup(label="R", status=BackupStatus.RUNNING)
    no_lsn = make_backup(label="N", stop_lsn=None)
    chain = make_backup(label="I4", type=BackupType.INCR, depends_on=("F1", "I2"))
    got = usable_backups([f1, i_ok, i_missing, failed, i_on_failed, running, no_lsn, chain])
    assert [b.label for b in got] == ["F1", "I1"]


def test_reach_needs_own_wal_up_to_stop() -> None:
    snap = make_snapshot(runs=(run(1, 2, 2), run(1, 4, 9)))
    b = make_backup(start_lsn=lsn(2, 0x28), stop_lsn=lsn(3, 0x100))
    assert reach(snap, TL1, b) is None
    # stop exactly on a segment boundary needs only the previous segment
    b_boundary = make_backup(start_lsn=lsn(2, 0x28), stop_lsn=lsn(3))
    r = reach(snap, TL1, b_boundary)
    assert r is not None and r.last_segment == 2 and r.cut.kind is CutKind.HOLE and r.end_lsn == lsn(3)


def test_reach_end_time_from_edges() -> None:
    snap = holed_snapshot()
    r1 = reach(snap, TL1, snap.backups[0])
    r2 = reach(snap, TL1, snap.backups[1])
    assert r1 is not None and r2 is not None
    assert (r1.last_segment, r1.end_lsn, r1.end_time, r1.end_exact, r1.cut.kind) == (5, lsn(6), at(20), True, CutKind.HOLE)
    assert (r2.last_segment, r2.end_lsn, r2.end_time, r2.cut.kind) == (20, lsn(21), at(90), CutKind.END)


def test_reach_approximate_or_unknown_end_time() -> None:
    snap = make_snapshot(edges=(edge(1, 9, 30, exact=False),))
    r = reach(snap, TL1, snap.backups[0])
    assert r is not None and r.end_time == at(30) and r.end_exact is False
    r2 = reach(make_snapshot(edges=()), TL1, make_backup())
    assert r2 is not None and r2.end_time is None and r2.end_exact is False


def test_reach_edge_falls_back_to_parent_when_new_timeline_has_no_commit() -> None:
    snap = forked_snapshot(edges=(edge(1, 0xA, 35), edge(2, 0x12, None)))
    r = reach(snap, TL2, snap.backups[0])
    assert r is not None and r.end_time == at(35) and r.end_exact


def test_windows_split_at_a_hole_and_merge_backups_sharing_wal() -> None:
    snap = holed_snapshot(backups=(backup_at("F1", 2, 1), backup_at("I1", 3, 5), backup_at("F2", 10, 50),
                                   backup_at("F3", 15, 70)))
    ws = compute_windows(snap, TL1)
    assert [(w.from_time, w.to_time, w.to_lsn, w.backups, w.end_kind) for w in ws] == [
        (at(1), at(20), lsn(6), ("F1", "I1"), CutKind.HOLE),
        (at(50), at(90), lsn(21), ("F2", "F3"), CutKind.END),
    ]
    assert all(w.timeline_path == (1,) and w.to_is_exact for w in ws)
    assert ws[0].from_lsn == lsn(2, 0x138)


def test_windows_per_path_after_a_fork() -> None:
    snap = forked_snapshot()
    w2 = compute_windows(snap, TL2)
    w1 = compute_windows(snap, TL1)
    assert [(w.timeline_path, w.backups, w.to_time, w.to_lsn) for w in w2] == [((1, 2), ("B1",), at(60), lsn(0x13))]
    assert [(w.timeline_path, w.backups, w.to_time, w.to_lsn) for w in w1] == [((1,), ("B1", "B2"), at(45), lsn(0x10))]


def test_windows_skip_unusable_backups() -> None:
    snap = holed_snapshot(backups=(backup_at("F1", 2, 1, status=BackupStatus.FAILED), backup_at("F2", 10, 50)))
    assert [w.backups for w in compute_windows(snap, TL1)] == [("F2",)]


def test_edge_segments_cover_every_possible_cut() -> None:
    snap = forked_snapshot(conflicts=((2, 0x10),))
    assert edge_segments(snap) == {(1, 0xF), (2, 0x12), (1, 0xA), (2, 0xF)}
    assert edge_segments(holed_snapshot()) == {(1, 5), (1, 20)}


@pytest.mark.parametrize("seg_size", [1 << 20, 16 << 20, 1 << 30])
def test_reach_with_other_segment_sizes(seg_size: int) -> None:
    b = make_backup(start_lsn=Lsn(3 * seg_size + 0x28), stop_lsn=Lsn(4 * seg_size + 8), seg_size=seg_size)
    snap = make_snapshot(seg_size=seg_size, backups=(b,), runs=(run(1, 3, 7),), edges=(edge(1, 7, 9),))
    r = reach(snap, TL1, b)
    assert r is not None and (r.first_segment, r.last_segment, r.end_lsn) == (3, 7, Lsn(8 * seg_size))
    assert reach(replace(snap, runs=(run(1, 3, 3),)), TL1, b) is None
