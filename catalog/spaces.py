"""A space's instances as its users see them: name histories and the service plan each was created with.

(The windows, newest backup and drill of each instance come from the coverage facts, see
``backup_catalog.usecases.space_services``.)
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from catalog.db import Db


@dataclass(frozen=True, slots=True)
class NameSpan:
    """One name an instance held in its space, until when (None: still held)."""

    name: str
    valid_to: datetime | None


async def set_service_plan(db: Db, guid: str, plan_guid: str | None) -> None:
    """Record the CF service plan GUID of an instance (None leaves what is recorded; the same one writes
    nothing, so the name sync may call it every round)."""
    if plan_guid is None:
        return
    await db.execute("""UPDATE instances SET service_plan_guid = $2
                        WHERE instance_guid = $1 AND service_plan_guid IS DISTINCT FROM $2""", guid, plan_guid)


async def service_plans(db: Db, guids: Sequence[str]) -> dict[str, str | None]:
    rows = await db.fetch("SELECT instance_guid, service_plan_guid FROM instances WHERE instance_guid = ANY($1)",
                          list(guids))
    return {r["instance_guid"]: r["service_plan_guid"] for r in rows}


async def name_histories(db: Db, space: str, guids: Sequence[str]) -> dict[str, list[NameSpan]]:
    """Per instance, the names it held in ``space``, newest first."""
    rows = await db.fetch(
        """SELECT instance_guid, name, NULLIF(valid_to, 'infinity') AS valid_to FROM instance_names
           WHERE space_guid = $1 AND instance_guid = ANY($2) ORDER BY instance_guid, valid_from DESC""",
        space, list(guids))
    out: dict[str, list[NameSpan]] = {g: [] for g in guids}
    for r in rows:
        out[r["instance_guid"]].append(NameSpan(r["name"], r["valid_to"]))
    return out
