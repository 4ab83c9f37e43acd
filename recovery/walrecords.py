"""What happened, record by record: typed WAL records decoded from the bytes of decompressed segments.

The walk is walreader's (page headers, records crossing pages and segments, every record's CRC-32C, the
``xl_prev`` chain; LAYOUTS.md §5, §13); on top of it the records ``changes`` and exact targets need are
decoded (xact.h, heapam_xlog.h, xlog_internal.h, storage_xlog.h):

- :class:`XactEnd`: COMMIT / ABORT / COMMIT_PREPARED / ABORT_PREPARED with time, database, subxacts and the
  relation files dropped at commit (DROP TABLE/INDEX, TRUNCATE's old file, a rewrite's old file);
- :class:`RestorePointRecord`: ``pg_create_restore_point`` (name, time);
- :class:`RowChange`: heap INSERT/UPDATE/HOT_UPDATE/DELETE and heap2 MULTI_INSERT, by block reference 0's
  relation; consecutive records of one (xid, relation, operation) are merged into one with a ``count``,
  so a bulk load yields a handful of objects, not one per row;
- :class:`FileCreate`: smgr CREATE (a new relation file: CREATE TABLE, TRUNCATE, a rewrite).

Pure: bytes in, frozen dataclasses out. :func:`decode_segment` reads one segment and returns the record
crossing its end as a :class:`Carry` for the next one; :func:`decode_stream` chains segments.
(A little over 400 lines: the record types, their decoders and the walk read as one piece.)
"""
from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from recovery.lsn import Lsn
from recovery.walreader import (
    LONG_PHD,
    REC_HDR,
    XLP_FIRST_IS_CONTRECORD,
    BadWal,
    _c_crc32c,
    _DataEnd,
    _first_page,
    _Invalid,
    _SegEnd,
    _Segment,
    crc32c,
)

RM_XLOG, RM_XACT, RM_SMGR, RM_HEAP2, RM_HEAP = 0, 1, 2, 9, 10
XLOG_SWITCH, XLOG_RESTORE_POINT = 0x40, 0x70
_XACT_KINDS = {0x00: "commit", 0x20: "abort", 0x30: "commit_prepared", 0x40: "abort_prepared"}
_HEAP_OPS = {0x00: "insert", 0x10: "delete", 0x20: "update", 0x40: "update"}  # 0x40: HOT_UPDATE
XLH_INSERT_IS_SPECULATIVE, XLH_DELETE_IS_SUPER = 0x04, 0x08
XLOG_HEAP_CONFIRM, XLOG_HEAP2_MULTI_INSERT, XLOG_SMGR_CREATE = 0x50, 0x50, 0x10
_PG15_MAGIC, _PG18_MAGIC = 0xD110, 0xD118

_REC = struct.Struct("<IIQBBxxI")  # xl_tot_len, xl_xid, xl_prev, xl_info, xl_rmid, pad, xl_crc
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
_I64 = struct.Struct("<q")
_RLOC = struct.Struct("<III")  # RelFileLocator: spcOid, dbOid, relNumber
_EPOCH_2000 = datetime(2000, 1, 1, tzinfo=UTC)


class RelFile(NamedTuple):
    """A relation file locator: tablespace, database and relation file number (not an OID).

    A NamedTuple, not a dataclass: one is made and hashed per row change, and tuples do that in C.
    """

    spc: int
    db: int
    rel: int

    def __str__(self) -> str:
        return f"{self.spc}/{self.db}/{self.rel}"


@dataclass(frozen=True, slots=True)
class XactEnd:
    """A commit or abort; ``xid`` is the transaction's own (for *_PREPARED: the prepared one)."""

    lsn: Lsn
    end_lsn: Lsn  # MAXALIGN(record end): where the next record may start
    kind: str  # commit | abort | commit_prepared | abort_prepared
    xid: int
    time: datetime
    db_oid: int | None  # None when the record carries no database (XACT_XINFO_HAS_DBINFO unset)
    subxacts: tuple[int, ...]
    dropped: tuple[RelFile, ...]

    @property
    def committed(self) -> bool:
        return self.kind in ("commit", "commit_prepared")


@dataclass(frozen=True, slots=True)
class RestorePointRecord:
    lsn: Lsn
    end_lsn: Lsn
    name: str
    time: datetime


@dataclass(frozen=True, slots=True)
class RowChange:
    """``count`` rows inserted, updated or deleted by (sub)transaction ``xid`` in ``rel``, from ``lsn`` on."""

    lsn: Lsn
    xid: int
    rel: RelFile
    op: str  # insert | update | delete
    count: int


@dataclass(frozen=True, slots=True)
class FileCreate:
    lsn: Lsn
    xid: int
    rel: RelFile


WalRecord = XactEnd | RestorePointRecord | RowChange | FileCreate


@dataclass(frozen=True, slots=True)
class Carry:
    """The part of a record that crosses a segment end, read so far; pass it to the next segment."""

    lsn: Lsn
    total_len: int
    head: bytes


@dataclass(frozen=True, slots=True)
class DecodedSegment:
    start_lsn: Lsn
    records: tuple[WalRecord, ...]
    carry: Carry | None
    end_of_valid_wal: Lsn | None  # valid WAL stops inside the segment (torn or zeroed tail)
    ended_by_switch: bool
    seg_size: int
    page_magic: int
    truncated: bool  # fewer bytes than a segment were given


def _time(micros: int, lsn: int) -> datetime:
    try:
        return _EPOCH_2000 + timedelta(microseconds=micros)
    except OverflowError as exc:
        raise BadWal(f"record at {Lsn(lsn)} has a timestamp {micros} out of range") from exc


def _compressed_bits(magic: int) -> int:
    """bimg_info bits that mean a compressed image: PG 15+ pglz 0x04, lz4 0x08, zstd 0x10; before: 0x02."""
    return 0x1C if magic >= _PG15_MAGIC else 0x02


def _blocks(rec: bytes | memoryview, compressed: int) -> tuple[tuple[int, int, int] | None, int]:
    """Walk the block headers like DecodeXLogRecord; return (block 0's locator, main data length).

    Full-page images are skipped by their header's ``bimg_len`` whether plain or compressed (pglz, lz4,
    zstd): the image bytes sit after all headers and are counted in the total that is checked here.
    ``compressed``: the bimg_info bits meaning "compressed" in this version (:func:`_compressed_bits`).
    """
    tot_len = len(rec)
    pos, datatotal, main_len = REC_HDR, 0, 0
    first: tuple[int, int, int] | None = None
    try:
        while tot_len - pos > datatotal:
            block_id = rec[pos]
            if block_id == 255:  # XLR_BLOCK_ID_DATA_SHORT
                main_len = rec[pos + 1]
                pos += 2
                datatotal += main_len
            elif block_id == 254:  # XLR_BLOCK_ID_DATA_LONG
                main_len = _U32.unpack_from(rec, pos + 1)[0]
                pos += 5
                datatotal += main_len
            elif block_id == 253:  # XLR_BLOCK_ID_ORIGIN
                pos += 3
            elif block_id == 252:  # XLR_BLOCK_ID_TOPLEVEL_XID
                pos += 5
            elif block_id <= 32:
                fork_flags = rec[pos + 1]
                datatotal += _U16.unpack_from(rec, pos + 2)[0]
                pos += 4
                if fork_flags & 0x10:  # BKPBLOCK_HAS_IMAGE: bimg_len, hole_offset, bimg_info
                    datatotal += _U16.unpack_from(rec, pos)[0]
                    bimg_info = rec[pos + 4]
                    pos += 5
                    if bimg_info & 0x01 and bimg_info & compressed:  # BKPIMAGE_HAS_HOLE: hole_length
                        pos += 2
                if not fork_flags & 0x80:  # BKPBLOCK_SAME_REL unset: RelFileLocator follows
                    if first is None:
                        first = _RLOC.unpack_from(rec, pos)
                    pos += 12
                pos += 4  # BlockNumber
            else:
                raise _Invalid(f"invalid block_id {block_id}")
    except (IndexError, struct.error) as exc:
        raise _Invalid("block headers overrun the record") from exc
    if pos + datatotal != tot_len:
        raise _Invalid("block data lengths do not add up to xl_tot_len")
    return first, main_len


def _xact(rec: bytes | memoryview, lsn: int, end: int, xid: int, info: int, magic: int) -> XactEnd | None:
    kind = _XACT_KINDS.get(info & 0x70)
    if kind is None:
        return None
    _, main_len = _blocks(rec, _compressed_bits(magic))
    main = bytes(rec[len(rec) - main_len:])
    try:
        when = _time(_I64.unpack_from(main, 0)[0], lsn)
        pos, xinfo = 8, 0
        if info & 0x80:  # XLOG_XACT_HAS_INFO
            xinfo = _U32.unpack_from(main, 8)[0]
            pos = 12
        db: int | None = None
        subxacts: tuple[int, ...] = ()
        dropped: tuple[RelFile, ...] = ()
        if xinfo & 0x01:  # XACT_XINFO_HAS_DBINFO: dbId, tsId
            db = _U32.unpack_from(main, pos)[0]
            pos += 8
        if xinfo & 0x02:  # XACT_XINFO_HAS_SUBXACTS
            n = _I32.unpack_from(main, pos)[0]
            subxacts = struct.unpack_from(f"<{n}I", main, pos + 4)
            pos += 4 + 4 * n
        if xinfo & 0x04:  # XACT_XINFO_HAS_RELFILELOCATORS
            n = _I32.unpack_from(main, pos)[0]
            dropped = tuple(RelFile(*_RLOC.unpack_from(main, pos + 4 + 12 * i)) for i in range(n))
            pos += 4 + 12 * n
        if xinfo & 0x100:  # XACT_XINFO_HAS_DROPPED_STATS (PG 15+; objid 64-bit from PG 18)
            n = _I32.unpack_from(main, pos)[0]
            pos += 4 + n * (16 if magic >= _PG18_MAGIC else 12)
        if xinfo & 0x08 and kind.startswith("commit"):  # XACT_XINFO_HAS_INVALS (commits only)
            n = _I32.unpack_from(main, pos)[0]
            pos += 4 + 16 * n
        if xinfo & 0x10:  # XACT_XINFO_HAS_TWOPHASE: the prepared transaction's xid
            xid = _U32.unpack_from(main, pos)[0]
    except (struct.error, ValueError) as exc:
        raise BadWal(f"transaction record at {Lsn(lsn)}: main data shorter than its flags say") from exc
    return XactEnd(Lsn(lsn), Lsn(end), kind, xid, when, db, subxacts, dropped)


def _restore_point(rec: bytes | memoryview, lsn: int, end: int, compressed: int) -> RestorePointRecord:
    _, main_len = _blocks(rec, compressed)
    main = bytes(rec[len(rec) - main_len:])
    if len(main) < 72:  # xl_restore_point: TimestampTz rp_time; char rp_name[MAXFNAMELEN = 64]
        raise BadWal(f"restore point record at {Lsn(lsn)} has {len(main)} bytes of main data")
    name = main[8:72].split(b"\x00", 1)[0].decode("utf-8", "replace")
    return RestorePointRecord(Lsn(lsn), Lsn(end), name, _time(_I64.unpack_from(main, 0)[0], lsn))


def _row_op(rec: bytes | memoryview, rmid: int, info: int, compressed: int,
            ) -> tuple[tuple[int, int, int], str, int] | None:
    """(block 0's locator, operation, rows) of a heap/heap2 record that changes rows, else None."""
    op_bits = info & 0x70
    if rmid == RM_HEAP:
        if op_bits == XLOG_HEAP_CONFIRM:  # a speculative insertion (ON CONFLICT) made real
            op, rows = "insert", 1
        else:
            found = _HEAP_OPS.get(op_bits)
            if found is None:
                return None
            op, rows = found, 1
        tot = len(rec)
        # fast path: block 0 alone, no image, its locator, then short main data (most heap records)
        if tot > 46 and rec[24] == 0 and not rec[25] & 0x90 and rec[44] == 255 and \
                46 + _U16.unpack_from(rec, 26)[0] + rec[45] == tot:
            first: tuple[int, int, int] | None = _RLOC.unpack_from(rec, 28)
            main_len = rec[45]
        else:
            first, main_len = _blocks(rec, compressed)
        if first is None:
            return None
        main = len(rec) - main_len
        # flags: xl_heap_insert {offnum u16, flags u8}, xl_heap_delete {xmax u32, offnum u16, infobits u8, flags u8}
        if (op_bits == 0x00 and main_len >= 3 and rec[main + 2] & XLH_INSERT_IS_SPECULATIVE) or (
                op_bits == 0x10 and main_len >= 8 and rec[main + 7] & XLH_DELETE_IS_SUPER):
            return None  # counted at CONFIRM / never happened
        return first, op, rows
    if op_bits != XLOG_HEAP2_MULTI_INSERT:
        return None
    first, main_len = _blocks(rec, compressed)
    if first is None or main_len < 4:
        return None
    # xl_heap_multi_insert: uint8 flags; (pad); uint16 ntuples
    return first, "insert", _U16.unpack_from(rec, len(rec) - main_len + 2)[0]


class _Run:
    """Consecutive row changes of one (xid, relation, operation), merged; flushed into ``out``."""

    __slots__ = ("count", "key", "lsn", "out")

    def __init__(self, out: list[WalRecord]) -> None:
        self.out, self.key, self.lsn, self.count = out, None, 0, 0

    key: tuple[int, tuple[int, int, int], str] | None

    def add(self, lsn: int, key: tuple[int, tuple[int, int, int], str], rows: int) -> None:
        if key == self.key:
            self.count += rows
            return
        self.flush()
        self.key, self.lsn, self.count = key, lsn, rows

    def flush(self) -> None:
        if self.key is not None:
            xid, loc, op = self.key
            self.out.append(RowChange(Lsn(self.lsn), xid, RelFile(*loc), op, self.count))
            self.key = None


def decode_segment(
    data: bytes | bytearray | memoryview,
    *,
    seg_size: int | None = None,
    expected_segno: int | None = None,
    carry: Carry | None = None,
) -> DecodedSegment:
    """Every record of interest that ends in this segment, in WAL order; see the module docstring.

    Each record's CRC is checked (with the C ``crc32c`` when installed): a torn or overwritten record ends
    valid WAL there, as in PostgreSQL. A record continued from the previous segment is decoded only when
    that segment's ``carry`` is passed; otherwise the leading continuation is skipped.

    :raises BadWal: the bytes are not a WAL segment (or not the expected one), or a record we decode
        passes its CRC but contradicts its own lengths.
    """
    mv = memoryview(data).cast("B")
    magic, info, tli, seg_start, rem_len, sysid, size, blcksz = _first_page(mv, seg_size, expected_segno)
    seg = _Segment(mv, size, seg_start, magic, sysid, blcksz, tli)
    out: list[WalRecord] = []
    run = _Run(out)
    end_of_valid: int | None = None
    switched = truncated = spanned = False
    new_carry: Carry | None = None
    n = len(mv)
    crc = _c_crc32c or crc32c  # the C function itself on the hot path, else the pure-Python fallback
    unpack_rec = _REC.unpack_from
    u32 = _U32.unpack_from
    compressed = _compressed_bits(magic)

    def decode(rec: bytes | memoryview, lsn: int, end: int, prev: int | None) -> bool:
        """Check one whole record and decode it; True when it is XLOG_SWITCH."""
        tot_len, xid, xl_prev, xl_info, rmid, xl_crc = unpack_rec(rec, 0)
        if tot_len != len(rec) or (prev is not None and xl_prev != prev):
            raise _Invalid("record header does not match")
        if crc(rec[:20], crc(rec[REC_HDR:])) != xl_crc:
            raise _Invalid("incorrect resource manager data checksum")
        if rmid in (RM_HEAP, RM_HEAP2):
            found = _row_op(rec, rmid, xl_info, compressed)
            if found is not None:
                run.add(lsn, (xid, found[0], found[1]), found[2])
            return False
        if rmid == RM_XACT:
            xact = _xact(rec, lsn, seg_start + ((end + 7) & ~7), xid, xl_info, magic)
            if xact is not None:
                run.flush()
                out.append(xact)
        elif rmid == RM_XLOG:
            op = xl_info & 0xF0
            if op == XLOG_RESTORE_POINT:
                run.flush()
                out.append(_restore_point(rec, lsn, seg_start + ((end + 7) & ~7), compressed))
            return bool(op == XLOG_SWITCH)
        elif rmid == RM_SMGR and xl_info & 0x70 == XLOG_SMGR_CREATE:
            main_len = _blocks(rec, compressed)[1]
            if main_len >= 12:  # xl_smgr_create: RelFileLocator, ForkNumber (main fork only)
                loc = _RLOC.unpack_from(rec, len(rec) - main_len)
                if main_len < 16 or _I32.unpack_from(rec, len(rec) - main_len + 12)[0] == 0:
                    run.flush()
                    out.append(FileCreate(Lsn(lsn), xid, RelFile(*loc)))
        return False

    pos, prev = LONG_PHD, None
    try:
        if info & XLP_FIRST_IS_CONTRECORD:
            want = carry is not None and carry.total_len - len(carry.head) == rem_len
            try:
                parts, end = seg.gather(pos, rem_len, want)
            except _SegEnd as cut:  # the continuation covers the whole segment
                if want and carry is not None:
                    new_carry = Carry(carry.lsn, carry.total_len, carry.head + b"".join(cut.parts))
                parts, end, want, spanned = [], size, False, True  # nothing else starts here
            except _Invalid:
                end_of_valid, parts, end, want = seg_start + pos, [], size, False
            if want and carry is not None:
                try:
                    switched = decode(carry.head + b"".join(parts), carry.lsn.value, end, None)
                    prev = carry.lsn.value
                except _Invalid:
                    end_of_valid = carry.lsn.value
            pos = (end + 7) & ~7
        while not switched and not spanned and end_of_valid is None:
            if pos % blcksz == 0:
                if pos >= size:
                    break
                if pos >= n:
                    raise _DataEnd
                try:
                    pos += seg.page(pos, cont=None)
                except _Invalid:
                    end_of_valid = seg_start + pos
                    break
            if pos + 4 > n:
                raise _DataEnd
            lsn = seg_start + pos
            tot_len = u32(mv, pos)[0]
            page_left = blcksz - pos % blcksz
            try:
                if tot_len < REC_HDR:  # zeroed tail: "invalid record length ... got 0"
                    raise _Invalid("invalid record length")
                if tot_len <= page_left:  # the record lies on one page
                    end = pos + tot_len
                    if end > n:
                        raise _DataEnd
                    switched = decode(mv[pos:end], lsn, end, prev)
                else:
                    if page_left >= REC_HDR and prev is not None and unpack_rec(mv, pos)[2] != prev:
                        raise _Invalid("record with incorrect prev-link")
                    try:
                        parts, end = seg.gather(pos, tot_len, True)
                    except _SegEnd as cut:
                        new_carry = Carry(Lsn(lsn), tot_len, b"".join(cut.parts))
                        break
                    switched = decode(b"".join(parts), lsn, end, prev)
            except _Invalid:
                end_of_valid = lsn
                break
            prev, pos = lsn, (end + 7) & ~7
    except _DataEnd:
        truncated = True
    run.flush()
    return DecodedSegment(
        start_lsn=Lsn(seg_start), records=tuple(out), carry=new_carry,
        end_of_valid_wal=None if end_of_valid is None else Lsn(end_of_valid), ended_by_switch=switched,
        seg_size=size, page_magic=magic, truncated=truncated or n < size,
    )


def decode_stream(segments: Iterable[bytes | bytearray | memoryview]) -> Iterator[WalRecord]:
    """The records of consecutive segments of one timeline, records crossing segment ends included.

    Stops after a segment whose valid WAL ends inside it (the end of what replay could read).
    """
    carry: Carry | None = None
    for data in segments:
        decoded = decode_segment(data, carry=carry)
        yield from decoded.records
        if decoded.end_of_valid_wal is not None:
            return
        carry = decoded.carry
