"""The `backup-catalog` command line (contract in DESIGN.md): parse, read the settings, run one command.

Exit codes: 0 success; 2 usage/bad input; 3 plan refused; 1 other errors. With --json stdout holds exactly
one JSON document (success or error).

Start-up speed: a command module is imported only when its command runs (:data:`COMMANDS`), and each
imports what only it needs (rich, botocore, aiohttp, the executor) itself, so ``backups --json`` and
``plan --json`` load asyncpg, the settings model and the planner and little else. The parser (and ``--help``)
loads neither the settings model nor the planner.
"""
from __future__ import annotations

import argparse
import gc
import importlib
import logging
import sys
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from backup_catalog.cli.common import EXIT_ERROR, EXIT_REFUSED, EXIT_USAGE, USAGE_CODES, emit_error, print_json
from backup_catalog.cli.parser import build_parser
from backup_catalog.settings.files import SettingsFileError
from recovery.errors import PitrError, PlanningError

if TYPE_CHECKING:
    from backup_catalog.settings import Settings

# a command's handler takes the Settings (or a protocol of what it reads, which Settings satisfies)
Handler = Callable[[argparse.Namespace, Any], Coroutine[Any, Any, int]]

# command -> (module of backup_catalog.cli, handler); the module is imported when its command runs
COMMANDS: dict[str, tuple[str, str]] = {
    "db": ("db", "cmd_db"),
    "instances": ("instances", "cmd_instances"),
    "scan": ("backups", "cmd_scan"),
    "backups": ("backups", "cmd_backups"),
    "plan": ("backups", "cmd_plan"),
    "changes": ("changes", "cmd_changes"),
    "restore": ("restore", "cmd_restore"),
    "drill": ("drill", "cmd_drill"),
    "purge": ("purge", "cmd_purge"),
    "report": ("report", "cmd_report"),
    "serve": ("serve", "cmd_serve"),
    "demo": ("demo", "cmd_demo"),
    "events": ("events", "cmd_events"),
    "config": ("config", "cmd_config"),
}
SHORT_LIVED = frozenset({"backups", "plan"})    # read-only, one after another at a terminal


def handler_of(cmd: str) -> Handler:
    module, name = COMMANDS[cmd]
    handler: Handler = getattr(importlib.import_module(f"backup_catalog.cli.{module}"), name)
    return handler


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.cmd in SHORT_LIVED:
        gc.disable()  # a short-lived command frees everything at exit; collections during imports only cost time
    settings = _settings(args)
    if settings is None:
        return EXIT_USAGE
    handler = handler_of(args.cmd)
    if getattr(args, "plain", False):
        from backup_catalog.cli import render  # --plain only: the terminal renderer (rich) is needed anyway
        render.set_plain(True)
    if args.cmd == "serve":
        from backup_catalog.cli.serve import before_loop  # serve only: the HTTP stack, uvloop, the workers
        code = before_loop(args, settings, _run)
        if code is not None:
            return code
    return _run(args, lambda: handler(args, settings))


def _settings(args: argparse.Namespace) -> Settings | None:
    """The settings from the environment, or None after printing why they are unusable."""
    from pydantic import ValidationError  # with Settings: the parser and --help never load pydantic

    from backup_catalog.settings import load_settings  # Settings: pydantic, as the line above
    try:
        return load_settings()
    except ValidationError as e:
        emit_error(args, "bad_settings", "invalid settings in the environment: " + "; ".join(
            f"{'.'.join(map(str, err['loc'])).upper()}: {err['msg']}" for err in e.errors()))
    except SettingsFileError as e:
        emit_error(args, "bad_settings", f"invalid settings in the environment: {e}")
    return None


def listed(details: dict[str, Any]) -> list[str]:
    """What an exact-target refusal lists (restore points known or repeated, the nearest known xids).

    >>> listed({"nearest": [{"xid": 747, "commit_time": "2026-12-07T10:00:00Z"}]})
    ['known: transaction 747 committed at 2026-12-07T10:00:00Z']
    """
    out = []
    for key, what in (("occurrences", "occurrence"), ("known", "known"), ("elsewhere", "off this path")):
        for d in details.get(key) or []:
            if isinstance(d, dict) and "name" in d:
                out.append(f"{what}: restore point {d['name']!r} at {d.get('time')} (LSN {d.get('lsn')}, "
                           f"timeline {d.get('timeline')})")
    for d in details.get("nearest") or []:
        if isinstance(d, dict):
            when = f" at {d['commit_time']}" if d.get("commit_time") else ""
            out.append(f"known: transaction {d.get('xid')} committed{when}")
    return out


def _run(args: argparse.Namespace, work: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run a command, turning its errors into the CLI contract (exit code; one JSON document with --json)."""
    import asyncio  # a command runs: not loaded for --help or a usage error

    try:
        return asyncio.run(work())
    except KeyboardInterrupt:
        return 130
    except PlanningError as e:
        from recovery.jsonout import refusal_to_dict  # the planner's documents: not loaded by --help or the parser

        doc = refusal_to_dict(e)
        if args.json:
            print_json(doc)
        else:
            print(f"refused ({e.code}): {e.message}", file=sys.stderr)
            for w in doc["error"].get("windows", []):
                print(f"  recoverable: timeline path {w['timeline_path']}: {w['from']} .. {w['to']}", file=sys.stderr)
            for line in listed(doc["error"].get("details") or {}):
                print(f"  {line}", file=sys.stderr)
        return EXIT_USAGE if e.code in USAGE_CODES else EXIT_REFUSED
    except PitrError as e:
        code = getattr(e, "code", "error")
        emit_error(args, code, str(e))
        return EXIT_USAGE if code in USAGE_CODES else EXIT_ERROR
    except OSError as e:
        emit_error(args, "os_error", str(e))
        return EXIT_ERROR


if __name__ == "__main__":
    raise SystemExit(main())
