"""The terminal-speed reading of the four settings ``backups`` and ``plan`` use (:class:`PlanConfig`):
``CATALOG_DSN`` (or ``CATALOG_DSN_FILE``), ``S3_ENDPOINT_URL``, ``DELETED_RETENTION_DAYS`` and
``PURGE_GRACE_HOURS``, by :class:`~backup_catalog.settings.Settings`' rules, without importing pydantic
(about 140 ms, as much as the whole command takes otherwise).

Nothing is stated twice: the two undo defaults are declared here and ``Settings`` uses them; the DSN and
the endpoint are read by :mod:`backup_catalog.settings.files` like every setting; the undo values are
checked by the rule ``Settings`` declares for them (``ge=0``, finite). ``tests/test_settings.py`` holds the
two readings side by side.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from backup_catalog.settings.files import SettingsFileError, setting

DELETED_RETENTION_DAYS = 30.0     # a deleted instance stays clonable this long
PURGE_GRACE_HOURS = 24.0          # between "due" and deletion


@dataclass(frozen=True, slots=True)
class PlainSecret:
    value: str

    def get_secret_value(self) -> str:
        return self.value

    def __repr__(self) -> str:
        return "PlainSecret('**********')"


@dataclass(frozen=True, slots=True)
class PlanSettings:
    """What ``backups`` and ``plan`` read (it satisfies :class:`backup_catalog.settings.PlanConfig`)."""

    catalog_dsn: PlainSecret | None
    s3_endpoint_url: str | None
    deleted_retention_days: float = DELETED_RETENTION_DAYS
    purge_grace_hours: float = PURGE_GRACE_HOURS


def plan_settings() -> PlanSettings:
    """:raises SettingsFileError: a ``CATALOG_DSN_FILE`` that cannot be used, or a bad undo value
    (code ``bad_settings``, naming the variable)."""
    dsn = setting("catalog_dsn")
    return PlanSettings(catalog_dsn=PlainSecret(dsn) if dsn is not None else None,
                        s3_endpoint_url=setting("s3_endpoint_url"),
                        deleted_retention_days=_non_negative("deleted_retention_days", DELETED_RETENTION_DAYS),
                        purge_grace_hours=_non_negative("purge_grace_hours", PURGE_GRACE_HOURS))


def _non_negative(name: str, default: float) -> float:
    """A non-negative finite number (``Field(ge=0, allow_inf_nan=False)`` in Settings)."""
    raw = setting(name)
    if raw is None:
        return default
    try:
        v = float(raw)
    except ValueError:
        v = -1.0
    if not math.isfinite(v) or v < 0:
        raise SettingsFileError(f"{name.upper()}: not a non-negative number: {raw!r}")
    return v
