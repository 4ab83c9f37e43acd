"""Commit and abort timestamps read from the bytes of one decompressed WAL segment.

A pure reader of the PostgreSQL WAL record format (PG 9.6-18): page headers (xlog_internal.h), record
headers and block references (xlogrecord.h), the walk and checks of xlogreader.c, and the first field of
``xl_xact_commit`` / ``xl_xact_abort`` (xact.h).  ``recovery_target_time`` only stops on these records, so
they give the exact end of a recoverable window (LAYOUTS.md §6).

CRC-32C: with the ``crc32c`` PyPI package (C code) every record is verified, like the server does.
Without it a pure-Python table checks only the records whose content we use (transaction records and
XLOG_SWITCH); other records are still walked with every structural check (page magic and address,
continuation lengths, ``xl_prev`` chain, block-header totals), so garbage is never taken for a commit,
but the end of valid WAL may then be detected one unchecked record later than PostgreSQL would.

(Over 400 lines: the page and record walk with its checks is one piece, like xlogreader.c it follows; the
records' content is decoded apart, in :mod:`recovery.walrecords`.)
"""
from __future__ import annotations

import struct
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from recovery.errors import ParseError
from recovery.lsn import Lsn
from recovery.wal import valid_seg_size


def _load_c_crc32c() -> Callable[..., int] | None:
    """The ``crc32c`` PyPI package's C implementation, when installed."""
    try:
        import crc32c as module
    except ImportError:  # pragma: no cover - depends on the environment
        return None
    fn: Callable[..., int] = module.crc32c
    return fn


_c_crc32c = _load_c_crc32c()

# XLOG_PAGE_MAGIC per major version (xlog_internal.h; table in LAYOUTS.md §5.2).
PAGE_MAGIC_VERSIONS: dict[int, str] = {
    0xD093: "9.6", 0xD097: "10", 0xD098: "11", 0xD101: "12", 0xD106: "13",
    0xD10D: "14", 0xD110: "15", 0xD113: "16", 0xD116: "17", 0xD118: "18",
}
XACT_KINDS: dict[int, str] = {0x00: "commit", 0x20: "abort", 0x30: "commit_prepared", 0x40: "abort_prepared"}
CRC_ALL = _c_crc32c is not None

_PAGE = struct.Struct("<HHIQI")  # xlp_magic, xlp_info, xlp_tli, xlp_pageaddr, xlp_rem_len
_LONG = struct.Struct("<QII")  # xlp_sysid, xlp_seg_size, xlp_xlog_blcksz (at offset 24)
_REC = struct.Struct("<IIQBBxxI")  # xl_tot_len, xl_xid, xl_prev, xl_info, xl_rmid, pad, xl_crc
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_I64 = struct.Struct("<q")
SHORT_PHD, LONG_PHD, REC_HDR = 24, 40, 24  # MAXALIGNed header sizes
XLP_FIRST_IS_CONTRECORD, XLP_LONG_HEADER, XLP_ALL_FLAGS = 0x0001, 0x0002, 0x000F
RM_XLOG_ID, RM_XACT_ID, XLOG_SWITCH, XLOG_XACT_OPMASK = 0, 1, 0x40, 0x70
_PG15_MAGIC = 0xD110  # bimg_info compression bits changed in 15 (xlogrecord.h)
_EPOCH_2000 = datetime(2000, 1, 1, tzinfo=UTC)


class PrefixTooShort(ValueError):
    """:func:`read_xact_records` was given the beginning of a file (``total_len``) and needed more of it."""


class BadWal(ParseError):
    """Bytes that are not a WAL segment (or not the expected one)."""

    code = "invalid_wal"

    def __init__(self, message: str) -> None:
        super().__init__(f"not a valid WAL segment: {message}")
        self.message = message


@dataclass(frozen=True, slots=True)
class XactRecord:
    """A commit/abort record; ``end_lsn`` is MAXALIGN(record end), i.e. where the next record may start."""

    lsn: Lsn
    end_lsn: Lsn
    kind: str
    xact_time: datetime
    xid: int  # xl_xid of the record header, as pg_waldump's "tx:" (0 for COMMIT PREPARED from another session)


@dataclass(frozen=True, slots=True)
class PendingRecord:
    """The start of a record that crosses the segment end; pass it to the next segment's scan.

    ``head`` holds the ``have`` bytes already read, or is empty when the record is of no interest.
    """

    lsn: Lsn
    total_len: int
    have: int
    head: bytes


@dataclass(frozen=True, slots=True)
class SegmentScan:
    records: tuple[XactRecord, ...]
    seg_size: int
    sysid: int
    page_magic: int
    end_of_valid_wal: Lsn | None  # first invalid position when valid WAL stops inside the segment
    ended_by_switch: bool
    start_lsn: Lsn = Lsn(0)  # noqa: RUF009 - Lsn is immutable
    timeline: int = 0  # xlp_tli of the first page (may be the parent's: take the TLI from the file name)
    blcksz: int = 8192
    pending: PendingRecord | None = None  # record crossing the segment end (ignored here)
    truncated: bool = False  # fewer than seg_size bytes were given
    crc_checked: str = "all"  # "all" or "xact" (see module docstring)

    @property
    def pg_version(self) -> str:
        return PAGE_MAGIC_VERSIONS[self.page_magic]


class _Invalid(Exception):
    """Valid WAL ends here (like an xlogreader error)."""


class _DataEnd(Exception):
    """The given bytes end before the segment does."""


class _SegEnd(Exception):
    def __init__(self, parts: list[bytes | memoryview], remaining: int) -> None:
        self.parts, self.remaining = parts, remaining


def _make_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _make_table()


def crc32c(data: bytes | memoryview, crc: int = 0) -> int:
    """CRC-32C (Castagnoli), as PostgreSQL's pg_crc32c; ``crc`` continues a previous value.

    >>> hex(crc32c(b"123456789")), crc32c(b"6789", crc32c(b"12345")) == crc32c(b"123456789")
    ('0xe3069283', True)
    """
    if _c_crc32c is not None:
        return int(_c_crc32c(data, crc))
    c = crc ^ 0xFFFFFFFF
    table = _TABLE
    for b in bytes(data):
        c = table[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def _record_crc_ok(rec: bytes | memoryview) -> bool:
    """ValidXLogRecord: CRC of the payload after the header, then of the header up to xl_crc."""
    crc = crc32c(rec[REC_HDR:])
    crc = crc32c(rec[:20], crc)
    return bool(crc == _U32.unpack_from(rec, 20)[0])


def _main_data(rec: bytes | memoryview, magic: int) -> bytes:
    """The main data of a record: walk the block headers like DecodeXLogRecord, check the totals."""
    tot_len = len(rec)
    pos, datatotal, main_len = REC_HDR, 0, 0
    pg15 = magic >= _PG15_MAGIC
    try:
        while tot_len - pos > datatotal:
            block_id = rec[pos]
            pos += 1
            if block_id == 255:  # XLR_BLOCK_ID_DATA_SHORT
                main_len = rec[pos]
                pos += 1
                datatotal += main_len
            elif block_id == 254:  # XLR_BLOCK_ID_DATA_LONG
                main_len = _U32.unpack_from(rec, pos)[0]
                pos += 4
                datatotal += main_len
            elif block_id == 253:  # XLR_BLOCK_ID_ORIGIN: RepOriginId
                pos += 2
            elif block_id == 252:  # XLR_BLOCK_ID_TOPLEVEL_XID (PG 14+)
                pos += 4
            elif block_id <= 32:  # XLR_MAX_BLOCK_ID
                fork_flags = rec[pos]
                datatotal += _U16.unpack_from(rec, pos + 1)[0]
                pos += 3
                if fork_flags & 0x10:  # BKPBLOCK_HAS_IMAGE: XLogRecordBlockImageHeader
                    bimg_len = _U16.unpack_from(rec, pos)[0]
                    bimg_info = rec[pos + 4]
                    pos += 5
                    compressed = bimg_info & (0x1C if pg15 else 0x02)
                    if bimg_info & 0x01 and compressed:  # BKPIMAGE_HAS_HOLE: compress header
                        pos += 2
                    datatotal += bimg_len
                if not fork_flags & 0x80:  # BKPBLOCK_SAME_REL unset: RelFileLocator follows
                    pos += 12
                pos += 4  # BlockNumber
            else:
                raise _Invalid(f"invalid block_id {block_id}")
    except (IndexError, struct.error) as exc:
        raise _Invalid("block headers overrun the record") from exc
    if pos + datatotal != tot_len:
        raise _Invalid("block data lengths do not add up to xl_tot_len")
    return bytes(rec[tot_len - main_len:tot_len])


def _maxalign(n: int) -> int:
    return (n + 7) & ~7


class _Segment:
    """Page access with the checks of XLogReaderValidatePageHeader."""

    def __init__(self, data: memoryview, seg_size: int, seg_start: int, magic: int, sysid: int, blcksz: int, tli: int) -> None:
        self.data, self.n, self.seg_size, self.seg_start = data, len(data), seg_size, seg_start
        self.magic, self.sysid, self.blcksz, self.tli = magic, sysid, blcksz, tli

    def page(self, off: int, *, cont: int | None) -> int:
        """Validate the page header at ``off``; return its size.  ``cont``: expected xlp_rem_len, if any."""
        if off + SHORT_PHD > self.n:
            raise _DataEnd
        magic, info, tli, pageaddr, rem_len = _PAGE.unpack_from(self.data, off)
        if magic != self.magic or info & ~XLP_ALL_FLAGS or pageaddr != self.seg_start + off or tli < self.tli:
            raise _Invalid(f"bad page header at offset {off:#x}")
        self.tli = tli
        size = SHORT_PHD
        if info & XLP_LONG_HEADER:
            if off + LONG_PHD > self.n:
                raise _DataEnd
            if _LONG.unpack_from(self.data, off + 24) != (self.sysid, self.seg_size, self.blcksz):
                raise _Invalid(f"long page header mismatch at offset {off:#x}")
            size = LONG_PHD
        if cont is not None and (not info & XLP_FIRST_IS_CONTRECORD or rem_len != cont):
            raise _Invalid(f"missing continuation at offset {off:#x}")
        if cont is None and info & XLP_FIRST_IS_CONTRECORD:
            raise _Invalid(f"contrecord where a record should start at offset {off:#x}")
        return size

    def gather(self, pos: int, length: int, collect: bool) -> tuple[list[bytes | memoryview], int]:
        """Read ``length`` record bytes from ``pos``, following continuation pages; return (parts, end)."""
        parts: list[bytes | memoryview] = []
        blcksz = self.blcksz
        while True:
            take = min(length, (pos // blcksz + 1) * blcksz - pos)
            if pos + take > self.n:
                raise _DataEnd
            if collect:
                parts.append(self.data[pos:pos + take])
            length -= take
            pos += take
            if not length:
                return parts, pos
            if pos >= self.seg_size:
                raise _SegEnd(parts, length)
            pos += self.page(pos, cont=length)


def _first_page(data: memoryview, seg_size: int | None, expected_segno: int | None) -> tuple[int, int, int, int, int, int, int, int]:
    if len(data) < LONG_PHD:
        raise BadWal(f"{len(data)} bytes, shorter than a long page header")
    magic, info, tli, pageaddr, rem_len = _PAGE.unpack_from(data, 0)
    sysid, size, blcksz = _LONG.unpack_from(data, 24)
    if magic not in PAGE_MAGIC_VERSIONS:
        raise BadWal(f"unknown page magic {magic:#06x} (known: PG 9.6-18)")
    if not info & XLP_LONG_HEADER or info & ~XLP_ALL_FLAGS:
        raise BadWal(f"first page has no long header (xlp_info {info:#06x})")
    if not valid_seg_size(size) or blcksz not in (1024, 2048, 4096, 8192, 16384, 32768, 65536):
        raise BadWal(f"implausible sizes in long header: seg_size {size}, blcksz {blcksz}")
    if seg_size is not None and size != seg_size:
        raise BadWal(f"segment size {size} in header, expected {seg_size}")
    if pageaddr % size:
        raise BadWal(f"first page address {Lsn(pageaddr)} is not at a segment start")
    if expected_segno is not None and pageaddr // size != expected_segno:
        raise BadWal(f"segment starts at {Lsn(pageaddr)} (segno {pageaddr // size}), expected segno {expected_segno}")
    if len(data) > size:
        raise BadWal(f"{len(data)} bytes, more than the segment size {size}")
    return magic, info, tli, pageaddr, rem_len, sysid, size, blcksz


def read_xact_records(
    data: bytes | bytearray | memoryview,
    *,
    seg_size: int | None = None,
    expected_segno: int | None = None,
    pending: PendingRecord | None = None,
    total_len: int | None = None,
) -> SegmentScan:
    """Commit/abort records that end in this segment, in WAL order.

    A record that began in the previous segment is reported here only when that segment's
    ``SegmentScan.pending`` is passed as ``pending``; otherwise the leading continuation is skipped.

    ``total_len``: the file is that long but ``data`` is only its beginning, up to and including a page
    that cannot be valid (e.g. all zeros: nothing after it is read, whatever it holds). Reading past
    ``data`` then raises :class:`PrefixTooShort` (the caller passes more); the result is the whole file's.

    :raises BadWal: the bytes are not a WAL segment, or not the expected one.
    """
    mv = memoryview(data).cast("B")
    if total_len is not None and total_len < len(mv):
        raise ValueError("total_len is shorter than the data")
    magic, info, tli, seg_start, rem_len, sysid, size, blcksz = _first_page(mv, seg_size, expected_segno)
    if total_len is not None and total_len > size:
        raise BadWal(f"{total_len} bytes, more than the segment size {size}")
    seg = _Segment(mv, size, seg_start, magic, sysid, blcksz, tli)
    out: list[XactRecord] = []
    end_of_valid: Lsn | None = None
    switched = truncated = False
    carry: PendingRecord | None = None
    pos, prev = LONG_PHD, None
    check_all = CRC_ALL

    def emit(rec: bytes | memoryview, lsn: int, end: int) -> bool:
        """Check and decode a whole record; return True when it is XLOG_SWITCH."""
        tot_len, xid, xl_prev, xl_info, rmid, _crc = _REC.unpack_from(rec, 0)
        if tot_len != len(rec) or (prev is not None and xl_prev != prev):
            raise _Invalid("record header does not match")
        is_xact = rmid == RM_XACT_ID and (xl_info & XLOG_XACT_OPMASK) in XACT_KINDS
        is_switch = bool(rmid == RM_XLOG_ID and xl_info & 0xF0 == XLOG_SWITCH)
        if (check_all or is_xact or is_switch) and not _record_crc_ok(rec):
            raise _Invalid("incorrect resource manager data checksum")
        if is_xact:
            main = _main_data(rec, magic)
            if len(main) < 8:
                raise BadWal(f"transaction record at {Lsn(lsn)} has {len(main)} bytes of main data")
            micros = _I64.unpack_from(main, 0)[0]
            try:
                when = _EPOCH_2000 + timedelta(microseconds=micros)
            except OverflowError as exc:
                raise BadWal(f"transaction record at {Lsn(lsn)} has xact_time {micros} out of range") from exc
            kind = XACT_KINDS[xl_info & XLOG_XACT_OPMASK]
            out.append(XactRecord(Lsn(lsn), Lsn(seg_start + _maxalign(end)), kind, when, xid))
        return is_switch

    try:
        if info & XLP_FIRST_IS_CONTRECORD:  # skip (or finish) the record continued from the previous segment
            want = pending is not None and pending.total_len - pending.have == rem_len
            collect = pending is not None and want and len(pending.head) == pending.have
            try:
                parts, end = seg.gather(pos, rem_len, collect)
            except _SegEnd:  # the continuation covers the whole segment
                parts, end, collect = [], size, False
            except _Invalid:
                end_of_valid, parts, end, collect = Lsn(seg_start + pos), [], size, False
            if collect and pending is not None:
                try:
                    switched = emit(pending.head + b"".join(parts), pending.lsn.value, end)
                except _Invalid:
                    end_of_valid = pending.lsn
            if want and pending is not None:
                prev = pending.lsn.value
            pos = _maxalign(end)
        while not switched and end_of_valid is None:
            if pos % blcksz == 0:
                if pos >= size:
                    break
                if pos >= len(mv):
                    raise _DataEnd
                try:
                    pos += seg.page(pos, cont=None)
                except _Invalid:
                    end_of_valid = Lsn(seg_start + pos)
                    break
            if pos + 4 > len(mv):
                raise _DataEnd
            lsn = seg_start + pos
            tot_len = _U32.unpack_from(mv, pos)[0]
            page_left = blcksz - pos % blcksz
            try:
                if tot_len < REC_HDR:  # zeroed tail: "invalid record length ... got 0"
                    raise _Invalid("invalid record length")
                if tot_len <= page_left:  # fast path: the record lies on one page
                    if pos + tot_len > len(mv):
                        raise _DataEnd
                    end = pos + tot_len
                    switched = emit(mv[pos:end], lsn, end)
                else:
                    rmid = mv[pos + 17] if page_left >= REC_HDR else -1
                    need = check_all or rmid in (-1, RM_XACT_ID, RM_XLOG_ID)
                    if page_left >= REC_HDR:
                        _check_header(mv, pos, prev)
                    try:
                        parts, end = seg.gather(pos, tot_len, need)
                    except _SegEnd as cut:
                        have = tot_len - cut.remaining
                        carry = PendingRecord(Lsn(lsn), tot_len, have, b"".join(cut.parts) if need else b"")
                        break
                    if need:
                        switched = emit(b"".join(parts), lsn, end)
            except _Invalid:
                end_of_valid = Lsn(lsn)
                break
            prev, pos = lsn, _maxalign(end)
    except _DataEnd:
        if total_len is not None and len(mv) < total_len:
            raise PrefixTooShort("the data ends before the page that stops the reader") from None
        truncated = True
    return SegmentScan(
        records=tuple(out), seg_size=size, sysid=sysid, page_magic=magic,
        end_of_valid_wal=end_of_valid, ended_by_switch=switched, start_lsn=Lsn(seg_start),
        timeline=tli, blcksz=blcksz, pending=carry,
        truncated=truncated or (len(mv) if total_len is None else total_len) < size,
        crc_checked="all" if check_all else "xact",
    )


def segment_problem(scan: SegmentScan, *, timeline: int | None = None,
                    system_ids: Collection[int] = ()) -> str | None:
    """Why replay cannot pass this segment, judged by its own bytes; None when it reads as a whole segment.

    The first page header is checked by :func:`read_xact_records` (magic, page address = the name's
    segment, sizes; it raises :class:`BadWal`). Here: a first page from a later timeline than the name's,
    another system identifier than the archive's (``system_ids``; empty: not checked), fewer bytes than a
    segment, and valid WAL that ends inside the segment without an XLOG_SWITCH record (an archived
    segment is complete: PostgreSQL's replay stops at that point and ends recovery there).
    """
    if timeline is not None and scan.timeline > timeline:
        return f"first page is from timeline {scan.timeline}, the name says timeline {timeline}"
    if system_ids and scan.sysid not in system_ids:
        known = ", ".join(str(x) for x in sorted(system_ids))
        return f"WAL of another database system: system identifier {scan.sysid}, the archive's is {known}"
    if scan.truncated:   # PostgreSQL refuses a restored file of the wrong size
        return f"shorter than a segment ({scan.seg_size} bytes)"
    if scan.end_of_valid_wal is not None:
        off = scan.end_of_valid_wal.value - scan.start_lsn.value
        where = "on the first page" if off < scan.blcksz else f"at offset {off:#x}"
        return f"valid WAL ends {where} ({scan.end_of_valid_wal}), before the end of the segment"
    return None


def _check_header(mv: memoryview, pos: int, prev: int | None) -> None:
    """xl_prev check of a multi-page record whose header is on its first page (before following it)."""
    if prev is not None and _REC.unpack_from(mv, pos)[2] != prev:
        raise _Invalid("record with incorrect prev-link")


def last_xact_before(data: bytes | bytearray | memoryview, cut: Lsn | None) -> XactRecord | None:
    """The last commit/abort of the segment that ends at or before ``cut`` (None: the last one)."""
    records = read_xact_records(data).records
    if cut is not None:
        records = tuple(r for r in records if r.end_lsn <= cut)
    return records[-1] if records else None
