"""End users on the broker's routes: ``Authorization: Bearer <UAA token>``, decided by the Cloud Controller.

The auth middleware hands a bearer request here. The token is verified locally (:mod:`backup_catalog.api.uaa`), the CC is
asked with the user's own token what they see (:mod:`backup_catalog.api.ccaccess`), and the pure rules of
:mod:`backup_catalog.usecases.access` decide. Every bearer request leaves one structured audit line
(logger ``backup_catalog.audit``: user id and name from the token, route, space, instance, outcome) and user
refusals and clone previews are counted in ``/metrics`` by outcome only (never a user name as a label).
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from backup_catalog.api.ccaccess import SpaceAccess
from backup_catalog.api.errors import status_of
from backup_catalog.api.uaa import TokenVerifier
from backup_catalog.settings import Settings
from backup_catalog.usecases.access import (
    AccessUnavailable,
    InvalidToken,
    Need,
    SpaceHidden,
    UserClaims,
    UserForbidden,
    Verdict,
    can_undo,
    decide,
)
from catalog import tracing
from catalog.errors import UnknownService
from recovery.errors import PitrError

audit = logging.getLogger("backup_catalog.audit")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(slots=True)
class UserContext:
    """The signed-in user of one request, for handlers that answer per user (``can_undo``)."""

    claims: UserClaims
    token: str
    space: str | None
    access: SpaceAccess

    async def may_undo(self) -> bool:
        if self.space is None:
            return False
        view = await self.access.view(self.token, self.claims, self.space, roles=True)
        return can_undo(self.claims, view)


# request[USER_KEY]: the UserContext of a bearer request (a typed key where aiohttp has them, 3.13+)
USER_KEY: Any = web.RequestKey("user", UserContext) if hasattr(web, "RequestKey") else "backup_catalog.user"


def user_of(request: web.Request) -> UserContext | None:
    """The bearer user of this request (None for basic credentials)."""
    ctx = request.get(USER_KEY)
    return ctx if isinstance(ctx, UserContext) else None


class UserAuth:
    """One per application: the token verifier, the CC access cache and their HTTP session."""

    def __init__(self, settings: Settings, *, on_refusal: Callable[[str], None] | None = None,
                 on_preview: Callable[[str], None] | None = None) -> None:
        self._session: aiohttp.ClientSession | None = None
        self.verifier = TokenVerifier(self._http, uaa_url=settings.uaa_url, cf_api_url=settings.cf_api_url,
                                      refetch_seconds=settings.uaa_keys_refetch_seconds,
                                      timeout=settings.cc_timeout_seconds)
        self.access = SpaceAccess(self._http, settings.cf_api_url, ttl=settings.user_access_cache_seconds,
                                  timeout=settings.cc_timeout_seconds)
        self._on_refusal = on_refusal or (lambda reason: None)
        self._on_preview = on_preview or (lambda outcome: None)

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(trace_configs=tracing.aiohttp_trace_configs("UAA / Cloud Controller"))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def handle(self, request: web.Request, handler: Handler, token: str, need: Need) -> web.StreamResponse:
        """Authenticate and authorise one bearer request, run it, count it, write its audit line."""
        started = time.monotonic()
        claims: UserClaims | None = None
        space = request.match_info.get("space_guid")
        outcome, status = "error", 500
        try:
            claims = await self.verifier.verify(token)
            verdict = await self._verdict(claims, token, need, space)
            if verdict is Verdict.HIDDEN:
                outcome = "hidden"
                raise await self._hidden(request, space or "")
            if verdict is Verdict.FORBIDDEN:
                outcome = "forbidden"
                raise UserForbidden("signed-in users may read and preview; registering, renaming and deleting "
                                    "instances is the service broker's, the reports the operator's")
            request[USER_KEY] = UserContext(claims, token, space, self.access)
            resp = await handler(request)
            status = resp.status
            outcome = "ok" if status < 400 else f"status_{status}"
            return resp
        except InvalidToken as e:
            outcome, status = f"token_{e.check}", 401
            raise
        except AccessUnavailable:
            outcome, status = "cc_unavailable", 503
            raise
        except PitrError as e:
            status = status_of(e)
            if outcome not in ("hidden", "forbidden"):
                outcome = e.code
            raise
        except web.HTTPException as e:
            outcome, status = f"status_{e.status}", e.status
            raise
        finally:
            if outcome in ("hidden", "forbidden", "cc_unavailable") or outcome.startswith("token_"):
                self._on_refusal(outcome)
            elif request.method == "POST" and request.match_info.route.resource is not None and \
                    request.match_info.route.resource.canonical == CLONES_ROUTE:
                self._on_preview(_preview_outcome(status))
            await self._audit(request, claims, space, outcome, status, time.monotonic() - started)

    async def _verdict(self, claims: UserClaims, token: str, need: Need, space: str | None) -> Verdict:
        if need is Need.BROKER or space is None:
            return decide(claims, need, None)
        view = await self.access.view(token, claims, space, roles=need is Need.UNDO)
        return decide(claims, need, view)

    @staticmethod
    async def _hidden(request: web.Request, space: str) -> PitrError:
        """The same 404 an unknown name gets: a name in the path, or the clone request's ``clone-from``."""
        name = request.match_info.get("name") or await _clone_from(request)
        if name is not None:
            return UnknownService(space, name)
        return SpaceHidden(space)

    @staticmethod
    async def _audit(request: web.Request, claims: UserClaims | None, space: str | None, outcome: str,
                     status: int, seconds: float) -> None:
        info = request.match_info
        resource = info.route.resource
        line: dict[str, Any] = {
            "event": "user_request", "user_id": claims.user_id if claims else None,
            "user_name": claims.user_name if claims else None, "client_id": claims.client_id if claims else None,
            "method": request.method, "route": resource.canonical if resource is not None else request.path,
            "space_guid": space, "instance": info.get("name") or info.get("guid") or await _clone_from(request),
            "outcome": outcome, "status": status, "duration_ms": round(seconds * 1000, 1)}
        # one line: readable text, and the fields as members of serve's JSON log lines (service/logs.py)
        audit.info("user %s (%s) %s %s space=%s instance=%s: %s %d", line["user_name"], line["user_id"],
                   request.method, line["route"], space, line["instance"], outcome, status, extra=line)


CLONES_ROUTE = "/spaces/{space_guid}/clones"


def _preview_outcome(status: int) -> str:
    """A user's clone preview by outcome: planned, refused (422), invalid (400), unknown (404), error."""
    return {200: "planned", 422: "refused", 400: "invalid", 404: "unknown"}.get(status, "error")


async def _clone_from(request: web.Request) -> str | None:
    """The name a clone request's body asks for (the body is already read and cached by then)."""
    if request.method != "POST" or not request.body_exists:
        return None
    try:
        body = json.loads(await request.read())
    except (ValueError, UnicodeDecodeError, RuntimeError):
        return None
    name = body.get("clone-from") if isinstance(body, dict) else None
    return name[:255] if isinstance(name, str) else None
