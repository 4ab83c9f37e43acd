"""WAL segment names and arithmetic for any segment size (see xlog_internal.h)."""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from recovery.errors import BadWalName
from recovery.lsn import Lsn
from recovery.model import WalRun

DEFAULT_SEG_SIZE = 16 * 1024 * 1024
_SEG_RE = re.compile(r"^[0-9A-F]{24}$")
_HISTORY_RE = re.compile(r"^([0-9A-F]{8})\.history$")


def valid_seg_size(seg_size: int) -> bool:
    """PostgreSQL allows powers of two from 1 MiB to 1 GiB.

    >>> valid_seg_size(16 * 1024 * 1024), valid_seg_size(3 * 1024 * 1024)
    (True, False)
    """
    return 1 << 20 <= seg_size <= 1 << 30 and seg_size & (seg_size - 1) == 0


def segs_per_xlogid(seg_size: int) -> int:
    """Segments per 4 GiB "log" id: 256 at 16 MiB.

    >>> segs_per_xlogid(16 * 1024 * 1024), segs_per_xlogid(1 << 30)
    (256, 4)
    """
    return 0x1_0000_0000 // seg_size


@dataclass(frozen=True, slots=True, order=True)
class WalSegment:
    """A WAL segment file: timeline and absolute segment number, for a given segment size.

    >>> s = WalSegment.from_name("00000002000000010000000B")
    >>> s.timeline, s.segno, s.name
    (2, 267, '00000002000000010000000B')
    """

    timeline: int
    segno: int
    seg_size: int = DEFAULT_SEG_SIZE

    @classmethod
    def from_name(cls, name: str, seg_size: int = DEFAULT_SEG_SIZE) -> WalSegment:
        if not isinstance(name, str) or not _SEG_RE.match(name):
            raise BadWalName(str(name))
        tli, log, seg = int(name[0:8], 16), int(name[8:16], 16), int(name[16:24], 16)
        per = segs_per_xlogid(seg_size)
        if tli == 0 or seg >= per:
            raise BadWalName(name)
        return cls(tli, log * per + seg, seg_size)

    @classmethod
    def of_lsn(cls, timeline: int, lsn: Lsn, seg_size: int = DEFAULT_SEG_SIZE) -> WalSegment:
        return cls(timeline, lsn.segno(seg_size), seg_size)

    @property
    def name(self) -> str:
        return segment_name(self.timeline, self.segno, self.seg_size)

    @property
    def start_lsn(self) -> Lsn:
        return Lsn(self.segno * self.seg_size)

    @property
    def end_lsn(self) -> Lsn:
        """First position after this segment."""
        return Lsn((self.segno + 1) * self.seg_size)

    def __str__(self) -> str:
        return self.name


def segment_name(timeline: int, segno: int, seg_size: int = DEFAULT_SEG_SIZE) -> str:
    """
    >>> segment_name(1, 3)
    '000000010000000000000003'
    >>> segment_name(1, 0x100, 16 * 1024 * 1024)
    '000000010000000100000000'
    """
    per = segs_per_xlogid(seg_size)
    return f"{timeline:08X}{segno // per:08X}{segno % per:08X}"


def is_segment_name(name: str) -> bool:
    return bool(_SEG_RE.match(name))


def history_timeline(name: str) -> int | None:
    """Timeline of a ``0000000N.history`` name, else None.

    >>> history_timeline("00000002.history"), history_timeline("x.history")
    (2, None)
    """
    m = _HISTORY_RE.match(name)
    return int(m.group(1), 16) if m else None


def history_name(timeline: int) -> str:
    return f"{timeline:08X}.history"


def parse_seg_size_from_page(header: bytes) -> int | None:
    """Segment size from a segment's first (long) page header, or None if it is not one.

    Long header layout (little-endian): magic u16 @0, info u16 @2, tli u32 @4, pageaddr u64 @8,
    rem_len u32 @16, sysid u64 @24, seg_size u32 @32, blcksz u32 @36.  XLP_LONG_HEADER = 0x0002.
    """
    if len(header) < 40:
        return None
    magic = int.from_bytes(header[0:2], "little")
    info = int.from_bytes(header[2:4], "little")
    if magic & 0xF000 != 0xD000 or not info & 0x0002:
        return None
    size = int.from_bytes(header[32:36], "little")
    return size if valid_seg_size(size) else None


def merge_runs(runs: Iterable[WalRun]) -> tuple[WalRun, ...]:
    """Union of runs: overlapping or adjacent runs of a timeline merge into one.

    >>> merge_runs([WalRun(1, 5, 9), WalRun(1, 1, 4), WalRun(2, 3, 3), WalRun(1, 11, 12)])
    (WalRun(timeline=1, first=1, last=9), WalRun(timeline=1, first=11, last=12), WalRun(timeline=2, first=3, last=3))
    """
    out: list[WalRun] = []
    for r in sorted(runs, key=lambda r: (r.timeline, r.first, r.last)):
        if r.first > r.last:
            raise ValueError(f"empty WAL run {r}")
        if out and out[-1].timeline == r.timeline and r.first <= out[-1].last + 1:
            if r.last > out[-1].last:
                out[-1] = WalRun(r.timeline, out[-1].first, r.last)
        else:
            out.append(r)
    return tuple(out)
