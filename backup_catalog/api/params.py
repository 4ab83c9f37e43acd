"""Path and query parameters, checked at the edge by the same rules as the bodies (:mod:`backup_catalog.api.schemas`)."""
from __future__ import annotations

from aiohttp import web
from pydantic import TypeAdapter, ValidationError

from backup_catalog.api.errors import BadRequest
from backup_catalog.api.schemas import Text

_TEXT: TypeAdapter[str] = TypeAdapter(Text)


def path_param(request: web.Request, name: str) -> str:
    """A path parameter checked against the same rule as names and GUIDs in bodies."""
    value = request.match_info[name]
    try:
        return _TEXT.validate_python(value)
    except ValidationError:
        raise BadRequest("invalid_path_parameter",
                         f"path parameter {name} must be 1-255 printable characters") from None


def bool_query(request: web.Request, name: str) -> bool:
    """A boolean query parameter as the OpenAPI document declares it: ``true`` or ``false`` (the contract
    fuzz sends ``?full=`` and ``?full=1`` as type violations; they are 400s, not guesses)."""
    raw = request.query.get(name)
    if raw is None or raw.lower() == "false":
        return False
    if raw.lower() == "true":
        return True
    raise BadRequest("invalid_query_parameter", f"query parameter {name} must be true or false")

