"""Timeline history files and timeline paths (see PostgreSQL timeline.c, readTimeLineHistory)."""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from recovery.errors import BadHistory
from recovery.lsn import Lsn

_LINE_RE = re.compile(r"^\s*(\d+)\s+([0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8})\s*(.*)$")


@dataclass(frozen=True, slots=True)
class TimelineSwitch:
    """One line of a history file: the path left ``parent`` at ``switchpoint`` (exclusive end)."""

    parent: int
    switchpoint: Lsn
    reason: str = ""


def parse_history(text: str) -> tuple[TimelineSwitch, ...]:
    """Parse a ``0000000N.history`` file's text.

    >>> parse_history("1\\t0/B02E650\\tbefore 2026-01-01 12:00:37.990332+00\\n\\n")
    (TimelineSwitch(parent=1, switchpoint=Lsn('0/B02E650'), reason='before 2026-01-01 12:00:37.990332+00'),)
    """
    out: list[TimelineSwitch] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _LINE_RE.match(line)
        if not m:
            raise BadHistory(lineno, raw, "expected 'parentTLI<TAB>X/Y<TAB>reason'")
        tli = int(m.group(1))
        if tli < 1 or (out and tli <= out[-1].parent):
            raise BadHistory(lineno, raw, "timeline IDs must be positive and strictly increasing")
        lsn = Lsn.parse(m.group(2))
        if out and lsn < out[-1].switchpoint:
            raise BadHistory(lineno, raw, "switchpoints must not decrease")
        out.append(TimelineSwitch(tli, lsn, m.group(3).strip()))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class PathEntry:
    """Timeline ``tli`` covers ``[begin, end)`` on a path; ``end`` None means open-ended."""

    tli: int
    begin: Lsn
    end: Lsn | None

    def contains(self, lsn: Lsn) -> bool:
        return self.begin <= lsn and (self.end is None or lsn < self.end)


@dataclass(frozen=True, slots=True)
class TimelinePath:
    """The ancestry of a target timeline, oldest first."""

    entries: tuple[PathEntry, ...]

    @classmethod
    def build(cls, target: int, history: Sequence[TimelineSwitch]) -> TimelinePath:
        """
        >>> p = TimelinePath.build(2, parse_history("1\\t0/B02E650\\tx\\n"))
        >>> p.tlis, str(p.end_of(1)), p.tli_of(Lsn.parse("0/B02E650"))
        ((1, 2), '0/B02E650', 2)
        """
        entries: list[PathEntry] = []
        prev = Lsn(0)
        for sw in history:
            if sw.parent >= target:
                raise BadHistory(0, f"{sw.parent}", f"history of timeline {target} names a later timeline")
            entries.append(PathEntry(sw.parent, prev, sw.switchpoint))
            prev = sw.switchpoint
        entries.append(PathEntry(target, prev, None))
        return cls(tuple(entries))

    @property
    def target(self) -> int:
        return self.entries[-1].tli

    @property
    def tlis(self) -> tuple[int, ...]:
        return tuple(e.tli for e in self.entries)

    def entry(self, tli: int) -> PathEntry | None:
        for e in self.entries:
            if e.tli == tli:
                return e
        return None

    def end_of(self, tli: int) -> Lsn | None:
        e = self.entry(tli)
        return e.end if e else None

    def tli_of(self, lsn: Lsn) -> int:
        """tliOfPointInHistory: the timeline on this path that holds position ``lsn``."""
        for e in self.entries:
            if e.contains(lsn):
                return e.tli
        return self.target  # unreachable: the last entry is open-ended

    def on_path(self, tli: int, lsn: Lsn) -> bool:
        """Is a record starting at ``lsn`` on timeline ``tli`` part of this path?"""
        return self.tli_of(lsn) == tli

    def segment_tli(self, segno: int, seg_size: int) -> int:
        """Timeline whose file PostgreSQL restores for segment ``segno`` (XLogFileReadAnyTLI)."""
        best = self.entries[0].tli
        for e in self.entries:
            if e.begin.value // seg_size <= segno:
                best = e.tli
        return best

    def segment_ranges(self, first: int, last: int, seg_size: int) -> list[tuple[int, int, int]]:
        """Split segments ``first..last`` into (tli, from, to) pieces as restore would fetch them."""
        out: list[tuple[int, int, int]] = []
        for i, e in enumerate(self.entries):
            lo = e.begin.value // seg_size if i else 0
            hi = (self.entries[i + 1].begin.value // seg_size - 1) if i + 1 < len(self.entries) else last
            lo, hi = max(lo, first), min(hi, last)
            if lo <= hi:
                out.append((e.tli, lo, hi))
        return out


def build_paths(histories: Mapping[int, Sequence[TimelineSwitch]], timelines: Sequence[int]) -> dict[int, TimelinePath]:
    """A path for every known timeline; timeline 1 (or any without history) has only itself."""
    return {t: TimelinePath.build(t, histories.get(t, ())) for t in sorted(set(timelines) | set(histories))}
