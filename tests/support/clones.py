"""Clone requests for the use cases, parsed by the HTTP edge's own parser from a JSON body."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from api.schemas import CloneRequest as Body
from recovery.target import CloneRequest


def clone_request(body: Mapping[str, Any]) -> CloneRequest:
    """``{"clone-from": ..., "latest": true, ...}`` as ``POST /spaces/{space}/clones`` parses it."""
    return Body.model_validate(dict(body)).request
