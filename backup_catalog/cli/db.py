"""``backup-catalog db init|upgrade|status``: the catalog schema (:mod:`catalog.migrate`)."""
from __future__ import annotations

import argparse

from backup_catalog.cli.common import print_json
from backup_catalog.settings import Settings
from catalog import migrate
from catalog.connect import open_catalog


async def cmd_db(args: argparse.Namespace, settings: Settings) -> int:
    """``db init`` / ``db upgrade`` (the same: create or upgrade) and ``db status`` (reads only)."""
    pool = await open_catalog(settings, upgrade=False)
    try:
        if args.db_cmd == "status":
            status = await migrate.read_status(pool)
        else:
            result = await migrate.upgrade(pool)
    finally:
        await pool.close()
    if args.db_cmd != "status":
        if args.json:
            print_json(result.to_dict())
        else:
            print(result.describe())
        return 0
    if status.newer:
        raise migrate.too_new(status)
    doc = status.to_dict()
    if args.json:
        print_json(doc)
    else:
        print(f"schema version: {doc['version'] if doc['version'] is not None else 'none (empty catalog)'}"
              f" (this release: {doc['head']})")
        print("pending: " + (", ".join(m.label for m in status.pending) or "nothing"))
    return 0 if doc["up_to_date"] else 1


async def upgrade_quietly(settings: Settings) -> int:
    """What ``serve`` runs before it starts: the upgrade (logged), or the refusal of a newer schema."""
    pool = await open_catalog(settings)
    await pool.close()
    return 0
