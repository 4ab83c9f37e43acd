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

import asyncio
import base64
import random
import re
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg

from backup_catalog.settings import Settings
from catalog import repo
from catalog.errors import Conflict
from catalog.rows import InstanceRecord
from recovery.errors import PitrError
from recovery.model import InstanceRef, Storage
from scheduler.storage import ObjectStore, S3Store

GUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


class CloudControllerError(PitrError):
    """The Cloud Controller or UAA refused a request in a way retrying cannot fix (e.g. 403, bad credentials)."""

    code = "cloud_controller_error"


class CloudControllerUnavailable(CloudControllerError):
    """The Cloud Controller or UAA kept failing (5xx, 429, timeouts, connection errors) after retries."""

    code = "cloud_controller_unavailable"


@dataclass(frozen=True, slots=True)
class CfInstance:
    guid: str
    name: str
    space_guid: str
    org_guid: str | None = None


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


# -- Cloud Controller client -------------------------------------------------------------------

class CloudController:
    """A small CC v3 client: UAA client-credentials token, refreshed on expiry or a 401 (once).

    5xx, 429, timeouts and connection errors are retried with capped exponential backoff and jitter;
    after ``attempts`` tries the call raises :class:`CloudControllerUnavailable`.
    """

    def __init__(self, api_url: str, client_id: str, client_secret: str, *, timeout: float = 10.0,
                 attempts: int = 4, backoff: float = 0.2, backoff_cap: float = 5.0,
                 session: aiohttp.ClientSession | None = None) -> None:
        self.api_url = api_url.rstrip("/")
        basic = base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()
        self._basic = f"Basic {basic}"   # UAA client authentication (RFC 6749 §2.3.1)
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._attempts = max(1, attempts)
        self._backoff, self._cap = backoff, backoff_cap
        self._session = session
        self._own_session = session is None
        self._token: str | None = None
        self._token_expires = 0.0
        self._token_url: str | None = None
        self._token_lock = asyncio.Lock()
        self.requests = 0
        self.retries = 0
        self.token_fetches = 0

    @classmethod
    def from_settings(cls, settings: Settings, **kw: Any) -> CloudController:
        if not settings.cf_api_url or not settings.cf_client_id or settings.cf_client_secret is None:
            raise CloudControllerError("CF_API_URL, CF_CLIENT_ID and CF_CLIENT_SECRET must all be set for name sync")
        return cls(settings.cf_api_url, settings.cf_client_id, settings.cf_client_secret.get_secret_value(), **kw)

    async def __aenter__(self) -> CloudController:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    # -- public calls ----------------------------------------------------------------------------
    async def service_instance(self, guid: str) -> CfInstance | None:
        """Name and space of a service instance; None when the CC says 404 (deleted or never existed)."""
        doc = await self._get(f"/v3/service_instances/{guid}")
        if doc is None:
            return None
        try:
            return CfInstance(guid=doc.get("guid", guid), name=str(doc["name"]),
                              space_guid=str(doc["relationships"]["space"]["data"]["guid"]))
        except (KeyError, TypeError) as e:
            raise CloudControllerError(f"unexpected service instance document for {guid}: missing {e}") from None

    async def space_org(self, space_guid: str) -> str | None:
        """The organization GUID of a space (None if the space is gone)."""
        doc = await self._get(f"/v3/spaces/{space_guid}")
        if doc is None:
            return None
        try:
            return str(doc["relationships"]["organization"]["data"]["guid"])
        except (KeyError, TypeError) as e:
            raise CloudControllerError(f"unexpected space document for {space_guid}: missing {e}") from None

    # -- plumbing --------------------------------------------------------------------------------
    async def _get(self, path: str) -> dict[str, Any] | None:
        refreshed = False
        while True:
            token = await self._ensure_token()
            status, body = await self._request("GET", self.api_url + path,
                                               headers={"Authorization": f"bearer {token}"})
            if status == 401 and not refreshed:
                refreshed = True
                self._drop_token(token)
                continue
            if status == 404:
                return None
            if status == 200 and isinstance(body, dict):
                return body
            raise CloudControllerError(f"Cloud Controller answered {status} for GET {path}: {_detail(body)}")

    def _drop_token(self, token: str) -> None:
        if self._token == token:
            self._token, self._token_expires = None, 0.0

    async def _ensure_token(self) -> str:
        async with self._token_lock:
            if self._token is not None and time.monotonic() < self._token_expires:
                return self._token
            if self._token_url is None:
                self._token_url = await self._discover_uaa()
            status, body = await self._request(
                "POST", self._token_url, data={"grant_type": "client_credentials"},
                headers={"Accept": "application/json", "Authorization": self._basic})
            if status != 200 or not isinstance(body, dict) or "access_token" not in body:
                raise CloudControllerError(f"UAA refused the client credentials ({status}): {_detail(body)}")
            self.token_fetches += 1
            lifetime = float(body.get("expires_in", 600))
            self._token = str(body["access_token"])
            self._token_expires = time.monotonic() + max(0.0, lifetime - min(30.0, lifetime / 10))
            return self._token

    async def _discover_uaa(self) -> str:
        status, body = await self._request("GET", self.api_url + "/")
        links = body.get("links", {}) if isinstance(body, dict) else {}
        for name in ("uaa", "login"):
            href = (links.get(name) or {}).get("href")
            if status == 200 and href:
                return str(href).rstrip("/") + "/oauth/token"
        raise CloudControllerError(f"{self.api_url}/ does not link a UAA (status {status})")

    async def _request(self, method: str, url: str, **kw: Any) -> tuple[int, Any]:
        """One logical request: retried on 5xx/429/timeouts/connection errors, else (status, JSON or text)."""
        last = ""
        for attempt in range(self._attempts):
            if attempt:
                self.retries += 1
                await asyncio.sleep(min(self._cap, self._backoff * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0))
            self.requests += 1
            try:
                async with self._http().request(method, url, timeout=self._timeout, **kw) as r:
                    if r.status >= 500 or r.status == 429:
                        last = f"{r.status} {r.reason}"
                        continue
                    try:
                        body: Any = await r.json(content_type=None)
                    except ValueError:
                        body = await r.text()
                    return r.status, body
            except (TimeoutError, aiohttp.ClientError, OSError) as e:
                last = f"{type(e).__name__}: {str(e)[:200]}"
        raise CloudControllerUnavailable(f"{method} {url} failed {self._attempts} times; last: {last}")


def _detail(body: Any) -> str:
    if isinstance(body, dict):
        errs = body.get("errors")
        if isinstance(errs, list) and errs and isinstance(errs[0], dict):
            return str(errs[0].get("detail") or errs[0].get("title"))
        return str(body.get("error_description") or body.get("error") or "")[:300]
    return str(body)[:300]


# -- sync --------------------------------------------------------------------------------------

async def sync_once(pool: asyncpg.Pool, settings: Settings, store_or_client: Any, bucket: str, root: str, *,
                    cc: CloudController) -> SyncReport:
    """Discover instance prefixes under ``s3://bucket/root/`` and reconcile names with the Cloud Controller.

    ``store_or_client``: an ObjectStore over ``bucket``, an aioboto3 S3 client, or None (a client is
    opened from ``settings``). Catalogued live instances under the same root are checked too, even if
    their prefix is no longer listed.
    """
    if store_or_client is None:
        from backup_catalog.s3 import s3_client
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
        cf = CfInstance(cf.guid, cf.name, cf.space_guid, orgs.get(cf.space_guid))
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
        return True
    except Conflict as e:
        if final:
            acc.conflicts.append(SyncChange(cf.guid, str(e)))
        return False
