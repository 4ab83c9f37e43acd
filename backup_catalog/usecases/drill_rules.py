"""Pure rules of restore drills: when an instance is due, which point it is drilled at, whether a drill
fits the scratch budget, which WAL segments a plan replays, and how a failure is described.

No I/O and no clock (``now`` is a parameter); the drill use case (:mod:`backup_catalog.usecases.drill`)
and the scheduler job call these.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from recovery.timeline import TimelinePath
from recovery.wal import segment_name
from recovery.windows import CutKind, Window

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MIN_WAL_ROOM = 64          # segments of pg_wal room a recovery may hold (max_wal_size 1 GB at 16 MiB)


# -- schedule ---------------------------------------------------------------------------------------

def instance_offset(guid: str, interval_s: int) -> int:
    """A stable per-instance offset in ``[0, interval)``: spreads instances over the interval (the jitter)
    the same way on every replica, so replicas agree on each instance's slots.

    >>> instance_offset("a", 3600) == instance_offset("a", 3600) and 0 <= instance_offset("a", 3600) < 3600
    True
    """
    step = max(1, int(interval_s))
    return int.from_bytes(hashlib.sha1(guid.encode()).digest()[:8], "big") % step


@dataclass(frozen=True, slots=True)
class Slot:
    """The ``index``-th drill interval of an instance, starting at ``start`` (its run-log key)."""

    index: int
    start: datetime


def drill_slot(now: datetime, interval_s: int, guid: str) -> Slot:
    """The instance's drill slot that ``now`` falls in.

    >>> s = drill_slot(datetime(2026, 1, 1, tzinfo=UTC), 86400, "x")
    >>> s.start <= datetime(2026, 1, 1, tzinfo=UTC) < s.start + timedelta(days=1)
    True
    """
    step = max(1, int(interval_s))
    off = instance_offset(guid, step)
    secs = int((now - EPOCH).total_seconds()) - off
    index = secs // step
    return Slot(index, EPOCH + timedelta(seconds=index * step + off))


def is_due(slot: Slot, last_requested: datetime | None) -> bool:
    """Due when no drill of the instance was requested in this slot (a manual drill counts)."""
    return last_requested is None or last_requested < slot.start


# -- points -----------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class DrillPoint:
    """Where a drill restores to: ``latest`` (the newest window's end), a time on a timeline, or an exact
    target (issue 20): just before a transaction (``xid``) or a named restore point (``name``)."""

    kind: str                       # "latest" | "time" | "xid" | "name"
    time: datetime | None = None
    timeline: str | int = "latest"
    why: str = "the newest window's end"
    xid: int | None = None
    name: str | None = None

    def target_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :func:`recovery.target.make_target` for this point."""
        return {"point_in_time": self.time, "latest": self.kind == "latest", "timeline": self.timeline,
                "before_xid": self.xid, "restore_point": self.name}


LATEST = DrillPoint("latest")


def other_points(windows: Sequence[Window]) -> list[DrillPoint]:
    """Points other than the newest end worth proving: just before each window end that is not the end
    of the newest path's WAL, i.e. before a hole/conflict, or the end of a timeline's branch at a switch.
    Only exact ends (a commit record's time) are used; "just before" is one second before, or the middle
    of a window shorter than two seconds."""
    if not windows:
        return []
    newest = max(windows, key=lambda w: (len(w.timeline_path), w.timeline_path, w.to_lsn))
    out: list[DrillPoint] = []
    for w in sorted(windows, key=lambda w: (w.timeline_path, w.to_lsn)):
        if w is newest or not w.to_is_exact or w.to_time is None or w.from_time is None:
            continue
        span = w.to_time - w.from_time
        if span <= timedelta(0):
            continue
        at = w.to_time - timedelta(seconds=1) if span >= timedelta(seconds=2) else w.from_time + span / 2
        if w.end_kind is CutKind.END:
            why = f"just before the end of timeline {w.timeline_path[-1]}'s branch"
        else:
            why = f"just before a {w.end_kind.value} on timeline path {list(w.timeline_path)}"
        out.append(DrillPoint("time", at, w.timeline_path[-1], why))
    return out


def choose_point(slot_index: int, windows: Sequence[Window]) -> DrillPoint:
    """Even slots (and every slot when there is nothing else) drill the newest window's end; odd slots
    cycle through :func:`other_points`."""
    others = other_points(windows)
    if slot_index % 2 == 0 or not others:
        return LATEST
    return others[(slot_index // 2) % len(others)]


# -- scratch budget ---------------------------------------------------------------------------------

def estimate_scratch_bytes(backup_size: int | None, repo_size: int | None, segments: int, seg_size: int) -> int:
    """Disk a restore needs: the data directory (the backup's database size; three times its repository
    size when only that is known) plus pg_wal room for replay (segments restored one at a time, kept up to
    about max_wal_size between restartpoints).

    >>> estimate_scratch_bytes(100 << 20, None, 3, 16 << 20) == (100 << 20) + 3 * (16 << 20) + (16 << 20)
    True
    """
    data = backup_size or (3 * repo_size if repo_size else 0)
    return int(data) + (min(max(segments, 0), MIN_WAL_ROOM) + 1) * seg_size


def budget_refusal(need: int, in_use: int, budget: int, free: int | None) -> str | None:
    """Why a drill needing ``need`` bytes may not start (None: it fits).

    >>> budget_refusal(10, 0, 5, None)
    'needs about 10 B of scratch disk; the drill budget is 5 B (0 B in use by running drills)'
    >>> budget_refusal(10, 0, 100, 50) is None, budget_refusal(10, 0, 100, 5) is not None
    (True, True)
    """
    if need + in_use > budget:
        return (f"needs about {human(need)} of scratch disk; the drill budget is {human(budget)} "
                f"({human(in_use)} in use by running drills)")
    if free is not None and need > free:
        return f"needs about {human(need)} of scratch disk; only {human(free)} free in the scratch directory"
    return None


def human(n: int) -> str:
    """
    >>> human(5), human(3 << 30)
    ('5 B', '3.0 GiB')
    """
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


# -- WAL of a plan and checksums --------------------------------------------------------------------

def plan_segments(path: TimelinePath, first: int, last: int, seg_size: int) -> list[str]:
    """Names of the segments a recovery along ``path`` restores for segnos ``first..last``, in order."""
    return [segment_name(tli, n, seg_size) for tli, lo, hi in path.segment_ranges(first, last, seg_size)
            for n in range(lo, hi + 1)]


def checksum_matches(content: bytes, sha1_hex: str) -> bool:
    """
    >>> checksum_matches(b"x", hashlib.sha1(b"x").hexdigest()), checksum_matches(b"y", "0" * 40)
    (True, False)
    """
    return hashlib.sha1(content).hexdigest() == sha1_hex.lower()


# -- outcome ----------------------------------------------------------------------------------------

def failure_reason(stage: str, message: str, segment: str | None) -> str:
    """The recorded reason of a failed drill: the stage's message, naming the segment when known.

    >>> failure_reason("recover", "replay stopped at 0/5000000", "000000010000000000000005")
    'recover: replay stopped at 0/5000000 (segment 000000010000000000000005)'
    """
    text = f"{stage}: {message}"
    if segment and segment not in message:
        text += f" (segment {segment})"
    return text
