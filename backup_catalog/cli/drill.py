"""``backup-catalog drill``: one restore drill of an instance, recorded in the catalog.

Exit codes (DESIGN.md "Restore drills"): 0 passed; 4 failed (a recorded result); 1 could not run
(another drill of the instance is running, the drill was skipped, the catalog is unavailable); 2 bad input.
``--json``: one document on stdout. On a terminal, rich progress on stderr.

``--drill-id`` (internal) runs a drill a supervisor (``serve``) queued: the worker process of a scheduled
or HTTP-requested drill. It stops (recording the drill as failed, cleaning up) on SIGTERM, and when its
standard input reaches end of file: the supervisor is gone.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from backup_catalog.cli import render
from backup_catalog.settings import Settings
from backup_catalog.usecases import drill as uc
from backup_catalog.usecases.drill_rules import human
from catalog.connect import open_catalog

EXIT_PASSED, EXIT_COULD_NOT_RUN, EXIT_FAILED = 0, 1, 4
err = Console(stderr=True)
out = render.console()




def _describe(ev: Any) -> tuple[str, float | None]:
    """(text, fraction) of an executor progress event (executor.ProgressEvent)."""
    parts = [str(getattr(ev, "stage", "") or ""), str(getattr(ev, "message", "") or "")]
    fetched = int(getattr(ev, "bytes_fetched", 0) or 0)
    if fetched:
        parts.append(f"{human(fetched)} fetched")
    if getattr(ev, "replay_lsn", None):
        parts.append(f"replayed to {ev.replay_lsn}" + (f" of {ev.end_lsn}" if getattr(ev, "end_lsn", None) else ""))
    frac = getattr(ev, "fraction", None)
    return " ".join(p for p in parts if p), float(frac) if isinstance(frac, (int, float)) else None


async def cmd_drill(args: argparse.Namespace, settings: Settings) -> int:
    point = uc.point_from_request(args.point_in_time, _timeline(args.timeline), before_xid=args.before_xid,
                                  restore_point=args.restore_point)
    pool = await open_catalog(settings)
    recorded: list[uc.DrillOutcome] = []
    task: asyncio.Task[uc.DrillOutcome] | None = None
    try:
        show = sys.stderr.isatty() and not args.json
        with Progress(SpinnerColumn(), TextColumn("drill {task.description}"), BarColumn(), TimeElapsedColumn(),
                      console=err, disable=not show, transient=True) as prog:
            bar = prog.add_task(f"of {args.instance}", total=None)

            def progress(ev: Any) -> None:
                text, frac = _describe(ev)
                if frac is None:
                    prog.update(bar, description=f"of {args.instance}: {text}")
                else:
                    prog.update(bar, description=f"of {args.instance}: {text}", completed=frac * 1000, total=1000)

            task = asyncio.create_task(uc.run_drill(
                pool, settings, args.instance, point=point, trigger=args.trigger, drill_id=args.drill_id,
                progress=progress, on_record=recorded.append))
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, task.cancel)
            watcher = asyncio.create_task(_watch_stdin(task)) if args.drill_id is not None else None
            try:
                outcome = await task
            except asyncio.CancelledError:
                if not recorded:
                    raise
                outcome = recorded[0]
            finally:
                if watcher is not None:
                    watcher.cancel()
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
    except uc.DrillBusy as e:
        _error(args, e.code, str(e))
        return EXIT_COULD_NOT_RUN
    finally:
        await pool.close()
    if args.json:
        print(json.dumps(outcome.to_json(), default=str))
    else:
        render.print_drill(outcome, out)
    if outcome.state == "passed":
        return EXIT_PASSED
    return EXIT_FAILED if outcome.state == "failed" else EXIT_COULD_NOT_RUN


def _timeline(v: str | None) -> str | int | None:
    if v is None:
        return None
    return int(v) if v.isdigit() else v


async def _watch_stdin(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` when standard input ends (the supervising ``serve`` process is gone)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    try:
        transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    except (OSError, ValueError):   # not a pipe (a terminal, /dev/null): nothing to watch
        return
    try:
        while await reader.read(4096):
            pass
    finally:
        transport.close()
    task.cancel()


def _error(args: argparse.Namespace, code: str, message: str) -> None:
    if args.json:
        print(json.dumps({"error": {"code": code, "message": message}}))
    else:
        err.print(f"error ({code}): {message}", markup=False)


