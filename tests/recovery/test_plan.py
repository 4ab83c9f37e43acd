from __future__ import annotations

from datetime import timedelta

import pytest

from recovery.errors import PlanningError
from recovery.model import ArchiveSnapshot, BackupStatus, BackupType
from recovery.plan import RecoveryPlan, plan_recovery
from recovery.target import Target, make_target
from recovery.windows import CutKind
from tests.recovery.builders import (
    NOW,
    at,
    backup_at,
    edge,
    forked_snapshot,
    holed_snapshot,
    lsn,
    make_backup,
    make_snapshot,
    run,
)


def iso(minute: float) -> str:
    return at(minute).isoformat()


def plan(snap: ArchiveSnapshot, target: Target, pg_version: int | None = 15) -> RecoveryPlan:
    return plan_recovery(snap, target, now=NOW, pg_version=pg_version)


def refuse(snap: ArchiveSnapshot, target: Target) -> PlanningError:
    with pytest.raises(PlanningError) as e:
        plan(snap, target)
    return e.value


# -- time targets on one timeline --------------------------------------------------------------

def test_time_between_commits() -> None:
    p = plan(make_snapshot(), make_target(point_in_time=iso(10)))
    assert p.backup.label == "F1"
    assert p.timeline_path == (1,)
    assert (p.first_segment, p.last_segment, p.segments) == ("000000010000000000000002", "000000010000000000000009", 8)
    assert p.recovery_settings == (("recovery_target_time", at(10)), ("recovery_target_timeline", "latest"),
                                   ("recovery_target_action", "promote"))
    assert p.warnings == () and not p.end_of_wal
    assert (p.window.from_time, p.window.to_time, p.window.to_is_exact) == (at(1), at(30), True)


def test_time_exactly_at_last_commit_inclusive_goes_to_end_of_wal() -> None:
    p = plan(make_snapshot(), make_target(point_in_time=iso(30)))
    assert p.end_of_wal
    assert p.setting("recovery_target_time") is None and p.setting("recovery_target_action") is None
    assert p.setting("recovery_target_timeline") == "latest"
    assert len(p.warnings) == 1 and "2026-01-01T12:30:00Z" in p.warnings[0]


def test_time_exactly_at_last_commit_exclusive_keeps_the_target() -> None:
    p = plan(make_snapshot(), make_target(point_in_time=iso(30), exclusive=True))
    assert not p.end_of_wal
    assert p.setting("recovery_target_time") == at(30)
    assert p.setting("recovery_target_inclusive") is False
    assert p.target.inclusive is False


def test_time_at_backup_stop_inclusive_vs_exclusive() -> None:
    assert plan(make_snapshot(), make_target(point_in_time=iso(1))).backup.label == "F1"
    e = refuse(make_snapshot(), make_target(point_in_time=iso(1), exclusive=True))
    assert e.code == "target_before_window"


def test_time_before_first_backup() -> None:
    e = refuse(holed_snapshot(), make_target(point_in_time=iso(0.5)))
    assert e.code == "target_before_window"
    assert len(e.windows) == 2
    assert "2026-01-01T12:01:00Z" in e.message


def test_time_after_last_archived_commit_warns_with_exact_time() -> None:
    p = plan(make_snapshot(), make_target(point_in_time=iso(300)))
    assert p.end_of_wal and p.last_segment == "000000010000000000000009"
    assert [k for k, _ in p.recovery_settings] == ["recovery_target_timeline"]
    assert "last archived commit" in p.warnings[0] and "at 2026-01-01T12:30:00Z" in p.warnings[0]
    assert "approximately" not in p.warnings[0]


def test_time_after_approximate_window_end_says_so() -> None:
    snap = make_snapshot(edges=(edge(1, 9, 30, exact=False),))
    p = plan(snap, make_target(point_in_time=iso(300)))
    assert p.end_of_wal and "approximately" in p.warnings[0]
    p2 = plan(snap, make_target(point_in_time=iso(10)))
    assert p2.setting("recovery_target_time") == at(10) and "approximate" in p2.warnings[0]
    assert p2.window.to_is_exact is False


def test_time_with_unknown_window_end_keeps_target_and_warns() -> None:
    p = plan(make_snapshot(edges=()), make_target(point_in_time=iso(300)))
    assert p.setting("recovery_target_time") == at(300)
    assert "unknown" in p.warnings[0]


def test_future_time_is_refused() -> None:
    e = refuse(make_snapshot(), make_target(point_in_time=(NOW + timedelta(seconds=1)).isoformat()))
    assert e.code == "target_after_window"
    assert e.windows and "future" in e.message


def test_newest_backup_before_target_is_chosen() -> None:
    snap = make_snapshot(backups=(backup_at("F1", 2, 1), backup_at("F2", 5, 15), backup_at("F3", 8, 25)),
                         runs=(run(1, 2, 9),))
    assert plan(snap, make_target(point_in_time=iso(20))).backup.label == "F2"
    assert plan(snap, make_target(point_in_time=iso(14))).backup.label == "F1"
    p = plan(snap, make_target(point_in_time=iso(25)))
    assert p.backup.label == "F3" and p.first_segment == "000000010000000000000008" and p.segments == 2
    assert p.window.backups == ("F1", "F2", "F3")


# -- holes and conflicts -----------------------------------------------------------------------

def test_target_inside_a_hole_is_wal_gap() -> None:
    e = refuse(holed_snapshot(), make_target(point_in_time=iso(30)))
    assert e.code == "wal_gap"
    assert e.details["first_missing"] == "000000010000000000000006"
    assert e.details["last_missing"] == "000000010000000000000006"
    assert e.details["horizon_time"] == at(20) and e.details["horizon_lsn"] == lsn(6)
    before, after = e.details["window_before"], e.details["window_after"]
    assert before.backups == ("F1",) and after.backups == ("F2",)  # type: ignore[union-attr]
    assert "000000010000000000000006" in e.message and "2026-01-01T12:20:00Z" in e.message


def test_target_before_hole_uses_older_backup() -> None:
    p = plan(holed_snapshot(), make_target(point_in_time=iso(10)))
    assert p.backup.label == "F1" and p.last_segment == "000000010000000000000005"
    assert p.window.end_kind is CutKind.HOLE


def test_target_after_hole_uses_backup_after_it() -> None:
    p = plan(holed_snapshot(), make_target(point_in_time=iso(60)))
    assert p.backup.label == "F2" and p.first_segment == "00000001000000000000000A"


def test_latest_with_hole_after_newest_backup_stops_before_the_hole() -> None:
    snap = holed_snapshot(backups=(backup_at("F1", 2, 1),))
    p = plan(snap, make_target(latest=True))
    assert p.backup.label == "F1" and p.end_of_wal and p.last_segment == "000000010000000000000005"
    assert p.end_lsn == lsn(5, 0x100) and p.last_commit_time == at(20)
    assert len(p.warnings) == 1 and "000000010000000000000006 is missing" in p.warnings[0]
    assert "000000010000000000000007..000000010000000000000014 cannot be reached" in p.warnings[0]
    e2 = refuse(snap, make_target(point_in_time=iso(95)))
    assert e2.code == "wal_gap" and e2.details["window_after"] is None


def test_hole_inside_a_backups_own_wal_makes_it_unusable() -> None:
    snap = holed_snapshot(backups=(backup_at("F1", 2, 1), make_backup(label="F2", start_lsn=lsn(5), stop_lsn=lsn(6, 8),
                                                                       stop_time=at(21))))
    # F2 needs segment 6; F1 reaches only up to the hole
    assert refuse(snap, make_target(point_in_time=iso(25))).code == "wal_gap"
    only = holed_snapshot(backups=(snap.backups[1],))
    e = refuse(only, make_target(point_in_time=iso(25)))
    assert e.code == "no_usable_backup" and e.details["first_missing"] == "000000010000000000000006"


def test_conflicting_segment_blocks_planning_through_it() -> None:
    snap = make_snapshot(conflicts=((1, 6),), edges=(edge(1, 5, 15), edge(1, 9, 30)))
    e = refuse(snap, make_target(point_in_time=iso(20)))
    assert e.code == "wal_conflict" and e.details["first_missing"] == "000000010000000000000006"
    assert plan(snap, make_target(point_in_time=iso(10))).last_segment == "000000010000000000000005"
    p = plan(snap, make_target(latest=True))
    assert p.last_segment == "000000010000000000000005" and "000000010000000000000006" in p.warnings[0]


# -- backup status and chains ------------------------------------------------------------------

def test_failed_and_running_backups_are_never_chosen() -> None:
    snap = holed_snapshot(backups=(backup_at("F1", 2, 1), backup_at("F2", 10, 50),
                                   backup_at("R", 15, 70, status=BackupStatus.RUNNING),
                                   backup_at("X", 16, 75, status=BackupStatus.FAILED)))
    assert plan(snap, make_target(point_in_time=iso(80))).backup.label == "F2"
    assert plan(snap, make_target(latest=True)).backup.label == "F2"
    assert plan(snap, make_target(immediate=True)).backup.label == "F2"
    assert plan(snap, make_target(lsn=str(lsn(18)))).backup.label == "F2"


def test_only_incomplete_backups_is_no_usable_backup() -> None:
    snap = make_snapshot(backups=(make_backup(status=BackupStatus.FAILED), make_backup(label="R", status=BackupStatus.RUNNING)))
    for target in (make_target(point_in_time=iso(10)), make_target(latest=True), make_target(immediate=True)):
        e = refuse(snap, target)
        assert e.code == "no_usable_backup" and "F1 (failed)" in e.message and "R (running)" in e.message


def test_incremental_with_missing_dependency_is_unusable() -> None:
    snap = make_snapshot(backups=(backup_at("F1", 2, 1),
                                  backup_at("I1", 5, 15, type=BackupType.INCR, depends_on=("F0",)),
                                  backup_at("I2", 7, 20, type=BackupType.INCR, depends_on=("F1",))))
    assert plan(snap, make_target(point_in_time=iso(18))).backup.label == "F1"
    p = plan(snap, make_target(point_in_time=iso(25)))
    assert p.backup.label == "I2" and p.backup.depends_on == ("F1",)


# -- LSN, latest, immediate --------------------------------------------------------------------

def test_lsn_target() -> None:
    p = plan(make_snapshot(), make_target(lsn="0/5000010"))
    assert p.setting("recovery_target_lsn") == lsn(5, 0x10)
    assert p.last_segment == "000000010000000000000005" and p.segments == 4
    assert p.setting("recovery_target_inclusive") is None
    px = plan(make_snapshot(), make_target(lsn="0/5000010", exclusive=True))
    assert px.setting("recovery_target_inclusive") is False


def test_lsn_outside_the_window() -> None:
    assert refuse(make_snapshot(), make_target(lsn="0/2000100")).code == "target_before_window"
    assert refuse(make_snapshot(), make_target(lsn="0/A000000")).code == "target_after_window"
    assert plan(make_snapshot(), make_target(lsn="0/2000138")).last_segment == "000000010000000000000002"
    assert refuse(holed_snapshot(), make_target(lsn="0/6000100")).code == "wal_gap"


def test_latest() -> None:
    p = plan(holed_snapshot(), make_target(latest=True))
    assert p.backup.label == "F2" and p.end_of_wal
    assert p.last_segment == "000000010000000000000014" and p.segments == 11
    assert p.recovery_settings == (("recovery_target_timeline", "latest"),)


def test_immediate() -> None:
    p = plan(holed_snapshot(), make_target(immediate=True))
    assert p.backup.label == "F2"
    assert (p.first_segment, p.last_segment, p.segments) == ("00000001000000000000000A", "00000001000000000000000A", 1)
    assert p.recovery_settings == (("recovery_target", "immediate"), ("recovery_target_timeline", "current"),
                                   ("recovery_target_action", "promote"))
    assert p.target.timeline == "current"


# -- timelines ---------------------------------------------------------------------------------

def test_fork_latest_follows_new_timeline_and_never_uses_backup_after_switch() -> None:
    p = plan(forked_snapshot(), make_target(point_in_time=iso(50)))
    assert p.timeline_path == (1, 2)
    assert p.backup.label == "B1"       # B2 (TL1, stop after the switchpoint) cannot reach TL2
    assert (p.first_segment, p.last_segment) == ("000000010000000000000002", "000000020000000000000012")
    assert p.segments == 0x11


def test_fork_old_timeline_on_request() -> None:
    p = plan(forked_snapshot(), make_target(point_in_time=iso(42), timeline=1))
    assert p.timeline_path == (1,) and p.backup.label == "B2"
    assert p.last_segment == "00000001000000000000000F"
    assert p.setting("recovery_target_timeline") == 1
    p2 = plan(forked_snapshot(), make_target(point_in_time=iso(50), timeline=1))
    assert p2.end_of_wal and "12:45:00Z" in p2.warnings[0]


def test_fork_explicit_new_timeline_and_current() -> None:
    assert plan(forked_snapshot(), make_target(point_in_time=iso(50), timeline=2)).backup.label == "B1"
    p = plan(forked_snapshot(), make_target(point_in_time=iso(42), timeline="current"))
    assert p.backup.label == "B2" and p.timeline_path == (1,)
    p2 = plan(forked_snapshot(), make_target(point_in_time=iso(30), timeline="current"))
    assert p2.backup.label == "B1" and p2.timeline_path == (1,)


def test_fork_latest_on_new_timeline_and_before_new_timeline_window() -> None:
    p = plan(forked_snapshot(), make_target(latest=True))
    assert p.backup.label == "B1" and p.last_segment == "000000020000000000000012"


def test_missing_history_is_refused() -> None:
    snap = forked_snapshot(histories={})
    e = refuse(snap, make_target(point_in_time=iso(50)))
    assert e.code == "unknown_timeline" and "00000002.history" in e.message
    assert refuse(snap, make_target(point_in_time=iso(50), timeline=2)).code == "unknown_timeline"
    # the old timeline alone is still plannable
    assert plan(snap, make_target(point_in_time=iso(42), timeline=1)).backup.label == "B2"


def test_unknown_timeline() -> None:
    e = refuse(forked_snapshot(), make_target(point_in_time=iso(50), timeline=3))
    assert e.code == "unknown_timeline" and e.details["timeline"] == 3


def test_integrity_errors_refuse() -> None:
    snap = make_snapshot(integrity_errors=("backup.info and backup.info.copy are both invalid",))
    e = refuse(snap, make_target(latest=True))
    assert e.code == "integrity_error" and "both invalid" in e.message
    assert refuse(make_snapshot(seg_size=3 << 20), make_target(latest=True)).code == "integrity_error"


def test_version_mismatch_warns() -> None:
    p = plan(make_snapshot(), make_target(latest=True), pg_version=16)
    assert p.pg_version == 16 and any("PostgreSQL 15" in w for w in p.warnings)
    assert plan(make_snapshot(), make_target(latest=True), pg_version=None).pg_version == 15
