"""OpenAPI 3.1 document of every route, generated from the route table and the pydantic models."""
from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from pydantic import TypeAdapter

from backup_catalog.api import schemas
from backup_catalog.api.auth import Role
from backup_catalog.api.errors import PROBLEM_JSON
from backup_catalog.api.routes import OPERATIONS

REF = "#/components/schemas/{model}"
_STATUS_TEXT = {200: "OK", 201: "Created", 202: "Accepted", 204: "No content",
                400: "The request is wrong: not JSON, not the schema, or a value that does not parse (a time "
                     "without a zone, a malformed LSN, a bad timeline, not exactly one target); errors[].loc "
                     "names each field",
                401: "Unauthenticated", 403: "Forbidden for this role", 404: "Not found", 409: "Conflict",
                422: "Clone refused: a valid request the catalog cannot plan; the problem's error member is the "
                     "DESIGN.md refusal (code, message, windows, details)",
                415: "The body's Content-Type is not application/json",
                502: "The archive's store answered with an error (the problem's scan member is the outcome)",
                503: "Unavailable"}
_DEFAULT_ERROR = ("Any other error (404/405 from routing, 413 body too large, 500, ...): every non-2xx response "
                  "is an RFC 9457 problem document")


def _ref(model: type) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _components() -> dict[str, Any]:
    """The schemas of the pydantic models and of the core's document types (the plan: a frozen dataclass)."""
    models: list[tuple[type, Any]] = [(schemas.Problem, "serialization"), (schemas.Refusal, "serialization")]
    for op in OPERATIONS:
        if op.body is not None:
            models.append((op.body, "validation"))
        if op.response is not None:
            models.append((op.response, "serialization"))
    _, top = TypeAdapter.json_schemas([(m, mode, TypeAdapter(m)) for m, mode in dict.fromkeys(models)],
                                      ref_template=REF)
    return dict(top.get("$defs", {}))


def _error_response(status: int | None, *, refusal: bool = True) -> dict[str, Any]:
    """A problem+json response (``None``: the ``default`` response of every operation); 422 is the clone
    refusal where the request has a body (plans, drills), else a plain problem."""
    model = schemas.Refusal if status == 422 and refusal else schemas.Problem
    text = _DEFAULT_ERROR if status is None else _STATUS_TEXT.get(status, "Error")
    return {"description": text, "content": {PROBLEM_JSON: {"schema": _ref(model)}}}


def _operation(op: Any) -> dict[str, Any]:
    params = [{"name": name, "in": "path", "required": True,
               "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": r"^[^\x00-\x1f\x7f]+$"}}
              for name in re.findall(r"{(\w+)}", op.path)]
    params += [{"name": q.name, "in": "query", "required": q.required, "schema": q.schema,
                **({"description": q.description} if q.description else {})} for q in op.query]
    ok: dict[str, Any] = {"description": _STATUS_TEXT.get(op.ok, "OK")}
    if op.response is not None:
        ok["content"] = {"application/json": {"schema": _ref(op.response)}}
    elif op.media is not None:
        ok["content"] = {op.media: {"schema": {"type": "string"} if op.media != "application/json"
                                    else {"type": "object"}}}
    responses: dict[str, Any] = {str(op.ok): ok}
    if op.method == "PUT":      # 201 created, 200 updated
        responses["200"] = {"description": "Updated", "content": ok["content"]}
    if op.path == "/reports/coverage":
        ok["content"]["text/csv"] = {"schema": {"type": "string"}}
    for status in op.errors:
        responses[str(status)] = _error_response(status, refusal=op.body is not None)
    if op.body is not None:   # read_json: a body that is not application/json by its declared type
        responses["415"] = _error_response(415, refusal=False)
    if op.role is not Role.PUBLIC:
        responses["401"] = _error_response(401)
        if op.role is Role.OPERATOR:
            responses["403"] = _error_response(403)
    responses["default"] = _error_response(None)
    doc: dict[str, Any] = {"operationId": op.op_id, "summary": op.summary, "tags": list(op.tags),
                           "responses": responses}
    if params:
        doc["parameters"] = params
    if op.body is not None:
        doc["requestBody"] = {"required": not op.body_optional,
                              "content": {"application/json": {"schema": _ref(op.body)}}}
    doc["security"] = {Role.PUBLIC: [], Role.BROKER: [{"broker": []}, {"operator": []}],
                       Role.OPERATOR: [{"operator": []}]}[op.role]
    if op.role is Role.BROKER and "{space_guid}" in op.path:
        doc["security"].append({"uaa": []})      # end users: a UAA token, decided by the Cloud Controller
        responses.setdefault("404", _error_response(404))
        responses.setdefault("503", _error_response(503))
    return doc


@lru_cache(maxsize=1)
def openapi_document() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op)
    return {
        "openapi": "3.1.0",
        "info": {"title": "backup-catalog", "version": "1",
                 "description": "PITR catalog for PostgreSQL archives in S3: broker, operator and end-user API. "
                                "Broker credentials may use the broker routes; operator credentials every "
                                "route; end users' UAA tokens the broker routes that name a space. "
                                "/healthz, /readyz and /openapi.json are public."},
        "paths": paths,
        "components": {
            "schemas": _components(),
            "securitySchemes": {
                "broker": {"type": "http", "scheme": "basic", "description": "broker role"},
                "operator": {"type": "http", "scheme": "basic", "description": "operator role"},
                "uaa": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                        "description": "an end user's UAA access token (as `cf oauth-token` prints it): RS256, "
                                       "audience cloud_controller, scope cloud_controller.read. The Cloud "
                                       "Controller, asked with the same token, decides: the space visible -> read; "
                                       "a space the user cannot see answers 404 like an unknown name; the CC "
                                       "unreachable -> 503. A bad token is a 401 naming the failed check."},
            },
        },
    }
