"""Application lifecycle: the scheduler in cleanup_ctx, draining scans at shutdown, ``serve`` and SIGTERM."""
from __future__ import annotations

import asyncio
import base64
import os
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from backup_catalog.api import keys
from backup_catalog.service.app import create_app, drain_scans
from catalog import repo
from recovery.model import InstanceRef, Storage
from sandbox.s3 import MotoEndpoint, free_port
from scheduler.clients import s3_client
from tests.api.conftest import AS_OPERATOR, make_settings
from tests.realarchives.plugin import fresh_bucket
from tests.support.serve import serving, stop


async def test_scheduler_runs_in_the_app_and_stops_with_it(pool: asyncpg.Pool, s3_endpoint: MotoEndpoint,
                                                           real_archives: Any) -> None:
    bucket, prefix = fresh_bucket(s3_endpoint, "pgbackrest")
    await repo.register_instance(pool, InstanceRef("sched-1", "space", "db"), Storage(bucket, prefix, "auto", "main"))
    settings = make_settings(s3_endpoint_url=s3_endpoint.url, scan_interval_seconds=1)
    app = create_app(settings, pool=pool, start_scheduler=True, holder="app-test")
    async with TestClient(TestServer(app)) as c:
        sched = app[keys.SCHEDULER]
        assert sched.running and sched.get_job("scan_all").max_instances == 1
        deadline = asyncio.get_running_loop().time() + 60     # a second on a quiet machine
        while asyncio.get_running_loop().time() < deadline:
            if await pool.fetchval("SELECT count(*) FROM scan_runs WHERE outcome = 'ok'"):
                break
            await asyncio.sleep(0.1)
        resp = await c.get("/metrics", headers=AS_OPERATOR)
        assert 'backup_catalog_scans_total{result="ok"}' in await resp.text()
    assert not sched.running
    assert not app[keys.SCAN_TASKS]
    assert len(await repo.backups(pool, "sched-1")) == 3
    assert await pool.fetchval("SELECT count(*) FROM scan_runs WHERE finished_at IS NULL") == 0


async def test_drain_waits_then_cancels() -> None:
    done = asyncio.ensure_future(asyncio.sleep(0.05))
    slow = asyncio.ensure_future(asyncio.sleep(60))
    t0 = time.monotonic()
    await drain_scans({done, slow}, grace=0.3)
    assert done.done() and not done.cancelled()
    assert slow.cancelled()
    assert time.monotonic() - t0 < 5


async def test_manual_scan_route_on_a_real_archive(pool: asyncpg.Pool, s3_endpoint: MotoEndpoint,
                                                   real_archives: Any) -> None:
    bucket, prefix = fresh_bucket(s3_endpoint, "pgbackrest")
    await repo.register_instance(pool, InstanceRef("man-1", "space", "db"), Storage(bucket, prefix, "auto", "main"))
    settings = make_settings(s3_endpoint_url=s3_endpoint.url)
    async with s3_client(settings) as s3:
        app = create_app(settings, pool=pool, s3=s3, start_scheduler=False, holder="h")
        async with TestClient(TestServer(app)) as c:
            # another replica holds the lease: 409, nothing scanned
            assert await repo.try_acquire_lease(pool, "scan:man-1", "other-replica", 60) is not None
            resp = await c.post("/instances/man-1/scan", headers=AS_OPERATOR)
            body = await resp.json(content_type=None)
            assert resp.status == 409 and body["code"] == "scan_in_progress", body
            await pool.execute("UPDATE scan_leases SET expires_at = clock_timestamp()")
            resp = await c.post("/instances/man-1/scan", headers=AS_OPERATOR)
            out = await resp.json()
            assert resp.status == 200 and out["ok"] and out["full"] is False and out["backups"] == 3, out
    runs = await pool.fetch("SELECT job, outcome FROM scan_runs ORDER BY id")
    assert [(r["job"], r["outcome"]) for r in runs] == [("manual", "skipped:lease_held"), ("manual", "ok")]


async def test_a_failed_manual_scan_is_a_503_problem_not_a_200(pool: asyncpg.Pool) -> None:
    # the store is unreachable (nothing listens on the port): a script reading the status must see the failure
    await repo.register_instance(pool, InstanceRef("man-down", "space", "db"),
                                 Storage("bucket", "prefix/", "pgbackrest", "main"))
    settings = make_settings(s3_endpoint_url=f"http://127.0.0.1:{free_port()}", s3_max_attempts=1,
                             s3_connect_timeout_seconds=1)
    async with s3_client(settings) as s3:
        app = create_app(settings, pool=pool, s3=s3, start_scheduler=False, holder="h")
        async with TestClient(TestServer(app)) as c:
            resp = await c.post("/instances/man-down/scan", headers=AS_OPERATOR)
            body = await resp.json(content_type=None)
    assert resp.status == 503 and resp.content_type == "application/problem+json", (resp.status, body)
    assert body["code"] == "storage_unavailable" and body["scan"]["ok"] is False, body
    assert body["scan"]["instance_guid"] == "man-down" and "man-down" in body["detail"]


sigterm_and_wait = stop   # the serve tests below and their neighbours' name for it


@pytest.mark.timeout(120)
async def test_serve_stops_gracefully_on_sigterm(catalog_dsn: str, pool: asyncpg.Pool) -> None:
    port = free_port()
    env = {**os.environ, "CATALOG_DSN": catalog_dsn, "S3_ENDPOINT_URL": "http://127.0.0.1:9",
           "SCAN_INTERVAL_SECONDS": "3600", "OPERATOR_PASSWORD": "op-SENTINEL"}
    async with serving(env, port) as proc:
        out = await sigterm_and_wait(proc)
    assert b"op-SENTINEL" not in out


@pytest.mark.timeout(120)
async def test_serve_workers_share_the_port_and_all_stop_on_sigterm(catalog_dsn: str, pool: asyncpg.Pool) -> None:
    port = free_port()
    env = {**os.environ, "CATALOG_DSN": catalog_dsn, "S3_ENDPOINT_URL": "http://127.0.0.1:9",
           "SCAN_INTERVAL_SECONDS": "3600"}
    exe = Path(sys.executable).with_name("backup-catalog")
    proc = await asyncio.create_subprocess_exec(str(exe), "serve", "--host", "127.0.0.1", "--port", str(port),
                                                "--workers", "2", env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)

    def workers() -> list[int]:
        out = []
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    stat = (d / "stat").read_text().rsplit(")", 1)[1].split()
                    cmd = (d / "cmdline").read_bytes()
                except OSError:
                    continue
                if int(stat[1]) == proc.pid and b"spawn_main" in cmd:
                    out.append(int(d.name))
        return out

    try:
        async with aiohttp.ClientSession() as s:
            served = 0
            for _ in range(900):
                try:
                    async with s.get(f"http://127.0.0.1:{port}/healthz") as r:
                        served += r.status == 200
                except aiohttp.ClientConnectionError:
                    pass
                if served >= 5 and len(workers()) == 2:
                    break
                await asyncio.sleep(0.1)
            else:
                pytest.fail("workers did not come up")
        pids = workers()
        assert len(pids) == 2
        await sigterm_and_wait(proc)   # checks exit 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert all(not Path(f"/proc/{p}").exists() for p in pids)


@pytest.mark.timeout(180)
async def test_serve_workers_expose_one_coherent_metrics_set(catalog_dsn: str, pool: asyncpg.Pool) -> None:
    """Requests land on either worker (SO_REUSEPORT, a new connection each); every scrape, whichever worker
    answers it, counts all of them (multiprocess mode) and shows the same fleet gauges (the catalog)."""
    from prometheus_client.parser import text_string_to_metric_families

    await repo.register_instance(pool, InstanceRef("mp-1", "space", "db"), Storage("b", "p", "auto", "main"))
    port = free_port()
    env = {**os.environ, "CATALOG_DSN": catalog_dsn, "S3_ENDPOINT_URL": "http://127.0.0.1:9",
           "SCAN_INTERVAL_SECONDS": "3600", "OPERATOR_USERNAME": "op", "OPERATOR_PASSWORD": "op-pw"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    exe = Path(sys.executable).with_name("backup-catalog")
    proc = await asyncio.create_subprocess_exec(str(exe), "serve", "--host", "127.0.0.1", "--port", str(port),
                                                "--workers", "2", env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    auth = {"Authorization": "Basic " + base64.b64encode(b"op:op-pw").decode()}
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(900):
            try:
                async with aiohttp.ClientSession() as s, s.get(url + "/healthz") as r:
                    if r.status == 200:
                        break
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.1)
        else:
            pytest.fail("server did not come up")
        await asyncio.sleep(1.0)          # both workers listening

        async def fresh_get(path: str) -> tuple[int, str]:
            conn = aiohttp.TCPConnector(force_close=True)
            async with aiohttp.ClientSession(connector=conn) as s, s.get(url + path, headers=auth) as r:
                return r.status, await r.text()

        async def healthz_count() -> tuple[float, dict[str, float]]:
            status, text = await fresh_get("/metrics")
            assert status == 200
            samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                       for f in text_string_to_metric_families(text) for s in f.samples}
            ok = samples.get(("backup_catalog_http_requests_total",
                              (("method", "GET"), ("route", "/healthz"), ("status", "200"))), 0.0)
            fleet = {k[0]: v for k, v in samples.items() if k[0].startswith("backup_catalog_instances")}
            return ok, fleet

        base, _ = await healthz_count()
        for _ in range(30):
            assert (await fresh_get("/healthz"))[0] == 200
        scrapes = [await healthz_count() for _ in range(8)]
        assert {c for c, _ in scrapes} == {base + 30}, "every scrape counts the requests of both workers"
        assert all(f == scrapes[0][1] for _, f in scrapes)
        await sigterm_and_wait(proc)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
