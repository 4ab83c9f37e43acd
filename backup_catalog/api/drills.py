"""Operator routes of restore drills (DESIGN.md "Restore drills"), their bodies and handlers.

``POST /instances/{guid}/drills`` queues a drill (202 with its id; it runs in a worker process of this
replica, see :mod:`backup_catalog.usecases.drill_schedule`); ``GET /instances/{guid}/drills`` lists the
recorded drills, newest first.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from backup_catalog.api import keys
from backup_catalog.api.errors import BadRequest, NotAvailable, read_json
from backup_catalog.api.schemas import Text, TimelineNumber, TimelineText, zoned_time
from backup_catalog.usecases import drill as uc
from backup_catalog.usecases.drill_schedule import DrillSupervisor
from catalog import drills, repo
from catalog.errors import UnknownInstance

SUPERVISOR = web.AppKey("drill_supervisor", DrillSupervisor)
HISTORY_LIMIT = 200


# "latest": true excludes a point-in-time (the schema says so, so the contract fuzz generates valid bodies only)
_NOT_BOTH: dict[str, Any] = {"if": {"properties": {"latest": {"const": True}}, "required": ["latest"]},
                             "then": {"properties": {"point-in-time": {"type": "null"}}}}


class DrillRequest(BaseModel):
    """Body of ``POST /instances/{guid}/drills`` (optional; empty: the newest window's end)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=False, title="DrillRequest",
                              json_schema_extra=_NOT_BOTH)

    point_in_time: Annotated[str, Field(max_length=64, json_schema_extra={"format": "date-time"})] | None = Field(
        default=None, alias="point-in-time", description="ISO 8601 time WITH a zone; unset: the newest window's end")
    latest: bool = False
    timeline: TimelineText | TimelineNumber = "latest"

    @field_validator("point_in_time")
    @classmethod
    def _zoned_time(cls, v: str | None) -> str | None:
        return zoned_time(v)

    @model_validator(mode="after")
    def _not_both(self) -> DrillRequest:
        if self.latest and self.point_in_time is not None:
            raise ValueError("give point-in-time or latest, not both")
        return self


class _Out(BaseModel):
    model_config = ConfigDict(extra="allow")


class DrillAccepted(_Out):
    id: int
    instance_guid: str
    state: Literal["queued"]
    href: str


class DrillOut(_Out):
    id: int
    instance_guid: str
    state: Literal["queued", "running", "passed", "failed", "skipped"]
    ok: bool
    trigger: str
    requested_at: str | None
    started_at: str | None
    finished_at: str | None
    target: dict[str, Any] | None
    backup_label: str | None
    stage: str | None
    reason: str | None
    segment: str | None
    reached_lsn: str | None
    fetch_s: float | None
    replay_s: float | None
    duration_s: float | None
    bytes_fetched: int | None
    postgres_log: list[str]
    cleanup: str | None = None      # what the reaper cleaned after the drill's process died (issue 24)


class DrillHistory(_Out):
    instance_guid: str
    drills: list[DrillOut]


_TEXT: TypeAdapter[str] = TypeAdapter(Text)


class DeletedInstance(UnknownInstance):
    """Drills are of live instances: a deleted one is not found here (404)."""

    def __init__(self, guid: str) -> None:
        super().__init__(guid)
        self.args = (f"instance {guid!r} is deleted: drills prove live instances",)


async def live_instance(pool: Any, guid: str) -> None:
    """404 for an unknown or deleted instance."""
    rec = await repo.get_instance(pool, guid)
    if rec.ref.deleted_at is not None:
        raise DeletedInstance(guid)


def _guid(request: web.Request) -> str:
    try:
        return _TEXT.validate_python(request.match_info["guid"])
    except ValidationError:
        raise BadRequest("invalid_path_parameter", "path parameter guid must be 1-255 printable characters") from None


async def post_drill(request: web.Request) -> web.Response:
    guid = _guid(request)
    raw = await request.read()
    body = DrillRequest.model_validate(await read_json(request) if raw.strip() else {})
    # a bad time, or both targets: a 400 naming the field (DrillRequest), as in a clone request
    point = uc.point_from_request(body.point_in_time, body.timeline)
    app = request.app
    await live_instance(app[keys.POOL], guid)
    sup = app.get(SUPERVISOR)
    if sup is None:
        raise NotAvailable("drills are not available in this process")
    drill_id = await sup.request(guid, point, trigger="api")   # 409 while a drill of the instance is active
    return web.json_response(dump_model(DrillAccepted, {"id": drill_id, "instance_guid": guid, "state": "queued",
                                                  "href": f"/instances/{guid}/drills"}), status=202)


async def get_drills(request: web.Request) -> web.Response:
    guid = _guid(request)
    pool = request.app[keys.POOL]
    await live_instance(pool, guid)
    rows = await drills.history(pool, guid, HISTORY_LIMIT)
    return web.json_response(dump_model(DrillHistory, {"instance_guid": guid, "drills": [uc.drill_doc(r) for r in rows]}))


def dump_model(model: type[BaseModel], doc: dict[str, Any]) -> dict[str, Any]:
    return model.model_validate(doc).model_dump(mode="json", by_alias=True)
