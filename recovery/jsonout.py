"""Plans, refusals and windows as the JSON documents of DESIGN.md (the caller adds "source").

Times are ``YYYY-MM-DDTHH:MM:SS[.ffffff]Z``, LSNs ``X/Y``, segments their 24-hex names.
"""
from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from recovery.errors import PlanningError
from recovery.lsn import Lsn
from recovery.model import Backup
from recovery.plan import RecoveryPlan, fmt_time
from recovery.target import Target
from recovery.windows import Window


def json_time(t: datetime | None) -> str | None:
    """
    >>> from datetime import timezone
    >>> json_time(datetime(2016, 9, 28, 10, 0, tzinfo=timezone.utc)), json_time(None)
    ('2016-09-28T10:00:00Z', None)
    """
    return None if t is None else fmt_time(t)


def json_lsn(lsn: Lsn | None) -> str | None:
    return None if lsn is None else str(lsn)


def window_to_dict(w: Window) -> dict[str, Any]:
    return {"timeline_path": list(w.timeline_path), "from": json_time(w.from_time), "to": json_time(w.to_time),
            "to_is_exact": w.to_is_exact, "from_lsn": str(w.from_lsn), "to_lsn": str(w.to_lsn),
            "ends_at": w.end_kind.value, "backups": list(w.backups)}


def backup_to_dict(b: Backup) -> dict[str, Any]:
    return {"label": b.label, "type": b.type.value, "status": b.status.value, "timeline": b.timeline,
            "start_lsn": json_lsn(b.start_lsn), "stop_lsn": json_lsn(b.stop_lsn),
            "start_time": json_time(b.start_time), "stop_time": json_time(b.stop_time),
            "depends_on": list(b.depends_on)}


def target_to_dict(t: Target) -> dict[str, Any]:
    value: str | None
    if isinstance(t.value, datetime):
        value = json_time(t.value)
    elif isinstance(t.value, Lsn):
        value = str(t.value)
    else:
        value = None
    return {"kind": t.kind.value, "value": value, "inclusive": t.inclusive, "timeline": t.timeline,
            "action": t.action}


def to_json_value(v: object) -> Any:
    """Details values (datetimes, LSNs, windows, nested containers) as JSON-ready data."""
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, datetime):
        return json_time(v)
    if isinstance(v, Lsn):
        return str(v)
    if isinstance(v, Window):
        return window_to_dict(v)
    if isinstance(v, Mapping):
        return {str(k): to_json_value(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set, frozenset)):
        return [to_json_value(x) for x in v]
    return str(v)


def plan_to_dict(plan: RecoveryPlan, files: Mapping[str, str], restore_command: str) -> dict[str, Any]:
    w = plan.window
    return {
        "backup": backup_to_dict(plan.backup),
        "target": target_to_dict(plan.target),
        "timeline_path": list(plan.timeline_path),
        "wal": {"first_segment": plan.first_segment, "last_segment": plan.last_segment,
                "segments": plan.segments},
        "window": {"earliest": json_time(w.from_time), "latest": json_time(w.to_time),
                   "latest_is_exact": w.to_is_exact, "earliest_lsn": str(w.from_lsn),
                   "latest_lsn": str(w.to_lsn)},
        "end_of_wal": plan.end_of_wal,
        "restore_command": restore_command,
        "files": dict(files),
        "warnings": list(plan.warnings),
    }


def refusal_to_dict(err: PlanningError) -> dict[str, Any]:
    body: dict[str, Any] = {"code": err.code, "message": err.message,
                            "windows": [window_to_dict(w) for w in err.windows if isinstance(w, Window)]}
    if err.details:
        body["details"] = to_json_value(err.details)
    return {"error": body}
