"""``backup-catalog report coverage``: the same page, CSV and HTML as the HTTP routes (use case
``backup_catalog.usecases.coverage``)."""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from backup_catalog.cli import render
from backup_catalog.cli.common import UsageError
from backup_catalog.formats import report
from backup_catalog.settings import Settings
from backup_catalog.usecases import coverage
from catalog.connect import open_catalog


async def cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    filters = coverage.Filters(status=args.status, space=args.space, org=args.org, name=args.name,
                               layout=args.layout, deleted=args.deleted)
    pool = await open_catalog(settings)
    try:
        if args.csv:
            async for chunk in report.csv_stream(coverage.stream(pool, settings, filters)):
                sys.stdout.write(chunk)
            return 0
        doc = await coverage.page(pool, settings, filters, limit=args.limit, cursor=args.cursor)
    except coverage.InvalidQuery as e:
        raise UsageError(str(e)) from None
    finally:
        await pool.close()
    if args.json:
        print(json.dumps(doc, default=str))
    elif args.html:
        await asyncio.to_thread(Path(args.html).write_text, report.to_html(doc), encoding="utf-8")
        print(f"wrote {args.html}")
    else:
        render.print_page(doc, render.console())
    return 0
