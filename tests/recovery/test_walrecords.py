"""recovery/walrecords.py + walsummary.py against pg_waldump (PG 15) on the same real segments.

The segments come from sandbox/walcorpus.py ("features": spanning records, FPIs plain and pglz/lz4/zstd,
savepoints, DROP/TRUNCATE/DELETE, prepared transactions, restore points), built once and cached.
"""
from __future__ import annotations

import gzip
import re
import struct
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from recovery.lsn import Lsn
from recovery.walrecords import (
    BadWal,
    FileCreate,
    RelFile,
    RestorePointRecord,
    RowChange,
    WalRecord,
    XactEnd,
    decode_segment,
    decode_stream,
)
from recovery.walsummary import Transaction, destructive_first, summarise
from sandbox import walcorpus
from tests.recovery.test_walreader import BLCK, SMALL, T0, _micros, commit_body, filler_body, synth_wal
from tests.support.tools import missing

_LINE = re.compile(r"^rmgr: (\S+)\s+len \(rec/tot\):\s*\d+/\s*\d+, tx:\s*(\d+), lsn: (\S+), prev \S+, desc: (.*)$")
_BLK0 = re.compile(r"^\tblkref #0: rel (\d+)/(\d+)/(\d+) fork (\w+) blk \d+(.*)$")
_XACT = re.compile(r"^(COMMIT|ABORT|COMMIT_PREPARED|ABORT_PREPARED) (?:(\d+): )?"
                   r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}) UTC(.*)$")
_TABLESPACE_DIRS = {"base": 1663, "global": 1664}


@dataclass
class Dumped:
    rmgr: str
    xid: int
    lsn: Lsn
    desc: str
    blk0: tuple[RelFile, str, str] | None = None  # relation, fork, rest (FPW details)


@dataclass(frozen=True)
class Corpus:
    dir: Path
    truth: dict[str, object]
    data: tuple[bytes, ...]
    dumped: tuple[Dumped, ...]


def _parse_waldump(text: str) -> list[Dumped]:
    out: list[Dumped] = []
    for line in text.splitlines():
        m = _LINE.match(line)
        if m:
            out.append(Dumped(m[1], int(m[2]), Lsn.parse(m[3]), m[4]))
            continue
        b = _BLK0.match(line)
        if b and out:
            out[-1].blk0 = (RelFile(int(b[1]), int(b[2]), int(b[3])), b[4], b[5])
    return out


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    if not (walcorpus.PG_BIN / "pg_waldump").exists():
        missing(f"PostgreSQL 15 binaries not found in {walcorpus.PG_BIN}; Debian package postgresql-15")
    d = walcorpus.ensure_corpus("features")
    with gzip.open(d / "waldump.txt.gz", "rt") as f:
        dumped = _parse_waldump(f.read())
    return Corpus(d, walcorpus.load_truth(d), tuple(p.read_bytes() for p in walcorpus.segments(d)), tuple(dumped))


@pytest.fixture(scope="module")
def records(corpus: Corpus) -> list[WalRecord]:
    return list(decode_stream(corpus.data))


def _rel(text: str) -> RelFile:
    parts = text.split("/")
    if parts[0] == "pg_tblspc":  # pg_tblspc/<spc>/<version dir>/<db>/<rel>
        return RelFile(int(parts[1]), int(parts[3]), int(parts[4]))
    if parts[0] == "global":
        return RelFile(1664, 0, int(parts[1]))
    return RelFile(_TABLESPACE_DIRS[parts[0]], int(parts[1]), int(parts[2]))


def _field(rest: str, name: str) -> list[str]:
    for part in rest.split("; "):
        if part.startswith(f"{name}: "):
            return part[len(name) + 2:].split()
    return []


def test_every_commit_and_abort_matches_pg_waldump(corpus: Corpus, records: list[WalRecord]) -> None:
    expected = []
    for d in corpus.dumped:
        m = _XACT.match(d.desc) if d.rmgr == "Transaction" else None
        if m:
            xid = int(m[2]) if m[2] else d.xid
            rels = tuple(_rel(r) for r in _field(m[4], "rels"))
            subxacts = tuple(int(x) for x in _field(m[4], "subxacts"))
            expected.append((d.lsn, m[1].lower(), xid, m[3], rels, subxacts))
    got = [(r.lsn, r.kind, r.xid, r.time.strftime("%Y-%m-%d %H:%M:%S.%f"), r.dropped, r.subxacts)
           for r in records if isinstance(r, XactEnd)]
    assert got == expected
    kinds = Counter(e[1] for e in expected)
    assert set(kinds) == {"commit", "abort", "commit_prepared", "abort_prepared"} and len(expected) > 500
    assert max(len(e[5]) for e in expected) == 3000 and any(e[4] for e in expected)


def test_row_changes_match_pg_waldump(corpus: Corpus, records: list[WalRecord]) -> None:
    """Every row-changing heap/heap2 record, summed by (xid, relation, operation)."""
    expected: Counter[tuple[int, RelFile, str]] = Counter()
    for d in corpus.dumped:
        if d.rmgr not in ("Heap", "Heap2") or d.blk0 is None:
            continue
        op, _, rest = d.desc.partition(" ")
        op = op.split("+")[0]
        flags = re.search(r"flags 0x([0-9A-F]{2})", rest)
        flag = int(flags[1], 16) if flags else 0
        key = d.xid, d.blk0[0]
        if d.rmgr == "Heap2" and op == "MULTI_INSERT":
            expected[(*key, "insert")] += int(rest.split()[0])
        elif d.rmgr == "Heap" and ((op == "INSERT" and not flag & 0x04) or op == "HEAP_CONFIRM"):
            expected[(*key, "insert")] += 1  # a speculative insertion counts when confirmed
        elif d.rmgr == "Heap" and op == "DELETE" and not flag & 0x08:
            expected[(*key, "delete")] += 1
        elif d.rmgr == "Heap" and op in ("UPDATE", "HOT_UPDATE"):
            expected[(*key, "update")] += 1
    got: Counter[tuple[int, RelFile, str]] = Counter()
    for r in records:
        if isinstance(r, RowChange):
            got[(r.xid, r.rel, r.op)] += r.count
    assert got == expected
    assert {op for _, _, op in got} == {"insert", "update", "delete"} and sum(got.values()) > 10000


def test_full_page_images_plain_and_compressed_were_walked(corpus: Corpus, records: list[WalRecord]) -> None:
    """Records carrying FPIs (each compression) are decoded with the right relation at the right LSN."""
    changes = {r.lsn: r for r in records if isinstance(r, RowChange)}
    methods: Counter[str] = Counter()
    for d in corpus.dumped:
        if d.blk0 is None or "(FPW)" not in d.blk0[2] or d.rmgr != "Heap" or not d.desc.startswith("UPDATE"):
            continue
        method = re.search(r"method: (\w+)", d.blk0[2])
        methods[method[1] if method else "none"] += 1
        first = max((lsn for lsn in changes if lsn <= d.lsn), default=None)
        assert first is not None and changes[first].rel == d.blk0[0]
    assert {"pglz", "lz4", "zstd", "none"} <= set(methods)


def test_restore_points_match_pg_waldump(corpus: Corpus, records: list[WalRecord]) -> None:
    expected = [(d.lsn, d.desc.split(" ", 1)[1]) for d in corpus.dumped if d.desc.startswith("RESTORE_POINT")]
    points = [r for r in records if isinstance(r, RestorePointRecord)]
    assert [(p.lsn, p.name) for p in points] == expected == [(expected[0][0], "before-migration"),
                                                             (expected[1][0], "before-migration")]
    assert points[0].time < points[1].time and points[0].end_lsn.value == points[0].lsn.value + 104


def test_smgr_creates_match_pg_waldump(corpus: Corpus, records: list[WalRecord]) -> None:
    expected = [(d.lsn, _rel(d.desc.split()[1])) for d in corpus.dumped  # "CREATE base/5/16414" (main fork)
                if d.rmgr == "Storage" and d.desc.startswith("CREATE") and "_" not in d.desc]
    assert [(r.lsn, r.rel) for r in records if isinstance(r, FileCreate)] == expected and expected


def test_segment_alone_skips_only_what_crosses_into_it(corpus: Corpus, records: list[WalRecord]) -> None:
    alone = {r for data in corpus.data for r in decode_segment(data).records}
    missing_here = [r for r in records if r not in alone]
    crossing = [r for r in records if isinstance(r, XactEnd) and r.lsn.segno(walcorpus.SEG) != (r.end_lsn.value - 1)
                // walcorpus.SEG]
    assert len(crossing) == 1 and missing_here == crossing  # the 3000-subxact commit across 2 -> 3
    first = decode_segment(corpus.data[1])
    assert first.carry is not None and first.carry.lsn == crossing[0].lsn
    assert decode_segment(corpus.data[2], carry=first.carry).records[0] == crossing[0]


def test_summary_of_the_workload(corpus: Corpus, records: list[WalRecord]) -> None:
    truth = corpus.truth
    nodes = {k: int(v) for k, v in truth["filenodes_before_drop"].items()}  # type: ignore[attr-defined]
    db = int(truth["db_oid"])  # type: ignore[call-overload]
    summary = summarise(records)
    user = [t for t in summary.transactions if any(r.rel.db == db and r.rel.rel >= 16384 for r in t.rows)
            or any(f.db == db and f.rel >= 16384 for f in t.dropped)]

    def rows(t: Transaction, name: str) -> tuple[int, int, int]:
        found = [r for r in t.rows if r.rel == RelFile(1663, db, nodes[name])]
        return (found[0].inserted, found[0].updated, found[0].deleted) if found else (0, 0, 0)

    savepoints = next(t for t in user if len(t.subxacts) == 2)
    assert rows(savepoints, "kept") == (3, 0, 0) and savepoints.db_oid == db  # db from the rows (no DBINFO)  # rows 1, 2, 4: the rolled-back savepoint's row 3 is gone
    loop = [t for t in user if len(t.subxacts) == 3000]
    assert len(loop) == 2 and all(rows(t, "kept") == (3000, 0, 0) for t in loop)
    prepared = next(t for t in summary.transactions if t.kind == "commit_prepared")
    assert rows(prepared, "kept") == (1, 0, 0) and prepared.xid > 0
    delete = next(t for t in user if rows(t, "customers")[2])
    assert rows(delete, "customers") == (0, 0, 1500) and delete.destructive() and not delete.destructive(1500)
    truncate = next(t for t in user if RelFile(1663, db, nodes["items"]) in t.dropped)
    assert RelFile(1663, db, int(truth["items_filenode_after"])) in truncate.created  # type: ignore[call-overload]
    drop = next(t for t in user if RelFile(1663, db, nodes["orders"]) in t.dropped)
    assert RelFile(1663, db, nodes["orders_pkey"]) in drop.dropped and drop.db_oid == db and not drop.created
    after = summary.transactions[summary.transactions.index(drop) + 1]
    assert after.commit_lsn > drop.commit_lsn and not after.destructive()
    ordered = destructive_first(user)
    assert ordered[:3] == [delete, truncate, drop] and summary.aborted >= 2
    assert [p.name for p in summary.restore_points] == ["before-migration"] * 2


def test_decoding_is_fast(corpus: Corpus) -> None:
    started = time.perf_counter()
    list(decode_stream(corpus.data))
    assert time.perf_counter() - started < 10.0  # 48 MiB, mostly zeros; make bench measures properly


# --------------------------------------------------------------------------- synthetic segments


def test_a_record_longer_than_a_segment_is_carried_through() -> None:
    room = SMALL - 40 - (SMALL // BLCK - 1) * 24
    segs, lsns = synth_wal([
        (21, 0, 0, filler_body(room - 24 - 5 - 1000)),
        (1, 0, 42, commit_body(T0, b"s" * (SMALL + 5000))),  # covers the whole second segment
        (1, 0x20, 43, commit_body(T0)),
    ], nseg=3)
    first = decode_segment(segs[0])
    middle = decode_segment(segs[1], carry=first.carry)
    assert middle.records == () and middle.carry is not None and middle.carry.lsn.value == lsns[1]
    assert not middle.truncated and not middle.ended_by_switch and middle.end_of_valid_wal is None
    last = decode_segment(segs[2], carry=middle.carry)
    assert [(type(r).__name__, r.xid) for r in last.records] == [("XactEnd", 42), ("XactEnd", 43)]
    assert list(decode_stream(segs)) == list(last.records)


def _heap_insert(rel: tuple[int, int, int], flags: int = 0, image: int = 0) -> bytes:
    """xl_heap_insert on block 0 of ``rel``; ``image``: bimg_info of a 10-byte full-page image (0: none)."""
    main = struct.pack("<HB", 1, flags)
    header = b"\x00" + bytes([0x20 | (0x10 if image else 0)]) + struct.pack("<H", 4)
    if image:
        header += struct.pack("<HHB", 10, 100, image) + (struct.pack("<H", 8000) if image & 0x01 else b"")
    header += struct.pack("<III", *rel) + struct.pack("<I", 0)
    return header + b"\xff" + bytes([len(main)]) + (b"I" * 10 if image else b"") + b"T" * 4 + main


def test_row_runs_merge_and_abort_discards() -> None:
    rel = (1663, 5, 16384)
    segs, _ = synth_wal([
        (10, 0x00, 700, _heap_insert(rel)),
        (10, 0x00, 700, _heap_insert(rel, image=0x08 | 0x02)),  # lz4 image, no hole, apply
        (10, 0x80, 700, _heap_insert(rel, image=0x04 | 0x01)),  # INSERT+INIT, pglz image with a hole
        (10, 0x00, 701, _heap_insert(rel, flags=0x04)),  # speculative: counted at CONFIRM
        (1, 0x20, 701, commit_body(T0)),  # abort
        (1, 0x00, 700, commit_body(T0)),
    ])
    decoded = decode_segment(segs[0])
    kinds = [(type(r).__name__, getattr(r, "count", None)) for r in decoded.records]
    assert kinds == [("RowChange", 3), ("XactEnd", None), ("XactEnd", None)]
    summary = summarise(decoded.records)
    assert [(t.xid, [(r.inserted, r.updated, r.deleted) for r in t.rows]) for t in summary.transactions] == [
        (700, [(3, 0, 0)])]
    assert summary.aborted == 1


def test_corrupt_heap_record_ends_valid_wal() -> None:
    rel = (1663, 5, 16384)
    segs, lsns = synth_wal([(10, 0, 7, _heap_insert(rel)), (10, 0, 7, _heap_insert(rel)), (1, 0, 7, commit_body(T0))])
    data = bytearray(segs[0])
    data[lsns[1] - SMALL + 30] ^= 0x01  # inside the second insert's block header
    decoded = decode_segment(bytes(data))
    assert decoded.end_of_valid_wal == Lsn(lsns[1])
    assert [(type(r).__name__, getattr(r, "count", None)) for r in decoded.records] == [("RowChange", 1)]


def test_commit_with_every_xinfo_part() -> None:
    main = (struct.pack("<qI", _micros(T0), 0x01 | 0x02 | 0x04 | 0x08 | 0x10 | 0x100)
            + struct.pack("<II", 5, 1663)  # dbinfo
            + struct.pack("<i2I", 2, 801, 802)  # subxacts
            + struct.pack("<i3I", 1, 1663, 5, 16500)  # relfilelocators
            + struct.pack("<i3I", 1, 2, 5, 16500)  # dropped stats
            + struct.pack("<i", 1) + b"\x00" * 16  # one invalidation message
            + struct.pack("<I", 799))  # two-phase: the prepared xid
    body = b"\xff" + bytes([len(main)]) + main
    segs, _ = synth_wal([(1, 0x80 | 0x30, 0, body)])
    (commit,) = decode_segment(segs[0]).records
    assert isinstance(commit, XactEnd)
    assert (commit.kind, commit.xid, commit.db_oid, commit.subxacts, commit.dropped) == (
        "commit_prepared", 799, 5, (801, 802), (RelFile(1663, 5, 16500),))
    short = b"\xff" + bytes([len(main) - 30]) + main[:-30]
    segs, _ = synth_wal([(1, 0x80, 9, short)])
    with pytest.raises(BadWal, match="shorter than its flags"):
        decode_segment(segs[0])
