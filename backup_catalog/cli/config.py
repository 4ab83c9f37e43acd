"""``backup-catalog config check``: validate the environment and print the effective settings, secrets masked
(:mod:`backup_catalog.settings.check`, :func:`backup_catalog.settings.reference.effective`). Exit 0 when
usable (warnings allowed), 2 when a problem is found; settings that do not parse are exit 2 before this runs."""
from __future__ import annotations

import argparse
import sys

from backup_catalog.cli.common import EXIT_USAGE, print_json
from backup_catalog.settings import Settings
from backup_catalog.settings.check import check
from backup_catalog.settings.reference import effective


async def cmd_config(args: argparse.Namespace, settings: Settings) -> int:
    found = check(settings)
    values = effective(settings)
    if args.json:
        print_json({"ok": not found.problems, "problems": found.problems, "warnings": found.warnings,
                    "settings": values})
    else:
        for name, value in values.items():
            print(f"{name}={value}")
        for w in found.warnings:
            print(f"warning: {w}", file=sys.stderr)
        for p in found.problems:
            print(f"problem: {p}", file=sys.stderr)
        print("settings are usable" if not found.problems else f"{len(found.problems)} problem(s)", file=sys.stderr)
    return EXIT_USAGE if found.problems else 0
