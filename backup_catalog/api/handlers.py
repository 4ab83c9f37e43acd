"""Request handlers: parse and validate at the edge (api.schemas), call the use cases, shape the reply.

Errors are raised, never rendered here: :mod:`backup_catalog.api.errors` turns them into responses.
"""
from __future__ import annotations

import asyncio

from aiohttp import web

from backup_catalog.api import keys
from backup_catalog.api.errors import NotAvailable, ScanBusy, ScanFailed, read_json
from backup_catalog.api.metrics import CONTENT_TYPE, ApiMetrics
from backup_catalog.api.params import bool_query, path_param
from backup_catalog.api.schemas import (
    CloneRequest,
    InstanceList,
    InstanceOut,
    InstancePatch,
    InstancePut,
    ScanOutcomeOut,
    dump,
)
from backup_catalog.formats.documents import instance_to_dict
from backup_catalog.usecases import backups, instances, plan, purge, scan
from catalog.errors import NotScanned
from recovery.errors import PlanningError
from recovery.model import InstanceRef, Storage


async def get_backups(request: web.Request) -> web.Response:
    space, name = path_param(request, "space_guid"), path_param(request, "name")
    # the document is assembled from stored JSON (backup_catalog.usecases.backups.backups_body); tests
    # check it against BackupsDoc, here it is not re-validated per request (a year of backups per instance)
    body = await backups.backups_body(request.app[keys.POOL], space, name, request.app[keys.SETTINGS])
    return web.Response(text=body, content_type="application/json")


async def post_clone(request: web.Request) -> web.Response:
    space = path_param(request, "space_guid")
    req = CloneRequest.model_validate(await read_json(request))
    try:
        doc = await plan.plan_doc(request.app[keys.POOL], request.app[keys.SETTINGS], space, req.request,
                                  cache=request.app[keys.SCAN_CACHE])
    except NotScanned as e:
        raise PlanningError("not_scanned", f"{e}: nothing can be planned before its archive is scanned") from None
    return web.json_response(doc.to_json())


async def put_instance(request: web.Request) -> web.Response:
    guid = path_param(request, "guid")
    body = InstancePut.model_validate(await read_json(request))
    ref = InstanceRef(instance_guid=guid, space_guid=body.space_guid, name=body.name,
                      org_guid=body.organization_guid)
    st = body.storage
    storage = Storage(bucket=st.bucket, prefix=st.prefix, layout=str(st.layout), stanza=st.stanza)
    created, rec = await instances.register(request.app[keys.POOL], ref, storage,
                                            service_plan_guid=body.service_plan_guid)
    return web.json_response(dump(InstanceOut, instance_to_dict(rec)), status=201 if created else 200)


async def patch_instance(request: web.Request) -> web.Response:
    guid = path_param(request, "guid")
    body = InstancePatch.model_validate(await read_json(request))
    rec = await instances.rename(request.app[keys.POOL], guid, body.name)
    return web.json_response(dump(InstanceOut, instance_to_dict(rec)))


async def delete_instance(request: web.Request) -> web.Response:
    guid = path_param(request, "guid")
    return web.json_response(await purge.delete_instance(request.app[keys.POOL], request.app[keys.SETTINGS], guid))


# -- operator ----------------------------------------------------------------------------------

async def list_instances(request: web.Request) -> web.Response:
    recs = await instances.list_all(request.app[keys.POOL])
    return web.json_response(dump(InstanceList, {"instances": [instance_to_dict(r) for r in recs]}))


async def post_scan(request: web.Request) -> web.Response:
    guid = path_param(request, "guid")
    full = bool_query(request, "full")
    app = request.app
    pool = app[keys.POOL]
    await instances.get(pool, guid)          # 404 for an unknown instance, before asking for S3
    if keys.S3 not in app:
        raise NotAvailable("no S3 client is configured")
    task = asyncio.ensure_future(scan.scan_now(pool, app[keys.SETTINGS], app[keys.S3], guid, app[keys.HOLDER],
                                               full=full))
    app[keys.SCAN_TASKS].add(task)
    task.add_done_callback(app[keys.SCAN_TASKS].discard)
    outcome, was_full = await asyncio.shield(task)   # a dropped client connection does not cut the scan
    if outcome.code in scan.SKIPPED:
        raise ScanBusy(f"instance {guid}: {outcome.message}")
    app[keys.METRICS].observe_scan(outcome)
    scan.log_outcome(outcome)
    doc = dump(ScanOutcomeOut, {
        "instance_guid": outcome.instance_guid, "ok": outcome.ok, "code": outcome.code, "message": outcome.message,
        "full": was_full, "backups": outcome.backups, "wal_runs": outcome.wal_runs,
        "unknown_objects": outcome.unknown_objects, "issues": outcome.issues, "seconds": round(outcome.seconds, 3)})
    if not outcome.ok:   # a failed scan is never a 2xx: 502/503 problem carrying the outcome
        raise ScanFailed(outcome.code or "scan_failed", f"instance {guid}: scan failed: {outcome.message}", doc)
    return web.json_response(doc)


# -- public ------------------------------------------------------------------------------------

async def get_health(request: web.Request) -> web.Response:
    try:
        async with asyncio.timeout(5):
            await request.app[keys.POOL].fetchval("SELECT 1")
    except (OSError, TimeoutError, Exception) as e:
        raise NotAvailable(f"catalog check failed ({type(e).__name__})") from None
    return web.json_response({"status": "ok"})


async def get_openapi(request: web.Request) -> web.Response:
    return web.json_response(request.app[keys.OPENAPI]())


async def get_metrics(request: web.Request) -> web.Response:
    m: ApiMetrics = request.app[keys.METRICS]
    settings = request.app[keys.SETTINGS]
    base = settings.external_url or f"{request.scheme}://{request.host}"
    resp = web.Response(body=await m.render(request.app[keys.POOL], settings, base_url=base))
    resp.headers["Content-Type"] = CONTENT_TYPE
    return resp

