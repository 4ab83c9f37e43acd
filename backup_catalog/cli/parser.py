"""The `backup-catalog` command line's grammar (contract in DESIGN.md): every subcommand's arguments, and
nothing of their handlers (rich, pydantic, the executor), so that parsing costs nothing for the
terminal-speed commands.

Exit codes: 0 success; 2 usage/bad input; 3 plan refused; 1 other errors. With --json stdout holds exactly
one JSON document (success or error).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, NoReturn

from backup_catalog.cli.common import EXIT_USAGE
from backup_catalog.formats import pages


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
    a.add_argument("--layout", default="auto", choices=["auto", *pages.LAYOUTS])
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
    s.add_argument("--no-index", action="store_true",
                   help="do not read the newly catalogued WAL for the WAL index (restore points, commits)")
    s.add_argument("--json", action="store_true")

    b = sub.add_parser("backups", help="backups, WAL coverage and windows of a service name")
    b.add_argument("--space", required=True)
    b.add_argument("--name", required=True)
    b.add_argument("--json", action="store_true")

    ch = sub.add_parser("changes", help="what happened between two times: transactions (destructive first) "
                                        "and restore points, read from the archived WAL")
    ch.add_argument("--space", required=True)
    ch.add_argument("--name", required=True)
    ch.add_argument("--from", dest="from_", required=True, metavar="TIME", help="ISO 8601 with a zone")
    ch.add_argument("--to", required=True, metavar="TIME", help="ISO 8601 with a zone, after --from")
    ch.add_argument("--limit", type=int, metavar="N", help="list at most N transactions, destructive first "
                                                           "(default and most: CHANGES_MAX_TRANSACTIONS)")
    ch.add_argument("--json", action="store_true")

    pl = sub.add_parser("plan", help="plan a clone at a point in time")
    pl.add_argument("--space", required=True)
    pl.add_argument("--clone-from", required=True)
    add_target(pl, required=True)
    pl.add_argument("--pg-version", type=int)
    pl.add_argument("--json", action="store_true")

    add_restore(sub)

    rp = sub.add_parser("report", help="operator reports").add_subparsers(
        dest="report_cmd", required=True, prog=f"{p.prog} report")
    add_coverage(rp.add_parser("coverage", help="backup coverage of the fleet, worst first"))

    pu = sub.add_parser("purge", help="delete the archives of deleted instances whose undo period is over")
    pu.add_argument("purge_cmd", nargs="?", choices=["plan", "run"], default="plan",
                    help="plan (default): dry run; run: delete, with PURGE_AWS_* credentials")
    pu.add_argument("--json", action="store_true")

    sv = sub.add_parser("serve", help="HTTP API + scheduler")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=8080)
    sv.add_argument("--workers", type=int, default=1,
                    help="worker processes sharing the port (SO_REUSEPORT); e.g. one per core")

    dm = sub.add_parser("demo", help="one-command tour: make a real archive, scan it, answer a clone request")
    dmg = dm.add_mutually_exclusive_group()
    dmg.add_argument("--keep", action="store_true", help="keep the local S3 running afterwards and print the "
                     "commands (exports, space) for your first restore")
    dmg.add_argument("--env", action="store_true", help="print the export lines for the local S3 that --keep "
                     "left running (eval \"$(backup-catalog demo --env)\")")
    dmg.add_argument("--stop", action="store_true", help="stop the local S3 that --keep left running")
    dmg.add_argument("--reset", action="store_true", help="remove the embedded catalog (asks first)")
    dm.add_argument("--yes", action="store_true", help="with --reset: do not ask")
    add_drill(sub)
    add_events(sub)
    cfg = sub.add_parser("config", help="the settings").add_subparsers(dest="config_cmd", required=True,
                                                                        prog=f"{p.prog} config")
    cfg.add_parser("check", help="validate the environment's settings and print the effective ones, secrets "
                                 "masked (exit 2 on a problem)").add_argument("--json", action="store_true")
    _add_plain(p)
    return p


def _add_plain(p: argparse.ArgumentParser) -> None:
    """``--plain`` on every command that prints for a person: tables as tab-separated lines, whole values."""
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _add_plain(child)
            return
    if not any("--plain" in a.option_strings for a in p._actions):
        p.add_argument("--plain", action="store_true", default=argparse.SUPPRESS,
                       help="tables as tab-separated lines (header first), nothing cut or wrapped")



def add_exact_targets(p: Any, g: Any) -> None:
    """The exact targets (issue 20), the backup chosen automatically from the WAL index."""
    g.add_argument("--before-xid", metavar="XID", help="stop just before this transaction's commit")
    g.add_argument("--restore-point", metavar="NAME", help="stop at this named restore point")
    p.add_argument("--restore-point-lsn", metavar="LSN",
                   help="which occurrence of a restore point name that occurs more than once (its LSN)")


def add_target(p: argparse.ArgumentParser, *, required: bool) -> None:
    """A clone request's target, as ``plan`` and ``restore`` take it (one of them), its timeline, exclusive."""
    g = p.add_mutually_exclusive_group(required=required)
    g.add_argument("--point-in-time")
    g.add_argument("--lsn")
    g.add_argument("--latest", action="store_true")
    g.add_argument("--immediate", action="store_true")
    add_exact_targets(p, g)
    p.add_argument("--timeline", default="latest")
    p.add_argument("--exclusive", action="store_true")


def add_restore(sub: Any) -> None:
    r = sub.add_parser("restore", help="execute a clone: fetch, recover, verify (into --pgdata)")
    r.add_argument("--space", help="space of the service to clone (with --clone-from)")
    r.add_argument("--clone-from", help="service name to clone")
    add_target(r, required=False)     # a --plan document carries its target
    r.add_argument("--plan", metavar="FILE|-", help="a plan document from POST /spaces/{space}/clones (no catalog)")
    r.add_argument("--pgdata", required=True, help="new or empty directory for the clone")
    r.add_argument("--pg-bin", type=Path, help="PostgreSQL server binaries (default /usr/lib/postgresql/N/bin)")
    r.add_argument("--keep-running", action="store_true", help="leave the promoted server running")
    r.add_argument("--keep-failed", action="store_true", help="keep the data directory of a failed restore")
    r.add_argument("--force-clean", action="store_true",
                   help="--pgdata holds what a restore that did not finish left (its RESTORE_INCOMPLETE marker): "
                        "stop what it left running, empty it and restore again")
    r.add_argument("--port", type=int, default=5432, help="the clone's port, written into it (default 5432)")
    r.add_argument("--socket-dir", help="the clone's unix_socket_directories (default /var/run/postgresql if it "
                                        "exists, else /tmp)")
    r.add_argument("--check-query", help="SQL run on the promoted clone; its first value is reported")
    r.add_argument("--json", action="store_true")


def add_events(sub: Any) -> None:
    ep = sub.add_parser("events", help="S3 event notifications through SQS").add_subparsers(
        dest="events_cmd", required=True)
    s = ep.add_parser("setup", help="the bucket notification configuration and queue policy for the "
                                    "registered prefixes (printed; applied with --apply)")
    s.add_argument("--bucket", required=True)
    s.add_argument("--queue-url", required=True)
    s.add_argument("--apply", action="store_true", help="apply it (else only print it)")
    s.add_argument("--json", action="store_true", help="(the output is one JSON document either way)")


def add_drill(sub: Any) -> None:
    """The ``drill`` subcommand (called from cli.build_parser)."""
    d = sub.add_parser("drill", help="restore drill: restore an instance into scratch, verify, record, clean up")
    d.add_argument("--instance", required=True, help="instance GUID")
    g = d.add_mutually_exclusive_group()
    g.add_argument("--point-in-time", help="drill this time instead of the newest window's end")
    g.add_argument("--latest", action="store_true", help="the newest window's end (the default)")
    g.add_argument("--before-xid", metavar="XID", help="drill the clone just before this transaction's commit")
    g.add_argument("--restore-point", metavar="NAME", help="drill the clone at this named restore point")
    d.add_argument("--timeline", default=None, help="latest (default), current or N")
    d.add_argument("--json", action="store_true")
    d.add_argument("--drill-id", type=int, help=argparse.SUPPRESS)     # worker of a supervised drill
    d.add_argument("--trigger", default="manual", help=argparse.SUPPRESS)


def add_coverage(c: argparse.ArgumentParser) -> None:
    fmt = c.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="the page document (as GET /reports/coverage)")
    fmt.add_argument("--csv", action="store_true", help="every matching instance (streamed; no paging)")
    fmt.add_argument("--html", metavar="FILE", help="write the page as HTML (as GET /reports/coverage.html)")
    c.add_argument("--status", choices=["ok", "warning", "critical"])
    c.add_argument("--space", help="space GUID")
    c.add_argument("--org", help="organization GUID")
    c.add_argument("--name", help="current name starts with")
    c.add_argument("--layout", choices=[*pages.LAYOUTS, "unknown"])
    d = c.add_mutually_exclusive_group()
    d.add_argument("--deleted", action="store_const", const=True, dest="deleted", help="only deleted instances")
    d.add_argument("--live", action="store_const", const=False, dest="deleted", help="only live instances")
    c.add_argument("--limit", type=int, help=f"rows per page (default {pages.DEFAULT_LIMIT}, "
                                             f"at most {pages.MAX_LIMIT})")
    c.add_argument("--cursor", help="next_cursor of the previous page")
