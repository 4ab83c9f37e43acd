"""The one place where errors become HTTP responses (G7).

Domain exceptions map to ``application/problem+json`` documents
``{"type","title","status","detail","instance","code"}`` through :data:`PROBLEMS`. A clone refusal
(:class:`~recovery.errors.PlanningError`) keeps the DESIGN.md refusal shape ``{"error": {...}}`` with
status 422 and the problem fields beside it. Anything unexpected is logged and becomes a 500
problem that reveals nothing about the internals.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from aiohttp import web
from pydantic import ValidationError

from catalog.errors import CatalogError, CatalogUnavailable, Conflict, NotScanned, UnknownInstance, UnknownService
from recovery.errors import ParseError, PitrError, PlanningError
from recovery.jsonout import refusal_to_dict

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "/problems/"


class BadRequest(PitrError):
    """The request is not what the API accepts (malformed JSON, bad query or path parameter)."""

    code = "bad_request"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class Unauthorized(PitrError):
    code = "unauthorized"


class Forbidden(PitrError):
    code = "forbidden"


class ScanBusy(PitrError):
    """Another replica (or request) is scanning this instance right now."""

    code = "scan_in_progress"


class NotAvailable(PitrError):
    code = "not_available"


# exception class -> (HTTP status, title); the most specific class wins (checked in MRO order)
PROBLEMS: dict[type[BaseException], tuple[int, str]] = {
    BadRequest: (400, "Bad request"),
    ParseError: (400, "Bad request"),
    Unauthorized: (401, "Authentication required"),
    Forbidden: (403, "Forbidden for this role"),
    UnknownService: (404, "Service instance not found"),
    UnknownInstance: (404, "Instance not found"),
    Conflict: (409, "Conflict"),
    NotScanned: (409, "Instance not scanned yet"),
    ScanBusy: (409, "Scan in progress"),
    CatalogUnavailable: (503, "Catalog unavailable"),
    NotAvailable: (503, "Not available"),
    CatalogError: (500, "Catalog error"),
    PitrError: (400, "Bad request"),
}

WWW_AUTHENTICATE = 'Basic realm="backup-catalog", charset="UTF-8"'


def problem(request: web.Request, status: int, title: str, detail: str, code: str,
            **extra: Any) -> web.Response:
    body = {"type": TYPE_BASE + code.replace("_", "-"), "title": title, "status": status, "detail": detail,
            "instance": request.path, "code": code, **extra}
    headers = {"WWW-Authenticate": WWW_AUTHENTICATE} if status == 401 else None
    return web.Response(status=status, text=json.dumps(body), content_type=PROBLEM_JSON, headers=headers)


def refusal(request: web.Request, err: PlanningError) -> web.Response:
    body = refusal_to_dict(err)
    body.update({"type": TYPE_BASE + err.code.replace("_", "-"), "title": "Clone refused",
                 "status": 422, "detail": err.message, "instance": request.path})
    # application/json: the refusal is the DESIGN.md JSON contract (same document as `plan --json`)
    return web.json_response(body, status=422)


def _lookup(exc: BaseException) -> tuple[int, str] | None:
    for cls in type(exc).__mro__:
        if cls in PROBLEMS:
            return PROBLEMS[cls]
    return None


def validation_errors(exc: ValidationError) -> list[dict[str, Any]]:
    """Where and why, without echoing the submitted values."""
    return [{"loc": [str(p) for p in e["loc"]], "msg": e["msg"], "type": e["type"]} for e in exc.errors()]


def to_response(request: web.Request, exc: BaseException) -> web.Response:
    if isinstance(exc, PlanningError):
        return refusal(request, exc)
    if isinstance(exc, ValidationError):
        return problem(request, 400, "Invalid request", "the request does not match the schema",
                       "invalid_request", errors=validation_errors(exc))
    if isinstance(exc, web.HTTPException):
        code = exc.reason.lower().replace(" ", "_") if exc.reason else "http_error"
        resp = problem(request, exc.status, exc.reason, exc.text or exc.reason, code)
        if "Allow" in exc.headers:
            resp.headers["Allow"] = exc.headers["Allow"]
        return resp
    if isinstance(exc, (asyncpg.DataError, UnicodeError)):
        # e.g. a value PostgreSQL cannot store; input validation should have caught it
        log.warning("%s %s: input rejected by the catalog: %s", request.method, request.path, type(exc).__name__)
        return problem(request, 400, "Bad request", "a value in the request cannot be stored", "invalid_value")
    if isinstance(exc, (OSError, asyncpg.InterfaceError, asyncpg.CannotConnectNowError,
                        asyncpg.TooManyConnectionsError)):
        log.warning("%s %s: catalog unavailable: %s", request.method, request.path, type(exc).__name__)
        return problem(request, 503, "Catalog unavailable", "the catalog database is not reachable",
                       "catalog_unavailable")
    mapped = _lookup(exc)
    if mapped is not None and isinstance(exc, PitrError):
        status, title = mapped
        if status >= 500:
            log.error("%s %s: %s: %s", request.method, request.path, type(exc).__name__, exc)
        return problem(request, status, title, str(exc), getattr(exc, "code", "error"))
    log.error("%s %s: unhandled error", request.method, request.path, exc_info=exc)
    return problem(request, 500, "Internal server error", "an unexpected error occurred; it has been logged",
                   "internal_error")


@web.middleware
async def error_middleware(request: web.Request,
                           handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return to_response(request, exc)
    except Exception as exc:
        return to_response(request, exc)


async def read_json(request: web.Request) -> Any:
    """The body as JSON, or BadRequest (never a 500) for a wrong content type or malformed JSON."""
    if request.content_type not in ("application/json", "") and not request.content_type.endswith("+json"):
        raise BadRequest("unsupported_media_type", f"expected application/json, got {request.content_type}")
    raw = await request.read()
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise BadRequest("invalid_json", f"the body is not valid JSON: {exc.__class__.__name__}") from None
