"""The one plan document type: JSON both ways, exactly; what is not a plan is named; older plans completed."""
from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recovery.lsn import Lsn
from recovery.plandoc import PlanDoc, PlanDocError
from tests.support.plans import DROP, plan, raw_plan

# -- the plan document, read through recovery.plandoc.PlanDoc ----------------------------------------------------

def test_a_plan_reads_and_writes_back() -> None:
    p = plan()
    assert p.backup.label == "20260101-000000F" and p.storage.prefix == "pgbackrest"
    assert p.to_json() == {**raw_plan(), "storage": {**raw_plan()["storage"], "prefix": "pgbackrest"}}


@pytest.mark.parametrize(("over", "words"), [
    ({"backup": None}, "backup is not an object"), ({"backup": {"label": ""}}, "backup.type"),
    ({"backup": {**raw_plan()["backup"], "label": ""}}, "backup.label"),
    ({"files": {}}, "files"), ({"files": {"postgresql.auto.conf": 3}}, "files.postgresql.auto.conf"),
    ({"files": {"../etc/passwd": "x"}}, "never writes"), ({"target": "latest"}, "target is not an object"),
    ({"target": {**raw_plan()["target"], "kind": "soon"}}, "target.kind 'soon' is not one of time, lsn"),
    ({"timeline_path": []}, "timeline_path"), ({"timeline_path": [0]}, "timeline_path"),
    ({"timeline_path": ["1"]}, r"timeline_path\[0\]"),
    ({"wal": {}}, "wal.last_segment"), ({"wal": {"last_segment": "xyz", "segments": 1}}, "segment name"),
    ({"storage": None, "source": {"layout": "pgbackrest"}}, "storage"),
    ({"storage": {"layout": "tarball", "bucket": "b", "prefix": "", "stanza": None}}, "storage.layout 'tarball'"),
    ({"pg_version": "15"}, "pg_version '15' is not an integer"), ({"pg_version": True}, "pg_version"),
    ({"pg_version": 0}, "pg_version"),
    ({"backup": {**raw_plan()["backup"], "stop_lsn": "0-3"}}, "backup.stop_lsn '0-3' is not an LSN"),
    ({"backup": {**raw_plan()["backup"], "stop_time": "yesterday"}}, "backup.stop_time"),
    ({"replay": {"mode": "end_of_wal", "end_lsn": "nope", "end_segment": None, "last_commit_time": None}},
     "replay.end_lsn"),
    ({"replay": {"mode": "end_of_wal", "end_lsn": None, "end_segment": None, "last_commit_time": None}},
     "replay.end_lsn"),
    ({"replay": {"mode": "sometime"}}, "replay.mode"), ({"end_of_wal": "yes"}, "end_of_wal"),
    ({"restore_command": DROP}, "no restore_command"),
])
def test_what_is_not_a_plan_is_named(over: dict[str, Any], words: str) -> None:
    with pytest.raises(PlanDocError, match=words):
        plan(**over)


@pytest.mark.parametrize("doc", [None, 1, "plan", [raw_plan()]])
def test_non_objects_are_not_plans(doc: object) -> None:
    with pytest.raises(PlanDocError, match="JSON object"):
        PlanDoc.from_json(doc)


@given(st.dictionaries(st.sampled_from(sorted(raw_plan())),
                       st.none() | st.booleans() | st.integers() | st.text(max_size=5) | st.lists(st.integers()),
                       max_size=6))
@settings(max_examples=200, deadline=None)
def test_garbage_members_are_a_plan_doc_error_never_a_crash(over: dict[str, Any]) -> None:
    try:
        plan(**over)
    except PlanDocError as e:
        assert str(e).startswith(("the plan", "a plan"))


def test_pg_version() -> None:
    assert plan(pg_version=15).pg_version == 15
    assert plan(pg_version=None).pg_version is None and plan(pg_version=DROP).pg_version is None


# -- what replay must reach ------------------------------------------------------------------------------------

def test_replay_member() -> None:
    e = plan(replay={"mode": "end_of_wal", "end_lsn": "0/A000120", "end_segment": "00000002000000000000000A",
                     "last_commit_time": "t"}).replay
    assert (e.mode, e.end, e.end_segment, e.last_commit_time) == (
        "end_of_wal", Lsn.parse("0/A000120"), "00000002000000000000000A", "t")
    assert plan(replay={"mode": "target", "end_lsn": None}).replay.mode == "target"


@pytest.mark.parametrize(("line", "mode"), [
    ("recovery_target_time = '2026-01-01 00:00:00+00'", "target"),
    ("recovery_target_lsn = '0/3000000'", "target"), ("recovery_target = 'immediate'", "target"),
    ("recovery_target_name = 'x'", "target"), ("recovery_target_xid = '7'", "target"),
    ("recovery_target_timeline = 'latest'", "end_of_wal"), ("recovery_target_action = 'promote'", "end_of_wal"),
    ("recovery_target_inclusive = 'false'", "end_of_wal"), ("# recovery_target_time = 'x'", "end_of_wal"),
])
def test_replay_of_an_older_plan_from_its_files(line: str, mode: str) -> None:
    p = plan(replay=DROP, end_of_wal=DROP, files={"postgresql.auto.conf": f"restore_command = 'x'\n{line}\n",
                                                  "recovery.signal": ""})
    assert p.replay.mode == mode and p.end_of_wal == (mode == "end_of_wal")
    if mode == "end_of_wal":
        assert p.replay.end == Lsn.parse("0/A000001") and p.replay.end_segment == "00000002000000000000000A"


def test_replay_of_an_older_plan_reads_recovery_conf_and_rejects_bad_segment() -> None:
    assert plan(replay=DROP, files={"recovery.conf": "recovery_target_lsn = '0/1'\n"}).replay.mode == "target"
    with pytest.raises(PlanDocError, match="segment name"):
        plan(replay=DROP, wal={"first_segment": None, "last_segment": "xyz", "segments": 1})
