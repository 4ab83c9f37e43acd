"""cf-undo's HTTP adapter: the catalog's API and the Cloud Controller, both with the user's own token.

An expired access token is refreshed at UAA with the refresh token, as the cf CLI does (grant
``refresh_token``, client ``cf`` with an empty secret as HTTP basic), kept in memory for this command and
never written back to the cf CLI's file. A 401 from the catalog or the CC refreshes once and retries.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import aiohttp

from cf_undo.login import CfLogin, NotLoggedIn, expired
from cf_undo.rules import OTHER, Failure

TIMEOUT = aiohttp.ClientTimeout(total=30, connect=10)


class Api:
    """One command's HTTP session: the catalog at ``catalog``, the CC at the login's target."""

    def __init__(self, login: CfLogin, catalog: str, *, clock: Callable[[], float] = time.time) -> None:
        self.login = login
        self.catalog_url = catalog
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        self.refreshed = 0

    async def __aenter__(self) -> Api:
        self._session = aiohttp.ClientSession(timeout=TIMEOUT, connector=aiohttp.TCPConnector(
            ssl=not self.login.skip_tls))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def http(self) -> aiohttp.ClientSession:
        assert self._session is not None, "use Api as an async context manager"
        return self._session

    # -- the token -------------------------------------------------------------------------------
    async def token(self) -> str:
        if expired(self.login.access_token, self._clock()):
            await self.refresh()
        return self.login.access_token

    async def refresh(self) -> None:
        """A new access token from the refresh token (in memory only)."""
        if not self.login.refresh_token:
            raise NotLoggedIn("your access token has expired and there is no refresh token")
        uaa = self.login.uaa_endpoint or await self._discover_uaa()
        try:
            async with self.http.post(f"{uaa}/oauth/token", data={
                    "grant_type": "refresh_token", "refresh_token": self.login.refresh_token},
                    auth=aiohttp.BasicAuth(self.login.client_id, self.login.client_secret),
                    headers={"Accept": "application/json"}) as r:
                doc = await _json(r)
                if r.status != 200 or not isinstance(doc, dict) or not doc.get("access_token"):
                    raise NotLoggedIn("your login has expired")
        except (aiohttp.ClientError, TimeoutError) as e:
            raise Failure(OTHER, f"cannot reach UAA at {uaa} to refresh your login ({type(e).__name__})") from None
        self.login = self.login.with_token(str(doc["access_token"]), doc.get("refresh_token"))
        self.refreshed += 1

    async def _discover_uaa(self) -> str:
        status, doc, _ = await self._call("GET", f"{self.login.target}/", auth=False)
        href = ((doc.get("links") or {}).get("uaa") or {}).get("href") if isinstance(doc, dict) else None
        if status != 200 or not href:
            raise Failure(OTHER, f"the Cloud Controller at {self.login.target} names no UAA")
        return str(href).rstrip("/")

    # -- calls -----------------------------------------------------------------------------------
    async def catalog(self, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        status, doc, _ = await self._call(method, self.catalog_url + path, **kw)
        return status, doc

    async def cc(self, method: str, path: str, **kw: Any) -> tuple[int, Any, dict[str, str]]:
        return await self._call(method, self.login.target + path, **kw)

    async def cc_href(self, href: str) -> tuple[int, Any]:
        status, doc, _ = await self._call("GET", href if href.startswith("http") else self.login.target + href)
        return status, doc

    async def _call(self, method: str, url: str, *, auth: bool = True, **kw: Any) -> tuple[int, Any, dict[str, str]]:
        for attempt in (0, 1):
            headers = {"Accept": "application/json"}
            if auth:
                headers["Authorization"] = f"bearer {await self.token()}"
            try:
                async with self.http.request(method, url, headers=headers, **kw) as r:
                    if r.status == 401 and auth and attempt == 0 and self.login.refresh_token:
                        await self.refresh()
                        continue
                    return r.status, await _json(r), dict(r.headers)
            except (aiohttp.ClientError, TimeoutError) as e:
                where = url.split("/")[2] if "//" in url else url
                raise Failure(OTHER, f"cannot reach {where} ({type(e).__name__})") from None
        raise AssertionError("unreachable")

    # -- the catalog's routes --------------------------------------------------------------------
    async def services(self, space: str) -> tuple[int, Any]:
        return await self.catalog("GET", f"/spaces/{quote(space, safe='')}/services")

    async def backups(self, space: str, name: str) -> tuple[int, Any]:
        return await self.catalog("GET", f"/spaces/{quote(space, safe='')}/services/{quote(name, safe='')}/backups")

    async def changes(self, space: str, name: str, start: str, end: str) -> tuple[int, Any]:
        return await self.catalog("GET", f"/spaces/{quote(space, safe='')}/services/{quote(name, safe='')}/changes",
                                  params={"from": start, "to": end})

    async def preview(self, space: str, body: dict[str, Any]) -> tuple[int, Any]:
        return await self.catalog("POST", f"/spaces/{quote(space, safe='')}/clones", json=body)


async def _json(r: aiohttp.ClientResponse) -> Any:
    try:
        return await r.json(content_type=None)
    except ValueError:
        return None
