"""``GET /spaces/{space_guid}/services``: a space's instances for its users (and the broker and operator).

Signed-in users (UAA bearer tokens, :mod:`backup_catalog.api.userauth`) get ``can_undo`` from the Cloud Controller's
answer for them; the broker and operator roles may start clones, so for them it only says whether the
instance's archive is still there.
"""
from __future__ import annotations

from typing import Literal

from aiohttp import web
from pydantic import Field

from backup_catalog.api import keys
from backup_catalog.api.params import path_param
from backup_catalog.api.schemas import CoverageDrill, WindowOut, _Response
from backup_catalog.api.userauth import user_of
from backup_catalog.usecases.space_services import space_services


class FormerName(_Response):
    name: str
    until: str | None = Field(description="when the instance stopped holding this name")


class NewestBackup(_Response):
    label: str
    stop_time: str | None
    age_seconds: int | None = Field(description="seconds since the backup stopped")


class SpaceInstance(_Response):
    instance_guid: str
    name: str = Field(description="current name (a deleted instance keeps its last one)")
    former_names: list[FormerName]
    layout: str | None
    service_plan_guid: str | None = Field(description="the CF service plan the instance was created with "
                                                      "(null: not recorded)")
    deleted_at: str | None
    undo_until: str | None = Field(description="deleted instances: until when they stay clonable")
    purge: Literal["held", "clonable", "due", "purged"] | None
    windows: list[WindowOut]
    holes: int = Field(description="missing WAL ranges in the archive")
    newest_backup: NewestBackup | None
    drill: CoverageDrill | None = Field(description="the newest finished restore drill; null when never drilled")
    can_undo: bool = Field(description="the asking user may start an undo of this instance now (for users: "
                                       "space developer or admin, as the Cloud Controller says; and the archive "
                                       "is not purged)")


class SpaceServices(_Response):
    space_guid: str
    instances: list[SpaceInstance]


async def get_space_services(request: web.Request) -> web.Response:
    space = path_param(request, "space_guid")
    user = user_of(request)
    may = True if user is None else await user.may_undo()
    doc = await space_services(request.app[keys.POOL], request.app[keys.SETTINGS], space, user_may_undo=may)
    return web.json_response(doc)
