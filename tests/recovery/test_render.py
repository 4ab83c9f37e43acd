from __future__ import annotations

import json
from dataclasses import replace

import pytest

from recovery.errors import PlanningError
from recovery.jsonout import refusal_to_dict, window_to_dict
from recovery.plan import RecoveryPlan, plan_recovery
from recovery.plandoc import PlanDoc
from recovery.render import quote, render_files
from recovery.target import make_target
from recovery.timefmt import conf_time
from tests.recovery.builders import NOW, at, forked_snapshot, holed_snapshot, make_snapshot, plan_to_dict

PGBR = 'pgbackrest --stanza=main archive-get %f "%p"'


def _plan(target_kwargs: dict[str, object], snap: object = None) -> RecoveryPlan:
    return plan_recovery(snap or make_snapshot(), make_target(**target_kwargs), now=NOW, pg_version=15)  # type: ignore[arg-type]


@pytest.mark.parametrize("value, expected", [
    ("plain", "'plain'"),
    ("it's", "'it''s'"),
    ("C:\\wal\\%f", "'C:\\\\wal\\\\%f'"),
    ('cp "/a b/%f" %p', "'cp \"/a b/%f\" %p'"),
    ("two\nlines", "'two\\nlines'"),
])
def test_quote_follows_postgresql_conf_rules(value: str, expected: str) -> None:
    assert quote(value) == expected


def test_conf_time_is_utc_with_microseconds() -> None:
    from datetime import datetime, timedelta, timezone
    t = datetime(2016, 9, 28, 12, 0, 0, 5, tzinfo=timezone(timedelta(hours=2)))
    assert conf_time(t) == "2016-09-28 10:00:00.000005+00"


def test_golden_pg15_time_exclusive() -> None:
    p = _plan({"point_in_time": "2026-01-01T12:10:00.25Z", "exclusive": True})
    assert render_files(p, PGBR, 15) == {
        "postgresql.auto.conf":
            "# backup-catalog recovery settings: backup F1, timeline path 1\n"
            "restore_command = 'pgbackrest --stanza=main archive-get %f \"%p\"'\n"
            "recovery_target_time = '2026-01-01 12:10:00.250000+00'\n"
            "recovery_target_inclusive = 'false'\n"
            "recovery_target_timeline = 'latest'\n"
            "recovery_target_action = 'promote'\n",
        "recovery.signal": "",
    }


def test_golden_pg11_time() -> None:
    p = _plan({"point_in_time": "2026-01-01T12:10Z", "timeline": 2}, forked_snapshot())
    assert render_files(p, "wal-g wal-fetch \"%f\" \"%p\"", 11) == {
        "recovery.conf":
            "# backup-catalog recovery settings: backup B1, timeline path 1->2\n"
            "restore_command = 'wal-g wal-fetch \"%f\" \"%p\"'\n"
            "recovery_target_time = '2026-01-01 12:10:00.000000+00'\n"
            "recovery_target_timeline = '2'\n"
            "recovery_target_action = 'promote'\n",
    }


def test_golden_immediate_pg11_omits_current_pg15_writes_it() -> None:
    p = _plan({"immediate": True})
    old = render_files(p, PGBR, 110005)["recovery.conf"]
    assert old.splitlines()[1:] == ["restore_command = 'pgbackrest --stanza=main archive-get %f \"%p\"'",
                                    "recovery_target = 'immediate'", "recovery_target_action = 'promote'"]
    new = render_files(p, PGBR, 150004)["postgresql.auto.conf"]
    assert "recovery_target_timeline = 'current'\n" in new and "recovery_target = 'immediate'\n" in new


def test_golden_latest_and_lsn() -> None:
    latest = render_files(_plan({"latest": True}), PGBR, 15)["postgresql.auto.conf"]
    assert latest.splitlines()[1:] == ["restore_command = 'pgbackrest --stanza=main archive-get %f \"%p\"'",
                                       "recovery_target_timeline = 'latest'"]
    lsn = render_files(_plan({"lsn": "0/5000010", "exclusive": True}), PGBR, 12)["postgresql.auto.conf"]
    assert lsn.splitlines()[2:] == ["recovery_target_lsn = '0/5000010'", "recovery_target_inclusive = 'false'",
                                    "recovery_target_timeline = 'latest'", "recovery_target_action = 'promote'"]
    # PG <= 11 needs 'latest' explicitly (its default is current)
    assert "recovery_target_timeline = 'latest'" in render_files(_plan({"latest": True}), PGBR, 9)["recovery.conf"]


def test_unknown_version_uses_the_plans_version() -> None:
    p = _plan({"latest": True})
    assert set(render_files(p, PGBR)) == {"postgresql.auto.conf", "recovery.signal"}
    assert set(render_files(replace(p, pg_version=10), PGBR)) == {"recovery.conf"}


def test_plan_to_dict_matches_contract() -> None:
    p = _plan({"point_in_time": "2026-01-01T12:10:00.5+00:00"}, holed_snapshot())
    files = render_files(p, PGBR, 15)
    d = plan_to_dict(p, files, PGBR)
    assert set(d) >= {"backup", "target", "timeline_path", "wal", "window", "restore_command", "files", "warnings"}
    assert d["backup"] == {"label": "F1", "type": "full", "status": "done", "timeline": 1, "start_lsn": "0/2000028",
                           "stop_lsn": "0/2000138", "start_time": "2026-01-01T12:00:30Z",
                           "stop_time": "2026-01-01T12:01:00Z", "depends_on": []}
    assert d["target"] == {"kind": "time", "value": "2026-01-01T12:10:00.500000Z", "inclusive": True,
                           "timeline": "latest", "action": "promote"}
    assert d["timeline_path"] == [1]
    assert d["wal"] == {"first_segment": "000000010000000000000002", "last_segment": "000000010000000000000005",
                        "segments": 4}
    assert (d["window"]["earliest"], d["window"]["latest"], d["window"]["latest_is_exact"]) == (
        "2026-01-01T12:01:00Z", "2026-01-01T12:20:00Z", True)
    assert d["files"] == files and d["restore_command"] == PGBR and d["warnings"] == []
    assert d["replay"] == {"mode": "target", "end_lsn": None, "end_segment": "000000010000000000000005",
                           "last_commit_time": None}
    assert list(d) == ["source", "storage", "pg_version", "backup", "target", "timeline_path", "wal", "window",
                       "end_of_wal", "replay", "restore_command", "files", "warnings"]
    assert "undo_until" not in d["source"]     # deleted instances only
    assert PlanDoc.from_json(json.loads(json.dumps(d))).to_json() == d


def test_plan_to_dict_replay_member() -> None:
    latest = plan_to_dict(_plan({"latest": True}, holed_snapshot()), {}, PGBR)["replay"]
    assert latest == {"mode": "end_of_wal", "end_lsn": "0/14000100", "end_segment": "000000010000000000000014",
                      "last_commit_time": "2026-01-01T13:30:00Z"}
    lsn = plan_to_dict(_plan({"lsn": "0/5000010"}), {}, PGBR)["replay"]
    assert lsn == {"mode": "target", "end_lsn": "0/5000010", "end_segment": "000000010000000000000005",
                   "last_commit_time": None}
    imm = plan_to_dict(_plan({"immediate": True}), {}, PGBR)["replay"]
    assert imm["mode"] == "target" and imm["end_lsn"] == "0/2000138"


def test_refusal_to_dict_is_json_with_windows_and_details() -> None:
    with pytest.raises(PlanningError) as e:
        plan_recovery(holed_snapshot(), make_target(point_in_time=at(30).isoformat()), now=NOW, pg_version=15)
    d = refusal_to_dict(e.value)
    assert d["error"]["code"] == "wal_gap"
    assert [(w["from"], w["to"]) for w in d["error"]["windows"]] == [
        ("2026-01-01T12:01:00Z", "2026-01-01T12:20:00Z"), ("2026-01-01T12:50:00Z", "2026-01-01T13:30:00Z")]
    assert d["error"]["details"]["first_missing"] == "000000010000000000000006"
    assert d["error"]["details"]["horizon_time"] == "2026-01-01T12:20:00Z"
    assert d["error"]["details"]["window_after"]["backups"] == ["F2"]
    json.loads(json.dumps(d))


def test_window_to_dict() -> None:
    from recovery.timeline import TimelinePath
    from recovery.windows import compute_windows
    snap = forked_snapshot()
    w = compute_windows(snap, TimelinePath.build(2, snap.histories[2]))[0]
    assert window_to_dict(w) == {"timeline_path": [1, 2], "from": "2026-01-01T12:01:00Z", "to": "2026-01-01T13:00:00Z",
                                 "to_is_exact": True, "from_lsn": "0/2000138", "to_lsn": "0/13000000",
                                 "ends_at": "end", "backups": ["B1"]}
