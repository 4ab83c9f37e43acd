"""``backup-catalog db init``: create or upgrade the catalog schema."""
from __future__ import annotations

import argparse

from backup_catalog.cli.common import on_catalog
from backup_catalog.settings import Settings


async def cmd_db(args: argparse.Namespace, settings: Settings) -> int:
    async def nothing(pool: object) -> None:    # opening the catalog applies the schema
        return None
    await on_catalog(settings, nothing)
    print("catalog schema is up to date")
    return 0
