"""Cloud Foundry name sync: discover instance prefixes in S3 and keep names/spaces in step with the CC.

Discovery mode: every service instance archives under ``s3://<bucket>/<root>/<instance_guid>/``.
``sync_once`` lists those GUID prefixes, asks the Cloud Controller (v3 API, UAA client-credentials
token) for each instance's name and space, and updates the catalog:

- a new GUID is registered with storage ``(bucket, "<root>/<guid>/", layout auto)``; its first name is
  valid from the beginning of time (the instance existed before the catalog learned of it);
- a changed name (or space) is a rename, so the old name keeps resolving for earlier target times;
- a 404 marks the instance deleted, keeping its last name;
- when the CC is unavailable (5xx, timeouts, after retries) the instance is left unchanged:
  a sync never loses a name.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import asyncpg

from backup_catalog.cloudfoundry.client import CfInstance, CloudController, CloudControllerError
from backup_catalog.settings import Settings
from catalog import repo, spaces
from catalog.errors import Conflict
from catalog.rows import InstanceRecord
from recovery.model import InstanceRef, Storage
from scheduler.clients import s3_client
from scheduler.storage import ObjectStore, S3Store

GUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


@dataclass(frozen=True, slots=True)
class SyncChange:
    guid: str
    detail: str


@dataclass(frozen=True, slots=True)
class SyncReport:
    """What one sync did, per instance GUID."""

    discovered: tuple[str, ...] = ()
    registered: tuple[SyncChange, ...] = ()
    renamed: tuple[SyncChange, ...] = ()
    deleted: tuple[SyncChange, ...] = ()
    unchanged: tuple[str, ...] = ()
    failed: tuple[SyncChange, ...] = ()     # CC unavailable or refused: catalog left as it was
    orphans: tuple[str, ...] = ()           # prefix in S3 but no such instance in the CC (never registered)
    conflicts: tuple[SyncChange, ...] = ()  # the catalog refused the change (name held by another live instance)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.conflicts


def root_prefix(root: str) -> str:
    """``"cf/"`` / ``"/cf"`` / ``"cf"`` -> ``"cf/"``; ``""`` -> ``""`` (instances at the bucket top).

    >>> root_prefix("/pg/cf/"), root_prefix("")
    ('pg/cf/', '')
    """
    r = root.strip("/")
    return f"{r}/" if r else ""


def instance_prefix(root: str, guid: str) -> str:
    return f"{root_prefix(root)}{guid}/"


async def discover(store: ObjectStore, bucket: str, root: str) -> list[str]:
    """GUIDs of the instance prefixes directly under ``root`` (one delimiter listing), sorted.

    ``bucket`` names the bucket ``store`` lists (checked when the store knows its bucket)."""
    own = getattr(store, "bucket", None)
    if own is not None and own != bucket:
        raise ValueError(f"store lists bucket {own!r}, not {bucket!r}")
    base = root_prefix(root)
    listing = await store.list_dir(base)
    guids = {p[len(base):].rstrip("/") for p in listing.prefixes}
    return sorted(g.lower() for g in guids if GUID_RE.match(g))


async def sync_once(pool: asyncpg.Pool, settings: Settings, store_or_client: Any, bucket: str, root: str, *,
                    cc: CloudController) -> SyncReport:
    """Discover instance prefixes under ``s3://bucket/root/`` and reconcile names with the Cloud Controller.

    ``store_or_client``: an ObjectStore over ``bucket``, an aioboto3 S3 client, or None (a client is
    opened from ``settings``). Catalogued live instances under the same root are checked too, even if
    their prefix is no longer listed.
    """
    if store_or_client is None:
        async with s3_client(settings) as client:
            return await sync_once(pool, settings, client, bucket, root, cc=cc)
    store = store_or_client if hasattr(store_or_client, "list_dir") else S3Store(store_or_client, bucket)
    found = await discover(store, bucket, root)
    known = {r.guid: r for r in await repo.list_instances(pool, include_deleted=True)}
    ours = {g for g, r in known.items() if r.ref.deleted_at is None and r.storage.bucket == bucket
            and r.storage.normalized_prefix() == instance_prefix(root, g)}
    acc = _Acc(tuple(found))
    orgs: dict[str, str | None] = {}
    retry: list[tuple[InstanceRecord | None, CfInstance]] = []
    for guid in sorted(set(found) | ours):
        rec = known.get(guid)
        if rec is not None and rec.ref.deleted_at is not None:
            acc.unchanged.append(guid)   # deleted stays deleted; it keeps its last name
            continue
        try:
            cf = await cc.service_instance(guid)
            if cf is not None and cf.space_guid not in orgs:
                orgs[cf.space_guid] = await cc.space_org(cf.space_guid)
        except CloudControllerError as e:
            acc.failed.append(SyncChange(guid, str(e)))
            continue
        if cf is None:
            await _gone(pool, guid, rec, acc)
            continue
        cf = CfInstance(cf.guid, cf.name, cf.space_guid, orgs.get(cf.space_guid), cf.plan_guid)
        if not await _apply(pool, rec, cf, bucket, root, acc, final=False):
            retry.append((rec, cf))
    for first, cf in retry:   # e.g. two instances swapping names: the second pass sees the first one moved
        rec = known.get(cf.guid) if first is None else await repo.get_instance(pool, cf.guid)
        await _apply(pool, rec, cf, bucket, root, acc, final=True)
    return acc.report()


class _Acc:
    """Mutable tally while syncing; frozen into a SyncReport at the end."""

    def __init__(self, discovered: tuple[str, ...]) -> None:
        self.discovered = discovered
        self.registered: list[SyncChange] = []
        self.renamed: list[SyncChange] = []
        self.deleted: list[SyncChange] = []
        self.unchanged: list[str] = []
        self.failed: list[SyncChange] = []
        self.orphans: list[str] = []
        self.conflicts: list[SyncChange] = []

    def report(self) -> SyncReport:
        return SyncReport(self.discovered, tuple(self.registered), tuple(self.renamed), tuple(self.deleted),
                          tuple(self.unchanged), tuple(self.failed), tuple(self.orphans), tuple(self.conflicts))


async def _gone(pool: asyncpg.Pool, guid: str, rec: InstanceRecord | None, acc: _Acc) -> None:
    if rec is None:
        acc.orphans.append(guid)
        return
    await repo.delete_instance(pool, guid)
    acc.deleted.append(SyncChange(guid, f"deleted in Cloud Foundry; keeps its last name {rec.ref.name!r}"))


async def _apply(pool: asyncpg.Pool, rec: InstanceRecord | None, cf: CfInstance, bucket: str, root: str,
                 acc: _Acc, *, final: bool) -> bool:
    """Register or rename; False when the catalog refused it and a second pass may succeed."""
    try:
        if rec is None:
            ref = InstanceRef(cf.guid, cf.space_guid, cf.name, org_guid=cf.org_guid)
            await repo.register_instance(pool, ref, Storage(bucket, instance_prefix(root, cf.guid), "auto"),
                                         existed_before=True)
            acc.registered.append(SyncChange(cf.guid, f"registered as {cf.name!r} in space {cf.space_guid}"))
        elif (rec.ref.name, rec.ref.space_guid) != (cf.name, cf.space_guid) or \
                (cf.org_guid is not None and rec.ref.org_guid != cf.org_guid):
            ref = InstanceRef(cf.guid, cf.space_guid, cf.name, org_guid=cf.org_guid or rec.ref.org_guid)
            await repo.register_instance(pool, ref, rec.storage)
            if (rec.ref.name, rec.ref.space_guid) != (cf.name, cf.space_guid):
                acc.renamed.append(SyncChange(cf.guid, f"{rec.ref.name!r} -> {cf.name!r}"
                                              + (f" (space {cf.space_guid})" if cf.space_guid != rec.ref.space_guid
                                                 else "")))
            else:
                acc.unchanged.append(cf.guid)
        else:
            acc.unchanged.append(cf.guid)
        await spaces.set_service_plan(pool, cf.guid, cf.plan_guid)   # cf-undo clones with the same plan
        return True
    except Conflict as e:
        if final:
            acc.conflicts.append(SyncChange(cf.guid, str(e)))
        return False
