"""Plan documents for the tests, as JSON data and through the one plan type (recovery.plandoc.PlanDoc)."""
from __future__ import annotations

from typing import Any

from recovery.plandoc import PlanDoc


def raw_plan(**over: Any) -> dict[str, Any]:
    """A plan document as JSON data (the catalog's plans carry every member; see tests/recovery/test_render)."""
    doc: dict[str, Any] = {
        "source": {"instance_guid": "g", "space_guid": "s", "name": "orders", "deleted_at": None,
                   "layout": "pgbackrest", "resolution": "r", "resolution_rule": "current_holder"},
        "storage": {"layout": "pgbackrest", "bucket": "bkt", "prefix": "/pgbackrest/", "stanza": "main"},
        "pg_version": 15,
        "backup": {"label": "20260101-000000F", "type": "full", "status": "done", "timeline": 1,
                   "start_lsn": "0/3000028", "stop_lsn": "0/3000050", "start_time": "2026-01-01T00:00:00Z",
                   "stop_time": "2026-01-01T00:01:00Z", "depends_on": []},
        "target": {"kind": "latest", "value": None, "inclusive": True, "timeline": "latest", "action": "promote"},
        "timeline_path": [1, 2],
        "wal": {"first_segment": "000000010000000000000003", "last_segment": "00000002000000000000000A",
                "segments": 8},
        "window": {"earliest": "2026-01-01T00:01:00Z", "latest": "2026-01-01T01:00:00Z", "latest_is_exact": True,
                   "earliest_lsn": "0/3000050", "latest_lsn": "0/A000120"},
        "end_of_wal": True,
        "replay": {"mode": "end_of_wal", "end_lsn": "0/A000120", "end_segment": "00000002000000000000000A",
                   "last_commit_time": None},
        "restore_command": "pgbackrest --stanza=main archive-get %f \"%p\"",
        "files": {"postgresql.auto.conf": "restore_command = 'x'\nrecovery_target_timeline = 'latest'\n",
                  "recovery.signal": ""},
        "warnings": [],
    }
    doc.update(over)
    return {k: v for k, v in doc.items() if v is not DROP}


DROP = object()


def plan(**over: Any) -> PlanDoc:
    return PlanDoc.from_json(raw_plan(**over))
