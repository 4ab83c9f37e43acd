"""Scheduled and requested drills in ``serve``: the supervisor.

Every replica runs :meth:`DrillSupervisor.tick` every ``DRILL_TICK_SECONDS``. An instance is due once per
drill slot (``DRILL_INTERVAL_SECONDS``, offset per instance: the jitter; ``drill_rules.drill_slot``);
exactly one replica runs a due slot:

1. ``record_run("drill", slot, guid, holder)`` claims the slot (taken: another replica runs it, skip);
2. :func:`drill.begin` takes the instance's drill lease ``drill:<guid>`` (heartbeat while it runs) and
   creates the ``queued`` row (a drill of the instance already active: the slot is ``skipped:drill_running``);
3. it waits for one of ``DRILL_CONCURRENCY`` places; the scratch budget (``DRILL_SCRATCH_BUDGET_BYTES``,
   estimated from the backup's size) is reserved, or the drill is finished as ``skipped`` with the reason;
4. the drill runs in a **worker process** (``backup-catalog drill --drill-id N``, its own session), so a
   killed worker cannot take the service with it and the service can always clean up after it: when the
   worker ends without recording (SIGKILL, crash), or overruns ``DRILL_TIMEOUT_SECONDS`` (then it is killed),
   the supervisor kills what it left running, removes its scratch directory and finishes the row as failed;
5. ``finish_run`` and the lease release, also on cancellation.

On shutdown (SIGTERM of ``serve``) running workers get SIGTERM: each records its drill as failed
(cancelled) and cleans up; a worker that does not end within the grace is killed and cleaned up here.
If ``serve`` itself is killed, its workers see their standard input close and stop the same way; a drill
row left active is reaped by the next drill of the instance (its lease expired), leftover scratch
directories by the next tick's sweep.
"""
from __future__ import annotations

import asyncio
import contextlib
import glob
import logging
import os
import shutil
import signal
import sys
from datetime import datetime
from typing import Any

import asyncpg

from backup_catalog.settings import Settings
from backup_catalog.usecases import drill as uc
from backup_catalog.usecases import drill_rules as rules
from backup_catalog.usecases import scratch
from backup_catalog.usecases.drill_rules import DrillPoint
from catalog import drills, leases, repo
from catalog.errors import CatalogError
from executor.guard import pdeathsig_preexec
from recovery.timefmt import iso_offset
from recovery.windows import all_windows

log = logging.getLogger(__name__)

JOB = "drill"               # run-log job name of scheduled drills
KILL_GRACE_SECONDS = 30.0   # beyond the worker's own timeout, before the supervisor kills it


def postgres_available() -> bool:
    """Are PostgreSQL server binaries installed (Debian layout, or pg_ctl on PATH)?"""
    return bool(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl")) or shutil.which("pg_ctl") is not None


def scheduled_enabled(settings: Settings) -> bool:
    """``DRILL_ENABLED``; unset: on when PostgreSQL server binaries are installed (a drill restores)."""
    if settings.drill_enabled is not None:
        return settings.drill_enabled
    return postgres_available()


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings as environment variables for a worker process (it reads them with pydantic-settings)."""
    env: dict[str, str] = {}
    for name, raw in settings.model_dump().items():
        if raw is None:
            continue
        value = raw.get_secret_value() if hasattr(raw, "get_secret_value") else raw
        env[name.upper()] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return env


class DrillSupervisor:
    """Runs drills of this replica in worker processes, bounded by ``DRILL_CONCURRENCY``."""

    def __init__(self, pool: asyncpg.Pool, settings: Settings, holder: str, *,
                 worker_argv: list[str] | None = None) -> None:
        self.pool, self.settings, self.holder = pool, settings, holder
        self.sem = asyncio.Semaphore(max(1, settings.drill_concurrency))
        self.budget = uc.ScratchBudget(settings.drill_scratch_budget_bytes)
        self.tasks: set[asyncio.Task[None]] = set()
        self.workers: dict[int, asyncio.subprocess.Process] = {}
        self.started: set[int] = set()      # drills whose worker was started
        self.worker_argv = worker_argv or [sys.executable, "-m", "backup_catalog.cli"]

    # -- entry points -------------------------------------------------------------------------------
    async def tick(self, now: datetime | None = None) -> list[int]:
        """Start due drills of live instances, as many as there are free places (``DRILL_CONCURRENCY``),
        least recently drilled first; the rest stay due for later ticks. Each slot is claimed in the run
        log, so a slot runs on one replica only. Returns the ids started."""
        now = now or uc.now()
        await self.reap()
        free = max(1, self.settings.drill_concurrency) - len(self.tasks)
        if free <= 0:
            return []
        due: list[tuple[datetime, str, rules.Slot]] = []
        last_of = await drills.last_requested_all(self.pool)
        for rec in await repo.list_instances(self.pool, include_deleted=False):
            slot = rules.drill_slot(now, self.settings.drill_interval_seconds, rec.guid)
            last = last_of.get(rec.guid)
            if rules.is_due(slot, last):
                due.append((last or rules.EPOCH, rec.guid, slot))
        started: list[int] = []
        for _, guid, slot in sorted(due, key=lambda d: (d[0], d[1])):
            if len(started) >= free:
                break
            if not await leases.record_run(self.pool, JOB, slot.start, guid, self.holder, "running"):
                continue   # another replica runs this slot
            point = await self._point(guid, slot.index)
            try:
                drill_id, lease = await uc.begin(self.pool, self.settings, guid, point=point,
                                                 trigger="scheduled", holder=self.holder, state="queued")
            except uc.DrillBusy:
                await leases.finish_run(self.pool, JOB, slot.start, guid, "skipped:drill_running")
                continue
            self._spawn(drill_id, guid, point, lease, slot.start)
            started.append(drill_id)
        return started

    async def reap(self) -> list[int]:
        """The reaper, for every instance (at ``serve`` start and on each tick): drills whose process died
        are finished as abandoned, their servers stopped and scratch directories removed; then any scratch
        directory no active drill owns. Never raises (a catalog outage: the next tick)."""
        reaped: list[int] = []
        with contextlib.suppress(OSError, CatalogError, asyncpg.PostgresError):
            reaped = await uc.reap(self.pool, self.settings)
            await uc.sweep_scratch(self.pool, self.settings)
        return reaped

    async def reap_forever(self) -> None:
        """:meth:`reap` now and every ``DRILL_TICK_SECONDS`` (``serve``; also when scheduled drills are off)."""
        while True:
            reaped = await self.reap()
            if reaped:
                log.warning("drills %s were abandoned by their process: finished and cleaned up", reaped)
            await asyncio.sleep(max(1, self.settings.drill_tick_seconds))

    async def request(self, guid: str, point: DrillPoint, trigger: str = "api") -> int:
        """An operator's drill (HTTP): queued now (its id returned), run as soon as a place is free.
        :raises DrillBusy: a drill of the instance is active; UnknownInstance."""
        drill_id, lease = await uc.begin(self.pool, self.settings, guid, point=point, trigger=trigger,
                                         holder=self.holder, state="queued")
        self._spawn(drill_id, guid, point, lease, None)
        return drill_id

    async def shutdown(self, grace: float) -> None:
        """Stop every drill: workers get SIGTERM (they record and clean up), are killed after ``grace``."""
        for t in list(self.tasks):
            t.cancel()
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=grace + KILL_GRACE_SECONDS)

    # -- one drill ----------------------------------------------------------------------------------
    async def _point(self, guid: str, index: int) -> DrillPoint:
        try:
            snap = await repo.load_snapshot(self.pool, guid)
        except CatalogError:
            return rules.LATEST
        return rules.choose_point(index, [w for ws in all_windows(snap).values() for w in ws])

    def _spawn(self, drill_id: int, guid: str, point: DrillPoint, lease: uc.LeaseHolder,
               slot: datetime | None) -> None:
        t = asyncio.create_task(self._supervise(drill_id, guid, point, lease, slot), name=f"drill-{drill_id}")
        self.tasks.add(t)
        t.add_done_callback(self.tasks.discard)

    async def _supervise(self, drill_id: int, guid: str, point: DrillPoint, lease: uc.LeaseHolder,
                         slot: datetime | None) -> None:
        outcome = "cancelled"
        need = 0
        try:
            async with self.sem:
                need = await uc.scratch_need(self.pool, self.settings, guid, point) or 0
                root = scratch.scratch_root(self.settings.drill_scratch_dir)
                why = self.budget.reserve(need, root)
                if why is not None:
                    need = 0
                    await drills.finish(self.pool, drill_id, drills.DrillResult(
                        "skipped", stage="budget", reason=f"not started: {why}"))
                    outcome = "skipped:budget"
                    return
                outcome = await self._run_worker(drill_id, guid, point)
        except asyncio.CancelledError:
            if drill_id not in self.started:   # never started: nothing ran, nothing to clean
                with contextlib.suppress(Exception):
                    await asyncio.shield(drills.finish(self.pool, drill_id, drills.DrillResult(
                        "skipped", stage="cancelled", reason="not started: the service stopped first")))
                outcome = "skipped:cancelled"
            raise
        except Exception:
            log.exception("drill %s of %s: supervisor failed", drill_id, guid)
            outcome = "internal_error"
            await self._bury(drill_id, "the drill's supervisor failed", None)
        finally:
            self.started.discard(drill_id)
            self.budget.release(need)
            done = asyncio.ensure_future(self._close(drill_id, guid, lease, slot, outcome))
            try:
                await asyncio.shield(done)
            except asyncio.CancelledError:
                await done
                raise

    async def _close(self, drill_id: int, guid: str, lease: uc.LeaseHolder, slot: datetime | None,
                     outcome: str) -> None:
        try:
            if slot is not None:
                await leases.finish_run(self.pool, JOB, slot, guid, outcome)
        finally:
            await lease.release()

    async def _run_worker(self, drill_id: int, guid: str, point: DrillPoint) -> str:
        argv = [*self.worker_argv, "drill", "--instance", guid, "--drill-id", str(drill_id), "--json"]
        if point.kind == "time" and point.time is not None:
            argv += ["--point-in-time", iso_offset(point.time)]
        if point.xid is not None:
            argv += ["--before-xid", str(point.xid)]
        if point.name is not None:
            argv += ["--restore-point", point.name]
        if point.timeline != "latest":
            argv += ["--timeline", str(point.timeline)]
        env = {**os.environ, **settings_env(self.settings)}
        self.started.add(drill_id)
        # the worker dies with serve (SIGKILL: its tool's guard and its recovery server follow it); the
        # reaper of the next serve finishes its row and removes its directory
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env=env, start_new_session=True, preexec_fn=pdeathsig_preexec(signal.SIGKILL))
        self.workers[drill_id] = proc
        log.info("drill %s of %s: worker %d started (%s)", drill_id, guid, proc.pid, point.why)
        io = asyncio.ensure_future(proc.communicate())
        try:
            try:
                stdout, stderr = await asyncio.wait_for(
                    asyncio.shield(io), timeout=self.settings.drill_timeout_seconds + KILL_GRACE_SECONDS)
            except TimeoutError:
                await self._stop(proc, io, 5.0)
                await self._bury(drill_id, f"the drill overran its timeout of {self.settings.drill_timeout_seconds:g} s "
                                 "and its worker was killed", proc, stage="timeout")
                return "timeout"
            except asyncio.CancelledError:
                await self._stop(proc, io, KILL_GRACE_SECONDS)
                await self._bury(drill_id, "the service stopped during the drill", proc, stage="cancelled")
                raise
            for line in stderr.decode(errors="replace").splitlines()[-20:]:
                log.info("drill %s worker: %s", drill_id, line)
            if proc.returncode not in (0, 1, 4):
                await self._bury(drill_id, _death(proc.returncode), proc, stage="killed")
                return "killed"
            await self._bury(drill_id, f"the drill's worker ended (exit {proc.returncode}) without recording a "
                             f"result: {_last_line(stdout, stderr)}", proc, stage="worker")
            row = await drills.get(self.pool, drill_id)
            return row.state if row else "unknown"
        finally:
            self.workers.pop(drill_id, None)

    async def _stop(self, proc: asyncio.subprocess.Process, io: asyncio.Future[Any], grace: float) -> None:
        """SIGTERM the worker (it records and cleans up), SIGKILL its process group after ``grace``."""
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(io), timeout=grace)
        except (TimeoutError, asyncio.CancelledError):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(io), timeout=10.0)

    async def _bury(self, drill_id: int, message: str, proc: asyncio.subprocess.Process | None,
                    stage: str = "killed") -> None:
        """After a worker ended: kill what it left (its process group; servers and tools in its scratch
        directory), remove the directory, and finish the row as failed if the worker did not."""
        if proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        d = scratch.drill_dir(scratch.scratch_root(self.settings.drill_scratch_dir), drill_id)
        row = await drills.get(self.pool, drill_id)
        done = await asyncio.to_thread(scratch.remove_drill_dir, d, row.server_pid if row else None)
        if row is not None and row.state in drills.ACTIVE:
            if await drills.finish(self.pool, drill_id, drills.DrillResult(
                    "failed", stage=stage, reason=rules.failure_reason(stage, message, None))):
                log.warning("drill %s: %s", drill_id, message)
                if done:
                    await drills.record_cleanup(self.pool, drill_id, "; ".join(done))
            await drills.prune(self.pool, row.instance_guid, self.settings.drill_history_per_instance)


def _last_line(stdout: bytes, stderr: bytes) -> str:
    for text in (stdout, stderr):
        lines = [ln for ln in text.decode(errors="replace").splitlines() if ln.strip()]
        if lines:
            return lines[-1][:500]
    return "no output"


def _death(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"the drill's worker process was killed by {name} midway; its server and scratch directory were removed"
    return f"the drill's worker process failed (exit {code}); its server and scratch directory were removed"
