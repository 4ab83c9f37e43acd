"""The service's periodic jobs, together in one APScheduler 3 scheduler (started by ``serve``):

- ``scan_all`` every ``scan_interval_seconds``: every live instance, each under its scan lease
  (:mod:`backup_catalog.usecases.scan`, the same rule as CLI and HTTP scans);
- ``cf_sync`` every ``cf_sync_interval_seconds`` when Cloud Foundry discovery is configured: the name
  sync (:mod:`backup_catalog.cfsync`), one replica at a time (lease ``cf-sync``).

A job failure is logged and never stops the scheduler.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import asyncpg
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from backup_catalog.settings import Settings
from backup_catalog.usecases import scan
from catalog import repo
from scheduler.runner import ScanConfig

if TYPE_CHECKING:
    from backup_catalog.cfsync import CloudController

log = logging.getLogger(__name__)

JOB_ID = "scan_all"
CF_SYNC_JOB_ID = "cf_sync"


def make_scheduler(job: Callable[[], Any], settings: ScanConfig) -> AsyncIOScheduler:
    """An AsyncIOScheduler with ``scan_all`` every ``scan_interval_seconds`` (not yet started).

    The trigger starts on an interval boundary so ticks fall at the start of their slot; one tick
    at a time (``max_instances=1``) and missed ticks coalesce into one.
    """
    interval = max(1, int(settings.scan_interval_seconds))
    now = datetime.now(timezone.utc)
    start = scan.slot_for(now, interval) + timedelta(seconds=interval)
    sched = AsyncIOScheduler(timezone=timezone.utc)
    sched.add_job(job, IntervalTrigger(seconds=interval, start_date=start, timezone=timezone.utc), id=JOB_ID,
                  name="scan all instances", max_instances=1, coalesce=True,
                  misfire_grace_time=max(1, interval // 2), next_run_time=now + timedelta(seconds=1))
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


def build_jobs(pool: asyncpg.Pool, settings: Settings, s3: Any, holder: str, *,
               on_scan_done: scan.OnDone | None = None,
               track: Callable[[asyncio.Future[Any]], None] | None = None) -> Jobs:
    """Every periodic job of ``serve`` in one scheduler. ``track`` receives each tick's scan task (the
    server drains them at shutdown); a scheduler shutdown cancels the tick, never the scans."""
    async def scan_tick() -> None:
        run = asyncio.ensure_future(scan.run_once(pool, settings, s3, holder, on_done=on_scan_done))
        if track is not None:
            track(run)
        await asyncio.shield(run)

    jobs = Jobs(make_scheduler(scan_tick, settings))
    jobs.cloud_controller = add_cf_sync(jobs.scheduler, pool, settings, s3, holder)
    return jobs


def add_cf_sync(sched: AsyncIOScheduler, pool: asyncpg.Pool, settings: Settings, s3: Any,
                holder: str) -> CloudController | None:
    """Cloud Foundry name sync (discovery mode) as a job, one replica at a time (lease ``cf-sync``);
    None (no job) unless ``cf_api_url`` and ``cf_discovery_bucket`` are set."""
    if not (settings.cf_api_url and settings.cf_discovery_bucket):
        return None
    from backup_catalog import cfsync

    cc = cfsync.CloudController.from_settings(settings)
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
