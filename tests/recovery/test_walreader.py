"""recovery/walreader.py against real PG 15 WAL (ground truth: pg_waldump) and synthetic segments."""
from __future__ import annotations

import gzip
import os
import re
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from recovery import walreader
from recovery.errors import ParseError
from recovery.lsn import Lsn
from recovery.wal import WalSegment
from recovery.walreader import BadWal, PrefixTooShort, SegmentScan, XactRecord, last_xact_before, read_xact_records
from tests.support.tools import missing

PG_BIN = Path("/usr/lib/postgresql/15/bin")
SEG = 16 * 1024 * 1024
_WALDUMP_RE = re.compile(
    r"lsn: (\S+), prev \S+, desc: (COMMIT|ABORT|COMMIT_PREPARED|ABORT_PREPARED) (?:\d+: )?"
    r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}) UTC"
)

WORKLOAD = r"""
create table t(id int, v text);
insert into t values (1, 'a');
begin; insert into t values (2, 'b'); rollback;
-- a commit record with 3000 subtransaction xids (~12 kB): crosses WAL pages
DO $$ BEGIN FOR i IN 1..3000 LOOP BEGIN INSERT INTO t VALUES (i, 'x');
  EXCEPTION WHEN others THEN NULL; END; END LOOP; END $$;
-- the same, rolled back: a big abort record
begin;
DO $$ BEGIN FOR i IN 1..3000 LOOP BEGIN INSERT INTO t VALUES (i, 'y');
  EXCEPTION WHEN others THEN NULL; END; END LOOP; END $$;
rollback;
begin; insert into t values (3, 'c'); prepare transaction 'g1';
commit prepared 'g1';
begin; insert into t values (4, 'd'); prepare transaction 'g2';
rollback prepared 'g2';
-- one row > 8 kB, stored out of line uncompressed, then full-page images after a checkpoint
alter table t alter column v set storage external;
insert into t select 5, string_agg(md5(i::text), '') from generate_series(1, 1000) i;
checkpoint;
update t set id = id + 1;
select pg_logical_emit_message(false, 'p', repeat('x', 100000));
select pg_switch_wal();
-- a big commit record that starts a few kB before the segment end and finishes in the next one
begin;
DO $$ BEGIN FOR i IN 1..3000 LOOP BEGIN INSERT INTO t VALUES (i, 'z');
  EXCEPTION WHEN others THEN NULL; END; END LOOP; END $$;
select 16777216 - ((pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint % 16777216) as rem \gset
select pg_logical_emit_message(false, 'p', repeat('x', greatest(:rem - :rem / 8192 * 24 - 4500, 0)::int));
commit;
insert into t values (6, 'f');
select pg_switch_wal();
insert into t values (7, 'g');
"""


# --------------------------------------------------------------------------- real cluster


@dataclass(frozen=True, slots=True)
class WalArchive:
    dir: Path
    names: tuple[str, ...]
    sysid: int
    per_segment: dict[str, list[tuple[str, str, str]]]
    whole_range: list[tuple[str, str, str]]

    def data(self, name: str) -> bytes:
        return (self.dir / name).read_bytes()


def _waldump(wal_dir: Path, first: str, last: str | None = None) -> list[tuple[str, str, str]]:
    args = [str(PG_BIN / "pg_waldump"), "--rmgr=Transaction", f"--path={wal_dir}", first]
    if last:
        args.append(last)
    # exit status 1 with "invalid record length" marks the end of valid WAL: only stdout matters
    out = subprocess.run(args, env={**os.environ, "TZ": "UTC"}, capture_output=True, text=True, check=False).stdout
    return [(str(Lsn.parse(m[1])), m[2].lower(), m[3]) for m in _WALDUMP_RE.finditer(out)]


def _as_rows(records: tuple[XactRecord, ...]) -> list[tuple[str, str, str]]:
    return [(str(r.lsn), r.kind, r.xact_time.strftime("%Y-%m-%d %H:%M:%S.%f")) for r in records]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_postgres(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["runuser", "-u", "postgres", "--", *args], capture_output=True, text=True, check=True)


@pytest.fixture(scope="session")
def pg_wal() -> Iterator[WalArchive]:
    if not (PG_BIN / "initdb").exists() or not (PG_BIN / "pg_waldump").exists() or shutil.which("runuser") is None:
        missing(f"PostgreSQL 15 binaries not found in {PG_BIN} (or no runuser); Debian package postgresql-15")
    root = Path(tempfile.mkdtemp(prefix="walreader-"))
    data, arch = root / "data", root / "arch"
    arch.mkdir()
    shutil.chown(root, "postgres")
    shutil.chown(arch, "postgres")
    port = _free_port()
    opts = (
        f"-c listen_addresses='' -c unix_socket_directories={root} -c port={port} -c max_prepared_transactions=5"
        f" -c autovacuum=off -c wal_level=replica -c archive_mode=on -c archive_command='cp %p {arch}/%f'"
    )
    started = False
    try:
        _as_postgres(str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres")
        _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(root / "log"), "-w", "start")
        started = True
        (root / "w.sql").write_text(WORKLOAD)
        _as_postgres(str(PG_BIN / "psql"), "-h", str(root), "-p", str(port), "-d", "postgres",
                     "-v", "ON_ERROR_STOP=1", "-qAt", "-f", str(root / "w.sql"))
        _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        started = False
        control = _as_postgres(str(PG_BIN / "pg_controldata"), "-D", str(data)).stdout
        sysid = int(re.search(r"Database system identifier:\s+(\d+)", control)[1])  # type: ignore[index]
        current = re.search(r"REDO WAL file:\s+(\S+)", control)[1]  # type: ignore[index]
        shutil.copy(data / "pg_wal" / current, arch / current)
        names = tuple(sorted(p.name for p in arch.iterdir() if WalSegmentName.match(p.name)))
        yield WalArchive(
            dir=arch, names=names, sysid=sysid,
            per_segment={n: _waldump(arch, n) for n in names},
            whole_range=_waldump(arch, names[0], names[-1]),
        )
    finally:
        if started:
            subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN / "pg_ctl"), "-D", str(data),
                            "-m", "immediate", "-w", "stop"], capture_output=True, check=False)
        shutil.rmtree(root, ignore_errors=True)


WalSegmentName = re.compile(r"^[0-9A-F]{24}$")


def test_every_segment_matches_pg_waldump(pg_wal: WalArchive) -> None:
    assert len(pg_wal.names) >= 4
    for name in pg_wal.names:
        seg = WalSegment.from_name(name)
        scan = read_xact_records(pg_wal.data(name), seg_size=SEG, expected_segno=seg.segno)
        assert _as_rows(scan.records) == pg_wal.per_segment[name], name
        assert (scan.seg_size, scan.sysid, scan.page_magic, scan.pg_version) == (SEG, pg_wal.sysid, 0xD110, "15")
        assert scan.start_lsn == seg.start_lsn and not scan.truncated


def test_chained_scan_matches_pg_waldump_over_the_range(pg_wal: WalArchive) -> None:
    rows: list[tuple[str, str, str]] = []
    pending = None
    for name in pg_wal.names:
        scan = read_xact_records(pg_wal.data(name), pending=pending)
        rows += _as_rows(scan.records)
        pending = scan.pending
    assert rows == pg_wal.whole_range
    # the range has the commit that crosses a segment end; single-segment dumps do not
    assert len(rows) == sum(len(v) for v in pg_wal.per_segment.values()) + 1


def test_workload_shapes_are_covered(pg_wal: WalArchive) -> None:
    scans = [read_xact_records(pg_wal.data(n)) for n in pg_wal.names]
    records = [r for s in scans for r in s.records]
    assert {r.kind for r in records} == {"commit", "abort", "commit_prepared", "abort_prepared"}
    big = [r for r in records if r.end_lsn.value - r.lsn.value > 8192]
    assert {r.kind for r in big} == {"commit", "abort"}  # the 3000-subxact records span pages
    assert all(r.xid > 0 for r in records if r.kind in ("commit", "abort"))
    assert all(r.xact_time.tzinfo is UTC for r in records)
    times = [r.xact_time for r in records if r.lsn.value > 0x1000000]  # user workload: wall clock order
    assert times == sorted(times)
    crossing = [s for s in scans if s.pending is not None]
    assert len(crossing) == 1 and crossing[0].pending is not None
    assert crossing[0].pending.lsn.segno(SEG) == crossing[0].start_lsn.segno(SEG)
    assert sum(s.ended_by_switch for s in scans) >= 2
    last = scans[-1]
    assert last.end_of_valid_wal is not None and not last.ended_by_switch  # shutdown checkpoint, zero tail
    assert last.end_of_valid_wal.segno(SEG) == last.start_lsn.segno(SEG)


def test_scan_is_fast_enough(pg_wal: WalArchive) -> None:
    data = min((pg_wal.data(n) for n in pg_wal.names), key=lambda d: d.count(0))  # the fullest segment
    started = time.perf_counter()
    read_xact_records(data)
    assert time.perf_counter() - started < 2.0


def test_pure_python_crc_gives_the_same_records(pg_wal: WalArchive, monkeypatch: pytest.MonkeyPatch) -> None:
    name = next(n for n in pg_wal.names if pg_wal.per_segment[n])
    expected = read_xact_records(pg_wal.data(name)).records
    monkeypatch.setattr(walreader, "_c_crc32c", None)
    monkeypatch.setattr(walreader, "CRC_ALL", False)
    scan = read_xact_records(pg_wal.data(name))
    assert scan.records == expected and scan.crc_checked == "xact"


def test_corrupt_commit_ends_valid_wal(pg_wal: WalArchive) -> None:
    name = next(n for n in pg_wal.names if len(pg_wal.per_segment[n]) > 3)
    data = bytearray(pg_wal.data(name))
    good = read_xact_records(data).records
    victim = good[2]
    offset = victim.lsn.value % SEG
    data[offset + 24 + 2] ^= 0x01  # flip a bit of xact_time
    scan = read_xact_records(data)
    assert scan.records == good[:2]
    assert scan.end_of_valid_wal == victim.lsn


def test_wrong_segment_number_is_refused(pg_wal: WalArchive) -> None:
    name = pg_wal.names[0]
    segno = WalSegment.from_name(name).segno
    with pytest.raises(BadWal, match="expected segno"):
        read_xact_records(pg_wal.data(name), expected_segno=segno + 1)
    with pytest.raises(BadWal, match="segment size"):
        read_xact_records(pg_wal.data(name), seg_size=SEG * 2)


def test_last_xact_before(pg_wal: WalArchive) -> None:
    name = next(n for n in pg_wal.names if len(pg_wal.per_segment[n]) > 3)
    data = pg_wal.data(name)
    records = read_xact_records(data).records
    assert last_xact_before(data, None) == records[-1]
    assert last_xact_before(data, records[2].end_lsn) == records[2]
    assert last_xact_before(data, records[2].end_lsn - 1) == records[1]
    assert last_xact_before(data, Lsn(0)) is None


# --------------------------------------------------------------------------- committed real segment

DATA = Path(__file__).parent / "data" / "wal"


def test_committed_1mib_segment_matches_its_pg_waldump_output() -> None:
    """A PG 15 segment of an ``initdb --wal-segsize=1`` cluster (gzip, 54 kB) and its pg_waldump lines."""
    name = "000000010000000000000007"
    data = gzip.decompress((DATA / f"{name}.gz").read_bytes())
    expected = [(str(Lsn.parse(m[1])), m[2].lower(), m[3])
                for m in _WALDUMP_RE.finditer((DATA / f"{name}.waldump.txt").read_text())]
    scan = read_xact_records(data, expected_segno=WalSegment.from_name(name, 1 << 20).segno)
    assert _as_rows(scan.records) == expected and len(expected) == 7
    assert (scan.seg_size, scan.sysid, scan.page_magic, scan.ended_by_switch) == (1 << 20, 7712074519419871889, 0xD110, True)
    assert [r.xid for r in scan.records if r.kind.endswith("prepared")] == [0, 0]
    with pytest.raises(BadWal, match="segment size"):
        read_xact_records(data, seg_size=SEG)


# --------------------------------------------------------------------------- synthetic segments

_REC = struct.Struct("<IIQBBxxI")
_PAGE = struct.Struct("<HHIQI")
SMALL = 1 << 20
BLCK = 8192
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def _micros(when: datetime) -> int:
    return (when - datetime(2000, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def commit_body(when: datetime, extra: bytes = b"") -> bytes:
    main = struct.pack("<q", _micros(when)) + extra
    hdr = b"\xff" + bytes([len(main)]) if len(main) < 256 else b"\xfe" + struct.pack("<I", len(main))
    return hdr + main


def filler_body(size: int) -> bytes:
    return b"\xfe" + struct.pack("<I", size) + b"f" * size


def synth_wal(records: list[tuple[int, int, int, bytes]], *, nseg: int = 1, segno: int = 1,
              magic: int = 0xD110, sysid: int = 7) -> tuple[list[bytes], list[int]]:
    """Lay (rmid, info, xid, body) records out as a WAL stream over ``nseg`` segments; return segments, LSNs."""
    buf = bytearray(SMALL * nseg)
    base = segno * SMALL

    def page_header(off: int, rem: int) -> int:
        long = off % SMALL == 0
        info = (2 if long else 0) | (1 if rem else 0)
        _PAGE.pack_into(buf, off, magic, info, 1, base + off, rem)
        if long:
            struct.pack_into("<QII", buf, off + 24, sysid, SMALL, BLCK)
        return 40 if long else 24

    pos, prev, lsns = page_header(0, 0), 0, []
    for rmid, info, xid, body in records:
        tot = 24 + len(body)
        head = bytearray(_REC.pack(tot, xid, prev, info, rmid, 0))
        crc = walreader.crc32c(head[:20], walreader.crc32c(body))
        rec = bytes(head[:20]) + struct.pack("<I", crc) + body
        if pos % BLCK == 0:
            pos += page_header(pos, 0)
        lsns.append(base + pos)
        prev, done = base + pos, 0
        while done < tot:
            if pos % BLCK == 0:
                if pos >= len(buf):
                    break
                pos += page_header(pos, tot - done)
            take = min(tot - done, BLCK - pos % BLCK)
            buf[pos:pos + take] = rec[done:done + take]
            pos, done = pos + take, done + take
        pos = (pos + 7) & ~7
    return [bytes(buf[i * SMALL:(i + 1) * SMALL]) for i in range(nseg)], lsns


def test_synthetic_commits_with_block_references_and_zero_tail() -> None:
    image_block = (
        b"\x00" + bytes([0x10 | 0x20]) + struct.pack("<H", 3)  # block 0: image + 3 data bytes
        + struct.pack("<HHB", 5, 100, 0x01 | 0x04) + struct.pack("<H", 8000)  # pglz image with a hole (PG 15)
        + b"R" * 12 + struct.pack("<I", 9)  # RelFileLocator, BlockNumber
    )
    origin_and_top = b"\xfd" + struct.pack("<H", 3) + b"\xfc" + struct.pack("<I", 700)
    main = struct.pack("<q", _micros(T0)) + b"\x00" * 4
    body = image_block + origin_and_top + b"\xff" + bytes([len(main)]) + b"I" * 5 + b"D" * 3 + main
    segs, lsns = synth_wal([
        (1, 0x00, 700, commit_body(T0)),
        (1, 0x20, 701, commit_body(T0.replace(second=1))),
        (1, 0x80 | 0x30, 0, commit_body(T0.replace(second=2), b"\x10\x00\x00\x00" + b"\x00" * 4)),
        (1, 0x40, 0, body),
        (21, 0x00, 0, filler_body(30000)),  # crosses several pages
        (1, 0x00, 702, commit_body(T0.replace(second=3), b"s" * 20000)),  # a commit over 3 pages
        (1, 0x50, 703, commit_body(T0)),  # XLOG_XACT_ASSIGNMENT: not a commit
    ])
    scan = read_xact_records(segs[0], expected_segno=1)
    assert [(r.kind, r.xid, r.xact_time.second) for r in scan.records] == [
        ("commit", 700, 0), ("abort", 701, 1), ("commit_prepared", 0, 2), ("abort_prepared", 0, 0), ("commit", 702, 3)]
    assert [r.lsn.value for r in scan.records] == lsns[:4] + [lsns[5]]
    assert scan.records[4].end_lsn.value > scan.records[4].lsn.value + 2 * BLCK
    assert scan.end_of_valid_wal is not None and scan.end_of_valid_wal.value > lsns[-1]
    assert (scan.seg_size, scan.sysid, scan.ended_by_switch, scan.pending) == (SMALL, 7, False, None)


def test_pg14_compression_flag_layout() -> None:
    block = (b"\x00" + bytes([0x10]) + struct.pack("<H", 0) + struct.pack("<HHB", 4, 10, 0x01 | 0x02)
             + struct.pack("<H", 8000) + b"R" * 12 + struct.pack("<I", 1))
    main = struct.pack("<q", _micros(T0))
    segs, _ = synth_wal([(1, 0, 9, block + b"\xff\x08" + b"I" * 4 + main)], magic=0xD10D)
    scan = read_xact_records(segs[0])
    assert [r.xact_time for r in scan.records] == [T0] and scan.pg_version == "14"


def test_switch_record_ends_the_segment() -> None:
    segs, _ = synth_wal([(1, 0, 5, commit_body(T0)), (0, 0x40, 0, b""), (1, 0, 6, commit_body(T0))])
    scan = read_xact_records(segs[0])
    assert scan.ended_by_switch and scan.end_of_valid_wal is None
    assert [r.xid for r in scan.records] == [5]


def test_record_crossing_the_segment_end_is_pending_then_completed() -> None:
    room = SMALL - 40 - (SMALL // BLCK - 1) * 24
    filler = room - 24 - 5 - 2000  # leaves ~2000 bytes before the segment end
    segs, lsns = synth_wal([
        (21, 0, 0, filler_body(filler)),
        (1, 0, 42, commit_body(T0, b"s" * 6000)),
        (1, 0x20, 43, commit_body(T0.replace(minute=5))),
    ], nseg=2)
    first = read_xact_records(segs[0])
    assert first.records == () and first.pending is not None
    assert first.pending.lsn.value == lsns[1] and first.end_of_valid_wal is None
    alone = read_xact_records(segs[1], expected_segno=2)
    assert [(r.kind, r.xid) for r in alone.records] == [("abort", 43)]
    chained = read_xact_records(segs[1], pending=first.pending)
    assert [(r.lsn.value, r.xid) for r in chained.records] == [(lsns[1], 42), (lsns[2], 43)]
    assert chained.records[0].end_lsn.value == lsns[2]


def test_wrong_magic_and_non_wal_input() -> None:
    segs, _ = synth_wal([(1, 0, 5, commit_body(T0))])
    for bad, why in [
        (b"\x00" * SMALL, "magic"),
        (b"hello world" * 10, "magic"),
        (b"\x10\xd1\x00\x00" + segs[0][4:], "long header"),  # xlp_info without XLP_LONG_HEADER
        (segs[0] + b"\x00", "more than the segment size"),
        (segs[0][:39], "shorter than a long page header"),
    ]:
        with pytest.raises(BadWal, match=why) as exc:
            read_xact_records(bad)
        assert isinstance(exc.value, ParseError) and exc.value.code == "invalid_wal"
    odd = bytearray(segs[0])
    struct.pack_into("<H", odd, 0, 0xD111)
    with pytest.raises(BadWal, match="0xd111"):
        read_xact_records(bytes(odd))


def test_truncated_data_reports_what_is_complete() -> None:
    segs, lsns = synth_wal([(1, 0, 5, commit_body(T0)), (21, 0, 0, filler_body(20000)), (1, 0, 6, commit_body(T0))])
    cut = lsns[1] - SMALL + 100  # inside the filler record's first page
    scan = read_xact_records(segs[0][:cut])
    assert [r.xid for r in scan.records] == [5]
    assert scan.truncated and scan.end_of_valid_wal is None and scan.pending is None
    page = read_xact_records(segs[0][:BLCK + 10])  # a partial second page
    assert page.truncated and [r.xid for r in page.records] == [5]


def test_bad_page_in_the_middle_ends_valid_wal() -> None:
    segs, lsns = synth_wal([(1, 0, 5, commit_body(T0)), (21, 0, 0, filler_body(20000)), (1, 0, 6, commit_body(T0))])
    data = bytearray(segs[0])
    struct.pack_into("<Q", data, BLCK + 8, 0x123456 * BLCK)  # a recycled page: wrong xlp_pageaddr
    scan = read_xact_records(bytes(data))
    assert [r.xid for r in scan.records] == [5]
    assert scan.end_of_valid_wal == Lsn(lsns[1])


def test_prev_link_is_checked() -> None:
    segs, lsns = synth_wal([(1, 0, 5, commit_body(T0)), (1, 0, 6, commit_body(T0)), (1, 0, 7, commit_body(T0))])
    data = bytearray(segs[0])
    off = lsns[2] - SMALL
    struct.pack_into("<Q", data, off + 8, 0x40)  # wrong xl_prev (the CRC then fails too)
    scan = read_xact_records(bytes(data))
    assert [r.xid for r in scan.records] == [5, 6] and scan.end_of_valid_wal == Lsn(lsns[2])


def test_scan_is_a_frozen_value() -> None:
    segs, _ = synth_wal([(1, 0, 5, commit_body(T0))])
    scan = read_xact_records(segs[0])
    assert isinstance(scan, SegmentScan)
    with pytest.raises(AttributeError):
        scan.records = ()  # type: ignore[misc]


# --------------------------------------------------------------------------- a prefix and the file's length

def test_a_prefix_too_short_is_refused() -> None:
    segs, _ = synth_wal([(1, 0, 5, commit_body(T0)), (21, 0, 0, filler_body(20000))])
    with pytest.raises(PrefixTooShort):
        read_xact_records(segs[0][:BLCK], total_len=len(segs[0]))
    with pytest.raises(ValueError):
        read_xact_records(segs[0], total_len=BLCK)


def _prefix_scan(data: bytes) -> SegmentScan:
    from scheduler.edges import segment_prefix
    prefix, total = segment_prefix([data[i:i + 5000] for i in range(0, len(data), 5000)])
    return read_xact_records(prefix, total_len=total)


def test_the_prefix_up_to_a_zero_page_reads_as_the_whole_file(pg_wal: WalArchive) -> None:
    for name in pg_wal.names:
        data = pg_wal.data(name)
        assert _prefix_scan(data) == read_xact_records(data), name


@pytest.mark.parametrize("shape", ["switch", "zero_tail", "record_into_zeros", "truncated", "recycled"])
def test_prefix_shapes(shape: str) -> None:
    recs = [(1, 0, 5, commit_body(T0)), (21, 0, 0, filler_body(20000)), (1, 0, 6, commit_body(T0))]
    if shape == "switch":
        recs.append((0, 0x40, 0, b""))
    segs, lsns = synth_wal(recs)
    data = bytearray(segs[0])
    if shape == "record_into_zeros":      # a record of zeros over 3 pages: each page still begins with a header
        segs, _ = synth_wal([(1, 0, 5, commit_body(T0)), (21, 0, 0, b"\xfe" + struct.pack("<I", 3 * BLCK)
                                                         + bytes(3 * BLCK)), (1, 0, 6, commit_body(T0))])
        data = bytearray(segs[0])
    if shape == "truncated":
        data = data[:3 * BLCK + 100]
    if shape == "recycled":               # no zero page: stale data after the end of valid WAL
        data[4 * BLCK:] = bytes(range(256)) * ((len(data) - 4 * BLCK) // 256)
    whole = read_xact_records(bytes(data))
    assert _prefix_scan(bytes(data)) == whole
    assert [r.xid for r in whole.records][:1] == [5]
