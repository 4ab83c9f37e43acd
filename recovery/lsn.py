"""Log sequence numbers: 64-bit WAL positions, text form ``X/Y`` (hex, unpadded)."""
from __future__ import annotations

import re
from dataclasses import dataclass

from recovery.errors import BadLsn

_LSN_RE = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")
MAX_LSN = (1 << 64) - 1


@dataclass(frozen=True, slots=True, order=True)
class Lsn:
    """A WAL position.

    >>> Lsn.parse("16/B374D848")
    Lsn('16/B374D848')
    >>> str(Lsn(0x30000D8))
    '0/30000D8'
    >>> Lsn.parse("0/30000D8").segno(16 * 1024 * 1024)
    3
    """

    value: int

    def __post_init__(self) -> None:
        if not 0 <= self.value <= MAX_LSN:
            raise BadLsn(str(self.value))

    @classmethod
    def parse(cls, text: str) -> Lsn:
        m = _LSN_RE.match(text.strip()) if isinstance(text, str) else None
        if not m:
            raise BadLsn(str(text))
        return cls((int(m.group(1), 16) << 32) | int(m.group(2), 16))

    def __str__(self) -> str:
        return f"{self.value >> 32:X}/{self.value & 0xFFFFFFFF:X}"

    def __repr__(self) -> str:
        return f"Lsn('{self}')"

    def __int__(self) -> int:
        return self.value

    def segno(self, seg_size: int) -> int:
        """Number of the segment holding this position (XLByteToSeg)."""
        return self.value // seg_size

    def __add__(self, other: int) -> Lsn:
        return Lsn(self.value + int(other))

    def __sub__(self, other: int) -> Lsn:
        return Lsn(self.value - int(other))
