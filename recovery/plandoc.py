"""The plan document (DESIGN.md "Plan JSON"): ONE frozen type that the planner returns, the API serialises
(its OpenAPI schema is generated from these classes), and the executor reads.

``PlanDoc.to_json()`` is the JSON exactly as the contract spells it (member order included);
``PlanDoc.from_json(data)`` reads it back, and anything that is not a plan is a :class:`PlanDocError` that
names the member (``backup.label``, ``replay.end_lsn``, ...). Both walk the dataclass fields
(:mod:`recovery.docjson`), so a member added here is serialised, parsed and documented at once: a new
target kind is a value of ``TargetKind`` (and its resolved members here, optional). Pure: no I/O.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from recovery.docjson import (
    LSN,
    SEGMENT,
    DocumentError,
    LsnText,
    SegmentText,
    Text,
    TimeText,
    document_json,
    read_document,
)
from recovery.errors import BadWalName
from recovery.lsn import Lsn
from recovery.model import Backup, Layout
from recovery.plan import RecoveryPlan
from recovery.target import Target, TargetKind
from recovery.timefmt import iso
from recovery.wal import DEFAULT_SEG_SIZE, WalSegment


class PlanDocError(DocumentError):
    """The document is not a plan; the message names the member that is wrong."""


# -- the members -----------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class PlanSource:
    """The service instance the clone is made from, and how its name was resolved."""

    instance_guid: str
    space_guid: str
    name: str
    deleted_at: TimeText | None
    layout: Layout | None
    resolution: str | None
    resolution_rule: Literal["held_at_time", "most_recent_holder", "current_holder", "guid"] | None
    undo_until: TimeText | None = None   # deleted instances only (absent otherwise)


@dataclass(frozen=True, slots=True)
class PlanStorage:
    """Where the archive is, as detected by the scanner: enough for an executor on another host."""

    layout: Layout | None
    bucket: str
    prefix: Annotated[str, Text("the tool's repository root in the bucket, without leading or trailing '/'")]
    stanza: Annotated[str, Text("pgBackRest stanza or barman-cloud server name")] | None


@dataclass(frozen=True, slots=True)
class PlanBackup:
    """The base backup the clone starts from (``depends_on``: the labels it needs restored with it)."""

    label: str
    type: str
    status: str
    timeline: int | None
    start_lsn: LsnText | None
    stop_lsn: LsnText | None
    start_time: TimeText | None
    stop_time: TimeText | None
    depends_on: tuple[str, ...]

    @classmethod
    def of(cls, b: Backup) -> PlanBackup:
        return cls(b.label, b.type.value, b.status.value, b.timeline, _lsn(b.start_lsn), _lsn(b.stop_lsn),
                   iso(b.start_time), iso(b.stop_time), tuple(b.depends_on))


@dataclass(frozen=True, slots=True)
class PlanTarget:
    """The recovery target as asked (``value``: the time or LSN as text, the xid, the restore point's name;
    null for latest and immediate). Exact targets (xid, name) also carry what they resolved to: the
    record's ``lsn``, its timeline (``record_timeline``) and ``commit_time`` (xid) / ``time`` (restore
    point); ``restore_point_lsn`` is the occurrence asked for."""

    kind: TargetKind
    value: str | int | None
    inclusive: bool
    timeline: str | int
    action: str
    commit_time: TimeText | None = None
    time: TimeText | None = None
    lsn: LsnText | None = None
    record_timeline: int | None = None
    restore_point_lsn: LsnText | None = None

    @classmethod
    def of(cls, t: Target) -> PlanTarget:
        from datetime import datetime
        value: str | int | None
        if isinstance(t.value, datetime):
            value = iso(t.value)
        elif isinstance(t.value, Lsn):
            value = str(t.value)
        else:
            value = t.value
        p = t.point
        return cls(t.kind, value, t.inclusive, t.timeline, t.action,
                   commit_time=iso(p.time) if p is not None and p.xid is not None else None,
                   time=iso(p.time) if p is not None and p.xid is None else None,
                   lsn=_lsn(p.lsn) if p is not None else None, record_timeline=p.timeline if p is not None else None,
                   restore_point_lsn=_lsn(t.pick))


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanStop:
    """The exact recovery stop an exact target promises, which the executor checks in PostgreSQL's log:
    ``before_xid`` (``recovery stopping before commit of transaction X, time T``), ``restore_point``
    (``recovery stopping at restore point "N", time T``) or ``after_lsn`` (a repeated restore point
    targeted by its LSN: ``recovery stopping after WAL location (LSN) "X/Y"``)."""

    kind: Literal["before_xid", "restore_point", "after_lsn"]
    xid: int | None = None
    name: str | None = None
    lsn: LsnText | None
    time: TimeText | None

    @classmethod
    def of(cls, plan: RecoveryPlan) -> PlanStop | None:
        t = plan.target
        if t.point is None or plan.end_of_wal:
            return None
        lsn, time = str(t.point.lsn), iso(t.point.time)
        if t.point.xid is not None:
            return cls(kind="before_xid", xid=t.point.xid, lsn=lsn, time=time)
        kind: Literal["after_lsn", "restore_point"] = (
            "after_lsn" if plan.setting("recovery_target_lsn") is not None else "restore_point")
        return cls(kind=kind, name=t.point.name, lsn=lsn, time=time)


@dataclass(frozen=True, slots=True)
class PlanWal:
    first_segment: SegmentText | None
    last_segment: SegmentText
    segments: int


@dataclass(frozen=True, slots=True)
class PlanWindow:
    """The recoverable window the plan's backup lies in."""

    earliest: TimeText | None
    latest: TimeText | None
    latest_is_exact: bool
    earliest_lsn: LsnText
    latest_lsn: LsnText


@dataclass(frozen=True, slots=True)
class PlanReplay:
    """What replay must reach, for an executor to verify the restore."""

    mode: Annotated[Literal["target", "end_of_wal"], Text(
        "target: stop at the recovery target; end_of_wal: no recovery target, replay all WAL the plan's path "
        "holds (latest, a time after the last archived commit)")]
    end_lsn: Annotated[str, Text(
        "end_of_wal: the LSN replay must at least reach (the last decoded commit record before the end, or the "
        "last segment's first record position, its start + 40, whichever is later); target: the recovery stop "
        "the target implies (the LSN, or the backup's stop for immediate), null when not known (times)",
        LSN.pattern, LSN.check)] | None
    end_segment: Annotated[str, Text("the last WAL segment replay needs", SEGMENT.pattern, SEGMENT.check)] | None
    last_commit_time: Annotated[str, Text("end_of_wal: the last archived commit's time, when decoded")] | None
    stop: PlanStop | None = None      # exact targets only (absent otherwise)

    @property
    def end(self) -> Lsn | None:
        return None if self.end_lsn is None else Lsn.parse(self.end_lsn)


PLAN_FILES = ("postgresql.auto.conf", "recovery.signal", "recovery.conf", "standby.signal")


@dataclass(frozen=True, slots=True)
class PlanDoc:
    """The recovery plan of a clone (DESIGN.md plan JSON)."""

    source: PlanSource
    storage: PlanStorage
    pg_version: Annotated[int, Text("the source's PostgreSQL major version, from the catalog")] | None
    backup: PlanBackup
    target: PlanTarget
    timeline_path: tuple[int, ...]
    wal: PlanWal
    window: PlanWindow
    end_of_wal: bool
    replay: PlanReplay
    restore_command: str
    files: Mapping[str, str]
    warnings: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return document_json(self)

    @classmethod
    def from_json(cls, data: object) -> PlanDoc:
        """:raises PlanDocError: ``data`` is not a plan (the message names the member)."""
        if not isinstance(data, dict):
            raise PlanDocError(f"a plan is a JSON object, got {type(data).__name__}")
        try:
            doc = read_document(cls, _compat(data), what="the plan")
        except DocumentError as e:
            raise PlanDocError(str(e)) from None
        _check(doc)
        return doc


def plan_document(plan: RecoveryPlan, *, files: Mapping[str, str], restore_command: str, source: PlanSource,
                  storage: PlanStorage, pg_version: int | None) -> PlanDoc:
    """The document of a plan the planner made, with the files rendered for it."""
    w = plan.window
    replay = PlanReplay("end_of_wal" if plan.end_of_wal else "target", _lsn(plan.end_lsn), plan.last_segment,
                        iso(plan.last_commit_time), PlanStop.of(plan))
    return PlanDoc(
        source=source, storage=storage, pg_version=pg_version, backup=PlanBackup.of(plan.backup),
        target=PlanTarget.of(plan.target), timeline_path=tuple(plan.timeline_path),
        wal=PlanWal(plan.first_segment, plan.last_segment, plan.segments),
        window=PlanWindow(iso(w.from_time), iso(w.to_time), w.to_is_exact, str(w.from_lsn), str(w.to_lsn)),
        end_of_wal=plan.end_of_wal, replay=replay, restore_command=restore_command, files=dict(files),
        warnings=tuple(plan.warnings))


def _lsn(v: Lsn | None) -> str | None:
    return None if v is None else str(v)


def _check(doc: PlanDoc) -> None:
    """What the types do not say: a plan restores a named backup along a timeline path and writes only the
    recovery files."""
    if not doc.backup.label:
        raise PlanDocError("the plan has no backup.label")
    if not doc.files:
        raise PlanDocError("the plan has no files (file name -> text)")
    for name in doc.files:
        if name not in PLAN_FILES:
            raise PlanDocError(f"the plan's files name {name!r}, which a plan never writes")
    if not doc.timeline_path or not all(t > 0 for t in doc.timeline_path):
        raise PlanDocError("the plan has no timeline_path (positive timeline IDs)")
    if doc.pg_version is not None and doc.pg_version <= 0:
        raise PlanDocError(f"the plan's pg_version {doc.pg_version} is not a PostgreSQL major version")
    if doc.replay.mode == "end_of_wal" and doc.replay.end_lsn is None:
        raise PlanDocError("the plan's replay.end_lsn is missing or not an LSN")


# -- plans made before a member existed ---------------------------------------------------------------------

_TARGET_KEYS = frozenset({"recovery_target", "recovery_target_time", "recovery_target_lsn", "recovery_target_xid",
                          "recovery_target_name"})


def conf_key(line: str) -> str:
    """The setting a postgresql.conf line sets ('' for comments and blank lines)."""
    s = line.strip()
    if not s or s.startswith("#") or "=" not in s:
        return ""
    return s.split("=", 1)[0].strip().lower()


def _compat(data: dict[str, Any]) -> dict[str, Any]:
    """A plan from an older service, completed: ``storage`` (barman-cloud: from its restore_command),
    ``storage.layout`` (from ``source.layout``), ``replay`` and ``end_of_wal`` (from the files and
    ``wal.last_segment``)."""
    out = dict(data)
    source: dict[str, Any] = data["source"] if isinstance(data.get("source"), dict) else {}
    st = data.get("storage")
    if isinstance(st, dict) and st.get("layout") is None and source.get("layout"):
        out["storage"] = {**st, "layout": source["layout"]}
    if st is None:
        m = re.search(r"s3://([^/\s']+)/?(\S*)\s+(\S+)\s+%f", str(data.get("restore_command") or ""))
        if source.get("layout") != "barman" or not m:
            raise PlanDocError("the plan has no storage member (bucket, prefix, stanza): ask a newer service "
                               "for the plan, or restore from the catalog (--space/--clone-from)")
        out["storage"] = {"layout": "barman", "bucket": m.group(1), "prefix": m.group(2).strip("/"),
                          "stanza": m.group(3)}
    if isinstance(out.get("storage"), dict) and isinstance(out["storage"].get("prefix"), str):
        out["storage"] = {**out["storage"], "prefix": out["storage"]["prefix"].strip("/")}
    if "replay" not in data:
        out["replay"] = _replay_of_files(data)
    if "end_of_wal" not in data and isinstance(out["replay"], dict):
        out["end_of_wal"] = out["replay"].get("mode") == "end_of_wal"
    return out


def _replay_of_files(data: Mapping[str, Any]) -> dict[str, Any]:
    """A recovery stop when the plan's files set a recovery target, else end of WAL reaching into
    ``wal.last_segment`` (its first record ends past the page header)."""
    files: dict[str, Any] = data["files"] if isinstance(data.get("files"), dict) else {}
    text = "\n".join(str(files.get(n, "")) for n in ("postgresql.auto.conf", "recovery.conf"))
    if any(conf_key(ln) in _TARGET_KEYS for ln in text.splitlines()):
        return {"mode": "target", "end_lsn": None, "end_segment": None, "last_commit_time": None}
    wal: dict[str, Any] = data["wal"] if isinstance(data.get("wal"), dict) else {}
    last = str(wal.get("last_segment") or "")
    try:
        seg = WalSegment.from_name(last, DEFAULT_SEG_SIZE)
    except BadWalName:
        raise PlanDocError(f"the plan's wal.last_segment {last!r} is not a segment name") from None
    return {"mode": "end_of_wal", "end_lsn": str(Lsn(seg.start_lsn.value + 1)), "end_segment": last,
            "last_commit_time": None}
