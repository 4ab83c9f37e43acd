"""A Cloud Controller (v3) + UAA double on 127.0.0.1, served by aiohttp, with controllable state.

Written from the public CC v3 and UAA API documents. Serves ``GET /`` (links to UAA and login), the UAA's
``POST /uaa/oauth/token`` (client credentials for the name sync; the refresh-token grant of client ``cf``
with an empty secret, as the cf CLI refreshes) and ``GET /uaa/token_keys`` (RS256 keys, rotatable:
:class:`tests.support.uaakeys.UaaKeys`), and the CC's ``GET /v3/service_instances[/{guid}]``,
``POST /v3/service_instances`` (managed; a job, then the broker's asynchronous ``last_operation``),
``GET /v3/jobs/{guid}``, ``GET /v3/spaces[/{guid}]``, ``GET /v3/roles``, ``GET /v3/service_plans`` with
CF-style error bodies. Users and roles (:meth:`user`, :meth:`grant`, :meth:`revoke`) decide what a user's
token sees, as the CC does: a space is visible to its developers, managers, auditors and supporters, to
its organization's managers and to admins; only developers and admins may create service instances.
Knobs: ``instances``/``spaces`` dicts, ``token_lifetime`` (``expires_in`` announced and enforced),
``expire_tokens()``, ``fail_next(n, status)`` (fail the next n requests, any path), ``stall_next(n, s)``
(sleep before answering), ``down`` (every /v3 request answers 503), ``create_polls``/``create_fails``
(how the broker's operation goes) and request counters (``requests`` per path kind, ``log``, ``created``).

Unexpected paths answer 404 and are recorded in ``unexpected`` so tests can assert none happened.
(Over 400 lines: one server plays both UAA and the CC, as tests start one; the keys live in uaakeys.py.)
"""
from __future__ import annotations

import asyncio
import base64
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.support.uaakeys import UaaKeys

SPACE_ROLES = ("space_developer", "space_manager", "space_auditor", "space_supporter")
ORG_ROLES = ("organization_manager", "organization_auditor", "organization_billing_manager", "organization_user")


@dataclass
class CfServiceInstance:
    name: str
    space_guid: str
    plan_guid: str = "plan-1"
    last_operation: dict[str, Any] = field(default_factory=lambda: {"type": "create", "state": "succeeded",
                                                                     "description": ""})
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class CfUser:
    guid: str
    name: str
    admin: bool = False


@dataclass
class CreateCall:
    """One POST /v3/service_instances as the double received it."""

    authorization: str
    body: dict[str, Any]
    user_id: str | None
    status: int


@dataclass
class _Job:
    instance_guid: str
    polls: int = 0


@dataclass
class CloudControllerDouble:
    client_id: str = "backup-catalog"
    client_secret: str = "s3cret"
    token_lifetime: float = 3600.0
    instances: dict[str, CfServiceInstance] = field(default_factory=dict)
    spaces: dict[str, str] = field(default_factory=dict)          # space guid -> org guid
    space_names: dict[str, str] = field(default_factory=dict)     # space guid -> name (default space-<guid[:8]>)
    requests: Counter[str] = field(default_factory=Counter)       # "root" | "token" | "instance" | "space"
    log: list[tuple[str, str, int]] = field(default_factory=list)  # (method, path, status)
    unexpected: list[str] = field(default_factory=list)
    port: int = 0
    users: dict[str, CfUser] = field(default_factory=dict)
    roles: set[tuple[str, str, str]] = field(default_factory=set)   # (user guid, role type, space or org guid)
    plans: dict[str, str] = field(default_factory=lambda: {"plan-1": "small", "plan-2": "large"})
    down: bool = False                 # every /v3 request answers 503 (the CC is out)
    any_space: bool = False            # every space GUID exists (in org-1): for fuzzing behind the CC
    create_polls: int = 2              # job/last_operation polls before the broker's operation ends
    create_fails: str | None = None    # the broker's failure description (None: the operation succeeds)
    created: list[CreateCall] = field(default_factory=list)
    refresh_grants: int = 0

    def __post_init__(self) -> None:
        self._tokens: dict[str, float] = {}    # token -> expiry (monotonic)
        self._refresh: dict[str, str] = {}     # refresh token -> user guid
        self._jobs: dict[str, _Job] = {}
        self.uaa = UaaKeys()
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

    @property
    def uaa_url(self) -> str:
        return f"{self.url}/uaa"

    def user(self, guid: str, name: str, *, admin: bool = False) -> CfUser:
        self.users[guid] = CfUser(guid, name, admin)
        return self.users[guid]

    def grant(self, user: str, role: str, target: str) -> None:
        """Give a user a space role (``target`` a space GUID) or an organization role (an org GUID)."""
        assert role in SPACE_ROLES + ORG_ROLES, role
        self.roles.add((user, role, target))

    def revoke(self, user: str, role: str | None = None, target: str | None = None) -> None:
        self.roles = {r for r in self.roles if not (r[0] == user and role in (None, r[1]) and target in (None, r[2]))}

    def token_for(self, user: str, **kw: Any) -> str:
        """A UAA access token for a user (``kw``: :meth:`UaaKeys.token` overrides)."""
        u = self.users[user]
        if u.admin and "scopes" not in kw:
            from tests.support.uaakeys import CF_SCOPES
            kw["scopes"] = (*CF_SCOPES, "cloud_controller.admin")
        return self.uaa.token(u.guid, u.name, **kw)

    def refresh_token_for(self, user: str) -> str:
        token = secrets.token_hex(16) + "-r"
        self._refresh[token] = user
        return token

    def sees_space(self, user: CfUser, scopes: list[str], space: str) -> bool:
        if "cloud_controller.admin" in scopes or "cloud_controller.admin_read_only" in scopes:
            return True
        org = self._org_of(space)
        if org is None:
            return False
        return any(r[0] == user.guid and ((r[1] in SPACE_ROLES and r[2] == space)
                                           or (r[1] == "organization_manager" and r[2] == org)) for r in self.roles)

    def _org_of(self, space: str) -> str | None:
        return self.spaces.get(space) or ("org-1" if self.any_space else None)

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
        app.router.add_get("/uaa/token_keys", self._token_keys)
        app.router.add_get("/v3/service_instances/{guid}", self._instance)
        app.router.add_get("/v3/service_instances", self._instances)
        app.router.add_post("/v3/service_instances", self._create_instance)
        app.router.add_get("/v3/jobs/{guid}", self._job)
        app.router.add_get("/v3/spaces/{guid}", self._space)
        app.router.add_get("/v3/spaces", self._spaces)
        app.router.add_get("/v3/roles", self._roles)
        app.router.add_get("/v3/service_plans", self._service_plans)
        app.router.add_route("*", "/{tail:.*}", self._unexpected)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.uaa.issuer = f"{self.uaa_url}/oauth/token"
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
        if self._fail or (self.down and request.path.startswith("/v3")):
            status = self._fail.pop(0) if self._fail else 503
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
        if form.get("grant_type") == "refresh_token":
            return await self._refresh_grant(request, form)
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

    async def _refresh_grant(self, request: web.Request, form: Any) -> web.Response:
        # the cf CLI: client "cf" with an empty secret, as HTTP basic (RFC 6749 §6)
        if request.headers.get("Authorization") != "Basic " + base64.b64encode(b"cf:").decode():
            return web.json_response({"error": "unauthorized", "error_description": "Bad credentials"}, status=401)
        user = self._refresh.get(str(form.get("refresh_token", "")))
        if user is None:
            return web.json_response({"error": "invalid_token", "error_description": "Invalid refresh token"},
                                     status=401)
        self.refresh_grants += 1
        access = self.token_for(user, lifetime=self.token_lifetime)
        return web.json_response({"access_token": access, "token_type": "bearer", "refresh_token":
                                  self.refresh_token_for(user), "expires_in": int(self.token_lifetime),
                                  "scope": "openid cloud_controller.read cloud_controller.write", "jti": "x"})

    async def _token_keys(self, request: web.Request) -> web.Response:
        return web.json_response(self.uaa.jwks())

    def _principal(self, request: web.Request) -> tuple[str, CfUser | None, list[str]] | None:
        """("client", None, []) for a client-credentials token, ("user", user, scopes) for a user's JWT."""
        auth = request.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer":
            return None
        exp = self._tokens.get(token)
        if exp is not None:
            return ("client", None, []) if time.monotonic() < exp else None
        claims = self.uaa.decode(token)
        if claims is None or claims.get("user_id") not in self.users:
            return None
        return "user", self.users[claims["user_id"]], list(claims.get("scope", []))

    def _authorized(self, request: web.Request) -> bool:
        return self._principal(request) is not None

    def _instance_doc(self, guid: str, inst: CfServiceInstance) -> dict[str, Any]:
        return {
            "guid": guid, "name": inst.name, "type": "managed", "created_at": "2026-01-01T00:00:00Z",
            "last_operation": inst.last_operation,
            "relationships": {"space": {"data": {"guid": inst.space_guid}},
                              "service_plan": {"data": {"guid": inst.plan_guid}}},
            "links": {"self": {"href": f"{self.url}/v3/service_instances/{guid}"},
                      "space": {"href": f"{self.url}/v3/spaces/{inst.space_guid}"}}}

    def _visible(self, who: tuple[str, CfUser | None, list[str]], space: str) -> bool:
        kind, user, scopes = who
        return kind == "client" or (user is not None and self.sees_space(user, scopes, space))

    async def _instance(self, request: web.Request) -> web.Response:
        who = self._principal(request)
        if who is None:
            return _error(401, "CF-InvalidAuthToken", "Invalid Auth Token", code=1000)
        guid = request.match_info["guid"]
        inst = self.instances.get(guid)
        if inst is None or not self._visible(who, inst.space_guid):
            return _error(404, "CF-ResourceNotFound", "Service instance not found", code=10010)
        self._advance(guid)
        return web.json_response(self._instance_doc(guid, inst))

    async def _instances(self, request: web.Request) -> web.Response:
        who = self._principal(request)
        if who is None:
            return _error(401, "CF-InvalidAuthToken", "Invalid Auth Token", code=1000)
        names, spaces = _filter(request, "names"), _filter(request, "space_guids")
        found = [self._instance_doc(g, i) for g, i in self.instances.items() if self._visible(who, i.space_guid)
                 and (names is None or i.name in names) and (spaces is None or i.space_guid in spaces)]
        return _page(found)

    async def _create_instance(self, request: web.Request) -> web.Response:
        who = self._principal(request)
        auth = request.headers.get("Authorization", "")
        body = await request.json()
        user = who[1] if who else None

        def record(status: int) -> None:
            self.created.append(CreateCall(auth, body, user.guid if user else None, status))

        if who is None:
            record(401)
            return _error(401, "CF-InvalidAuthToken", "Invalid Auth Token", code=1000)
        space = (((body.get("relationships") or {}).get("space") or {}).get("data") or {}).get("guid")
        plan = (((body.get("relationships") or {}).get("service_plan") or {}).get("data") or {}).get("guid")
        if not self._visible(who, space or ""):
            record(422)
            return _error(422, "CF-UnprocessableEntity", "Invalid space. Ensure that the space exists and you "
                          "have access to it.", code=10008)
        kind, u, scopes = who
        developer = u is not None and ("cloud_controller.admin" in scopes
                                       or (u.guid, "space_developer", space) in self.roles)
        if not developer:
            record(403)
            return _error(403, "CF-NotAuthorized", "You are not authorized to perform the requested action",
                          code=10003)
        if body.get("type") != "managed" or plan not in self.plans:
            record(422)
            return _error(422, "CF-UnprocessableEntity", "Invalid service plan. Ensure that the service plan "
                          "exists, is available, and you have access to it.", code=10008)
        if any(i.name == body.get("name") and i.space_guid == space for i in self.instances.values()):
            record(422)
            return _error(422, "CF-UnprocessableEntity", f"The service instance name is taken: {body.get('name')}.",
                          code=60002)
        guid = f"si-{secrets.token_hex(6)}"
        self.instances[guid] = CfServiceInstance(
            str(body.get("name")), space, plan, {"type": "create", "state": "in progress",
                                                 "description": "restoring the backup"}, body.get("parameters") or {})
        job = f"job-{secrets.token_hex(6)}"
        self._jobs[job] = _Job(guid)
        record(202)
        return web.Response(status=202, headers={"Location": f"{self.url}/v3/jobs/{job}"})

    def _advance(self, guid: str) -> None:
        """The broker's asynchronous operation ends after ``create_polls`` polls of the job or instance."""
        for job in self._jobs.values():
            if job.instance_guid != guid:
                continue
            job.polls += 1
            inst = self.instances[guid]
            if job.polls > self.create_polls and inst.last_operation["state"] == "in progress":
                inst.last_operation = ({"type": "create", "state": "succeeded", "description": "restored"}
                                       if self.create_fails is None else
                                       {"type": "create", "state": "failed", "description": self.create_fails})

    async def _job(self, request: web.Request) -> web.Response:
        if self._principal(request) is None:
            return _error(401, "CF-InvalidAuthToken", "Invalid Auth Token", code=1000)
        guid = request.match_info["guid"]
        job = self._jobs.get(guid)
        if job is None:
            return _error(404, "CF-ResourceNotFound", "Job not found", code=10010)
        self._advance(job.instance_guid)
        op = self.instances[job.instance_guid].last_operation
        state = {"in progress": "POLLING" if job.polls > 1 else "PROCESSING", "succeeded": "COMPLETE",
                 "failed": "FAILED"}[op["state"]]
        errors = ([{"code": 10009, "title": "CF-UnableToPerform",
                    "detail": f"create could not be completed: {op['description']}"}] if state == "FAILED" else [])
        return web.json_response({
            "guid": guid, "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
            "operation": "service_instance.create", "state": state, "errors": errors, "warnings": [],
            "links": {"self": {"href": f"{self.url}/v3/jobs/{guid}"},
                      "service_instances": {"href": f"{self.url}/v3/service_instances/{job.instance_guid}"}}})

    def _space_doc(self, guid: str, org: str) -> dict[str, Any]:
        return {"guid": guid, "name": self.space_names.get(guid, f"space-{guid[:8]}"),
                "relationships": {"organization": {"data": {"guid": org}}},
                "links": {"self": {"href": f"{self.url}/v3/spaces/{guid}"}}}

    async def _space(self, request: web.Request) -> web.Response:
        who = self._principal(request)
        if who is None:
            return _error(401, "CF-InvalidAuthToken", "Invalid Auth Token", code=1000)
        guid = request.match_info["guid"]
        org = self._org_of(guid)
        if org is None or not self._visible(who, guid):
            return _error(404, "CF-ResourceNotFound", "Space not found", code=10010)
        return web.json_response(self._space_doc(guid, org))

    async def _spaces(self, request: web.Request) -> web.Response:
        who = self._principal(request)
        if who is None:
            return _error(401, "CF-InvalidAuthToken", "Invalid Auth Token", code=1000)
        names, orgs = _filter(request, "names"), _filter(request, "organization_guids")
        found = [self._space_doc(g, o) for g, o in self.spaces.items() if self._visible(who, g)
                 and (names is None or self._space_doc(g, o)["name"] in names) and (orgs is None or o in orgs)]
        return _page(found)

    async def _roles(self, request: web.Request) -> web.Response:
        who = self._principal(request)
        if who is None:
            return _error(401, "CF-InvalidAuthToken", "Invalid Auth Token", code=1000)
        types, spaces, users = (_filter(request, "types"), _filter(request, "space_guids"),
                                _filter(request, "user_guids"))
        found = []
        for user, role, target in sorted(self.roles):
            if role not in SPACE_ROLES or not self._visible(who, target):
                continue     # the CC lists the roles in spaces the asker can see
            if (types is None or role in types) and (spaces is None or target in spaces) and \
                    (users is None or user in users):
                found.append({"guid": f"role-{user}-{role}-{target}", "type": role,
                              "relationships": {"user": {"data": {"guid": user}}, "space": {"data": {"guid": target}},
                                                "organization": {"data": None}}})
        return _page(found)

    async def _service_plans(self, request: web.Request) -> web.Response:
        if self._principal(request) is None:
            return _error(401, "CF-InvalidAuthToken", "Invalid Auth Token", code=1000)
        names = _filter(request, "names")
        return _page([{"guid": g, "name": n} for g, n in self.plans.items() if names is None or n in names])

    async def _unexpected(self, request: web.Request) -> web.Response:
        self.unexpected.append(f"{request.method} {request.path}")
        return _error(404, "CF-NotFound", "Unknown request", code=10000)


def _kind(path: str) -> str:
    if path == "/":
        return "root"
    if path == "/uaa/token_keys":
        return "keys"
    if path.startswith("/uaa/"):
        return "token"
    if path.startswith("/v3/service_instances/"):
        return "instance"
    if path.startswith("/v3/spaces/"):
        return "space"
    for prefix, kind in (("/v3/roles", "roles"), ("/v3/jobs/", "job"), ("/v3/service_instances", "instances"),
                         ("/v3/spaces", "spaces"), ("/v3/service_plans", "plans")):
        if path.startswith(prefix):
            return kind
    return "other"


def _filter(request: web.Request, name: str) -> set[str] | None:
    raw = request.query.get(name)
    return None if raw is None else set(raw.split(","))


def _page(resources: list[dict[str, Any]]) -> web.Response:
    return web.json_response({"pagination": {"total_results": len(resources), "total_pages": 1,
                                             "first": {"href": ""}, "last": {"href": ""}, "next": None,
                                             "previous": None}, "resources": resources})


def _error(status: int, title: str, detail: str, code: int = 10001) -> web.Response:
    return web.json_response({"errors": [{"code": code, "title": title, "detail": detail}]}, status=status)
