"""The `backup-catalog` command line (contract in DESIGN.md).

Exit codes: 0 success; 2 usage/bad input; 3 plan refused; 1 other errors. With --json stdout holds exactly
one JSON document (success or error).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Callable, Coroutine
from typing import Any, NoReturn

from backup_catalog.envfiles import SettingsFileError
from recovery.errors import PitrError, PlanningError

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_REFUSED = 0, 1, 2, 3
_USAGE_CODES = {"unknown_service", "unknown_instance", "invalid_target", "invalid_lsn", "bad_input", "conflict",
                "invalid_name", "usage", "schema_newer"}


class UsageError(PitrError):
    code = "usage"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        if "--json" in sys.argv:
            print(json.dumps({"error": {"code": "usage", "message": message}}))
        else:
            print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="backup-catalog", description="Backup catalog and PITR planner for PostgreSQL archives in S3")
    p.add_argument("-v", "--verbose", action="store_true")
    # prog given: argparse would otherwise build a help formatter (and import shutil, lzma, bz2) per level
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser, prog=p.prog)

    dbp = sub.add_parser("db", help="catalog database").add_subparsers(
        dest="db_cmd", required=True, prog=f"{p.prog} db")
    dbp.add_parser("init", help="create or upgrade the catalog schema (idempotent)").add_argument(
        "--json", action="store_true")
    dbp.add_parser("upgrade", help="apply the pending schema migrations (under an advisory lock)").add_argument(
        "--json", action="store_true")
    dbp.add_parser("status", help="the catalog's schema version and the pending migrations "
                                  "(exit 0 current, 1 upgrade pending)").add_argument("--json", action="store_true")

    ip = sub.add_parser("instances", help="registered instances").add_subparsers(
        dest="inst_cmd", required=True, prog=f"{p.prog} instances")
    a = ip.add_parser("add", help="register an instance and its archive location")
    a.add_argument("--instance", required=True)
    a.add_argument("--space", required=True)
    a.add_argument("--name", required=True)
    a.add_argument("--bucket", required=True)
    a.add_argument("--prefix", required=True)
    a.add_argument("--layout", default="auto", choices=["auto", "pgbackrest", "barman", "walg", "wale"])
    a.add_argument("--stanza")
    a.add_argument("--org")
    a.add_argument("--json", action="store_true")
    r = ip.add_parser("rename")
    r.add_argument("guid")
    r.add_argument("new_name")
    r.add_argument("--json", action="store_true")
    d = ip.add_parser("delete")
    d.add_argument("guid")
    d.add_argument("--json", action="store_true")
    lp = ip.add_parser("list")
    lp.add_argument("--json", action="store_true")
    ho = ip.add_parser("hold", help="operator hold: never purge this instance's archive")
    ho.add_argument("guid")
    ho.add_argument("--reason")
    ho.add_argument("--json", action="store_true")
    uh = ip.add_parser("unhold", help="lift the operator hold")
    uh.add_argument("guid")
    uh.add_argument("--json", action="store_true")

    s = sub.add_parser("scan", help="scan archives into the catalog")
    s.add_argument("--instance")
    s.add_argument("--full", action="store_true", help="full reconcile (notices deletions)")
    s.add_argument("--json", action="store_true")

    b = sub.add_parser("backups", help="backups, WAL coverage and windows of a service name")
    b.add_argument("--space", required=True)
    b.add_argument("--name", required=True)
    b.add_argument("--json", action="store_true")

    pl = sub.add_parser("plan", help="plan a clone at a point in time")
    pl.add_argument("--space", required=True)
    pl.add_argument("--clone-from", required=True)
    g = pl.add_mutually_exclusive_group(required=True)
    g.add_argument("--point-in-time")
    g.add_argument("--lsn")
    g.add_argument("--latest", action="store_true")
    g.add_argument("--immediate", action="store_true")
    pl.add_argument("--timeline", default="latest")
    pl.add_argument("--exclusive", action="store_true")
    pl.add_argument("--pg-version", type=int)
    pl.add_argument("--json", action="store_true")

    from backup_catalog import cli_parsers
    cli_parsers.add_restore(sub)

    rp = sub.add_parser("report", help="operator reports").add_subparsers(
        dest="report_cmd", required=True, prog=f"{p.prog} report")
    cli_parsers.add_coverage(rp.add_parser("coverage", help="backup coverage of the fleet, worst first"))

    pu = sub.add_parser("purge", help="delete the archives of deleted instances whose undo period is over")
    pu.add_argument("purge_cmd", nargs="?", choices=["plan", "run"], default="plan",
                    help="plan (default): dry run; run: delete, with PURGE_AWS_* credentials")
    pu.add_argument("--json", action="store_true")

    sv = sub.add_parser("serve", help="HTTP API + scheduler")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=8080)
    sv.add_argument("--workers", type=int, default=1,
                    help="worker processes sharing the port (SO_REUSEPORT); e.g. one per core")

    sub.add_parser("demo", help="one-command tour: make a real archive, scan it, answer a clone request")
    cli_parsers.add_drill(sub)
    return p


def _emit_error(args: argparse.Namespace, code: str, message: str, extra: dict[str, Any] | None = None) -> None:
    if getattr(args, "json", False):
        print(json.dumps({"error": {"code": code, "message": message, **(extra or {})}}, default=str))
    else:
        print(f"error ({code}): {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.cmd in ("backups", "plan"):
        return _quick(args)
    from pydantic import ValidationError

    from backup_catalog.settings import load_settings
    try:
        settings = load_settings()
    except ValidationError as e:
        _emit_error(args, "bad_settings", "invalid settings in the environment: " + "; ".join(
            f"{'.'.join(map(str, err['loc'])).upper()}: {err['msg']}" for err in e.errors()))
        return EXIT_USAGE
    except SettingsFileError as e:
        _emit_error(args, "bad_settings", f"invalid settings in the environment: {e}")
        return EXIT_USAGE
    if args.cmd == "serve":
        from backup_catalog.listen import refusal
        why = refusal(args.host, args.port, settings.default_credentials())
        if why is not None:
            _emit_error(args, "default_credentials", why)
            return EXIT_USAGE
    from backup_catalog import commands
    handler = commands.dispatch(args)
    if args.cmd == "serve":
        # the schema upgraded (once, under the advisory lock) before any worker starts; a newer one refused
        rc = _run(args, lambda: commands.cmd_db_upgrade_quietly(args, settings))
        if rc != 0:
            return rc
        # uvloop (libuv) for the long-running service: socket I/O is most of a request's CPU time
        import uvloop
        uvloop.install()
        if args.workers > 1:
            from api.app import serve_workers
            return serve_workers(settings, args.host, args.port, args.workers)
    return _run(args, lambda: handler(args, settings))


def _quick(args: argparse.Namespace) -> int:
    """``backups`` and ``plan``: the terminal-speed path (backup_catalog.quick: no pydantic, no rich for --json)."""
    import gc
    gc.disable()      # a short-lived command frees everything at exit; collections during imports only cost time
    from backup_catalog import quick
    try:
        settings = quick.QuickSettings.from_env()
    except SettingsFileError as e:
        _emit_error(args, "bad_settings", f"invalid settings in the environment: {e}")
        return EXIT_USAGE
    handler = quick.dispatch(args)
    return _run(args, lambda: handler(args, settings))


def _run(args: argparse.Namespace, work: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run a command, turning its errors into the CLI contract (exit code; one JSON document with --json)."""
    try:
        return asyncio.run(work())
    except KeyboardInterrupt:
        return 130
    except PlanningError as e:
        from recovery.jsonout import refusal_to_dict
        doc = refusal_to_dict(e)
        if args.json:
            print(json.dumps(doc, default=str))
        else:
            print(f"refused ({e.code}): {e.message}", file=sys.stderr)
            for w in doc["error"].get("windows", []):
                print(f"  recoverable: timeline path {w['timeline_path']}: {w['from']} .. {w['to']}", file=sys.stderr)
        return EXIT_USAGE if e.code in _USAGE_CODES else EXIT_REFUSED
    except PitrError as e:
        code = getattr(e, "code", "error")
        _emit_error(args, code, str(e))
        return EXIT_USAGE if code in _USAGE_CODES else EXIT_ERROR
    except OSError as e:
        _emit_error(args, "os_error", str(e))
        return EXIT_ERROR


if __name__ == "__main__":
    raise SystemExit(main())
