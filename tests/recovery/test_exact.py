"""Exact targets (before-xid, restore-point): resolution from the WAL index's facts and the planner's rules."""
from __future__ import annotations

from dataclasses import replace

import pytest

from recovery.errors import PlanningError
from recovery.exact import (
    CommitPoint,
    ExactPoint,
    RestorePoint,
    SegmentSummary,
    by_lsn,
    nearest_xids,
    parse_point_name,
    parse_xid,
    resolve_restore_point,
    resolve_xid,
    xid_segments,
)
from recovery.lsn import Lsn
from recovery.plan import RecoveryPlan, plan_recovery
from recovery.render import render_files
from recovery.target import Target, TargetKind, make_target
from recovery.timeline import TimelinePath
from tests.recovery.builders import (
    NOW,
    SWITCH,
    S,
    at,
    backup_at,
    edge,
    forked_snapshot,
    holed_snapshot,
    lsn,
    make_snapshot,
    plan_to_dict,
    switch,
)

P1 = TimelinePath.build(1, ())
P2 = TimelinePath.build(2, (switch(1, SWITCH),))     # TL1 [0, 0/B02E650), TL2 after


def rp(name: str, segno: int, minute: float, tli: int = 1, off: int = 0x200) -> RestorePoint:
    return RestorePoint(name, at(minute), lsn(segno, off), tli)


def cp(xid: int, segno: int, minute: float, tli: int = 1, kind: str = "commit", off: int = 0x300) -> CommitPoint:
    return CommitPoint(xid, at(minute), lsn(segno, off), tli, kind)


# -- target requests ------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, kind, value, inclusive, pick", [
    ({"before_xid": 748}, TargetKind.XID, 748, False, None),
    ({"before_xid": " 748 "}, TargetKind.XID, 748, False, None),
    ({"before_xid": "4294967295"}, TargetKind.XID, 4294967295, False, None),
    ({"restore_point": "before-migration"}, TargetKind.NAME, "before-migration", True, None),
    ({"restore_point": "it's", "restore_point_lsn": "0/5000200"}, TargetKind.NAME, "it's", True,
     Lsn.parse("0/5000200")),
    ({"restore_point": "x", "timeline": 2}, TargetKind.NAME, "x", True, None),
])
def test_make_exact_target(kwargs: dict[str, object], kind: TargetKind, value: object, inclusive: bool,
                           pick: Lsn | None) -> None:
    t = make_target(**kwargs)  # type: ignore[arg-type]
    assert (t.kind, t.value, t.inclusive, t.pick, t.point) == (kind, value, inclusive, pick, None)
    assert t.exact


@pytest.mark.parametrize("kwargs, needle", [
    ({"before_xid": 748, "lsn": "0/1"}, "got lsn, before-xid"),
    ({"before_xid": 748, "restore_point": "a"}, "got before-xid, restore-point"),
    ({"before_xid": "abc"}, "not a transaction id"),
    ({"before_xid": 2}, "not a normal xid"),
    ({"before_xid": 1 << 32}, "not a normal xid"),
    ({"before_xid": True}, "not a transaction id"),
    ({"before_xid": -5}, "not a normal xid"),
    ({"before_xid": 748, "exclusive": True}, "exclusive does not apply"),
    ({"before_xid": 748, "timeline": "current"}, "timeline current does not apply"),
    ({"restore_point": ""}, "non-empty"),
    ({"restore_point": 5}, "non-empty name"),
    ({"restore_point": "x" * 64}, "longer than 63 bytes"),
    ({"restore_point": "a\0b"}, "NUL"),
    ({"restore_point": "a", "restore_point_lsn": "zz"}, "not an LSN"),
    ({"latest": True, "restore_point_lsn": "0/1"}, "picks an occurrence"),
])
def test_make_exact_target_refused(kwargs: dict[str, object], needle: str) -> None:
    with pytest.raises(PlanningError) as e:
        make_target(**kwargs)  # type: ignore[arg-type]
    assert e.value.code == "invalid_target" and needle in e.value.message


def test_parse_helpers() -> None:
    assert parse_xid(3) == 3 and parse_point_name("é" * 31) == "é" * 31
    with pytest.raises(PlanningError):
        parse_point_name("é" * 32)      # 64 bytes


def test_unresolved_exact_target_is_refused_by_the_planner() -> None:
    with pytest.raises(PlanningError) as e:
        plan_recovery(make_snapshot(), make_target(before_xid=748), now=NOW)
    assert e.value.code == "invalid_target" and "not resolved" in e.value.message


# -- restore points -------------------------------------------------------------------------------

POINTS = (rp("nightly", 3, 5), rp("before-migration", 5, 10), rp("nightly", 7, 20), rp("once", 8, 25),
          rp("only-tl1-after-fork", 0xC, 45), rp("tl2", 0xD, 50, tli=2))


@pytest.mark.parametrize("path, name, pick, want_lsn, earlier", [
    (P1, "before-migration", None, lsn(5, 0x200), ()),
    (P1, "once", None, lsn(8, 0x200), ()),
    (P1, "nightly", lsn(3, 0x200), lsn(3, 0x200), ()),
    (P1, "nightly", lsn(7, 0x200), lsn(7, 0x200), (lsn(3, 0x200),)),
    (P1, "only-tl1-after-fork", None, lsn(0xC, 0x200), ()),
    (P2, "tl2", None, lsn(0xD, 0x200), ()),
    (P2, "before-migration", None, lsn(5, 0x200), ()),     # TL1 before the switch is on TL2's path
])
def test_resolve_restore_point(path: TimelinePath, name: str, pick: Lsn | None, want_lsn: Lsn,
                               earlier: tuple[Lsn, ...]) -> None:
    p = resolve_restore_point(POINTS, name, path, pick)
    assert (p.lsn, p.name, p.xid, p.earlier) == (want_lsn, name, None, earlier)
    assert p.timeline == path.tli_of(want_lsn)


@pytest.mark.parametrize("path, name, pick, code, needles, listed", [
    (P1, "nope", None, "restore_point_unknown", ["no restore point 'nope'", "'before-migration'", "'nightly'"],
     ("known", 5)),
    (P2, "only-tl1-after-fork", None, "restore_point_unknown", ["off this path, on timeline(s) [1]"], ("elsewhere", 1)),
    (P1, "tl2", None, "restore_point_unknown", ["timeline(s) [2]"], ("elsewhere", 1)),
    (P1, "nightly", None, "restore_point_ambiguous", ["occurs 2 times", "0/3000200", "0/7000200",
                                                       "restore-point-lsn"], ("occurrences", 2)),
    (P1, "nightly", lsn(4), "restore_point_unknown", ["no occurrence at LSN 0/4000000"], ("occurrences", 2)),
    (TimelinePath.build(1, ()), "x", None, "restore_point_unknown", ["known: 'before-migration'"], ("known", 5)),
])
def test_resolve_restore_point_refused(path: TimelinePath, name: str, pick: Lsn | None, code: str,
                                       needles: list[str], listed: tuple[str, int]) -> None:
    with pytest.raises(PlanningError) as e:
        resolve_restore_point(POINTS, name, path, pick)
    assert e.value.code == code
    for n in needles:
        assert n in e.value.message
    key, count = listed
    assert len(e.value.details[key]) == count  # type: ignore[arg-type]


def test_unknown_restore_point_with_none_known() -> None:
    with pytest.raises(PlanningError) as e:
        resolve_restore_point((), "x", P1)
    assert "no restore point is known there" in e.value.message and e.value.details["known"] == []


@pytest.mark.parametrize("earlier, start, want", [
    ((), lsn(2), False),
    ((lsn(3, 0x200),), lsn(2, 0x28), True),      # replayed from the backup's start: name would stop there
    ((lsn(3, 0x200),), lsn(4, 0x28), False),     # before the backup's start: never replayed
    ((lsn(3, 0x200),), lsn(3, 0x200), True),
    ((lsn(1), lsn(3, 0x200)), lsn(2), True),
])
def test_by_lsn(earlier: tuple[Lsn, ...], start: Lsn, want: bool) -> None:
    assert by_lsn(ExactPoint(lsn(7), 1, at(20), name="n", earlier=earlier), start) is want


# -- transactions ---------------------------------------------------------------------------------

SUMS = (SegmentSummary(1, 3, 10, at(5), at(6), 700, 712, 700, 712),
        SegmentSummary(1, 4, 10, at(6), at(7), 713, 740, 705, 740),   # a long transaction: 705 commits late
        SegmentSummary(1, 5, 0),                                      # no commits
        SegmentSummary(1, 0xC, 3, at(45), at(46), 900, 902, 900, 902),   # TL1 after the fork
        SegmentSummary(2, 0xC, 3, at(50), at(51), 900, 905, 900, 905))


@pytest.mark.parametrize("path, xid, segs", [
    (P1, 705, [(1, 3), (1, 4)]),
    (P1, 713, [(1, 4)]),
    (P1, 741, []),
    (P1, 901, [(1, 0xC)]),
    (P2, 901, [(2, 0xC)]),
    (P2, 705, [(1, 3), (1, 4)]),
])
def test_xid_segments(path: TimelinePath, xid: int, segs: list[tuple[int, int]]) -> None:
    assert [(s.timeline, s.segno) for s in xid_segments(SUMS, xid, path, S)] == segs


READ = (cp(705, 4, 6.5, kind="abort"), cp(710, 3, 5.5), cp(705, 4, 6.6, off=0x900), cp(901, 0xC, 45.5),
        cp(901, 0xC, 50.5, tli=2))


@pytest.mark.parametrize("path, xid, want", [
    (P1, 710, (lsn(3, 0x300), 1)),
    (P1, 705, (lsn(4, 0x900), 1)),           # its abort record is not a commit; the commit is
    (P1, 901, (lsn(0xC, 0x300), 1)),
    (P2, 901, (lsn(0xC, 0x300), 2)),         # the TL1 copy after the fork is not on TL2's path
])
def test_resolve_xid(path: TimelinePath, xid: int, want: tuple[Lsn, int]) -> None:
    p = resolve_xid(xid, READ, path, summaries=SUMS)
    assert (p.lsn, p.timeline, p.xid, p.name) == (*want, xid, None)


def test_resolve_xid_first_commit_in_wal_order() -> None:
    p = resolve_xid(800, (cp(800, 9, 3), cp(800, 3, 9)), P1)
    assert p.lsn == lsn(3, 0x300) and p.time == at(9)


@pytest.mark.parametrize("xid, read, unindexed, needles, aborted", [
    (999, READ, 0, ["did not commit", "nearest known: 713, 740, 900, 901, 902"], False),
    (720, (cp(720, 4, 6.7, kind="abort"),), 0, ["aborted at", "changed nothing"], True),
    (999, (), 3, ["3 segment(s) on the path are not indexed yet"], False),
])
def test_resolve_xid_refused(xid: int, read: tuple[CommitPoint, ...], unindexed: int, needles: list[str],
                             aborted: bool) -> None:
    with pytest.raises(PlanningError) as e:
        resolve_xid(xid, read, P1, summaries=SUMS, seg_size=S, unindexed=unindexed)
    assert e.value.code == "xid_not_found" and e.value.details["aborted"] is aborted
    for n in needles:
        assert n in e.value.message


def test_nearest_xids_carry_commit_times() -> None:
    near = nearest_xids(711, SUMS, (cp(710, 3, 5.5),), P1, S, n=3)
    assert near == [{"xid": 710, "commit_time": at(5.5)}, {"xid": 712, "commit_time": at(6)},
                    {"xid": 713, "commit_time": at(6)}]


# -- planning -------------------------------------------------------------------------------------

def resolved(target: Target, point: ExactPoint) -> Target:
    return replace(target, point=point)


def plan(snap: object, target: Target) -> RecoveryPlan:
    return plan_recovery(snap, target, now=NOW, pg_version=15)  # type: ignore[arg-type]


def xid_at(xid: int, segno: int, minute: float, tli: int = 1, off: int = 0x300) -> Target:
    return resolved(make_target(before_xid=xid), ExactPoint(lsn(segno, off), tli, at(minute), xid=xid))


def name_at(name: str, segno: int, minute: float, tli: int = 1, earlier: tuple[Lsn, ...] = (),
            timeline: object = "latest") -> Target:
    return resolved(make_target(restore_point=name, timeline=timeline),
                    ExactPoint(lsn(segno, 0x200), tli, at(minute), name=name, earlier=earlier))


TWO = make_snapshot(backups=(backup_at("F1", 2, 1), backup_at("F2", 6, 15)), edges=(edge(1, 9, 30),))


@pytest.mark.parametrize("snap, target, backup, settings, last", [
    (TWO, xid_at(748, 4, 10), "F1",
     (("recovery_target_xid", "748"), ("recovery_target_inclusive", False), ("recovery_target_timeline", "latest"),
      ("recovery_target_action", "promote")), "000000010000000000000004"),
    (TWO, xid_at(748, 8, 20), "F2",
     (("recovery_target_xid", "748"), ("recovery_target_inclusive", False), ("recovery_target_timeline", "latest"),
      ("recovery_target_action", "promote")), "000000010000000000000008"),
    (TWO, xid_at(748, 6, 15, off=0x138), "F2",     # the commit starts exactly at F2's consistency point
     (("recovery_target_xid", "748"), ("recovery_target_inclusive", False), ("recovery_target_timeline", "latest"),
      ("recovery_target_action", "promote")), "000000010000000000000006"),
    (TWO, xid_at(748, 6, 14.9, off=0x100), "F1",   # just before F2's stop LSN: F1
     (("recovery_target_xid", "748"), ("recovery_target_inclusive", False), ("recovery_target_timeline", "latest"),
      ("recovery_target_action", "promote")), "000000010000000000000006"),
    (TWO, name_at("before-migration", 7, 18), "F2",
     (("recovery_target_name", "before-migration"), ("recovery_target_timeline", "latest"),
      ("recovery_target_action", "promote")), "000000010000000000000007"),
    (TWO, name_at("nightly", 8, 20, earlier=(lsn(3, 0x200),)), "F2",   # the earlier one is before F2's start
     (("recovery_target_name", "nightly"), ("recovery_target_timeline", "latest"),
      ("recovery_target_action", "promote")), "000000010000000000000008"),
    (TWO, name_at("nightly", 8, 20, earlier=(lsn(7, 0x200),)), "F2",   # replayed from F2: by LSN
     (("recovery_target_lsn", lsn(8, 0x200)), ("recovery_target_timeline", "latest"),
      ("recovery_target_action", "promote")), "000000010000000000000008"),
    (forked_snapshot(), xid_at(748, 5, 10), "B1",    # TL1 before the switch, followed to TL2
     (("recovery_target_xid", "748"), ("recovery_target_inclusive", False), ("recovery_target_timeline", "latest"),
      ("recovery_target_action", "promote")), "000000010000000000000005"),
    (forked_snapshot(), xid_at(900, 0x10, 55, tli=2), "B1",     # B2 stops on TL1 after the switch: not on path
     (("recovery_target_xid", "900"), ("recovery_target_inclusive", False), ("recovery_target_timeline", "latest"),
      ("recovery_target_action", "promote")), "000000020000000000000010"),
    (forked_snapshot(), name_at("old-primary", 0xD, 42, timeline=1), "B2",
     (("recovery_target_name", "old-primary"), ("recovery_target_timeline", 1),
      ("recovery_target_action", "promote")), "00000001000000000000000D"),
])
def test_plan_exact(snap: object, target: Target, backup: str, settings: tuple[object, ...], last: str) -> None:
    p = plan(snap, target)
    assert p.backup.label == backup
    assert p.recovery_settings == settings
    assert p.last_segment == last and not p.end_of_wal
    assert p.end_lsn == target.resolved.lsn
    assert bool(p.warnings) is (p.setting("recovery_target_lsn") is not None)


@pytest.mark.parametrize("snap, target, code, needle", [
    (TWO, xid_at(748, 2, 0.9, off=0x100), "target_before_window", "before transaction 748"),
    (TWO, xid_at(748, 10, 40), "target_after_window", "after the end of archived WAL"),
    (holed_snapshot(), xid_at(748, 8, 30), "wal_gap", "WAL segments 000000010000000000000006"),
    (forked_snapshot(), name_at("old-primary", 0xD, 42), "invalid_target", "not on timeline path [1, 2]"),
])
def test_plan_exact_refused(snap: object, target: Target, code: str, needle: str) -> None:
    with pytest.raises(PlanningError) as e:
        plan(snap, target)
    assert e.value.code == code and needle in e.value.message


def test_point_after_a_hole_uses_the_backup_after_it() -> None:
    p = plan(holed_snapshot(), name_at("x", 12, 60))
    assert p.backup.label == "F2" and p.first_segment == "00000001000000000000000A"


def test_plan_document_and_files_for_xid() -> None:
    p = plan(TWO, xid_at(748, 4, 10))
    files = render_files(p, "cmd", 15)
    assert "recovery_target_xid = '748'\nrecovery_target_inclusive = 'false'\n" in files["postgresql.auto.conf"]
    d = plan_to_dict(p, files, "cmd")
    assert d["target"] == {"kind": "xid", "value": 748, "inclusive": False, "timeline": "latest",
                           "action": "promote", "commit_time": "2026-01-01T12:10:00Z", "lsn": "0/4000300",
                           "record_timeline": 1}
    assert d["replay"]["stop"] == {"kind": "before_xid", "xid": 748, "lsn": "0/4000300",
                                   "time": "2026-01-01T12:10:00Z"}
    assert d["replay"]["end_lsn"] == "0/4000300"


def test_plan_document_and_files_for_restore_point() -> None:
    t = replace(name_at("it's \\ here", 7, 18), pick=lsn(7, 0x200))
    p = plan(TWO, t)
    files = render_files(p, "cmd", 15)
    assert "recovery_target_name = 'it''s \\\\ here'\n" in files["postgresql.auto.conf"]
    d = plan_to_dict(p, files, "cmd")
    assert d["target"]["time"] == "2026-01-01T12:18:00Z" and d["target"]["restore_point_lsn"] == "0/7000200"
    assert d["replay"]["stop"]["kind"] == "restore_point" and d["replay"]["stop"]["name"] == "it's \\ here"
    later = plan(TWO, name_at("n", 8, 20, earlier=(lsn(7, 0x200),)))
    assert plan_to_dict(later, {}, "cmd")["replay"]["stop"]["kind"] == "after_lsn"


def test_pg11_renders_recovery_conf_for_exact_targets() -> None:
    p = plan_recovery(TWO, xid_at(748, 4, 10), now=NOW, pg_version=11)
    files = render_files(p, "cmd", 11)
    assert set(files) == {"recovery.conf"} and "recovery_target_xid = '748'" in files["recovery.conf"]
