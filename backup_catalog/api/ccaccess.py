"""Asking the Cloud Controller, with the user's own token, what they may see and do in a space; cached.

``GET /v3/spaces/{guid}`` → 200 means the user sees the space; 401/403/404 mean they do not (answered to
the user as an unknown name). ``GET /v3/roles?types=space_developer&space_guids=S&user_guids=U`` non-empty
means they may start an undo. Answers are cached per (user, space) for ``USER_ACCESS_CACHE_SECONDS``
(at most 60 s: a removed role stops working within a minute). 5xx, 429, timeouts and connection errors
raise :class:`~backup_catalog.usecases.access.AccessUnavailable` and are not cached: never an allow.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp

from backup_catalog.usecases.access import AccessUnavailable, SpaceView, UserClaims, fresh, needs_roles_query

_HIDDEN = frozenset({401, 403, 404})
CACHE_MAX_ENTRIES = 10_000


@dataclass(slots=True)
class _Entry:
    visible: bool
    developer: bool | None     # None: not asked yet
    at: float


class SpaceAccess:
    """The CC's answers per (user, space), asked with the user's token."""

    def __init__(self, http: Callable[[], aiohttp.ClientSession], cf_api_url: str | None, *, ttl: float,
                 timeout: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._http = http
        self._api = cf_api_url.rstrip("/") if cf_api_url else None
        self._ttl = ttl
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._clock = clock
        self._cache: dict[tuple[str, str], _Entry] = {}
        self.cc_requests = 0

    async def view(self, token: str, user: UserClaims, space: str, *, roles: bool) -> SpaceView:
        """What the CC shows ``user`` of ``space``; with ``roles``, whether they are a developer there."""
        now = self._clock()
        key = (user.user_id, space)
        e = self._cache.get(key)
        if e is None or not fresh(now, e.at, self._ttl):
            e = _Entry(await self._visible(token, space), None, now)
            self._remember(key, e)
        if roles and e.developer is None and needs_roles_query(user, e.visible):
            e.developer = await self._developer(token, user.user_id, space)
        return SpaceView(visible=e.visible, developer=bool(e.developer))

    def _remember(self, key: tuple[str, str], e: _Entry) -> None:
        if len(self._cache) >= CACHE_MAX_ENTRIES:
            now = self._clock()
            self._cache = {k: v for k, v in self._cache.items() if fresh(now, v.at, self._ttl)}
            if len(self._cache) >= CACHE_MAX_ENTRIES:
                self._cache.clear()
        self._cache[key] = e

    async def _visible(self, token: str, space: str) -> bool:
        status, _ = await self._get(f"/v3/spaces/{quote(space, safe='')}", token)
        if status == 200:
            return True
        if status in _HIDDEN or 400 <= status < 500:
            return False
        raise AccessUnavailable(f"the Cloud Controller answered {status} for a space")

    async def _developer(self, token: str, user_id: str, space: str) -> bool:
        status, body = await self._get("/v3/roles", token, params={
            "types": "space_developer", "space_guids": space, "user_guids": user_id})
        if status in _HIDDEN:
            return False
        if status != 200 or not isinstance(body, dict):
            raise AccessUnavailable(f"the Cloud Controller answered {status} for the roles")
        res = body.get("resources")
        if not isinstance(res, list):
            raise AccessUnavailable("the Cloud Controller's roles answer has no resources")
        return any(isinstance(r, dict) and r.get("type") == "space_developer" for r in res)

    async def _get(self, path: str, token: str, params: dict[str, str] | None = None) -> tuple[int, Any]:
        if self._api is None:
            raise AccessUnavailable("CF_API_URL is not set: the Cloud Controller cannot be asked")
        self.cc_requests += 1
        try:
            async with self._http().get(self._api + path, params=params, timeout=self._timeout,
                                        headers={"Authorization": f"bearer {token}",
                                                 "Accept": "application/json"}) as r:
                if r.status >= 500 or r.status == 429:
                    raise AccessUnavailable(f"the Cloud Controller answered {r.status}")
                try:
                    body: Any = await r.json(content_type=None)
                except ValueError:
                    body = None
                return r.status, body
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            raise AccessUnavailable(f"the Cloud Controller cannot be reached ({type(e).__name__})") from None
