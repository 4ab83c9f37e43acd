"""HTTP request and response bodies (pydantic, validated once at the edge; G5).

Requests forbid unknown fields and are strict (no "yes" for a boolean). Responses mirror the JSON
contracts of DESIGN.md; they allow extra fields so the documents can grow without breaking clients.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from recovery import plandoc
from recovery import target as core
from recovery.errors import PlanningError
from recovery.model import Layout
from recovery.target import make_target, parse_time

# Identifiers and names: printable, no control characters (PostgreSQL text refuses NUL).
Text = Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[^\x00-\x1f\x7f]+$")]
LsnText = Annotated[str, Field(pattern=r"^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$",
                               description="PostgreSQL LSN, hex 'X/Y', e.g. 16/B374D848")]
# a timeline number as text: 1 .. 4294967295 (TimeLineID is 32 bits), spelled out digit by digit
_TLI_MAX = ("[1-9][0-9]{0,8}|[1-3][0-9]{9}|4[01][0-9]{8}|42[0-8][0-9]{7}|429[0-3][0-9]{6}|4294[0-8][0-9]{5}"
            "|42949[0-5][0-9]{4}|429496[0-6][0-9]{3}|4294967[01][0-9]{2}|42949672[0-8][0-9]|429496729[0-5]")
TimelineText = Annotated[str, Field(pattern=rf"^(latest|current|{_TLI_MAX})$")]


def _integral(v: Any) -> Any:
    """JSON Schema counts 15.0 as an integer; strict pydantic does not: accept integral floats."""
    return int(v) if isinstance(v, float) and v.is_integer() else v


TimelineNumber = Annotated[int, Field(ge=1, le=0xFFFFFFFF), BeforeValidator(_integral)]
Xid = Annotated[int, Field(ge=3, le=0xFFFFFFFF, description="a committed transaction's id (xid)"),
                BeforeValidator(_integral)]
PointName = Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[^\x00]+$",
                                 description="a restore point's name (pg_create_restore_point)")]
PgMajor = Annotated[int, Field(ge=9, le=99), BeforeValidator(_integral)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class _Response(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


# -- requests ----------------------------------------------------------------------------------

# exactly one target: the JSON Schema form of recovery.target.make_target's rules (so that schema-valid
# requests are the plannable ones, and generated clients and fuzzers know it). Each branch names its target
# and rules the three others out, so the branches exclude each other by construction.
_NO_TIME, _NO_LSN = {"point-in-time": {"type": "null"}}, {"lsn": {"type": "null"}}
_NO_LATEST, _NO_IMMEDIATE = {"latest": {"const": False}}, {"immediate": {"const": False}}
_NO_XID, _NO_POINT = {"before-xid": {"type": "null"}}, {"restore-point": {"type": "null"}}
_NO_EXACT = {**_NO_XID, **_NO_POINT, "restore-point-lsn": {"type": "null"}}
# exact targets (issue 20): never exclusive, on "latest" or a numbered timeline (their record's)
_EXACT = {"exclusive": {"const": False}, "timeline": {"not": {"const": "current"}}}
_ONE_TARGET: dict[str, Any] = {"oneOf": [
    {"required": ["point-in-time"],
     "properties": {"point-in-time": {"type": "string"}, **_NO_LSN, **_NO_LATEST, **_NO_IMMEDIATE, **_NO_EXACT}},
    {"required": ["lsn"], "properties": {"lsn": {"type": "string"}, **_NO_TIME, **_NO_LATEST, **_NO_IMMEDIATE,
                                         **_NO_EXACT}},
    {"required": ["latest"], "properties": {"latest": {"const": True}, "exclusive": {"const": False},
                                            **_NO_TIME, **_NO_LSN, **_NO_IMMEDIATE, **_NO_EXACT}},
    # immediate stops at the backup's consistency point on its own timeline: no timeline number
    {"required": ["immediate"], "properties": {"immediate": {"const": True}, "exclusive": {"const": False},
                                               "timeline": {"enum": ["latest", "current"]},
                                               **_NO_TIME, **_NO_LSN, **_NO_LATEST, **_NO_EXACT}},
    {"required": ["before-xid"], "properties": {"before-xid": {"type": "integer"}, **_EXACT, **_NO_TIME, **_NO_LSN,
                                                **_NO_LATEST, **_NO_IMMEDIATE, **_NO_POINT,
                                                "restore-point-lsn": {"type": "null"}}},
    {"required": ["restore-point"], "properties": {"restore-point": {"type": "string"}, **_EXACT, **_NO_TIME,
                                                   **_NO_LSN, **_NO_LATEST, **_NO_IMMEDIATE, **_NO_XID}},
]}


def zoned_time(v: str | None) -> str | None:
    """A request's point in time must parse and carry a zone (a 400 naming the field otherwise)."""
    if v is not None:
        try:
            parse_time(v)
        except PlanningError as e:
            raise ValueError(e.message) from None
    return v


class CloneRequest(_Request):
    """Body of ``POST /spaces/{space_guid}/clones``: exactly one of point-in-time, lsn, latest, immediate,
    before-xid, restore-point (``restore-point-lsn`` picks one occurrence of a repeated restore point).

    Every value is checked here, at the edge: a time that does not parse or has no zone, a malformed
    LSN, a bad timeline or not exactly one target is a 400 problem whose ``errors[].loc`` names the field.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=False,
                              title="CloneRequest", json_schema_extra=_ONE_TARGET)

    clone_from: Text = Field(alias="clone-from", description="service instance name in this space")
    point_in_time: Annotated[str, Field(max_length=64, json_schema_extra={"format": "date-time"})] | None = Field(
        default=None, alias="point-in-time",
        description="ISO 8601 time WITH a zone, e.g. 2016-09-28T10:00Z (naive times are refused)")
    lsn: LsnText | None = None
    latest: bool = False
    immediate: bool = False
    timeline: TimelineText | TimelineNumber = "latest"
    exclusive: bool = False
    pg_version: PgMajor | None = Field(default=None, alias="pg-version")
    before_xid: Xid | None = Field(default=None, alias="before-xid",
                                   description="stop just before this transaction's commit (not inclusive)")
    restore_point: PointName | None = Field(default=None, alias="restore-point",
                                            description="stop at this named restore point")
    restore_point_lsn: LsnText | None = Field(default=None, alias="restore-point-lsn",
                                              description="the occurrence of a repeated restore point, by its LSN")
    _request: core.CloneRequest | None = PrivateAttr(default=None)

    @field_validator("point_in_time")
    @classmethod
    def _zoned_time(cls, v: str | None) -> str | None:
        return zoned_time(v)

    @model_validator(mode="after")
    def _one_target(self) -> CloneRequest:
        try:   # parsed here, once, into the core's request
            target = make_target(point_in_time=self.point_in_time, lsn=self.lsn, latest=self.latest,
                                 immediate=self.immediate, timeline=self.timeline, exclusive=self.exclusive,
                                 before_xid=self.before_xid, restore_point=self.restore_point,
                                 restore_point_lsn=self.restore_point_lsn)
        except PlanningError as e:
            raise ValueError(e.message) from None
        self._request = core.CloneRequest(self.clone_from, target, self.pg_version)
        return self

    @property
    def request(self) -> core.CloneRequest:
        """The clone request as the use case takes it."""
        assert self._request is not None
        return self._request


class StorageIn(_Request):
    bucket: Annotated[str, Field(min_length=3, max_length=63, pattern=r"^[a-z0-9][a-z0-9.\-]*[a-z0-9]$")]
    prefix: Annotated[str, Field(max_length=1024, pattern=r"^[^\x00-\x1f\x7f]*$")] = ""
    # the Layout enum's values (its schema, generated), or auto (detected by the first scan)
    layout: Literal["auto"] | Annotated[Layout, Field(strict=False)] = "auto"
    stanza: Text | None = None


class InstancePut(_Request):
    """Body of ``PUT /instances/{guid}`` (broker provision/update)."""

    space_guid: Text
    organization_guid: Text | None = None
    name: Text
    storage: StorageIn
    service_plan_guid: Text | None = Field(default=None, description="the Cloud Foundry service plan GUID the "
                                           "instance is created with (cf-undo creates clones with the same plan)")


class InstancePatch(_Request):
    """Body of ``PATCH /instances/{guid}`` (rename; the old name stays in the name history)."""

    name: Text


# -- responses ---------------------------------------------------------------------------------

class Problem(_Response):
    """RFC 9457 problem document (``application/problem+json``), the body of every non-2xx response.

    ``code`` is machine-readable; ``errors`` (400) names each offending field by its ``loc``; other
    extension members may follow.
    """

    type: str
    title: str
    status: int
    detail: str
    instance: str
    code: str
    errors: list[dict[str, Any]] | None = None


class WindowOut(_Response):
    timeline_path: list[int]
    from_: str | None = Field(alias="from")
    to: str | None
    to_is_exact: bool | None = None
    ends_at: Literal["end", "hole", "conflict", "corrupt"] | None = Field(
        default=None, description="why the window ends: the end of archived WAL, a missing segment, a segment "
                                  "with conflicting copies, or a segment proven corrupt")


class RefusalBody(_Response):
    code: str
    message: str
    windows: list[WindowOut]
    details: dict[str, Any] | None = None


class Refusal(Problem):
    """A clone the catalog cannot plan (status 422): a problem document whose ``error`` member is the
    DESIGN.md refusal (the same document as ``plan --json`` prints), so clients reading ``error.code``
    keep working."""

    error: RefusalBody


class BackupOut(_Response):
    label: str
    type: str
    status: str
    timeline: int | None
    start_lsn: str | None
    stop_lsn: str | None
    start_time: str | None
    stop_time: str | None
    depends_on: list[str]


class WalRunOut(_Response):
    timeline: int
    first_segment: str
    last_segment: str


class HoleOut(_Response):
    timeline: int
    first_missing: str
    last_missing: str


class CorruptOut(_Response):
    """A segment the scanner proved is not the segment its name says: windows end before it."""

    timeline: int
    segment: str
    reason: str


class ScanInfo(_Response):
    last_scan: str | None
    unknown_objects: int
    errors: list[dict[str, Any]]


class InstanceBackups(_Response):
    instance_guid: str
    name: str
    deleted_at: str | None
    layout: str | None
    backups: list[BackupOut]
    wal: list[WalRunOut]
    holes: list[HoleOut]
    corrupt: list[CorruptOut] = []
    windows: list[WindowOut]
    scan: ScanInfo


class BackupsDoc(_Response):
    """``GET /spaces/{space_guid}/services/{name}/backups``: every holder of the name, newest first."""

    space_guid: str
    name: str
    instances: list[InstanceBackups]


# the plan document is the core's own type; its schema is generated from it (api.openapi)
PlanDoc = plandoc.PlanDoc


class InstanceOut(_Response):
    instance_guid: str
    space_guid: str
    org_guid: str | None
    name: str
    deleted_at: str | None
    bucket: str
    prefix: str
    layout: str | None
    stanza: str | None
    pg_version: int | None
    seg_size: int | None


class InstanceList(_Response):
    instances: list[InstanceOut]


class ScanOutcomeOut(_Response):
    instance_guid: str
    ok: bool
    code: str | None
    message: str
    full: bool
    backups: int
    wal_runs: int
    unknown_objects: int
    issues: int
    seconds: float


class CoverageDrill(_Response):
    id: int
    at: str
    ok: bool
    target: Any = None
    reason: str | None = None


class CoverageRow(_Response):
    """One instance of the coverage report (``backup_catalog.usecases.coverage.row_of``)."""

    instance_guid: str
    name: str
    space_guid: str
    org_guid: str | None
    layout: str | None
    deleted: bool
    deleted_at: str | None
    status: Literal["ok", "warning", "critical"]
    reasons: list[str]
    reference_time: str
    newest_backup: str | None
    newest_backup_stop_time: str | None
    newest_backup_age_seconds: int | None
    backups_total: int
    backups_restorable: int
    windows: list[dict[str, Any]]
    holes: list[dict[str, Any]]
    latest_window_end: str | None
    latest_window_end_exact: bool
    latest_window_end_kind: str | None
    rpo_seconds: int | None
    last_scan: str | None
    fresh_as_of: str | None = Field(default=None, description="the later of the last scan and the last S3 "
                                    "event applied: what the catalog knew of the archive at that time")
    stale_since: str | None
    scan_errors_count: int
    scan_errors: list[str]
    drill: CoverageDrill | None = Field(description="the newest finished drill; null when never drilled")
    undo_until: str | None = Field(description="deleted instances: deleted_at + DELETED_RETENTION_DAYS")
    purge: Literal["held", "clonable", "due", "purged"] | None


class CoverageBackup(_Response):
    label: str
    type: str
    status: str
    stop_time: str | None
    restorable: bool


class CoverageDetail(CoverageRow):
    """``GET /instances/{guid}/coverage``: the row, its whole windows and every backup."""

    backups: list[CoverageBackup]


class CoverageSummary(_Response):
    instances: int
    ok: int
    warning: int
    critical: int
    live: int
    deleted: int
    purge: dict[str, int]


class CoverageReport(_Response):
    """A page of the coverage report: the whole fleet's summary, then matching rows worst first."""

    generated_at: str
    summary: CoverageSummary
    filters: dict[str, str]
    matched: int = Field(description="instances matching the filters (all pages)")
    limit: int
    instances: list[CoverageRow]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null on the last page")


class Health(_Response):
    status: Literal["ok"]


class Ready(_Response):
    status: Literal["ready"]
    catalog: Literal["ok"]
    schema_version: int = Field(description="the catalog's schema version (catalog/migrations)")
    schema_expected: int = Field(description="this release's schema version")
    schema_pending: list[str]
    scheduler: Literal["running", "not run by this replica"]


def dump(model: type[_Response], doc: dict[str, Any]) -> dict[str, Any]:
    """Check a document against its response model and return it as JSON data (extra fields kept)."""
    return model.model_validate(doc).model_dump(mode="json", by_alias=True)
