"""Coverage report handlers: a page of the fleet (JSON, HTML), every instance as streamed CSV, and one
instance's detail. All of them read ``backup_catalog.usecases.coverage`` (stored facts, one query)."""
from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import TypeAdapter, ValidationError

from backup_catalog.api import keys
from backup_catalog.api.errors import BadRequest, problem
from backup_catalog.api.schemas import CoverageDetail, CoverageReport, Text, dump
from backup_catalog.formats import report
from backup_catalog.usecases import coverage

_TEXT: TypeAdapter[str] = TypeAdapter(Text)


def _filters(request: web.Request) -> coverage.Filters:
    q = request.query

    def text(name: str) -> str | None:
        v = q.get(name)
        if v is not None and (len(v) > 255 or any(ord(c) < 32 or ord(c) == 127 for c in v)):
            raise BadRequest("invalid_query_parameter", f"query parameter {name} must be 1-255 printable characters")
        return v or None

    deleted = text("deleted")
    if deleted is not None and deleted not in ("true", "false"):
        raise BadRequest("invalid_query_parameter", "query parameter deleted must be true or false")
    return coverage.Filters(status=text("status"), space=text("space"), org=text("org"), name=text("name"),
                            layout=text("layout"),
                            deleted=None if deleted is None else deleted == "true")


def _limit(request: web.Request) -> int | None:
    raw = request.query.get("limit")
    if raw in (None, ""):
        return None
    try:
        return int(raw)
    except ValueError:
        raise BadRequest("invalid_query_parameter", "query parameter limit must be an integer") from None


def _cursor(request: web.Request) -> str | None:
    raw = request.query.get("cursor")
    if raw is not None and len(raw) > 1024:
        raise BadRequest("invalid_query_parameter", "query parameter cursor must be at most 1024 characters")
    return raw


def _format(request: web.Request, allowed: tuple[str, ...]) -> str:
    fmt = request.query.get("format", allowed[0])
    if fmt not in allowed:
        raise BadRequest("invalid_query_parameter", f"format must be {' or '.join(allowed)}")
    return fmt


async def get_coverage(request: web.Request) -> web.StreamResponse:
    fmt = _format(request, ("json", "csv"))
    pool, settings = request.app[keys.POOL], request.app[keys.SETTINGS]
    filters = _filters(request)
    coverage.check_limit(_limit(request))   # validated whatever the format, as the schema declares them
    _cursor(request)
    if fmt == "csv":            # every matching instance: limit and cursor do not apply
        resp = web.StreamResponse(headers={"Content-Type": "text/csv; charset=utf-8",
                                           "Content-Disposition": 'attachment; filename="coverage.csv"'})
        started = False
        async for chunk in report.csv_stream(coverage.stream(pool, settings, filters)):
            if not started:          # errors before the first row are still problem documents
                await resp.prepare(request)
                started = True
            await resp.write(chunk.encode())
        await resp.write_eof()
        return resp
    doc = await _page(request, filters)
    if isinstance(doc, web.Response):
        return doc
    return web.json_response(dump(CoverageReport, doc))


async def get_coverage_html(request: web.Request) -> web.Response:
    doc = await _page(request, _filters(request))
    if isinstance(doc, web.Response):
        return doc
    return web.Response(text=report.to_html(doc), content_type="text/html")


async def _page(request: web.Request, filters: coverage.Filters) -> dict[str, Any] | web.Response:
    """The page document, or a 422 problem for a well-formed cursor this report did not hand out."""
    try:
        return await coverage.page(request.app[keys.POOL], request.app[keys.SETTINGS], filters,
                                   limit=_limit(request), cursor=_cursor(request))
    except coverage.InvalidCursor as e:
        return problem(request, 422, "Unusable cursor", str(e), e.code)


async def _detail(request: web.Request) -> dict[str, object]:
    guid = request.match_info["guid"]
    try:
        _TEXT.validate_python(guid)
    except ValidationError:
        raise BadRequest("invalid_path_parameter", "path parameter guid must be 1-255 printable characters") from None
    return await coverage.detail(request.app[keys.POOL], request.app[keys.SETTINGS], guid)


async def get_instance_coverage(request: web.Request) -> web.Response:
    return web.json_response(dump(CoverageDetail, await _detail(request)))


async def get_instance_coverage_html(request: web.Request) -> web.Response:
    return web.Response(text=report.detail_html(await _detail(request)), content_type="text/html")
