"""Streaming WAL listing → merged runs, in O(runs) memory (keys arrive in (TLI, segno) order)."""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime

from recovery.model import WalRun
from recovery.wal import merge_runs


@dataclass(slots=True)
class RunTail:
    """A run being built: its last segment's key and LastModified (for edge decoding)."""

    timeline: int
    first: int
    last: int
    last_key: str
    last_modified: datetime | None
    recent: deque[tuple[int, str, datetime | None]] = field(default_factory=lambda: deque(maxlen=8))


@dataclass(slots=True)
class RunBuilder:
    runs: list[RunTail] = field(default_factory=list)
    duplicates: list[tuple[int, int, str, str]] = field(default_factory=list)  # tli, segno, key_a, key_b
    # segments to read again (known corrupt) and segments listed twice: the keys of the run up to each
    watch: frozenset[tuple[int, int]] = frozenset()
    watched: dict[tuple[int, int], list[tuple[int, str, datetime | None]]] = field(default_factory=dict)

    def add(self, timeline: int, segno: int, key: str, last_modified: datetime | None, checksum: str | None) -> None:
        cur = self.runs[-1] if self.runs else None
        if cur and cur.timeline == timeline and cur.last == segno:
            # a second object for the same segment (another checksum suffix or compression)
            self.duplicates.append((timeline, segno, cur.last_key, key))
            self.watched.setdefault((timeline, segno), list(cur.recent))
            return
        if cur and cur.timeline == timeline and cur.last + 1 == segno:
            cur.last, cur.last_key, cur.last_modified = segno, key, last_modified
            cur.recent.append((segno, key, last_modified))
            self._watch(cur)
            return
        if cur and (timeline, segno) < (cur.timeline, cur.last):
            # out of order (should not happen with lexicographic listings): start a run, merged later
            pass
        tail = RunTail(timeline, segno, segno, key, last_modified)
        tail.recent.append((segno, key, last_modified))
        self.runs.append(tail)
        self._watch(tail)

    def _watch(self, tail: RunTail) -> None:
        if (tail.timeline, tail.last) in self.watch:
            self.watched[(tail.timeline, tail.last)] = list(tail.recent)

    def replace_key(self, old: str, new: str) -> None:
        """``old`` (one copy of a duplicated segment) is gone: the segment's other copy ``new`` stands for it."""
        for r in self.runs:
            if r.last_key == old:
                r.last_key = new
            if any(k == old for _, k, _ in r.recent):
                r.recent = deque(((n, new if k == old else k, lm) for n, k, lm in r.recent), maxlen=r.recent.maxlen)
        for w, recent in self.watched.items():
            self.watched[w] = [(n, new if k == old else k, lm) for n, k, lm in recent]

    def wal_runs(self) -> tuple[WalRun, ...]:
        return merge_runs(WalRun(r.timeline, r.first, r.last) for r in self.runs)
