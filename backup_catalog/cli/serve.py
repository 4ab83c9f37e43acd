"""``backup-catalog serve``: the HTTP API and the scheduler (the service, :mod:`backup_catalog.service`)."""
from __future__ import annotations

import argparse
from collections.abc import Callable, Coroutine
from typing import Any

import uvloop

from backup_catalog.cli.common import EXIT_USAGE, emit_error
from backup_catalog.cli.db import upgrade_quietly
from backup_catalog.service import logs
from backup_catalog.service.app import run_server, serve_workers
from backup_catalog.service.listen import refusal
from backup_catalog.settings import Settings

Run = Callable[[argparse.Namespace, Callable[[], Coroutine[Any, Any, int]]], int]


def before_loop(args: argparse.Namespace, settings: Settings, run: Run) -> int | None:
    """What ``serve`` does before its event loop: refuse built-in credentials off loopback, upgrade the schema
    (once, under the advisory lock, before any worker starts; a newer one refused), install uvloop, and with
    ``--workers N`` run the worker processes. An exit code, or None: go on with :func:`cmd_serve`."""
    logs.configure("DEBUG" if args.verbose else settings.log_level, settings.log_format)
    why = refusal(args.host, args.port, settings.default_credentials())
    if why is not None:
        emit_error(args, "default_credentials", why)
        return EXIT_USAGE
    rc = run(args, lambda: upgrade_quietly(settings))
    if rc != 0:
        return rc
    # uvloop (libuv) for the long-running service: socket I/O is most of a request's CPU time
    uvloop.install()
    if args.workers > 1:
        return serve_workers(settings, args.host, args.port, args.workers)
    return None


async def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    await run_server(settings, args.host, args.port)
    return 0
