from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recovery.errors import BadWalName
from recovery.lsn import Lsn
from recovery.wal import (
    WalSegment,
    history_name,
    history_timeline,
    is_segment_name,
    parse_seg_size_from_page,
    segment_name,
    segs_per_xlogid,
    valid_seg_size,
)

SEG_SIZES = [1 << e for e in range(20, 31)]


@pytest.mark.parametrize("seg_size", SEG_SIZES)
@given(tli=st.integers(1, 0xFFFFFFFF), segno=st.integers(0, (1 << 64) // (1 << 20) - 1))
def test_name_round_trip_every_segment_size(seg_size: int, tli: int, segno: int) -> None:
    segno %= (1 << 64) // seg_size
    s = WalSegment(tli, segno, seg_size)
    assert len(s.name) == 24 and is_segment_name(s.name)
    assert WalSegment.from_name(s.name, seg_size) == s


@pytest.mark.parametrize("seg_size", SEG_SIZES)
@given(a=st.integers(0, (1 << 63) - 1), b=st.integers(0, (1 << 63) - 1))
def test_name_order_is_segment_order(seg_size: int, a: int, b: int) -> None:
    sa, sb = WalSegment.of_lsn(1, Lsn(a), seg_size), WalSegment.of_lsn(1, Lsn(b), seg_size)
    if a <= b:
        assert sa.name <= sb.name
    assert sa.start_lsn.value <= a < sa.end_lsn.value


@pytest.mark.parametrize("name, seg_size, segno", [
    ("000000010000000000000003", 16 << 20, 3),
    ("00000002000000010000000B", 16 << 20, 0x10B),
    ("0000000100000001000000FF", 16 << 20, 0x1FF),
    ("00000001000000010000003F", 64 << 20, 0x7F),
    ("000000010000000100000003", 1 << 30, 7),
    ("000000010000000000000FFF", 1 << 20, 0xFFF),
])
def test_from_name(name: str, seg_size: int, segno: int) -> None:
    s = WalSegment.from_name(name, seg_size)
    assert s.segno == segno and s.name == name


@pytest.mark.parametrize("name, seg_size", [
    ("000000010000000000000100", 16 << 20),   # seg >= 256 at 16 MiB
    ("000000010000000000000040", 64 << 20),
    ("000000010000000000000004", 1 << 30),
    ("000000000000000000000001", 16 << 20),   # timeline 0
    ("00000001000000000000000a", 16 << 20),   # lower case
    ("00000001000000000000000", 16 << 20),
    ("000000010000000000000001.partial", 16 << 20),
])
def test_from_name_rejects(name: str, seg_size: int) -> None:
    with pytest.raises(BadWalName):
        WalSegment.from_name(name, seg_size)


@pytest.mark.parametrize("magic", [0xD093, 0xD097, 0xD098, 0xD101, 0xD106, 0xD10D, 0xD110, 0xD113, 0xD116, 0xD118])
def test_seg_size_for_every_supported_page_magic(magic: int) -> None:
    header = magic.to_bytes(2, "little") + bytes.fromhex("0200" "01000000" "0000000200000000" "00000000" "00000000"
                                                         "e100241eb6615669" "00000004" "00200000")
    assert parse_seg_size_from_page(header) == 64 << 20


def test_segment_helpers() -> None:
    assert [segs_per_xlogid(s) for s in (1 << 20, 16 << 20, 64 << 20, 1 << 30)] == [4096, 256, 64, 4]
    assert [valid_seg_size(s) for s in (1 << 19, 1 << 20, 3 << 20, 1 << 30, 1 << 31)] == [False, True, False, True, False]
    assert segment_name(1, 0x100) == "000000010000000100000000"
    assert WalSegment.of_lsn(1, Lsn.parse("0/30000D8")).name == "000000010000000000000003"
    assert history_timeline(history_name(0x1A)) == 0x1A and history_name(2) == "00000002.history"
    assert history_timeline("00000002.history.gz") is None


def test_seg_size_from_real_page_header() -> None:
    # LAYOUTS §5.2: first 40 bytes of a PG 15 segment (magic 0xD110)
    header = bytes.fromhex("10d106000100000000000002000000000000000000000000"
                           "e100241eb66156690000000100200000")
    assert parse_seg_size_from_page(header) == 16 << 20
    assert parse_seg_size_from_page(header[:39]) is None
    assert parse_seg_size_from_page(b"\x00" * 40) is None
    short = bytearray(header)
    short[2] = 0x00   # not a long header
    assert parse_seg_size_from_page(bytes(short)) is None
    odd = bytearray(header)
    odd[32:36] = (3 << 20).to_bytes(4, "little")
    assert parse_seg_size_from_page(bytes(odd)) is None
