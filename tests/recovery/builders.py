"""Builders for planner tests: every field defaulted, override what the test is about."""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

from recovery.lsn import Lsn
from recovery.model import ArchiveSnapshot, Backup, BackupStatus, BackupType, Layout, WalRun, WindowEdge
from recovery.plan import RecoveryPlan
from recovery.timeline import TimelineSwitch

S = 16 * 1024 * 1024
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
NOW = datetime(2026, 6, 1, tzinfo=timezone.utc)


def at(minutes: float) -> datetime:
    """T0 + minutes: the archive's clock."""
    return T0 + timedelta(minutes=minutes)


def lsn(segno: int, offset: int = 0) -> Lsn:
    return Lsn(segno * S + offset)


def make_backup(**overrides: Any) -> Backup:
    """A done full backup on TL1: start 0/2000028, stop 0/2000138 (segment 2), stopped at T0+1min."""
    base = Backup(label="F1", type=BackupType.FULL, status=BackupStatus.DONE, timeline=1,
                  start_lsn=lsn(2, 0x28), stop_lsn=lsn(2, 0x138), start_time=at(0), stop_time=at(1),
                  pg_version=150000, seg_size=S)
    return replace(base, **overrides)


def backup_at(label: str, segno: int, minute: float, *, timeline: int = 1, **overrides: Any) -> Backup:
    """A backup starting at the beginning of ``segno`` and consistent within it at ``minute``."""
    return make_backup(label=label, timeline=timeline, start_lsn=lsn(segno, 0x28), stop_lsn=lsn(segno, 0x138),
                       start_time=at(minute - 0.5), stop_time=at(minute), **overrides)


def run(timeline: int, first: int, last: int) -> WalRun:
    return WalRun(timeline, first, last)


def edge(timeline: int, segno: int, minute: float | None, *, exact: bool = True,
         commit_lsn: Lsn | None = None) -> WindowEdge:
    when = at(minute) if minute is not None else None
    return WindowEdge(timeline, segno, when, commit_lsn or (lsn(segno, 0x100) if exact and when else None), exact)


def switch(parent: int, switchpoint: Lsn, reason: str = "no recovery target specified") -> TimelineSwitch:
    return TimelineSwitch(parent, switchpoint, reason)


def make_snapshot(**overrides: Any) -> ArchiveSnapshot:
    """One backup F1 (segment 2), WAL 2..9 on TL1, last commit in segment 9 at T0+30min (exact)."""
    base = ArchiveSnapshot(layout=Layout.PGBACKREST, seg_size=S, backups=(make_backup(),),
                           runs=(run(1, 2, 9),), histories={}, edges=(edge(1, 9, 30),), pg_version=150000)
    return replace(base, **overrides)


SWITCH = lsn(0xB, 0x2E650)   # TL1 -> TL2 promotion point, inside segment 0x0B


def forked_snapshot(**overrides: Any) -> ArchiveSnapshot:
    """RELIABILITY §8: TL1 WAL 2..0x0F (the old primary kept archiving after the fork), TL2 forks at
    0/B02E650 and has 0x0B..0x12. B1 on TL1 stops before the switch (min 1); B2 on TL1 stops after it
    (min 40, segment 0x0C). Last commits: TL1 before the switch min 35, TL1 own end min 45, TL2 end min 60."""
    base = make_snapshot(
        backups=(backup_at("B1", 2, 1), backup_at("B2", 0xC, 40)),
        runs=(run(1, 2, 0xF), run(2, 0xB, 0x12)),
        histories={2: (switch(1, SWITCH, "before 2026-01-01 12:37:00+00"),)},
        edges=(edge(1, 0xA, 35), edge(1, 0xF, 45), edge(2, 0x12, 60)),
    )
    return replace(base, **overrides)


def holed_snapshot(**overrides: Any) -> ArchiveSnapshot:
    """RELIABILITY §7: TL1 WAL 2..5 and 7..20 (segment 6 missing). F1 at segment 2 (min 1), F2 at
    segment 10 (min 50). Last commit before the hole min 20, at the end of WAL min 90."""
    base = make_snapshot(
        backups=(backup_at("F1", 2, 1), backup_at("F2", 10, 50)),
        runs=(run(1, 2, 5), run(1, 7, 20)),
        edges=(edge(1, 5, 20), edge(1, 20, 90)),
    )
    return replace(base, **overrides)


def plan_to_dict(p: RecoveryPlan, files: dict[str, str], cmd: str) -> dict[str, Any]:
    """The plan document's JSON for a plan of an instance "orders" (pgBackRest, PG 15)."""
    from recovery.plandoc import PlanSource, PlanStorage, plan_document
    source = PlanSource("g", "s", "orders", None, Layout.PGBACKREST, "instance chosen by its GUID", "guid")
    storage = PlanStorage(Layout.PGBACKREST, "b", "pgbackrest", "main")
    return plan_document(p, files=files, restore_command=cmd, source=source, storage=storage,
                         pg_version=15).to_json()
