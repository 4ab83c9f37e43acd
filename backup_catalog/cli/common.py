"""What every command module shares: the exit codes, the usage error, printing a JSON document or an error
in the CLI contract's shape, and running work on the catalog. Import-light (no rich, no pydantic)."""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from recovery.errors import PitrError

if TYPE_CHECKING:
    import asyncpg

    from catalog.connect import CatalogConfig
    from recovery.target import CloneRequest

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_REFUSED = 0, 1, 2, 3
USAGE_CODES = frozenset({"unknown_service", "unknown_instance", "invalid_target", "invalid_lsn", "bad_input",
                         "conflict", "invalid_name", "usage", "schema_newer", "invalid_range"})
T = TypeVar("T")


class UsageError(PitrError):
    code = "usage"


def print_json(doc: Any) -> None:
    print(json.dumps(doc, default=str))


def emit_error(args: argparse.Namespace, code: str, message: str, extra: dict[str, Any] | None = None) -> None:
    """An error as the contract wants it: one JSON document on stdout with --json, a line on stderr otherwise."""
    if getattr(args, "json", False):
        print_json({"error": {"code": code, "message": message, **(extra or {})}})
    else:
        print(f"error ({code}): {message}", file=sys.stderr)


async def on_catalog(settings: CatalogConfig, work: Callable[[asyncpg.Pool], Awaitable[T]], *,
                     light: bool = False) -> T:
    """Run ``work(pool)`` on the catalog and close the pool whatever happens (``light``: see
    :func:`catalog.connect.open_catalog`)."""
    from catalog.connect import open_catalog  # asyncpg: not needed to print usage or help
    pool = await open_catalog(settings, light=light)
    try:
        return await work(pool)
    finally:
        await pool.close()


def clone_request(args: argparse.Namespace) -> CloneRequest:
    """The clone arguments (``plan``, ``restore``) parsed, once, into the core's request.
    :raises PlanningError: ``invalid_target`` naming what is wrong."""
    from recovery.target import CloneRequest, make_target  # the planner's core: not for usage, help or db
    target = make_target(point_in_time=args.point_in_time, lsn=args.lsn, latest=args.latest,
                         immediate=args.immediate, timeline=args.timeline, exclusive=args.exclusive,
                         before_xid=getattr(args, "before_xid", None),
                         restore_point=getattr(args, "restore_point", None),
                         restore_point_lsn=getattr(args, "restore_point_lsn", None))
    return CloneRequest(args.clone_from, target, getattr(args, "pg_version", None))
