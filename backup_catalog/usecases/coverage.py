"""Use case: the operator coverage report (every instance graded ok / warning / critical), for the CLI's
``report coverage`` and ``GET /reports/coverage[.html]``. Grading and rendering: :mod:`backup_catalog.report`."""
from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from backup_catalog import report
from backup_catalog.settings import Settings
from backup_catalog.usecases.snapshots import SnapshotCache


async def coverage(pool: asyncpg.Pool, settings: Settings, *, now: datetime | None = None,
                   cache: SnapshotCache | None = None) -> list[dict[str, Any]]:
    """One graded row per catalogued instance (deleted ones included), worst status first."""
    return await report.coverage(pool, settings, now=now, cache=cache)


to_csv = report.to_csv
to_html = report.to_html
print_table = report.print_table
