"""A small Cloud Foundry Cloud Controller (v3) client: service instances and spaces, with a UAA
client-credentials token. The adapter of the name sync (:mod:`backup_catalog.cloudfoundry.namesync`).
"""
from __future__ import annotations

import asyncio
import base64
import random
import time
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

from catalog import tracing
from recovery.config import Secret
from recovery.errors import PitrError


class CloudControllerSettings(Protocol):
    """CF_API_URL, CF_CLIENT_ID, CF_CLIENT_SECRET (the product's Settings provide them)."""

    @property
    def cf_api_url(self) -> str | None: ...
    @property
    def cf_client_id(self) -> str | None: ...
    @property
    def cf_client_secret(self) -> Secret | None: ...


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
    plan_guid: str | None = None     # relationships.service_plan (managed instances)


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
    def from_settings(cls, settings: CloudControllerSettings, **kw: Any) -> CloudController:
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
            self._session = aiohttp.ClientSession(timeout=self._timeout,
                                                  trace_configs=tracing.aiohttp_trace_configs("Cloud Controller"))
        return self._session

    # -- public calls ----------------------------------------------------------------------------
    async def service_instance(self, guid: str) -> CfInstance | None:
        """Name and space of a service instance; None when the CC says 404 (deleted or never existed)."""
        doc = await self._get(f"/v3/service_instances/{guid}")
        if doc is None:
            return None
        try:
            plan = ((doc["relationships"].get("service_plan") or {}).get("data") or {}).get("guid")
            return CfInstance(guid=doc.get("guid", guid), name=str(doc["name"]),
                              space_guid=str(doc["relationships"]["space"]["data"]["guid"]),
                              plan_guid=str(plan) if plan else None)
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

