from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recovery.errors import BadLsn
from recovery.lsn import MAX_LSN, Lsn

lsns = st.integers(min_value=0, max_value=MAX_LSN).map(Lsn)
seg_sizes = st.integers(min_value=20, max_value=30).map(lambda e: 1 << e)


@given(lsns)
def test_text_round_trip(x: Lsn) -> None:
    assert Lsn.parse(str(x)) == x
    assert Lsn.parse(str(x).lower()) == x


@given(lsns, lsns)
def test_order_matches_integer_order(a: Lsn, b: Lsn) -> None:
    assert (a < b) == (a.value < b.value)


@given(lsns, lsns, seg_sizes)
def test_segno_is_monotonic(a: Lsn, b: Lsn, seg_size: int) -> None:
    if a <= b:
        assert a.segno(seg_size) <= b.segno(seg_size)


@pytest.mark.parametrize("text, value", [
    ("0/0", 0), ("0/30000D8", 0x30000D8), ("16/B374D848", 0x16B374D848), ("FFFFFFFF/FFFFFFFF", MAX_LSN),
    (" 0/1 ", 1), ("000/0001", 1),
])
def test_parse(text: str, value: int) -> None:
    assert Lsn.parse(text).value == value


@pytest.mark.parametrize("text", ["", "0", "0/", "/0", "0/G", "1/2/3", "100000000/0", "-1/0", "0x1/0"])
def test_parse_rejects(text: str) -> None:
    with pytest.raises(BadLsn):
        Lsn.parse(text)


def test_range_and_arithmetic() -> None:
    with pytest.raises(BadLsn):
        Lsn(-1)
    with pytest.raises(BadLsn):
        Lsn(MAX_LSN + 1)
    assert Lsn(10) + 5 == Lsn(15) and Lsn(10) - 5 == Lsn(5)
    assert str(Lsn(0x100000000)) == "1/0"
