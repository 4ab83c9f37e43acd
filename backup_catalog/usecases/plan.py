"""Use case: plan a clone (resolve the name at the target time, plan, render the recovery files), for
the CLI's ``plan`` and ``POST /spaces/{space}/clones``."""
from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import asyncpg

from backup_catalog.settings import PlanConfig
from backup_catalog.usecases.purge_rules import policy_of
from backup_catalog.usecases.snapshots import ProcessScanCache, snapshot_of, whole_inputs
from catalog import repo, scancache, tracing
from catalog.rows import InstanceRecord
from recovery.errors import PlanningError
from recovery.model import ArchiveSnapshot
from recovery.narrow import narrowable
from recovery.plan import RecoveryPlan, WindowsUnknown, pg_major, plan_recovery
from recovery.plandoc import PlanDoc, PlanSource, PlanStorage, plan_document
from recovery.render import render_files
from recovery.target import CloneRequest, Target, TargetKind
from recovery.timefmt import iso
from scheduler.layouts import spec_of
from scheduler.layouts.spec import LayoutArgumentError, StorageLoc


@tracing.traced("plan", lambda a: {"space.guid": a.get("space"), "clone_from": a["request"].clone_from})
async def plan_doc(pool: asyncpg.Pool, settings: PlanConfig, space: str, request: CloneRequest,
                   *, now: datetime | None = None, cache: ProcessScanCache | None = None) -> PlanDoc:
    """Resolve ``request.clone_from`` in the space at the target time and plan the recovery (or raise a
    refusal). ``cache``: the long-running service's snapshot cache (see
    :mod:`backup_catalog.usecases.snapshots`)."""
    target = request.target
    if not request.clone_from:
        raise PlanningError("invalid_target", "clone-from must name a service instance")
    at = target.time if target.kind is TargetKind.TIME else None
    async with pool.acquire() as c:     # one connection for the common path: resolve, narrowed load
        res = await repo.resolve_name(c, space, request.clone_from, at)
        rec = res.record
        if rec.purge_policy is not None or rec.purged_at is not None:
            from backup_catalog.usecases.purge import purged_refusal  # purge loads botocore: plan --json does not
            raise purged_refusal(rec)
        inputs = (await repo.load_plan_inputs(c, rec.guid, target, PLAN_CANDIDATES)
                  if narrowable(target) and not target.exact else None)
    return await instance_plan_doc(pool, settings, rec, target, now=now, requested_pg=request.pg_version,
                                   inputs=inputs, resolution=(res.reason, res.rule), inputs_given=True,
                                   cache=cache)


async def instance_plan_doc(pool: asyncpg.Pool, settings: PlanConfig, rec: InstanceRecord, target: Target, *,
                            now: datetime | None = None, requested_pg: int | None = None,
                            inputs: repo.PlanInputs | None = None,
                            resolution: tuple[str, str] | None = None, inputs_given: bool = False,
                            cache: ProcessScanCache | None = None) -> PlanDoc:
    """The plan document for one instance, chosen by its GUID (drills); ``plan_doc`` after name resolution."""
    if target.exact:     # resolved from the WAL index first; planned from the whole snapshot
        from backup_catalog.usecases.walindex import resolve_target  # exact targets only: it loads botocore
        whole = await snapshot_of(pool, rec.guid, cache)
        target = await resolve_target(pool, rec, whole, target, store=_store_factory(settings, rec.storage.bucket))
        inputs = None
    elif not inputs_given and narrowable(target):
        inputs = await repo.load_plan_inputs(pool, rec.guid, target, PLAN_CANDIDATES)
    now = now or datetime.now(UTC)
    plan, snap = await _plan(pool, rec, target, now, requested_pg, inputs, cache=cache)
    pg_version = plan.pg_version or 15
    layout = rec.layout or snap.layout
    stanza = rec.stanza or rec.storage.stanza
    # what an executor on another host needs to fetch and replay (DESIGN.md "Executing a clone")
    storage = PlanStorage(layout, rec.storage.bucket, rec.storage.prefix.strip("/"), stanza)
    cmd = _restore_command(storage, settings.s3_endpoint_url)
    reason, rule = resolution or ("instance chosen by its GUID", "guid")
    source = PlanSource(rec.guid, rec.ref.space_guid, rec.ref.name, iso(rec.ref.deleted_at), layout, reason,
                        rule)  # type: ignore[arg-type]  # rule: one of resolve_name's rules
    warnings: list[str] = []
    if rec.ref.deleted_at is not None:      # the undo period (issue 13): until when, and a warning past it
        policy = policy_of(settings)
        undo_until = policy.undo_until(rec.ref.deleted_at)
        source = replace(source, undo_until=iso(undo_until))
        if now >= undo_until:
            warnings.append(
                f"the undo period of deleted instance {rec.guid} ended at {iso(undo_until)}: its archive may "
                f"be purged from {iso(policy.delete_after(rec.ref.deleted_at))} on (policy {policy.name})")
    doc = plan_document(plan, files=render_files(plan, cmd, pg_version), restore_command=cmd, source=source,
                        storage=storage, pg_version=pg_major(rec.pg_version or snap.pg_version or plan.backup.pg_version))
    return replace(doc, warnings=(*doc.warnings, *warnings))


def _restore_command(st: PlanStorage, endpoint_url: str | None) -> str:
    """The layout's restore_command for the plan's archive (:mod:`scheduler.layouts`)."""
    if st.layout is None:
        raise PlanningError("unsupported_layout", "the archive's layout is unknown: no restore_command")
    loc = StorageLoc(st.layout, st.bucket, st.prefix, st.stanza or "main")
    try:
        return spec_of(st.layout).restore_command(loc, endpoint_url)
    except LayoutArgumentError as e:
        raise PlanningError("unsupported_layout", str(e)) from None


PLAN_CANDIDATES = 4   # newest candidate backups loaded for a plan (recovery.narrow.narrow)


async def _plan(pool: asyncpg.Pool, rec: InstanceRecord, target: Target, now: datetime,
                requested_pg: int | None, narrowed: repo.PlanInputs | None,
                cache: ProcessScanCache | None = None) -> tuple[RecoveryPlan, ArchiveSnapshot]:
    """One path: the narrowed inputs (the newest candidates and the stored windows, from
    ``repo.load_plan_inputs``) decide when they are conclusive; otherwise the whole snapshot and its
    windows (:func:`whole_inputs`) do. The result is the same either way (``recovery.narrow``); refusals
    always come from the whole snapshot."""
    def pg(snap: ArchiveSnapshot) -> int:
        return requested_pg or pg_major(rec.pg_version or snap.pg_version) or 15

    if narrowed is not None:
        plan = _conclusive(narrowed, target, now, pg(narrowed.snapshot))
        if plan is not None:
            return plan, narrowed.snapshot
    snap, windows = await whole_inputs(pool, rec.guid, cache)
    return plan_recovery(snap, target, now=now, pg_version=pg(snap), windows=windows), snap


def _conclusive(inputs: repo.PlanInputs, target: Target, now: datetime, pg_version: int) -> RecoveryPlan | None:
    """The plan from the newest candidates when it is the whole snapshot's (it chose a backup of the
    prefix); None when the candidates alone cannot tell: a refusal, a path the stored windows lack,
    unreadable stored windows, a backup outside the prefix."""
    try:
        plan = plan_recovery(inputs.snapshot, target, now=now, pg_version=pg_version, narrowed=True,
                             windows=scancache.parse_windows(inputs.windows_json))
    except (PlanningError, WindowsUnknown, ValueError):
        return None
    return plan if plan.backup.label in inputs.prefix else None


def _store_factory(settings: PlanConfig, bucket: str) -> Callable[[], AbstractAsyncContextManager[Any]]:
    """The archive's ObjectStore over the read-only S3 client (a before-xid target reads segments). The
    terminal-speed settings of ``plan`` carry no S3 credentials: then the full settings are loaded from the
    environment, only when a segment is read."""

    @asynccontextmanager
    async def store() -> AsyncIterator[Any]:
        # botocore only when a segment is read (exact targets), never for plan --json's start-up
        from scheduler.clients import s3_client
        from scheduler.storage import S3Store
        full: Any = settings
        if not hasattr(settings, "aws_access_key_id"):
            from backup_catalog.settings import load_settings  # pydantic: only when S3 must be reached
            full = load_settings()
        async with s3_client(full) as client:
            yield S3Store(client, bucket)
    return store
