"""The service's composition root: the aiohttp application (the HTTP API of :mod:`backup_catalog.api` with its resources,
middlewares and routes), and ``serve``.

Resources in ``cleanup_ctx`` (G8), each a plain async generator (startup before ``yield``, cleanup after, in
reverse order): the asyncpg pool (:func:`catalog.connect.open_catalog`), the S3 client, the drill
supervisor, the periodic jobs (:mod:`backup_catalog.service.jobs`). Shutdown stops
the scheduler, gives running scans ``SHUTDOWN_GRACE_SECONDS`` to finish, then cancels them; a
cancelled scan saves nothing (one transaction), so the catalog keeps the previous generation.
"""
from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing
import os
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import uvloop
from aiohttp import web

from backup_catalog.api import drills as drill_routes
from backup_catalog.api import keys, ready
from backup_catalog.api.auth import auth_middleware
from backup_catalog.api.errors import error_middleware
from backup_catalog.api.metrics import MULTIPROC_ENV, ApiMetrics, metrics_middleware, prepare_multiprocess_dir
from backup_catalog.api.openapi import openapi_document
from backup_catalog.api.routes import add_routes, query_middleware
from backup_catalog.api.userauth import UserAuth
from backup_catalog.service import jobs, logs
from backup_catalog.service.events import run_events
from backup_catalog.settings import Settings
from backup_catalog.usecases import scan
from backup_catalog.usecases.drill_schedule import DrillSupervisor
from backup_catalog.usecases.snapshots import ProcessScanCache
from catalog import migrate
from catalog.connect import open_catalog
from scheduler.clients import s3_client

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_SECONDS = 10.0


def create_app(settings: Settings, *, pool: asyncpg.Pool | None = None, s3: Any | None = None,
               start_scheduler: bool = True, holder: str | None = None) -> web.Application:
    """The HTTP service. ``pool``/``s3`` given: used as is and not closed here (tests)."""
    metrics = ApiMetrics()
    # a coverage URL with every filter and a cursor can exceed the default 8 KB request line
    app = web.Application(middlewares=[metrics_middleware(metrics), error_middleware],
                          handler_args={"max_line_size": 65536})
    roles = add_routes(app)
    users = UserAuth(settings, on_refusal=lambda reason: metrics.user_refusals.labels(reason).inc(),
                     on_preview=lambda outcome: metrics.user_previews.labels(outcome).inc())
    # auth runs inside the error middleware, so 401/403 are problem documents too
    app.middlewares.append(auth_middleware(settings, roles, users))
    app.middlewares.append(query_middleware())
    app[keys.SETTINGS] = settings
    app[keys.METRICS] = metrics
    document: Callable[[], dict[str, Any]] = openapi_document     # built on first request, once per process
    app[keys.OPENAPI] = document
    app[keys.HOLDER] = holder or scan.default_holder()
    app[keys.SCAN_TASKS] = set()
    app[keys.SCAN_CACHE] = ProcessScanCache(settings.scan_cache_backups)
    app[ready.RUNS_SCHEDULER] = start_scheduler
    app[ready.MIGRATIONS] = migrate.load_migrations()

    async def pool_ctx(app: web.Application) -> AsyncIterator[None]:
        if pool is not None:
            app[keys.POOL] = pool
            yield
            return
        own = await open_catalog(settings)
        app[keys.POOL] = own
        yield
        await own.close()

    async def s3_ctx(app: web.Application) -> AsyncIterator[None]:
        if s3 is not None:
            app[keys.S3] = s3
            yield
            return
        async with s3_client(settings) as client:
            app[keys.S3] = client
            yield

    def scan_done(outcome: Any) -> None:
        metrics.observe_scan(outcome)
        scan.log_outcome(outcome)

    async def scheduler_ctx(app: web.Application) -> AsyncIterator[None]:
        tasks = app[keys.SCAN_TASKS]

        def track(run: asyncio.Future[Any]) -> None:
            tasks.add(run)
            run.add_done_callback(tasks.discard)

        periodic = jobs.build_jobs(app[keys.POOL], settings, app[keys.S3], app[keys.HOLDER],
                                   drills=app[drill_routes.SUPERVISOR],
                                   on_scan_done=scan_done, track=track,
                                   on_drift=app[keys.METRICS].drift)
        app[keys.SCHEDULER] = periodic.scheduler
        periodic.start()
        yield
        await periodic.stop()

    async def drills_ctx(app: web.Application) -> AsyncIterator[None]:
        sup = DrillSupervisor(app[keys.POOL], settings, app[keys.HOLDER])
        app[drill_routes.SUPERVISOR] = sup
        # the reaper: at start and every DRILL_TICK_SECONDS, what dead drills left (issue 24)
        reaper = asyncio.create_task(sup.reap_forever()) if start_scheduler else None
        yield
        if reaper is not None:
            reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reaper
        await sup.shutdown(SHUTDOWN_GRACE_SECONDS)   # workers record their drills and clean up

    async def scans_ctx(app: web.Application) -> AsyncIterator[None]:
        yield
        await drain_scans(app[keys.SCAN_TASKS], SHUTDOWN_GRACE_SECONDS)

    async def users_ctx(app: web.Application) -> AsyncIterator[None]:
        yield
        await users.close()      # the HTTP session that asks UAA and the Cloud Controller

    app.cleanup_ctx.append(users_ctx)
    app.cleanup_ctx.append(pool_ctx)
    app.cleanup_ctx.append(s3_ctx)
    app.cleanup_ctx.append(scans_ctx)        # cleaned up after the scheduler, before S3 and the pool
    app.cleanup_ctx.append(drills_ctx)       # drills stop after the scheduler, before scans, S3 and the pool
    if start_scheduler:
        app.cleanup_ctx.append(scheduler_ctx)
        if settings.event_queue_urls():
            app.cleanup_ctx.append(events_ctx(settings))   # stops first: no batch outlives the pool
    return app


def events_ctx(settings: Settings) -> Any:
    """The S3 event consumer (``S3_EVENTS_QUEUE_URL``): one task per receive in flight; a gap reconciles."""
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        tasks = app[keys.SCAN_TASKS]

        def track(t: asyncio.Future[Any]) -> None:     # a reconcile after a gap: drained like the scans
            tasks.add(t)
            t.add_done_callback(tasks.discard)

        async with run_events(app[keys.POOL], settings, app[keys.S3], app[keys.HOLDER], app[keys.METRICS],
                              track=track):
            yield
    return ctx


async def drain_scans(tasks: set[asyncio.Task[Any]], grace: float) -> None:
    """Wait up to ``grace`` seconds for running scans, then cancel the rest and wait for them."""
    pending = {t for t in tasks if not t.done()}
    if not pending:
        return
    log.info("waiting up to %.0f s for %d running scan(s)", grace, len(pending))
    _, still = await asyncio.wait(pending, timeout=grace)
    for t in still:
        t.cancel()
    if still:
        log.warning("cancelled %d scan(s) at shutdown; the catalog keeps their previous generation", len(still))
        await asyncio.wait(still)
    for t in pending:
        if t.done() and not t.cancelled() and t.exception() is not None:
            log.error("scan task ended with %s", type(t.exception()).__name__)


async def run_server(settings: Settings, host: str, port: int, *, reuse_port: bool = False,
                     workers: int = 1) -> None:
    """``backup-catalog serve``: serve until SIGTERM/SIGINT, then shut down gracefully."""
    app = create_app(settings)
    runner = web.AppRunner(app, handle_signals=False, access_log_class=logs.AccessLogger)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_port=reuse_port or None)
        await site.start()
        sched = app.get(keys.SCHEDULER)
        periodic = {j.id: logs.every(j.trigger) for j in sched.get_jobs()} if sched else {}
        if settings.event_queue_urls():
            periodic["s3_events"] = f"{len(settings.event_queue_urls())} queue(s)"
        dsn = settings.catalog_dsn.get_secret_value() if settings.catalog_dsn else None
        logs.startup_line(host, port, workers, periodic, logs.catalog_of(dsn))
        # Everything imported and built at startup lives as long as the process: move it out of the
        # collector's generations so full collections only traverse what requests create (shorter pauses).
        gc.collect()
        gc.freeze()
        # A request for a year-long instance allocates thousands of short-lived objects; with the default
        # thresholds every few of them promote survivors and trigger full collections (tens of ms each).
        # Young collections stay as frequent as by default; full ones come 100x less often.
        gc.set_threshold(700, 10, 1000)
        stop = asyncio.Event()
        got: list[str] = []

        def on_signal(sig: signal.Signals) -> None:
            got.append(sig.name)
            stop.set()

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, on_signal, sig)
        await stop.wait()
        log.info("shutting down (%s): draining scans and drills", got[0] if got else "stop",
                 extra={"event": "stopping", "signal": got[0] if got else None})
    finally:
        await runner.cleanup()
    log.info("stopped", extra={"event": "stopped"})


def _worker(settings: Settings, host: str, port: int, workers: int) -> None:
    logs.configure(settings.log_level, settings.log_format)
    uvloop.install()
    asyncio.run(run_server(settings, host, port, reuse_port=True, workers=workers))


def serve_workers(settings: Settings, host: str, port: int, workers: int) -> int:
    """``serve --workers N``: N processes, each a whole replica (pool, scheduler, HTTP) on one port
    (SO_REUSEPORT: the kernel spreads connections). Replicas already coordinate through the catalog
    (leases, fenced saves, the run log), so workers need nothing more. SIGTERM/SIGINT stop them all
    gracefully; if one dies, the others are stopped and its exit code returned. /metrics is one set: the
    fleet gauges come from the catalog, the process counters are summed over the workers (prometheus-client
    multiprocess mode in a directory made here, or PROMETHEUS_MULTIPROC_DIR when set).
    """
    own_dir = None
    if not os.environ.get(MULTIPROC_ENV):
        own_dir = tempfile.mkdtemp(prefix="backup-catalog-metrics-")
        os.environ[MULTIPROC_ENV] = own_dir     # inherited by the spawned workers before they import anything
    prepare_multiprocess_dir(os.environ[MULTIPROC_ENV])
    try:
        return _run_workers(settings, host, port, workers)
    finally:
        if own_dir is not None:
            os.environ.pop(MULTIPROC_ENV, None)
            shutil.rmtree(own_dir, ignore_errors=True)


def _run_workers(settings: Settings, host: str, port: int, workers: int) -> int:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(settings, host, port, workers), name=f"serve-{i}") for i in range(workers)]
    for p in procs:
        p.start()
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True
        for p in procs:
            if p.is_alive():
                p.terminate()   # SIGTERM: each worker drains gracefully

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    code = 0
    while any(p.is_alive() for p in procs):
        for p in procs:
            p.join(timeout=0.5)
            if not p.is_alive() and not stopping:
                log.error("worker %s exited with %s; stopping the others", p.name, p.exitcode)
                code = p.exitcode or 1
                stop()
    return code
