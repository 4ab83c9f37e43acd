"""WAL-E readers: names with decimal offsets, sentinel stop positions, .lzo-only WAL."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recovery.errors import MetadataError
from recovery.lsn import Lsn
from recovery.model import BackupStatus, BackupType, WalKind, WalObject
from recovery.wal import segment_name
from scheduler.layouts import wale
from scheduler.layouts.common import ForeignObject, MetaObject

DATA = Path(__file__).parent / "data" / "wale"
SEG = 16 * 1024 * 1024
NAME = "base_000000010000000000000003_00000216"


def test_sentinel() -> None:
    data = (DATA / f"{NAME}_backup_stop_sentinel.json").read_bytes()
    b = wale.parse_sentinel(data, f"wale/basebackups_005/{NAME}_backup_stop_sentinel.json", "k")
    assert (b.label, b.type, b.status, b.timeline) == (NAME, BackupType.FULL, BackupStatus.DONE, 1)
    assert b.start_lsn == Lsn.parse("0/30000D8")        # 216 decimal = 0xD8
    assert b.stop_lsn == Lsn.parse("0/4000088")         # "00000136" decimal = 0x88
    assert b.start_time is None and b.stop_time is None and b.stop_time_exact is False
    assert b.size_bytes == 31009840 and b.seg_size == SEG and b.depends_on == ()
    assert b.usable


def test_real_world_name_offset_is_decimal() -> None:
    data = json.dumps({"wal_segment_backup_stop": "000000140001047600000024",
                       "wal_segment_offset_backup_stop": "00000100"}).encode()
    b = wale.parse_sentinel(data, "base_000000140001047600000023_02614680", "s")
    assert b.timeline == 0x14
    assert b.start_lsn == Lsn((0x10476 << 32) + 0x23 * SEG + 2614680)
    assert b.stop_lsn == Lsn((0x10476 << 32) + 0x24 * SEG + 100)


def test_stop_offset_zero_means_end_of_named_segment() -> None:
    data = json.dumps({"wal_segment_backup_stop": "000000010000000000000004",
                       "wal_segment_offset_backup_stop": "00000000"}).encode()
    b = wale.parse_sentinel(data, NAME, "s")
    assert b.stop_lsn == Lsn.parse("0/5000000")


@pytest.mark.parametrize("data, name", [
    (b"{}", NAME),
    (b'{"wal_segment_backup_stop": "000000010000000000000004"}', NAME),
    (b'{"wal_segment_backup_stop": "00000001000000000000000x", "wal_segment_offset_backup_stop": "1"}', NAME),
    (b'{"wal_segment_backup_stop": "000000010000000000000004", "wal_segment_offset_backup_stop": "0x88"}', NAME),
    (b'{"wal_segment_backup_stop": "000000010000000000000004", "wal_segment_offset_backup_stop": "99999999"}', NAME),
    (b'{"wal_segment_backup_stop": "000000010000000000000004", "wal_segment_offset_backup_stop": 136}', NAME),
    (b"not json", NAME),
    (b'{"wal_segment_backup_stop": "000000010000000000000004", "wal_segment_offset_backup_stop": "1"}',
     "base_000000010000000000000003"),
    (b'{"wal_segment_backup_stop": "000000010000000000000004", "wal_segment_offset_backup_stop": "1"}',
     "base_000000010000000000000003_000000D8"),
])
def test_bad_sentinels(data: bytes, name: str) -> None:
    with pytest.raises(MetadataError):
        wale.parse_sentinel(data, name, "s")


@pytest.mark.parametrize("rel, kind, name, segno", [
    ("000000010000000000000001.lzo", WalKind.SEGMENT, "000000010000000000000001", 1),
    ("00000002.history.lzo", WalKind.HISTORY, "00000002.history", None),
    ("000000010000000000000003.000000D8.backup.lzo", WalKind.BACKUP_LABEL, "000000010000000000000003.000000D8.backup", 3),
    ("000000010000000000000003.partial.lzo", WalKind.PARTIAL, "000000010000000000000003.partial", 3),
])
def test_wal_keys(rel: str, kind: WalKind, name: str, segno: int | None) -> None:
    w = wale.classify_wal_key(rel, SEG)
    assert w == WalObject(kind, name, int(name[:8], 16), segno, "lzo", None)


@pytest.mark.parametrize("rel", ["000000010000000000000001", "000000010000000000000001.gz",
                                 "000000010000000000000001.lzo.lzo", "00000001000000000000000a.lzo",
                                 "x/000000010000000000000001.lzo", ".lzo", "000000010000000000000100.lzo"])
def test_foreign_wal_keys(rel: str) -> None:
    assert isinstance(wale.classify_wal_key(rel, SEG), ForeignObject)


@pytest.mark.parametrize("rel, kind", [
    (f"{NAME}_backup_stop_sentinel.json", "sentinel"),
    (f"{NAME}/extended_version.txt", "extended_version"),
    (f"{NAME}/tar_partitions/part_00000000.tar.lzo", "payload"),
    (f"{NAME}/", "backup_dir"),
])
def test_basebackup_keys(rel: str, kind: str) -> None:
    assert wale.classify_basebackup_key(rel) == MetaObject(rel, kind, NAME)


@pytest.mark.parametrize("rel", ["base_000000010000000000000003_backup_stop_sentinel.json",
                                 f"{NAME}/metadata.json", f"{NAME}/tar_partitions/part_1.zip", "junk"])
def test_foreign_basebackup_keys(rel: str) -> None:
    assert isinstance(wale.classify_basebackup_key(rel), ForeignObject)


@given(st.integers(1, 0xFFFFFFFF), st.integers(0, 2**40 - 1), st.sampled_from(["", ".partial"]))
def test_wal_key_round_trip(tli: int, segno: int, tail: str) -> None:
    name = segment_name(tli, segno, SEG) + tail
    w = wale.classify_wal_key(name + ".lzo", SEG)
    assert isinstance(w, WalObject) and (w.name, w.timeline, w.segno) == (name, tli, segno)


@given(st.integers(1, 0xFFFF), st.integers(0, 2**40 - 1), st.integers(1, SEG - 1))
def test_start_lsn_from_name_round_trip(tli: int, segno: int, offset: int) -> None:
    name = f"base_{segment_name(tli, segno, SEG)}_{offset:08d}"
    data = json.dumps({"wal_segment_backup_stop": segment_name(tli, segno, SEG),
                       "wal_segment_offset_backup_stop": f"{offset:08d}"}).encode()
    b = wale.parse_sentinel(data, name, "s")
    assert b.start_lsn == Lsn(segno * SEG + offset) == b.stop_lsn
