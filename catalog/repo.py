"""The one import for everything the catalog stores (``from catalog import repo``): instances and their name
history live in :mod:`catalog.names`, scan results and scan state in :mod:`catalog.scans`, snapshots and plan
inputs in :mod:`catalog.snapshots`, leases and the run log in :mod:`catalog.leases`; all re-exported here.

Every function takes an asyncpg Pool or Connection first; writes run in one transaction.
Rows become domain values only in :mod:`catalog.rows`.
"""
from __future__ import annotations

from catalog.db import Db
from catalog.db import transaction as transaction
from catalog.leases import check_lease as check_lease
from catalog.leases import finish_run as finish_run
from catalog.leases import record_run as record_run
from catalog.leases import release_lease as release_lease
from catalog.leases import release_leases as release_leases
from catalog.leases import renew_leases as renew_leases
from catalog.leases import try_acquire_lease as try_acquire_lease
from catalog.leases import try_acquire_leases as try_acquire_leases
from catalog.names import CURRENT_SCAN_CACHE as CURRENT_SCAN_CACHE
from catalog.names import delete_instance as delete_instance
from catalog.names import get_instance as get_instance
from catalog.names import holders_with_scan_cache as holders_with_scan_cache
from catalog.names import list_instances as list_instances
from catalog.names import name_holders as name_holders
from catalog.names import register_instance as register_instance
from catalog.names import rename_instance as rename_instance
from catalog.names import resolve_name as resolve_name
from catalog.scans import load_scan_state as load_scan_state
from catalog.scans import record_scan_failure as record_scan_failure
from catalog.scans import save_edges as save_edges
from catalog.scans import save_scan as save_scan
from catalog.snapshots import PlanInputs as PlanInputs
from catalog.snapshots import backups as backups
from catalog.snapshots import load_plan_inputs as load_plan_inputs
from catalog.snapshots import load_snapshot as load_snapshot
from catalog.snapshots import load_versioned_snapshot as load_versioned_snapshot
from catalog.snapshots import snapshot_version as snapshot_version
from catalog.snapshots import wal_conflicts as wal_conflicts
from catalog.snapshots import wal_runs as wal_runs

TABLES = ("instances", "instance_names", "backups", "timelines", "wal_runs", "wal_conflicts",
          "window_edges", "scan_state", "scan_cache", "scan_leases", "scan_runs", "drills", "purges",
          "scan_cache_facts", "wal_segment_summaries", "wal_restore_points", "wal_index_cursors")


async def table_counts(db: Db) -> dict[str, int]:
    """Row count per catalog table (footprint reports)."""
    sql = " UNION ALL ".join(f"SELECT '{t}' AS t, count(*) AS n FROM {t}" for t in TABLES)
    return {r["t"]: int(r["n"]) for r in await db.fetch(sql)}
