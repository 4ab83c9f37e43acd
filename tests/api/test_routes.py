"""Every route, role and error of the HTTP API against the real test catalog."""
from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from backup_catalog.api.openapi import openapi_document
from backup_catalog.api.routes import OPERATIONS
from backup_catalog.api.schemas import BackupsDoc, PlanDoc, dump
from recovery.model import Layout
from tests.api.conftest import AS_BROKER, AS_OPERATOR, BROKER, OPERATOR, basic
from tests.api.seed import OTHER_SPACE, SPACE, A, B, iso, seed_history

PROBLEM = "application/problem+json"
CLONES = f"/spaces/{SPACE}/clones"


def assert_problem(resp_status: int, body: dict, status: int, code: str | None = None) -> None:
    assert body["status"] == resp_status == status, body
    assert {"type", "title", "status", "detail", "instance", "code"} <= body.keys(), body
    if code is not None:
        assert body["code"] == code, body


async def clone(client: TestClient, body: object, space: str = SPACE, raw: bytes | None = None):
    data = raw if raw is not None else json.dumps(body).encode()
    resp = await client.post(f"/spaces/{space}/clones", data=data, headers={**AS_BROKER,
                                                                          "Content-Type": "application/json"})
    return resp, await resp.json(content_type=None)


# -- name history and clones ---------------------------------------------------------------------

async def test_clone_resolves_the_holder_at_the_target_time(client: TestClient, pool: asyncpg.Pool) -> None:
    await seed_history(pool)
    resp, doc = await clone(client, {"clone-from": "production", "point-in-time": iso(10)})
    assert resp.status == 200, doc
    assert doc["source"]["instance_guid"] == A          # A held "production" at T0+10min ...
    assert doc["source"]["name"] == "legacy"            # ... and is called "legacy" now
    assert doc["backup"]["label"] == "F1"
    assert doc["target"] == {**doc["target"], "kind": "time", "value": iso(10)}
    assert "recovery.signal" in doc["files"]
    assert PlanDoc.from_json(doc).to_json() == doc     # the one plan type reads it back unchanged


async def test_plan_carries_storage_version_and_replay_for_an_executor(client: TestClient,
                                                                       pool: asyncpg.Pool) -> None:
    await seed_history(pool)
    resp, doc = await clone(client, {"clone-from": "legacy", "latest": True})
    assert resp.status == 200, doc
    assert doc["storage"] == {"layout": "pgbackrest", "bucket": "backups", "prefix": "a", "stanza": "main"}
    assert doc["pg_version"] == 15
    assert doc["replay"] == {"mode": "end_of_wal", "end_lsn": "0/9000100", "end_segment": "000000010000000000000009",
                             "last_commit_time": "2026-01-01T12:30:00Z"}
    assert PlanDoc.from_json(doc).to_json() == doc
    resp, doc = await clone(client, {"clone-from": "legacy", "lsn": "0/5000010"})
    assert doc["replay"] == {"mode": "target", "end_lsn": "0/5000010", "end_segment": "000000010000000000000005",
                             "last_commit_time": None}
    schema = openapi_document()["components"]["schemas"]
    assert {"storage", "pg_version", "replay"} <= set(schema["PlanDoc"]["required"])
    assert set(schema["PlanReplay"]["properties"]) == {"mode", "end_lsn", "end_segment", "last_commit_time", "stop"}
    assert "stop" not in schema["PlanReplay"]["required"]        # exact targets only
    assert schema["PlanStorage"]["properties"]["layout"]["anyOf"][0] == {"$ref": "#/components/schemas/Layout"}
    assert schema["Layout"]["enum"] == [m.value for m in Layout]


async def test_renamed_instance_found_by_its_new_name_now(client: TestClient, pool: asyncpg.Pool) -> None:
    await seed_history(pool)
    resp, doc = await clone(client, {"clone-from": "legacy", "latest": True})
    assert resp.status == 200, doc
    assert doc["source"]["instance_guid"] == A and doc["target"]["kind"] == "latest"


async def test_clone_of_a_deleted_instance_by_its_old_name(client: TestClient, pool: asyncpg.Pool) -> None:
    await seed_history(pool)
    resp, doc = await clone(client, {"clone-from": "production", "point-in-time": iso(75)})
    assert resp.status == 200, doc
    assert doc["source"]["instance_guid"] == B and doc["source"]["deleted_at"] is not None
    assert doc["backup"]["label"] == "G1"


async def test_name_held_only_in_another_space_is_404(client: TestClient, pool: asyncpg.Pool) -> None:
    await seed_history(pool)
    resp, doc = await clone(client, {"clone-from": "production", "latest": True}, space=OTHER_SPACE)
    assert resp.headers["Content-Type"].startswith(PROBLEM)
    assert_problem(resp.status, doc, 404, "unknown_service")
    resp = await client.get(f"/spaces/{OTHER_SPACE}/services/production/backups", headers=AS_BROKER)
    assert_problem(resp.status, await resp.json(content_type=None), 404, "unknown_service")


async def test_target_outside_the_window_is_a_422_refusal(client: TestClient, pool: asyncpg.Pool) -> None:
    await seed_history(pool)
    resp, doc = await clone(client, {"clone-from": "legacy", "point-in-time": "2025-06-01T00:00:00Z"})
    assert resp.status == 422, doc
    assert resp.headers["Content-Type"].startswith(PROBLEM)
    err = doc["error"]                                   # the DESIGN.md refusal, kept for existing clients
    assert err["code"] in ("target_before_window", "no_usable_backup"), err
    assert err["message"] and isinstance(err["windows"], list)
    assert_problem(resp.status, doc, 422, err["code"])
    assert doc["detail"] == err["message"] and doc["type"] == "/problems/" + err["code"].replace("_", "-")


async def test_exact_targets_unknown_to_the_wal_index_are_422_refusals_listing_what_is_known(
        client: TestClient, pool: asyncpg.Pool) -> None:
    await seed_history(pool)
    resp, doc = await clone(client, {"clone-from": "legacy", "restore-point": "before-migration"})
    assert_problem(resp.status, doc, 422, "restore_point_unknown")
    assert doc["error"]["details"]["known"] == [] and "no restore point is known" in doc["detail"], doc
    resp, doc = await clone(client, {"clone-from": "legacy", "before-xid": 748})
    assert_problem(resp.status, doc, 422, "xid_not_found")
    assert doc["error"]["details"]["xid"] == 748 and "did not commit" in doc["detail"], doc


@pytest.mark.parametrize("body", [
    {"clone-from": "legacy", "before-xid": 2},                                    # not a normal xid
    {"clone-from": "legacy", "before-xid": "748"},                                # strict: a number
    {"clone-from": "legacy", "before-xid": 748, "exclusive": True},
    {"clone-from": "legacy", "before-xid": 748, "restore-point": "a"},
    {"clone-from": "legacy", "restore-point": "a", "timeline": "current"},
    {"clone-from": "legacy", "restore-point": "x" * 64},
    {"clone-from": "legacy", "latest": True, "restore-point-lsn": "0/1"},
    {"clone-from": "legacy", "restore-point": "a", "restore-point-lsn": "later"},
])
async def test_bad_exact_targets_are_400(client: TestClient, pool: asyncpg.Pool, body: dict[str, object]) -> None:
    resp, doc = await clone(client, body)
    assert resp.status == 400 and doc["code"] in ("invalid_target", "invalid_request", "bad_request"), doc


# Unparseable times, LSNs and timelines, and not exactly one target: all 400 problems naming the field.
@pytest.mark.parametrize("body, field", [
    ({"clone-from": "legacy", "point-in-time": "yesterday-ish"}, "point-in-time"),
    ({"clone-from": "legacy", "point-in-time": "yesterday"}, "point-in-time"),
    ({"clone-from": "legacy", "point-in-time": "2026-01-01T12:10:00"}, "point-in-time"),    # no zone
    ({"clone-from": "legacy", "point-in-time": "2026-13-01T12:10:00Z"}, "point-in-time"),
    ({"clone-from": "legacy", "point-in-time": ""}, "point-in-time"),
    ({"clone-from": "legacy", "lsn": "not-an-lsn"}, "lsn"),
    ({"clone-from": "legacy", "lsn": "0/ZZ"}, "lsn"),
    ({"clone-from": "legacy", "lsn": "16/B374D848/1"}, "lsn"),
    ({"clone-from": "legacy", "latest": True, "timeline": 0}, "timeline"),
    ({"clone-from": "legacy", "latest": True, "timeline": "newest"}, "timeline"),
    ({"clone-from": "legacy", "latest": True, "timeline": -3}, "timeline"),
    ({"clone-from": "legacy", "latest": True, "timeline": "5354465604"}, "timeline"),     # > 32 bits (fuzz)
    ({"clone-from": "legacy", "latest": True, "timeline": 4294967296}, "timeline"),
    ({"clone-from": "legacy", "latest": True, "immediate": True}, None),
    ({"clone-from": "legacy"}, None),
    ({"clone-from": "legacy", "latest": False}, None),
])
async def test_unparseable_targets_are_400_problems_naming_the_field(client: TestClient, pool: asyncpg.Pool,
                                                                      body: dict, field: str | None) -> None:
    await seed_history(pool)
    resp, doc = await clone(client, body)
    assert resp.headers["Content-Type"].startswith(PROBLEM), doc
    assert_problem(resp.status, doc, 400, "invalid_request")
    locs = [e["loc"] for e in doc["errors"]]
    if field is None:      # a combination of fields: the message names them
        assert "exactly one of point-in-time, lsn, latest, immediate" in json.dumps(doc["errors"]), doc
    else:
        assert all(loc[:1] == [field] for loc in locs), doc
    assert "Traceback" not in json.dumps(doc)


async def test_invalid_time_says_what_is_wrong(client: TestClient, pool: asyncpg.Pool) -> None:
    await seed_history(pool)
    resp, doc = await clone(client, {"clone-from": "legacy", "point-in-time": "2026-01-01T12:10:00"})
    assert resp.status == 400 and doc["errors"][0]["loc"] == ["point-in-time"], doc
    assert "no zone" in doc["errors"][0]["msg"] and "ambiguous" in doc["errors"][0]["msg"], doc
    resp, doc = await clone(client, {"clone-from": "legacy", "point-in-time": "yesterday-ish"})
    assert "not a time: 'yesterday-ish'" in doc["errors"][0]["msg"] and "ISO 8601" in doc["errors"][0]["msg"], doc


async def test_a_target_error_from_the_planner_is_a_400_problem_naming_the_field() -> None:
    """The planner's own input errors (CLI path, and defence in depth behind the edge validation)
    map to the same 400 with the field named, and keep the refusal document as ``error``."""
    from aiohttp.test_utils import make_mocked_request

    from backup_catalog.api.errors import to_response
    from recovery.target import make_target
    req = make_mocked_request("POST", CLONES)
    for kw, field in (({"point-in-time": "yesterday-ish"}, ["point-in-time"]), ({"lsn": "0/ZZ"}, ["lsn"]),
                      ({"latest": True, "timeline": "nope"}, ["timeline"])):
        try:
            make_target(point_in_time=kw.get("point-in-time"), lsn=kw.get("lsn"), latest=bool(kw.get("latest")),
                        timeline=kw.get("timeline", "latest"))
        except Exception as e:
            resp = to_response(req, e)
        assert resp.status == 400 and resp.content_type == PROBLEM
        doc = json.loads(resp.text or "")
        assert doc["code"] == "invalid_target" and doc["errors"][0]["loc"] == field, doc
        assert doc["error"]["code"] == "invalid_target" and doc["error"]["message"] == doc["detail"]


@pytest.mark.parametrize("body", [
    {"clone-from": "legacy", "latest": True, "colour": "blue"},          # unknown field
    {"clone_from": "legacy", "latest": True},                            # underscore is not the contract
    {"clone-from": "legacy", "latest": "yes"},                           # strict booleans
    {"clone-from": "legacy", "latest": True, "pg-version": "15"},
    {"clone-from": "", "latest": True},
    ["clone-from", "legacy"],
    "legacy",
    None,
])
async def test_schema_violations_are_400_problems(client: TestClient, pool: asyncpg.Pool, body: object) -> None:
    await seed_history(pool)
    resp, doc = await clone(client, body)
    assert resp.headers["Content-Type"].startswith(PROBLEM)
    assert_problem(resp.status, doc, 400, "invalid_request")
    assert doc["errors"] and all("loc" in e and "msg" in e and "input" not in e for e in doc["errors"])


@pytest.mark.parametrize("raw", [b"{", b"", b"\xff\xfe", b'{"clone-from": "x",}', b"[" * 100000])
async def test_malformed_json_is_400(client: TestClient, pool: asyncpg.Pool, raw: bytes) -> None:
    resp, doc = await clone(client, None, raw=raw)
    assert_problem(resp.status, doc, 400, "invalid_json")


@pytest.mark.parametrize("ctype", ["application/x-www-form-urlencoded", "text/plain", "application/xml"])
async def test_a_wrong_media_type_is_415_naming_the_expected_one(client: TestClient, pool: asyncpg.Pool,
                                                                ctype: str) -> None:
    # curl -d without -H sends application/x-www-form-urlencoded: HTTP's answer is 415, not 400
    resp = await client.post(CLONES, data=b'{"clone-from": "legacy", "latest": true}',
                             headers={**AS_BROKER, "Content-Type": ctype})
    doc = await resp.json(content_type=None)
    assert_problem(resp.status, doc, 415, "unsupported_media_type")
    assert "application/json" in doc["detail"] and ctype in doc["detail"]


async def test_lsn_target_plans(client: TestClient, pool: asyncpg.Pool) -> None:
    await seed_history(pool)
    resp, doc = await clone(client, {"clone-from": "legacy", "lsn": "0/5000000", "timeline": "current",
                                     "exclusive": True, "pg-version": 15})
    assert resp.status == 200, doc
    assert doc["target"]["kind"] == "lsn" and doc["target"]["value"] == "0/5000000"
    assert doc["target"]["inclusive"] is False


async def test_clone_of_a_never_scanned_instance_is_refused(client: TestClient) -> None:
    resp = await client.put("/instances/fresh", json={"space_guid": SPACE, "name": "new",
                                                     "storage": {"bucket": "bkt", "prefix": "p/"}},
                            headers=AS_BROKER)
    assert resp.status == 201
    resp, doc = await clone(client, {"clone-from": "new", "latest": True})
    assert resp.status == 422 and doc["error"]["code"] == "not_scanned", doc


async def test_clone_of_a_scanned_but_empty_archive_is_a_422_not_a_500(client: TestClient,
                                                                       pool: asyncpg.Pool) -> None:
    """Found by the contract fuzz: an instance whose scan found nothing has no window on any path; the
    first plan after the scan (no stored windows yet) must refuse, not fail."""
    from dataclasses import replace

    from catalog import repo
    from recovery.model import InstanceRef
    from tests.api.seed import scan_result, storage
    from tests.recovery.builders import make_snapshot
    await repo.register_instance(pool, InstanceRef("empty", SPACE, "empty"), storage(prefix="e/"))
    await repo.save_scan(pool, "empty", scan_result(replace(make_snapshot(), backups=(), runs=(), edges=())))
    for _ in range(2):     # without, then with the scan cache the first request stored
        resp, doc = await clone(client, {"clone-from": "empty", "latest": True})
        assert resp.status == 422 and doc["error"]["code"] == "no_usable_backup", doc


# -- backups -------------------------------------------------------------------------------------

async def test_backups_lists_every_holder_newest_first(client: TestClient, pool: asyncpg.Pool) -> None:
    await seed_history(pool)
    resp = await client.get(f"/spaces/{SPACE}/services/production/backups", headers=AS_BROKER)
    doc = await resp.json()
    assert resp.status == 200, doc
    assert [i["instance_guid"] for i in doc["instances"]] == [B, A]
    b, a = doc["instances"]
    assert b["deleted_at"] is not None and a["deleted_at"] is None and a["name"] == "legacy"
    assert [x["label"] for x in a["backups"]] == ["F1"]
    assert a["windows"] and a["windows"][0]["from"] and a["windows"][0]["to"]
    assert a["wal"][0]["first_segment"] == "000000010000000000000002"
    # assembled from stored JSON, not re-validated per request: it must already be what the model emits
    assert dump(BackupsDoc, doc) == doc
    assert resp.content_type == "application/json"


# -- instance lifecycle --------------------------------------------------------------------------

PUT_BODY = {"space_guid": SPACE, "organization_guid": "org-1", "name": "orders",
            "storage": {"bucket": "bkt-1", "prefix": "pgbackrest/", "layout": "pgbackrest", "stanza": "main"}}


async def test_put_201_then_200_patch_renames_delete_keeps_the_name(client: TestClient) -> None:
    resp = await client.put("/instances/g-1", json=PUT_BODY, headers=AS_BROKER)
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["name"] == "orders"
    resp = await client.put("/instances/g-1", json={**PUT_BODY, "storage": {"bucket": "bkt-2", "layout": "pgbackrest"}}, headers=AS_BROKER)
    assert resp.status == 200
    assert (await resp.json())["bucket"] == "bkt-2"
    resp = await client.patch("/instances/g-1", json={"name": "orders-v2"}, headers=AS_BROKER)
    assert resp.status == 200 and (await resp.json())["name"] == "orders-v2"
    resp = await client.delete("/instances/g-1", headers=AS_BROKER)
    first = await resp.json()      # until when it stays clonable: deleted_at + DELETED_RETENTION_DAYS (30)
    assert resp.status == 200 and first["instance_guid"] == "g-1"
    assert datetime.fromisoformat(first["undo_until"]) - datetime.fromisoformat(first["deleted_at"]) == timedelta(days=30)
    resp = await client.delete("/instances/g-1", headers=AS_BROKER)   # idempotent: the same answer
    assert resp.status == 200 and await resp.json() == first
    # deleted, but both names still resolve to it
    for name in ("orders-v2", "orders"):
        resp = await client.get(f"/spaces/{SPACE}/services/{name}/backups", headers=AS_BROKER)
        doc = await resp.json()
        assert resp.status == 200, doc
        assert doc["instances"][0]["instance_guid"] == "g-1" and doc["instances"][0]["deleted_at"]
    resp = await client.get("/instances", headers=AS_OPERATOR)
    (inst,) = (await resp.json())["instances"]
    assert inst["instance_guid"] == "g-1" and inst["deleted_at"] and inst["org_guid"] == "org-1"


async def test_lifecycle_errors(client: TestClient) -> None:
    resp = await client.patch("/instances/nope", json={"name": "x"}, headers=AS_BROKER)
    assert_problem(resp.status, await resp.json(content_type=None), 404, "unknown_instance")
    resp = await client.delete("/instances/nope", headers=AS_BROKER)
    assert_problem(resp.status, await resp.json(content_type=None), 404, "unknown_instance")
    assert (await client.put("/instances/g-1", json=PUT_BODY, headers=AS_BROKER)).status == 201
    resp = await client.put("/instances/g-2", json=PUT_BODY, headers=AS_BROKER)    # name held by a live one
    assert_problem(resp.status, await resp.json(content_type=None), 409, "conflict")
    for bad in ({**PUT_BODY, "extra": 1}, {**PUT_BODY, "storage": {"bucket": "B A D"}},
                {k: v for k, v in PUT_BODY.items() if k != "name"}, {**PUT_BODY, "name": "a\x00b"}):
        resp = await client.put("/instances/g-3", json=bad, headers=AS_BROKER)
        assert_problem(resp.status, await resp.json(content_type=None), 400, "invalid_request")
    resp = await client.patch("/instances/g-1", json={"name": "x", "space_guid": "s"}, headers=AS_BROKER)
    assert_problem(resp.status, await resp.json(content_type=None), 400, "invalid_request")


# -- auth ----------------------------------------------------------------------------------------

BROKER_ROUTES = [("GET", f"/spaces/{SPACE}/services/x/backups"), ("POST", CLONES), ("PUT", "/instances/g"),
                 ("PATCH", "/instances/g"), ("DELETE", "/instances/g")]
OPERATOR_ROUTES = [("GET", "/instances"), ("POST", "/instances/g/scan"), ("GET", "/reports/coverage"),
                   ("GET", "/reports/coverage.html"), ("GET", "/metrics"), ("GET", "/instances/g/coverage"),
                   ("GET", "/instances/g/coverage.html")]


@pytest.mark.parametrize("method, path", BROKER_ROUTES + OPERATOR_ROUTES)
@pytest.mark.parametrize("headers", [
    {}, basic(BROKER[0], "wrong"), basic(OPERATOR[0], BROKER[1]), basic("nobody", "x"),
    {"Authorization": "Basic !!!notbase64"}, {"Authorization": "Bearer abc"}, {"Authorization": "Basic "},
])
async def test_missing_or_wrong_credentials_are_401(client: TestClient, method: str, path: str,
                                                    headers: dict[str, str]) -> None:
    resp = await client.request(method, path, headers=headers, json={})
    body = await resp.json(content_type=None)
    # a bearer token is checked as a UAA token (tests/api/test_users.py): "abc" fails as a malformed JWT
    bearer = headers.get("Authorization", "").startswith("Bearer")
    assert_problem(resp.status, body, 401, "invalid_token" if bearer else "unauthorized")
    assert resp.headers["WWW-Authenticate"].startswith("Basic realm=")


@pytest.mark.parametrize("method, path", OPERATOR_ROUTES)
async def test_broker_on_operator_routes_is_403(client: TestClient, method: str, path: str) -> None:
    resp = await client.request(method, path, headers=AS_BROKER)
    assert_problem(resp.status, await resp.json(content_type=None), 403, "forbidden")


@pytest.mark.parametrize("method, path", BROKER_ROUTES)
async def test_operator_may_use_broker_routes(client: TestClient, method: str, path: str) -> None:
    """The operator reaches the broker's handlers: it gets exactly the broker's answer, here the handler's
    own 4xx (every request is invalid or names nothing), never an authentication or authorization one."""
    as_broker = await client.request(method, path, headers=AS_BROKER, json={})
    as_operator = await client.request(method, path, headers=AS_OPERATOR, json={})
    b, o = await as_broker.json(content_type=None), await as_operator.json(content_type=None)
    assert as_operator.status == as_broker.status and as_operator.status in (400, 404, 422), (method, path, o)
    assert o == b and o.get("code") not in ("unauthorized", "forbidden"), (o, b)


async def test_public_routes_and_unknown_paths(client: TestClient) -> None:
    resp = await client.get("/healthz")
    assert resp.status == 200 and await resp.json() == {"status": "ok"}
    resp = await client.get("/openapi.json")
    assert resp.status == 200 and (await resp.json())["openapi"] == "3.1.0"
    resp = await client.get("/nope")
    assert_problem(resp.status, await resp.json(content_type=None), 404)
    resp = await client.post("/healthz", headers=AS_OPERATOR)
    assert_problem(resp.status, await resp.json(content_type=None), 405)
    assert "GET" in resp.headers["Allow"]


async def test_credentials_never_leak(client: TestClient, pool: asyncpg.Pool,
                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    await seed_history(pool)
    bodies = []
    for headers in (AS_BROKER, basic(BROKER[0], OPERATOR[1]), AS_OPERATOR):
        for method, path in BROKER_ROUTES + OPERATOR_ROUTES:
            resp = await client.request(method, path, headers=headers, data=b"{bad json")
            bodies.append(await resp.text())
    resp = await client.get("/metrics", headers=AS_OPERATOR)
    bodies.append(await resp.text())
    everything = "\n".join(bodies) + caplog.text
    for secret in (BROKER[1], OPERATOR[1]):
        assert secret not in everything


# -- operator routes -----------------------------------------------------------------------------

async def test_metrics_expose_catalog_gauges_and_request_counters(client: TestClient, pool: asyncpg.Pool) -> None:
    await seed_history(pool)
    await client.get("/healthz")
    resp = await client.get("/metrics", headers=AS_OPERATOR)
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
    text = await resp.text()
    from prometheus_client.parser import text_string_to_metric_families

    from tests.recovery.builders import at
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(text) for s in fam.samples}

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]
    assert value("backup_catalog_first_recoverable_timestamp_seconds", instance_guid=A) == at(1).timestamp()
    assert value("backup_catalog_last_recoverable_timestamp_seconds", instance_guid=A) == at(30).timestamp()
    assert value("backup_catalog_newest_backup_timestamp_seconds", instance_guid=B) == at(61).timestamp()
    assert value("backup_catalog_wal_holes", instance_guid=A) == 0
    # nothing indexed yet: all 8 archived segments (2..9) are the WAL index's lag; deleted B is not indexed
    assert value("backup_catalog_wal_index_lag_segments", instance_guid=A) == 8
    assert ("backup_catalog_wal_index_lag_segments", (("instance_guid", B),)) not in samples
    assert value("backup_catalog_scan_failing", instance_guid=A) == 0
    assert value("backup_catalog_instances", state="deleted") == 1
    assert value("backup_catalog_http_requests_total", method="GET", route="/healthz", status="200") == 1


async def test_scan_route_errors(client: TestClient) -> None:
    resp = await client.post("/instances/nope/scan", headers=AS_OPERATOR)
    assert_problem(resp.status, await resp.json(content_type=None), 404, "unknown_instance")
    assert (await client.put("/instances/g-1", json=PUT_BODY, headers=AS_BROKER)).status == 201
    for value in ("maybe", "", "1", "yes"):        # the declared boolean: true or false, nothing guessed
        resp = await client.post(f"/instances/g-1/scan?full={value}", headers=AS_OPERATOR)
        assert_problem(resp.status, await resp.json(content_type=None), 400, "invalid_query_parameter")


async def test_healthz_reports_a_dead_pool(settings) -> None:
    import asyncpg as apg
    from aiohttp.test_utils import TestServer

    from backup_catalog.service.app import create_app

    class DeadPool:
        async def fetchval(self, *a: object) -> None:
            raise apg.CannotConnectNowError("down")
    app = create_app(settings, pool=DeadPool(), start_scheduler=False)   # type: ignore[arg-type]
    async with TestClient(TestServer(app)) as c:
        resp = await c.get("/healthz")
        assert_problem(resp.status, await resp.json(content_type=None), 503, "not_available")


async def test_unexpected_errors_are_a_500_problem_without_internals(settings,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    from aiohttp.test_utils import TestServer

    from backup_catalog.service.app import create_app

    class BrokenPool:
        async def fetch(self, *a: object) -> None:
            raise RuntimeError("secret internals: table xyz")
    app = create_app(settings, pool=BrokenPool(), start_scheduler=False)   # type: ignore[arg-type]
    async with TestClient(TestServer(app)) as c:
        resp = await c.get("/instances", headers=AS_OPERATOR)
        body = await resp.json(content_type=None)
    assert_problem(resp.status, body, 500, "internal_error")
    assert "secret internals" not in json.dumps(body)
    assert "secret internals" in caplog.text      # ... but it is logged


# -- OpenAPI -------------------------------------------------------------------------------------

def test_openapi_documents_every_route_and_is_valid() -> None:
    from openapi_spec_validator import validate
    doc = openapi_document()
    validate(doc)
    for op in OPERATIONS:
        assert op.method.lower() in doc["paths"][op.path], op.path
    clone_schema = doc["components"]["schemas"]["CloneRequest"]
    assert {"clone-from", "point-in-time", "lsn", "latest", "immediate", "timeline", "exclusive",
            "pg-version", "before-xid", "restore-point", "restore-point-lsn"} == set(clone_schema["properties"])
    assert clone_schema["additionalProperties"] is False
    text = json.dumps(doc)        # constraints are JSON Schema keywords, not pydantic's names
    assert '"ge":' not in text and '"le":' not in text
    assert clone_schema["properties"]["pg-version"]["anyOf"][0]["maximum"] == 99


async def test_every_registered_route_is_in_the_openapi_document(client: TestClient) -> None:
    doc = openapi_document()
    for route in client.app.router.routes():
        if route.method == "HEAD":
            continue
        path = route.resource.canonical
        assert route.method.lower() in doc["paths"][path], (route.method, path)


async def test_unknown_or_repeated_query_parameters_are_400(client: TestClient) -> None:
    for path in ("/reports/coverage?fmt=csv", "/instances?x=1", "/instances/g/scan?full=true&full=false"):
        method = "POST" if path.startswith("/instances/g/") else "GET"
        resp = await client.request(method, path, headers=AS_OPERATOR)
        assert_problem(resp.status, await resp.json(content_type=None), 400, "invalid_query_parameter")


async def test_a_deleted_instance_cannot_be_renamed(client: TestClient) -> None:
    assert (await client.put("/instances/g-1", json=PUT_BODY, headers=AS_BROKER)).status == 201
    assert (await client.delete("/instances/g-1", headers=AS_BROKER)).status == 200
    for name in ("orders", "other"):
        resp = await client.patch("/instances/g-1", json={"name": name}, headers=AS_BROKER)
        assert_problem(resp.status, await resp.json(content_type=None), 409, "conflict")


async def test_integral_floats_count_as_integers(client: TestClient, pool: asyncpg.Pool) -> None:
    await seed_history(pool)
    resp, doc = await clone(client, {"clone-from": "legacy", "latest": True, "pg-version": 15.0})
    assert resp.status == 200, doc
    resp, doc = await clone(client, {"clone-from": "legacy", "latest": True, "pg-version": 15.5})
    assert_problem(resp.status, doc, 400, "invalid_request")


# -- coverage reports ----------------------------------------------------------------------------

async def test_coverage_report_json_csv_html(client: TestClient, pool: asyncpg.Pool) -> None:
    await seed_history(pool)
    resp = await client.get("/reports/coverage", headers=AS_OPERATOR)
    doc = await resp.json()
    assert resp.status == 200, doc
    assert {r["instance_guid"] for r in doc["instances"]} == {A, B}
    resp = await client.get("/reports/coverage?format=csv", headers=AS_OPERATOR)
    text = await resp.text()
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/csv")
    assert A in text and B in text and len(text.strip().splitlines()) == 3
    resp = await client.get("/reports/coverage.html", headers=AS_OPERATOR)
    html = await resp.text()
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/html") and A in html
    resp = await client.get("/reports/coverage?format=xml", headers=AS_OPERATOR)
    assert_problem(resp.status, await resp.json(content_type=None), 400, "invalid_query_parameter")


# -- one error contract ----------------------------------------------------------------------------

async def test_every_error_is_a_problem_document(client: TestClient, pool: asyncpg.Pool) -> None:
    """Routing (404, 405), authentication (401, 403), a too-large body (413), domain errors (404, 409),
    bad input (400) and refusals (422): all application/problem+json with type, title, status, detail."""
    await seed_history(pool)
    big = b'{"clone-from": "' + b"x" * (2 * 1024 * 1024) + b'", "latest": true}'
    cases = [
        ("GET", "/no/such/route", AS_OPERATOR, None, 404),
        ("DELETE", "/healthz", AS_OPERATOR, None, 405),
        ("GET", "/instances", None, None, 401),
        ("GET", "/instances", AS_BROKER, None, 403),
        ("POST", CLONES, AS_BROKER, big, 413),
        ("POST", CLONES, AS_BROKER, b'{"clone-from": "legacy", "point-in-time": "yesterday-ish"}', 400),
        ("POST", CLONES, AS_BROKER, b'{"clone-from": "legacy", "point-in-time": "2001-01-01T00:00Z"}', 422),
        ("POST", CLONES, AS_BROKER, b'{"clone-from": "nobody", "latest": true}', 404),
        ("POST", "/instances/nope/scan", AS_OPERATOR, None, 404),
    ]
    for method, path, headers, data, status in cases:
        resp = await client.request(method, path, data=data,
                                    headers={**(headers or {}), "Content-Type": "application/json"})
        doc = await resp.json(content_type=None)
        assert resp.status == status, (method, path, doc)
        assert resp.headers["Content-Type"].split(";")[0] == PROBLEM, (method, path, resp.headers)
        assert_problem(resp.status, doc, status)
        assert isinstance(doc["title"], str) and doc["title"] and isinstance(doc["detail"], str) and doc["detail"]
        assert doc["instance"] == path


def test_openapi_describes_every_error_as_a_problem() -> None:
    doc = openapi_document()
    for path, item in doc["paths"].items():
        for method, op in item.items():
            assert "default" in op["responses"], (method, path)
            for status, r in op["responses"].items():
                if status == "default" or int(status) >= 400:
                    assert list(r["content"]) == [PROBLEM], (method, path, status)
    clone = doc["paths"]["/spaces/{space_guid}/clones"]["post"]["responses"]
    assert clone["422"]["content"][PROBLEM]["schema"]["$ref"].endswith("/Refusal")
    refusal = doc["components"]["schemas"]["Refusal"]
    assert {"type", "title", "status", "detail", "error"} <= set(refusal["required"])
    req = doc["components"]["schemas"]["CloneRequest"]
    assert req["properties"]["point-in-time"]["anyOf"][0]["format"] == "date-time" and len(req["oneOf"]) == 6
