"""Operator routes of the undo period and purge: holds, the dry run, and a run without its credentials."""
from __future__ import annotations

import asyncpg
from aiohttp.test_utils import TestClient

from tests.api.conftest import AS_BROKER, AS_OPERATOR

PUT_BODY = {"space_guid": "s-1", "organization_guid": "org-1", "name": "orders",
            "storage": {"bucket": "bkt", "prefix": "pgbackrest", "layout": "pgbackrest", "stanza": "main"}}


async def test_hold_and_unhold(client: TestClient, pool: asyncpg.Pool) -> None:
    assert (await client.put("/instances/g-1", json=PUT_BODY, headers=AS_BROKER)).status == 201
    resp = await client.post("/instances/g-1/hold", headers=AS_OPERATOR, json={"reason": "legal hold #7"})
    doc = await resp.json()
    assert resp.status == 200 and doc["hold_at"] and doc["hold_reason"] == "legal hold #7" and doc["undo_until"] is None
    again = await (await client.post("/instances/g-1/hold", headers=AS_OPERATOR, json={})).json()   # kept as is
    assert again["hold_at"] == doc["hold_at"] and again["hold_reason"] == "legal hold #7"
    (listed,) = (await (await client.get("/instances", headers=AS_OPERATOR)).json())["instances"]
    assert listed["hold_at"] == doc["hold_at"] and listed["purged_at"] is None
    assert (await client.post("/instances/g-1/hold", headers=AS_BROKER, json={})).status == 403
    assert (await client.post("/instances/g-1/hold", headers=AS_OPERATOR)).status == 400     # the body is required
    resp = await client.delete("/instances/g-1/hold", headers=AS_OPERATOR)
    assert resp.status == 200 and (await resp.json())["hold_at"] is None
    assert await pool.fetchval("SELECT hold_at FROM instances WHERE instance_guid = 'g-1'") is None
    assert (await client.post("/instances/nope/hold", headers=AS_OPERATOR, json={})).status == 404
    resp = await client.post("/instances/g-1/hold", headers=AS_OPERATOR, json={"reason": 5})
    assert resp.status == 400
    await pool.execute("UPDATE instances SET deleted_at = now(), purged_at = now() WHERE instance_guid = 'g-1'")
    resp = await client.post("/instances/g-1/hold", headers=AS_OPERATOR, json={})
    assert resp.status == 409 and "already purged" in (await resp.json())["detail"]


async def test_dry_run_lists_grace_and_run_needs_its_credentials(client: TestClient, pool: asyncpg.Pool) -> None:
    assert (await client.put("/instances/g-1", json=PUT_BODY, headers=AS_BROKER)).status == 201
    assert (await client.delete("/instances/g-1", headers=AS_BROKER)).status == 200
    doc = await (await client.get("/purges", headers=AS_OPERATOR)).json()
    assert doc["instances"] == [] and doc["dry_run"] is True           # still in its 30-day undo period
    await pool.execute("UPDATE instances SET deleted_at = now() - interval '30 days 1 hour' "
                       "WHERE instance_guid = 'g-1'")
    doc = await (await client.get("/purges", headers=AS_OPERATOR)).json()
    (e,) = doc["instances"]
    assert e["state"] == "grace" and e["prefixes"] == ["pgbackrest/archive/main/", "pgbackrest/backup/main/"]
    assert e["undo_until"] < e["delete_after"] and "grace period until" in e["reason"]
    assert (await client.get("/purges", headers=AS_BROKER)).status == 403
    resp = await client.post("/purges", headers=AS_OPERATOR)
    body = await resp.json()
    assert resp.status == 403 and body["code"] == "purge_not_configured" and "PURGE_AWS_ACCESS_KEY_ID" in body["detail"]
