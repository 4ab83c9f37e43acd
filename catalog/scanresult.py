"""What one scan of an instance's archive found: the scanner builds it, the catalog stores it atomically."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from recovery.model import Backup, Layout, WalRun, WindowEdge
from recovery.timeline import TimelineSwitch


class WalMode(StrEnum):
    MERGE = "merge"      # incremental: union the found runs with what the catalog holds
    REPLACE = "replace"  # full reconcile: the found runs are the whole truth (deletions noticed)


@dataclass(frozen=True, slots=True)
class WalConflict:
    """Two different objects claim to be one WAL segment (replay cannot pass it)."""

    timeline: int
    segno: int
    detail: str


@dataclass(frozen=True, slots=True)
class ScanIssue:
    """A per-instance problem found during a scan (never aborts the scan)."""

    code: str          # e.g. foreign_object, metadata_error, integrity_warning, integrity_error, not_found_race
    key: str | None
    message: str


@dataclass(frozen=True, slots=True)
class ScanResult:
    layout: Layout
    full: bool
    started_at: datetime
    finished_at: datetime
    stanza: str | None = None
    seg_size: int | None = None
    pg_version: int | None = None
    system_id: int | None = None
    backups: tuple[Backup, ...] | None = None   # None: backup set not re-read; else the complete current set
    histories: dict[int, tuple[TimelineSwitch, ...]] = field(default_factory=dict)  # found this scan (upsert)
    # full scans: the timelines whose .history file the complete listing holds (read or not); the catalog
    # forgets every other timeline. None (incremental): no complete listing, nothing is forgotten.
    listed_histories: frozenset[int] | None = None
    wal_mode: WalMode = WalMode.MERGE
    wal_runs: tuple[WalRun, ...] = ()
    conflicts: tuple[WalConflict, ...] = ()
    corrupt: tuple[WalConflict, ...] = ()   # segments proven not to be what their name says (detail: why)
    edges: tuple[WindowEdge, ...] = ()
    cursors: dict[str, str] = field(default_factory=dict)  # listing prefix -> StartAfter key for next time
    unknown_objects: int = 0
    issues: tuple[ScanIssue, ...] = ()
    requests: int = 0
    integrity_ok: bool = True
