"""Builders for planner tests: every field defaulted, override what the test is about."""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

from recovery.lsn import Lsn
from recovery.model import ArchiveSnapshot, Backup, BackupStatus, BackupType, Layout, WalRun, WindowEdge
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
