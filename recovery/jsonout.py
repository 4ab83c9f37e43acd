"""Refusals, windows and archives as the JSON documents of DESIGN.md (the plan: :mod:`recovery.plandoc`).

Times are ``YYYY-MM-DDTHH:MM:SS[.ffffff]Z``, LSNs ``X/Y``, segments their 24-hex names.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from recovery.docjson import document_json
from recovery.errors import PlanningError
from recovery.lsn import Lsn
from recovery.model import ArchiveSnapshot, Backup
from recovery.plandoc import PlanBackup
from recovery.timefmt import iso, iso_offset
from recovery.wal import segment_name
from recovery.windows import CutKind, Window, holes


def json_lsn(lsn: Lsn | None) -> str | None:
    return None if lsn is None else str(lsn)


def window_to_dict(w: Window) -> dict[str, Any]:
    return {"timeline_path": list(w.timeline_path), "from": iso(w.from_time), "to": iso(w.to_time),
            "to_is_exact": w.to_is_exact, "from_lsn": str(w.from_lsn), "to_lsn": str(w.to_lsn),
            "ends_at": w.end_kind.value, "backups": list(w.backups)}


def backup_to_dict(b: Backup) -> dict[str, Any]:
    """A backup as the plan document and the Backups document show it."""
    return document_json(PlanBackup.of(b))


def backup_entry(b: Backup) -> dict[str, Any]:
    """A Backups-document entry: the backup, flagging what is only approximate or failed."""
    d = backup_to_dict(b)
    if not b.stop_time_exact:
        d["stop_time_exact"] = False
    if b.error:
        d["error"] = b.error
    return d


def archive_to_dict(snap: ArchiveSnapshot, windows: Mapping[tuple[int, ...], Sequence[Window]]) -> dict[str, Any]:
    """The archive part of a Backups-document instance: backups, WAL runs, holes, conflicting and corrupt
    segments, windows."""
    s = snap.seg_size
    return {
        "backups": [backup_entry(b) for b in sorted(snap.backups, key=lambda b: (b.stop_lsn or Lsn(0), b.label))],
        "wal": [{"timeline": r.timeline, "first_segment": segment_name(r.timeline, r.first, s),
                 "last_segment": segment_name(r.timeline, r.last, s), "segments": r.count} for r in snap.runs],
        "holes": [{"timeline": t, "first_missing": segment_name(t, a, s), "last_missing": segment_name(t, b, s)}
                  for t, a, b in holes(snap.runs)],
        "conflicts": [{"timeline": t, "segment": segment_name(t, n, s)} for t, n in snap.conflicts],
        "corrupt": [{"timeline": c.timeline, "segment": segment_name(c.timeline, c.segno, s), "reason": c.reason}
                    for c in snap.corrupt],
        "windows": [window_to_dict(w) for ws in windows.values() for w in ws],
    }


def _time_in(v: object) -> datetime | None:
    if v is None:
        return None
    if not isinstance(v, str):
        raise ValueError(f"not a time: {v!r}")
    t = datetime.fromisoformat(v)
    if t.tzinfo is None:
        raise ValueError(f"time without a zone: {v!r}")
    return t


def windows_to_json(windows: Mapping[tuple[int, ...], Sequence[Window]]) -> list[Any]:
    """Windows per path as exact JSON (LSNs as integers, times with microseconds and zone) for storage."""
    return [[list(tlis), [[w.from_lsn.value, iso_offset(w.from_time), w.to_lsn.value, iso_offset(w.to_time),
                           w.to_is_exact, list(w.backups), w.end_kind.value] for w in ws]]
            for tlis, ws in windows.items()]


def _labels(v: object) -> tuple[str, ...]:
    if not isinstance(v, list | tuple):
        raise ValueError("backup labels must be a list")
    t = tuple(v)
    if not all(type(x) is str for x in t):
        raise ValueError("backup labels must be strings")
    return t


def windows_from_json(data: object) -> dict[tuple[int, ...], list[Window]]:
    """Inverse of :func:`windows_to_json`. :raises ValueError: the data is not such a document."""
    if not isinstance(data, list):
        raise ValueError("windows: expected a list")
    out: dict[tuple[int, ...], list[Window]] = {}
    try:
        for tlis, ws in data:
            path = tuple(int(t) for t in tlis)
            out[path] = [Window(path, Lsn(int(a)), _time_in(at), Lsn(int(b)), _time_in(bt), bool(exact),
                                _labels(labels), CutKind(kind))
                         for a, at, b, bt, exact, labels, kind in ws]
    except (TypeError, ValueError) as e:
        raise ValueError(f"windows: {e}") from None
    return out


def to_json_value(v: object) -> Any:
    """Details values (datetimes, LSNs, windows, nested containers) as JSON-ready data."""
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, datetime):
        return iso(v)
    if isinstance(v, Lsn):
        return str(v)
    if isinstance(v, Window):
        return window_to_dict(v)
    if isinstance(v, Mapping):
        return {str(k): to_json_value(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set, frozenset)):
        return [to_json_value(x) for x in v]
    return str(v)


def refusal_to_dict(err: PlanningError) -> dict[str, Any]:
    body: dict[str, Any] = {"code": err.code, "message": err.message,
                            "windows": [window_to_dict(w) for w in err.windows if isinstance(w, Window)]}
    if err.details:
        body["details"] = to_json_value(err.details)
    return {"error": body}
