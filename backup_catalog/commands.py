"""CLI command handlers: thin wrappers over the use cases (backup_catalog.usecases), rendering with rich or JSON."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from backup_catalog import documents, service
from backup_catalog.settings import Settings
from backup_catalog.usecases import instances
from recovery.model import InstanceRef, Storage

Handler = Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, int]]
err = Console(stderr=True)
out = Console()


def _print_json(doc: Any) -> None:
    print(json.dumps(doc, default=str))


async def cmd_db(args: argparse.Namespace, settings: Settings) -> int:
    """``db init`` / ``db upgrade`` (the same: create or upgrade) and ``db status`` (reads only)."""
    from catalog import migrate
    pool = await service.open_catalog(settings, upgrade=False)
    try:
        if args.db_cmd == "status":
            status = await migrate.read_status(pool)
        else:
            result = await migrate.upgrade(pool)
    finally:
        await pool.close()
    if args.db_cmd != "status":
        if args.json:
            _print_json(result.to_dict())
        else:
            print(result.describe())
        return 0
    if status.newer:
        raise migrate.too_new(status)
    doc = status.to_dict()
    if args.json:
        _print_json(doc)
    else:
        print(f"schema version: {doc['version'] if doc['version'] is not None else 'none (empty catalog)'}"
              f" (this release: {doc['head']})")
        print("pending: " + (", ".join(m.label for m in status.pending) or "nothing"))
    return 0 if doc["up_to_date"] else 1


async def cmd_db_upgrade_quietly(args: argparse.Namespace, settings: Settings) -> int:
    """What ``serve`` runs before it starts: the upgrade (logged), or the refusal of a newer schema."""
    pool = await service.open_catalog(settings)
    await pool.close()
    return 0


async def cmd_instances(args: argparse.Namespace, settings: Settings) -> int:
    pool = await service.open_catalog(settings)
    try:
        if args.inst_cmd == "add":
            created, _ = await instances.register(
                pool, InstanceRef(args.instance, args.space, args.name, org_guid=args.org),
                Storage(args.bucket, args.prefix, args.layout, args.stanza))
            doc = {"instance_guid": args.instance, "created": created}
        elif args.inst_cmd == "rename":
            await instances.rename(pool, args.guid, args.new_name)
            doc = {"instance_guid": args.guid, "name": args.new_name}
        elif args.inst_cmd == "delete":
            from backup_catalog.usecases import purge
            doc = {**await purge.delete_instance(pool, settings, args.guid), "deleted": True}
        elif args.inst_cmd in ("hold", "unhold"):
            from backup_catalog.usecases import purge
            doc = await (purge.hold(pool, settings, args.guid, args.reason) if args.inst_cmd == "hold"
                         else purge.unhold(pool, settings, args.guid))
        else:
            recs = await instances.list_all(pool)
            rows = [documents.instance_to_dict(r) for r in recs]
            if args.json:
                _print_json({"instances": rows})
            else:
                t = Table("instance", "space", "name", "layout", "bucket/prefix", "deleted")
                for r in rows:
                    t.add_row(r["instance_guid"], r["space_guid"], r["name"], r["layout"] or "auto",
                              f"{r['bucket']}/{r['prefix']}", r["deleted_at"] or "")
                out.print(t)
            return 0
    finally:
        await pool.close()
    if args.json:
        _print_json(doc)
    else:
        print(" ".join(f"{k}={v}" for k, v in doc.items()))
    return 0


async def cmd_scan(args: argparse.Namespace, settings: Settings) -> int:
    pool = await service.open_catalog(settings)
    try:
        if args.instance:
            await instances.get(pool, args.instance)
            guids = [args.instance]
        else:
            guids = [r.guid for r in await instances.list_all(pool)]
        show = sys.stderr.isatty() and not args.json
        with Progress(TextColumn("scanning"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=err, disable=not show, transient=True) as prog:
            task = prog.add_task("scan", total=len(guids))
            outcomes = await service.scan_many(pool, settings, guids, full=args.full,
                                               on_done=lambda o: prog.advance(task))
    finally:
        await pool.close()
    outcomes.sort(key=lambda o: o.instance_guid)
    if args.json:
        _print_json({"scans": [dataclasses.asdict(o) for o in outcomes]})
    else:
        t = Table("instance", "result", "backups", "wal runs", "unknown", "issues", "requests", "seconds")
        for o in outcomes:
            t.add_row(o.instance_guid, "ok" if o.ok else f"[red]{o.code}[/red]", str(o.backups),
                      str(o.wal_runs), str(o.unknown_objects), str(o.issues), str(o.requests), f"{o.seconds:.2f}")
        out.print(t)
        for o in outcomes:
            if not o.ok:
                err.print(f"[red]{o.instance_guid}[/red]: {o.message}")
    return 0 if all(o.ok for o in outcomes) else 1


async def _on_catalog(settings: Settings, work: Callable[[Any], Awaitable[Any]]) -> Any:
    """Run ``work(pool)`` on the catalog and close the pool whatever happens."""
    pool = await service.open_catalog(settings)
    try:
        return await work(pool)
    finally:
        await pool.close()


async def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from api.app import run_server
    await run_server(settings, args.host, args.port)
    return 0


async def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from backup_catalog import demo
    return await demo.run(settings)


async def cmd_purge(args: argparse.Namespace, settings: Settings) -> int:
    from backup_catalog.cmd_purge import cmd_purge as handler
    return await handler(args, settings)


def dispatch(args: argparse.Namespace) -> Handler:
    from backup_catalog import cmd_coverage
    cmd_report = cmd_coverage.run
    if args.cmd == "restore":
        from backup_catalog.cmd_restore import cmd_restore
        return cmd_restore
    table: dict[str, Handler] = {"db": cmd_db, "instances": cmd_instances, "scan": cmd_scan,
                                 "report": cmd_report,
                                 "serve": cmd_serve, "demo": cmd_demo, "purge": cmd_purge}
    if args.cmd == "drill":
        from backup_catalog.cmd_drill import cmd_drill
        return cmd_drill
    return table[args.cmd]
