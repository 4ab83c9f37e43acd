"""Use case: restore a clone — from the catalog (a clone request planned here) or from a plan document.

Both end in :func:`executor.execute_plan`. A plan made here gains what an executor on another host needs
when the planner did not put it in the document yet: ``storage`` (layout, bucket, prefix, stanza) from the
catalog's instance and ``pg_version`` from the scanned archive.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg

from backup_catalog.settings import Settings
from catalog import repo
from executor import ProgressEvent, RestoreError, RestoreResult, execute_plan
from recovery.errors import PlanningError
from recovery.jsonout import refusal_to_dict


def _major(v: int | None) -> int | None:
    if v is None:
        return None
    return v // 10000 if v >= 90000 else v


async def with_storage(pool: asyncpg.Pool, doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` with ``storage`` and ``pg_version`` filled from the catalog where the plan lacks them."""
    if isinstance(doc.get("storage"), dict) and doc["storage"].get("bucket") and doc.get("pg_version"):
        return doc
    rec = await repo.get_instance(pool, doc["source"]["instance_guid"])
    out = dict(doc)
    if not (isinstance(doc.get("storage"), dict) and doc["storage"].get("bucket")):
        layout = doc["source"].get("layout") or (rec.layout.value if rec.layout else None)
        out["storage"] = {"layout": layout, "bucket": rec.storage.bucket, "prefix": rec.storage.prefix.strip("/"),
                          "stanza": rec.stanza or rec.storage.stanza or ("main" if layout == "pgbackrest" else None)}
    if not doc.get("pg_version"):
        out["pg_version"] = _major(rec.pg_version)
    return out


async def plan_clone(pool: asyncpg.Pool, settings: Settings, space: str, body: dict[str, Any]) -> dict[str, Any]:
    """The clone request planned (refusals raise :class:`PlanningError`), ready for an executor."""
    from backup_catalog.usecases import plan
    return await with_storage(pool, await plan.plan_doc(pool, settings, space, body))


async def restore_from_catalog(settings: Settings, space: str, body: dict[str, Any], pgdata: Path, *,
                               pool: asyncpg.Pool | None = None, **kw: Any) -> RestoreResult:
    """Plan ``body`` (clone-from + target) in ``space`` and execute it. A refusal raises
    :class:`RestoreError` ``refused`` carrying the refusal document; nothing is created."""
    from backup_catalog import service
    own = pool is None
    p = pool if pool is not None else await service.open_catalog(settings)
    try:
        try:
            doc = await plan_clone(p, settings, space, body)
        except PlanningError as e:
            usage = e.code in ("unknown_service", "unknown_instance", "invalid_target", "invalid_lsn", "bad_input")
            raise RestoreError("bad_input" if usage else "refused", "input", f"{e.code}: {e.message}",
                               refusal=None if usage else refusal_to_dict(e)) from None
    finally:
        if own:
            await p.close()
    return await execute_plan(doc, pgdata, settings, **kw)


def load_plan(text: str) -> dict[str, Any]:
    """A plan document from JSON text; not JSON or not an object is ``bad_input``."""
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise RestoreError("bad_input", "input", f"the plan is not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise RestoreError("bad_input", "input", "the plan is not a JSON object (a plan document from "
                           "POST /spaces/{space}/clones)")
    return doc


async def restore_from_plan(settings: Settings, plan: dict[str, Any], pgdata: Path, *,
                            pg_bin: Path | None = None, keep_running: bool = False, keep_failed: bool = False,
                            progress: Callable[[ProgressEvent], None] | None = None,
                            check_query: str | None = None) -> RestoreResult:
    """Execute a plan document fetched from the service (no catalog needed)."""
    return await execute_plan(plan, pgdata, settings, pg_bin=pg_bin, keep_running=keep_running,
                              keep_failed=keep_failed, progress=progress, check_query=check_query)
