"""``GET /readyz``: ready to take traffic (issue 21). ``/healthz`` stays liveness (the process answers and the
catalog answers a query); readiness also needs the catalog at exactly this release's schema version and, in a
replica that runs the periodic jobs, the scheduler running. Not ready is a 503 problem document whose detail
names each thing that is not ready, with the checks as its ``checks`` member."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiohttp import web
from apscheduler.schedulers.base import STATE_RUNNING

from backup_catalog.api import keys
from backup_catalog.api.errors import problem
from catalog import migrate

READY_TIMEOUT_SECONDS = 3.0
RUNS_SCHEDULER = web.AppKey("runs_scheduler", bool)    # set by create_app: does this replica run the jobs
MIGRATIONS = web.AppKey("migrations", tuple)           # this release's migrations (read once)


@dataclass(frozen=True, slots=True)
class Checks:
    catalog_error: str | None                  # None: the catalog answered
    schema: migrate.SchemaStatus | None        # None: not read (catalog unreachable)
    runs_scheduler: bool
    scheduler_running: bool

    def not_ready(self) -> list[str]:
        """What is not ready, in words (empty: ready).

        >>> ms = migrate.order_migrations([migrate.parse_migration("0001_a.sql", ""),
        ...                                migrate.parse_migration("0002_b.sql", "")])
        >>> Checks("ConnectionRefusedError", None, True, False).not_ready()
        ['catalog unreachable: ConnectionRefusedError', 'scheduler not running']
        >>> Checks(None, migrate.status_of([1], ms), False, False).not_ready()
        ['catalog schema behind: version 1, this release needs 2 (pending: 0002_b; run backup-catalog db upgrade)']
        >>> Checks(None, migrate.status_of([1, 2], ms), True, True).not_ready()
        []
        """
        out = []
        if self.catalog_error is not None:
            out.append(f"catalog unreachable: {self.catalog_error}")
        elif self.schema is not None:
            s = self.schema
            if s.newer:
                out.append(f"catalog schema newer than this release: version(s) {', '.join(map(str, s.newer))}, "
                           f"this release knows up to {s.head}")
            elif s.fresh:
                out.append("catalog schema missing (run backup-catalog db upgrade)")
            elif s.pending:
                out.append(f"catalog schema behind: version {s.current}, this release needs {s.head} "
                           f"(pending: {', '.join(m.label for m in s.pending)}; run backup-catalog db upgrade)")
        if self.runs_scheduler and not self.scheduler_running:
            out.append("scheduler not running")
        return out

    def to_dict(self) -> dict[str, object]:
        s = self.schema
        return {"catalog": "unreachable" if self.catalog_error is not None else "ok",
                "schema_version": s.current if s is not None else None,
                "schema_expected": s.head if s is not None else None,
                "schema_pending": [m.label for m in s.pending] if s is not None else [],
                "scheduler": ("running" if self.scheduler_running else "not running") if self.runs_scheduler
                else "not run by this replica"}


async def check(app: web.Application) -> Checks:
    ms: tuple[migrate.Migration, ...] = app[MIGRATIONS]
    error: str | None = None
    schema = None
    try:
        async with asyncio.timeout(READY_TIMEOUT_SECONDS):
            schema = migrate.status_of(await migrate.applied_versions(app[keys.POOL]), ms)
    except TimeoutError:
        error = f"no answer within {READY_TIMEOUT_SECONDS:g} s"
    except Exception as e:    # any failure to reach or query the catalog is "not ready", never a 500
        error = type(e).__name__  # a public route: no host names or server messages
    runs = app[RUNS_SCHEDULER]
    scheduler = app.get(keys.SCHEDULER)
    # paused counts as not running: its jobs do not run
    return Checks(error, schema, runs, runs and scheduler is not None and scheduler.state == STATE_RUNNING)


async def get_ready(request: web.Request) -> web.Response:
    checks = await check(request.app)
    missing = checks.not_ready()
    if missing:
        return problem(request, 503, "Not ready", "; ".join(missing), "not_ready", checks=checks.to_dict())
    return web.json_response({"status": "ready", **checks.to_dict()})
