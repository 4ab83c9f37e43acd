"""The JSON documents of the contracts (instances, scan state) and their terminal rendering
(backups, plan), shared by the CLI and the HTTP API. No I/O: the use cases (backup_catalog.usecases) build
the documents from the catalog."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from catalog.rows import InstanceRecord, ScanState
from recovery.timefmt import iso

if TYPE_CHECKING:    # rich only for the terminal tables: `backups --json` and `plan --json` never import it
    pass


def instance_to_dict(r: InstanceRecord) -> dict[str, Any]:
    return {"instance_guid": r.guid, "space_guid": r.ref.space_guid, "org_guid": r.ref.org_guid, "name": r.ref.name,
            "deleted_at": iso(r.ref.deleted_at), "bucket": r.storage.bucket, "prefix": r.storage.prefix,
            "layout": (r.layout.value if r.layout else None), "stanza": r.stanza,
            "pg_version": r.pg_version, "seg_size": r.seg_size,
            "hold_at": iso(r.hold_at), "purged_at": iso(r.purged_at)}   # issue 13: operator hold, purge


def scan_to_dict(state: ScanState | None) -> dict[str, Any]:
    if state is None:
        return {"last_scan": None, "unknown_objects": 0, "errors": []}
    errors = [{"code": i.code, "key": i.key, "message": i.message} for i in state.issues
              if i.code != "foreign_object"]
    if state.last_error:
        errors.insert(0, {"code": state.last_error_code, "key": None, "message": state.last_error})
    return {"last_scan": iso(state.last_scan), "last_full_scan": iso(state.last_full_scan),
            "stale_since": iso(state.stale_since), "unknown_objects": state.unknown_objects, "errors": errors}


