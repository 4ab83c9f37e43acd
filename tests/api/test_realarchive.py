"""The API end to end on a real pgBackRest archive in moto: register, scan, list, clone, rename, delete."""
from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from backup_catalog.service.app import create_app
from sandbox.s3 import MotoEndpoint
from tests.api.conftest import AS_BROKER, AS_OPERATOR, make_settings
from tests.realarchives.plugin import fresh_bucket

SPACE = "space-real"


@pytest_asyncio.fixture
async def real_client(pool: asyncpg.Pool, s3_endpoint: MotoEndpoint, real_archives: object
                      ) -> AsyncIterator[TestClient]:
    app = create_app(make_settings(s3_endpoint_url=s3_endpoint.url), pool=pool, start_scheduler=False)
    async with TestClient(TestServer(app)) as c:
        yield c


async def register_and_scan(c: TestClient, s3_endpoint: MotoEndpoint, guid: str, name: str) -> None:
    bucket, prefix = fresh_bucket(s3_endpoint, "pgbackrest")
    resp = await c.put(f"/instances/{guid}", headers=AS_BROKER, json={
        "space_guid": SPACE, "organization_guid": "org", "name": name,
        "storage": {"bucket": bucket, "prefix": prefix, "layout": "auto", "stanza": "main"}})
    assert resp.status == 201, await resp.text()
    resp = await c.post(f"/instances/{guid}/scan?full=true", headers=AS_OPERATOR)
    out = await resp.json()
    assert resp.status == 200 and out["ok"] is True and out["full"] is True, out
    assert out["backups"] == 3


def commit(real_archives: object, cid: int) -> dict:
    return next(c for c in real_archives["pgbackrest"].commits if c["id"] == cid)   # type: ignore[index]


async def test_scan_list_and_clone_then_delete_keeps_the_old_name(real_client: TestClient, s3_endpoint: MotoEndpoint,
                                                                  real_archives: object) -> None:
    truth = real_archives["pgbackrest"].truth          # type: ignore[index]
    await register_and_scan(real_client, s3_endpoint, "pg-1", "production")
    resp = await real_client.get(f"/spaces/{SPACE}/services/production/backups", headers=AS_BROKER)
    doc = await resp.json()
    assert resp.status == 200, doc
    (inst,) = doc["instances"]
    assert inst["layout"] == "pgbackrest"
    assert sorted(b["label"] for b in inst["backups"]) == sorted(truth["scenario_backups"].values())
    assert inst["windows"] and inst["scan"]["last_scan"]

    target = commit(real_archives, 5)["commit_time"]       # between B1 and B2
    body = {"clone-from": "production", "point-in-time": target}
    resp = await real_client.post(f"/spaces/{SPACE}/clones", json=body, headers=AS_BROKER)
    plan = await resp.json()
    assert resp.status == 200, plan
    assert plan["source"]["instance_guid"] == "pg-1"
    assert plan["backup"]["label"] == truth["scenario_backups"]["B1"]
    assert "pgbackrest" in plan["restore_command"]

    assert (await real_client.delete("/instances/pg-1", headers=AS_BROKER)).status == 200
    resp = await real_client.post(f"/spaces/{SPACE}/clones", json=body, headers=AS_BROKER)
    again = await resp.json()
    assert resp.status == 200, again
    assert again["source"]["instance_guid"] == "pg-1" and again["source"]["deleted_at"] is not None
    assert again["backup"] == plan["backup"]


async def test_renamed_instance_by_old_name_at_old_time_and_new_name_now(real_client: TestClient,
                                                                          s3_endpoint: MotoEndpoint,
                                                                          real_archives: object) -> None:
    await register_and_scan(real_client, s3_endpoint, "pg-2", "orders")
    resp = await real_client.patch("/instances/pg-2", json={"name": "orders-old"}, headers=AS_BROKER)
    assert resp.status == 200
    at_old = {"clone-from": "orders", "point-in-time": commit(real_archives, 8)["commit_time"]}
    resp = await real_client.post(f"/spaces/{SPACE}/clones", json=at_old, headers=AS_BROKER)
    plan = await resp.json()
    assert resp.status == 200, plan
    assert plan["source"]["instance_guid"] == "pg-2" and plan["source"]["name"] == "orders-old"
    resp = await real_client.post(f"/spaces/{SPACE}/clones", json={"clone-from": "orders-old", "latest": True},
                                  headers=AS_BROKER)
    now = await resp.json()
    assert resp.status == 200, now
    assert now["source"]["instance_guid"] == "pg-2" and now["timeline_path"][-1] == 2
    # a time after the last archived commit is refused, with the windows to choose from
    resp = await real_client.post(f"/spaces/{SPACE}/clones", headers=AS_BROKER,
                                  json={"clone-from": "orders-old", "point-in-time": "2099-01-01T00:00:00Z"})
    refusal = await resp.json()
    assert resp.status == 422 and refusal["error"]["code"] == "target_after_window", refusal
    assert refusal["error"]["windows"]


async def test_clone_before_a_transaction_over_http(real_client: TestClient, s3_endpoint: MotoEndpoint,
                                                    pool: asyncpg.Pool) -> None:
    """A before-xid clone request, resolved from the WAL index: the plan names the commit record it stops at."""
    from backup_catalog.usecases import walindex as job
    from scheduler.clients import s3_client
    await register_and_scan(real_client, s3_endpoint, "g-xid", "shop")
    settings = make_settings(s3_endpoint_url=s3_endpoint.url)
    async with s3_client(settings) as client:
        [o] = await job.run_once(pool, settings, client, "api-test", job.Budget(1 << 40), guids=["g-xid"])
    assert o.indexed > 0 and o.lag == 0 and not o.problems, o
    row = await pool.fetchrow("SELECT first_xid, first_commit_time FROM wal_segment_summaries WHERE instance_guid = "
                              "'g-xid' AND timeline = 1 AND commits > 0 ORDER BY segno DESC LIMIT 1")
    resp = await real_client.post(f"/spaces/{SPACE}/clones", headers=AS_BROKER,
                                  json={"clone-from": "shop", "before-xid": row["first_xid"], "timeline": 1})
    doc = await resp.json()
    assert resp.status == 200, doc
    t = doc["target"]
    assert (t["kind"], t["value"], t["inclusive"], t["record_timeline"]) == ("xid", row["first_xid"], False, 1)
    assert t["commit_time"] == row["first_commit_time"].isoformat().replace("+00:00", "Z")
    assert doc["replay"]["stop"]["kind"] == "before_xid"
    assert f"recovery_target_xid = '{row['first_xid']}'" in doc["files"]["postgresql.auto.conf"]
    resp = await real_client.post(f"/spaces/{SPACE}/clones", headers=AS_BROKER,
                                  json={"clone-from": "shop", "restore-point": "no-such-point"})
    doc = await resp.json()
    assert resp.status == 422 and doc["error"]["code"] == "restore_point_unknown", doc
