"""A Cloud Controller (v3) + UAA double on 127.0.0.1, served by aiohttp, with controllable state.

Serves ``GET /`` (links to UAA and login), ``POST /uaa/oauth/token`` (client credentials, basic auth),
``GET /v3/service_instances/{guid}`` and ``GET /v3/spaces/{guid}``, with CF-style error bodies.
Knobs: ``instances``/``spaces`` dicts, ``token_lifetime`` (``expires_in`` announced and enforced),
``expire_tokens()``, ``fail_next(n, status)`` (fail the next n requests, any path), ``stall_next(n, s)``
(sleep before answering) and request counters (``requests`` per path kind, ``log``).

Unexpected paths answer 404 and are recorded in ``unexpected`` so tests can assert none happened.
"""
from __future__ import annotations

import asyncio
import base64
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field

from aiohttp import web


@dataclass
class CfServiceInstance:
    name: str
    space_guid: str


@dataclass
class CloudControllerDouble:
    client_id: str = "backup-catalog"
    client_secret: str = "s3cret"
    token_lifetime: float = 3600.0
    instances: dict[str, CfServiceInstance] = field(default_factory=dict)
    spaces: dict[str, str] = field(default_factory=dict)          # space guid -> org guid
    requests: Counter[str] = field(default_factory=Counter)       # "root" | "token" | "instance" | "space"
    log: list[tuple[str, str, int]] = field(default_factory=list)  # (method, path, status)
    unexpected: list[str] = field(default_factory=list)
    port: int = 0

    def __post_init__(self) -> None:
        self._tokens: dict[str, float] = {}    # token -> expiry (monotonic)
        self._fail: list[int] = []
        self._stall: list[float] = []
        self._runner: web.AppRunner | None = None

    # -- control -------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add(self, guid: str, name: str, space_guid: str, org_guid: str = "org-1") -> None:
        self.instances[guid] = CfServiceInstance(name, space_guid)
        self.spaces.setdefault(space_guid, org_guid)

    def expire_tokens(self) -> None:
        """Every token issued so far is now rejected with 401 (the client still believes it valid)."""
        self._tokens.clear()

    def fail_next(self, n: int, status: int = 503) -> None:
        self._fail.extend([status] * n)

    def stall_next(self, n: int, seconds: float) -> None:
        self._stall.extend([seconds] * n)

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> CloudControllerDouble:
        app = web.Application(middlewares=[self._faults])
        app.router.add_get("/", self._root)
        app.router.add_post("/uaa/oauth/token", self._token)
        app.router.add_get("/v3/service_instances/{guid}", self._instance)
        app.router.add_get("/v3/spaces/{guid}", self._space)
        app.router.add_route("*", "/{tail:.*}", self._unexpected)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> CloudControllerDouble:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- handlers ------------------------------------------------------------------------------
    @web.middleware
    async def _faults(self, request: web.Request, handler):  # type: ignore[no-untyped-def]
        kind = _kind(request.path)
        self.requests[kind] += 1
        if self._stall:
            await asyncio.sleep(self._stall.pop(0))
        if self._fail:
            status = self._fail.pop(0)
            self.log.append((request.method, request.path, status))
            return _error(status, "CF-ServiceUnavailable", "injected failure")
        resp = await handler(request)
        self.log.append((request.method, request.path, resp.status))
        return resp

    async def _root(self, request: web.Request) -> web.Response:
        return web.json_response({"links": {
            "self": {"href": self.url},
            "cloud_controller_v3": {"href": f"{self.url}/v3", "meta": {"version": "3.150.0"}},
            "login": {"href": f"{self.url}/uaa"}, "uaa": {"href": f"{self.url}/uaa"}}})

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        expected = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        if request.headers.get("Authorization") != f"Basic {expected}":
            return web.json_response({"error": "unauthorized", "error_description": "Bad credentials"}, status=401)
        if form.get("grant_type") != "client_credentials":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        token = secrets.token_hex(16)
        self._tokens[token] = time.monotonic() + self.token_lifetime
        return web.json_response({"access_token": token, "token_type": "bearer",
                                  "expires_in": int(self.token_lifetime), "scope": "cloud_controller.admin_read_only",
                                  "jti": token})

    def _authorized(self, request: web.Request) -> bool:
        auth = request.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        exp = self._tokens.get(token)
        return scheme.lower() == "bearer" and exp is not None and time.monotonic() < exp

    async def _instance(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return _error(401, "CF-InvalidAuthToken", "Invalid Auth Token", code=1000)
        guid = request.match_info["guid"]
        inst = self.instances.get(guid)
        if inst is None:
            return _error(404, "CF-ResourceNotFound", "Service instance not found", code=10010)
        return web.json_response({
            "guid": guid, "name": inst.name, "type": "managed", "created_at": "2026-01-01T00:00:00Z",
            "relationships": {"space": {"data": {"guid": inst.space_guid}},
                              "service_plan": {"data": {"guid": "plan-1"}}},
            "links": {"self": {"href": f"{self.url}/v3/service_instances/{guid}"},
                      "space": {"href": f"{self.url}/v3/spaces/{inst.space_guid}"}}})

    async def _space(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return _error(401, "CF-InvalidAuthToken", "Invalid Auth Token", code=1000)
        guid = request.match_info["guid"]
        org = self.spaces.get(guid)
        if org is None:
            return _error(404, "CF-ResourceNotFound", "Space not found", code=10010)
        return web.json_response({"guid": guid, "name": f"space-{guid[:8]}",
                                  "relationships": {"organization": {"data": {"guid": org}}}})

    async def _unexpected(self, request: web.Request) -> web.Response:
        self.unexpected.append(f"{request.method} {request.path}")
        return _error(404, "CF-NotFound", "Unknown request", code=10000)


def _kind(path: str) -> str:
    if path == "/":
        return "root"
    if path.startswith("/uaa/"):
        return "token"
    if path.startswith("/v3/service_instances/"):
        return "instance"
    if path.startswith("/v3/spaces/"):
        return "space"
    return "other"


def _error(status: int, title: str, detail: str, code: int = 10001) -> web.Response:
    return web.json_response({"errors": [{"code": code, "title": title, "detail": detail}]}, status=status)
