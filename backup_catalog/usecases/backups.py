"""Use case: the Backups document of a name in a space (every holder, newest first), for the CLI's
``backups`` and ``GET /spaces/{space}/services/{name}/backups``."""
from __future__ import annotations

import json
from typing import Any

import asyncpg

from backup_catalog.formats.documents import scan_to_dict
from backup_catalog.settings import UndoConfig
from backup_catalog.usecases.purge_rules import undo_until
from catalog import repo, scancache
from catalog.errors import NotScanned, UnknownService
from recovery import jsonout
from recovery.model import ArchiveSnapshot
from recovery.timefmt import iso
from recovery.wal import DEFAULT_SEG_SIZE

_EMPTY = ArchiveSnapshot(layout=None, seg_size=DEFAULT_SEG_SIZE, backups=(), runs=())  # type: ignore[arg-type]
_PURGED_ARCHIVE = json.dumps(jsonout.archive_to_dict(_EMPTY, {}), separators=(",", ":"))


async def archive_text(pool: asyncpg.Pool, guid: str, stored: str | None = None) -> str:
    """The archive part of an instance's Backups entry as JSON object text: ``stored`` (for the current
    scan), else computed and stored."""
    if stored is None:
        stored = await scancache.stored_archive(pool, guid)
    if stored is None:
        try:
            stored = (await scancache.refresh(pool, guid))[0].archive
        except NotScanned:
            stored = json.dumps(jsonout.archive_to_dict(_EMPTY, {}), separators=(",", ":"))
    return stored


def _join_objects(head: dict[str, Any], tail: str) -> str:
    """JSON text of ``head`` with the members of the JSON object text ``tail`` appended."""
    h = json.dumps(head, separators=(",", ":"))
    t = tail.strip()
    if not (t.startswith("{") and t.endswith("}")):
        raise ValueError("not a JSON object")
    return h if t == "{}" else h[:-1] + "," + t[1:]


async def backups_body(pool: asyncpg.Pool, space: str, name: str, settings: UndoConfig | None = None) -> str:
    """The Backups document as JSON text, every holder of the name newest first.

    Each instance entry is its live part (name, deletion, scan state) joined with the archive document
    stored for its current scan, without re-encoding a year of backups per request. A deleted instance
    says until when it stays clonable (``undo_until``, from ``settings``); a purged one (or one being
    purged) shows no backups, WAL or windows any more, and when and by which policy it was purged.
    """
    found = await repo.holders_with_scan_cache(pool, space, name)
    if not found:
        raise UnknownService(space, name)
    parts = []
    for rec, state, stored in found:
        head = {"instance_guid": rec.guid, "name": rec.ref.name, "deleted_at": iso(rec.ref.deleted_at),
                "layout": rec.layout.value if rec.layout else None, "scan": scan_to_dict(state)}
        if settings is not None:
            head["undo_until"] = iso(undo_until(settings, rec.ref.deleted_at))
        archive = stored
        if rec.purge_policy is not None or rec.purged_at is not None:
            head.update(purged_at=iso(rec.purged_at), purge_policy=rec.purge_policy)
            archive = _PURGED_ARCHIVE
        parts.append(_join_objects(head, await archive_text(pool, rec.guid, archive)))
    return _join_objects({"space_guid": space, "name": name}, '{"instances":[' + ",".join(parts) + "]}")


async def backups_doc(pool: asyncpg.Pool, space: str, name: str, settings: UndoConfig | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(await backups_body(pool, space, name, settings))
    return doc


