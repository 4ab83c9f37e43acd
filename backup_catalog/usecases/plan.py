"""Use case: plan a clone (resolve the name at the target time, plan, render the recovery files), for
the CLI's ``plan`` and ``POST /spaces/{space}/clones``."""
from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import asyncpg

from backup_catalog.formats.documents import iso
from backup_catalog.settings import PlanConfig
from backup_catalog.usecases.snapshots import SnapshotCache, path_windows_of, snapshot_of
from catalog import derived, repo, tracing
from catalog.rows import InstanceRecord
from recovery.errors import PlanningError
from recovery.model import ArchiveSnapshot
from recovery.narrow import narrowable
from recovery.plan import RecoveryPlan, WindowsUnknown, pg_major, plan_recovery
from recovery.target import Target

_CLONE_KEYS = {"clone-from", "point-in-time", "lsn", "latest", "immediate", "timeline", "exclusive", "pg-version",
               "before-xid", "restore-point", "restore-point-lsn"}


def _target_from_body(body: dict[str, Any]) -> Any:
    from recovery.target import make_target
    unknown = set(body) - _CLONE_KEYS
    if unknown:
        raise PlanningError("invalid_target", f"unknown fields: {', '.join(sorted(unknown))}")
    return make_target(point_in_time=body.get("point-in-time"), lsn=body.get("lsn"),
                       latest=bool(body.get("latest")), immediate=bool(body.get("immediate")),
                       timeline=body.get("timeline") or "latest", exclusive=bool(body.get("exclusive")),
                       before_xid=body.get("before-xid"), restore_point=body.get("restore-point"),
                       restore_point_lsn=body.get("restore-point-lsn"))


@tracing.traced("plan", lambda a: {"space.guid": a.get("space"), "clone_from": (a.get("body") or {}).get("clone-from")})
async def plan_doc(pool: asyncpg.Pool, settings: PlanConfig, space: str, body: dict[str, Any],
                   *, now: datetime | None = None, cache: SnapshotCache | None = None) -> dict[str, Any]:
    """Resolve ``clone-from`` in the space at the target time and plan the recovery (or raise a refusal).
    ``cache``: the long-running service's snapshot cache (see :mod:`backup_catalog.usecases.snapshots`)."""
    from recovery.target import TargetKind

    name = body.get("clone-from")
    if not isinstance(name, str) or not name:
        raise PlanningError("invalid_target", "clone-from must name a service instance")
    target = _target_from_body(body)
    at = target.time if target.kind is TargetKind.TIME else None
    async with pool.acquire() as c:     # one connection for the common path: resolve, narrowed load
        res = await repo.resolve_name(c, space, name, at)
        rec = res.record
        if rec.purge_policy is not None or rec.purged_at is not None:
            from backup_catalog.usecases.purge import purged_refusal
            raise purged_refusal(rec)
        inputs = (await repo.load_plan_inputs(c, rec.guid, target, PLAN_CANDIDATES)
                  if narrowable(target) and not target.exact else None)
    return await instance_plan_doc(pool, settings, rec, target, now=now, requested_pg=body.get("pg-version"),
                                   inputs=inputs, resolution=(res.reason, res.rule), inputs_given=True,
                                   cache=cache)


async def instance_plan_doc(pool: asyncpg.Pool, settings: PlanConfig, rec: InstanceRecord, target: Target, *,
                            now: datetime | None = None, requested_pg: int | None = None,
                            inputs: repo.PlanInputs | None = None,
                            resolution: tuple[str, str] | None = None, inputs_given: bool = False,
                            cache: SnapshotCache | None = None) -> dict[str, Any]:
    """The plan document for one instance, chosen by its GUID (drills); ``plan_doc`` after name resolution."""
    from recovery.jsonout import plan_to_dict
    from recovery.render import render_files, restore_command

    if target.exact:     # resolved from the WAL index first; planned from the whole snapshot
        from backup_catalog.usecases.walindex import resolve_target
        whole = await snapshot_of(pool, rec.guid, cache)
        target = await resolve_target(pool, rec, whole, target, store=_store_factory(settings, rec.storage.bucket))
        inputs = None
    elif not inputs_given and narrowable(target):
        inputs = await repo.load_plan_inputs(pool, rec.guid, target, PLAN_CANDIDATES)
    plan, snap = await _plan(pool, rec, target, now or datetime.now(UTC), requested_pg, inputs, cache=cache)
    pg_version = plan.pg_version or 15
    layout = rec.layout or snap.layout
    cmd = restore_command(layout, bucket=rec.storage.bucket, prefix=rec.storage.prefix.strip("/"),
                          stanza=rec.stanza or rec.storage.stanza or "main", endpoint_url=settings.s3_endpoint_url)
    files = render_files(plan, cmd, pg_version)
    doc = plan_to_dict(plan, files, cmd)
    # what an executor on another host needs to fetch and replay (DESIGN.md "Executing a clone")
    storage = {"layout": layout.value if layout else None, "bucket": rec.storage.bucket,
               "prefix": rec.storage.prefix.strip("/"), "stanza": rec.stanza or rec.storage.stanza}
    source_major = pg_major(rec.pg_version or snap.pg_version or plan.backup.pg_version)
    reason, rule = resolution or ("instance chosen by its GUID", "guid")
    source = {"instance_guid": rec.guid, "space_guid": rec.ref.space_guid, "name": rec.ref.name,
              "deleted_at": iso(rec.ref.deleted_at), "layout": layout.value if layout else None,
              "resolution": reason, "resolution_rule": rule}
    if rec.ref.deleted_at is not None:      # the undo period (issue 13): until when, and a warning past it
        from backup_catalog.usecases.purge_rules import policy_of
        policy = policy_of(settings)
        source["undo_until"] = iso(policy.undo_until(rec.ref.deleted_at))
        if (now or datetime.now(UTC)) >= policy.undo_until(rec.ref.deleted_at):
            doc["warnings"] = [*doc.get("warnings", []), (
                f"the undo period of deleted instance {rec.guid} ended at {source['undo_until']}: its archive may "
                f"be purged from {iso(policy.delete_after(rec.ref.deleted_at))} on (policy {policy.name})")]
    return {"source": source, "storage": storage, "pg_version": source_major, **doc}


PLAN_CANDIDATES = 4   # newest candidate backups loaded for a plan (recovery.narrow.narrow)


def _store_factory(settings: PlanConfig, bucket: str) -> Callable[[], AbstractAsyncContextManager[Any]]:
    """The archive's ObjectStore over the read-only S3 client (a before-xid target reads segments). The
    terminal-speed settings of ``plan`` carry no S3 credentials: then the full settings are loaded from the
    environment, only when a segment is read."""

    @asynccontextmanager
    async def store() -> AsyncIterator[Any]:
        from scheduler.clients import s3_client
        from scheduler.storage import S3Store
        full: Any = settings
        if not hasattr(settings, "aws_access_key_id"):
            from backup_catalog.settings import load_settings
            full = load_settings()
        async with s3_client(full) as client:
            yield S3Store(client, bucket)
    return store


async def _plan(pool: asyncpg.Pool, rec: InstanceRecord, target: Target, now: datetime,
                requested_pg: int | None, inputs: repo.PlanInputs | None,
                cache: SnapshotCache | None = None) -> tuple[RecoveryPlan, ArchiveSnapshot]:
    """Plan from the newest candidates and the stored windows (``inputs``, from ``repo.load_plan_inputs``;
    None when not stored for the current scan) when that is conclusive, else from the whole snapshot (the
    result is the same; see ``recovery.narrow.narrow``). Refusals always come from the whole snapshot."""
    def pg(snap: ArchiveSnapshot) -> int:
        return requested_pg or pg_major(rec.pg_version or snap.pg_version) or 15

    if narrowable(target):
        if inputs is None:     # no stored windows for this scan yet: compute and store them on the way
            d, whole = await derived.refresh(pool, rec.guid)
            try:
                return plan_recovery(whole, target, now=now, pg_version=pg(whole), windows=d.windows), whole
            except WindowsUnknown:   # no window at all on the requested path: the whole-snapshot refusal
                return plan_recovery(whole, target, now=now, pg_version=pg(whole)), whole
        try:
            plan = plan_recovery(inputs.snapshot, target, now=now, pg_version=pg(inputs.snapshot),
                                 windows=derived.parse_windows(inputs.windows_json))
            if plan.backup.label in inputs.prefix:
                return plan, inputs.snapshot
        except (PlanningError, WindowsUnknown, ValueError):
            pass
    snap = await snapshot_of(pool, rec.guid, cache)
    if cache is not None and narrowable(target):     # the whole snapshot's windows, once per generation
        try:
            return plan_recovery(snap, target, now=now, pg_version=pg(snap),
                                 windows=path_windows_of(rec.guid, snap, cache)), snap
        except WindowsUnknown:
            pass
    return plan_recovery(snap, target, now=now, pg_version=pg(snap)), snap


