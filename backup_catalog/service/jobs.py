"""The service's periodic jobs, together in one APScheduler 3 scheduler (started by ``serve``):

- ``scan_all`` every ``scan_interval_seconds``: every live instance, each under its scan lease
  (:mod:`backup_catalog.usecases.scan`, the same rule as CLI and HTTP scans);
- ``cf_sync`` every ``cf_sync_interval_seconds`` when Cloud Foundry discovery is configured: the name
  sync (:mod:`backup_catalog.cloudfoundry.namesync`), one replica at a time (lease ``cf-sync``);
- ``drills`` every ``drill_tick_seconds`` when scheduled drills are enabled: the due restore drills
  (:mod:`backup_catalog.usecases.drill_schedule`, slots claimed in the run log, one lease per instance).
- ``purge`` every ``purge_interval_seconds`` (0 = off, the default) when PURGE_AWS_* are set: a purge run
  (:mod:`backup_catalog.usecases.purge`), one replica at a time (lease ``purge``).
- ``wal_index`` every ``wal_index_interval_seconds`` when ``wal_index_enabled`` (the default): the WAL index
  job (:mod:`backup_catalog.usecases.walindex`), each instance under its scan lease, within
  ``wal_index_bytes_per_hour``.

A job failure is logged and never stops the scheduler.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import asyncpg
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from backup_catalog.cloudfoundry import namesync as cfsync
from backup_catalog.cloudfoundry.client import CloudController
from backup_catalog.settings import Settings
from backup_catalog.usecases import purge, scan, walindex
from backup_catalog.usecases.drill_schedule import DrillSupervisor, scheduled_enabled
from catalog import events as cat_events
from catalog import repo
from recovery.wal import DEFAULT_SEG_SIZE
from scheduler import runner
from scheduler.clients import purge_s3_client
from scheduler.eventapply import findings, unexplained
from scheduler.eventroute import classify
from scheduler.runner import ScanConfig

log = logging.getLogger(__name__)

JOB_ID = "scan_all"
CF_SYNC_JOB_ID = "cf_sync"
DRILLS_JOB_ID = "drills"


def make_scheduler(job: Callable[[], Any], settings: ScanConfig, interval_s: int | None = None, *,
                   run_now: bool = True) -> AsyncIOScheduler:
    """An AsyncIOScheduler with ``scan_all`` every ``interval_s`` (default ``scan_interval_seconds``; with S3
    events on, ``reconcile_interval_seconds``), not yet started.

    The trigger starts on an interval boundary so ticks fall at the start of their slot; one tick
    at a time (``max_instances=1``) and missed ticks coalesce into one.
    """
    interval = max(1, int(interval_s or settings.scan_interval_seconds))
    now = datetime.now(timezone.utc)
    start = scan.slot_for(now, interval) + timedelta(seconds=interval)
    sched = AsyncIOScheduler(timezone=timezone.utc)
    sched.add_job(job, IntervalTrigger(seconds=interval, start_date=start, timezone=timezone.utc), id=JOB_ID,
                  name="scan all instances", max_instances=1, coalesce=True,
                  misfire_grace_time=max(1, interval // 2),
                  next_run_time=now + timedelta(seconds=1) if run_now else start)
    return sched


@dataclass
class Jobs:
    """The scheduler with its jobs (not yet started) and what must be closed with it."""

    scheduler: AsyncIOScheduler
    cloud_controller: CloudController | None = None

    def start(self) -> None:
        self.scheduler.start()

    async def stop(self) -> None:
        """Stop scheduling (running scans are the caller's to drain) and close the Cloud Controller client."""
        self.scheduler.shutdown(wait=False)
        if self.cloud_controller is not None:
            await self.cloud_controller.close()


def scan_interval(settings: Settings) -> int:
    """The per-instance poll's interval: ``scan_interval_seconds``, or with S3 events on (the LIST is then
    the reconciler) ``reconcile_interval_seconds``."""
    return settings.reconcile_interval_seconds if settings.event_queue_urls() else settings.scan_interval_seconds


def build_jobs(pool: asyncpg.Pool, settings: Settings, s3: Any, holder: str, *,
               on_scan_done: scan.OnDone | None = None,
               track: Callable[[asyncio.Future[Any]], None] | None = None,
               drills: DrillSupervisor | None = None, on_drift: Callable[[int], None] | None = None) -> Jobs:
    """Every periodic job of ``serve`` in one scheduler. ``track`` receives each tick's scan task (the
    server drains them at shutdown); a scheduler shutdown cancels the tick, never the scans. With S3 events
    on, what each scan finds that the events had not told is reported to ``on_drift`` (objects)."""
    interval = scan_interval(settings)
    observe = (drift_observer(pool, on_drift, track=track)
               if settings.event_queue_urls() and on_drift is not None else None)

    async def scan_tick() -> None:
        run = asyncio.ensure_future(scan.run_once(pool, settings, s3, holder, on_done=on_scan_done,
                                                  interval=interval, observe=observe))
        if track is not None:
            track(run)
        try:
            await asyncio.shield(run)
        except asyncio.CancelledError:
            # the scheduler shut down (serve stopping): the scan goes on and the server drains it; the tick
            # ends quietly rather than as a job error with a traceback in the log
            return

    # with events on, the consumer's start is a gap: it runs the start-up reconcile (events_service)
    jobs = Jobs(make_scheduler(scan_tick, settings, interval, run_now=not settings.event_queue_urls()))
    jobs.cloud_controller = add_cf_sync(jobs.scheduler, pool, settings, s3, holder)
    if drills is not None:
        add_drills(jobs.scheduler, drills, settings)
    add_purge(jobs.scheduler, pool, settings, holder, track)
    add_wal_index(jobs.scheduler, pool, settings, s3, holder, track)
    return jobs


WAL_INDEX_JOB_ID = "wal_index"


def add_wal_index(sched: AsyncIOScheduler, pool: asyncpg.Pool, settings: Settings, s3: Any, holder: str,
                  track: Callable[[asyncio.Future[Any]], None] | None = None) -> bool:
    """The WAL index job (issue 20), beside the scans it follows. One budget per replica, kept across ticks.
    Returns whether the job was added (off: WAL_INDEX_ENABLED=false or WAL_INDEX_BYTES_PER_HOUR=0)."""
    if not settings.wal_index_enabled or settings.wal_index_bytes_per_hour <= 0:
        log.info("the WAL index job is off (WAL_INDEX_ENABLED / WAL_INDEX_BYTES_PER_HOUR)")
        return False
    budget = walindex.Budget(settings.wal_index_bytes_per_hour)

    async def index_tick() -> None:
        run = asyncio.ensure_future(walindex.run_once(pool, settings, s3, holder, budget))
        if track is not None:
            track(run)
        try:
            out = await asyncio.shield(run)
        except Exception:   # the catalog may be briefly unavailable: the next tick resumes from the cursors
            log.exception("WAL index tick failed")
            return
        done = [o for o in out if o.indexed]
        if done:
            log.info("WAL index: %s", ", ".join(f"{o.instance_guid} +{o.indexed} (lag {o.lag})" for o in done))

    sched.add_job(index_tick, "interval", seconds=settings.wal_index_interval_seconds, id=WAL_INDEX_JOB_ID,
                  name="WAL index", max_instances=1, coalesce=True,
                  next_run_time=datetime.now(timezone.utc) + timedelta(seconds=5))
    return True


def add_drills(sched: AsyncIOScheduler, supervisor: DrillSupervisor, settings: Settings) -> bool:
    """Scheduled restore drills: a tick every ``drill_tick_seconds`` starts the due drills
    (:mod:`backup_catalog.usecases.drill_schedule`). Off when ``drill_enabled`` is false, or unset and this
    host has no PostgreSQL server binaries. Returns whether the job was added."""
    if not scheduled_enabled(settings):
        log.info("scheduled drills are off (DRILL_ENABLED, or no PostgreSQL server binaries on this host)")
        return False

    async def drill_tick() -> None:
        try:
            started = await supervisor.tick()
            if started:
                log.info("scheduled drills started: %s", started)
        except Exception:   # the catalog may be briefly unavailable: the next tick retries
            log.exception("drill tick failed")

    sched.add_job(drill_tick, "interval", seconds=max(1, settings.drill_tick_seconds), id=DRILLS_JOB_ID,
                  name="restore drills", max_instances=1, coalesce=True,
                  next_run_time=datetime.now(timezone.utc) + timedelta(seconds=1))
    return True


def add_cf_sync(sched: AsyncIOScheduler, pool: asyncpg.Pool, settings: Settings, s3: Any,
                holder: str) -> CloudController | None:
    """Cloud Foundry name sync (discovery mode) as a job, one replica at a time (lease ``cf-sync``);
    None (no job) unless ``cf_api_url`` and ``cf_discovery_bucket`` are set."""
    if not (settings.cf_api_url and settings.cf_discovery_bucket):
        return None

    cc = CloudController.from_settings(settings)
    bucket, root = settings.cf_discovery_bucket, settings.cf_discovery_root

    async def cf_tick() -> None:
        token = await repo.try_acquire_lease(pool, "cf-sync", holder, settings.cf_sync_interval_seconds + 60.0)
        if token is None:
            return
        try:
            report = await cfsync.sync_once(pool, settings, s3, bucket, root, cc=cc)
            log.info("cf name sync: %s", report)
        except Exception:   # a failing Cloud Controller must never stop the scheduler; names are kept
            log.exception("cf name sync failed")
        finally:
            await repo.release_lease(pool, "cf-sync", holder, token)

    sched.add_job(cf_tick, "interval", seconds=max(1, settings.cf_sync_interval_seconds), id=CF_SYNC_JOB_ID,
                  name="Cloud Foundry name sync", max_instances=1, coalesce=True,
                  next_run_time=datetime.now(timezone.utc) + timedelta(seconds=1))
    return cc


PURGE_JOB_ID = "purge"


def add_purge(sched: AsyncIOScheduler, pool: asyncpg.Pool, settings: Settings, holder: str,
              track: Callable[[asyncio.Future[Any]], None] | None = None, *, first_in: float = 5.0) -> bool:
    """Scheduled purge runs every ``purge_interval_seconds`` (0: off), one replica at a time (the use case
    takes the ``purge`` lease; a replica that finds it held skips the tick). False when not scheduled."""
    if settings.purge_interval_seconds <= 0:
        return False
    if settings.purge_aws_access_key_id is None or settings.purge_aws_secret_access_key is None:
        log.warning("purge_interval_seconds=%d but PURGE_AWS_ACCESS_KEY_ID/PURGE_AWS_SECRET_ACCESS_KEY are unset: "
                    "no scheduled purge", settings.purge_interval_seconds)
        return False

    async def run() -> purge.Report:
        async with purge_s3_client(settings) as client:
            return await purge.run(pool, settings, client, holder=holder)

    async def purge_tick() -> None:
        task = asyncio.ensure_future(run())
        if track is not None:
            track(task)       # drained (then cancelled) at shutdown: a cancelled purge resumes next time
        try:
            report = await asyncio.shield(task)
            log.info("purge run finished objects_deleted=%d bytes_deleted=%d instances=%d failed=%s",
                     report.objects_deleted, report.bytes_deleted, len(report.entries), report.failed)
        except purge.PurgeBusy:
            log.info("purge run skipped: another replica is purging")
        except Exception:   # a failing purge must never stop the scheduler; the next run resumes it
            log.exception("purge run failed")

    sched.add_job(purge_tick, "interval", seconds=max(1, settings.purge_interval_seconds), id=PURGE_JOB_ID,
                  name="purge the archives of deleted instances past their undo period", max_instances=1,
                  coalesce=True, next_run_time=datetime.now(timezone.utc) + timedelta(seconds=first_in))
    return True


DRIFT_GRACE_SECONDS = 120.0   # events of objects a reconcile found may still be in flight this long


def drift_observer(pool: asyncpg.Pool, on_drift: Callable[[int], None], *, grace: float = DRIFT_GRACE_SECONDS,
                   track: Callable[[asyncio.Future[Any]], None] | None = None) -> runner.Observe:
    """A scan observer reporting each reconcile's drift: what it found that no event accounts for ``grace``
    seconds later (an event still in the queue at the LIST is not drift; a lost one is)."""

    def observe(guid: str, prev: Any, result: Any) -> None:
        f = findings(prev, result)
        if not f:
            on_drift(0)
            return
        task = asyncio.ensure_future(_drift_later(pool, guid, f, grace, on_drift))
        if track is not None:
            track(task)
    return observe


async def _drift_later(pool: asyncpg.Pool, guid: str, f: Any, grace: float, on_drift: Callable[[int], None]) -> None:

    await asyncio.sleep(grace)
    try:
        rec = await repo.get_instance(pool, guid)
        root = rec.storage.normalized_prefix()
        layout = rec.layout
        assert layout is not None, "a reconciled instance has a layout"
        seg = rec.seg_size or DEFAULT_SEG_SIZE
        evented = [classify(layout, rec.stanza, k.key[len(root):], seg)
                   for k in await cat_events.created_keys(pool, guid, root)]
    except Exception:      # the catalog went away: count what was found, as a reconcile would
        log.exception("drift check of %s", guid)
        evented = []
    n = unexplained(f, evented)
    if n:
        log.warning("reconcile of %s found %d object(s) no event had told", guid, n)
    on_drift(n)


async def reconcile_now(pool: asyncpg.Pool, settings: Settings, s3: Any, holder: str, *,
                        on_scan_done: scan.OnDone | None = None, on_drift: Callable[[int], None] | None = None,
                        grace: float = DRIFT_GRACE_SECONDS,
                        track: Callable[[asyncio.Future[Any]], None] | None = None) -> list[runner.ScanOutcome]:
    """A reconcile of every live instance now (after a consumer gap), in run-log slots of its own."""
    observe = drift_observer(pool, on_drift, grace=grace, track=track) if on_drift is not None else None
    return await scan.run_once(pool, settings, s3, holder, on_done=on_scan_done, job="reconcile", interval=1,
                               observe=observe)
