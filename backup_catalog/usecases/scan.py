"""Use case: scan archives, with ONE lease-and-fencing rule for every caller (the scheduled ``scan_all``
job, ``POST /instances/{guid}/scan`` and the CLI's ``scan``).

APScheduler 3 cannot share a job store across processes, so every replica runs its own scheduler
and each instance's scan is claimed in PostgreSQL (RELIABILITY.md scenarios 12, 13):

1. ``record_run("scan", slot, guid, holder)``: the slot (the tick time floored to the interval) is
   claimed by exactly one replica per instance; already claimed: skip;
2. ``try_acquire_lease("scan:<guid>", holder, ttl)`` -> fencing token; held by another replica (still
   scanning an earlier slot): the slot is recorded as ``skipped:lease_held``;
3. scan and save in ONE transaction, fenced by the generation the scan started from and by the lease
   token (a holder paused past its TTL, whose lease another replica took, saves nothing);
4. ``finish_run`` with the outcome and ``release_lease`` (also on cancellation).

No session advisory locks are used, so none can leak on pooled connections. Every
``full_scan_every``-th run of an instance is a full reconcile (time based, so it survives replica
restarts and skipped slots: full when the last full scan is older than ``full_scan_every - 1/2``
intervals, or there was none).
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import asyncpg

from backup_catalog.settings import Settings
from catalog import repo
from catalog.errors import CatalogError, Conflict
from catalog.rows import ScanState
from recovery.timefmt import iso_offset
from scheduler.clients import s3_client
from scheduler.runner import Observe, ScanConfig, ScanOutcome, scan_instance

log = logging.getLogger(__name__)

SCHEDULED = "scan"     # run-log job name of scheduled scans
MANUAL = "manual"      # run-log job name of operator-requested scans (HTTP and CLI)
SKIPPED = frozenset({"lease_held", "slot_taken"})
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

OnDone = Callable[[ScanOutcome], None]


def default_holder() -> str:
    """This replica's identity in leases and the run log (host and process, no secrets)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def lease_ttl(settings: ScanConfig) -> float:
    """``scan_lease_ttl_seconds`` if set, else longer than any scan may take (scans are bounded by
    ``scan_deadline_seconds``). A holder that outlives its lease is fenced at save time, never trusted."""
    ttl = getattr(settings, "scan_lease_ttl_seconds", None)
    return float(ttl) if ttl else settings.scan_deadline_seconds + 60.0


def slot_for(now: datetime, interval_s: int) -> datetime:
    """The scheduled slot a tick at ``now`` belongs to: ``now`` floored to the interval (UTC epoch).

    >>> slot_for(datetime(2024, 1, 1, 10, 7, 31, tzinfo=timezone.utc), 300).isoformat()
    '2024-01-01T10:05:00+00:00'
    """
    step = max(1, int(interval_s))
    secs = int((now - EPOCH).total_seconds())
    return EPOCH + timedelta(seconds=secs - secs % step)


def full_due(state: ScanState, now: datetime, settings: ScanConfig) -> bool:
    """Is this scheduled run of an instance a full reconcile?"""
    if state.last_full_scan is None or settings.full_scan_every <= 1:
        return True
    every = timedelta(seconds=(settings.full_scan_every - 0.5) * settings.scan_interval_seconds)
    return now - state.last_full_scan >= every


def _skipped(guid: str, code: str, message: str) -> ScanOutcome:
    return ScanOutcome(guid, False, code, message)


async def scan_with_lease(pool: asyncpg.Pool, settings: ScanConfig, client: Any, guid: str, holder: str, *,
                          job: str, slot: datetime, full: bool | None = None,
                          now: datetime | None = None, observe: Observe | None = None) -> tuple[ScanOutcome, bool]:
    """Claim the slot, take the instance's lease, scan, record. Returns the outcome and whether the
    scan was full. ``full`` None: decided by :func:`full_due` at ``now``. Never raises for a scan
    failure (the outcome says it).
    """
    if not await repo.record_run(pool, job, slot, guid, holder, "running"):
        return _skipped(guid, "slot_taken", f"slot {iso_offset(slot)} already ran on another replica"), False
    key = f"scan:{guid}"
    result = "cancelled"
    token: int | None = None
    try:
        token = await repo.try_acquire_lease(pool, key, holder, lease_ttl(settings))
        if token is None:
            result = "skipped:lease_held"
            return _skipped(guid, "lease_held",
                            "another scan of this instance is running (a replica or a CLI scan holds its lease)"), False
        state = await repo.load_scan_state(pool, guid)
        is_full = full_due(state, now or datetime.now(timezone.utc), settings) if full is None else full
        try:
            o = await scan_instance(pool, client, guid, full=is_full, settings=settings,
                                    expected_generation=state.generation, lease_key=key, lease_token=token,
                                    observe=observe)
        except Conflict as e:   # fenced: another writer saved since we started; we wrote nothing
            log.warning("scan of %s fenced: %s", guid, e)
            o = ScanOutcome(guid, False, "fenced", str(e))
        except (CatalogError, asyncpg.PostgresError) as e:
            o = ScanOutcome(guid, False, getattr(e, "code", None) or "catalog_error", str(e))
        except Exception as e:  # a bug must not stop the other instances
            log.exception("scan of %s failed", guid)
            o = ScanOutcome(guid, False, "internal_error", type(e).__name__)
        result = "ok" if o.ok else (o.code or "error")
        return o, is_full
    finally:
        await _finish(pool, job, slot, guid, holder, token, key, result)


async def _finish(pool: asyncpg.Pool, job: str, slot: datetime, guid: str, holder: str, token: int | None,
                  key: str, result: str) -> None:
    try:
        await repo.finish_run(pool, job, slot, guid, result)
    finally:
        if token is not None:
            await repo.release_lease(pool, key, holder, token)


async def run_once(pool: asyncpg.Pool, settings: ScanConfig, client: Any, holder: str, *,
                   now: datetime | None = None, on_done: OnDone | None = None,
                   concurrency: int = 4, job: str = SCHEDULED, interval: int | None = None,
                   observe: Observe | None = None) -> list[ScanOutcome]:
    """One tick of ``scan_all``: every live instance, each under its lease; failures stay per instance.

    ``interval``: the tick interval the slot is floored to (default ``scan_interval_seconds``; with S3
    events on, ``reconcile_interval_seconds``); ``job``: the run-log name (``reconcile`` for the run after a
    consumer gap, with its own slots); ``observe`` sees each saved scan (drift)."""
    slot = slot_for(now or datetime.now(timezone.utc), interval or settings.scan_interval_seconds)
    guids = [r.guid for r in await repo.list_instances(pool, include_deleted=False)]
    sem = asyncio.Semaphore(max(1, concurrency))
    out: list[ScanOutcome] = []

    async def one(guid: str) -> None:
        async with sem:
            try:
                o, _ = await scan_with_lease(pool, settings, client, guid, holder, job=job, slot=slot,
                                              now=now, observe=observe)
            except (CatalogError, asyncpg.PostgresError, OSError) as e:   # lease/run-log I/O failed
                log.warning("scan of %s not run: %s", guid, type(e).__name__)
                o = ScanOutcome(guid, False, "catalog_unavailable", str(e))
            out.append(o)
            if on_done is not None:
                on_done(o)

    await asyncio.gather(*(one(g) for g in guids))
    return out


async def scan_now(pool: asyncpg.Pool, settings: ScanConfig, client: Any, guid: str, holder: str, *,
                   full: bool) -> tuple[ScanOutcome, bool]:
    """An operator-requested scan of one instance (HTTP or CLI), under the same lease as the scheduled
    scans: while another replica or process scans it, the outcome is ``lease_held`` and nothing is saved.
    Raises UnknownInstance for an unknown instance."""
    await repo.get_instance(pool, guid)
    return await scan_with_lease(pool, settings, client, guid, holder, job=MANUAL,
                                 slot=datetime.now(timezone.utc), full=full)


async def scan_many(pool: asyncpg.Pool, settings: ScanConfig, client: Any, guids: list[str], *, full: bool,
                    holder: str | None = None, on_done: OnDone | None = None,
                    concurrency: int = 8) -> list[ScanOutcome]:
    """Operator-requested scans of several instances (the CLI's ``scan``), concurrently, each under its
    lease (:func:`scan_now`); one instance's failure never stops the others."""
    who = holder or default_holder()
    sem = asyncio.Semaphore(max(1, concurrency))
    out: list[ScanOutcome] = []

    async def one(guid: str) -> None:
        async with sem:
            try:
                o, _ = await scan_with_lease(pool, settings, client, guid, who, job=MANUAL,
                                             slot=datetime.now(timezone.utc), full=full)
            except (CatalogError, asyncpg.PostgresError) as e:   # lease/run-log I/O failed
                o = ScanOutcome(guid, False, getattr(e, "code", None) or "catalog_error", str(e))
            out.append(o)
            if on_done is not None:
                on_done(o)

    await asyncio.gather(*(one(g) for g in guids))
    return out


async def scan_listed(pool: asyncpg.Pool, settings: Settings, guids: list[str], *, full: bool,
                      on_done: OnDone | None = None, concurrency: int = 8) -> list[ScanOutcome]:
    """:func:`scan_many` with this process's own read-only S3 client (the CLI's ``scan``, the bench)."""
    async with s3_client(settings) as client:
        return await scan_many(pool, settings, client, guids, full=full, on_done=on_done, concurrency=concurrency)


def log_outcome(outcome: ScanOutcome) -> None:
    """A scan's outcome as ``serve`` logs it (scheduled or asked for): ok at info, a failure at warning with
    its code; the structured fields are JSON members when the log is JSON lines."""
    fields = {"event": "scan", "instance_guid": outcome.instance_guid, "ok": outcome.ok, "code": outcome.code,
              "backups": outcome.backups, "wal_runs": outcome.wal_runs, "seconds": round(outcome.seconds, 3)}
    if outcome.ok:
        log.info("scan %s ok: %d backup(s), %d WAL run(s) in %.2fs", outcome.instance_guid, outcome.backups,
                 outcome.wal_runs, outcome.seconds, extra=fields)
    elif outcome.code not in SKIPPED:
        log.warning("scan %s failed (%s): %s", outcome.instance_guid, outcome.code, outcome.message, extra=fields)
