"""``backup-catalog scan``, ``backups`` and ``plan``: reading the archives into the catalog, and what the
catalog knows about a service name (its backups, WAL and windows; a clone plan at a point in time).

``backups`` and ``plan`` are run one after another at a terminal, so they start like a small tool: the
S3 client, rich and the scan's progress display are imported only by the commands that print or scan with
them, and the pool is small (``light``, :func:`catalog.connect.open_catalog`). ``make bench`` measures them beside ``pgbackrest info``
(bench/sidebyside.py).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import TYPE_CHECKING, Any

from backup_catalog.cli.common import clone_request, on_catalog, print_json
from backup_catalog.settings import PlanConfig
from backup_catalog.usecases import backups, instances, plan

if TYPE_CHECKING:
    from backup_catalog.settings import Settings


async def cmd_scan(args: argparse.Namespace, settings: Settings) -> int:
    # scan only: rich's progress display and the S3 client (botocore) are not loaded by backups and plan
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from backup_catalog.cli import render  # rich, as above
    from backup_catalog.usecases import scan  # the scanner and its S3 client (botocore)

    async def work(pool: Any) -> list[Any]:
        if args.instance:
            await instances.get(pool, args.instance)
            guids = [args.instance]
        else:
            guids = [r.guid for r in await instances.list_all(pool)]
        show = sys.stderr.isatty() and not args.json
        with Progress(TextColumn("scanning"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=err, disable=not show, transient=True) as prog:
            task = prog.add_task("scan", total=len(guids))
            outs = await scan.scan_listed(pool, settings, guids, full=args.full,
                                          on_done=lambda o: prog.advance(task))
        if settings.wal_index_enabled and settings.wal_index_bytes_per_hour > 0 and not args.no_index:
            # the WAL index follows the scan (issue 20): what was just catalogued, within the hourly budget
            from backup_catalog.usecases import walindex
            done = [o.instance_guid for o in outs if o.ok]
            indexed.extend(await walindex.index_listed(pool, settings, done, scan.default_holder()))
        return outs

    err = Console(stderr=True)
    indexed: list[Any] = []
    outcomes = await on_catalog(settings, work)
    outcomes.sort(key=lambda o: o.instance_guid)
    if args.json:
        print_json({"scans": [dataclasses.asdict(o) for o in outcomes],
                    "wal_index": [dataclasses.asdict(o) for o in sorted(indexed, key=lambda o: o.instance_guid)]})
    else:
        render.print_scans(outcomes, render.console(), err)
        for o in indexed:
            what = (f"skipped ({o.skipped})" if o.skipped else
                    f"{o.indexed} segment(s) read, {o.restore_points} restore point(s)")
            err.print(f"WAL index {o.instance_guid}: {what}, {o.lag} segment(s) still to read"
                      + (f"; {len(o.problems)} unreadable" if o.problems else ""), markup=False, highlight=False)
    return 0 if all(o.ok for o in outcomes) else 1


def _show(args: argparse.Namespace, doc: Any, pretty: str) -> int:
    if args.json:
        print_json(doc)
    else:
        from backup_catalog.cli import render  # only for a person at a terminal: --json never loads rich
        getattr(render, pretty)(doc, render.console())
    return 0


async def cmd_backups(args: argparse.Namespace, settings: PlanConfig) -> int:
    doc = await on_catalog(settings, lambda pool: backups.backups_doc(pool, args.space, args.name, settings),
                           light=True)
    return _show(args, doc, "print_backups")


async def cmd_plan(args: argparse.Namespace, settings: PlanConfig) -> int:
    request = clone_request(args)
    doc = await on_catalog(settings, lambda pool: plan.plan_doc(pool, settings, args.space, request), light=True)
    if args.json:
        print_json(doc.to_json())
        return 0
    return _show(args, doc, "print_plan")
