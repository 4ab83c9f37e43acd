"""Catalog rows for pure-API tests: hand-built scan results stored with ``repo.save_scan``.

Archive clock: ``T0`` = 2026-01-01 12:00Z (tests/recovery/builders). Instances register and rename at
explicit times so that name resolution at a target time is deterministic.
"""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

import asyncpg

from catalog import repo
from catalog.scanresult import ScanResult, WalMode
from recovery.model import ArchiveSnapshot, InstanceRef, Storage
from tests.recovery.builders import T0, at, backup_at, edge, make_snapshot

SPACE = "space-a"
OTHER_SPACE = "space-b"
A, B = "inst-a", "inst-b"


def scan_result(snap: ArchiveSnapshot, *, finished: datetime | None = None) -> ScanResult:
    done = finished or at(200)
    return ScanResult(layout=snap.layout, full=True, started_at=done - timedelta(seconds=1), finished_at=done,
                      stanza="main", seg_size=snap.seg_size, pg_version=snap.pg_version, backups=snap.backups,
                      histories=dict(snap.histories), wal_mode=WalMode.REPLACE, wal_runs=snap.runs,
                      edges=snap.edges)


def storage(bucket: str = "backups", prefix: str = "pgbackrest/") -> Storage:
    return Storage(bucket=bucket, prefix=prefix, layout="pgbackrest", stanza="main")


SNAP_A = make_snapshot()   # F1 stops at T0+1min, WAL to T0+30min
SNAP_B = replace(make_snapshot(), backups=(backup_at("G1", 2, 61),), edges=(edge(1, 9, 90),))  # T0+61..90min


async def seed_history(pool: asyncpg.Pool) -> None:
    """A held "production" from T0-1h and was renamed "legacy" at T0+40min; B took "production" at
    T0+50min (windows T0+61..90min) and was deleted at T0+100min. A also exists in no other space."""
    await repo.register_instance(pool, InstanceRef(A, SPACE, "production"), storage(prefix="a/"),
                                 at=T0 - timedelta(hours=1))
    await repo.save_scan(pool, A, scan_result(SNAP_A))
    await repo.rename_instance(pool, A, "legacy", at=at(40))
    await repo.register_instance(pool, InstanceRef(B, SPACE, "production"), storage(prefix="b/"), at=at(50))
    await repo.save_scan(pool, B, scan_result(SNAP_B))
    await repo.delete_instance(pool, B, at=at(100))


def iso(minutes: float) -> str:
    return at(minutes).strftime("%Y-%m-%dT%H:%M:%SZ")
