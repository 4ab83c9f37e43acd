"""cf-undo's pure parts: the cf CLI's config.json, token expiry, targets, the create request, failures."""
from __future__ import annotations

import base64
import json
import subprocess
import sys

import pytest

from cf_undo.login import NotLoggedIn, expired, parse_config
from cf_undo.rules import (
    BAD_INPUT,
    OTHER,
    REFUSED,
    Failure,
    catalog_url,
    create_body,
    find_instance,
    http_failure,
    target_of,
)


def _jwt(claims: dict[str, object]) -> str:
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    return f"eyJhbGciOiJSUzI1NiJ9.{body}.c2ln"


CONFIG = {"ConfigVersion": 3, "Target": "https://api.example.com/", "AccessToken": "bearer " + _jwt({"exp": 100}),
          "RefreshToken": "r-1", "UaaEndpoint": "https://uaa.example.com", "UAAOAuthClient": "cf",
          "UAAOAuthClientSecret": "", "OrganizationFields": {"GUID": "o-1", "Name": "acme"},
          "SpaceFields": {"GUID": "s-1", "Name": "dev", "AllowSSH": True}, "SSLDisabled": False}


def test_parse_a_cf_config() -> None:
    login = parse_config(json.dumps(CONFIG))
    assert login.target == "https://api.example.com" and login.access_token.count(".") == 2
    assert (login.refresh_token, login.uaa_endpoint, login.client_id, login.client_secret) == (
        "r-1", "https://uaa.example.com", "cf", "")
    assert login.space is not None and (login.space.guid, login.space.name) == ("s-1", "dev")
    assert login.org is not None and login.org.name == "acme"
    fresh = login.with_token("new", None)
    assert fresh.access_token == "new" and fresh.refresh_token == "r-1"


@pytest.mark.parametrize("text", ["", "[]", "{", json.dumps({**CONFIG, "AccessToken": ""}),
                                  json.dumps({**CONFIG, "Target": ""}), json.dumps({"ConfigVersion": 3})])
def test_not_logged_in(text: str) -> None:
    with pytest.raises(NotLoggedIn, match="cf login"):
        parse_config(text)


def test_expiry_with_a_margin() -> None:
    token = _jwt({"exp": 1000})
    assert not expired(token, 900.0) and expired(token, 975.0) and expired(token, 2000.0)
    assert expired(_jwt({}), 0.0) and expired("opaque", 0.0)


@pytest.mark.parametrize("args, key, value", [
    (("2026-01-01T00:00:00Z", None, None, None, False, False), "point-in-time", "2026-01-01T00:00:00Z"),
    ((None, "0/3000000", None, None, False, False), "lsn", "0/3000000"),
    ((None, None, "4711", None, False, False), "before-xid", 4711),
    ((None, None, None, "before-migration", False, False), "restore-point", "before-migration"),
    ((None, None, None, None, True, False), "latest", True),
    ((None, None, None, None, False, True), "immediate", True)])
def test_one_target_each(args: tuple[object, ...], key: str, value: object) -> None:
    t = target_of(*args)  # type: ignore[arg-type]
    assert t.body("db") == {"clone-from": "db", key: value}
    body = create_body("db-undo", "s-1", "p-1", t, "db")
    assert body["type"] == "managed" and body["parameters"] == {"clone-from": "db", key: value}
    assert body["relationships"] == {"space": {"data": {"guid": "s-1"}}, "service_plan": {"data": {"guid": "p-1"}}}


@pytest.mark.parametrize("args", [(None, None, None, None, False, False),
                                  ("2026-01-01T00:00Z", "0/1", None, None, False, False),
                                  (None, None, None, None, True, True), (None, None, "x12", None, False, False)])
def test_bad_targets(args: tuple[object, ...]) -> None:
    with pytest.raises(Failure) as e:
        target_of(*args)  # type: ignore[arg-type]
    assert e.value.exit_code == BAD_INPUT


def test_catalog_url_order_and_checks() -> None:
    assert catalog_url("https://flag/", {"BACKUP_CATALOG_URL": "https://env"}, "https://stored") == "https://flag"
    assert catalog_url(None, {}, "http://stored:8080/") == "http://stored:8080"
    for bad in ((None, {}, None), ("file:///etc", {}, None)):
        with pytest.raises(Failure) as e:
            catalog_url(*bad)  # type: ignore[arg-type]
        assert e.value.exit_code == BAD_INPUT


def test_http_failures_map_to_exit_codes() -> None:
    refusal = {"status": 422, "code": "target_before_window", "detail": "too early",
               "error": {"code": "target_before_window", "message": "too early", "windows": [{"from": "a"}]}}
    f = http_failure(422, refusal, "cannot undo")
    assert f.exit_code == REFUSED and f.doc["error"]["windows"] == [{"from": "a"}]
    assert http_failure(404, {"code": "unknown_service", "detail": "no"}, "x").doc["error"]["code"] == "unknown_service"
    assert http_failure(400, {"detail": "bad"}, "x").exit_code == BAD_INPUT
    assert http_failure(503, None, "x").exit_code == OTHER
    assert "cf login" in str(http_failure(401, {}, "x"))


def test_find_instance_by_current_or_former_name() -> None:
    listing = {"instances": [{"name": "legacy", "former_names": [{"name": "production"}]},
                             {"name": "production", "former_names": []}]}
    assert [i["name"] for i in find_instance(listing, "production")] == ["legacy", "production"]
    assert find_instance(listing, "nope") == []


def test_the_client_starts_light() -> None:
    """cf-undo loads none of the service's packages nor its heavy dependencies."""
    code = ("import sys, cf_undo.main; heavy = {'asyncpg', 'botocore', 'aioboto3', 'apscheduler', 'moto', "
            "'catalog', 'scheduler', 'api', 'backup_catalog', 'recovery', 'executor', 'jwt'}; "
            "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
