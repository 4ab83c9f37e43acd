"""HTTP handlers of the undo period and purge (operator): ``GET /purges`` (dry run), ``POST /purges`` (run),
``POST/DELETE /instances/{guid}/hold``; the broker's ``DELETE /instances/{guid}`` answers ``undo_until``
(api.handlers). The scheduled purge of ``serve`` is a job in backup_catalog.service.jobs.
"""
from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from pydantic import Field

from backup_catalog.api import keys
from backup_catalog.api.errors import PROBLEMS, NotAvailable, read_json
from backup_catalog.api.params import path_param
from backup_catalog.api.schemas import _Request, _Response, dump
from backup_catalog.usecases import purge
from scheduler.clients import PurgeNotConfigured, purge_s3_client

log = logging.getLogger(__name__)

PROBLEMS.setdefault(purge.PurgeBusy, (409, "Purge in progress"))
# without PURGE_AWS_* this deployment may not delete at all: refused (403), not "try again later" (503)
PROBLEMS.setdefault(PurgeNotConfigured, (403, "Purge not configured"))


class HoldRequest(_Request):
    reason: str | None = Field(default=None, max_length=1000, pattern=r"^[^\x00]*$")


class HoldOut(_Response):
    instance_guid: str
    hold_at: str | None
    hold_reason: str | None
    deleted_at: str | None
    undo_until: str | None
    purged_at: str | None


class DeletedOut(_Response):
    instance_guid: str
    deleted_at: str | None
    undo_until: str | None


class PurgeEntry(_Response):
    instance_guid: str
    name: str
    space_guid: str
    prefix: str
    prefixes: list[str]
    objects: int
    bytes: int
    state: str
    reason: str | None


class PurgeDoc(_Response):
    instances: list[PurgeEntry]
    objects_deleted: int
    bytes_deleted: int


async def get_purges(request: web.Request) -> web.Response:
    app = request.app
    if keys.S3 not in app:
        raise NotAvailable("no S3 client is configured")
    report = await purge.plan(app[keys.POOL], app[keys.SETTINGS], app[keys.S3])
    return web.json_response(dump(PurgeDoc, report.to_json()))


async def post_purges(request: web.Request) -> web.Response:
    app = request.app
    task = asyncio.ensure_future(_run(app))
    app[keys.SCAN_TASKS].add(task)
    task.add_done_callback(app[keys.SCAN_TASKS].discard)
    report = await asyncio.shield(task)      # a dropped client connection does not cut the purge
    return web.json_response(dump(PurgeDoc, report.to_json()))


async def _run(app: web.Application) -> purge.Report:
    settings = app[keys.SETTINGS]
    async with purge_s3_client(settings) as client:
        return await purge.run(app[keys.POOL], settings, client, holder=app[keys.HOLDER])


async def post_hold(request: web.Request) -> web.Response:
    guid = path_param(request, "guid")
    body = HoldRequest.model_validate(await read_json(request))     # {} or {"reason": "..."}
    doc = await purge.hold(request.app[keys.POOL], request.app[keys.SETTINGS], guid, body.reason)
    return web.json_response(dump(HoldOut, doc))


async def delete_hold(request: web.Request) -> web.Response:
    guid = path_param(request, "guid")
    doc = await purge.unhold(request.app[keys.POOL], request.app[keys.SETTINGS], guid)
    return web.json_response(dump(HoldOut, doc))
