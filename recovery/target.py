"""Recovery targets as the user asks for them: a time, an LSN, the end of WAL, or consistency.

Validation happens here, once: times must carry a zone (PostgreSQL would otherwise read them in
the server's ``timezone``), exactly one target kind is given, and the timeline request is
``latest``, ``current`` or a positive number.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from enum import StrEnum

from recovery.errors import BadLsn, PlanningError
from recovery.exact import ExactPoint, parse_point_name, parse_xid
from recovery.lsn import Lsn

TimelineRequest = str | int   # "latest" | "current" | N


class TargetKind(StrEnum):
    TIME = "time"
    LSN = "lsn"
    LATEST = "latest"         # replay all archived WAL on the path
    IMMEDIATE = "immediate"   # stop at the backup's consistency point
    XID = "xid"               # stop before the commit of a transaction (recovery_target_xid, not inclusive)
    NAME = "name"             # stop at a named restore point (recovery_target_name)


@dataclass(frozen=True, slots=True)
class Target:
    """What to recover to. ``value`` is a UTC datetime (time), an Lsn (lsn), the xid (xid), the restore
    point's name (name) or None. Exact targets (xid, name) are planned once ``point`` is resolved from the
    WAL index (:mod:`recovery.exact`); ``pick`` is the requested occurrence (restore-point-lsn)."""

    kind: TargetKind
    value: datetime | Lsn | int | str | None = None
    inclusive: bool = True
    timeline: TimelineRequest = "latest"
    action: str = "promote"
    point: ExactPoint | None = None
    pick: Lsn | None = None

    @property
    def exact(self) -> bool:
        return self.kind in (TargetKind.XID, TargetKind.NAME)

    @property
    def resolved(self) -> ExactPoint:
        if self.point is None:
            raise PlanningError("invalid_target", f"the {self.kind.value} target {self.value!r} is not resolved "
                                "to a WAL position (the WAL index was not consulted)")
        return self.point

    @property
    def xid(self) -> int:
        assert isinstance(self.value, int) and self.kind is TargetKind.XID
        return self.value

    @property
    def name(self) -> str:
        assert isinstance(self.value, str) and self.kind is TargetKind.NAME
        return self.value

    @property
    def time(self) -> datetime:
        assert isinstance(self.value, datetime)
        return self.value

    @property
    def lsn(self) -> Lsn:
        assert isinstance(self.value, Lsn)
        return self.value


@dataclass(frozen=True, slots=True)
class CloneRequest:
    """A clone request, parsed at the edge (HTTP body, CLI arguments): the service instance's name in the
    space, the target, and the PostgreSQL major version to write the files for (None: the source's)."""

    clone_from: str
    target: Target
    pg_version: int | None = None


def parse_time(text: str) -> datetime:
    """An ISO 8601 time with an explicit zone, as an aware UTC datetime.

    >>> parse_time("2016-09-28T10:00Z")
    datetime.datetime(2016, 9, 28, 10, 0, tzinfo=datetime.timezone.utc)
    >>> parse_time("2016-09-28T12:00:00.5+02:00").isoformat()
    '2016-09-28T10:00:00.500000+00:00'
    """
    if not isinstance(text, str) or not text.strip():
        raise PlanningError("invalid_target", f"not a time: {text!r} (expected ISO 8601, e.g. 2016-09-28T10:00Z)")
    raw = text.strip()
    try:
        value = datetime.fromisoformat(raw[:-1] + "+00:00" if raw[-1:] in "zZ" else raw)
    except ValueError:
        raise PlanningError("invalid_target",
                            f"not a time: {text!r} (expected ISO 8601, e.g. 2016-09-28T10:00Z)") from None
    if value.tzinfo is None or value.utcoffset() is None:
        raise PlanningError("invalid_target",
                            f"time {text!r} has no zone and is ambiguous; add Z or an offset such as +02:00")
    return value.astimezone(timezone.utc)


def parse_timeline(value: object) -> TimelineRequest:
    """``latest``, ``current`` or a positive timeline number (int or decimal text).

    >>> parse_timeline("latest"), parse_timeline("3"), parse_timeline(2)
    ('latest', 3, 2)
    """
    if isinstance(value, bool):
        raise PlanningError("invalid_target", f"invalid timeline {value!r}")
    if isinstance(value, int):
        n = value
    elif isinstance(value, str):
        text = value.strip().lower()
        if text in ("latest", "current"):
            return text
        if not text.isdigit():
            raise PlanningError("invalid_target",
                                f"invalid timeline {value!r} (expected latest, current or a number)")
        n = int(text)
    else:
        raise PlanningError("invalid_target", f"invalid timeline {value!r}")
    if not 1 <= n <= 0xFFFFFFFF:
        raise PlanningError("invalid_target", f"invalid timeline {value!r} (timeline IDs start at 1)")
    return n


def _lsn_of(value: str | Lsn) -> Lsn:
    if isinstance(value, Lsn):
        return value
    try:
        return Lsn.parse(value)
    except BadLsn as e:
        raise PlanningError("invalid_target", str(e)) from None


def make_target(point_in_time: str | datetime | None = None, lsn: str | Lsn | None = None,
                latest: bool = False, immediate: bool = False, timeline: object = "latest",
                exclusive: bool = False, before_xid: object = None, restore_point: object = None,
                restore_point_lsn: str | Lsn | None = None) -> Target:
    """Validate a request: exactly one of time, LSN, latest, immediate, before-xid, restore-point."""
    given = [name for name, on in (("point-in-time", point_in_time is not None), ("lsn", lsn is not None),
                                   ("latest", bool(latest)), ("immediate", bool(immediate)),
                                   ("before-xid", before_xid is not None),
                                   ("restore-point", restore_point is not None)) if on]
    if len(given) != 1:
        what = ", ".join(given) if given else "none"
        raise PlanningError("invalid_target",
                            "give exactly one of point-in-time, lsn, latest, immediate, before-xid, restore-point "
                            f"(got {what})")
    if restore_point_lsn is not None and restore_point is None:
        raise PlanningError("invalid_target", "restore-point-lsn picks an occurrence of a restore-point target")
    tl = parse_timeline(timeline)
    if before_xid is not None or restore_point is not None:
        if exclusive:
            raise PlanningError("invalid_target", "exclusive does not apply to before-xid (never inclusive) or "
                                "restore-point (recovery stops right after it)")
        if tl == "current":
            raise PlanningError("invalid_target", "timeline current does not apply to before-xid and "
                                "restore-point targets: their timeline is the one the WAL record is on "
                                "(give latest or the timeline number)")
        if before_xid is not None:
            return Target(TargetKind.XID, parse_xid(before_xid), False, tl)
        pick = _lsn_of(restore_point_lsn) if restore_point_lsn is not None else None
        return Target(TargetKind.NAME, parse_point_name(restore_point), True, tl, pick=pick)
    if point_in_time is not None:
        if isinstance(point_in_time, datetime):
            if point_in_time.tzinfo is None or point_in_time.utcoffset() is None:
                raise PlanningError("invalid_target", "time has no zone and is ambiguous")
            when = point_in_time.astimezone(timezone.utc)
        else:
            when = parse_time(point_in_time)
        return Target(TargetKind.TIME, when, not exclusive, tl)
    if lsn is not None:
        return Target(TargetKind.LSN, _lsn_of(lsn), not exclusive, tl)
    if exclusive:
        raise PlanningError("invalid_target", "exclusive applies only to point-in-time and LSN targets")
    if latest:
        return Target(TargetKind.LATEST, None, True, tl)
    if isinstance(tl, int):
        raise PlanningError("invalid_target",
                            "immediate recovery stops at the backup's consistency point on its own timeline; "
                            "a timeline cannot be chosen")
    # pgBackRest forces 'current' with recovery_target='immediate' (LAYOUTS §8.2)
    return Target(TargetKind.IMMEDIATE, None, True, "current")
