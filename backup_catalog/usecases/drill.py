"""Restore drills (DESIGN.md "Restore drills"): plan, restore into a scratch directory with the executor,
verify, record, clean up — always, also on failure, timeout or cancellation.

(Over 400 lines on purpose: one drill's life — lease, row, scratch, restore, checks, record, clean-up — reads
as one sequence, and its cancellation paths must be seen together; its pure rules are in drill_rules.py,
scratch space in scratch.py, the checksums in checksums.py, the schedule in drill_schedule.py.)

Recording: the drill's row is ``running`` while it runs and is finished in ONE UPDATE
(:mod:`catalog.drills`). The row's holder keeps the lease ``drill:<guid>`` alive (a heartbeat); a row
whose holder lost its lease (the process died) is finished as ``abandoned`` by the next drill of the
instance. The scratch directory is ``<DRILL_SCRATCH_DIR>/drill-<id>``, removed at the end whatever
happened (and by :func:`sweep_scratch` when its process was killed).

Verification: the executor checks promotion and that replay reached the plan's promise, then runs the
check query (``DRILL_CHECK_QUERY``). For pgBackRest archives the plan's segments are also checked
against the sha1 in their names (:mod:`backup_catalog.usecases.checksums`), concurrently with the
restore; a mismatch is reported as what it is (stage ``verify``).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from backup_catalog.settings import Settings
from backup_catalog.usecases import drill_rules as rules
from backup_catalog.usecases import scratch
from backup_catalog.usecases.drill_rules import LATEST, DrillPoint

__all__ = ["LATEST", "DrillBusy", "DrillOutcome", "DrillPoint", "ScratchBudget", "begin", "run_drill"]
from dataclasses import replace

from backup_catalog.usecases import plan as plan_uc
from backup_catalog.usecases.checksums import segments_of_plan, verify_pgbackrest
from backup_catalog.usecases.relmaps import read_clone
from backup_catalog.usecases.scan import default_holder
from catalog import drills, leases, relmaps, repo, tracing
from catalog.errors import CatalogError, Conflict, NotScanned
from executor import RestoreError, execute_plan
from recovery.docjson import document_json
from recovery.errors import PlanningError
from recovery.plandoc import PlanDoc
from recovery.target import make_target
from recovery.timefmt import iso
from scheduler.clients import s3_client

log = logging.getLogger(__name__)

POSTGRES_LOG_LINES = 40     # PostgreSQL log lines kept with a drill (the executor selects those that matter)

Progress = Callable[[Any], None]


class DrillBusy(Conflict):
    code = "drill_running"


@dataclass(frozen=True, slots=True)
class DrillOutcome:
    """A finished drill, as recorded."""

    id: int
    instance_guid: str
    state: str                                  # passed | failed | skipped
    target: dict[str, Any] | None
    backup: dict[str, Any] | None
    reached: dict[str, Any] | None
    duration_s: float
    error: dict[str, Any] | None = None
    checked_segments: int = 0

    @property
    def ok(self) -> bool:
        return self.state == "passed"

    def to_json(self) -> dict[str, Any]:
        return {"instance_guid": self.instance_guid, "id": self.id, "ok": self.ok, "state": self.state,
                "target": self.target, "backup": self.backup, "reached": self.reached,
                "duration_s": round(self.duration_s, 3), "checked_segments": self.checked_segments,
                "error": self.error}


class ScratchBudget:
    """Scratch bytes reserved by the drills running in this process (``DRILL_SCRATCH_BUDGET_BYTES``)."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.in_use = 0

    def reserve(self, need: int, root: Path) -> str | None:
        """Reserve ``need`` bytes, or say why not (over budget, or not that much free on the disk)."""
        try:
            free: int | None = shutil.disk_usage(root).free
        except OSError:
            free = None
        why = rules.budget_refusal(need, self.in_use, self.budget, free)
        if why is None:
            self.in_use += need
        return why

    def release(self, need: int) -> None:
        self.in_use = max(0, self.in_use - need)


def point_doc(point: DrillPoint) -> dict[str, Any]:
    """The requested target, recorded until the plan's own target document replaces it."""
    value: Any = point.xid if point.kind == "xid" else point.name if point.kind == "name" else iso(point.time)
    return {"kind": point.kind, "value": value, "timeline": point.timeline, "why": point.why}


def point_from_request(point_in_time: str | None, timeline: str | int | None = None, *,
                       before_xid: object = None, restore_point: object = None) -> DrillPoint:
    """CLI/HTTP request -> point (validated: a bad time, xid or name raises PlanningError ``invalid_target``)."""
    if before_xid is not None or restore_point is not None:
        t = make_target(point_in_time=point_in_time, before_xid=before_xid, restore_point=restore_point,
                        timeline=timeline or "latest")
        if t.kind.value == "xid":
            return DrillPoint("xid", None, t.timeline, "requested", xid=t.xid)
        return DrillPoint("name", None, t.timeline, "requested", name=t.name)
    if point_in_time is None:
        if timeline not in (None, "latest"):
            return DrillPoint("latest", None, timeline if isinstance(timeline, int) else str(timeline),
                              "the end of the timeline's window")
        return LATEST
    t = make_target(point_in_time=point_in_time, timeline=timeline or "latest")
    return DrillPoint("time", t.value if isinstance(t.value, datetime) else None, t.timeline, "requested")


def _lease_ttl(settings: Settings) -> float:
    return max(3.0, float(settings.drill_lease_ttl_seconds))


class LeaseHolder:
    """Hold ``drill:<guid>`` with a heartbeat while a drill (or a supervised worker's drill) runs."""

    def __init__(self, pool: asyncpg.Pool, settings: Settings, guid: str, holder: str) -> None:
        self.pool, self.guid, self.holder = pool, guid, holder
        self.key = drills.lease_key(guid)
        self.ttl = _lease_ttl(settings)
        self.token: int | None = None
        self._task: asyncio.Task[None] | None = None

    async def acquire(self) -> bool:
        self.token = await leases.try_acquire_lease(self.pool, self.key, self.holder, self.ttl)
        if self.token is None:
            return False
        self._task = asyncio.create_task(self._heartbeat())
        return True

    async def _heartbeat(self) -> None:
        """Renew every third of the TTL. A renewal after the lease lapsed (a loop stalled past the TTL,
        nobody took it) comes back with a new token: keep it, or the release would miss and the lease
        would stay held until it expires, refusing the instance's next drill."""
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                token = await leases.try_acquire_lease(self.pool, self.key, self.holder, self.ttl)
            except (asyncpg.PostgresError, OSError, CatalogError) as e:
                log.warning("drill lease %s not renewed: %s", self.key, type(e).__name__)
                continue
            if token is None:
                log.warning("drill lease %s lost to another holder", self.key)
            else:
                self.token = token

    async def release(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.token is not None:
            with contextlib.suppress(asyncpg.PostgresError, OSError):
                await leases.release_holder(self.pool, self.key, self.holder)   # the holder is unique to this drill
            self.token = None


async def begin(pool: asyncpg.Pool, settings: Settings, guid: str, *, point: DrillPoint, trigger: str, holder: str,
                state: str) -> tuple[int, LeaseHolder]:
    """Reap the instance's abandoned drills, take its drill lease, create the row (``queued`` for a
    supervised worker, ``running`` for an in-process drill). :raises DrillBusy: a drill of the instance
    is active; UnknownInstance."""
    await repo.get_instance(pool, guid)
    await reap(pool, settings, guid)
    # one holder identity per drill (replica + a nonce): a second request in the same replica must find
    # the lease held, never renew it and then release it from under the running drill
    lease = LeaseHolder(pool, settings, guid, f"{holder}#{secrets.token_hex(4)}")
    holder = lease.holder
    if not await lease.acquire():
        raise DrillBusy(f"a drill of instance {guid!r} is already running")
    try:
        drill_id = await drills.create(pool, guid, trigger=trigger, holder=holder, target=point_doc(point),
                                       state=state)
    except Conflict as e:
        await lease.release()
        raise DrillBusy(str(e)) from None
    except BaseException:
        await lease.release()
        raise
    return drill_id, lease


@tracing.traced("drill", lambda a: {"instance.guid": a.get("guid"), "drill.trigger": a.get("trigger")})
async def run_drill(pool: asyncpg.Pool, settings: Settings, guid: str, *, point: DrillPoint = LATEST,
                    trigger: str = "manual", holder: str | None = None, drill_id: int | None = None,
                    budget: ScratchBudget | None = None, progress: Progress | None = None,
                    s3: Any | None = None, on_record: Callable[[DrillOutcome], None] | None = None) -> DrillOutcome:
    """Run one drill of ``guid`` to its recorded end.

    ``drill_id`` None: an in-process drill (the CLI): lease, row, run, record. ``drill_id`` given: the
    ``queued`` row a supervisor created (holding the lease) is run here, in a worker process.
    Never raises for a drill that ran (the outcome says how it ended); raises DrillBusy, UnknownInstance,
    catalog errors when it could not run. Cancellation records the drill as failed and cleans up first
    (``on_record`` receives the recorded outcome, also then).
    """
    holder = holder or default_holder()
    lease: LeaseHolder | None = None
    if drill_id is None:
        drill_id, lease = await begin(pool, settings, guid, point=point, trigger=trigger, holder=holder,
                                      state="running")
    else:
        row = await drills.start(pool, drill_id)
        guid = row.instance_guid
    root = scratch.scratch_root(settings.drill_scratch_dir)
    d = scratch.drill_dir(root, drill_id)
    t0 = time.monotonic()
    state = _Run(point_doc(point))
    result: drills.DrillResult | None = None

    async def on_server(pid: int, pgdata: Path) -> None:
        await drills.record_server(pool, drill_id, pid, str(pgdata))

    try:
        result = await asyncio.wait_for(
            _execute(pool, settings, guid, point, d, root, budget or ScratchBudget(settings.drill_scratch_budget_bytes),
                     state, progress, s3, on_server),
            timeout=settings.drill_timeout_seconds)
    except TimeoutError:
        result = state.failed("timeout", f"the drill overran its timeout of {settings.drill_timeout_seconds:g} s "
                                         "and was stopped", t0)
    except asyncio.CancelledError:
        result = state.failed("cancelled", "the drill was cancelled (service shutting down or supervisor gone) "
                                           "and stopped", t0)
        raise
    except Exception as e:   # a bug must still leave a finished row and no scratch directory
        log.exception("drill %s of %s failed unexpectedly", drill_id, guid)
        result = state.failed("internal", f"{type(e).__name__}: {e}", t0)
    finally:
        assert result is not None
        if result.duration_s is None:
            result = _with_duration(result, time.monotonic() - t0)
        maps = state.relmaps if result.state == "passed" else []
        cleanup = asyncio.ensure_future(_finish(pool, settings, guid, drill_id, d, result, lease, maps))
        try:
            await asyncio.shield(cleanup)
        except asyncio.CancelledError:
            await cleanup
            raise
        finally:
            if on_record is not None:
                on_record(state.outcome(drill_id, guid, result))
    return state.outcome(drill_id, guid, result)


def _with_duration(r: drills.DrillResult, duration: float) -> drills.DrillResult:
    return replace(r, duration_s=duration)


async def _finish(pool: asyncpg.Pool, settings: Settings, guid: str, drill_id: int, d: Path,
                  result: drills.DrillResult, lease: LeaseHolder | None, maps: list[Any] | None = None) -> None:
    """Remove the scratch directory, then record (one UPDATE) with the clone's relation maps, prune the
    history, release the lease."""
    try:
        await asyncio.to_thread(scratch.remove_drill_dir, d)
        if not await drills.finish(pool, drill_id, result):
            log.warning("drill %s was already finished (abandoned?); its result %s is not recorded",
                        drill_id, result.state)
        elif maps:
            try:
                await relmaps.save(pool, guid, drill_id, maps)
            except (asyncpg.PostgresError, OSError) as e:
                log.warning("relation maps of drill %s not stored: %s", drill_id, e)
        await drills.prune(pool, guid, settings.drill_history_per_instance)
    finally:
        if lease is not None:
            await lease.release()
    log.info("drill %s of %s: %s%s", drill_id, guid, result.state, f" ({result.reason})" if result.reason else "")


class _Run:
    """What a drill learned so far (the requested target, then the plan's), to build its result."""

    def __init__(self, target: dict[str, Any]) -> None:
        self.target: dict[str, Any] = target
        self.backup: dict[str, Any] | None = None
        self.reached: dict[str, Any] | None = None
        self.error: dict[str, Any] | None = None
        self.checked = 0
        self.relmaps: list[Any] = []

    async def read_relmaps(self, sock: Path, port: int) -> None:
        """The verified clone's relation maps (issue 20), stored when the drill passes; never fails it."""
        stop = (self.backup or {}).get("stop_time")
        try:
            fallback = datetime.fromisoformat(stop) if isinstance(stop, str) else now()
            self.relmaps = await read_clone(sock, port, fallback)
        except (OSError, TimeoutError, ValueError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
            log.warning("relation maps not read from the drill's clone: %s", e)

    def failed(self, stage: str, message: str, t0: float | None = None, *, segment: str | None = None,
               postgres_log: list[str] | None = None, code: str = "drill_failed",
               state: str = "failed", **times: Any) -> drills.DrillResult:
        reason = rules.failure_reason(stage, message, segment) if state == "failed" else message
        self.error = {"code": code, "stage": stage, "message": reason, "segment": segment,
                      "postgres_log": list(postgres_log or [])}
        return drills.DrillResult(
            state, target=self.target, backup_label=(self.backup or {}).get("label"), stage=stage, reason=reason,
            segment=segment, postgres_log=list(postgres_log or [])[-POSTGRES_LOG_LINES:],
            duration_s=None if t0 is None else time.monotonic() - t0, **times)

    def outcome(self, drill_id: int, guid: str, r: drills.DrillResult) -> DrillOutcome:
        return DrillOutcome(drill_id, guid, r.state, self.target, self.backup,
                            self.reached, r.duration_s or 0.0, None if r.state == "passed" else self.error,
                            self.checked)


async def _execute(pool: asyncpg.Pool, settings: Settings, guid: str, point: DrillPoint, d: Path, root: Path,
                   budget: ScratchBudget, run: _Run, progress: Progress | None, s3: Any | None,
                   on_server: Any = None) -> drills.DrillResult:

    t0 = time.monotonic()
    rec = await repo.get_instance(pool, guid)
    if rec.ref.deleted_at is not None:
        return run.failed("plan", f"instance {guid} is deleted; drills prove live instances", t0, state="skipped",
                          code="skipped")
    target = make_target(**point.target_kwargs())
    try:
        plan = await plan_uc.instance_plan_doc(pool, settings, rec, target)
    except NotScanned as e:
        return run.failed("plan", str(e), t0, state="skipped", code="skipped")
    except PlanningError as e:
        return run.failed("plan", f"the archive cannot be planned to this point ({e.code}): {e.message}", t0,
                          code=e.code)
    run.target, run.backup = document_json(plan.target), document_json(plan.backup)
    snap = await repo.load_snapshot(pool, guid)
    need = _need(plan, snap)
    why = budget.reserve(need, root)
    if why is not None:
        return run.failed("budget", f"not started: {why}", t0, state="skipped", code="skipped")
    try:
        return await _restore_and_verify(settings, rec, plan, snap, d, run, progress, s3, t0, on_server)
    finally:
        budget.release(need)


def _need(plan: PlanDoc, snap: Any) -> int:
    chosen = next((b for b in snap.backups if b.label == plan.backup.label), None)
    return rules.estimate_scratch_bytes(chosen.size_bytes if chosen else None,
                                        chosen.repo_size_bytes if chosen else None,
                                        plan.wal.segments, snap.seg_size)


async def scratch_need(pool: asyncpg.Pool, settings: Settings, guid: str, point: DrillPoint) -> int | None:
    """The scratch bytes a drill of ``guid`` at ``point`` needs (None: it cannot be planned; the drill
    itself records why)."""
    try:
        rec = await repo.get_instance(pool, guid)
        target = make_target(**point.target_kwargs())
        plan = await plan_uc.instance_plan_doc(pool, settings, rec, target)
        return _need(plan, await repo.load_snapshot(pool, guid))
    except (PlanningError, CatalogError):
        return None


def _make_dir(d: Path) -> None:
    d.mkdir(mode=0o755)
    d.chmod(0o755)     # the server runs as ``postgres`` and must reach pgdata below


async def _restore_and_verify(settings: Settings, rec: Any, plan: PlanDoc, snap: Any, d: Path, run: _Run,
                              progress: Progress | None, s3: Any | None, t0: float,
                              on_server: Any = None) -> drills.DrillResult:

    await asyncio.to_thread(_make_dir, d)
    checks: asyncio.Task[Any] | None = None
    if settings.drill_verify_checksums and plan.source.layout == "pgbackrest":
        checks = asyncio.create_task(_checksums(settings, rec, plan, snap, s3))
    # the executor's work directory (tool config, socket, server log) lives in the drill's directory too
    in_scratch = settings.model_copy(update={"restore_work_dir": str(d)})
    restore = asyncio.create_task(execute_plan(plan, d / "pgdata", in_scratch, progress=progress,
                                               check_query=settings.drill_check_query or None,
                                               on_server=on_server, socket_dir=str(d),
                                               inspect=run.read_relmaps))
    try:
        if checks is not None:
            try:
                report = await checks
            except Exception as e:
                log.warning("checksum pass of %s not completed: %s", rec.guid, e)
                report = None
            if report is not None:
                run.checked = report.checked
                bad = report.first
                if bad is not None:
                    return run.failed("verify", f"checksum mismatch in segment {bad.segment} (object {bad.key}: "
                                      "its content does not match the sha1 in its name)", t0, segment=bad.segment,
                                      code="checksum_mismatch")
        try:
            res = await restore
        except RestoreError as e:
            if e.code == "bad_input":    # this host cannot restore it (binaries, tools): not the archive's fault
                return run.failed(e.stage or "input", f"could not run here: {e.message}", t0, state="skipped",
                                  code=e.code)
            return run.failed(e.stage or "recover", e.message, t0, segment=e.segment,
                              postgres_log=list(e.postgres_log), code=e.code)
        run.target, run.backup = document_json(res.target), document_json(res.backup)
        run.reached = {"lsn": res.reached_lsn, "last_commit_time": res.last_commit_time, "timeline": res.timeline,
                       "check_result": res.check_result}
        return drills.DrillResult("passed", target=run.target, backup_label=(run.backup or {}).get("label"),
                                  reached_lsn=res.reached_lsn, fetch_s=res.fetch_s, replay_s=res.replay_s,
                                  duration_s=time.monotonic() - t0, bytes_fetched=res.bytes_fetched,
                                  postgres_log=list(res.postgres_log)[-POSTGRES_LOG_LINES:])
    finally:
        for t in (checks, restore):
            if t is not None and not t.done():
                t.cancel()
        await asyncio.gather(*(t for t in (checks, restore) if t is not None), return_exceptions=True)


async def _checksums(settings: Settings, rec: Any, plan: PlanDoc, snap: Any, s3: Any | None) -> Any:

    segments = segments_of_plan(plan, snap)
    stanza = rec.stanza or rec.storage.stanza or "main"
    if s3 is not None:
        return await verify_pgbackrest(s3, rec.storage.bucket, rec.storage.prefix, stanza, segments, snap.seg_size)
    async with s3_client(settings) as client:
        return await verify_pgbackrest(client, rec.storage.bucket, rec.storage.prefix, stanza, segments,
                                       snap.seg_size)


async def sweep_scratch(pool: asyncpg.Pool, settings: Settings) -> list[int]:
    """Remove the scratch directories of drills no longer active (left by a killed process)."""
    active, upto = await drills.active_ids(pool)
    root = scratch.scratch_root(settings.drill_scratch_dir)
    return await asyncio.to_thread(scratch.sweep, root, active, upto)


async def reap(pool: asyncpg.Pool, settings: Settings, guid: str | None = None) -> list[int]:
    """The reaper (issue 24): finish as abandoned every active drill (of ``guid``, or of every instance)
    whose process died — its lease expired — then stop the recovery server it recorded, remove its scratch
    directory and record in the row what was cleaned. Called by the next drill of the instance, at ``serve``
    start and on every scheduler tick. Returns the ids finished."""
    root = scratch.scratch_root(settings.drill_scratch_dir)
    gone = await drills.abandon(pool, guid)
    for a in gone:
        d = scratch.drill_dir(root, a.id)
        done = await asyncio.to_thread(scratch.remove_drill_dir, d, a.server_pid)
        if a.server_pid and not any(str(a.server_pid) in x for x in done):
            done.insert(0, f"its server {a.server_pid} was already gone")
        await drills.record_cleanup(pool, a.id, f"on {socket.gethostname()}: " + ("; ".join(done) or "nothing was left"))
        log.warning("drill %s of %s was abandoned by its process; recorded as failed; cleaned: %s", a.id,
                    a.instance_guid, "; ".join(done) or "nothing was left")
    return [a.id for a in gone]


def drill_doc(r: drills.DrillRow) -> dict[str, Any]:
    """A recorded drill as the HTTP/CLI history document."""
    return {"id": r.id, "instance_guid": r.instance_guid, "state": r.state, "ok": r.state == "passed",
            "trigger": r.trigger, "requested_at": iso(r.requested_at), "started_at": iso(r.started_at),
            "finished_at": iso(r.finished_at), "target": r.target, "backup_label": r.backup_label,
            "stage": r.stage, "reason": r.reason, "segment": r.segment,
            "reached_lsn": str(r.reached_lsn) if r.reached_lsn is not None else None,
            "fetch_s": r.fetch_s, "replay_s": r.replay_s, "duration_s": r.duration_s,
            "bytes_fetched": r.bytes_fetched, "postgres_log": list(r.postgres_log), "cleanup": r.cleanup}


def now() -> datetime:
    return datetime.now(UTC)
