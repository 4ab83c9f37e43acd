"""Turn a RecoveryPlan into the files PostgreSQL reads (LAYOUTS §8.3, §9). Pure text, no I/O. The
restore_command itself is the layout's (:mod:`scheduler.layouts`).

PG >= 12: ``postgresql.auto.conf`` settings plus an empty ``recovery.signal``.
PG <= 11: ``recovery.conf`` (where ``recovery_target_timeline = 'current'`` cannot be written and
the default is current, so ``latest`` must be explicit).
"""
from __future__ import annotations

from datetime import datetime

from recovery.lsn import Lsn
from recovery.plan import RecoveryPlan, pg_major
from recovery.timefmt import conf_time


def quote(value: str) -> str:
    """A postgresql.conf string literal: backslashes and quotes escaped (guc-file.l GUC_scanstr).

    >>> print(quote("it's a\\\\path"))
    'it''s a\\\\path'
    """
    escaped = (value.replace("\\", "\\\\").replace("'", "''")
               .replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t"))
    return f"'{escaped}'"


def conf_value(value: object) -> str:
    if isinstance(value, bool):
        return quote("true" if value else "false")
    if isinstance(value, datetime):
        return quote(conf_time(value))
    if isinstance(value, (Lsn, int, str)):
        return quote(str(value))
    raise TypeError(f"cannot render setting value {value!r}")


def settings_for(plan: RecoveryPlan, restore_cmd: str, pg_version: int | None) -> list[tuple[str, str]]:
    """Ordered (name, rendered value) lines for a PostgreSQL major version."""
    major = pg_major(pg_version if pg_version is not None else plan.pg_version)
    old = major is not None and major <= 11
    out = [("restore_command", quote(restore_cmd))]
    for name, value in plan.recovery_settings:
        if name == "recovery_target_timeline" and old and value == "current":
            continue   # PG <= 11: the default, and it cannot be written explicitly
        out.append((name, conf_value(value)))
    return out


def render_files(plan: RecoveryPlan, restore_cmd: str, pg_version: int | None = None) -> dict[str, str]:
    """File name -> content to place in the restored data directory (unknown version: PG >= 12)."""
    major = pg_major(pg_version if pg_version is not None else plan.pg_version)
    label = " ".join(plan.backup.label.split())
    header = (f"# backup-catalog recovery settings: backup {label}, "
              f"timeline path {'->'.join(map(str, plan.timeline_path))}\n")
    body = header + "".join(f"{k} = {v}\n" for k, v in settings_for(plan, restore_cmd, major))
    if major is not None and major <= 11:
        return {"recovery.conf": body}
    return {"postgresql.auto.conf": body, "recovery.signal": ""}
