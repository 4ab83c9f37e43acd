from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recovery.errors import BadHistory
from recovery.lsn import Lsn
from recovery.timeline import TimelinePath, TimelineSwitch, build_paths, parse_history

S = 16 << 20
REAL = "1\t0/B02E650\tbefore 2026-01-01 12:00:37.990332+00\n\n"


def test_parse_real_history() -> None:
    assert parse_history(REAL) == (TimelineSwitch(1, Lsn.parse("0/B02E650"), "before 2026-01-01 12:00:37.990332+00"),)


def test_parse_multi_line_with_comments() -> None:
    text = "# comment\n1\t0/3000000\tno recovery target specified\n\n2\t0/5000028\tat restore point \"x\"\n"
    got = parse_history(text)
    assert [(s.parent, str(s.switchpoint)) for s in got] == [(1, "0/3000000"), (2, "0/5000028")]
    assert got[1].reason == 'at restore point "x"'


@pytest.mark.parametrize("text, lineno", [
    ("1 0/3000000 x\nbad line\n", 2),
    ("2\t0/3000000\tx\n1\t0/4000000\tx\n", 2),      # TLIs must increase
    ("1\t0/5000000\tx\n2\t0/4000000\tx\n", 2),      # switchpoints must not decrease
    ("0\t0/1\tx\n", 1),
    ("1\t0/G\tx\n", 1),
])
def test_parse_errors(text: str, lineno: int) -> None:
    with pytest.raises(BadHistory) as e:
        parse_history(text)
    assert e.value.lineno == lineno


def test_build_rejects_later_parent() -> None:
    with pytest.raises(BadHistory):
        TimelinePath.build(2, parse_history("3\t0/1\tx\n"))


def test_path_positions() -> None:
    p = TimelinePath.build(3, parse_history("1\t0/B02E650\tx\n2\t0/D000000\ty\n"))
    assert p.tlis == (1, 2, 3)
    sp = Lsn.parse("0/B02E650")
    assert p.tli_of(sp - 1) == 1 and p.tli_of(sp) == 2
    assert p.on_path(1, sp - 8) and not p.on_path(1, sp) and p.on_path(2, sp)
    assert p.tli_of(Lsn.parse("0/D000000")) == 3 and p.end_of(3) is None and p.end_of(2) == Lsn.parse("0/D000000")
    assert [p.segment_tli(n, S) for n in (0xA, 0xB, 0xC, 0xD, 0xE)] == [1, 2, 2, 3, 3]
    assert p.segment_ranges(2, 0x10, S) == [(1, 2, 0xA), (2, 0xB, 0xC), (3, 0xD, 0x10)]
    assert p.entry(4) is None


def test_switch_within_one_segment_twice_uses_the_newest() -> None:
    p = TimelinePath.build(3, parse_history("1\t0/B000100\tx\n2\t0/B000200\ty\n"))
    assert p.segment_tli(0xB, S) == 3 and p.segment_tli(0xA, S) == 1
    assert p.segment_ranges(0xA, 0xC, S) == [(1, 0xA, 0xA), (3, 0xB, 0xC)]


def test_build_paths() -> None:
    paths = build_paths({2: parse_history(REAL)}, [1, 2])
    assert paths[1].tlis == (1,) and paths[2].tlis == (1, 2)


@given(st.lists(st.integers(1, 1 << 40), min_size=1, max_size=5, unique=True), st.integers(0, 1 << 41))
def test_tli_of_and_segment_tli_agree(points: list[int], pos: int) -> None:
    points.sort()
    history = tuple(TimelineSwitch(i + 1, Lsn(sp)) for i, sp in enumerate(points))
    p = TimelinePath.build(len(points) + 1, history)
    t = p.tli_of(Lsn(pos))
    e = p.entry(t)
    assert e is not None and e.contains(Lsn(pos))
    # the file PostgreSQL reads for pos's segment is from pos's timeline or a later one on the path
    assert p.segment_tli(pos // S, S) >= t
