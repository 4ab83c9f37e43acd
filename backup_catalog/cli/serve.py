"""``backup-catalog serve``: the HTTP API and the scheduler (the service, :mod:`backup_catalog.service`)."""
from __future__ import annotations

import argparse

import uvloop

from backup_catalog.cli.common import EXIT_USAGE, emit_error
from backup_catalog.service.app import run_server, serve_workers
from backup_catalog.service.listen import refusal
from backup_catalog.settings import Settings


def before_loop(args: argparse.Namespace, settings: Settings) -> int | None:
    """What ``serve`` does before an event loop runs: refuse built-in credentials off loopback, install uvloop,
    and with ``--workers N`` run the worker processes (their exit code); None: go on with :func:`cmd_serve`."""
    why = refusal(args.host, args.port, settings.default_credentials())
    if why is not None:
        emit_error(args, "default_credentials", why)
        return EXIT_USAGE
    # uvloop (libuv) for the long-running service: socket I/O is most of a request's CPU time
    uvloop.install()
    if args.workers > 1:
        return serve_workers(settings, args.host, args.port, args.workers)
    return None


async def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    await run_server(settings, args.host, args.port)
    return 0
