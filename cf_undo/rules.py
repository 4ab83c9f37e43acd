"""cf-undo's decisions, pure: where the catalog is, what a clone request says, what the platform answered.

Exit codes as ``backup-catalog``: 0 success, 2 bad input, 3 refused (the catalog cannot plan it, the name is
unknown, the user may not start an undo, the platform refused the request), 4 the platform reported the
clone failed, 1 anything else (network, server errors).
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

OK, OTHER, BAD_INPUT, REFUSED, CLONE_FAILED = 0, 1, 2, 3, 4

GUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


class Failure(Exception):
    """A command's failure: the exit code, a message, and the document ``--json`` prints."""

    def __init__(self, code: int, message: str, doc: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.exit_code = code
        self.doc = dict(doc) if doc is not None else {"error": {"code": _CODES[code], "message": message}}


_CODES = {OTHER: "error", BAD_INPUT: "bad_input", REFUSED: "refused", CLONE_FAILED: "clone_failed"}


def catalog_url(flag: str | None, env: Mapping[str, str], stored: str | None) -> str:
    """``--api``, else ``BACKUP_CATALOG_URL``, else what ``cf-undo api URL`` stored.

    >>> catalog_url(None, {"BACKUP_CATALOG_URL": "https://bc.example/"}, "https://old")
    'https://bc.example'
    """
    url = flag or env.get("BACKUP_CATALOG_URL") or stored
    if not url:
        raise Failure(BAD_INPUT, "no catalog URL: run 'cf-undo api URL' once, set BACKUP_CATALOG_URL or pass --api")
    return check_url(url)


def check_url(url: str) -> str:
    """
    >>> check_url("ftp://x")
    Traceback (most recent call last):
    ...
    cf_undo.rules.Failure: not an http(s) URL: 'ftp://x'
    """
    if not re.match(r"^https?://[^/\s]+", url):
        raise Failure(BAD_INPUT, f"not an http(s) URL: {url!r}")
    return url.rstrip("/")


@dataclass(frozen=True, slots=True)
class Target:
    key: str              # the clone request's key (DESIGN.md): point-in-time, lsn, before-xid, ...
    value: Any

    def body(self, name: str) -> dict[str, Any]:
        """The clone request: the same for the catalog's preview and the platform's parameters.

        >>> Target("point-in-time", "2026-01-01T12:00:00Z").body("db")
        {'clone-from': 'db', 'point-in-time': '2026-01-01T12:00:00Z'}
        """
        return {"clone-from": name, self.key: self.value}

    def describe(self) -> str:
        return {"latest": "the latest recoverable point", "immediate": "the end of a backup"}.get(
            self.key, f"{self.key} {self.value}")


def target_of(at: str | None, lsn: str | None, before_xid: str | None, restore_point: str | None,
              latest: bool, immediate: bool) -> Target:
    """Exactly one target, as the command line gave it.

    >>> target_of(None, None, "4711", None, False, False)
    Target(key='before-xid', value=4711)
    """
    given: list[tuple[str, Any]] = [(k, v) for k, v in (("point-in-time", at), ("lsn", lsn), ("before-xid", before_xid),
                                                        ("restore-point", restore_point)) if v is not None]
    given += [(k, True) for k, v in (("latest", latest), ("immediate", immediate)) if v]
    if len(given) != 1:
        raise Failure(BAD_INPUT, "give exactly one of --at, --lsn, --before-xid, --restore-point, --latest, "
                                 "--immediate")
    key, value = given[0]
    if key == "before-xid":
        if not str(value).isdigit():
            raise Failure(BAD_INPUT, f"--before-xid must be a transaction id (a number), not {value!r}")
        return Target(key, int(str(value)))
    return Target(key, value)


def create_body(new_name: str, space_guid: str, plan_guid: str, target: Target, source: str) -> dict[str, Any]:
    """``POST /v3/service_instances``: a managed instance of the plan, the clone request as parameters."""
    return {"type": "managed", "name": new_name, "parameters": target.body(source),
            "relationships": {"space": {"data": {"guid": space_guid}},
                              "service_plan": {"data": {"guid": plan_guid}}}}


def http_failure(status: int, doc: Any, what: str) -> Failure:
    """A catalog answer that is not a success, as the failure the command exits with: 400 bad input;
    404 and 422 refusals (the refusal document is kept for --json and for the windows it lists); 401 the
    login; anything else 1."""
    detail = ""
    if isinstance(doc, dict):
        detail = str(doc.get("detail") or (doc.get("error") or {}).get("message") or doc.get("title") or "")
    message = f"{what}: {detail}" if detail else f"{what}: HTTP {status}"
    if status == 400:
        return Failure(BAD_INPUT, message, _keep(doc, "bad_input", message))
    if status in (404, 422):
        return Failure(REFUSED, message, _keep(doc, "refused", message))
    if status == 401:
        return Failure(OTHER, f"{message} (your login was refused; run 'cf login' again)",
                       _keep(doc, "unauthorized", message))
    return Failure(OTHER, message, _keep(doc, "error", message))


def _keep(doc: Any, code: str, message: str) -> dict[str, Any]:
    if isinstance(doc, dict) and isinstance(doc.get("error"), dict):
        return {"error": doc["error"]}
    if isinstance(doc, dict) and doc.get("code"):
        return {"error": {"code": doc["code"], "message": message}}
    return {"error": {"code": code, "message": message}}


def cc_error(doc: Any) -> str:
    """The first CF error's detail (``{"errors": [{"code","title","detail"}]}``)."""
    if isinstance(doc, dict):
        errs = doc.get("errors")
        if isinstance(errs, list) and errs and isinstance(errs[0], dict):
            return str(errs[0].get("detail") or errs[0].get("title") or "")
    return ""


JOB_DONE = {"COMPLETE"}
JOB_FAILED = {"FAILED"}


def job_state(doc: Any) -> str:
    return str(doc.get("state", "")).upper() if isinstance(doc, dict) else ""


def operation_state(doc: Any) -> tuple[str, str]:
    """(state, description) of a service instance's ``last_operation``."""
    op = doc.get("last_operation") if isinstance(doc, dict) else None
    if not isinstance(op, dict):
        return "", ""
    return str(op.get("state") or ""), str(op.get("description") or "")


def find_instance(listing: Mapping[str, Any], name: str) -> list[dict[str, Any]]:
    """The space's instances that hold or held ``name``, current holder first (as the listing orders them)."""
    out = []
    for inst in listing.get("instances", []):
        if inst.get("name") == name or any(f.get("name") == name for f in inst.get("former_names", [])):
            out.append(inst)
    return out
