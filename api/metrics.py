"""Prometheus metrics: per-instance catalog gauges (collected from the catalog at each scrape),
scan outcomes (recorded after each scan in this process) and HTTP request counters.

Labels are instance GUIDs, HTTP methods, route templates and status codes only: never names typed
by users, never credentials. Each application owns its registry (tests build many applications).
"""
from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

import asyncpg
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from backup_catalog.usecases.snapshots import SnapshotCache, snapshot_of, windows_of
from catalog import repo
from catalog.errors import CatalogError
from recovery.model import BackupStatus
from recovery.windows import holes
from scheduler.runner import ScanOutcome

log = logging.getLogger(__name__)

CONTENT_TYPE = CONTENT_TYPE_LATEST
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _ts(t: datetime | None) -> float | None:
    return t.timestamp() if t is not None else None


class ApiMetrics:
    """The service's metrics in one registry."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        lbl = ["instance_guid"]
        self.instances = Gauge("backup_catalog_instances", "Registered instances", ["state"], registry=r)
        self.first_recoverable = Gauge("backup_catalog_first_recoverable_timestamp_seconds",
                                       "Earliest recoverable time over all windows", lbl, registry=r)
        self.last_recoverable = Gauge("backup_catalog_last_recoverable_timestamp_seconds",
                                      "Latest recoverable time over all windows", lbl, registry=r)
        self.newest_backup = Gauge("backup_catalog_newest_backup_timestamp_seconds",
                                   "Stop time of the newest completed backup", lbl, registry=r)
        self.wal_holes = Gauge("backup_catalog_wal_holes", "Missing WAL ranges between archived runs", lbl,
                               registry=r)
        self.last_scan = Gauge("backup_catalog_last_scan_timestamp_seconds", "End of the last successful scan",
                               lbl, registry=r)
        self.scan_failing = Gauge("backup_catalog_scan_failing",
                                  "1 when the last scan attempt failed (catalog is stale)", lbl, registry=r)
        self.scan_duration = Gauge("backup_catalog_scan_duration_seconds",
                                   "Duration of the last scan run by this process", lbl, registry=r)
        self.scan_errors = Counter("backup_catalog_scan_errors", "Failed scans run by this process",
                                   ["instance_guid", "code"], registry=r)
        self.scans = Counter("backup_catalog_scans", "Scans run by this process", ["result"], registry=r)
        self.requests = Counter("backup_catalog_http_requests", "HTTP requests",
                                ["method", "route", "status"], registry=r)
        self.latency = Histogram("backup_catalog_http_request_duration_seconds", "HTTP request latency",
                                 ["route"], registry=r)
        self._per_instance = (self.first_recoverable, self.last_recoverable, self.newest_backup, self.wal_holes,
                              self.last_scan, self.scan_failing)

    # -- scans -----------------------------------------------------------------------------------
    def observe_scan(self, o: ScanOutcome) -> None:
        if o.code in ("lease_held", "slot_taken"):
            self.scans.labels("skipped").inc()
            return
        self.scans.labels("ok" if o.ok else "error").inc()
        self.scan_duration.labels(o.instance_guid).set(o.seconds)
        if not o.ok:
            self.scan_errors.labels(o.instance_guid, o.code or "error").inc()

    # -- catalog gauges --------------------------------------------------------------------------
    async def collect_catalog(self, pool: asyncpg.Pool, cache: SnapshotCache | None = None) -> None:
        """Refresh the per-instance gauges from the catalog (called at scrape time)."""
        recs = await repo.list_instances(pool)
        for g in self._per_instance:
            g.clear()
        self.instances.labels("live").set(sum(1 for r in recs if r.ref.deleted_at is None))
        self.instances.labels("deleted").set(sum(1 for r in recs if r.ref.deleted_at is not None))
        for rec in recs:
            guid = rec.guid
            state = await repo.load_scan_state(pool, guid)
            self.scan_failing.labels(guid).set(1 if state.last_error_code else 0)
            if state.last_scan is not None:
                self.last_scan.labels(guid).set(state.last_scan.timestamp())
            try:
                snap = await snapshot_of(pool, guid, cache)
            except CatalogError:   # never scanned: no windows yet
                continue
            wins = windows_of(guid, snap, cache)
            firsts = [w.from_time for w in wins if w.from_time is not None]
            lasts = [w.to_time for w in wins if w.to_time is not None]
            if firsts:
                self.first_recoverable.labels(guid).set(min(firsts).timestamp())
            if lasts:
                self.last_recoverable.labels(guid).set(max(lasts).timestamp())
            done = [b.stop_time for b in snap.backups if b.status is BackupStatus.DONE and b.stop_time]
            if done:
                self.newest_backup.labels(guid).set(max(done).timestamp())
            self.wal_holes.labels(guid).set(len(holes(snap.runs)))

    def render(self) -> bytes:
        return generate_latest(self.registry)


def metrics_middleware(metrics: ApiMetrics) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Count every response by method, route template (not the raw path) and status."""

    @web.middleware
    async def middleware(request: web.Request,
                         handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
        with metrics.latency.labels(route).time():
            resp = await handler(request)
        method = request.method if request.method in _METHODS else "OTHER"
        metrics.requests.labels(method, route, str(resp.status)).inc()
        return resp

    return middleware
