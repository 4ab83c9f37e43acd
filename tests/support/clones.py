"""Clone requests for the use cases, from a JSON body as ``POST /spaces/{space}/clones`` takes it."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from recovery.target import CloneRequest, make_target

_TARGET_KEYS = ("point-in-time", "lsn", "latest", "immediate", "timeline", "exclusive", "before-xid",
                "restore-point", "restore-point-lsn")


def clone_request(body: Mapping[str, Any]) -> CloneRequest:
    """``{"clone-from": ..., "latest": true, ...}`` as the core's request (a bad target: PlanningError)."""
    unknown = set(body) - {"clone-from", "pg-version", *_TARGET_KEYS}
    assert not unknown, f"not a clone request member: {unknown}"
    target = make_target(**{k.replace("-", "_"): body[k] for k in _TARGET_KEYS if k in body})
    return CloneRequest(body["clone-from"], target, body.get("pg-version"))
