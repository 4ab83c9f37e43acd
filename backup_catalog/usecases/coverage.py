"""Coverage of a fleet from stored facts: one query for every instance, graded in one pass.

The page (JSON, HTML, CLI table), the CSV stream, the per-instance detail and /metrics all read
:data:`catalog.fleet.FLEET_SQL` -- the instance, its latest name, its scan state, the coverage facts of its current
scan (``scan_cache_facts``) and its newest finished drill -- and grade with :func:`recovery.grading.grade`.
No snapshot is loaded per instance on a request: an instance whose facts are missing or belong to an
older scan has them computed from its snapshot and stored on the way (write-through, like the rest of
the scan cache), once.

Rows are plain JSON-ready dicts: they are the documents of ``report coverage --json`` and
``GET /reports/coverage``. Only the detail (``GET /instances/{guid}/coverage``) lists backups.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import bisect
import json
import logging
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import asyncpg

from backup_catalog.formats.pages import DEFAULT_LIMIT, LAYOUTS, MAX_LIMIT
from backup_catalog.settings import Settings
from backup_catalog.usecases import snapshots
from catalog import fleet, scancache
from catalog.errors import NotScanned, UnknownInstance
from recovery.errors import PitrError
from recovery.grading import (
    PURGE_STATES,
    RANK,
    STATUSES,
    DrillFact,
    Grade,
    GradeInput,
    ScanFacts,
    grade,
    purge_state,
    restorable_labels,
    sort_key,
)
from recovery.jsonout import window_to_dict
from recovery.timefmt import iso

log = logging.getLogger(__name__)

WRITE_THROUGH_CONCURRENCY = 4


class InvalidQuery(PitrError):
    """A filter or limit the report does not accept."""

    code = "invalid_query_parameter"


class InvalidCursor(InvalidQuery):
    """A cursor this report did not hand out."""

    code = "invalid_cursor"


@dataclass(slots=True)
class Entry:
    """One instance: the row of :data:`catalog.fleet.FLEET_SQL`, its facts and its grade."""

    guid: str
    name: str
    space_guid: str
    org_guid: str | None
    layout: str | None
    deleted_at: datetime | None
    hold_at: datetime | None
    purged_at: datetime | None
    last_scan: datetime | None
    stale_since: datetime | None
    failing: bool
    errors_n: int
    errors: tuple[str, ...]          # the first error only, unless the row's lists were read
    facts: ScanFacts | None
    facts_error: str | None
    lists: bool                      # facts.windows/holes and every error are loaded
    drill: DrillFact | None
    drill_duration_s: float | None
    record: asyncpg.Record
    grade: Grade | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[int, int, str, str]:
        assert self.grade is not None
        return sort_key(self.grade.status, self.deleted_at is not None, self.name, self.guid)

    def grade_input(self) -> GradeInput:
        return GradeInput(deleted_at=self.deleted_at, scanned=self.layout is not None, facts=self.facts,
                          facts_error=self.facts_error, last_scan=self.last_scan, stale_since=self.stale_since,
                          scan_errors=self.errors, scan_errors_count=self.errors_n, drill=self.drill)


def _entry(r: asyncpg.Record, *, lists: bool) -> Entry:
    drill = None
    if r["drill_id"] is not None:
        drill = DrillFact(id=r["drill_id"], at=r["drill_at"], ok=r["drill_state"] == "passed",
                          target=json.loads(r["drill_target"]) if r["drill_target"] else None,
                          reason=r["drill_reason"])
    errors: tuple[str, ...] = (r["errors_first"],) if r["errors_first"] is not None else ()
    if lists:
        errors = _all_errors(r["last_error"], r["issues"])
    return Entry(guid=r["instance_guid"], name=r["name"], space_guid=r["space_guid"], org_guid=r["org_guid"],
                 layout=r["layout"], deleted_at=r["deleted_at"], hold_at=r["hold_at"], purged_at=r["purged_at"],
                 last_scan=r["last_scan"], stale_since=r["stale_since"], failing=bool(r["failing"]),
                 errors_n=int(r["errors_n"]), errors=errors,
                 facts=scancache.row_to_facts(r, lists=lists) if r["has_facts"] else None, facts_error=None,
                 lists=lists and bool(r["has_facts"]), drill=drill, drill_duration_s=r["drill_duration_s"],
                 record=r)


def _all_errors(last_error: str | None, issues: str | None) -> tuple[str, ...]:
    """As ``documents.scan_to_dict``: the last scan failure first, then the stored issues but foreign objects."""
    out = [last_error] if last_error else []
    out += [i.get("message", "") for i in json.loads(issues or "[]") if i.get("code") != "foreign_object"]
    return tuple(out)


async def _write_through(pool: asyncpg.Pool, entries: list[Entry]) -> None:
    """Compute (and store) the facts of instances whose stored ones are missing or stale."""
    todo = [e for e in entries if e.facts is None and e.layout is not None]
    if not todo:
        return
    log.info("coverage facts missing or stale for %d instance(s): computing them from their snapshots", len(todo))
    sem = asyncio.Semaphore(WRITE_THROUGH_CONCURRENCY)

    async def one(e: Entry) -> None:
        async with sem:
            try:
                d, _ = await scancache.refresh(pool, e.guid)
                e.facts, e.lists = d.facts, True
            except NotScanned:
                e.layout = None
            except Exception as exc:
                log.warning("coverage facts of %s cannot be computed: %s: %s", e.guid, type(exc).__name__, exc)
                e.facts_error = f"{type(exc).__name__}: {exc}"
    await asyncio.gather(*(one(e) for e in todo))


async def entries(db: asyncpg.Pool, settings: Settings, now: datetime, *, extra: str = "", joins: str = "",
                  where: str = "", args: Iterable[Any] = (), lists: bool = False, explain: bool = True
                  ) -> list[Entry]:
    """Every instance (or those ``where`` selects), graded (without the reasons' text unless ``explain``:
    see :func:`explained`). One query, then write-through where needed."""
    recs = await fleet.fetch_fleet(db, fleet.fleet_sql(lists=lists, extra=extra, joins=joins, where=where), *args)
    out = [_entry(r, lists=lists) for r in recs]
    await _write_through(db, out)
    for e in out:
        e.grade = grade(e.grade_input(), settings, now, explain=explain)
    return out


def explained(es: Iterable[Entry], settings: Settings, now: datetime) -> None:
    """Grade again with the reasons' text (the same rules: the same status)."""
    for e in es:
        e.grade = grade(e.grade_input(), settings, now)


# -- filters and pages ----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Filters:
    status: str | None = None
    space: str | None = None
    org: str | None = None
    name: str | None = None        # a prefix of the current name
    layout: str | None = None      # a layout, or "unknown" (never scanned)
    deleted: bool | None = None    # None: live and deleted

    def __post_init__(self) -> None:
        if self.status is not None and self.status not in STATUSES:
            raise InvalidQuery(f"status must be one of {', '.join(STATUSES)}")
        if self.layout is not None and self.layout not in (*LAYOUTS, "unknown"):
            raise InvalidQuery(f"layout must be one of {', '.join((*LAYOUTS, 'unknown'))}")

    def matches(self, e: Entry) -> bool:
        return ((self.status is None or (e.grade is not None and e.grade.status == self.status))
                and (self.space is None or e.space_guid == self.space)
                and (self.org is None or e.org_guid == self.org)
                and (self.name is None or e.name.startswith(self.name))
                and (self.layout is None or (e.layout or "unknown") == self.layout)
                and (self.deleted is None or (e.deleted_at is not None) == self.deleted))

    def to_query(self) -> dict[str, str]:
        """As query parameters (only those set)."""
        out = {k: getattr(self, k) for k in ("status", "space", "org", "name", "layout")
               if getattr(self, k) not in (None, "")}
        if self.deleted is not None:
            out["deleted"] = "true" if self.deleted else "false"
        return out


def encode_cursor(key: tuple[int, int, str, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(key), separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(text: str) -> tuple[int, int, str, str]:
    try:
        raw = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        rank, deleted, name, guid = raw
        if not (isinstance(rank, int) and -rank in RANK.values() and deleted in (0, 1)
                and isinstance(name, str) and isinstance(guid, str)):
            raise ValueError
        return (rank, deleted, name, guid)
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise InvalidCursor("cursor is not one this report handed out (use next_cursor of a page)") from None


def check_limit(limit: int | None) -> int:
    if limit is None:
        return DEFAULT_LIMIT
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidQuery(f"limit must be between 1 and {MAX_LIMIT}")
    return limit


def summary(all_entries: list[Entry], settings: Settings, now: datetime) -> dict[str, Any]:
    """Counts over the whole fleet (not only the filtered rows): by status, live/deleted, by purge state."""
    out: dict[str, Any] = {"instances": len(all_entries), **dict.fromkeys(STATUSES, 0), "live": 0, "deleted": 0,
                           "purge": dict.fromkeys(PURGE_STATES, 0)}
    for e in all_entries:
        assert e.grade is not None
        out[e.grade.status] += 1
        out["deleted" if e.deleted_at is not None else "live"] += 1
        state = purge_state(e.deleted_at, e.hold_at, e.purged_at, settings.deleted_retention_days, now)[1]
        if state is not None:
            out["purge"][state] += 1
    return out


async def page(pool: asyncpg.Pool, settings: Settings, filters: Filters = Filters(), *, limit: int | None = None,
               cursor: str | None = None, now: datetime | None = None) -> dict[str, Any]:
    """The coverage document: fleet summary, then one page of matching rows worst first, and the cursor
    of the next page (None on the last)."""
    now = now or datetime.now(UTC)
    limit = check_limit(limit)
    after = decode_cursor(cursor) if cursor else None
    everything = await entries(pool, settings, now, explain=False)
    summ = summary(everything, settings, now)
    matched = sorted((e for e in everything if filters.matches(e)), key=lambda e: e.key)
    start = 0
    if after is not None:
        start = bisect.bisect_right([e.key for e in matched], after)
    chunk = matched[start:start + limit]
    more = start + limit < len(matched)
    await _load_lists(pool, chunk)
    explained(chunk, settings, now)       # every scan error is loaded now: the first one is in the reasons
    return {"generated_at": iso(now), "summary": summ, "filters": filters.to_query(), "matched": len(matched),
            "limit": limit, "instances": [row_of(e, settings, now) for e in chunk],
            "next_cursor": encode_cursor(chunk[-1].key) if more and chunk else None}


async def _load_lists(pool: asyncpg.Pool, chunk: list[Entry]) -> None:
    """Windows, holes and every scan error of the rows of a page (one query)."""
    need = [e.guid for e in chunk if not e.lists or e.errors_n > len(e.errors)]
    if not need:
        return
    by = await fleet.lists_of(pool, need)
    for e in chunk:
        r = by.get(e.guid)
        if r is None:
            continue
        e.errors = _all_errors(r["last_error"], r["issues"])
        if not e.lists and e.facts is not None and r["has_facts"]:
            e.facts = replace(e.facts, windows=tuple(json.loads(r["windows"])), holes=tuple(json.loads(r["holes"])))
            e.lists = True


def row_of(e: Entry, settings: Settings, now: datetime) -> dict[str, Any]:
    """The coverage row of one graded instance (no per-backup list)."""
    g, f = e.grade, e.facts or ScanFacts()
    assert g is not None
    until, purge = purge_state(e.deleted_at, e.hold_at, e.purged_at, settings.deleted_retention_days, now)
    return {
        "instance_guid": e.guid, "name": e.name, "space_guid": e.space_guid, "org_guid": e.org_guid,
        "layout": e.layout, "deleted": e.deleted_at is not None, "deleted_at": iso(e.deleted_at),
        "status": g.status, "reasons": list(g.reasons), "reference_time": iso(g.reference_time),
        "newest_backup": f.newest_backup, "newest_backup_stop_time": iso(f.newest_backup_stop_time),
        "newest_backup_age_seconds": g.newest_backup_age_seconds,
        "backups_total": f.backups_total, "backups_restorable": f.backups_restorable,
        "windows": list(f.windows), "holes": list(f.holes), "corrupt": list(f.corrupt),
        "latest_window_end": iso(f.latest_end), "latest_window_end_exact": f.latest_end_exact,
        "latest_window_end_kind": f.latest_end_kind, "rpo_seconds": g.rpo_seconds,
        "last_scan": iso(e.last_scan), "fresh_as_of": iso(e.record["fresh_as_of"]), "stale_since": iso(e.stale_since),
        "scan_errors_count": e.errors_n, "scan_errors": list(e.errors),
        "drill": e.drill.to_dict() if e.drill else None,
        "undo_until": iso(until), "purge": purge,
    }


async def stream(pool: asyncpg.Pool, settings: Settings, filters: Filters = Filters(), *,
                 now: datetime | None = None, batch: int = 500) -> AsyncIterator[dict[str, Any]]:
    """Every matching row (no per-backup lists), in name order, read through a server-side cursor in
    batches: memory stays flat whatever the fleet's size."""
    now = now or datetime.now(UTC)
    async for recs in fleet.stream(pool, batch=batch):
        chunk = [_entry(r, lists=True) for r in recs]
        await _write_through(pool, chunk)
        for e in chunk:
            e.grade = grade(e.grade_input(), settings, now)
            if filters.matches(e):
                yield row_of(e, settings, now)


async def all_rows(pool: asyncpg.Pool, settings: Settings, filters: Filters = Filters(), *,
                   now: datetime | None = None) -> list[dict[str, Any]]:
    """Every matching row, worst first (the CLI's whole-fleet outputs and tests)."""
    now = now or datetime.now(UTC)
    es = [e for e in await entries(pool, settings, now, lists=True) if filters.matches(e)]
    es.sort(key=lambda e: e.key)
    return [row_of(e, settings, now) for e in es]


async def detail(pool: asyncpg.Pool, settings: Settings, guid: str, *, now: datetime | None = None) -> dict[str, Any]:
    """The instance's row and its per-backup list (with whether each is restorable) and whole windows.

    :raises UnknownInstance: no such instance."""
    now = now or datetime.now(UTC)
    found = await entries(pool, settings, now, where="WHERE i.instance_guid = $1", args=(guid,), lists=True)
    if not found:
        raise UnknownInstance(guid)
    row = row_of(found[0], settings, now)
    try:
        snap = await snapshots.snapshot_of(pool, guid)
    except NotScanned:
        row["backups"] = []
        return row
    wins = snapshots.windows_of(guid, snap)
    restorable = restorable_labels(wins)
    row["windows"] = [window_to_dict(w) for w in wins]
    row["backups"] = [{"label": b.label, "type": b.type.value, "status": b.status.value,
                       "stop_time": iso(b.stop_time), "restorable": b.label in restorable}
                      for b in sorted(snap.backups, key=lambda b: (b.stop_time is None, b.stop_time or now, b.label))]
    return row
