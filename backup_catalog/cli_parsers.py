"""Argument parsers of the larger subcommands, kept free of their handlers' imports (rich, pydantic, the
executor), so that building the CLI's parser costs nothing for the terminal-speed commands."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backup_catalog import pages

if TYPE_CHECKING:
    from recovery.target import CloneRequest


def add_restore(sub: Any) -> None:
    r = sub.add_parser("restore", help="execute a clone: fetch, recover, verify (into --pgdata)")
    r.add_argument("--space", help="space of the service to clone (with --clone-from)")
    r.add_argument("--clone-from", help="service name to clone")
    g = r.add_mutually_exclusive_group()
    g.add_argument("--point-in-time")
    g.add_argument("--lsn")
    g.add_argument("--latest", action="store_true")
    g.add_argument("--immediate", action="store_true")
    r.add_argument("--timeline", default="latest")
    r.add_argument("--exclusive", action="store_true")
    r.add_argument("--plan", metavar="FILE|-", help="a plan document from POST /spaces/{space}/clones (no catalog)")
    r.add_argument("--pgdata", required=True, help="new or empty directory for the clone")
    r.add_argument("--pg-bin", type=Path, help="PostgreSQL server binaries (default /usr/lib/postgresql/N/bin)")
    r.add_argument("--keep-running", action="store_true", help="leave the promoted server running")
    r.add_argument("--keep-failed", action="store_true", help="keep the data directory of a failed restore")
    r.add_argument("--check-query", help="SQL run on the promoted clone; its first value is reported")
    r.add_argument("--json", action="store_true")


def add_drill(sub: Any) -> None:
    """The ``drill`` subcommand (called from cli.build_parser)."""
    d = sub.add_parser("drill", help="restore drill: restore an instance into scratch, verify, record, clean up")
    d.add_argument("--instance", required=True, help="instance GUID")
    g = d.add_mutually_exclusive_group()
    g.add_argument("--point-in-time", help="drill this time instead of the newest window's end")
    g.add_argument("--latest", action="store_true", help="the newest window's end (the default)")
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


def clone_request(args: argparse.Namespace) -> CloneRequest:
    """The clone arguments (``plan``, ``restore``) parsed, once, into the core's request.
    :raises PlanningError: ``invalid_target`` naming what is wrong."""
    from recovery.target import CloneRequest, make_target  # lazy: building the parser imports nothing more
    target = make_target(point_in_time=args.point_in_time, lsn=args.lsn, latest=args.latest,
                         immediate=args.immediate, timeline=args.timeline, exclusive=args.exclusive)
    return CloneRequest(args.clone_from, target, getattr(args, "pg_version", None))
