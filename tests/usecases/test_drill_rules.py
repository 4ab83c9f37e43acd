"""Pure rules of drills: slots, due-ness, points, scratch budget, a plan's segments, checksums."""
from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from backup_catalog.usecases import drill_rules as r
from recovery.lsn import Lsn
from recovery.timeline import TimelinePath, TimelineSwitch
from recovery.windows import CutKind, Window

S = 16 << 20
T = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_slot_contains_now_and_is_stable_per_instance() -> None:
    for guid in ("a", "b", "c" * 40):
        for k in range(0, 200_000, 3_337):
            now = T + timedelta(seconds=k)
            s = r.drill_slot(now, 3600, guid)
            assert s.start <= now < s.start + timedelta(hours=1)
            assert r.drill_slot(s.start, 3600, guid) == s                  # its own start is in it
            assert r.drill_slot(s.start + timedelta(hours=1), 3600, guid).index == s.index + 1


def test_offsets_spread_instances_over_the_interval() -> None:
    offsets = {r.instance_offset(f"guid-{i}", 86400) for i in range(200)}
    assert len(offsets) > 190 and max(offsets) - min(offsets) > 0.8 * 86400


@pytest.mark.parametrize("last, due", [(None, True), (timedelta(seconds=-1), True), (timedelta(0), False),
                                       (timedelta(minutes=5), False)])
def test_due_when_nothing_requested_in_the_slot(last: timedelta | None, due: bool) -> None:
    s = r.drill_slot(T, 3600, "x")
    assert r.is_due(s, None if last is None else s.start + last) is due


def _w(path: tuple[int, ...], a: int, b: int, kind: CutKind = CutKind.END, exact: bool = True) -> Window:
    return Window(path, Lsn(a * S), T + timedelta(minutes=a), Lsn(b * S), T + timedelta(minutes=b), exact, ("B",), kind)


def test_points_newest_end_on_even_slots_others_in_turn() -> None:
    ws = [_w((1,), 2, 5, CutKind.HOLE), _w((1,), 8, 12), _w((1, 2), 2, 20)]
    others = r.other_points(ws)
    assert [(p.time, p.timeline) for p in others] == [(T + timedelta(minutes=5, seconds=-1), 1),
                                                      (T + timedelta(minutes=12, seconds=-1), 1)]
    assert "hole" in others[0].why and "branch" in others[1].why
    assert r.choose_point(0, ws) == r.LATEST and r.choose_point(4, ws) == r.LATEST
    assert r.choose_point(1, ws) == others[0] and r.choose_point(3, ws) == others[1]
    assert r.choose_point(5, ws) == others[0]


def test_points_skip_approximate_ends_and_fall_back_to_latest() -> None:
    ws = [_w((1,), 2, 5, CutKind.HOLE, exact=False), _w((1,), 8, 12)]
    assert r.other_points(ws) == []
    assert r.choose_point(1, ws) == r.LATEST
    assert r.choose_point(1, []) == r.LATEST


def test_short_window_point_is_its_middle() -> None:
    w = Window((1,), Lsn(S), T, Lsn(2 * S), T + timedelta(seconds=1), True, ("B",), CutKind.HOLE)
    newest = _w((1,), 3, 9)
    (p,) = r.other_points([w, newest])
    assert p.time == T + timedelta(milliseconds=500)


@pytest.mark.parametrize("size, repo, segs, want", [
    (100 << 20, None, 3, (100 << 20) + 4 * S),
    (None, 10 << 20, 0, (30 << 20) + S),
    (None, None, 1000, (r.MIN_WAL_ROOM + 1) * S),
])
def test_estimate(size: int | None, repo: int | None, segs: int, want: int) -> None:
    assert r.estimate_scratch_bytes(size, repo, segs, S) == want


def test_budget_counts_running_drills_and_free_disk() -> None:
    assert r.budget_refusal(10, 0, 10, None) is None
    why = r.budget_refusal(6, 5, 10, None)
    assert why is not None and "budget is 10 B (5 B in use" in why
    why = r.budget_refusal(2 << 30, 0, 10 << 30, 1 << 30)
    assert why is not None and "only 1.0 GiB free" in why


def test_plan_segments_follow_the_timeline_path() -> None:
    # TL2 forks from TL1 at 0/5800000 (inside segment 5): PostgreSQL reads segment 5 from TL2
    path = TimelinePath.build(2, (TimelineSwitch(1, Lsn(5 * S + 0x800000), "x"),))
    names = r.plan_segments(path, 3, 7, S)
    assert names == ["000000010000000000000003", "000000010000000000000004", "000000020000000000000005",
                     "000000020000000000000006", "000000020000000000000007"]


def test_checksum_matches() -> None:
    data = bytes(range(256)) * 100
    assert r.checksum_matches(data, hashlib.sha1(data).hexdigest())
    assert not r.checksum_matches(data[:-1] + b"\x00", hashlib.sha1(data).hexdigest())


def test_failure_reason_names_the_segment_once() -> None:
    assert r.failure_reason("verify", "checksum mismatch in segment 0000000100000000000000AA", "0000000100000000000000AA") \
        == "verify: checksum mismatch in segment 0000000100000000000000AA"
    assert r.failure_reason("recover", "stopped early", "X") == "recover: stopped early (segment X)"


def test_drill_points_for_exact_targets() -> None:
    from backup_catalog.usecases.drill import point_doc, point_from_request
    from recovery.errors import PlanningError
    from recovery.target import TargetKind, make_target
    x = point_from_request(None, None, before_xid="748")
    assert (x.kind, x.xid, x.name) == ("xid", 748, None)
    assert make_target(**x.target_kwargs()).kind is TargetKind.XID
    assert point_doc(x)["value"] == 748
    n = point_from_request(None, 2, restore_point="before-migration")
    assert (n.kind, n.name, n.timeline) == ("name", "before-migration", 2)
    assert point_doc(n)["value"] == "before-migration"
    assert make_target(**n.target_kwargs()).name == "before-migration"
    with pytest.raises(PlanningError):
        point_from_request(None, None, before_xid="nope")
