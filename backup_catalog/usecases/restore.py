"""Use case: restore a clone — from the catalog (a clone request planned here) or from a plan document.

Both end in :func:`executor.execute_plan`. A plan made here already carries what an executor needs
(``storage``, ``pg_version``, ``replay``: :func:`backup_catalog.usecases.plan.instance_plan_doc`).
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg

from backup_catalog.settings import Settings
from backup_catalog.usecases import plan
from catalog import tracing
from catalog.connect import open_catalog
from executor import ProgressEvent, RestoreError, RestoreResult, execute_plan
from recovery.errors import PlanningError
from recovery.jsonout import refusal_to_dict
from recovery.plandoc import PlanDoc, PlanDocError
from recovery.target import CloneRequest


async def plan_clone(pool: asyncpg.Pool, settings: Settings, space: str, request: CloneRequest) -> PlanDoc:
    """The clone request planned (refusals raise :class:`PlanningError`), ready for an executor."""
    return await plan.plan_doc(pool, settings, space, request)


@tracing.traced("restore", lambda a: {"space.guid": a.get("space"), "clone_from": a["request"].clone_from})
async def restore_from_catalog(settings: Settings, space: str, request: CloneRequest, pgdata: Path, *,
                               pool: asyncpg.Pool | None = None, **kw: Any) -> RestoreResult:
    """Plan ``request`` in ``space`` and execute it. A refusal raises
    :class:`RestoreError` ``refused`` carrying the refusal document; nothing is created."""
    own = pool is None
    p = pool if pool is not None else await open_catalog(settings)
    try:
        try:
            doc = await plan_clone(p, settings, space, request)
        except PlanningError as e:
            usage = e.code in ("unknown_service", "unknown_instance", "invalid_target", "invalid_lsn", "bad_input")
            raise RestoreError("bad_input" if usage else "refused", "input", f"{e.code}: {e.message}",
                               refusal=None if usage else refusal_to_dict(e)) from None
    finally:
        if own:
            await p.close()
    return await execute_plan(doc, pgdata, settings, **kw)


def load_plan(text: str) -> PlanDoc:
    """A plan document from JSON text: not JSON, not an object or not a plan is ``bad_input`` (naming the
    member), a refusal document is ``refused``."""
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise RestoreError("bad_input", "input", f"the plan is not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise RestoreError("bad_input", "input", "the plan is not a JSON object (a plan document from "
                           "POST /spaces/{space}/clones)")
    if isinstance(doc.get("error"), dict):
        err = doc["error"]
        raise RestoreError("refused", "input", f"the plan was refused ({err.get('code')}): {err.get('message')}",
                           refusal=doc)
    try:
        return PlanDoc.from_json(doc)
    except PlanDocError as e:
        raise RestoreError("bad_input", "input", f"not an executable plan: {e}") from None


@tracing.traced("restore", lambda a: {"instance.guid": a["plan"].source.instance_guid})
async def restore_from_plan(settings: Settings, plan: PlanDoc, pgdata: Path, *,
                            pg_bin: Path | None = None, keep_running: bool = False, keep_failed: bool = False,
                            progress: Callable[[ProgressEvent], None] | None = None,
                            check_query: str | None = None, **kw: Any) -> RestoreResult:
    """Execute a plan document fetched from the service (no catalog needed)."""
    return await execute_plan(plan, pgdata, settings, pg_bin=pg_bin, keep_running=keep_running,
                              keep_failed=keep_failed, progress=progress, check_query=check_query, **kw)
