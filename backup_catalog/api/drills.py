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
from backup_catalog.api.schemas import PointName, Text, TimelineNumber, TimelineText, Xid, zoned_time
from backup_catalog.usecases import drill as uc
from backup_catalog.usecases.drill_schedule import DrillSupervisor
from catalog import drills, repo
from catalog.errors import UnknownInstance

SUPERVISOR = web.AppKey("drill_supervisor", DrillSupervisor)
HISTORY_LIMIT = 200


# at most one target: each given target rules the others out (the schema says so, so the contract fuzz
# generates valid bodies only); exact targets are on "latest" or a numbered timeline (their record's)
_GIVEN = {"point-in-time": {"type": "string"}, "latest": {"const": True}, "before-xid": {"type": "integer"},
          "restore-point": {"type": "string"}}
_ABSENT = {"point-in-time": {"type": "null"}, "latest": {"const": False}, "before-xid": {"type": "null"},
           "restore-point": {"type": "null"}}
_AT_MOST_ONE: dict[str, Any] = {"allOf": [
    {"if": {"properties": {k: v}, "required": [k]},
     "then": {"properties": {o: _ABSENT[o] for o in _ABSENT if o != k}
              | ({"timeline": {"not": {"const": "current"}}} if k in ("before-xid", "restore-point") else {})}}
    for k, v in _GIVEN.items()]}


class DrillRequest(BaseModel):
    """Body of ``POST /instances/{guid}/drills`` (optional; empty: the newest window's end). At most one
    target: ``point-in-time``, ``latest``, ``before-xid`` (just before that transaction's commit) or
    ``restore-point`` (a named restore point), as in a clone request."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=False, title="DrillRequest",
                              json_schema_extra=_AT_MOST_ONE)

    point_in_time: Annotated[str, Field(max_length=64, json_schema_extra={"format": "date-time"})] | None = Field(
        default=None, alias="point-in-time", description="ISO 8601 time WITH a zone; unset: the newest window's end")
    latest: bool = False
    timeline: TimelineText | TimelineNumber = "latest"
    before_xid: Xid | None = Field(default=None, alias="before-xid",
                                   description="stop just before this transaction's commit (not inclusive)")
    restore_point: PointName | None = Field(default=None, alias="restore-point",
                                            description="stop at this named restore point")

    @field_validator("point_in_time")
    @classmethod
    def _zoned_time(cls, v: str | None) -> str | None:
        return zoned_time(v)

    @model_validator(mode="after")
    def _at_most_one(self) -> DrillRequest:
        given = [k for k, v in (("point-in-time", self.point_in_time), ("latest", self.latest or None),
                                ("before-xid", self.before_xid), ("restore-point", self.restore_point))
                 if v is not None]
        if len(given) > 1:
            raise ValueError(f"give at most one target, not {' and '.join(given)}")
        if given and given[0] in ("before-xid", "restore-point") and self.timeline == "current":
            raise ValueError(f"{given[0]} stops on its record's timeline: timeline must be latest or a number")
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
    point = uc.point_from_request(body.point_in_time, body.timeline, before_xid=body.before_xid,
                                  restore_point=body.restore_point)
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
