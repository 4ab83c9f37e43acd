"""Catalog record types and the one place where asyncpg rows become domain values (and back)."""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, NamedTuple

import asyncpg

from catalog.scanresult import ScanIssue
from recovery.lsn import Lsn
from recovery.model import (
    Backup,
    BackupStatus,
    BackupType,
    CorruptSegment,
    InstanceRef,
    Layout,
    Storage,
    WalRun,
    WindowEdge,
)
from recovery.timeline import TimelineSwitch

Row = Mapping[str, Any] | asyncpg.Record   # a fetched row, or a plain mapping in tests


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    """An instance as the catalog knows it; ``ref.name`` is its latest name, ``ref.deleted_at`` set
    once deleted. ``stanza`` is the detected one, else the requested one."""

    ref: InstanceRef
    storage: Storage
    detected_layout: Layout | None = None
    stanza: str | None = None
    pg_version: int | None = None
    system_id: int | None = None
    seg_size: int | None = None
    created_at: datetime | None = None     # None: existed before the catalog learned of it
    registered_at: datetime | None = None
    hold_at: datetime | None = None        # operator hold: never purged (issue 13)
    hold_reason: str | None = None
    purged_at: datetime | None = None      # its archive was deleted by a purge
    purge_policy: str | None = None        # set when a purge started deleting (the policy that made it due)

    @property
    def guid(self) -> str:
        return self.ref.instance_guid

    @property
    def layout(self) -> Layout | None:
        """The archive layout to read: detected, else the requested one unless ``auto``."""
        if self.detected_layout is not None:
            return self.detected_layout
        try:
            return Layout(self.storage.layout)
        except ValueError:
            return None


@dataclass(frozen=True, slots=True)
class Resolution:
    """Which instance a ``clone-from`` name resolved to, and why (``rule`` is machine-readable)."""

    record: InstanceRecord
    reason: str
    rule: str = "current_holder"   # held_at_time | most_recent_holder | current_holder


@dataclass(frozen=True, slots=True)
class ScanState:
    instance_guid: str
    generation: int = 0
    cursors: dict[str, str] = field(default_factory=dict)
    last_scan: datetime | None = None
    last_full_scan: datetime | None = None
    last_attempt: datetime | None = None
    last_error: str | None = None
    last_error_code: str | None = None
    stale_since: datetime | None = None
    unknown_objects: int = 0
    issues: tuple[ScanIssue, ...] = ()
    requests: int = 0


@dataclass(frozen=True, slots=True)
class WalConflictRow:
    timeline: int
    segno: int
    detail: str
    kind: str = "conflict"     # or "corrupt"


def _int(v: Decimal | int | None) -> int | None:
    return None if v is None else int(v)


def _enum(cls: type, v: str | None) -> Any:
    if v is None:
        return None
    try:
        return cls(v)
    except ValueError:
        return None


# -- instances ---------------------------------------------------------------------------------

def row_to_instance(r: Row) -> InstanceRecord:
    """Columns of ``instances`` plus ``name`` (the latest name)."""
    return InstanceRecord(
        ref=InstanceRef(instance_guid=r["instance_guid"], space_guid=r["space_guid"], name=r["name"],
                        deleted_at=r["deleted_at"], org_guid=r["org_guid"]),
        storage=Storage(bucket=r["bucket"], prefix=r["prefix"], layout=r["layout"], stanza=r["stanza"]),
        detected_layout=_enum(Layout, r["detected_layout"]),
        stanza=r["detected_stanza"] or r["stanza"],
        pg_version=r["pg_version"],
        system_id=_int(r["system_id"]),
        seg_size=r["seg_size"],
        created_at=r["created_at"],
        registered_at=r["registered_at"],
        hold_at=r.get("hold_at"), hold_reason=r.get("hold_reason"),
        purged_at=r.get("purged_at"), purge_policy=r.get("purge_policy"),
    )


# -- backups -----------------------------------------------------------------------------------

BACKUP_COLUMNS = ("label", "type", "status", "timeline", "start_lsn", "stop_lsn", "start_time", "stop_time",
                  "stop_time_exact", "depends_on", "parent", "size_bytes", "repo_size_bytes", "pg_version",
                  "system_id", "seg_size", "error", "metadata_key")


def backup_to_args(b: Backup) -> tuple[Any, ...]:
    """Values for BACKUP_COLUMNS, in order."""
    return (b.label, str(b.type), str(b.status), b.timeline, b.start_lsn, b.stop_lsn, b.start_time,
            b.stop_time, b.stop_time_exact, list(b.depends_on), b.parent, b.size_bytes, b.repo_size_bytes,
            b.pg_version, b.system_id, b.seg_size, b.error, b.metadata_key)


def row_to_backup(r: Row) -> Backup:
    return Backup(
        label=r["label"], type=BackupType(r["type"]), status=BackupStatus(r["status"]),
        timeline=r["timeline"], start_lsn=r["start_lsn"], stop_lsn=r["stop_lsn"],
        start_time=r["start_time"], stop_time=r["stop_time"], depends_on=tuple(r["depends_on"] or ()),
        parent=r["parent"], size_bytes=r["size_bytes"], repo_size_bytes=r["repo_size_bytes"],
        pg_version=r["pg_version"], system_id=_int(r["system_id"]), seg_size=r["seg_size"],
        stop_time_exact=r["stop_time_exact"], error=r["error"], metadata_key=r["metadata_key"],
    )


def _json_time(v: str | None) -> datetime | None:
    return None if v is None else datetime.fromisoformat(v)


def _json_lsn(v: str | int | None) -> Lsn | None:
    """An LSN from JSON: text ``X/Y``, or its byte position (``lsn - '0/0'``, a number: no parsing)."""
    if v is None:
        return None
    return Lsn(v) if type(v) is int else Lsn.parse(str(v))


def json_to_backup(d: Mapping[str, Any]) -> tuple[Backup, bool]:
    """A backup from ``json_build_object`` of its columns (LSNs as positions, times as ISO text), and
    ``in_prefix``: the JSON values converted, then :func:`row_to_backup`."""
    return row_to_backup({**d, "start_lsn": _json_lsn(d["start_lsn"]), "stop_lsn": _json_lsn(d["stop_lsn"]),
                          "start_time": _json_time(d["start_time"]), "stop_time": _json_time(d["stop_time"])}
                         ), bool(d.get("in_prefix"))


# -- WAL, timelines, edges ---------------------------------------------------------------------

def row_to_run(r: Row) -> WalRun:
    return WalRun(timeline=r["timeline"], first=r["first_segno"], last=r["last_segno"])


def row_to_edge(r: Row) -> WindowEdge:
    return WindowEdge(timeline=r["timeline"], segno=r["segno"], last_commit_time=r["last_commit_time"],
                      last_commit_lsn=r["last_commit_lsn"], exact=r["exact"])


def edge_to_args(e: WindowEdge) -> tuple[Any, ...]:
    return (e.timeline, e.segno, e.last_commit_time, e.last_commit_lsn, e.exact)


def rows_to_histories(rows: Sequence[Row]) -> dict[int, tuple[TimelineSwitch, ...]]:
    """Rows of ``timelines`` ordered by (tli, ordinal) -> {tli: its history file's switches}."""
    return _histories((r["tli"], TimelineSwitch(r["parent"], r["switchpoint"], r["reason"])) for r in rows)


def _histories(switches: Iterable[tuple[int, TimelineSwitch]]) -> dict[int, tuple[TimelineSwitch, ...]]:
    out: dict[int, list[TimelineSwitch]] = {}
    for tli, sw in switches:
        out.setdefault(tli, []).append(sw)
    return {tli: tuple(sws) for tli, sws in out.items()}


def json_to_edge(e: Sequence[Any]) -> WindowEdge:
    """[timeline, segno, last_commit_time, last_commit_lsn text, exact] -> WindowEdge."""
    tli, segno, when, lsn, exact = e
    return row_to_edge({"timeline": tli, "segno": segno, "last_commit_time": _json_time(when),
                        "last_commit_lsn": _json_lsn(lsn), "exact": exact})


def json_to_histories(items: Sequence[Sequence[Any]]) -> dict[int, tuple[TimelineSwitch, ...]]:
    """[[tli, parent, switchpoint text, reason], ...] ordered by (tli, ordinal) -> {tli: switches}."""
    return _histories((tli, TimelineSwitch(parent, Lsn.parse(switchpoint), reason))
                      for tli, parent, switchpoint, reason in items)


def issues_from_json(text: str | None) -> tuple[ScanIssue, ...]:
    items = json.loads(text) if text else []
    return tuple(ScanIssue(i.get("code", ""), i.get("key"), i.get("message", "")) for i in items)


def row_to_conflict(r: Row) -> WalConflictRow:
    return WalConflictRow(timeline=r["timeline"], segno=r["segno"], detail=r["detail"], kind=r["kind"])


class Blocked(NamedTuple):
    """The segments replay cannot pass, as :class:`~recovery.model.ArchiveSnapshot` holds them."""

    conflicts: tuple[tuple[int, int], ...]
    conflict_notes: dict[tuple[int, int], str]
    corrupt: tuple[CorruptSegment, ...]


def blocked_segments(rows: Iterable[WalConflictRow]) -> Blocked:
    """Stored ``wal_conflicts`` rows as the snapshot's conflicts (with the scanner's notes) and corrupt segments."""
    items = list(rows)
    conflicts = [x for x in items if x.kind != "corrupt"]
    return Blocked(tuple((x.timeline, x.segno) for x in conflicts),
                   {(x.timeline, x.segno): x.detail for x in conflicts if x.detail},
                   tuple(CorruptSegment(x.timeline, x.segno, x.detail) for x in items if x.kind == "corrupt"))


# -- scan state --------------------------------------------------------------------------------

def issues_to_json(issues: Sequence[ScanIssue]) -> str:
    return json.dumps([{"code": i.code, "key": i.key, "message": i.message} for i in issues])


def cursors_to_json(cursors: Mapping[str, str]) -> str:
    return json.dumps(dict(cursors), sort_keys=True)


def row_to_scan_state(r: Row) -> ScanState:
    return ScanState(
        instance_guid=r["instance_guid"], generation=r["generation"],
        cursors=dict(json.loads(r["cursors"])) if r["cursors"] else {},
        last_scan=r["last_scan"], last_full_scan=r["last_full_scan"], last_attempt=r["last_attempt"],
        last_error=r["last_error"], last_error_code=r["last_error_code"], stale_since=r["stale_since"],
        unknown_objects=r["unknown_objects"],
        issues=issues_from_json(r["issues"]),
        requests=r["requests"],
    )
