"""End users on the broker's routes (issue 19): UAA bearer tokens verified locally, the Cloud Controller
(asked with the user's own token) deciding — against the CC + UAA double (tests/support/ccdouble.py).

The role matrix (space developer, manager, auditor, supporter, org manager, admin, a user of another space,
a user removed mid-session) × (list, show, preview, clone); every broken token check a 401 naming the
check; a CC outage a 503, never an allow; a revoked role refused once the (short, in tests) cache expires.
"""
from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from backup_catalog.service.app import create_app
from tests.api.conftest import AS_BROKER, AS_OPERATOR, make_settings
from tests.api.seed import SPACE, B, iso, seed_history
from tests.support.ccdouble import CloudControllerDouble
from tests.support.uaakeys import new_key

OTHER = "space-b"
ORG = "org-1"
PREVIEW = {"clone-from": "production", "point-in-time": iso(70)}   # B (deleted) held the name then
TTL = 0.6     # USER_ACCESS_CACHE_SECONDS in these tests (the contract allows at most 60)

USERS = {   # user -> (role, target)
    "dev": ("space_developer", SPACE), "mgr": ("space_manager", SPACE), "aud": ("space_auditor", SPACE),
    "sup": ("space_supporter", SPACE), "orgmgr": ("organization_manager", ORG), "admin": (None, None),
    "stranger": ("space_developer", OTHER), "leaver": ("space_developer", SPACE),
}


@pytest_asyncio.fixture
async def cc() -> AsyncIterator[CloudControllerDouble]:
    async with CloudControllerDouble() as d:
        d.spaces.update({SPACE: ORG, OTHER: ORG, "space-z": "org-2"})
        for user, (role, target) in USERS.items():
            d.user(f"u-{user}", user, admin=user == "admin")
            if role is not None:
                d.grant(f"u-{user}", role, target)
        yield d
        assert not d.unexpected


@pytest_asyncio.fixture
async def users(pool: asyncpg.Pool, cc: CloudControllerDouble) -> AsyncIterator[TestClient]:
    await seed_history(pool)
    settings = make_settings(cf_api_url=cc.url, user_access_cache_seconds=TTL, uaa_keys_refetch_seconds=0.2,
                             deleted_retention_days=3650)
    app = create_app(settings, pool=pool, start_scheduler=False)
    async with TestClient(TestServer(app)) as c:
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _list(c: TestClient, token: str, space: str = SPACE) -> tuple[int, Any]:
    r = await c.get(f"/spaces/{space}/services", headers=bearer(token))
    return r.status, await r.json(content_type=None)


async def _show(c: TestClient, token: str, name: str = "production") -> tuple[int, Any]:
    r = await c.get(f"/spaces/{SPACE}/services/{name}/backups", headers=bearer(token))
    return r.status, await r.json(content_type=None)


async def _preview(c: TestClient, token: str, body: dict[str, Any] = PREVIEW) -> tuple[int, Any]:
    r = await c.post(f"/spaces/{SPACE}/clones", json=body, headers=bearer(token))
    return r.status, await r.json(content_type=None)


async def _clone(cc: CloudControllerDouble, token: str, c: TestClient) -> int:
    """What the platform answers the user creating the clone with their token (cf-undo's last step)."""
    async with c.session.post(f"{cc.url}/v3/service_instances", headers=bearer(token), json={
            "type": "managed", "name": f"undo-{len(cc.created)}", "parameters": PREVIEW,
            "relationships": {"space": {"data": {"guid": SPACE}}, "service_plan": {"data": {"guid": "plan-1"}}}}) as r:
        return r.status


# (list, show, preview, clone): list is (status, can_undo), clone the CC's answer to the create
MATRIX = {
    "dev": ((200, True), 200, 200, 202),
    "mgr": ((200, False), 200, 200, 403),
    "aud": ((200, False), 200, 200, 403),
    "sup": ((200, False), 200, 200, 403),
    "orgmgr": ((200, False), 200, 200, 403),
    "admin": ((200, True), 200, 200, 202),
    "stranger": ((404, None), 404, 404, 422),
}


@pytest.mark.parametrize("user", sorted(MATRIX))
async def test_role_matrix(users: TestClient, cc: CloudControllerDouble, user: str) -> None:
    (list_status, can_undo), show, preview, clone = MATRIX[user]
    token = cc.token_for(f"u-{user}")
    status, doc = await _list(users, token)
    assert status == list_status, doc
    if status == 200:
        assert {i["instance_guid"] for i in doc["instances"]} == {"inst-a", B}
        assert {i["can_undo"] for i in doc["instances"]} == {can_undo}
        deleted = next(i for i in doc["instances"] if i["instance_guid"] == B)
        assert deleted["name"] == "production" and deleted["deleted_at"] and deleted["undo_until"]
        assert deleted["newest_backup"]["age_seconds"] > 30 * 86400, "counted to now, not to the deletion"
        legacy = next(i for i in doc["instances"] if i["instance_guid"] == "inst-a")
        assert [f["name"] for f in legacy["former_names"]] == ["production"]
        assert legacy["windows"] and legacy["newest_backup"]["label"]
    else:
        assert doc["status"] == 404 and "application/problem+json"
    status, doc = await _show(users, token)
    assert status == show, doc
    status, doc = await _preview(users, token)
    assert status == preview, doc
    if status == 200:
        assert doc["source"]["instance_guid"] == B
    # the listing's can_undo says beforehand what the platform will answer
    assert await _clone(cc, token, users) == clone
    if can_undo is not None:
        assert can_undo == (clone == 202)


async def test_a_hidden_space_answers_exactly_like_an_unknown_name(users: TestClient,
                                                                   cc: CloudControllerDouble) -> None:
    dev, stranger = cc.token_for("u-dev"), cc.token_for("u-stranger")
    unknown = await _show(users, dev, "no-such-name")
    hidden = await _show(users, stranger, "no-such-name")
    assert unknown == hidden and unknown[0] == 404
    assert (await _preview(users, dev, {**PREVIEW, "clone-from": "nope"}))[1] == \
           (await _preview(users, stranger, {**PREVIEW, "clone-from": "nope"}))[1]
    # a space that does not exist at all and one the user cannot see: the same answer
    assert (await _list(users, stranger, SPACE))[1]["detail"].replace(SPACE, "S") == \
           (await _list(users, stranger, "space-nowhere"))[1]["detail"].replace("space-nowhere", "S")


async def test_user_removed_mid_session_is_refused_within_the_cache_ttl(users: TestClient,
                                                                        cc: CloudControllerDouble) -> None:
    token = cc.token_for("u-leaver")
    status, doc = await _list(users, token)
    assert status == 200 and all(i["can_undo"] for i in doc["instances"])
    cc.revoke("u-leaver")
    await asyncio.sleep(TTL + 0.1)
    assert (await _list(users, token))[0] == 404
    assert (await _show(users, token))[0] == 404
    assert (await _preview(users, token))[0] == 404
    assert await _clone(cc, token, users) == 422


async def test_revoked_developer_role_loses_can_undo_within_the_ttl(users: TestClient,
                                                                    cc: CloudControllerDouble) -> None:
    token = cc.token_for("u-dev")
    assert all(i["can_undo"] for i in (await _list(users, token))[1]["instances"])
    cc.revoke("u-dev", "space_developer")
    cc.grant("u-dev", "space_auditor", SPACE)
    await asyncio.sleep(TTL + 0.1)
    status, doc = await _list(users, token)
    assert status == 200 and not any(i["can_undo"] for i in doc["instances"])


async def test_answers_are_cached_per_user_and_space(users: TestClient, cc: CloudControllerDouble) -> None:
    token = cc.token_for("u-dev")
    await _list(users, token)
    asked = cc.requests["space"] + cc.requests["roles"]
    for _ in range(3):
        await _show(users, token)
        await _list(users, token)
    assert cc.requests["space"] + cc.requests["roles"] == asked


def _tokens(cc: CloudControllerDouble) -> dict[str, tuple[str, str]]:
    """Broken tokens of the developer -> (token, the check that must fail)."""
    import time as _t
    now = _t.time()
    rogue = new_key(cc.uaa.current.kid)           # same kid, another key: the signature fails
    return {
        "expired": (cc.token_for("u-dev", now=now - 900, lifetime=600), "exp"),
        "not yet valid": (cc.token_for("u-dev", nbf=int(now + 300)), "nbf"),
        "unknown key": (cc.token_for("u-dev", _key=new_key("rogue-kid")), "kid"),
        "forged signature": (cc.token_for("u-dev", _key=rogue), "signature"),
        "other issuer": (cc.token_for("u-dev", iss="https://uaa.elsewhere.example/oauth/token"), "iss"),
        "other audience": (cc.token_for("u-dev", aud=["openid", "uaa"]), "aud"),
        "no cloud_controller.read": (cc.token_for("u-dev", scopes=("openid", "cloud_controller.write")), "scope"),
        "alg none": (cc.token_for("u-dev", _alg="none"), "alg"),
        "alg HS256": (cc.token_for("u-dev", _alg="HS256"), "alg"),
        "not a JWT": ("not-a-jwt", "malformed"),
    }


async def test_bad_tokens_are_401_naming_the_check_and_no_key(users: TestClient, cc: CloudControllerDouble) -> None:
    for what, (token, check) in _tokens(cc).items():
        for status, doc in (await _list(users, token), await _show(users, token), await _preview(users, token)):
            assert status == 401, (what, doc)
            assert doc["code"] == "invalid_token" and doc["check"] == check, (what, doc)
            text = json.dumps(doc)
            assert "BEGIN" not in text and cc.uaa.current.jwk()["n"][:20] not in text, what
    r = await users.get(f"/spaces/{SPACE}/services", headers=bearer("x.y.z"))
    assert r.content_type == "application/problem+json"
    assert any(h.startswith("Bearer") for h in r.headers.getall("WWW-Authenticate"))


async def test_unknown_kid_refetches_keys_at_most_once_per_interval(pool: asyncpg.Pool,
                                                                   cc: CloudControllerDouble) -> None:
    await seed_history(pool)
    app = create_app(make_settings(cf_api_url=cc.url, uaa_keys_refetch_seconds=30), pool=pool,
                     start_scheduler=False)
    async with TestClient(TestServer(app)) as c:
        assert (await _list(c, cc.token_for("u-dev")))[0] == 200
        assert cc.requests["keys"] == 1
        for i in range(5):     # a flood of made-up kids costs the UAA nothing more within the interval
            assert (await _list(c, cc.token_for("u-dev", _key=new_key(f"made-up-{i}"))))[0] == 401
        assert cc.requests["keys"] == 1


async def test_key_rotation_is_picked_up(users: TestClient, cc: CloudControllerDouble) -> None:
    assert (await _list(users, cc.token_for("u-dev")))[0] == 200
    cc.uaa.rotate(keep_old=False)
    await asyncio.sleep(0.25)       # past UAA_KEYS_REFETCH_SECONDS of these tests
    assert (await _list(users, cc.token_for("u-dev")))[0] == 200
    assert cc.requests["keys"] == 2


async def test_cc_outage_is_503_never_an_allow(users: TestClient, cc: CloudControllerDouble) -> None:
    token = cc.token_for("u-dev")
    cc.down = True
    for status, doc in (await _list(users, token), await _show(users, token), await _preview(users, token)):
        assert status == 503, doc
        assert doc["code"] == "authorization_unavailable"
    cc.down = False
    assert (await _list(users, token))[0] == 200


async def test_uaa_unreachable_is_503(pool: asyncpg.Pool) -> None:
    app = create_app(make_settings(cf_api_url="http://127.0.0.1:9"), pool=pool, start_scheduler=False)
    async with TestClient(TestServer(app)) as c:
        status, doc = await _list(c, "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsifQ.e30.c2ln")
        assert status == 503 and doc["code"] == "authorization_unavailable"


async def test_users_may_not_use_the_lifecycle_or_operator_routes(users: TestClient,
                                                                  cc: CloudControllerDouble) -> None:
    token = cc.token_for("u-admin")
    r = await users.patch("/instances/inst-a", json={"name": "x"}, headers=bearer(token))
    assert r.status == 403
    r = await users.get("/reports/coverage", headers=bearer(token))
    assert r.status == 403
    r = await users.delete(f"/instances/{B}", headers=bearer(cc.token_for("u-dev", _alg="none")))
    assert r.status == 401


async def test_basic_credentials_keep_working(users: TestClient) -> None:
    r = await users.get(f"/spaces/{SPACE}/services", headers=AS_BROKER)
    assert r.status == 200
    assert all(i["can_undo"] for i in (await r.json())["instances"])


async def test_audit_line_per_bearer_request_and_counters(users: TestClient, cc: CloudControllerDouble,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="backup_catalog.audit")
    dev = cc.token_for("u-dev")
    await _preview(users, dev)
    await _preview(users, dev, {**PREVIEW, "point-in-time": iso(-500)})
    await _show(users, cc.token_for("u-stranger"))
    await _list(users, cc.token_for("u-dev", _alg="none"))
    fields = ("user_id", "user_name", "route", "space_guid", "instance", "outcome", "status")
    lines = [{f: getattr(r, f) for f in fields} for r in caplog.records if r.name == "backup_catalog.audit"]
    assert [(x["user_name"], x["outcome"], x["status"]) for x in lines] == [
        ("dev", "ok", 200), ("dev", "target_before_window", 422), ("stranger", "hidden", 404), (None, "token_alg", 401)]
    assert lines[0]["route"] == "/spaces/{space_guid}/clones" and lines[0]["instance"] == "production"
    assert lines[0]["space_guid"] == SPACE and lines[0]["user_id"] == "u-dev"
    assert all(dev not in r.getMessage() for r in caplog.records)
    text = await (await users.get("/metrics", headers=AS_OPERATOR)).text()
    assert 'backup_catalog_user_clone_previews_total{outcome="planned"} 1.0' in text
    assert 'backup_catalog_user_clone_previews_total{outcome="refused"} 1.0' in text
    assert 'backup_catalog_user_refusals_total{reason="hidden"} 1.0' in text
    assert 'backup_catalog_user_refusals_total{reason="token_alg"} 1.0' in text
    assert "stranger" not in text and "u-dev" not in text


async def test_service_plan_recorded_by_put(users: TestClient) -> None:
    body = {"space_guid": SPACE, "name": "fresh", "service_plan_guid": "plan-2",
            "storage": {"bucket": "backups", "prefix": "fresh/", "layout": "auto"}}
    assert (await users.put("/instances/inst-f", json=body, headers=AS_BROKER)).status == 201
    doc = await (await users.get(f"/spaces/{SPACE}/services", headers=AS_BROKER)).json()
    fresh = next(i for i in doc["instances"] if i["instance_guid"] == "inst-f")
    assert fresh["service_plan_guid"] == "plan-2" and fresh["windows"] == [] and fresh["newest_backup"] is None


async def test_openapi_documents_both_security_schemes(users: TestClient) -> None:
    doc = await (await users.get("/openapi.json")).json()
    schemes = doc["components"]["securitySchemes"]
    assert schemes["uaa"]["scheme"] == "bearer" and schemes["broker"]["scheme"] == "basic"
    op = doc["paths"]["/spaces/{space_guid}/services"]["get"]
    assert {"uaa": []} in op["security"] and {"broker": []} in op["security"]
    assert {"uaa": []} not in doc["paths"]["/instances/{guid}"]["put"]["security"]


async def test_keys_are_refetched_when_old_and_a_withdrawn_key_stops_verifying(cc: CloudControllerDouble) -> None:
    """The verifier alone, on a clock the test moves: after KEYS_MAX_AGE_SECONDS the key set is fetched again;
    a UAA that cannot answer then does not lock users out; a key UAA withdrew stops verifying."""
    import aiohttp

    from backup_catalog.api.uaa import KEYS_MAX_AGE_SECONDS, TokenVerifier
    from backup_catalog.usecases.access import InvalidToken
    now = [1000.0]
    async with aiohttp.ClientSession() as http:
        v = TokenVerifier(lambda: http, uaa_url=None, cf_api_url=cc.url, refetch_seconds=30, clock=lambda: now[0])
        old = cc.token_for("u-dev")
        assert (await v.verify(old)).user_name == "dev" and v.key_fetches == 1
        now[0] += KEYS_MAX_AGE_SECONDS
        fetches = cc.requests["keys"]
        cc.fail_next(1, 503)                     # the UAA is out at the moment the set is due
        assert (await v.verify(old)).user_name == "dev", "old keys keep working while UAA is out"
        assert cc.requests["keys"] == fetches + 1
        cc.uaa.rotate(keep_old=False)            # UAA withdraws key-1
        now[0] += 31
        with pytest.raises(InvalidToken) as e:
            await v.verify(old)
        assert e.value.check == "kid" and v.key_fetches == 2
        assert (await v.verify(cc.token_for("u-dev"))).user_id == "u-dev"


async def test_uaa_url_setting_wins_over_the_cc_root_document(pool: asyncpg.Pool, cc: CloudControllerDouble) -> None:
    await seed_history(pool)
    app = create_app(make_settings(cf_api_url=cc.url, uaa_url=cc.uaa_url), pool=pool, start_scheduler=False)
    async with TestClient(TestServer(app)) as c:
        assert (await _list(c, cc.token_for("u-dev")))[0] == 200
        assert cc.requests["root"] == 0 and cc.requests["keys"] == 1
    app = create_app(make_settings(cf_api_url=cc.url), pool=pool, start_scheduler=False)
    async with TestClient(TestServer(app)) as c:
        assert (await _list(c, cc.token_for("u-dev")))[0] == 200
        assert cc.requests["root"] == 1, "links.uaa of the CC's root document, as the cf CLI finds it"
