"""The one place where errors become HTTP responses (G7).

Every non-2xx response is an ``application/problem+json`` document (RFC 9457)
``{"type","title","status","detail","instance","code", ...extension members}``: domain exceptions map
through :data:`PROBLEMS`, routing and framework errors (404, 405, 413, ...) through their HTTP status,
authentication to 401/403. Two families of bad input, one rule each:

* **400**: the request itself is wrong: not JSON, not the schema, or a value that does not parse
  (a time without a zone or that is not ISO 8601, a malformed LSN, a bad timeline, not exactly one
  target). ``errors`` lists ``{"loc": [field, ...], "msg", "type"}`` naming each field.
* **422**: a valid clone request the catalog cannot plan (:class:`~recovery.errors.PlanningError`):
  the problem document carries the DESIGN.md refusal as its ``error`` member
  (``{"code","message","windows","details"}``), so clients reading ``error.code`` keep working.

Anything unexpected is logged and becomes a 500 problem that reveals nothing about the internals.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from aiohttp import web
from pydantic import ValidationError

from backup_catalog.usecases.access import AccessUnavailable, InvalidToken, SpaceHidden, UserForbidden
from catalog.errors import CatalogError, CatalogUnavailable, Conflict, NotScanned, UnknownInstance, UnknownService
from recovery.errors import ParseError, PitrError, PlanningError
from recovery.jsonout import refusal_to_dict
from scheduler.storage import StorageError

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "/problems/"


class BadRequest(PitrError):
    """The request is not what the API accepts (malformed JSON, bad query or path parameter)."""

    code = "bad_request"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class UnsupportedMediaType(BadRequest):
    """The body is not JSON by its declared media type (HTTP 415, RFC 9110 §15.5.16)."""


class ScanFailed(PitrError):
    """A scan asked for by a client ran and failed: the archive's store answered badly (502) or not at all (503).
    The problem document carries the scan outcome, so a script reads the failure from the status alone."""

    def __init__(self, code: str, message: str, outcome: dict[str, Any]) -> None:
        super().__init__(message)
        self.code = code
        self.outcome = outcome


# scan outcome codes that mean the store could not be reached in time (503); every other failure is a 502
SCAN_UNAVAILABLE_CODES = frozenset({"storage_unavailable", "storage_timeout", "clock_skew"})


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
    UnsupportedMediaType: (415, "Unsupported media type"),
    BadRequest: (400, "Bad request"),
    ParseError: (400, "Bad request"),
    Unauthorized: (401, "Authentication required"),
    InvalidToken: (401, "Invalid bearer token"),
    Forbidden: (403, "Forbidden for this role"),
    UserForbidden: (403, "Forbidden for signed-in users"),
    UnknownService: (404, "Service instance not found"),
    SpaceHidden: (404, "Space not found"),
    UnknownInstance: (404, "Instance not found"),
    Conflict: (409, "Conflict"),
    NotScanned: (409, "Instance not scanned yet"),
    ScanBusy: (409, "Scan in progress"),
    CatalogUnavailable: (503, "Catalog unavailable"),
    NotAvailable: (503, "Not available"),
    AccessUnavailable: (503, "Authorization unavailable"),
    CatalogError: (500, "Catalog error"),
    PitrError: (400, "Bad request"),
}

WWW_AUTHENTICATE = 'Basic realm="backup-catalog", charset="UTF-8"'
BEARER_CHALLENGE = 'Bearer realm="backup-catalog"'


def problem(request: web.Request, status: int, title: str, detail: str, code: str,
            **extra: Any) -> web.Response:
    body = {"type": TYPE_BASE + code.replace("_", "-"), "title": title, "status": status, "detail": detail,
            "instance": request.path, "code": code, **extra}
    resp = web.Response(status=status, text=json.dumps(body), content_type=PROBLEM_JSON)
    if status == 401:   # both schemes are accepted (RFC 9110 §11.6.1: one challenge per header line)
        resp.headers.add("WWW-Authenticate", WWW_AUTHENTICATE)
        bearer = BEARER_CHALLENGE + (', error="invalid_token"' if code == "invalid_token" else "")
        resp.headers.add("WWW-Authenticate", bearer)
    return resp


# PlanningError codes that mean "the request's target does not parse" (400), not "cannot be planned" (422)
INVALID_INPUT_CODES = frozenset({"invalid_target", "invalid_lsn"})

# the field a target error names, from the words of its message (make_target names them all)
_TARGET_FIELDS = (("lsn", "lsn"), ("timeline", "timeline"), ("time", "point-in-time"), ("exclusive", "exclusive"))


def target_field(message: str) -> list[str]:
    """The request field an ``invalid_target`` message is about (``[]``: the combination of fields).

    >>> target_field("not a time: 'yesterday' (expected ISO 8601, e.g. 2016-09-28T10:00Z)")
    ['point-in-time']
    >>> target_field("give exactly one of point-in-time, lsn, latest, immediate (got none)")
    []
    """
    head = message.split(":", 1)[0].lower()
    if "exactly one" in head:
        return []
    for word, fld in _TARGET_FIELDS:
        if word in head.split():
            return [fld]
    return []


def refusal(request: web.Request, err: PlanningError) -> web.Response:
    """A PlanningError as a problem document: 400 for a target that does not parse, else the 422 refusal;
    both keep the DESIGN.md refusal (``plan --json``'s error document) as the ``error`` member."""
    if err.code in INVALID_INPUT_CODES:
        loc = target_field(err.message)
        return problem(request, 400, "Invalid clone target", err.message, "invalid_target",
                       errors=[{"loc": loc, "msg": err.message, "type": err.code}], **refusal_to_dict(err))
    return problem(request, 422, "Clone refused", err.message, err.code, **refusal_to_dict(err))


def _lookup(exc: BaseException) -> tuple[int, str] | None:
    for cls in type(exc).__mro__:
        if cls in PROBLEMS:
            return PROBLEMS[cls]
    return None


def validation_errors(exc: ValidationError) -> list[dict[str, Any]]:
    """Where and why, without echoing the submitted values."""
    return [{"loc": [str(p) for p in e["loc"]], "msg": e["msg"], "type": e["type"]} for e in exc.errors()]


def status_of(exc: BaseException) -> int:
    """The HTTP status an exception is answered with (500 when unmapped)."""
    if isinstance(exc, PlanningError):
        return 400 if exc.code in INVALID_INPUT_CODES else 422
    mapped = _lookup(exc)
    return mapped[0] if mapped is not None else 500


def to_response(request: web.Request, exc: BaseException) -> web.Response:
    if isinstance(exc, InvalidToken):   # which check failed, never which key
        return problem(request, 401, "Invalid bearer token", str(exc), exc.code, check=exc.check)
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
    if isinstance(exc, StorageError):    # the archive's store failed a read a request needed (changes, ...)
        status = 503 if exc.code in SCAN_UNAVAILABLE_CODES else 502
        log.warning("%s %s: storage: %s: %s", request.method, request.path, exc.code, exc)
        return problem(request, status, "Archive storage failed", str(exc), exc.code)
    if isinstance(exc, ScanFailed):
        status = 503 if exc.code in SCAN_UNAVAILABLE_CODES else 502
        return problem(request, status, "Scan failed", str(exc), exc.code, scan=exc.outcome)
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
    if request.can_read_body and request.content_type not in ("application/json", "") \
            and not request.content_type.endswith("+json"):   # no body at all: the JSON error below (400)
        raise UnsupportedMediaType("unsupported_media_type",
                                   f"expected Content-Type: application/json, got {request.content_type}")
    raw = await request.read()
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise BadRequest("invalid_json", f"the body is not valid JSON: {exc.__class__.__name__}") from None
