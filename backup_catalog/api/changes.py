"""``GET /spaces/{space_guid}/services/{name}/changes?from=&to=`` (issue 20, DESIGN.md "Changes and exact
targets"): the transactions committed in a time range, destructive first, and the restore points in it.

Missing times, or times that do not parse or have no zone, are 400 problems naming the parameter; ``to`` not
after ``from`` (or outside years 1900-9000) is a 422 ``invalid_range``; a range needing more than
``CHANGES_MAX_SEGMENTS`` segments is a 422 ``range_too_large`` problem saying how many (``need``, ``limit``);
an archive that cannot be read is a 502/503 problem naming the storage code (the error middleware). At most
``limit`` transactions are listed (default and cap ``CHANGES_MAX_TRANSACTIONS``; destructive first):
``transactions_total`` and ``truncated`` say when there were more.
"""
from __future__ import annotations

from datetime import datetime

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from backup_catalog.api import keys
from backup_catalog.api.errors import BadRequest, NotAvailable, problem
from backup_catalog.api.params import path_param
from backup_catalog.usecases import changes as uc
from recovery.changes import RangeTooLarge
from recovery.errors import PlanningError
from recovery.target import parse_time


class _Out(BaseModel):
    model_config = ConfigDict(extra="allow")


class ChangedRelation(_Out):
    relfilenode: int
    name: str | None = Field(description="schema.name from the newest drill map before the change; null: unknown")


class ChangedRows(_Out):
    relation: ChangedRelation
    inserted: int
    updated: int
    deleted: int


class ChangedTransaction(_Out):
    xid: int
    commit_time: str
    commit_lsn: str
    timeline: int
    database_oid: int | None
    destructive: bool
    why: list[str]
    subtransactions: int
    dropped: list[ChangedRelation]
    rows: list[ChangedRows]


class RestorePointOut(_Out):
    name: str
    time: str
    lsn: str
    timeline: int


class ChangesDoc(_Out):
    """What happened between ``from`` and ``to`` on the newest timeline path of the name's holder at ``from``."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    instance_guid: str
    timeline_path: list[int]
    from_: str = Field(alias="from")
    to: str
    segments_read: int
    mass_rows: int
    transactions: list[ChangedTransaction]
    transactions_total: int = Field(description="transactions committed in the range; more than listed: truncated")
    truncated: bool = Field(description="true when only the first `limit` transactions (destructive first) are listed")
    restore_points: list[RestorePointOut]
    notes: list[str]


def _time(request: web.Request, name: str) -> datetime:
    raw = request.query.get(name)
    if raw is None:
        raise BadRequest("invalid_query_parameter", f"query parameter {name} is required (ISO 8601 with a zone)")
    try:
        return parse_time(raw)
    except PlanningError as e:
        raise BadRequest("invalid_query_parameter", f"query parameter {name}: {e.message}") from None


def _limit(request: web.Request, most: int) -> int:
    raw = request.query.get("limit")
    if raw is None:
        return most
    if not raw.isdigit() or int(raw) < 1:
        raise BadRequest("invalid_query_parameter", "query parameter limit must be a whole number from 1")
    return min(int(raw), most)      # more than the service lists: its maximum (transactions_total says all)


async def get_changes(request: web.Request) -> web.Response:
    space, name = path_param(request, "space_guid"), path_param(request, "name")
    start, end = _time(request, "from"), _time(request, "to")
    limit = _limit(request, request.app[keys.SETTINGS].changes_max_transactions)
    try:
        uc.check_range(start, end)
    except uc.BadRange as e:    # well-formed times that make no range: refused, like an unplannable clone
        return problem(request, 422, "Invalid range", e.message, e.code)
    app = request.app
    if keys.S3 not in app:
        raise NotAvailable("no S3 client is configured")
    settings = app[keys.SETTINGS]
    try:
        doc = await uc.changes(app[keys.POOL], app[keys.S3], space, name, start, end,
                               max_segments=settings.changes_max_segments, mass_rows=settings.changes_mass_rows,
                               limit=limit)
    except RangeTooLarge as e:
        return problem(request, 422, "Range too large", e.message, e.code, need=e.need, limit=e.limit)
    except PlanningError as e:      # no WAL on the path
        return problem(request, 422, "Nothing to read", e.message, e.code)
    return web.json_response(doc)
