"""HTTP basic authentication with two roles (broker, operator) from settings.

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

from api.errors import Forbidden, Unauthorized, to_response
from backup_catalog.settings import Settings


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


def auth_middleware(settings: Settings, roles: dict[Handler, Role]) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Middleware enforcing ``roles[handler]`` (unregistered handlers, e.g. 404/405, are public)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        need = roles.get(request.match_info.handler, Role.PUBLIC)
        if need is Role.PUBLIC:
            return await handler(request)
        have = authenticate(request.headers.get("Authorization"), settings)
        if have is None:
            return to_response(request, Unauthorized("valid credentials are required (HTTP basic)"))
        if not allowed(have, need):
            return to_response(request, Forbidden(f"the {have.value} role may not use this route"))
        return await handler(request)

    return middleware
