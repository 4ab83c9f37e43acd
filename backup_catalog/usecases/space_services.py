"""Use case: a space's service instances for its users (``GET /spaces/{space_guid}/services``, ``cf-undo list``).

Every instance the space has had, live and deleted (within and after their undo period), with current and
former names, layout, service plan, recoverable windows, the newest backup and its age, the newest drill,
``deleted_at``/``undo_until`` and whether the asking user may start an undo of it (``can_undo``). One
coverage query (the stored facts, as the fleet report reads them) plus the name histories.
"""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg

from backup_catalog.settings import Settings
from backup_catalog.usecases import coverage
from catalog import spaces
from recovery.timefmt import iso


def undoable(purge: str | None) -> bool:
    """An instance can still be cloned unless its archive is purged (or being purged).

    >>> undoable(None), undoable("clonable"), undoable("due"), undoable("purged")
    (True, True, True, False)
    """
    return purge != "purged"


async def space_services(pool: asyncpg.Pool, settings: Settings, space: str, *, user_may_undo: bool,
                         now: datetime | None = None) -> dict[str, Any]:
    """The listing document (a backup's age is counted to ``now``, also for deleted instances, unlike the
    coverage grade's age at deletion); ``user_may_undo``: what the Cloud Controller said of the asking user (True for
    the broker and operator roles)."""
    now = now or datetime.now(UTC)
    es = await coverage.entries(pool, settings, now, where="WHERE i.space_guid = $1", args=(space,), lists=True,
                                explain=False)
    guids = [e.guid for e in es]
    names = await spaces.name_histories(pool, space, guids)
    plans = await spaces.service_plans(pool, guids)
    out = []
    for e in es:
        row = coverage.row_of(e, settings, now)
        former = [{"name": n.name, "until": iso(n.valid_to)} for n in names.get(e.guid, []) if n.valid_to is not None]
        newest = None
        if row["newest_backup"] is not None:
            stop = e.facts.newest_backup_stop_time if e.facts is not None else None
            newest = {"label": row["newest_backup"], "stop_time": row["newest_backup_stop_time"],
                      "age_seconds": None if stop is None else max(0, int((now - stop).total_seconds()))}
        out.append({
            "instance_guid": e.guid, "name": e.name, "former_names": former, "layout": e.layout,
            "service_plan_guid": plans.get(e.guid), "deleted_at": row["deleted_at"], "undo_until": row["undo_until"],
            "purge": row["purge"], "windows": row["windows"], "holes": len(row["holes"]), "newest_backup": newest,
            "drill": row["drill"], "can_undo": user_may_undo and undoable(row["purge"]),
        })
    live = sorted((r for r in out if r["deleted_at"] is None), key=lambda r: (r["name"], r["instance_guid"]))
    gone = sorted((r for r in out if r["deleted_at"] is not None), key=lambda r: r["deleted_at"], reverse=True)
    return {"space_guid": space, "instances": live + gone}   # live by name, then the newest deletion first
