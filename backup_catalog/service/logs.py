"""What ``serve`` tells its operator: logging set-up (``LOG_LEVEL``, ``LOG_FORMAT``), the start-up line, the
access log and the scan outcome lines.

On a terminal the lines are text; otherwise (a container, systemd, a pipe) one JSON object per line
(python-json-logger), with the structured fields as members: ``{"time", "level", "logger", "message", ...}``.
The access log carries method, path, status, duration and the role that was authenticated — never a
credential, a token or a query string (which may carry a coverage cursor, not a secret, but is noise).
"""
from __future__ import annotations

import logging
import sys
from typing import IO, Any
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from pythonjsonlogger.json import JsonFormatter

from backup_catalog.api import keys

ACCESS = logging.getLogger("backup_catalog.access")
PROBES = frozenset({"/metrics", "/healthz", "/readyz"})
SERVICE = logging.getLogger("backup_catalog.service")



def configure(level: str = "INFO", fmt: str = "auto", stream: IO[str] | None = None) -> bool:
    """Route every logger to ``stream`` (stderr) at ``level``; JSON lines unless ``fmt`` is text, or auto on a
    terminal. Returns whether the output is JSON."""
    out = stream or sys.stderr
    as_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    handler = logging.StreamHandler(out)
    if as_json:
        handler.setFormatter(JsonFormatter("{asctime}{levelname}{name}{process}{message}", style="{",
                                           rename_fields={"asctime": "time", "levelname": "level",
                                                          "name": "logger", "process": "pid"}))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)   # ours replaces aiohttp's own access lines
    return as_json


class AccessLogger(AbstractAccessLogger):
    """One line per request: ``GET /path 200 3.1ms role=broker`` with the same as structured fields."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        role = request.get(keys.ROLE, "public")
        ms = round(time * 1000, 1)
        # probes (Prometheus every few seconds, the platform's health checks) at debug, unless they fail
        level = logging.DEBUG if request.path in PROBES and response.status < 400 else logging.INFO
        ACCESS.log(level, "%s %s %d %.1fms role=%s", request.method, request.path, response.status, ms, role,
                    extra={"method": request.method, "path": request.path, "status": response.status,
                           "duration_ms": ms, "role": role, "remote": request.remote})

    @property
    def enabled(self) -> bool:
        return ACCESS.isEnabledFor(logging.INFO)


def catalog_of(dsn: str | None) -> str:
    """Where the catalog is, for the start-up line: host, port and database of the DSN (never user or
    password), or the embedded cluster.

    >>> catalog_of("postgresql://bc:sekrit@db.internal:5433/catalog?sslmode=require")
    'postgresql://db.internal:5433/catalog'
    >>> catalog_of(None)
    'embedded'
    """
    if not dsn:
        return "embedded"
    try:
        u = urlsplit(dsn)
        return f"{u.scheme}://{u.hostname or 'localhost'}:{u.port or 5432}{u.path or ''}"
    except ValueError:
        return "(a DSN that does not parse as a URL)"


def every(trigger: Any) -> str:
    """An APScheduler trigger as the start-up line says it: ``every 300s`` for an interval."""
    interval = getattr(trigger, "interval", None)
    return f"every {int(interval.total_seconds())}s" if interval is not None else str(trigger)


def startup_line(host: str, port: int, workers: int, jobs: dict[str, Any], catalog: str) -> None:
    on = ", ".join(f"{k}={v}" for k, v in jobs.items())
    SERVICE.info("listening on http://%s:%d (workers=%d; jobs: %s; catalog %s)", host, port, workers, on or "none",
                 catalog, extra={"event": "started", "host": host, "port": port, "workers": workers,
                                 "jobs": jobs, "catalog": catalog})
