"""Authentication: HTTP basic with two roles (broker, operator) from settings, and UAA bearer tokens for
end users on the broker's routes (:mod:`backup_catalog.api.userauth`, decided by the Cloud Controller).

The broker role may use the broker routes; the operator role may use everything. Comparisons are
constant-time (:func:`hmac.compare_digest` on both user name and password, always both), and no
credential is ever logged, echoed in an error or used as a metric label.
"""
from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Awaitable, Callable
from enum import StrEnum

from aiohttp import web

from backup_catalog.api import keys
from backup_catalog.api.errors import Forbidden, Unauthorized, to_response
from backup_catalog.api.userauth import UserAuth
from backup_catalog.settings import Settings
from backup_catalog.usecases.access import Need


class Role(StrEnum):
    PUBLIC = "public"
    BROKER = "broker"
    OPERATOR = "operator"


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _eq(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


def authenticate(header: str | None, settings: Settings) -> Role | None:
    """The role whose credentials the ``Authorization`` header carries, or None."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic" or not token.strip():
        return None
    try:
        user, sep, password = base64.b64decode(token.strip(), validate=True).partition(b":")
    except (binascii.Error, ValueError):
        return None
    if not sep:
        return None
    op = (_eq(user, settings.operator_username.encode())
          & _eq(password, settings.operator_password.get_secret_value().encode()))
    br = (_eq(user, settings.broker_username.encode())
          & _eq(password, settings.broker_password.get_secret_value().encode()))
    if op:
        return Role.OPERATOR
    if br:
        return Role.BROKER
    return None


def allowed(have: Role, need: Role) -> bool:
    return need is Role.PUBLIC or have is Role.OPERATOR or (have is Role.BROKER and need is Role.BROKER)


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (the scheme is case-insensitive).

    >>> bearer_token("bearer abc.def.ghi"), bearer_token("Basic Zm9vOmJhcg=="), bearer_token("Bearer ")
    ('abc.def.ghi', None, None)
    """
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def user_need(role: Role, request: web.Request) -> Need:
    """What a signed-in user needs for a route: reading for the broker's routes that name a space; the
    instance lifecycle and the operator's routes are never theirs."""
    if role is Role.BROKER and "space_guid" in request.match_info:
        return Need.READ
    return Need.BROKER


def auth_middleware(settings: Settings, roles: dict[Handler, Role],
                    users: UserAuth | None = None) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Middleware enforcing ``roles[handler]`` (unregistered handlers, e.g. 404/405, are public); a bearer
    token goes to ``users`` (end users, decided by the Cloud Controller)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        need = roles.get(request.match_info.handler, Role.PUBLIC)
        if need is Role.PUBLIC:
            return await handler(request)
        header = request.headers.get("Authorization")
        token = bearer_token(header)
        if token is not None and users is not None:
            request[keys.ROLE] = "user"
            return await users.handle(request, handler, token, user_need(need, request))
        have = authenticate(header, settings)
        if have is None:
            return to_response(request, Unauthorized("valid credentials are required (HTTP basic, or a UAA "
                                                     "bearer token on the broker's routes)"))
        request[keys.ROLE] = have.value          # for the access log (never the credentials)
        if not allowed(have, need):
            return to_response(request, Forbidden(f"the {have.value} role may not use this route"))
        return await handler(request)

    return middleware
