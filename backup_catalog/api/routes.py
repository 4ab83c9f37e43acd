"""The route table: one :class:`Operation` per route, the single source for the router, the roles
and the OpenAPI document."""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web
from pydantic import BaseModel

from backup_catalog.api import changes, coverage, drills, handlers, ready, schemas, spaces
from backup_catalog.api import purge as purge_api
from backup_catalog.api.auth import Role
from backup_catalog.api.errors import BadRequest
from recovery.model import Layout

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Query:
    name: str
    schema: dict[str, object]
    description: str = ""
    required: bool = False


@dataclass(frozen=True, slots=True)
class Operation:
    method: str
    path: str
    handler: Handler
    role: Role
    summary: str
    op_id: str
    body: type[BaseModel] | None = None
    body_optional: bool = False                       # no body at all is accepted (defaults)
    ok: int = 200
    response: type | None = None          # JSON body of the success status (a model or a document type)
    media: str | None = None                          # non-JSON success body (text/csv, text/html, ...)
    errors: tuple[int, ...] = ()
    query: tuple[Query, ...] = ()
    tags: tuple[str, ...] = field(default=())


_B, _O, _P = Role.BROKER, Role.OPERATOR, Role.PUBLIC

_FILTER_TEXT: dict[str, object] = {"type": "string", "maxLength": 255, "pattern": "^[^\\x00-\\x1f\\x7f]*$"}
COVERAGE_QUERY = (
    Query("status", {"type": "string", "enum": ["", "ok", "warning", "critical"]},
          "only instances with this status (empty: any; the HTML form sends it so)"),
    Query("space", _FILTER_TEXT, "only instances in this space GUID"),
    Query("org", _FILTER_TEXT, "only instances in this organization GUID"),
    Query("name", _FILTER_TEXT, "only instances whose current name starts with this"),
    Query("layout", {"type": "string", "enum": ["", *(m.value for m in Layout), "unknown"]},
          "only this archive layout (unknown: never scanned; empty: any)"),
    Query("deleted", {"type": "string", "enum": ["", "true", "false"]},
          "true: only deleted instances; false: only live ones; empty or unset: both"),
    Query("limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}, "rows per page"),
    Query("cursor", {"type": "string", "maxLength": 1024}, "next_cursor of the previous page (one this report "
          "did not hand out is a 422)"),
)

OPERATIONS: tuple[Operation, ...] = (
    Operation("GET", "/spaces/{space_guid}/services/{name}/backups", handlers.get_backups, _B,
              "Backups, WAL coverage, holes and recoverable windows of every holder of a name",
              "getBackups", response=schemas.BackupsDoc, errors=(400, 404), tags=("broker",)),
    Operation("GET", "/spaces/{space_guid}/services/{name}/changes", changes.get_changes, _B,
              "What happened between two times: the transactions committed (xid, commit time and LSN, relations "
              "dropped, rows per relation; destructive ones first) and the restore points, read from the "
              "archived WAL", "getChanges", response=changes.ChangesDoc, errors=(400, 404, 409, 422, 502, 503),
              query=(Query("from", {"type": "string", "format": "date-time", "maxLength": 64},
                           "start of the range: ISO 8601 with a zone", required=True),
                     Query("to", {"type": "string", "format": "date-time", "maxLength": 64},
                           "end of the range: ISO 8601 with a zone, after from", required=True),
                     Query("limit", {"type": "integer", "minimum": 1},
                           "list at most this many transactions, destructive first (capped at "
                           "CHANGES_MAX_TRANSACTIONS, also the default)")),
              tags=("broker",)),
    Operation("GET", "/spaces/{space_guid}/services", spaces.get_space_services, _B,
              "Every service instance the space has had (live and deleted): names, plan, windows, newest backup, "
              "drill, undo period, and whether the caller may start an undo (can_undo)", "listSpaceServices",
              response=spaces.SpaceServices, errors=(400, 404, 503), tags=("broker", "users")),
    Operation("POST", "/spaces/{space_guid}/clones", handlers.post_clone, _B,
              "Plan a clone of a service instance at a point in time", "planClone",
              body=schemas.CloneRequest, response=schemas.PlanDoc, errors=(400, 404, 422), tags=("broker",)),
    Operation("PUT", "/instances/{guid}", handlers.put_instance, _B, "Register or update an instance",
              "putInstance", body=schemas.InstancePut, ok=201, response=schemas.InstanceOut,
              errors=(400, 409), tags=("broker",)),
    Operation("PATCH", "/instances/{guid}", handlers.patch_instance, _B,
              "Rename an instance (the old name stays in the name history)", "renameInstance",
              body=schemas.InstancePatch, response=schemas.InstanceOut, errors=(400, 404, 409), tags=("broker",)),
    Operation("DELETE", "/instances/{guid}", handlers.delete_instance, _B,
              "Mark an instance deleted (its catalog data and last name are kept); answers until when it "
              "stays clonable (undo_until)", "deleteInstance",
              response=purge_api.DeletedOut, errors=(400, 404), tags=("broker",)),
    Operation("GET", "/instances", handlers.list_instances, _O, "All registered instances", "listInstances",
              response=schemas.InstanceList, tags=("operator",)),
    Operation("POST", "/instances/{guid}/scan", handlers.post_scan, _O, "Scan one instance's archive now",
              "scanInstance", response=schemas.ScanOutcomeOut, errors=(400, 404, 409, 502, 503),
              query=(Query("full", {"type": "boolean", "default": False},
                           "full reconcile (notices deleted objects)"),), tags=("operator",)),
    Operation("POST", "/instances/{guid}/drills", drills.post_drill, _O,
              "Queue a restore drill of the instance (runs in a worker process; see GET for its result)",
              "requestDrill", body=drills.DrillRequest, body_optional=True, ok=202, response=drills.DrillAccepted,
              errors=(400, 404, 409, 422, 503), tags=("operator",)),
    Operation("GET", "/instances/{guid}/drills", drills.get_drills, _O,
              "Recorded restore drills of the instance, newest first", "listDrills",
              response=drills.DrillHistory, errors=(400, 404), tags=("operator",)),
    Operation("GET", "/reports/coverage", coverage.get_coverage, _O,
              "Coverage report: fleet summary and one page of instances worst first (JSON), or every "
              "matching instance as streamed CSV (limit and cursor do not apply)", "coverageReport",
              response=schemas.CoverageReport, errors=(400, 422, 503), query=(Query("format", {"type": "string", "enum": ["json", "csv"], "default": "json"}),
                                        *COVERAGE_QUERY), tags=("operator",)),
    Operation("GET", "/reports/coverage.html", coverage.get_coverage_html, _O,
              "Coverage report as an HTML page (summary, filters, one page of rows, links to details and pages)",
              "coverageReportHtml", media="text/html", errors=(400, 422, 503), query=COVERAGE_QUERY, tags=("operator",)),
    Operation("GET", "/instances/{guid}/coverage", coverage.get_instance_coverage, _O,
              "One instance's coverage with every backup", "instanceCoverage",
              response=schemas.CoverageDetail, errors=(400, 404, 503), tags=("operator",)),
    Operation("GET", "/instances/{guid}/coverage.html", coverage.get_instance_coverage_html, _O,
              "One instance's coverage with every backup, as an HTML page", "instanceCoverageHtml",
              media="text/html", errors=(400, 404, 503), tags=("operator",)),
    Operation("GET", "/metrics", handlers.get_metrics, _O, "Prometheus metrics", "metrics",
              media="text/plain", tags=("operator",)),
    Operation("GET", "/purges", purge_api.get_purges, _O,
              "Purge dry run: deleted instances past their undo period, their exact prefixes, objects and bytes",
              "purgePlan", response=purge_api.PurgeDoc, errors=(503,), tags=("operator",)),
    Operation("POST", "/purges", purge_api.post_purges, _O,
              "Purge run: delete what is due with the purge's own credentials (resumable, idempotent)",
              "purgeRun", response=purge_api.PurgeDoc, errors=(403, 409), tags=("operator",)),
    Operation("POST", "/instances/{guid}/hold", purge_api.post_hold, _O,
              "Operator hold: never purge this instance's archive", "holdInstance",
              body=purge_api.HoldRequest, response=purge_api.HoldOut, errors=(400, 404, 409), tags=("operator",)),
    Operation("DELETE", "/instances/{guid}/hold", purge_api.delete_hold, _O, "Lift the operator hold",
              "unholdInstance", response=purge_api.HoldOut, errors=(400, 404), tags=("operator",)),
    Operation("GET", "/healthz", handlers.get_health, _P, "Liveness: the catalog answers", "health",
              response=schemas.Health, errors=(503,), tags=("public",)),
    Operation("GET", "/readyz", ready.get_ready, _P, "Readiness: the catalog at this release's schema version "
              "and, in a replica that runs the jobs, the scheduler running (503 names what is not ready)", "ready",
              response=schemas.Ready, errors=(503,), tags=("public",)),
    Operation("GET", "/openapi.json", handlers.get_openapi, _P, "This OpenAPI document", "openapi",
              media="application/json", tags=("public",)),
)


def query_middleware() -> Callable[..., Awaitable[web.StreamResponse]]:
    """Unknown or repeated query parameters are a 400 (validated at the edge like bodies)."""
    allowed = {op.handler: frozenset(q.name for q in op.query) for op in OPERATIONS}

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        names = allowed.get(request.match_info.handler)
        if names is not None and request.query:
            unknown = sorted(set(request.query) - names)
            if unknown:
                raise BadRequest("invalid_query_parameter",
                                 f"unknown query parameter(s): {', '.join(map(repr, unknown))[:200]}")
            repeated = [k for k in names if len(request.query.getall(k, [])) > 1]
            if repeated:
                raise BadRequest("invalid_query_parameter", f"query parameter {repeated[0]} given more than once")
        return await handler(request)

    return middleware


def add_routes(app: web.Application) -> dict[Handler, Role]:
    """Register every operation; returns the role each handler needs."""
    roles: dict[Handler, Role] = {}
    for op in OPERATIONS:
        app.router.add_route(op.method, op.path, op.handler)
        roles[op.handler] = op.role
    return roles
