"""Builders for catalog tests: every field defaulted, override what the test is about."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from catalog.scanresult import ScanResult, WalMode
from recovery.model import Backup, InstanceRef, Layout, Storage, WalRun
from tests.recovery.builders import make_backup

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SPACE = "space-1"


def t(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def ref(guid: str = "inst-1", name: str = "production", space: str = SPACE, **kw: Any) -> InstanceRef:
    return InstanceRef(instance_guid=guid, space_guid=space, name=name, **kw)


def storage(**kw: Any) -> Storage:
    base: dict[str, Any] = {"bucket": "backups", "prefix": "pgbackrest/", "layout": "auto", "stanza": "main"}
    return Storage(**(base | kw))


def backup(label: str = "20260101-000000F", **kw: Any) -> Backup:
    """The one Backup builder (tests.recovery.builders.make_backup) with a catalog row's usual fields."""
    base: dict[str, Any] = dict(label=label, start_time=t(0), stop_time=t(0.1), size_bytes=1 << 20,
                                system_id=7300000000000000001, seg_size=None)
    return make_backup(**(base | kw))


def scan(runs: tuple[WalRun, ...] = (), mode: WalMode = WalMode.MERGE, **kw: Any) -> ScanResult:
    base: dict[str, Any] = dict(layout=Layout.PGBACKREST, full=mode is WalMode.REPLACE, started_at=t(1),
                                finished_at=t(1.01), wal_mode=mode, wal_runs=runs, seg_size=16 << 20,
                                pg_version=150000)
    return ScanResult(**(base | kw))
