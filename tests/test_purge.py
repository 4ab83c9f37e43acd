"""Purge on real archives in the session's moto (issue 13): only the instance's own prefixes go, siblings stay
byte-identical, the dry run equals the run, refusals (shared prefix, hold, reuse), resumption after a kill or
a failing endpoint with one audit record, and a purged instance's clone refused with ``purged``."""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from pydantic import SecretStr

from backup_catalog.settings import Settings
from backup_catalog.usecases import backups as views_backups
from backup_catalog.usecases import plan as views_plan
from backup_catalog.usecases import purge
from catalog import purges, repo
from recovery.errors import PlanningError
from recovery.model import InstanceRef, Storage
from sandbox.cache import ensure_cache, load_objects, object_path
from sandbox.s3 import MotoEndpoint, list_all
from scheduler import runner
from scheduler.clients import PurgeNotConfigured, purge_s3_client, s3_client
from tests.realarchives.plugin import RealArchive, fresh_archive
from tests.support.clones import clone_request
from tests.support.faultproxy import FaultProxy

ORDERS_LATEST = clone_request({"clone-from": "orders", "latest": True})

pytestmark = pytest.mark.realtools

READER, WRITER = "reader-key", "purge-writer-key"
SPACE = "space-purge"


def settings_for(url: str, dsn: str, **kw: Any) -> Settings:
    base: dict[str, Any] = dict(
        s3_endpoint_url=url, aws_access_key_id=SecretStr(READER), aws_secret_access_key=SecretStr("r"),
        purge_aws_access_key_id=SecretStr(WRITER), purge_aws_secret_access_key=SecretStr("w"),
        catalog_dsn=SecretStr(dsn), s3_max_attempts=2, deleted_retention_days=0, purge_grace_hours=0)
    return Settings(**(base | kw))


@pytest.fixture
def cfg(s3_endpoint: MotoEndpoint, catalog_dsn: str) -> Settings:
    return settings_for(s3_endpoint.url, catalog_dsn)


def contents(ep: MotoEndpoint, bucket: str) -> dict[str, str]:
    """Every object of the bucket: key -> sha256 of its bytes."""
    c = ep.client()
    keys = [o["Key"] for o in list_all(c, bucket)]

    def get(k: str) -> tuple[str, str]:
        return k, hashlib.sha256(c.get_object(Bucket=bucket, Key=k)["Body"].read()).hexdigest()

    with ThreadPoolExecutor(8) as ex:
        return dict(ex.map(get, keys))


def etags(ep: MotoEndpoint, bucket: str) -> dict[str, tuple[str, int]]:
    """A cheap interim check: key -> (ETag, size) from one listing."""
    return {o["Key"]: (o["ETag"], o["Size"]) for o in list_all(ep.client(), bucket)}


def sibling_key(tool: str, prefix: str, key: str) -> str | None:
    """Where the fixture's object ``key`` is copied for the sibling (another stanza/server/prefix)."""
    p = prefix.strip("/")
    if tool == "pgbackrest":
        for d in ("archive", "backup"):
            if key.startswith(f"{p}/{d}/main/"):
                return f"{p}/{d}/other/" + key[len(f"{p}/{d}/main/"):]
        return None
    if tool == "barman":
        return f"{p}/other/" + key[len(f"{p}/main/"):] if key.startswith(f"{p}/main/") else None
    return f"{p}-2/" + key[len(p) + 1:]       # WAL-G/WAL-E: a sibling prefix sharing the string start


def add_sibling(ep: MotoEndpoint, arch: RealArchive) -> None:
    d = ensure_cache()
    c = ep.client()

    def put(o: Any) -> None:
        k = sibling_key(arch.tool, arch.prefix, o.key)
        if k is not None:
            c.put_object(Bucket=arch.bucket, Key=k, Body=object_path(d, arch.tool, o.key).read_bytes())

    with ThreadPoolExecutor(16) as ex:
        list(ex.map(put, load_objects(d, arch.tool)))
    if arch.tool in ("walg", "wale"):    # not the tool's: stays (only basebackups_005/ and wal_005/ go)
        c.put_object(Bucket=arch.bucket, Key=f"{arch.prefix}/NOTES.txt", Body=b"operator notes")


async def register(pool: asyncpg.Pool, guid: str, arch: RealArchive, *, name: str, stanza: str | None = None,
                   prefix: str | None = None, layout: str = "auto") -> None:
    await repo.register_instance(pool, InstanceRef(guid, SPACE, name),
                                 Storage(arch.bucket, prefix or arch.prefix, layout, stanza or arch.stanza))


async def scan(pool: asyncpg.Pool, cfg: Settings, guid: str) -> None:
    async with s3_client(cfg) as c:
        o = await runner.scan_instance(pool, c, guid, full=True, settings=cfg)
    assert o.ok, o


async def run(pool: asyncpg.Pool, cfg: Settings, **kw: Any) -> purge.Report:
    async with purge_s3_client(cfg) as c:
        return await purge.run(pool, cfg, c, holder="test", **kw)


async def plan(pool: asyncpg.Pool, cfg: Settings) -> purge.Report:
    async with s3_client(cfg) as c:
        return await purge.plan(pool, cfg, c)


def entry(report: purge.Report, guid: str) -> dict[str, Any]:
    return next(e for e in report.to_json()["instances"] if e["instance_guid"] == guid)


async def setup_deleted(pool: asyncpg.Pool, cfg: Settings, ep: MotoEndpoint, tool: str, *,
                        sibling: bool = True, deleted_ago: float = 0.0) -> RealArchive:
    """A fresh copy of ``tool``'s archive as instance ``gone`` (scanned, then deleted), and a live sibling."""
    arch = fresh_archive(ep, tool)
    await register(pool, "gone", arch, name="orders")
    await scan(pool, cfg, "gone")
    if sibling:
        add_sibling(ep, arch)
        if tool in ("pgbackrest", "barman"):
            await register(pool, "sibling", arch, name="billing", stanza="other", layout=tool)
        else:
            await register(pool, "sibling", arch, name="billing", prefix=arch.prefix + "-2", layout=tool)
    await repo.delete_instance(pool, "gone", at=datetime.now(UTC) - timedelta(seconds=deleted_ago))
    return arch


@pytest.mark.parametrize("tool", ["pgbackrest", "barman", "walg", "wale"])
async def test_purge_deletes_exactly_the_instance_prefixes_and_leaves_siblings_byte_identical(
        pool: asyncpg.Pool, cfg: Settings, s3_endpoint: MotoEndpoint, tool: str) -> None:
    arch = await setup_deleted(pool, cfg, s3_endpoint, tool)
    before = contents(s3_endpoint, arch.bucket)

    dry = await plan(pool, cfg)
    e = entry(dry, "gone")
    assert [x["instance_guid"] for x in dry.to_json()["instances"]] == ["gone"]      # the live sibling is not due
    assert e["state"] == "due" and e["reason"] is None and e["name"] == "orders" and e["space_guid"] == SPACE
    expected = {"pgbackrest": ["archive/main/", "backup/main/"], "barman": ["main/"],
                "walg": ["basebackups_005/", "wal_005/"], "wale": ["basebackups_005/", "wal_005/"]}[tool]
    assert e["prefixes"] == [f"{arch.prefix}/{p}" for p in expected]
    listed = {o["Key"]: o["Size"] for p in e["prefixes"] for o in list_all(s3_endpoint.client(), arch.bucket, p)}
    assert e["objects"] == len(listed) > 0 and e["bytes"] == sum(listed.values())
    assert dry.objects_deleted == 0 and set(etags(s3_endpoint, arch.bucket)) == set(before)  # a dry run deletes nothing

    done = await run(pool, cfg)
    e = entry(done, "gone")
    assert e["state"] == "deleted" and e["objects_deleted"] == len(listed) and e["bytes_deleted"] == sum(listed.values())
    after = contents(s3_endpoint, arch.bucket)
    assert set(before) - set(after) == set(listed), "the run deleted exactly what the dry run listed"
    assert after == {k: v for k, v in before.items() if k not in listed}, "everything else is byte-identical"
    assert any(sibling_key(tool, arch.prefix, k) in after for k in listed)
    (audit,) = await purges.history(pool, "gone")
    assert (audit.outcome, audit.objects_deleted, audit.bytes_deleted) == ("done", len(listed), sum(listed.values()))
    assert audit.policy == "DELETED_RETENTION_DAYS=0 PURGE_GRACE_HOURS=0" and audit.finished_at is not None
    rec = await repo.get_instance(pool, "gone")
    assert rec.purged_at is not None and rec.purge_policy == audit.policy and rec.ref.name == "orders"

    again = await run(pool, cfg)                       # idempotent: nothing is due any more
    assert again.to_json()["instances"] == [] and len(await purges.history(pool, "gone")) == 1


async def test_refusals_shared_prefix_hold_and_reuse_then_purged_memory(
        pool: asyncpg.Pool, cfg: Settings, s3_endpoint: MotoEndpoint) -> None:
    arch = await setup_deleted(pool, cfg, s3_endpoint, "pgbackrest", sibling=False)
    before = etags(s3_endpoint, arch.bucket)

    # 1. a live instance registered on the same repository root, never scanned (claims all of it)
    await register(pool, "squatter", arch, name="other-db", stanza=None)
    e = entry(await plan(pool, cfg), "gone")
    assert e["state"] == "refused" and "instance squatter (live)" in e["reason"] and e["objects"] == 0
    assert entry(await run(pool, cfg), "gone")["state"] == "refused"
    assert entry(await run(pool, cfg), "gone")["state"] == "refused"
    (audit,) = await purges.history(pool, "gone")              # the same refusal twice: one audit row
    assert audit.outcome == "refused" and "squatter" in (audit.reason or "")
    # a deleted squatter past its own grace protects nothing any more
    await repo.delete_instance(pool, "squatter")

    # 2. an operator hold exempts (and is not a refusal to audit)
    await purge.hold(pool, cfg, "gone", "ticket 42")
    e = entry(await plan(pool, cfg), "gone")
    assert e["state"] == "refused" and e["reason"].startswith("operator hold since") and "ticket 42" in e["reason"]
    assert entry(await run(pool, cfg), "gone")["state"] == "refused"
    assert etags(s3_endpoint, arch.bucket) == before
    await purge.unhold(pool, cfg, "gone")

    # 3. a prefix written after the deletion is in use again
    new_key = f"{arch.prefix}/archive/main/15-1/0000000300000000/new-segment"
    await asyncio.sleep(1.1)      # LastModified has one-second resolution: clearly after the deletion
    s3_endpoint.client().put_object(Bucket=arch.bucket, Key=new_key, Body=b"x")
    e = entry(await plan(pool, cfg), "gone")
    assert e["state"] == "refused" and "in use again" in e["reason"] and new_key in e["reason"]
    assert entry(await run(pool, cfg), "gone")["state"] == "refused"
    assert set(etags(s3_endpoint, arch.bucket)) == {*before, new_key}
    s3_endpoint.client().delete_object(Bucket=arch.bucket, Key=new_key)

    # clonable until purged; the plan says until when
    doc = (await views_plan.plan_doc(pool, cfg, SPACE, ORDERS_LATEST)).to_json()
    assert doc["source"]["undo_until"] and any("undo period" in w for w in doc["warnings"])

    report = await run(pool, cfg)
    assert entry(report, "gone")["state"] == "deleted"
    assert list_all(s3_endpoint.client(), arch.bucket) == []
    assert [a.outcome for a in await purges.history(pool, "gone")] == ["done", "refused", "refused"]

    # memory stays: the name resolves, the clone is refused with `purged`, when and by which policy
    with pytest.raises(PlanningError) as exc:
        await views_plan.plan_doc(pool, cfg, SPACE, ORDERS_LATEST)
    rec = await repo.get_instance(pool, "gone")
    assert exc.value.code == "purged" and rec.purged_at is not None
    assert rec.purged_at.isoformat().replace("+00:00", "Z") in exc.value.message
    assert "DELETED_RETENTION_DAYS=0 PURGE_GRACE_HOURS=0" in exc.value.message
    back = await views_backups.backups_doc(pool, SPACE, "orders", cfg)
    (inst,) = back["instances"]
    assert inst["purged_at"] and inst["undo_until"] and inst["backups"] == [] and inst["windows"] == []
    # the scanner skips it and keeps the catalog as it was
    gen = await repo.snapshot_version(pool, "gone")
    async with s3_client(cfg) as c:
        o = await runner.scan_instance(pool, c, "gone", full=True, settings=cfg)
    assert o.ok and o.code == "purged" and await repo.snapshot_version(pool, "gone") == gen

    # the CLI: exit 3 and the refusal document
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "backup_catalog.cli", "plan", "--space", SPACE, "--clone-from", "orders", "--latest",
        "--json", env=cli_env(cfg), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 3, err
    refusal = json.loads(out)["error"]
    assert refusal["code"] == "purged" and refusal["details"]["purged_at"] == rec.purged_at.isoformat().replace("+00:00", "Z")


def cli_env(cfg: Settings, **extra: str) -> dict[str, str]:
    assert cfg.catalog_dsn is not None and cfg.s3_endpoint_url is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PURGE_", "AWS_", "S3_", "CATALOG_"))}
    env.update(CATALOG_DSN=cfg.catalog_dsn.get_secret_value(), S3_ENDPOINT_URL=cfg.s3_endpoint_url,
               AWS_ACCESS_KEY_ID=READER, AWS_SECRET_ACCESS_KEY="r", AWS_DEFAULT_REGION="us-east-1",
               DELETED_RETENTION_DAYS="0", PURGE_GRACE_HOURS="0", S3_MAX_ATTEMPTS="2", **extra)
    return env


@asynccontextmanager
async def proxy_to(upstream: str) -> Any:
    p = await FaultProxy(upstream).start()
    try:
        yield p
    finally:
        await p.stop()


def is_delete(request: web.Request) -> bool:
    return request.method == "POST" and "delete" in request.query


async def test_a_purge_killed_after_the_first_batch_is_finished_by_the_next_run(
        pool: asyncpg.Pool, cfg: Settings, s3_endpoint: MotoEndpoint) -> None:
    arch = await setup_deleted(pool, cfg, s3_endpoint, "pgbackrest")
    before = contents(s3_endpoint, arch.bucket)
    own = entry(await plan(pool, cfg), "gone")
    assert own["objects"] > 800, "the real pgBackRest archive needs three batches of 400"

    async with proxy_to(s3_endpoint.url) as proxy:
        state: dict[str, Any] = {"posts": 0}

        async def kill_on_second_batch(request: web.Request) -> None:
            if is_delete(request):
                state["posts"] += 1
                if state["posts"] == 2:       # the process dies with batch 2 in flight; S3 still deletes it
                    os.kill(state["pid"], signal.SIGKILL)

        proxy.before_request = kill_on_second_batch
        env = cli_env(cfg, PURGE_AWS_ACCESS_KEY_ID=WRITER, PURGE_AWS_SECRET_ACCESS_KEY="w", PURGE_BATCH_SIZE="400")
        env["S3_ENDPOINT_URL"] = proxy.url
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "backup_catalog.cli", "purge", "run", "--json", env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        state["pid"] = proc.pid
        _, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == -signal.SIGKILL, err
        assert {a for (m, a) in proxy.credentials if m == "POST"} == {WRITER}

    (audit,) = await purges.history(pool, "gone")
    assert audit.outcome == "running" and audit.objects_deleted == 400 and len(audit.pending) == 400
    with pytest.raises(purge.PurgeBusy, match="held by"):     # the dead run's lease has not lapsed yet
        await run(pool, cfg)
    await pool.execute("UPDATE scan_leases SET expires_at = now() WHERE key = 'purge'")   # ... now it has
    left = list_all(s3_endpoint.client(), arch.bucket, own["prefixes"][0]) + \
        list_all(s3_endpoint.client(), arch.bucket, own["prefixes"][1])
    assert len(left) == own["objects"] - 800           # batch 2 was deleted, its count not yet recorded
    with pytest.raises(PlanningError, match="being purged") as exc:      # half an archive is not clonable
        await views_plan.plan_doc(pool, cfg, SPACE, ORDERS_LATEST)
    assert exc.value.code == "purged"

    report = await run(pool, cfg)
    assert entry(report, "gone")["state"] == "deleted" and report.objects_deleted == own["objects"] - 800
    (audit,) = await purges.history(pool, "gone")
    assert audit.outcome == "done" and audit.objects_deleted == own["objects"] and audit.bytes_deleted == own["bytes"]
    assert audit.pending == {}
    after = contents(s3_endpoint, arch.bucket)
    assert not any(k.startswith(tuple(own["prefixes"])) for k in after)
    assert after == {k: v for k, v in before.items() if not k.startswith(tuple(own["prefixes"]))}


async def test_a_failing_endpoint_fails_the_purge_and_the_next_run_resumes_the_same_record(
        pool: asyncpg.Pool, s3_endpoint: MotoEndpoint, catalog_dsn: str) -> None:
    async with proxy_to(s3_endpoint.url) as proxy:
        cfg = settings_for(proxy.url, catalog_dsn, purge_batch_size=5)
        arch = await setup_deleted(pool, cfg, s3_endpoint, "barman", sibling=False)
        posts = 0

        async def fail_after_first_batch(request: web.Request) -> None:
            nonlocal posts
            if is_delete(request):
                posts += 1
                if posts == 2:
                    proxy.down = True

        proxy.before_request = fail_after_first_batch
        report = await run(pool, cfg)
        e = entry(report, "gone")
        assert report.failed and e["state"] == "failed" and "DeleteObjects failed" in e["reason"]
        assert e["objects_deleted"] == 5
        (audit,) = await purges.history(pool, "gone")
        assert audit.outcome == "failed" and audit.objects_deleted == 5
        proxy.down = False
        report = await run(pool, cfg)
        assert entry(report, "gone")["state"] == "deleted" and not report.failed
    (audit,) = await purges.history(pool, "gone")
    assert audit.outcome == "done" and audit.objects_deleted == len(arch.keys)
    assert list_all(s3_endpoint.client(), arch.bucket) == []


async def test_scanner_and_api_never_delete_only_the_purge_credentials_do(
        pool: asyncpg.Pool, s3_endpoint: MotoEndpoint, catalog_dsn: str) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from backup_catalog.service.app import create_app
    from tests.api.conftest import basic

    async with proxy_to(s3_endpoint.url) as proxy:
        cfg = settings_for(proxy.url, catalog_dsn, broker_username="b", broker_password=SecretStr("b"),
                           operator_username="o", operator_password=SecretStr("o"))
        arch = fresh_archive(s3_endpoint, "pgbackrest")
        await register(pool, "live", arch, name="orders")
        app = create_app(cfg, pool=pool, start_scheduler=False, holder="t")
        broker, operator = basic("b", "b"), basic("o", "o")
        async with TestClient(TestServer(app)) as c:
            assert (await c.post("/instances/live/scan?full=true", headers=operator)).status == 200
            assert (await c.get(f"/spaces/{SPACE}/services/orders/backups", headers=broker)).status == 200
            resp = await c.post(f"/spaces/{SPACE}/clones", json={"clone-from": "orders", "latest": True},
                                headers=broker)
            assert resp.status == 200, await resp.text()
            resp = await c.delete("/instances/live", headers=broker)
            doc = await resp.json()
            assert resp.status == 200 and doc["undo_until"] == doc["deleted_at"]     # retention 0
            assert (await c.post("/instances/live/hold", headers=operator, json={"reason": "audit"})).status == 200
            plan_doc = await (await c.get("/purges", headers=operator)).json()
            assert plan_doc["instances"][0]["state"] == "refused"
            assert (await c.delete("/instances/live/hold", headers=operator)).status == 200
            plan_doc = await (await c.get("/purges", headers=operator)).json()
            (e,) = plan_doc["instances"]
            assert e["state"] == "due" and e["objects"] > 1000
            assert proxy.methods["DELETE"] == 0 and proxy.methods["POST"] == 0, proxy.methods
            assert {a for (_, a) in proxy.credentials} == {READER}

            resp = await c.post("/purges", headers=operator)
            doc = await resp.json()
            assert resp.status == 200 and doc["objects_deleted"] == e["objects"], doc
            resp = await c.post(f"/spaces/{SPACE}/clones", json={"clone-from": "orders", "latest": True},
                                headers=broker)
            refusal = await resp.json()
            purged_at = (await repo.get_instance(pool, "live")).purged_at
            assert resp.status == 422 and refusal["error"]["code"] == "purged", refusal
            assert purged_at is not None and refusal["error"]["details"]["purged_at"] == \
                purged_at.isoformat().replace("+00:00", "Z")
        deletes = {a: n for (m, a), n in proxy.credentials.items() if m == "POST"}
        assert deletes == {WRITER: 2} and proxy.methods["DELETE"] == 0     # 2 batches of <= 1,000 keys
        assert all(a == WRITER for (m, a) in proxy.credentials if m == "POST")


async def test_purge_run_refuses_without_its_own_credentials(pool: asyncpg.Pool, s3_endpoint: MotoEndpoint,
                                                            catalog_dsn: str) -> None:
    cfg = settings_for(s3_endpoint.url, catalog_dsn, purge_aws_access_key_id=None, purge_aws_secret_access_key=None)
    with pytest.raises(PurgeNotConfigured, match="PURGE_AWS_ACCESS_KEY_ID"):
        await run(pool, cfg)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "backup_catalog.cli", "purge", "run", "--json", env=cli_env(cfg),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    assert proc.returncode == 1
    err = json.loads(out)["error"]
    assert err["code"] == "purge_not_configured" and "PURGE_AWS_SECRET_ACCESS_KEY" in err["message"]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "backup_catalog.cli", "purge", "--json", env=cli_env(cfg),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    assert proc.returncode == 0 and json.loads(out) | {"at": None} == {
        "dry_run": True, "at": None, "policy": "DELETED_RETENTION_DAYS=0 PURGE_GRACE_HOURS=0", "instances": [],
        "objects_deleted": 0, "bytes_deleted": 0}


async def test_serve_runs_scheduled_purges_under_the_lease_with_structured_log_lines(
        pool: asyncpg.Pool, cfg: Settings, s3_endpoint: MotoEndpoint, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from aiohttp.test_utils import TestClient, TestServer

    from backup_catalog.service import jobs
    from backup_catalog.service.app import create_app

    assert not jobs.add_purge(None, pool, cfg, "h")                                   # type: ignore[arg-type]
    assert not jobs.add_purge(None, pool, cfg.model_copy(update={"purge_interval_seconds": 60,  # type: ignore[arg-type]
                                                                 "purge_aws_access_key_id": None}), "h")
    arch = await setup_deleted(pool, cfg, s3_endpoint, "walg", sibling=False)
    serve_cfg = cfg.model_copy(update={"purge_interval_seconds": 1, "scan_interval_seconds": 3600})
    caplog.set_level(logging.INFO, logger="backup_catalog")
    app = create_app(serve_cfg, pool=pool, start_scheduler=True, holder="replica-1")
    async with TestClient(TestServer(app)):
        for _ in range(200):
            if await pool.fetchval("SELECT purged_at FROM instances WHERE instance_guid = 'gone'") is not None:
                break
            await asyncio.sleep(0.1)
    (audit,) = await purges.history(pool, "gone")
    assert audit.outcome == "done" and list_all(s3_endpoint.client(), arch.bucket) == []
    assert (await pool.fetchval("SELECT holder FROM purges WHERE instance_guid = 'gone'")).startswith("replica-1/")
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("purge instance=gone")]
    assert any("phase=done" in line and f"objects_deleted={audit.objects_deleted}" in line for line in lines), lines


async def test_a_hold_placed_during_a_purge_stops_it_before_the_next_batch(
        pool: asyncpg.Pool, s3_endpoint: MotoEndpoint, catalog_dsn: str) -> None:
    async with proxy_to(s3_endpoint.url) as proxy:
        cfg = settings_for(proxy.url, catalog_dsn, purge_batch_size=5)
        arch = await setup_deleted(pool, cfg, s3_endpoint, "barman", sibling=False)
        posts = 0

        async def hold_after_second_batch(request: web.Request) -> None:
            nonlocal posts
            if is_delete(request):
                posts += 1
                if posts == 2:
                    await purge.hold(pool, cfg, "gone", "restore requested")

        proxy.before_request = hold_after_second_batch
        e = entry(await run(pool, cfg), "gone")
    assert e["state"] == "refused" and "operator hold placed" in e["reason"] and e["objects_deleted"] == 10
    (audit,) = await purges.history(pool, "gone")
    assert audit.outcome == "refused" and audit.objects_deleted == 10
    assert len(list_all(s3_endpoint.client(), arch.bucket)) == len(arch.keys) - 10
    with pytest.raises(PlanningError, match="being purged"):      # what is left is not a whole archive
        await views_plan.plan_doc(pool, cfg, SPACE, ORDERS_LATEST)


async def test_the_catalog_re_check_sees_an_instance_registered_while_the_purge_lists(
        pool: asyncpg.Pool, s3_endpoint: MotoEndpoint, catalog_dsn: str) -> None:
    async with proxy_to(s3_endpoint.url) as proxy:
        cfg = settings_for(proxy.url, catalog_dsn)
        arch = await setup_deleted(pool, cfg, s3_endpoint, "walg", sibling=False)
        assert entry(await plan(pool, cfg), "gone")["state"] == "due"

        async def register_during_the_listing(request: web.Request) -> None:
            if request.method == "GET" and "list-type" in request.query and proxy.before_request is not None:
                proxy.before_request = None
                await register(pool, "newcomer", arch, name="reborn", layout="walg")   # same prefix, live

        proxy.before_request = register_during_the_listing
        e = entry(await run(pool, cfg), "gone")
    assert e["state"] == "refused" and "instance newcomer (live)" in e["reason"] and e["objects_deleted"] == 0
    assert proxy.methods["POST"] == 0 and len(list_all(s3_endpoint.client(), arch.bucket)) == len(arch.keys)
    assert (await repo.get_instance(pool, "gone")).purge_policy is None      # still whole, still clonable


async def test_keys_s3_refuses_in_a_delete_objects_answer_are_retried(
        pool: asyncpg.Pool, s3_endpoint: MotoEndpoint, catalog_dsn: str) -> None:
    """DeleteObjects can answer 200 with per-key <Error>s: those keys (only those) are sent again."""
    import re
    from xml.sax.saxutils import escape

    async with proxy_to(s3_endpoint.url) as proxy:
        cfg = settings_for(proxy.url, catalog_dsn)
        arch = await setup_deleted(pool, cfg, s3_endpoint, "walg", sibling=False)
        sent: list[list[str]] = []

        async def refuse_one_key_once(request: web.Request) -> None:
            if not is_delete(request):
                return
            keys = re.findall(r"<Key>(.*?)</Key>", (await request.read()).decode())
            sent.append(keys)
            if len(sent) == 1:        # S3 deletes all but one key and reports that one as an error
                s3_endpoint.client().delete_objects(Bucket=arch.bucket,
                                                    Delete={"Objects": [{"Key": k} for k in keys[1:]]})
                raise web.HTTPOk(content_type="application/xml", text=(
                    '<?xml version="1.0" encoding="UTF-8"?><DeleteResult><Error>'
                    f"<Key>{escape(keys[0])}</Key><Code>InternalError</Code><Message>try again</Message>"
                    "</Error></DeleteResult>"))

        proxy.before_request = refuse_one_key_once
        e = entry(await run(pool, cfg), "gone")
    assert e["state"] == "deleted" and e["objects_deleted"] == len(arch.keys), e
    assert len(sent) == 2 and len(sent[0]) == len(arch.keys) and sent[1] == sent[0][:1]
    assert list_all(s3_endpoint.client(), arch.bucket) == []
    (audit,) = await purges.history(pool, "gone")
    assert audit.objects_deleted == len(arch.keys)
