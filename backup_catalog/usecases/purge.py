"""Use case: the undo period of deleted instances and the purge of their archives (DESIGN.md "Undo period
and purge"), shared by the CLI (``backup-catalog purge``) and the HTTP API (``GET/POST /purges``).

``plan`` is the dry run: every deleted instance whose undo period is over, its exact prefixes, objects and
bytes, and whether a run would delete it now (pure rules: :mod:`backup_catalog.usecases.purge_rules`). ``run`` does
it with the purge's own S3 client, one instance at a time, under the ``purge`` lease:

1. list its prefixes and refuse when anything there was written after the deletion (in use again);
2. in one transaction, lock the instance, re-read the catalog and re-apply every rule, then open (or resume)
   its audit row and mark it as being purged (clones are refused from here on: the archive is incomplete);
3. DeleteObjects in batches of up to 1,000 keys of that listing, each retried; after each batch the audit
   row's counts are committed, the lease renewed and the hold re-checked;
4. list again: old leftovers (a listing that lagged) are deleted in another pass, new objects refuse;
   nothing left: the row is ``done`` and the instance ``purged_at``.

A run killed anywhere is finished by the next run, which resumes the same audit row.
"""
from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

from backup_catalog.settings import Settings
from backup_catalog.usecases.purge_rules import (
    Decision,
    Location,
    Policy,
    State,
    batches,
    decide,
    policy_of,
    reused,
    undo_until,
)
from catalog import leases, purges, repo, tracing
from catalog.rows import InstanceRecord
from recovery.errors import PitrError, PlanningError
from recovery.timefmt import iso
from scheduler.deleter import S3Deleter
from scheduler.storage import ObjectInfo, S3Store, StorageError

log = logging.getLogger(__name__)

LEASE = "purge"
LEASE_TTL_SECONDS = 300.0      # renewed after every batch; a dead holder's lease lapses after this
VERIFY_PASSES = 3


class PurgeBusy(PitrError):
    code = "purge_in_progress"




def location_of(rec: InstanceRecord) -> Location:
    layout = rec.layout.value if rec.layout is not None else None
    return Location(rec.guid, rec.storage.bucket, rec.storage.prefix, layout, rec.stanza or rec.storage.stanza,
                    rec.ref.deleted_at, rec.hold_at, rec.hold_reason, rec.purged_at,
                    rec.purge_policy is not None)


def purged_refusal(rec: InstanceRecord, started_at: datetime | None = None) -> PlanningError:
    """The clone refusal for an instance whose archive was (or is being) deleted by a purge."""
    policy = rec.purge_policy or "an unknown policy"
    deleted = iso(rec.ref.deleted_at)
    if rec.purged_at is not None:
        msg = (f"instance {rec.guid} (last named {rec.ref.name!r}, deleted at {deleted}) cannot be cloned: its "
               f"archive was purged at {iso(rec.purged_at)} by the policy {policy}")
    else:
        since = f" since {iso(started_at)}" if started_at else ""
        msg = (f"instance {rec.guid} (last named {rec.ref.name!r}, deleted at {deleted}) cannot be cloned: its "
               f"archive is being purged{since} by the policy {policy} and is incomplete")
    return PlanningError("purged", msg, details={
        "instance_guid": rec.guid, "deleted_at": deleted, "purged_at": iso(rec.purged_at), "policy": policy})


@dataclass
class Entry:
    rec: InstanceRecord
    decision: Decision
    state: State
    reason: str | None
    objects: int = 0
    bytes: int = 0
    objects_deleted: int = 0
    bytes_deleted: int = 0
    listing: list[ObjectInfo] = field(default_factory=list, repr=False)
    counted: set[str] = field(default_factory=set, repr=False)   # keys this run already counted as deleted

    def to_json(self) -> dict[str, Any]:
        r = self.rec
        return {"instance_guid": r.guid, "name": r.ref.name, "space_guid": r.ref.space_guid,
                "layout": r.layout.value if r.layout else None, "bucket": r.storage.bucket,
                "prefix": r.storage.prefix, "prefixes": list(self.decision.prefixes),
                "objects": self.objects, "bytes": self.bytes, "state": str(self.state), "reason": self.reason,
                "deleted_at": iso(r.ref.deleted_at), "undo_until": iso(self.decision.undo_until),
                "delete_after": iso(self.decision.delete_after), "hold_at": iso(r.hold_at),
                "objects_deleted": self.objects_deleted, "bytes_deleted": self.bytes_deleted}


@dataclass
class Report:
    policy: Policy
    dry_run: bool
    at: datetime
    entries: list[Entry]

    @property
    def objects_deleted(self) -> int:
        return sum(e.objects_deleted for e in self.entries)

    @property
    def bytes_deleted(self) -> int:
        return sum(e.bytes_deleted for e in self.entries)

    @property
    def failed(self) -> bool:
        return any(e.state is State.FAILED for e in self.entries)

    def to_json(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "at": iso(self.at), "policy": self.policy.name,
                "instances": [e.to_json() for e in self.entries],
                "objects_deleted": self.objects_deleted, "bytes_deleted": self.bytes_deleted}


@dataclass(frozen=True, slots=True)
class Progress:
    """One step of a run: ``phase`` listed|batch|done|refused|failed for instance ``guid``."""

    guid: str
    phase: str
    objects_done: int
    objects_total: int
    bytes_done: int
    bytes_total: int
    message: str = ""


OnProgress = Callable[[Progress], None]


def _decisions(recs: Sequence[InstanceRecord], policy: Policy, now: datetime) -> list[Entry]:
    locs = [location_of(r) for r in recs]
    out = []
    for rec, loc in zip(recs, locs, strict=True):
        d = decide(loc, locs, policy, now)
        if d is not None:
            out.append(Entry(rec, d, d.state, d.reason))
    out.sort(key=lambda e: (e.decision.delete_after, e.rec.guid))
    return out


async def _list(store: S3Store | S3Deleter, prefixes: Sequence[str]) -> list[ObjectInfo]:
    objs: list[ObjectInfo] = []
    for p in prefixes:
        if isinstance(store, S3Deleter):
            objs += await store.list_all(p)
        else:
            objs += [o async for o in store.list_keys(p)]
    return objs


async def _inspect(e: Entry, store: S3Store | S3Deleter) -> None:
    """List a due entry's prefixes (objects, bytes) and apply the reuse rule."""
    e.listing = await _list(store, e.decision.prefixes)
    e.objects, e.bytes = len(e.listing), sum(o.size for o in e.listing)
    assert e.rec.ref.deleted_at is not None
    why = reused(((o.key, o.last_modified) for o in e.listing), e.rec.ref.deleted_at)
    if why is not None:
        e.state, e.reason = State.REFUSED, why


async def plan(pool: asyncpg.Pool, settings: Settings, client: Any, *, now: datetime | None = None) -> Report:
    """The dry run: what ``run`` would delete now (listing with the read-only client)."""
    now = now or datetime.now(UTC)
    policy = policy_of(settings)
    entries = _decisions(await repo.list_instances(pool), policy, now)
    for e in entries:
        if e.state is State.DUE:
            try:
                await _inspect(e, S3Store(client, e.rec.storage.bucket))
            except StorageError as err:
                e.state, e.reason = State.FAILED, f"listing failed: {err.code}: {err}"
    return Report(policy, True, now, entries)


async def run(pool: asyncpg.Pool, settings: Settings, client: Any, *, holder: str, now: datetime | None = None,
              on_progress: OnProgress | None = None) -> Report:
    """Delete what is due (``client``: the purge's own write client). Per-instance failures are in the report.
    :raises PurgeBusy: another purge holds the lease (also one of the same replica: each run is its own holder)."""
    holder = f"{holder}/{secrets.token_hex(4)}"
    token = await leases.try_acquire_lease(pool, LEASE, holder, LEASE_TTL_SECONDS)
    if token is None:
        held = await leases.lease_holder(pool, LEASE)
        who = f" held by {held[0]} until {iso(held[1])}" if held else ""
        raise PurgeBusy(f"another purge is running (lease 'purge'{who}; a crashed run's lease lapses then); "
                        "try again when it has finished")
    try:
        now = now or datetime.now(UTC)
        policy = policy_of(settings)
        entries = _decisions(await repo.list_instances(pool), policy, now)
        for e in entries:
            if e.state is State.REFUSED and (e.rec.hold_at is None or e.rec.purge_policy is not None):
                await _audit_refusal(pool, e, policy, holder)     # a hold ends an unfinished purge's row too
            if e.state is State.DUE:
                await _purge_one(pool, settings, client, e, policy, holder, token, on_progress)
        return Report(policy, False, now, entries)
    finally:
        await leases.release_lease(pool, LEASE, holder, token)


async def _audit_refusal(pool: asyncpg.Pool, e: Entry, policy: Policy, holder: str) -> None:
    """A run records safety refusals (an operator hold is an exemption, not a refusal: not audited)."""
    await purges.record_refusal(pool, e.rec.guid, bucket=e.rec.storage.bucket, prefix=e.rec.storage.prefix,
                                prefixes=e.decision.prefixes, policy=policy.name, reason=e.reason or "refused",
                                holder=holder)


def _emit(on_progress: OnProgress | None, e: Entry, phase: str, message: str = "") -> None:
    ev = Progress(e.rec.guid, phase, e.objects_deleted, e.objects, e.bytes_deleted, e.bytes, message)
    log.info("purge instance=%s phase=%s objects_deleted=%d objects=%d bytes_deleted=%d bytes=%d%s", ev.guid,
             ev.phase, ev.objects_done, ev.objects_total, ev.bytes_done, ev.bytes_total,
             f" reason={message!r}" if message else "")
    if on_progress is not None:
        on_progress(ev)


@tracing.traced("purge", lambda a: {"instance.guid": a["e"].rec.guid})
async def _purge_one(pool: asyncpg.Pool, settings: Settings, client: Any, e: Entry, policy: Policy, holder: str,
                     token: int, on_progress: OnProgress | None) -> None:
    rec = e.rec
    deleted_at = rec.ref.deleted_at
    assert deleted_at is not None
    store = S3Deleter(client, rec.storage.bucket, attempts=max(3, settings.s3_max_attempts))
    try:
        await _inspect(e, store)                                   # the listing re-check
    except StorageError as err:
        e.state, e.reason = State.FAILED, f"listing failed: {err.code}: {err}"
        _emit(on_progress, e, "failed", e.reason)
        return
    if e.state is State.REFUSED:
        await _audit_refusal(pool, e, policy, holder)
        _emit(on_progress, e, "refused", e.reason or "")
        return
    async with repo.transaction(pool) as c:                        # the catalog re-check
        cur, everyone = await purges.lock_instances(c, rec.guid)
        again = decide(location_of(cur), [location_of(r) for r in everyone], policy, datetime.now(UTC))
        if again is None or again.state is not State.DUE or again.prefixes != e.decision.prefixes:
            e.state = again.state if again is not None else State.REFUSED
            e.reason = (again.reason if again is not None and again.reason else
                        "the catalog changed since the listing (re-check): not deleted")
            if again is None or (again.state is State.REFUSED and (cur.hold_at is None or cur.purge_policy)):
                await purges.record_refusal(c, rec.guid, bucket=rec.storage.bucket, prefix=rec.storage.prefix,
                                            prefixes=e.decision.prefixes, policy=policy.name, reason=e.reason,
                                            holder=holder)
            _emit(on_progress, e, "refused", e.reason)
            return
        audit = await purges.begin(c, rec.guid, bucket=rec.storage.bucket, prefix=rec.storage.prefix,
                                   prefixes=e.decision.prefixes, policy=policy.name, holder=holder)
    if audit.pending:     # a batch was in flight when an earlier run died: count the keys S3 did delete
        present = {o.key for o in e.listing}
        gone = {k: n for k, n in audit.pending.items() if k not in present}
        await purges.progress(pool, audit.id, len(gone), sum(gone.values()))
    _emit(on_progress, e, "listed")
    todo = e.listing
    for _ in range(VERIFY_PASSES):
        stop = await _delete_listed(pool, store, e, todo, audit.id, settings.purge_batch_size, holder, token,
                                    on_progress)
        if stop is not None:
            outcome, reason = stop
            await purges.finish(pool, audit.id, outcome, reason)
            e.state, e.reason = (State.FAILED if outcome == "failed" else State.REFUSED), reason
            _emit(on_progress, e, outcome if outcome == "failed" else "refused", reason)
            return
        try:
            left = await _list(store, e.decision.prefixes)
        except StorageError as err:
            reason = f"verification listing failed: {err.code}: {err}"
            await purges.finish(pool, audit.id, "failed", reason)
            e.state, e.reason = State.FAILED, reason
            _emit(on_progress, e, "failed", reason)
            return
        why = reused(((o.key, o.last_modified) for o in left), deleted_at)
        if why is not None:
            reason = f"{why}; written during the purge, kept"
            await purges.finish(pool, audit.id, "refused", reason)
            e.state, e.reason = State.REFUSED, reason
            _emit(on_progress, e, "refused", reason)
            return
        if not left:
            await purges.finish(pool, audit.id, "done")
            e.state, e.reason = State.DELETED, None
            _emit(on_progress, e, "done")
            return
        todo = left                   # a listing that lagged behind: another pass over what is still there
    reason = f"{len(todo)} object(s) still listed after {VERIFY_PASSES} passes"
    await purges.finish(pool, audit.id, "failed", reason)
    e.state, e.reason = State.FAILED, reason
    _emit(on_progress, e, "failed", reason)


async def _delete_listed(pool: asyncpg.Pool, store: S3Deleter, e: Entry, listing: Sequence[ObjectInfo],
                         audit_id: int, batch_size: int, holder: str, token: int,
                         on_progress: OnProgress | None) -> tuple[str, str] | None:
    """Delete ``listing`` in batches; (outcome, reason) when the purge must stop, else None."""
    size = {o.key: o.size for o in listing}
    for batch in batches([o.key for o in listing], batch_size):
        if await leases.try_acquire_lease(pool, LEASE, holder, LEASE_TTL_SECONDS) != token:
            return "failed", "the purge lease was lost (another replica took it); nothing more deleted"
        held = await purges.hold_of(pool, e.rec.guid)
        if held is not None:
            return "refused", (f"operator hold placed at {iso(held)} during the purge; stopped after "
                               f"{e.objects_deleted} object(s)")
        new = [k for k in batch if k not in e.counted]    # a lagging listing may show a deleted key again
        await purges.set_pending(pool, audit_id, {k: size[k] for k in new})
        try:
            await store.delete(batch)
        except StorageError as err:
            return "failed", f"DeleteObjects failed after retries: {err.code}: {err}"
        nbytes = sum(size[k] for k in new)
        await purges.progress(pool, audit_id, len(new), nbytes)
        e.counted.update(new)
        e.objects_deleted += len(new)
        e.bytes_deleted += nbytes
        _emit(on_progress, e, "batch")
    return None


# -- holds -------------------------------------------------------------------------------------

def hold_doc(rec: InstanceRecord, settings: Settings) -> dict[str, Any]:
    return {"instance_guid": rec.guid, "hold_at": iso(rec.hold_at), "hold_reason": rec.hold_reason,
            "deleted_at": iso(rec.ref.deleted_at), "undo_until": iso(undo_until(settings, rec.ref.deleted_at)),
            "purged_at": iso(rec.purged_at)}


async def hold(pool: asyncpg.Pool, settings: Settings, guid: str, reason: str | None = None) -> dict[str, Any]:
    return hold_doc(await purges.set_hold(pool, guid, reason), settings)


async def unhold(pool: asyncpg.Pool, settings: Settings, guid: str) -> dict[str, Any]:
    return hold_doc(await purges.clear_hold(pool, guid), settings)


async def delete_instance(pool: asyncpg.Pool, settings: Settings, guid: str) -> dict[str, Any]:
    """Mark deleted (idempotent) and say until when it stays clonable."""
    await repo.delete_instance(pool, guid)
    rec = await repo.get_instance(pool, guid)
    return {"instance_guid": guid, "deleted_at": iso(rec.ref.deleted_at),
            "undo_until": iso(undo_until(settings, rec.ref.deleted_at))}
