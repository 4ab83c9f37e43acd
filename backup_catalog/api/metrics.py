"""Prometheus metrics: fleet gauges rendered from the catalog at each scrape (one query over the stored
coverage facts, the scan state, the drills and the purges), plus this service's process counters (scans run,
HTTP requests).

``serve --workers N``: the catalog is shared, so whichever worker answers renders the same fleet gauges;
the process counters live in prometheus-client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, set by
``serve_workers`` for its workers) and every scrape sums them over all workers. One coherent set.

Labels are instance GUIDs, HTTP methods, route templates, states and status codes; never credentials. The
names (space GUID, service name) and the coverage page's URL are in one info series per instance,
``backup_catalog_instance_info``, which alerting rules join on ``instance_guid`` to name the instance
(deploy/prometheus/). The catalog being unreachable is ``backup_catalog_catalog_up 0`` (the process metrics
are still served). Each application owns its registry (tests build many applications).
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from urllib.parse import quote

import asyncpg
from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from backup_catalog.settings import Settings
from backup_catalog.usecases import coverage
from backup_catalog.usecases.drill_schedule import scheduled_enabled
from catalog import fleet
from catalog.errors import CatalogError
from recovery.grading import PURGE_STATES, RANK, STATUSES, purge_state
from scheduler.runner import ScanOutcome

log = logging.getLogger(__name__)

CONTENT_TYPE = CONTENT_TYPE_LATEST
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
DRILL_STATES = ("queued", "running", "passed", "failed", "skipped")
PURGE_OUTCOMES = ("running", "done", "refused", "failed")

class ApiMetrics:
    """The service's process metrics in one registry, and the fleet gauges rendered per scrape."""

    def __init__(self, multiprocess_dir: str | None = None) -> None:
        self.multiprocess_dir = multiprocess_dir or os.environ.get(MULTIPROC_ENV) or None
        r = self.registry = CollectorRegistry()
        own = None if self.multiprocess_dir else r     # multiprocess: values go to files, summed at scrape
        if self.multiprocess_dir:
            multiprocess.MultiProcessCollector(r, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        self.scan_duration = Gauge("backup_catalog_scan_duration_seconds",
                                   "Duration of the last scan run by this service", ["instance_guid"], registry=own,
                                   multiprocess_mode="mostrecent")
        self.scan_errors = Counter("backup_catalog_scan_errors", "Failed scans run by this service",
                                   ["instance_guid", "code"], registry=own)
        self.scans = Counter("backup_catalog_scans", "Scans run by this service", ["result"], registry=own)
        self.requests = Counter("backup_catalog_http_requests", "HTTP requests",
                                ["method", "route", "status"], registry=own)
        # end users (issue 19): by outcome only, never a user as a label
        self.user_previews = Counter("backup_catalog_user_clone_previews", "Clone previews asked by signed-in "
                                     "users, by outcome (planned, refused, invalid, unknown, error)", ["outcome"],
                                     registry=own)
        self.user_refusals = Counter("backup_catalog_user_refusals", "Requests of signed-in users refused, by "
                                     "reason (token_<check>, hidden, forbidden, cc_unavailable)", ["reason"],
                                     registry=own)
        self.latency = Histogram("backup_catalog_http_request_duration_seconds", "HTTP request latency",
                                 ["route"], registry=own)
        # S3 events (issue 22): what the consumer received and did with it, how late, and what it missed
        self.events = Counter("backup_catalog_events", "S3 events by what the consumer did with them "
                              "(received, applied, ignored, dropped) and why", ["outcome", "reason"], registry=own)
        self.event_lag = Histogram("backup_catalog_event_queue_lag_seconds", "Now minus the event's time, "
                                   "at receipt", registry=own,
                                   buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600))
        self.event_errors = Counter("backup_catalog_event_consumer_errors", "Event consumer errors",
                                    ["kind"], registry=own)
        self.event_drift = Counter("backup_catalog_event_drift_objects", "Objects a reconcile (LIST) found "
                                   "that the events had not told the catalog (target 0)", registry=own)

    # -- scans -----------------------------------------------------------------------------------
    def observe_scan(self, o: ScanOutcome) -> None:
        if o.code in ("lease_held", "slot_taken"):
            self.scans.labels("skipped").inc()
            return
        self.scans.labels("ok" if o.ok else "error").inc()
        self.scan_duration.labels(o.instance_guid).set(o.seconds)
        if not o.ok:
            self.scan_errors.labels(o.instance_guid, o.code or "error").inc()

    # -- S3 events (backup_catalog.usecases.events.Observer) ---------------------------------------
    def event(self, what: str, reason: str) -> None:
        self.events.labels(what, reason).inc()

    def lag(self, seconds: float) -> None:
        self.event_lag.observe(seconds)

    def consumer_error(self, kind: str) -> None:
        self.event_errors.labels(kind).inc()

    def drift(self, objects: int) -> None:
        self.event_drift.inc(objects)

    # -- the scrape ------------------------------------------------------------------------------
    async def render(self, pool: asyncpg.Pool, settings: Settings, *, now: datetime | None = None,
                     base_url: str = "") -> bytes:
        """The fleet gauges (from the catalog; ``catalog_up 0`` without them when it cannot be read) followed by
        the process metrics. ``base_url``: where operators reach this service (the coverage page links)."""
        try:
            fleet, up = await fleet_text(pool, settings, now or datetime.now(UTC), base_url), 1
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, CatalogError) as e:
            log.warning("fleet metrics not rendered: catalog unreachable (%s)", type(e).__name__)
            fleet, up = "", 0
        cat = _Family("backup_catalog_catalog_up", "gauge", "1 when the catalog database answered this scrape")
        cat.add(up)
        return (fleet + "\n".join(cat.lines) + "\n").encode() + generate_latest(self.registry)


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _num(v: float) -> str:
    return str(v) if isinstance(v, int) else repr(v)


class _Family:
    def __init__(self, name: str, kind: str, help_: str) -> None:
        self.lines = [f"# HELP {name} {help_}", f"# TYPE {name} {kind}"]
        self.name = name

    def add(self, value: float | None, **labels: str) -> None:
        if value is None:
            return
        lab = ",".join(f'{k}="{_esc(v)}"' for k, v in labels.items())
        self.lines.append(f"{self.name}{{{lab}}} {_num(value)}" if lab else f"{self.name} {_num(value)}")

    def put(self, value: float | None, labels: str) -> None:
        """A sample with its label set already rendered (``{instance_guid="..."}``): the per-instance path."""
        if value is not None:
            self.lines.append(f"{self.name}{labels} {_num(value)}")


def _ts(t: datetime | None) -> float | None:
    return t.timestamp() if t is not None else None


async def fleet_text(pool: asyncpg.Pool, settings: Settings, now: datetime, base_url: str = "") -> str:
    """The fleet gauges in the Prometheus text format: one catalog statement, graded in one pass."""
    es = await coverage.entries(pool, settings, now, extra=fleet.METRICS_EXTRA, joins=fleet.METRICS_JOINS,
                                explain=False)
    fam = {k: _Family(*v) for k, v in {
        "instances": ("backup_catalog_instances", "gauge", "Registered instances"),
        "status": ("backup_catalog_coverage_instances", "gauge", "Instances per coverage status"),
        "first": ("backup_catalog_first_recoverable_timestamp_seconds", "gauge",
                  "Earliest recoverable time over all windows"),
        "last": ("backup_catalog_last_recoverable_timestamp_seconds", "gauge",
                 "Latest recoverable time over all windows (the last archived commit)"),
        "newest": ("backup_catalog_newest_backup_timestamp_seconds", "gauge",
                   "Stop time of the newest completed backup"),
        "holes": ("backup_catalog_wal_holes", "gauge", "Missing WAL ranges between archived runs"),
        "scan": ("backup_catalog_last_scan_timestamp_seconds", "gauge", "End of the last successful scan"),
        "failing": ("backup_catalog_scan_failing", "gauge", "1 when the last scan attempt failed (catalog is stale)"),
        "grade": ("backup_catalog_coverage_status", "gauge",
                  "Coverage status of the instance: 0 ok, 1 warning, 2 critical"),
        "rpo": ("backup_catalog_rpo_seconds", "gauge",
                "Seconds from the last archived commit to now (to the deletion for deleted instances)"),
        "drill_ok": ("backup_catalog_last_successful_drill_timestamp_seconds", "gauge",
                     "End of the instance's last passed restore drill"),
        "drill_dur": ("backup_catalog_last_drill_duration_seconds", "gauge",
                      "Duration of the instance's newest finished restore drill"),
        "drill_failed": ("backup_catalog_last_drill_failed", "gauge",
                         "1 when the instance's newest finished restore drill failed"),
        "drills": ("backup_catalog_drills", "gauge", "Restore drills recorded in the catalog, by state"),
        "purge_inst": ("backup_catalog_purge_instances", "gauge", "Deleted instances by purge state"),
        "purge_due": ("backup_catalog_purge_due_bytes", "gauge",
                      ("Archive bytes of deleted instances past their undo period, not held (estimated from "
                      "catalogued backup sizes and WAL segments)")),
        "purged_bytes": ("backup_catalog_purge_reclaimed_bytes_total", "counter", "Bytes deleted by purges"),
        "purged_objects": ("backup_catalog_purge_deleted_objects_total", "counter", "Objects deleted by purges"),
        "purges": ("backup_catalog_purges", "gauge", "Purge runs recorded in the catalog, by outcome"),
        # issue 21: what the alerting rules (deploy/prometheus/) need besides the above
        "info": ("backup_catalog_instance_info", "gauge", "1 per instance: its space, current name, whether it "
                 "is deleted, and its coverage page (join on instance_guid to name an instance)"),
        "registered": ("backup_catalog_instance_registered_timestamp_seconds", "gauge",
                       "When the catalog registered the instance"),
        "hole_new": ("backup_catalog_wal_hole_after_newest_backup", "gauge",
                     "1 when WAL is missing after the newest backup (point-in-time recovery past it is cut)"),
        "corrupt": ("backup_catalog_corrupt_wal_segments", "gauge",
                    "WAL segments proven corrupt (recovery cannot replay past the first)"),
        "last_purge": ("backup_catalog_last_purge", "gauge", "1 for the outcome of the instance's newest purge run"),
        "rpo_warn": ("backup_catalog_rpo_warning_threshold_seconds", "gauge", "COVERAGE_WARNING_RPO_SECONDS"),
        "rpo_crit": ("backup_catalog_rpo_critical_threshold_seconds", "gauge", "COVERAGE_CRITICAL_RPO_SECONDS"),
        "wal_lag": ("backup_catalog_wal_index_lag_segments", "gauge",
                    "Archived WAL segments the WAL index has not read yet (from each timeline's cursor on)"),
        "drill_age": ("backup_catalog_drill_warning_age_seconds", "gauge",
                      "DRILL_WARNING_AGE_SECONDS (only while scheduled drills are on in this replica)"),
    }.items()}
    fam["rpo_warn"].add(settings.coverage_warning_rpo_seconds)
    fam["rpo_crit"].add(settings.coverage_critical_rpo_seconds)
    if scheduled_enabled(settings):
        fam["drill_age"].add(settings.drill_warning_age_seconds)
    base = base_url.rstrip("/")
    live = sum(1 for e in es if e.deleted_at is None)
    fam["instances"].add(live, state="live")
    fam["instances"].add(len(es) - live, state="deleted")
    counts = dict.fromkeys(STATUSES, 0)
    purge_counts = dict.fromkeys(PURGE_STATES, 0)
    due_bytes = 0
    grade_, failing, scan, first, last, newest, holes_, rpo, drill_failed, drill_dur, drill_ok = (
        fam[k] for k in ("grade", "failing", "scan", "first", "last", "newest", "holes", "rpo", "drill_failed",
                         "drill_dur", "drill_ok"))
    for e in es:
        g, f = e.grade, e.facts
        assert g is not None
        lab = f'{{instance_guid="{_esc(e.guid)}"}}'
        fam["info"].add(1, instance_guid=e.guid, space_guid=e.space_guid, name=e.name,
                        deleted="true" if e.deleted_at is not None else "false",
                        coverage_url=f"{base}/instances/{quote(e.guid, safe='')}/coverage.html")
        fam["registered"].put(_ts(e.record["registered_at"]), lab)
        if e.record["last_purge_outcome"] is not None:
            fam["last_purge"].add(1, instance_guid=e.guid, outcome=e.record["last_purge_outcome"])
        counts[g.status] += 1
        grade_.put(RANK[g.status], lab)
        failing.put(1 if e.failing else 0, lab)
        scan.put(_ts(e.last_scan), lab)
        if f is not None:
            first.put(_ts(f.first_recoverable), lab)
            last.put(_ts(f.latest_end), lab)
            newest.put(_ts(f.newest_done_stop_time), lab)
            holes_.put(f.holes_count, lab)
            fam["hole_new"].put(0 if f.hole_after_newest is None else 1, lab)
            fam["corrupt"].put(len(f.corrupt), lab)
            rpo.put(g.rpo_seconds, lab)
        if e.deleted_at is None and e.record["wal_index_lag"] is not None:
            fam["wal_lag"].put(int(e.record["wal_index_lag"]), lab)
        if e.drill is not None:
            drill_failed.put(0 if e.drill.ok else 1, lab)
            drill_dur.put(e.drill_duration_s, lab)
            drill_ok.put(_ts(e.record["drill_last_ok"]), lab)
        if e.deleted_at is not None:
            _, state = purge_state(e.deleted_at, e.hold_at, e.purged_at, settings.deleted_retention_days, now)
            if state is not None:
                purge_counts[state] += 1
                if state == "due" and f is not None:
                    due_bytes += f.archive_bytes
    for s, n in counts.items():
        fam["status"].add(n, status=s)
    for s, n in purge_counts.items():
        fam["purge_inst"].add(n, state=s)
    fam["purge_due"].add(due_bytes)
    drills: dict[str, int] = json.loads(es[0].record["agg_drills"]) if es else {}
    purges: dict[str, list[int]] = json.loads(es[0].record["agg_purges"]) if es else {}
    for s in sorted(set(DRILL_STATES) | set(drills)):
        fam["drills"].add(drills.get(s, 0), state=s)
    for o in sorted(set(PURGE_OUTCOMES) | set(purges)):
        fam["purges"].add(purges.get(o, [0])[0], outcome=o)
    fam["purged_bytes"].add(sum(v[1] or 0 for v in purges.values()))
    fam["purged_objects"].add(sum(v[2] or 0 for v in purges.values()))
    return "\n".join(_lines(fam.values())) + "\n"


def _lines(families: Iterable[_Family]) -> Iterable[str]:
    for f in families:
        yield from f.lines


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


def prepare_multiprocess_dir(path: str) -> None:
    """Empty a multiprocess directory before the workers start (stale files from a previous run would be
    summed into the counters)."""
    for name in os.listdir(path):
        if name.endswith(".db"):
            os.unlink(os.path.join(path, name))

