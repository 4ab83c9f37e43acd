"""The cf CLI's login, read from its own config file, and the rules about it (pure: text in, values out).

The cf CLI (v6-v8) keeps its login in ``$CF_HOME/.cf/config.json`` (``CF_HOME`` unset: the home
directory): ``Target`` (the API URL), ``AccessToken`` (``"bearer <JWT>"``), ``RefreshToken``,
``UaaEndpoint``, ``UAAOAuthClient``/``UAAOAuthClientSecret`` (``cf`` and empty by default),
``OrganizationFields`` and ``SpaceFields`` (``{"GUID", "Name"}``). cf-undo reads that file and never
writes it: a refreshed token lives in memory for one command.
"""
from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

NOT_LOGGED_IN = "Not logged in. Run 'cf login' first (cf-undo uses your Cloud Foundry login)."


class NotLoggedIn(Exception):
    """No usable cf login: the one-line message says to run ``cf login``."""

    def __init__(self, detail: str = "") -> None:
        super().__init__(NOT_LOGGED_IN + (f" ({detail})" if detail else ""))


@dataclass(frozen=True, slots=True)
class Named:
    guid: str
    name: str


@dataclass(frozen=True, slots=True)
class CfLogin:
    target: str                  # the Cloud Controller API URL
    access_token: str            # the JWT, without the "bearer " prefix
    refresh_token: str | None
    uaa_endpoint: str | None
    client_id: str
    client_secret: str
    org: Named | None
    space: Named | None
    skip_tls: bool = False

    def with_token(self, access: str, refresh: str | None) -> CfLogin:
        return replace(self, access_token=access, refresh_token=refresh or self.refresh_token)


def config_path(env: Mapping[str, str], home: Path) -> Path:
    """Where the cf CLI keeps its login.

    >>> str(config_path({"CF_HOME": "/srv/me"}, Path("/root"))), str(config_path({}, Path("/home/ann")))
    ('/srv/me/.cf/config.json', '/home/ann/.cf/config.json')
    """
    base = env.get("CF_HOME") or str(home)
    return Path(base) / ".cf" / "config.json"


def _named(v: Any) -> Named | None:
    if isinstance(v, dict) and v.get("GUID"):
        return Named(str(v["GUID"]), str(v.get("Name") or ""))
    return None


def parse_config(text: str) -> CfLogin:
    """The login in a cf CLI config.json. :raises NotLoggedIn: no target or no access token."""
    try:
        doc = json.loads(text)
    except ValueError:
        raise NotLoggedIn("the cf CLI's config.json is not valid JSON") from None
    if not isinstance(doc, dict):
        raise NotLoggedIn("the cf CLI's config.json is not an object")
    token = str(doc.get("AccessToken") or "").strip()
    scheme, _, jwt = token.partition(" ")
    if scheme.lower() == "bearer":
        token = jwt.strip()
    if not doc.get("Target") or not token:
        raise NotLoggedIn()
    return CfLogin(target=str(doc["Target"]).rstrip("/"), access_token=token,
                   refresh_token=str(doc.get("RefreshToken") or "") or None,
                   uaa_endpoint=str(doc.get("UaaEndpoint") or "").rstrip("/") or None,
                   client_id=str(doc.get("UAAOAuthClient") or "cf"),
                   client_secret=str(doc.get("UAAOAuthClientSecret") or ""),
                   org=_named(doc.get("OrganizationFields")), space=_named(doc.get("SpaceFields")),
                   skip_tls=bool(doc.get("SSLDisabled")))


def claims_of(token: str) -> dict[str, Any]:
    """The payload of a JWT, unverified (the server verifies; the client only reads when it expires).

    >>> claims_of("e30." + base64.urlsafe_b64encode(b'{"exp": 5}').decode().rstrip("=") + ".sig")
    {'exp': 5}
    >>> claims_of("garbage")
    {}
    """
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    try:
        raw = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        out = json.loads(raw)
    except ValueError:
        return {}
    return out if isinstance(out, dict) else {}


def expired(token: str, now: float, margin: float = 30.0) -> bool:
    """Refresh when the token expires within ``margin`` seconds, or when its expiry cannot be read.

    >>> t = "e30." + base64.urlsafe_b64encode(b'{"exp": 1000}').decode().rstrip("=") + ".s"
    >>> expired(t, 900.0), expired(t, 980.0), expired("x", 0.0)
    (False, True, True)
    """
    exp = claims_of(token).get("exp")
    return not isinstance(exp, (int, float)) or now + margin >= exp


def user_of(token: str) -> tuple[str | None, str | None]:
    """(user id, user name) a token names, for messages."""
    c = claims_of(token)
    return c.get("user_id"), c.get("user_name")
