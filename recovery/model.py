"""Catalog value types shared by readers, the catalog and the planner (frozen, slotted, typed)."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from recovery.lsn import Lsn
from recovery.timeline import TimelineSwitch


class Layout(StrEnum):
    PGBACKREST = "pgbackrest"
    BARMAN = "barman"
    WALG = "walg"
    WALE = "wale"


class BackupStatus(StrEnum):
    DONE = "done"
    RUNNING = "running"   # in progress, or aborted/crashed without completion marker
    FAILED = "failed"


class BackupType(StrEnum):
    FULL = "full"
    INCR = "incr"
    DIFF = "diff"
    DELTA = "delta"


@dataclass(frozen=True, slots=True)
class Backup:
    """A base backup as the archive describes it. ``depends_on``: labels needed to restore it."""

    label: str
    type: BackupType
    status: BackupStatus
    timeline: int | None
    start_lsn: Lsn | None
    stop_lsn: Lsn | None
    start_time: datetime | None
    stop_time: datetime | None
    depends_on: tuple[str, ...] = ()
    parent: str | None = None
    size_bytes: int | None = None
    repo_size_bytes: int | None = None
    pg_version: int | None = None       # server_version_num, e.g. 150018 (or major*10000)
    system_id: int | None = None
    seg_size: int | None = None
    stop_time_exact: bool = True         # False when only an object's LastModified bounds it
    error: str | None = None
    metadata_key: str | None = None

    @property
    def usable(self) -> bool:
        return (self.status is BackupStatus.DONE and self.timeline is not None
                and self.start_lsn is not None and self.stop_lsn is not None)


class WalKind(StrEnum):
    SEGMENT = "segment"
    PARTIAL = "partial"
    BACKUP_LABEL = "backup"     # <seg>.<off>.backup history file
    HISTORY = "history"


@dataclass(frozen=True, slots=True)
class WalObject:
    """A classified WAL-archive key. ``name`` is the bare PostgreSQL file name."""

    kind: WalKind
    name: str
    timeline: int
    segno: int | None = None      # for segments/partials/backup labels, given the segment size
    compression: str | None = None
    checksum: str | None = None   # pgBackRest sha1 suffix


@dataclass(frozen=True, slots=True)
class WalRun:
    """Present segments ``first..last`` (inclusive) on ``timeline``."""

    timeline: int
    first: int
    last: int

    @property
    def count(self) -> int:
        return self.last - self.first + 1


@dataclass(frozen=True, slots=True)
class WindowEdge:
    """The last commit/abort record at or before segment ``segno`` of ``timeline``'s own files.

    ``exact``: read from WAL records (decoded). Otherwise ``last_commit_time`` is only the segment
    object's LastModified (an upper bound) and ``last_commit_lsn`` is None.
    """

    timeline: int
    segno: int
    last_commit_time: datetime | None
    last_commit_lsn: Lsn | None
    exact: bool


@dataclass(frozen=True, slots=True)
class CorruptSegment:
    """A present segment whose bytes are provably not the segment its name says (wrong page address,
    bad magic or CRC, another system identifier, a checksum that does not match its name): replay
    stops before it, so every window on a path through it ends there."""

    timeline: int
    segno: int
    reason: str


@dataclass(frozen=True, slots=True)
class InstanceRef:
    instance_guid: str
    space_guid: str
    name: str
    deleted_at: datetime | None = None
    org_guid: str | None = None


@dataclass(frozen=True, slots=True)
class Storage:
    bucket: str
    prefix: str
    layout: str = "auto"
    stanza: str | None = None

    def normalized_prefix(self) -> str:
        p = self.prefix.strip("/")
        return f"{p}/" if p else ""


@dataclass(frozen=True, slots=True)
class ArchiveSnapshot:
    """Everything the planner needs about one instance's archive, read from the catalog."""

    layout: Layout
    seg_size: int
    backups: tuple[Backup, ...]
    runs: tuple[WalRun, ...]
    histories: dict[int, tuple[TimelineSwitch, ...]] = field(default_factory=dict)  # tli -> its history file
    edges: tuple[WindowEdge, ...] = ()
    pg_version: int | None = None
    conflicts: tuple[tuple[int, int], ...] = ()  # (timeline, segno) with conflicting copies
    # (timeline, segno) -> what the scanner found there, in the layout's words (its duplicates note)
    conflict_notes: dict[tuple[int, int], str] = field(default_factory=dict)
    corrupt: tuple[CorruptSegment, ...] = ()     # segments the scanner proved are not what their name says
    integrity_errors: tuple[str, ...] = ()  # archive metadata unreadable (e.g. both info copies bad)
