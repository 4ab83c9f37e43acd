"""WAL segments for the events bench: what an idle-ish server archives once a minute (``archive_timeout``):
a few commits on the segment's first page, an ``XLOG_SWITCH``, then zeros to the end of the segment.

Valid for the product's WAL reader (page headers, CRC-checked records, the segment number and system
identifier in the long header), so the edge reader finds the last commit in the newest segment as it would
in a real archive. Compressed as WAL-G writes it (lz4 frames; the zeros are one frame compressed once and
reused, which decodes exactly as one frame would).
"""
from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta
from functools import cache

from recovery import walreader

BLCKSZ = 8192
PAGE_MAGIC = 0xD110                    # PostgreSQL 15
_REC = struct.Struct("<IIQBBxxI")      # xl_tot_len, xl_xid, xl_prev, xl_info, xl_rmid, (pad), xl_crc
_PAGE = struct.Struct("<HHIQI")        # xlp_magic, xlp_info, xlp_tli, xlp_pageaddr, xlp_rem_len
_EPOCH_2000 = datetime(2000, 1, 1, tzinfo=UTC)
RM_XLOG, XLOG_SWITCH = 0, 0x40
RM_XACT, XLOG_XACT_COMMIT = 1, 0x00


def _commit_body(when: datetime) -> bytes:
    main = struct.pack("<q", (when - _EPOCH_2000) // timedelta(microseconds=1))
    return b"\xff" + bytes([len(main)]) + main          # XLR_BLOCK_ID_DATA_SHORT + xl_xact_commit


def first_page(timeline: int, segno: int, seg_size: int, commits: list[datetime], *, sysid: int = 7,
               first_xid: int = 1000) -> bytes:
    """The segment's first page: long header, one commit record per time, then XLOG_SWITCH."""
    page = bytearray(BLCKSZ)
    base = segno * seg_size
    _PAGE.pack_into(page, 0, PAGE_MAGIC, 2, timeline, base, 0)           # XLP_LONG_HEADER
    struct.pack_into("<QII", page, 24, sysid, seg_size, BLCKSZ)
    pos, prev = 40, 0
    records = [(RM_XACT, XLOG_XACT_COMMIT, first_xid + i, _commit_body(t)) for i, t in enumerate(commits)]
    records.append((RM_XLOG, XLOG_SWITCH, 0, b""))
    for rmid, info, xid, body in records:
        tot = 24 + len(body)
        head = _REC.pack(tot, xid, prev, info, rmid, 0)
        crc = walreader.crc32c(head[:20], walreader.crc32c(body))
        rec = head[:20] + struct.pack("<I", crc) + body
        if pos + tot > BLCKSZ:
            raise ValueError("the records must fit on the first page")
        page[pos:pos + tot] = rec
        prev = base + pos
        pos = (pos + tot + 7) & ~7
    return bytes(page)


def segment(timeline: int, segno: int, seg_size: int, commits: list[datetime]) -> bytes:
    """The whole segment, uncompressed (``seg_size`` bytes)."""
    return first_page(timeline, segno, seg_size, commits) + bytes(seg_size - BLCKSZ)


@cache
def _zeros_lz4(n: int) -> bytes:
    import lz4.frame
    return bytes(lz4.frame.compress(bytes(n)))


def segment_lz4(timeline: int, segno: int, seg_size: int, commits: list[datetime]) -> bytes:
    """The segment as WAL-G uploads it (``.lz4``).

    >>> from recovery.walreader import read_xact_records
    >>> from scheduler.layouts.common import decompress
    >>> t = datetime(2026, 1, 1, tzinfo=UTC)
    >>> data = decompress(segment_lz4(1, 5, 16 << 20, [t, t + timedelta(seconds=30)]), "lz4")
    >>> scan = read_xact_records(data, expected_segno=5)
    >>> [r.xact_time.second for r in scan.records], scan.ended_by_switch, len(data) == 16 << 20
    ([0, 30], True, True)
    """
    import lz4.frame
    return bytes(lz4.frame.compress(first_page(timeline, segno, seg_size, commits))) + _zeros_lz4(seg_size - BLCKSZ)


__all__ = ["first_page", "segment", "segment_lz4"]
