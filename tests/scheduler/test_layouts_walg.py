"""WAL-G readers. No WAL-G archive exists here (FIELD-NOTES): fixtures follow its DTOs field by field."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recovery.errors import MetadataError
from recovery.lsn import Lsn
from recovery.model import BackupStatus, BackupType, WalKind, WalObject
from recovery.wal import segment_name
from scheduler.layouts import walg
from scheduler.layouts.common import ForeignObject, MetaObject

DATA = Path(__file__).parent / "data" / "walg"
SEG = 16 * 1024 * 1024
FULL = "base_000000430000030600000060"
DELTA = "base_000000430000030600000070_D_000000430000030600000060"


def sentinel(name: str) -> bytes:
    return (DATA / f"{name}{walg.SENTINEL_SUFFIX}").read_bytes()


def test_v2_full_sentinel() -> None:
    b = walg.parse_sentinel(sentinel(FULL), FULL + walg.SENTINEL_SUFFIX, "wal-g/basebackups_005/x")
    assert (b.label, b.type, b.status, b.timeline) == (FULL, BackupType.FULL, BackupStatus.DONE, 0x43)
    assert b.start_lsn == Lsn.parse("306/60000028") and b.stop_lsn == Lsn(3325916080832)
    assert segment_name(0x43, b.start_lsn.segno(SEG)) == FULL[5:]
    assert b.start_time == datetime(2026, 1, 1, 12, 0, 1, 793015, tzinfo=timezone.utc)   # ns truncated
    assert b.stop_time == datetime(2026, 1, 1, 12, 0, 18, 538578, tzinfo=timezone.utc)
    assert b.stop_time_exact is False           # FinishTime is taken after the upload
    assert b.pg_version == 150015 and b.system_id == 7589951961098822866
    assert b.size_bytes == 2604967632 and b.repo_size_bytes == 858502390
    assert b.depends_on == () and b.parent is None and b.usable


def test_delta_sentinel_exact_big_integers() -> None:
    b = walg.parse_sentinel(sentinel(DELTA), DELTA, "s")
    assert b.type is BackupType.DELTA and b.timeline == 0x43
    assert b.stop_lsn == Lsn(2**53 + 1)         # a float would have rounded to 2**53
    assert b.system_id == 2**64 - 1
    assert b.parent == "base_000000430000030600000068_D_000000430000030600000060"
    assert b.depends_on == (b.parent, FULL)
    assert b.start_time is None and b.stop_time is None and b.stop_time_exact is False


def test_v1_sentinel_with_metadata() -> None:
    v1 = json.dumps({"LSN": 33554472, "FinishLSN": 33554688, "PgVersion": 150018,
                     "SystemIdentifier": 7590361656797167841}).encode()
    b = walg.parse_sentinel(v1, "base_000000010000000000000002", "s")
    assert b.start_time is None and b.stop_time is None and str(b.start_lsn) == "0/2000028"
    meta = walg.parse_metadata((DATA / "metadata.json").read_bytes(), "metadata.json")
    assert meta.start_lsn == Lsn(3325915299880) and meta.finish_lsn == Lsn(3325916080832)
    assert meta.hostname == "db1" and meta.is_permanent is False
    merged = walg.with_metadata(b, meta)
    assert merged.start_time == meta.start_time and merged.stop_time == meta.finish_time
    assert merged.start_lsn == b.start_lsn and merged.pg_version == 150018   # the sentinel wins


def test_delta_with_equal_from_and_full() -> None:
    data = json.dumps({"LSN": 1 << 32, "FinishLSN": (1 << 32) + 200, "DeltaFrom": FULL,
                       "DeltaFullName": FULL}).encode()
    b = walg.parse_sentinel(data, "base_000000430000000100000000_D_000000430000030600000060", "s")
    assert b.depends_on == (FULL,) and b.parent == FULL


def test_delta_chain_resolution() -> None:
    full = walg.parse_sentinel(sentinel(FULL), FULL, "s")
    d1_name = "base_000000430000030600000068_D_000000430000030600000060"
    d1 = walg.parse_sentinel(json.dumps({"LSN": 3326049517608, "FinishLSN": 3326049518000, "DeltaFrom": FULL,
                                         "DeltaFullName": FULL}).encode(), d1_name, "s")
    d2 = walg.parse_sentinel(sentinel(DELTA), DELTA, "s")
    known = {b.label: b for b in (full, d1, d2)}
    assert walg.delta_chain(DELTA, known) == (d1_name, FULL)
    assert walg.delta_chain(FULL, known) == ()
    del known[d1_name]
    assert walg.delta_chain(DELTA, known) == (d1_name, FULL)


@pytest.mark.parametrize("data", [
    b"", b"{", b"[]", b"null", b'{"FinishLSN": 1}',
    b'{"LSN": 3.3259e12}', b'{"LSN": "3325915299880"}', b'{"LSN": -1}', b'{"LSN": true}',
    b'{"LSN": 1, "FinishLSN": 1.5}', b'{"LSN": 1, "StartTime": "noon"}', b'{"LSN": 1, "DeltaFrom": 5}',
    b"\xff\xfe",
])
def test_bad_sentinels(data: bytes) -> None:
    with pytest.raises(MetadataError) as e:
        walg.parse_sentinel(data, FULL, "wal-g/basebackups_005/" + FULL)
    assert FULL in str(e.value)


def test_bad_backup_name() -> None:
    with pytest.raises(MetadataError):
        walg.parse_sentinel(b'{"LSN": 1}', "base_00000001000000000000000g", "s")


# --- keys --------------------------------------------------------------------------------------

@pytest.mark.parametrize("rel, kind, name, tli, segno, comp", [
    ("000000010000000000000001.lz4", WalKind.SEGMENT, "000000010000000000000001", 1, 1, "lz4"),
    ("000000010000000000000001.lzma", WalKind.SEGMENT, "000000010000000000000001", 1, 1, "lzma"),
    ("000000010000000000000001.zst", WalKind.SEGMENT, "000000010000000000000001", 1, 1, "zst"),
    ("000000010000000000000001.br", WalKind.SEGMENT, "000000010000000000000001", 1, 1, "br"),
    ("000000010000000000000001.gz", WalKind.SEGMENT, "000000010000000000000001", 1, 1, "gz"),
    ("000000010000000000000001.lzo", WalKind.SEGMENT, "000000010000000000000001", 1, 1, "lzo"),
    ("000000010000000000000001", WalKind.SEGMENT, "000000010000000000000001", 1, 1, None),
    ("000000010000000000000001.", WalKind.SEGMENT, "000000010000000000000001", 1, 1, None),
    ("00000002.history.lz4", WalKind.HISTORY, "00000002.history", 2, None, "lz4"),
    ("00000002.history", WalKind.HISTORY, "00000002.history", 2, None, None),
    ("000000010000000000000003.000000D8.backup.zst", WalKind.BACKUP_LABEL,
     "000000010000000000000003.000000D8.backup", 1, 3, "zst"),
    ("000000010000000000000003.partial.lz4", WalKind.PARTIAL, "000000010000000000000003.partial", 1, 3, "lz4"),
])
def test_wal_keys(rel: str, kind: WalKind, name: str, tli: int, segno: int | None, comp: str | None) -> None:
    assert walg.classify_wal_key(rel, SEG) == WalObject(kind, name, tli, segno, comp, None)


@pytest.mark.parametrize("rel, kind", [
    ("000000020000000300000071.json", "wal_metadata"),
    ("000000010000000000000001_delta.lz4", "wal_delta"),
    ("000000010000000000000001_delta", "wal_delta"),
])
def test_known_side_files(rel: str, kind: str) -> None:
    assert walg.classify_wal_key(rel, SEG) == MetaObject(rel, kind, None)


@pytest.mark.parametrize("rel", [
    "000000010000000000000001.tar",
    "000000010000000000000001.gz.gz",
    "000000010000000000000001.snappy",
    "00000001000000000000000a.lz4",
    "0000000100000000/000000010000000000000001.lz4",
    "00000001.history.json",
    "walg_data.json",
    "../000000010000000000000001.lz4",
    "000000010000000000000100.lz4",
])
def test_foreign_wal_keys(rel: str) -> None:
    out = walg.classify_wal_key(rel, SEG)
    assert isinstance(out, ForeignObject) and out.reason


@pytest.mark.parametrize("rel, kind, label", [
    (f"{FULL}_backup_stop_sentinel.json", "sentinel", FULL),
    (f"{DELTA}_backup_stop_sentinel.json", "sentinel", DELTA),
    (f"{FULL}/metadata.json", "metadata", FULL),
    (f"{FULL}/files_metadata.json", "files_metadata", FULL),
    (f"{FULL}/tar_partitions/part_001.tar.lz4", "payload", FULL),
    (f"{FULL}/tar_partitions/pg_control.tar.lz4", "payload", FULL),
    (f"{FULL}/tar_partitions/backup_label.tar.zst", "payload", FULL),
    (f"{FULL}/", "backup_dir", FULL),
])
def test_basebackup_keys(rel: str, kind: str, label: str) -> None:
    assert walg.classify_basebackup_key(rel) == MetaObject(rel, kind, label)


@pytest.mark.parametrize("rel", [
    f"{FULL}/{FULL}_backup_stop_sentinel.json",      # sentinel not at depth 1
    "base_00000001000000000000000_backup_stop_sentinel.json",
    "base_000000010000000000000002_00000216_backup_stop_sentinel.json",   # WAL-E name
    f"{FULL}/random.txt", "foo/metadata.json", f"{FULL}.json",
])
def test_foreign_basebackup_keys(rel: str) -> None:
    assert isinstance(walg.classify_basebackup_key(rel), ForeignObject)


@given(st.integers(1, 0xFFFFFFFF), st.integers(0, 2**40), st.sampled_from([1 << 20, 16 << 20, 1 << 30]),
       st.sampled_from(["", ".", ".lz4", ".lzma", ".zst", ".br"]), st.sampled_from(["", ".partial"]))
def test_wal_key_round_trip(tli: int, segno: int, seg_size: int, ext: str, tail: str) -> None:
    segno %= 2**64 // seg_size
    name = segment_name(tli, segno, seg_size) + tail
    w = walg.classify_wal_key(name + ext, seg_size)
    assert isinstance(w, WalObject) and (w.name, w.timeline, w.segno) == (name, tli, segno)
    assert w.compression == (ext[1:] or None)


@given(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1))
def test_sentinel_lsns_exact(start: int, stop: int) -> None:
    b = walg.parse_sentinel(json.dumps({"LSN": start, "FinishLSN": stop}).encode(), FULL, "s")
    assert b.start_lsn == Lsn(start) and (b.stop_lsn == Lsn(stop) if stop else b.stop_lsn is None)


@given(st.text(max_size=80))
def test_classify_never_raises(rel: str) -> None:
    assert isinstance(walg.classify_wal_key(rel, SEG), (WalObject, MetaObject, ForeignObject))
    assert isinstance(walg.classify_basebackup_key(rel), (MetaObject, ForeignObject))


@given(st.binary(max_size=200))
def test_parse_never_raises_foreign_errors(data: bytes) -> None:
    try:
        walg.parse_sentinel(data, FULL, "s")
    except MetadataError:
        pass
