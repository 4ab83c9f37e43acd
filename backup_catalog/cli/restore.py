"""`backup-catalog restore`: execute a clone request (from the catalog or a plan document) into --pgdata.

Exit codes (DESIGN.md "Executing a clone"): 0 restored and verified; 2 bad input; 3 refused; 4 restore
failed; 1 other (also a cancellation by SIGTERM/SIGINT, after everything started was stopped and removed).
Progress goes to stderr: a rich progress display on a terminal, else one structured line per step.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from backup_catalog.cli import render
from backup_catalog.cli.common import clone_request
from backup_catalog.settings import Settings
from backup_catalog.usecases import restore as uc
from executor import ProgressEvent, RestoreError, RestoreResult
from recovery.errors import PlanningError

err = Console(stderr=True)




def _usage(args: argparse.Namespace) -> str | None:
    catalog = args.space or args.clone_from
    targets = [args.point_in_time, args.lsn, args.latest or None, args.immediate or None, args.before_xid,
               args.restore_point]
    if args.plan and catalog:
        return "--plan restores a plan document; --space/--clone-from plan from the catalog: give one of them"
    if not args.plan:
        if not (args.space and args.clone_from):
            return "give --space and --clone-from (and a target), or --plan FILE|-"
        if not any(targets):
            return ("give a target: --point-in-time, --lsn, --latest, --immediate, --before-xid or "
                    "--restore-point")
    elif any(targets) or args.exclusive or args.restore_point_lsn:
        return ("a plan document carries its target: drop --point-in-time/--lsn/--latest/--immediate/--before-xid/"
                "--restore-point/--exclusive")
    return None


class _Reporter:
    """Progress on stderr: rich on a terminal, structured lines otherwise (every step, fetch/replay every 5 s)."""

    def __init__(self, enabled: bool) -> None:
        self.tty = enabled and sys.stderr.isatty()
        self.enabled = enabled
        self.last_line = 0.0
        self.last_stage = ""
        self.prog: Progress | None = None
        self.task: Any = None

    def __enter__(self) -> _Reporter:
        if self.tty:
            self.prog = Progress(SpinnerColumn(), TextColumn("{task.fields[stage]:<8}"), DownloadColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=err,
                                 transient=False)
            self.prog.__enter__()
            self.task = self.prog.add_task("restore", total=None, stage="fetch", info="")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.prog is not None:
            self.prog.__exit__(None, None, None)

    def __call__(self, ev: ProgressEvent) -> None:
        if not self.enabled:
            return
        info = ev.message
        if ev.replay_lsn:
            info = f"replay {ev.replay_lsn}" + (f" of {ev.end_lsn}" if ev.end_lsn else "") + \
                (f" ({ev.fraction:.0%})" if ev.fraction is not None else "")
        if self.prog is not None:
            self.prog.update(self.task, completed=ev.bytes_fetched, stage=ev.stage, info=info, refresh=True)
            if ev.stage != self.last_stage and ev.stage in ("start", "verify", "check", "done"):
                self.prog.console.print(f"{ev.stage}: {ev.message}")
            self.last_stage = ev.stage
            return
        now = time.monotonic()
        if ev.stage == self.last_stage and now - self.last_line < 5:
            return
        self.last_stage, self.last_line = ev.stage, now
        fields = {"stage": ev.stage, "bytes_fetched": ev.bytes_fetched, "replay_lsn": ev.replay_lsn,
                  "end_lsn": ev.end_lsn, "message": ev.message}
        print("restore " + " ".join(f"{k}={json.dumps(v)}" for k, v in fields.items() if v not in (None, "")),
              file=sys.stderr, flush=True)


def _print_result(res: RestoreResult, args: argparse.Namespace) -> None:
    if args.json:
        print(json.dumps(res.to_json(), default=str))
    else:
        render.print_restored(res, render.console())


def _print_error(e: RestoreError, args: argparse.Namespace) -> None:
    if args.json:
        print(json.dumps(e.to_json(), default=str))
    else:
        render.print_restore_error(e, err)


def _read_plan(where: str) -> str:
    try:
        return sys.stdin.read() if where == "-" else Path(where).read_text()
    except OSError as e:
        raise RestoreError("bad_input", "input", f"cannot read the plan {where}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise RestoreError("bad_input", "input", f"the plan {where} is not text") from None


async def _run(args: argparse.Namespace, settings: Settings, report: _Reporter) -> RestoreResult:
    kw: dict[str, Any] = {"pg_bin": args.pg_bin, "keep_running": args.keep_running, "keep_failed": args.keep_failed,
                          "progress": report, "check_query": args.check_query, "port": args.port,
                          "socket_dir": args.socket_dir, "force_clean": args.force_clean}
    pgdata = Path(args.pgdata)
    if args.plan:
        return await uc.restore_from_plan(settings, uc.load_plan(_read_plan(args.plan)), pgdata, **kw)
    try:
        request = clone_request(args)
    except PlanningError as e:
        raise RestoreError("bad_input", "input", f"{e.code}: {e.message}") from None
    return await uc.restore_from_catalog(settings, args.space, request, pgdata, **kw)


async def cmd_restore(args: argparse.Namespace, settings: Settings) -> int:
    problem = _usage(args)
    if problem:
        _print_error(RestoreError("bad_input", "input", problem), args)
        return 2
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    cancelled_by: list[str] = []

    def on_signal(name: str) -> None:
        cancelled_by.append(name)
        if task is not None:
            task.cancel()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig.name)
    try:
        with _Reporter(enabled=True) as report:
            res = await _run(args, settings, report)
    except RestoreError as e:
        _print_error(e, args)
        return e.exit_code
    except asyncio.CancelledError:
        if not cancelled_by:
            raise
        _print_error(RestoreError("cancelled", "input", f"cancelled by {cancelled_by[0]}: the tool and the server "
                                  "were stopped and the data directory removed"), args)
        return 1
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    _print_result(res, args)
    return 0
