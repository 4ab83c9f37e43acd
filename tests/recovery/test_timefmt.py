"""recovery/timefmt.py: each format against an independent spelling of it (strftime, fixed strings)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recovery.timefmt import conf_time, iso, iso_micro, iso_offset, short_time

PLUS2 = timezone(timedelta(hours=2))


@given(st.datetimes(timezones=st.timezones()))
def test_iso_fast_path_equals_strftime_form(t: datetime) -> None:
    u = t.astimezone(timezone.utc)
    assert iso(t) == u.strftime("%Y-%m-%dT%H:%M:%S") + (f".{u.microsecond:06d}" if u.microsecond else "") + "Z"


FIXED_OFFSETS = st.builds(lambda m: timezone(timedelta(minutes=m)), st.integers(-23 * 60, 23 * 60))


@given(st.datetimes(min_value=datetime(1000, 1, 2), timezones=FIXED_OFFSETS))   # no DST gaps or folds
def test_every_iso_form_reads_back_as_the_same_instant(t: datetime) -> None:
    for text in (iso(t), iso_offset(t), iso_offset(t, micro=True), iso_micro(t)):
        assert datetime.fromisoformat(text) == t, text


@pytest.mark.parametrize(("fmt", "expected"), [
    (iso, "2016-09-28T10:00:00.000005Z"),
    (iso_offset, "2016-09-28T10:00:00.000005+00:00"),
    (iso_micro, "2016-09-28T10:00:00.000005Z"),
    (conf_time, "2016-09-28 10:00:00.000005+00"),
    (short_time, "2016-09-28 10:00Z"),
])
def test_each_format_writes_utc(fmt: object, expected: str) -> None:
    t = datetime(2016, 9, 28, 12, 0, 0, 5, tzinfo=PLUS2)
    assert fmt(t) == expected  # type: ignore[operator]


def test_whole_seconds() -> None:
    t = datetime(2016, 9, 28, 10, 0, tzinfo=timezone.utc)
    assert (iso(t), iso_offset(t), iso_offset(t, micro=True), iso_micro(t), conf_time(t)) == (
        "2016-09-28T10:00:00Z", "2016-09-28T10:00:00+00:00", "2016-09-28T10:00:00.000000+00:00",
        "2016-09-28T10:00:00.000000Z", "2016-09-28 10:00:00.000000+00")
    assert iso(None) is None and iso_offset(None) is None
