from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from recovery.errors import PlanningError
from recovery.lsn import Lsn
from recovery.target import Target, TargetKind, make_target, parse_time, parse_timeline

UTC = timezone.utc


@pytest.mark.parametrize("text, expected", [
    ("2016-09-28T10:00Z", datetime(2016, 9, 28, 10, 0, tzinfo=UTC)),
    ("2016-09-28T10:00z", datetime(2016, 9, 28, 10, 0, tzinfo=UTC)),
    ("2016-09-28T10:00:00Z", datetime(2016, 9, 28, 10, 0, tzinfo=UTC)),
    ("2016-09-28T12:00:00+02:00", datetime(2016, 9, 28, 10, 0, tzinfo=UTC)),
    ("2016-09-28T05:30-04:30", datetime(2016, 9, 28, 10, 0, tzinfo=UTC)),
    ("2016-09-28 10:00:00.123456+00", datetime(2016, 9, 28, 10, 0, 0, 123456, tzinfo=UTC)),
    ("2016-09-28T10:00:00.5Z", datetime(2016, 9, 28, 10, 0, 0, 500000, tzinfo=UTC)),
    ("  2016-09-28T10:00Z\n", datetime(2016, 9, 28, 10, 0, tzinfo=UTC)),
])
def test_parse_time_accepts_zoned_iso8601(text: str, expected: datetime) -> None:
    got = parse_time(text)
    assert got == expected
    assert got.utcoffset() == timedelta(0)


@pytest.mark.parametrize("text", ["2016-09-28T10:00", "2016-09-28 10:00:00.5", "2016-09-28"])
def test_parse_time_without_zone_is_ambiguous(text: str) -> None:
    with pytest.raises(PlanningError) as e:
        parse_time(text)
    assert e.value.code == "invalid_target"
    assert "ambiguous" in e.value.message


@pytest.mark.parametrize("text", ["", "yesterday", "2016-13-01T00:00Z", "2016-09-28T25:00Z", "10:00Z"])
def test_parse_time_rejects_garbage(text: str) -> None:
    with pytest.raises(PlanningError) as e:
        parse_time(text)
    assert e.value.code == "invalid_target"


@pytest.mark.parametrize("value, expected", [
    ("latest", "latest"), ("LATEST", "latest"), ("current", "current"), ("1", 1), ("42", 42), (7, 7),
])
def test_parse_timeline(value: object, expected: object) -> None:
    assert parse_timeline(value) == expected


@pytest.mark.parametrize("value", ["0", 0, -1, "two", "1.5", True, None, 2**32])
def test_parse_timeline_rejects(value: object) -> None:
    with pytest.raises(PlanningError) as e:
        parse_timeline(value)
    assert e.value.code == "invalid_target"


def test_make_target_time() -> None:
    t = make_target(point_in_time="2016-09-28T10:00Z")
    assert t == Target(TargetKind.TIME, datetime(2016, 9, 28, 10, tzinfo=UTC), True, "latest", "promote")
    assert make_target(point_in_time="2016-09-28T10:00Z", exclusive=True, timeline="2").inclusive is False
    assert make_target(point_in_time="2016-09-28T10:00Z", timeline="2").timeline == 2


def test_make_target_accepts_aware_datetime_and_rejects_naive() -> None:
    aware = datetime(2016, 9, 28, 12, tzinfo=timezone(timedelta(hours=2)))
    assert make_target(point_in_time=aware).time == datetime(2016, 9, 28, 10, tzinfo=UTC)
    with pytest.raises(PlanningError):
        make_target(point_in_time=datetime(2016, 9, 28, 12))


def test_make_target_lsn() -> None:
    t = make_target(lsn="16/B374D848", exclusive=True)
    assert (t.kind, t.lsn, t.inclusive) == (TargetKind.LSN, Lsn.parse("16/B374D848"), False)
    with pytest.raises(PlanningError) as e:
        make_target(lsn="16-B374D848")
    assert e.value.code == "invalid_target"


def test_make_target_latest_and_immediate() -> None:
    assert make_target(latest=True, timeline=1) == Target(TargetKind.LATEST, None, True, 1)
    imm = make_target(immediate=True)
    assert (imm.kind, imm.timeline, imm.value) == (TargetKind.IMMEDIATE, "current", None)
    with pytest.raises(PlanningError):
        make_target(immediate=True, timeline=3)
    with pytest.raises(PlanningError):
        make_target(latest=True, exclusive=True)


@pytest.mark.parametrize("kwargs", [
    {}, {"latest": True, "immediate": True}, {"point_in_time": "2016-09-28T10:00Z", "lsn": "0/1"},
    {"point_in_time": "2016-09-28T10:00Z", "latest": True},
])
def test_make_target_needs_exactly_one(kwargs: dict[str, object]) -> None:
    with pytest.raises(PlanningError) as e:
        make_target(**kwargs)  # type: ignore[arg-type]
    assert e.value.code == "invalid_target"
    assert "exactly one" in e.value.message
