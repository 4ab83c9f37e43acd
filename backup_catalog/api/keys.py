"""Typed application keys: every resource the handlers share lives under one of these."""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import asyncpg
from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from backup_catalog.api.metrics import ApiMetrics
from backup_catalog.settings import Settings
from backup_catalog.usecases.snapshots import ProcessScanCache

# who the auth middleware let in (broker, operator, user; absent: a public route): for the access log
ROLE: Any = web.RequestKey("role", str) if hasattr(web, "RequestKey") else "backup_catalog.role"

SETTINGS = web.AppKey("settings", Settings)
POOL = web.AppKey("pool", asyncpg.Pool)
S3 = web.AppKey("s3", object)                      # an aiobotocore S3 client (untyped upstream)
SCHEDULER = web.AppKey("scheduler", AsyncIOScheduler)
METRICS = web.AppKey("metrics", ApiMetrics)
SCAN_CACHE = web.AppKey("scan_cache", ProcessScanCache)   # the scan cache's tier in this process (plan inputs)
HOLDER = web.AppKey("holder", str)                 # this replica's lease-holder identity
SCAN_TASKS = web.AppKey("scan_tasks", set)         # running scan tasks, awaited or cancelled at shutdown

ScanTasks = set[asyncio.Task[Any]]
# the OpenAPI document, as the composition root hands it in (api.openapi reads the route table)
OPENAPI: web.AppKey[Callable[[], dict[str, Any]]] = web.AppKey("openapi")
