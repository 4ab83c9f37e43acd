"""Plans along paths whose WAL is cut after the backup: holes, conflicting copies, corrupt segments.

``latest`` stops before the cut with a warning naming it and the later WAL it cannot reach; time and LSN
targets at or past the cut are refused (``wal_gap`` / ``wal_conflict`` / ``wal_corrupt``, with the horizon).
The exhaustive part puts one hole, conflict or corrupt segment at every position of a small archive.
"""
from __future__ import annotations

import itertools

import pytest

from recovery.errors import PlanningError
from recovery.model import ArchiveSnapshot, CorruptSegment
from recovery.plan import RecoveryPlan, plan_recovery
from recovery.target import Target, make_target
from recovery.timeline import TimelinePath
from recovery.wal import segment_name
from recovery.windows import CutKind, WalIndex, compute_windows, walk
from tests.recovery.builders import (
    NOW,
    S,
    at,
    backup_at,
    edge,
    forked_snapshot,
    holed_snapshot,
    lsn,
    make_snapshot,
    run,
)


def plan(snap: ArchiveSnapshot, target: Target) -> RecoveryPlan:
    return plan_recovery(snap, target, now=NOW, pg_version=15)


def refuse(snap: ArchiveSnapshot, target: Target) -> PlanningError:
    with pytest.raises(PlanningError) as e:
        plan(snap, target)
    return e.value


def seg(n: int, tli: int = 1) -> str:
    return segment_name(tli, n, S)


LATEST = make_target(latest=True)


def time(minute: float) -> Target:
    return make_target(point_in_time=at(minute).isoformat())


# -- holes --------------------------------------------------------------------------------------

def test_latest_through_a_range_of_missing_segments() -> None:
    snap = make_snapshot(backups=(backup_at("F1", 2, 1),), runs=(run(1, 2, 5), run(1, 9, 20)),
                         edges=(edge(1, 5, 20), edge(1, 20, 90)))
    p = plan(snap, LATEST)
    assert (p.backup.label, p.first_segment, p.last_segment, p.segments) == ("F1", seg(2), seg(5), 4)
    assert p.end_of_wal and p.recovery_settings == (("recovery_target_timeline", "latest"),)
    assert p.end_lsn == lsn(5, 0x100) and p.last_commit_time == at(20)
    (w,) = p.warnings
    assert f"WAL segments {seg(6)}..{seg(8)} are missing on timeline path [1]" in w
    assert f"later archived WAL {seg(9)}..{seg(20)} cannot be reached" in w
    assert "2026-01-01T12:20:00Z" in w
    assert p.window.end_kind is CutKind.HOLE and p.window.to_time == at(20)


def test_latest_through_a_hole_with_an_approximate_edge() -> None:
    snap = holed_snapshot(backups=(backup_at("F1", 2, 1),), edges=(edge(1, 5, 20, exact=False), edge(1, 20, 90)))
    p = plan(snap, LATEST)
    assert p.end_lsn == lsn(5, 0x28) and p.last_commit_time is None    # into the last segment, time unknown
    assert "approximately (object LastModified) at 2026-01-01T12:20:00Z" in p.warnings[0]


def test_latest_through_a_hole_without_any_edge() -> None:
    snap = holed_snapshot(backups=(backup_at("F1", 2, 1),), edges=())
    p = plan(snap, LATEST)
    assert p.last_segment == seg(5) and p.end_lsn == lsn(5, 0x28) and p.last_commit_time is None
    assert "last commit time is unknown" in p.warnings[0]


def test_end_lsn_is_the_last_segments_first_record_when_the_last_commit_is_earlier() -> None:
    # the last segment holds no commit: the edge's commit is in segment 4, replay must still read segment 5
    snap = holed_snapshot(backups=(backup_at("F1", 2, 1),), edges=(edge(1, 5, 20, commit_lsn=lsn(4, 0x500)),))
    assert plan(snap, LATEST).end_lsn == lsn(5, 0x28)


def test_latest_without_a_cut_has_no_warning_and_reaches_the_last_commit() -> None:
    p = plan(holed_snapshot(), LATEST)     # F2 starts after the hole
    assert p.backup.label == "F2" and p.warnings == () and p.end_lsn == lsn(20, 0x100)
    assert p.last_commit_time == at(90)


def test_latest_when_the_newest_backup_needs_missing_wal_uses_an_older_one() -> None:
    # F2's own WAL (segment 6) is missing: F1 replays up to the hole
    snap = holed_snapshot(backups=(backup_at("F1", 2, 1), backup_at("F2", 6, 21)))
    p = plan(snap, LATEST)
    assert p.backup.label == "F1" and p.last_segment == seg(5) and seg(6) in p.warnings[0]


def test_latest_stops_at_the_first_of_several_holes() -> None:
    snap = make_snapshot(backups=(backup_at("F1", 2, 1),), runs=(run(1, 2, 5), run(1, 7, 9), run(1, 12, 20)),
                         edges=(edge(1, 5, 20), edge(1, 9, 40), edge(1, 20, 90)))
    p = plan(snap, LATEST)
    assert p.last_segment == seg(5)
    assert f"WAL segment {seg(6)} is missing" in p.warnings[0] and f"{seg(7)}..{seg(20)}" in p.warnings[0]


def test_specific_targets_inside_or_after_a_hole_stay_refused() -> None:
    snap = holed_snapshot(backups=(backup_at("F1", 2, 1),))
    for target in (time(30), time(95), time(200), make_target(lsn=str(lsn(6, 0x10))),
                   make_target(lsn=str(lsn(15))), make_target(lsn=str(lsn(5, 0xFFFF00)))):
        if target.kind.value == "lsn" and target.lsn < lsn(6):
            assert plan(snap, target).last_segment == seg(5)
            continue
        e = refuse(snap, target)
        assert e.code == "wal_gap", (target, e.message)
        assert e.details["first_missing"] == seg(6) and e.details["horizon_lsn"] == lsn(6)
        assert e.details["horizon_time"] == at(20) and "recoverable up to 2026-01-01T12:20:00Z" in e.message
    assert plan(snap, time(10)).last_segment == seg(5)


def test_fork_hole_on_the_new_timeline() -> None:
    # TL2 has 0xB..0xD, then 0xE missing, then 0xF..0x12
    snap = forked_snapshot(runs=(run(1, 2, 0xF), run(2, 0xB, 0xD), run(2, 0xF, 0x12)),
                           edges=(edge(1, 0xA, 35), edge(1, 0xF, 45), edge(2, 0xD, 50), edge(2, 0x12, 60)))
    p = plan(snap, LATEST)
    assert p.timeline_path == (1, 2) and p.backup.label == "B1" and p.last_segment == seg(0xD, 2)
    assert f"WAL segment {seg(0xE, 2)} is missing on timeline path [1, 2]" in p.warnings[0]
    assert f"{seg(0xF, 2)}..{seg(0x12, 2)} cannot be reached" in p.warnings[0]
    assert p.end_lsn == lsn(0xD, 0x100) and p.last_commit_time == at(50)
    # the old timeline on its own is whole
    p1 = plan(snap, make_target(latest=True, timeline=1))
    assert p1.timeline_path == (1,) and p1.warnings == () and p1.last_segment == seg(0xF)


def test_fork_hole_on_the_old_timeline_after_the_switch_is_not_on_the_new_path() -> None:
    snap = forked_snapshot(runs=(run(1, 2, 0xC), run(1, 0xE, 0xF), run(2, 0xB, 0x12)))
    p = plan(snap, LATEST)
    assert p.warnings == () and p.last_segment == seg(0x12, 2)
    p1 = plan(snap, make_target(latest=True, timeline=1))
    assert p1.backup.label == "B2" and p1.last_segment == seg(0xC) and seg(0xD) in p1.warnings[0]


def test_latest_on_the_new_timeline_when_its_first_segment_is_missing() -> None:
    # switch segment 0xB of TL2 missing: TL1's own 0xB is not on the TL2 path
    snap = forked_snapshot(runs=(run(1, 2, 0xF), run(2, 0xC, 0x12)), edges=(edge(1, 0xA, 35), edge(2, 0x12, 60)))
    p = plan(snap, LATEST)
    assert p.timeline_path == (1, 2) and p.last_segment == seg(0xA)
    assert f"WAL segment {seg(0xB, 2)} is missing" in p.warnings[0]
    assert p.end_lsn == lsn(0xA, 0x100)


# -- conflicts ----------------------------------------------------------------------------------

NOTE = "two copies with different checksums for one segment (identical content): a and b; the tool refuses it"


@pytest.mark.parametrize("notes, words", [({(1, 6): NOTE}, f"has conflicting archived copies ({NOTE})"),
                                          ({}, "has conflicting archived copies, so replay")])
def test_conflict_reason_is_the_scanners_note(notes: dict[tuple[int, int], str], words: str) -> None:
    """The planner names no tool: what the tool does with the copies is the scanner's note (the layout's words)."""
    snap = make_snapshot(conflicts=((1, 6),), conflict_notes=notes, edges=(edge(1, 5, 15), edge(1, 9, 30)))
    e = refuse(snap, time(20))
    assert e.code == "wal_conflict" and words in e.message and seg(6) in e.message
    p = plan(snap, LATEST)
    assert p.last_segment == seg(5) and words.removesuffix(", so replay") in p.warnings[0]
    assert f"{seg(6)}..{seg(9)} cannot be reached" in p.warnings[0]


# -- corrupt segments ---------------------------------------------------------------------------

BAD = CorruptSegment(1, 7, "segment starts at 0/6000000 (segno 6), expected segno 7")


def corrupt_snapshot(**kw: object) -> ArchiveSnapshot:
    """WAL 2..9 present, segment 7 proven bad; last commit before it (segment 6) at min 18."""
    base: dict[str, object] = {"backups": (backup_at("F1", 2, 1),), "corrupt": (BAD,),
                               "edges": (edge(1, 6, 18), edge(1, 9, 30))}
    return make_snapshot(**{**base, **kw})


def test_corrupt_segment_cuts_the_window() -> None:
    snap = corrupt_snapshot()
    (w,) = compute_windows(snap, TimelinePath.build(1, ()))
    assert w.end_kind is CutKind.CORRUPT and w.to_lsn == lsn(7) and w.to_time == at(18) and w.to_is_exact
    last, cut = walk(WalIndex.of(snap), TimelinePath.build(1, ()), 2, S)
    assert (last, cut.kind, cut.first_missing, cut.last_missing) == (6, CutKind.CORRUPT, 7, 7)


def test_corrupt_segment_refuses_targets_past_it() -> None:
    snap = corrupt_snapshot()
    for target in (time(20), time(40), make_target(lsn=str(lsn(7, 0x28))), make_target(lsn=str(lsn(9)))):
        e = refuse(snap, target)
        assert e.code == "wal_corrupt", e.message
        assert e.details["segment"] == seg(7) and e.details["reason"] == BAD.reason
        assert seg(7) in e.message and BAD.reason in e.message and "recoverable up to 2026-01-01T12:18:00Z" in e.message
    assert plan(snap, time(10)).last_segment == seg(6)


def test_latest_stops_before_a_corrupt_segment_with_a_warning() -> None:
    p = plan(corrupt_snapshot(), LATEST)
    assert p.end_of_wal and p.last_segment == seg(6) and p.end_lsn == lsn(6, 0x100) and p.last_commit_time == at(18)
    (w,) = p.warnings
    assert f"WAL segment {seg(7)} is corrupt ({BAD.reason})" in w and f"{seg(7)}..{seg(9)} cannot be reached" in w


def test_time_after_the_last_commit_before_a_corrupt_segment_is_refused_not_end_of_wal() -> None:
    # a time after min 18 might have commits in the corrupt segment: never "recover to the end of WAL"
    assert refuse(corrupt_snapshot(), time(19)).code == "wal_corrupt"


def test_a_backup_after_the_corrupt_segment_is_unaffected() -> None:
    snap = corrupt_snapshot(backups=(backup_at("F1", 2, 1), backup_at("F2", 8, 25)))
    p = plan(snap, LATEST)
    assert p.backup.label == "F2" and p.warnings == () and p.last_segment == seg(9)
    assert plan(snap, time(28)).backup.label == "F2"
    assert refuse(snap, time(22)).code == "wal_corrupt"     # between F1's cut and F2's stop


def test_a_backup_whose_own_wal_is_corrupt_is_unusable() -> None:
    snap = corrupt_snapshot(backups=(backup_at("F3", 7, 20),))
    e = refuse(snap, LATEST)
    assert e.code == "no_usable_backup" and "(corrupt)" in e.message and e.details["first_missing"] == seg(7)


def test_corrupt_on_another_timeline_does_not_matter() -> None:
    snap = forked_snapshot(corrupt=(CorruptSegment(1, 0xD, "bad magic"),))
    assert plan(snap, LATEST).warnings == ()
    p1 = plan(snap, make_target(latest=True, timeline=1))
    assert p1.last_segment == seg(0xC) and "bad magic" in p1.warnings[0]


def test_corrupt_switch_segment_on_the_new_timeline() -> None:
    snap = forked_snapshot(corrupt=(CorruptSegment(2, 0xB, "wrong system identifier"),))
    p = plan(snap, LATEST)
    assert p.last_segment == seg(0xA) and p.end_lsn == lsn(0xA, 0x100)
    assert f"WAL segment {seg(0xB, 2)} is corrupt (wrong system identifier)" in p.warnings[0]
    assert refuse(snap, time(50)).code == "wal_corrupt"


# -- every position ----------------------------------------------------------------------------

def _archive(kind: str, k: int) -> ArchiveSnapshot:
    """WAL 2..20 with segment ``k`` missing / conflicting / corrupt; F1 at 2 (min 1), F2 at 10 (min 50);
    an exact edge at the end of every segment (commit at min 3*n, LSN n/0x100)."""
    runs = (run(1, 2, 20),) if kind != "hole" else tuple(r for r in (run(1, 2, k - 1), run(1, k + 1, 20))
                                                         if r.first <= r.last)
    edges = tuple(edge(1, n, 3 * n) for n in range(2, 21) if kind != "hole" or n != k)
    return make_snapshot(backups=(backup_at("F1", 2, 1), backup_at("F2", 10, 30.5)), runs=runs, edges=edges,
                         conflicts=((1, k),) if kind == "conflict" else (),
                         corrupt=(CorruptSegment(1, k, "bad"),) if kind == "corrupt" else ())


CODES = {"hole": "wal_gap", "conflict": "wal_conflict", "corrupt": "wal_corrupt"}


BACKUPS = (("F2", 10, 30.5), ("F1", 2, 1))    # label, start segment, stop minute (newest first)


def _expected_time(kind: str, k: int, minute: float) -> tuple[str, ...]:
    """What the planner must answer for a time target, from the rules (LAYOUTS §8.1, §8.4)."""
    for label, s0, stop in BACKUPS:
        if stop > minute or k == s0:          # not a candidate, or its own WAL is cut
            continue
        last, end, cut = (k - 1, 3 * (k - 1), True) if k > s0 else (20, 60, False)
        if minute < end:
            return ("target", label)
        if minute == end or not cut:          # the last commit itself, or after the end of WAL
            return ("end_of_wal", label, seg(last))
        return ("refused", CODES[kind])
    return ("refused", "no_usable_backup")


def _expected_lsn(kind: str, k: int, n: int) -> tuple[str, ...]:
    target = lsn(n, 0x200)
    for label, s0, _stop in BACKUPS:
        if lsn(s0, 0x138) > target or k == s0:
            continue
        end = lsn(k) if k > s0 else lsn(21)
        if target < end:
            return ("target", label, seg(n))
        return ("refused", CODES[kind] if k > s0 else "target_after_window")
    return ("refused", "no_usable_backup")


def _outcome(snap: ArchiveSnapshot, target: Target, with_segment: bool) -> tuple[str, ...]:
    try:
        p = plan(snap, target)
    except PlanningError as e:
        return ("refused", e.code)
    if p.end_of_wal:
        return ("end_of_wal", p.backup.label, p.last_segment)
    return ("target", p.backup.label, p.last_segment) if with_segment else ("target", p.backup.label)


@pytest.mark.parametrize("kind, k", list(itertools.product(CODES, range(3, 20))))
def test_every_cut_position(kind: str, k: int) -> None:
    snap = _archive(kind, k)
    idx = WalIndex.of(snap)
    p = plan(snap, LATEST)
    newest = "F2" if k != 10 else "F1"     # F2's own WAL is segment 10
    start = 10 if newest == "F2" else 2
    cut_after = k > start
    last = k - 1 if cut_after else 20
    assert (p.backup.label, p.last_segment, p.segments, p.end_of_wal) == (newest, seg(last), last - start + 1, True)
    assert p.end_lsn == lsn(last, 0x100) and p.last_commit_time == at(3 * last)
    assert len(p.warnings) == int(cut_after) and (not cut_after or seg(k) in p.warnings[0])
    assert all(idx.present(1, n) and idx.first_block_in(1, n, n) is None for n in range(start, last + 1))
    for minute in [0.5, 2, 29, 30.5, 31, 61, *(3 * n for n in range(2, 21)), *(3 * n + 1 for n in range(2, 21))]:
        got = _outcome(snap, time(minute), False)
        want = _expected_time(kind, k, minute)
        if want == ("refused", "no_usable_backup") and minute < 1:
            want = ("refused", "target_before_window")
        assert got == want, (kind, k, minute)
    for n in range(2, 21):
        got = _outcome(snap, make_target(lsn=str(lsn(n, 0x200))), True)
        assert got == _expected_lsn(kind, k, n), (kind, k, n)
