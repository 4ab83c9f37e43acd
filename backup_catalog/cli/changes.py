"""``backup-catalog changes --space S --name N --from T1 --to T2 [--json]`` (issue 20): what happened
between two times, read from the archived WAL (destructive transactions first, restore points)."""
from __future__ import annotations

import argparse
from typing import Any

from backup_catalog.cli.common import UsageError, on_catalog, print_json
from backup_catalog.settings import Settings
from backup_catalog.usecases import changes
from recovery.target import parse_time


async def cmd_changes(args: argparse.Namespace, settings: Settings) -> int:
    start, end = parse_time(args.from_), parse_time(args.to)   # invalid_target: exit 2 naming the value
    changes.check_range(start, end)                             # invalid_range: exit 2
    most = settings.changes_max_transactions
    if args.limit is not None and not 1 <= args.limit <= most:
        raise UsageError(f"--limit must be from 1 to {most} (CHANGES_MAX_TRANSACTIONS)")
    from scheduler.clients import s3_client  # botocore: only when WAL is read

    async def work(pool: Any) -> dict[str, Any]:
        async with s3_client(settings) as client:
            return await changes.changes(pool, client, args.space, args.name, start, end,
                                         max_segments=settings.changes_max_segments,
                                         mass_rows=settings.changes_mass_rows, limit=args.limit or most)

    doc = await on_catalog(settings, work)
    if args.json:
        print_json(doc)
    else:
        from backup_catalog.cli import render  # rich: only for a person at a terminal
        render.print_changes(doc, render.console())
    return 0
