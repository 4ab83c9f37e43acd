"""Who may do what, for end users signed in with a UAA token: pure rules, no I/O, no clock of its own.

The adapters (``backup_catalog.api.uaa`` verifies tokens, ``backup_catalog.api.ccaccess`` asks the Cloud Controller with the user's own
token and caches its answers) bring the facts; this module turns them into decisions:

* a token is acceptable iff its signature, issuer, audience, times and scope pass (:func:`check_claims`
  names the first failed check, never a key or a secret);
* a user may **read** what a space holds (backups, windows, changes, a clone preview, the listing) iff
  the CC shows them the space; they may **undo** (create a clone) iff they are a space developer there
  or their token carries ``cloud_controller.admin``;
* a space the CC does not show them is answered exactly like an unknown name (404), so a user learns
  nothing about spaces that are not theirs; a CC that cannot answer is never an allow.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from recovery.errors import PitrError

REQUIRED_SCOPE = "cloud_controller.read"
ADMIN_SCOPE = "cloud_controller.admin"
AUDIENCE = "cloud_controller"
MAX_LEEWAY_SECONDS = 60.0


class InvalidToken(PitrError):
    """A bearer token that fails a check; ``check`` names which (alg, kid, signature, iss, aud, exp, nbf,
    scope, claims, malformed, keys), never the key material."""

    code = "invalid_token"

    def __init__(self, check: str, message: str) -> None:
        super().__init__(message)
        self.check = check


class AccessUnavailable(PitrError):
    """UAA or the Cloud Controller could not be asked (down, 5xx, timeout): never an allow."""

    code = "authorization_unavailable"


class SpaceHidden(PitrError):
    """The CC does not show the user this space (or it does not exist): a 404 like an unknown name."""

    code = "unknown_space"

    def __init__(self, space: str) -> None:
        super().__init__(f"no space {space!r} with service instances known to this catalog")
        self.space = space


class UserForbidden(PitrError):
    """A signed-in user asked for something only the broker or the operator may do."""

    code = "forbidden"


class Need(StrEnum):
    READ = "read"     # the CC shows the user the space
    UNDO = "undo"     # space developer there, or cloud_controller.admin
    BROKER = "broker" # the instance lifecycle: the broker's alone, never a user's


class Verdict(StrEnum):
    ALLOW = "allow"
    HIDDEN = "hidden"          # answered as an unknown name (404)
    FORBIDDEN = "forbidden"    # the user is known to see the space but may not do this (403)


@dataclass(frozen=True, slots=True)
class UserClaims:
    """What the service uses of a verified UAA access token."""

    user_id: str
    user_name: str
    client_id: str
    scopes: frozenset[str]

    @property
    def admin(self) -> bool:
        return ADMIN_SCOPE in self.scopes


@dataclass(frozen=True, slots=True)
class SpaceView:
    """What the Cloud Controller said about one (user, space), asked with the user's token."""

    visible: bool      # GET /v3/spaces/{guid} -> 200
    developer: bool    # a space_developer role there (False when not asked: not visible, or admin)


def check_claims(claims: Mapping[str, Any]) -> UserClaims:
    """The user a verified token names, after the checks the JOSE library does not do (scope, identity).

    >>> c = check_claims({"user_id": "u1", "user_name": "ann", "cid": "cf",
    ...                   "scope": ["openid", "cloud_controller.read"]})
    >>> c.user_name, c.admin
    ('ann', False)
    >>> check_claims({"user_id": "u1", "scope": ["openid"]})
    Traceback (most recent call last):
    ...
    backup_catalog.usecases.access.InvalidToken: the token lacks the scope cloud_controller.read
    """
    raw = claims.get("scope", [])
    scopes = frozenset(raw.split() if isinstance(raw, str) else (str(s) for s in raw if isinstance(s, str)))
    if REQUIRED_SCOPE not in scopes:
        raise InvalidToken("scope", f"the token lacks the scope {REQUIRED_SCOPE}")
    user_id = claims.get("user_id") or claims.get("sub")
    if not isinstance(user_id, str) or not user_id:
        raise InvalidToken("claims", "the token names no user (user_id)")
    name = claims.get("user_name")
    client = claims.get("cid") or claims.get("client_id") or ""
    return UserClaims(user_id=user_id, user_name=name if isinstance(name, str) else "", client_id=str(client),
                      scopes=scopes)


def needs_roles_query(user: UserClaims, view_visible: bool) -> bool:
    """Whether the roles must be asked: only for a visible space and a user who is not an admin.

    >>> u = UserClaims("u", "n", "cf", frozenset({REQUIRED_SCOPE}))
    >>> needs_roles_query(u, True), needs_roles_query(u, False)
    (True, False)
    """
    return view_visible and not user.admin


def can_undo(user: UserClaims, view: SpaceView) -> bool:
    """A clone may be started: the space is visible and the user develops there or administers the platform."""
    return view.visible and (view.developer or user.admin)


def decide(user: UserClaims, need: Need, view: SpaceView | None) -> Verdict:
    """The verdict for one request; ``view`` is None for routes that name no space.

    >>> u = UserClaims("u", "n", "cf", frozenset({REQUIRED_SCOPE}))
    >>> decide(u, Need.READ, SpaceView(True, False)), decide(u, Need.READ, SpaceView(False, False))
    (<Verdict.ALLOW: 'allow'>, <Verdict.HIDDEN: 'hidden'>)
    >>> decide(u, Need.UNDO, SpaceView(True, False)), decide(u, Need.BROKER, None)
    (<Verdict.FORBIDDEN: 'forbidden'>, <Verdict.FORBIDDEN: 'forbidden'>)
    """
    if need is Need.BROKER or view is None:
        return Verdict.FORBIDDEN
    if not view.visible:
        return Verdict.HIDDEN
    if need is Need.READ or can_undo(user, view):
        return Verdict.ALLOW
    return Verdict.FORBIDDEN


def may_refetch_keys(now: float, last_fetch: float | None, min_interval: float) -> bool:
    """An unknown ``kid`` refetches the UAA keys, at most once per ``min_interval`` seconds.

    >>> may_refetch_keys(100.0, None, 30.0), may_refetch_keys(100.0, 80.0, 30.0), may_refetch_keys(110.0, 80.0, 30.0)
    (True, False, True)
    """
    return last_fetch is None or now - last_fetch >= min_interval


def fresh(now: float, stored_at: float, ttl: float) -> bool:
    """A cached CC answer is used while younger than ``ttl`` (at most 60 s by setting).

    >>> fresh(10.0, 0.0, 60.0), fresh(60.0, 0.0, 60.0)
    (True, False)
    """
    return now - stored_at < ttl
