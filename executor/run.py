"""Executing a plan (the adapter around :mod:`executor.logic`): fetch the base backup with the layout's real
tool, write the plan's settings, start PostgreSQL as ``postgres`` on a private socket (no TCP listener),
follow replay, verify it reached what the plan promised, optionally run a check query, and shut down.

Every failure and every cancellation (``asyncio.CancelledError``, which the CLI raises on SIGTERM) stops the
tool and the server it started and removes the data directory it made (unless ``keep_failed``). A SIGKILL
cannot be caught: the tool runs under :mod:`executor.guard` and the server gets SIGQUIT when this process dies
(``PR_SET_PDEATHSIG``), and the directory carries the ``RESTORE_INCOMPLETE`` marker (:mod:`executor.clone`)
until the clone is verified and has its own settings (issue 24). The S3 endpoint is checked before any tool
runs (:mod:`executor.preflight`).

This module is the run in order (:func:`execute_plan`): the checks before anything is touched, then the
stages — :mod:`executor.fetch` (the base backup), :mod:`executor.server` (settings, recovery and its
verification, the check query, shutdown, the clone's own settings) — over one :class:`executor.state.Run`,
and the abort that undoes them. What the run reports is :mod:`executor.outcome`; what it needs of the host
(the ``postgres`` user, ports, processes, tool and server paths) is :mod:`executor.host`.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path

from executor import clone, fetch, host, logic, preflight, server
from executor.config import RestoreConfig
from executor.outcome import ProgressEvent, RestoreError, RestoreResult
from executor.state import Run
from recovery.plandoc import PlanDoc, PlanDocError
from recovery.timefmt import iso


async def execute_plan(plan: PlanDoc, pgdata: Path, settings: RestoreConfig, *, pg_bin: Path | None = None,
                       keep_running: bool = False, keep_failed: bool = False,
                       progress: Callable[[ProgressEvent], None] | None = None,
                       check_query: str | None = None,
                       environ: Mapping[str, str] | None = None, port: int = 5432, socket_dir: str | None = None,
                       force_clean: bool = False,
                       on_server: Callable[[int, Path], Awaitable[None]] | None = None,
                       inspect: Callable[[Path, int], Awaitable[None]] | None = None) -> RestoreResult:
    """Restore ``plan`` into ``pgdata`` and verify it; see the module docstring and DESIGN.md.

    ``port``/``socket_dir``: the clone's own, written into it once it is verified (the recovery run uses a
    private socket and no TCP). ``on_server(pid, pgdata)`` is awaited when the recovery server started (a
    drill records it in its row for the reaper).

    ``environ`` (default ``os.environ``) is the caller's environment: its ``PATH``, and the
    ``PGBACKREST_*``/``WALG_*``/``WALE_*``/``AWS_*`` variables passed to the tools and the server.
    ``inspect(socket_dir, port)`` runs against the verified server before it is shut down (drills read
    relation maps there)."""
    exp = plan.replay
    try:
        loc = logic.storage_of(plan)
    except PlanDocError as e:
        raise RestoreError("bad_input", "input", f"not an executable plan: {e}") from None
    doc = plan
    pgdata = host.absolute(pgdata)
    pg_version = doc.pg_version
    bindir = host.find_pg_bin(pg_version, pg_bin) if (pg_bin is not None or pg_version is not None) else None
    s3 = host.s3_access(settings)
    caller = dict(os.environ if environ is None else environ)
    path = host.tool_path(settings, caller)
    work_placeholder = "/nonexistent"
    cmd = logic.fetch_command(loc, doc.backup.label, str(pgdata), s3, work=work_placeholder)
    if shutil.which(cmd.argv[0], path=path) is None:
        raise RestoreError("bad_input", "input", f"{cmd.argv[0]} ({cmd.label}) is not installed or not on PATH "
                           "(RESTORE_TOOLS_PATH adds directories)")
    problem = await preflight.check(loc.layout, s3, caller, max(2.0, settings.s3_connect_timeout_seconds))
    if problem is not None:
        raise RestoreError("bad_input", "input", problem)
    created = host.check_pgdata(pgdata, force_clean)
    run = Run(doc, loc, exp, pgdata, created, settings, s3, path, progress, keep_failed, caller)
    run.port, run.socket_dir, run.on_server = port, socket_dir or host.default_socket_dir(), on_server
    try:
        return await _stages(run, bindir, keep_running, check_query, inspect)
    except BaseException as e:
        await _abort_run(run)
        if isinstance(e, RestoreError):
            raise
        if isinstance(e, asyncio.CancelledError):
            raise
        raise RestoreError("error", run.stage, f"{type(e).__name__}: {e}",
                           postgres_log=logic.relevant_log(host.read_lines(run.log))) from e


async def _stages(run: Run, bindir: Path | None, keep_running: bool, check_query: str | None,
             inspect: Callable[[Path, int], Awaitable[None]] | None = None) -> RestoreResult:
    """The stages in order over ``run``; the caller aborts the run when one raises."""
    t0 = time.monotonic()
    if run.created:
        run.pgdata.mkdir(parents=True, mode=0o700)
    host.chown(run.pgdata)
    run.pgdata.chmod(0o700)
    run.work.mkdir(mode=0o700, exist_ok=True)
    run.work.chmod(0o700)
    host.chown(run.work)
    run.marker_facts = {"restore_pid": os.getpid(), "host": socket.gethostname(),
                         "started": iso(datetime.now(timezone.utc).replace(microsecond=0)),
                         "backup": run.doc.backup.label, "work": str(run.work)}
    run.mark()
    await fetch.base_backup(run)
    fetch_s = time.monotonic() - t0
    bindir = server.prepare(run, bindir)
    t1 = time.monotonic()
    reached, last_commit, timeline = await server.recover(run, bindir)
    replay_s = time.monotonic() - t1
    check = await server.check(run, check_query) if check_query else None
    if inspect is not None:
        await inspect(run.sock, run.private_port)
    (run.work / "pgbackrest.conf").unlink(missing_ok=True)    # its credentials: not needed after promotion
    await server.shutdown(run)
    start = server.make_ready(run, bindir)
    lines = host.read_lines(run.log)
    shutil.rmtree(run.work, ignore_errors=True)
    shutil.rmtree(run.sock, ignore_errors=True)
    (run.pgdata / clone.MARKER).unlink(missing_ok=True)       # a verified clone, ready to start
    running = await server.start_kept(run, start) if keep_running else False
    run.emit(stage="done", message="restored and verified", bytes_fetched=run.bytes, replay_lsn=str(reached))
    return RestoreResult(run.pgdata, run.doc.backup, run.doc.target, timeline, str(reached),
                         last_commit, time.monotonic() - t0, fetch_s, replay_s, run.bytes,
                         [*run.doc.warnings, *run.warnings], check,
                         logic.relevant_log(lines), running, start, run.port, run.socket_dir)


async def _abort_run(run: Run) -> None:
    """Stop whatever runs, remove what was made (unless keep_failed). Shielded from a second cancel."""
    async def _abort() -> None:
        for proc in (run.fetch_proc, run.server):
            if proc is not None and proc.returncode is None:
                if proc is run.server:
                    with contextlib.suppress(ProcessLookupError):
                        proc.send_signal(signal.SIGQUIT)   # immediate shutdown: children go too
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(proc.wait(), 10)
                await host.kill_group(proc)
        shutil.rmtree(run.work, ignore_errors=True)     # its log lines travel with the error
        shutil.rmtree(run.sock, ignore_errors=True)
        if not run.keep_failed:
            if run.created:
                shutil.rmtree(run.pgdata, ignore_errors=True)
            elif run.pgdata.is_dir():
                for p in run.pgdata.iterdir():
                    if p.is_dir() and not p.is_symlink():
                        shutil.rmtree(p, ignore_errors=True)
                    else:
                        p.unlink(missing_ok=True)
    task = asyncio.ensure_future(_abort())
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await task
        raise
