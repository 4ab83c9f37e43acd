"""``backup-catalog instances add|rename|delete|list|hold|unhold``: the registered instances."""
from __future__ import annotations

import argparse
from typing import Any

import asyncpg

from backup_catalog.cli import render
from backup_catalog.cli.common import on_catalog, print_json
from backup_catalog.formats import documents
from backup_catalog.settings import Settings
from backup_catalog.usecases import instances, purge
from recovery.model import InstanceRef, Storage


async def cmd_instances(args: argparse.Namespace, settings: Settings) -> int:
    if args.inst_cmd == "list":
        recs = await on_catalog(settings, instances.list_all)
        rows = [documents.instance_to_dict(r) for r in recs]
        if args.json:
            print_json({"instances": rows})
        else:
            render.print_instances(rows, render.console())
        return 0
    doc = await on_catalog(settings, lambda pool: _change(pool, args, settings))
    if args.json:
        print_json(doc)
    else:
        print(" ".join(f"{k}={v}" for k, v in doc.items()))
    return 0


async def _change(pool: asyncpg.Pool, args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    if args.inst_cmd == "add":
        created, _ = await instances.register(
            pool, InstanceRef(args.instance, args.space, args.name, org_guid=args.org),
            Storage(args.bucket, args.prefix, args.layout, args.stanza))
        return {"instance_guid": args.instance, "created": created}
    if args.inst_cmd == "rename":
        await instances.rename(pool, args.guid, args.new_name)
        return {"instance_guid": args.guid, "name": args.new_name}
    if args.inst_cmd == "delete":
        return {**await purge.delete_instance(pool, settings, args.guid), "deleted": True}
    if args.inst_cmd == "hold":
        return await purge.hold(pool, settings, args.guid, args.reason)
    return await purge.unhold(pool, settings, args.guid)
