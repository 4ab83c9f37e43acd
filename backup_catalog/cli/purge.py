"""``backup-catalog purge [plan|run] [--json]``: the CLI face of :mod:`backup_catalog.usecases.purge`.

Exit 0 (also when nothing is due, and when instances are refused), 1 when an instance failed or the purge
could not run (e.g. PURGE_AWS_* unset). Progress with rich on a terminal; ``--json``: one document.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from backup_catalog.cli import render
from backup_catalog.settings import Settings
from backup_catalog.usecases import purge
from backup_catalog.usecases.scan import default_holder
from catalog.connect import open_catalog
from scheduler.clients import purge_s3_client, s3_client

err = Console(stderr=True)
out = render.console()


async def cmd_purge(args: argparse.Namespace, settings: Settings) -> int:
    pool = await open_catalog(settings)
    try:
        if args.purge_cmd == "run":
            show = sys.stderr.isatty() and not args.json
            async with purge_s3_client(settings) as client:
                with Progress(TextColumn("purging {task.description}"), BarColumn(), MofNCompleteColumn(),
                              DownloadColumn(), TimeElapsedColumn(), console=err, disable=not show) as prog:
                    tasks: dict[str, Any] = {}

                    def on_progress(ev: purge.Progress) -> None:
                        if ev.guid not in tasks:
                            tasks[ev.guid] = prog.add_task(ev.guid, total=ev.objects_total)
                        prog.update(tasks[ev.guid], completed=ev.objects_done, total=ev.objects_total)
                        if ev.phase in ("refused", "failed"):
                            prog.console.print(f"[yellow]{ev.guid}: {ev.phase}[/yellow]: {ev.message}")

                    report = await purge.run(pool, settings, client, holder=default_holder() + ":cli",
                                             on_progress=on_progress)
        else:
            async with s3_client(settings) as client:
                report = await purge.plan(pool, settings, client)
    finally:
        await pool.close()
    doc = report.to_json()
    if args.json:
        print(json.dumps(doc))
    else:
        render.print_purge(doc, out)
    return 1 if report.failed else 0


