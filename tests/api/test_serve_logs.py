"""What ``serve`` tells its operator (issue 23 item 6): a start-up line, an access log with the role and no
credentials, scan outcomes, and shutdown — JSON lines when not on a terminal, text with LOG_FORMAT=text."""
from __future__ import annotations

import base64
import json
import os
from typing import Any

import aiohttp
import asyncpg
import pytest

from catalog import repo
from recovery.model import InstanceRef, Storage
from sandbox.s3 import free_port
from tests.support.serve import serving, stop

SECRET = "op-SENTINEL-pw"


async def _serve(env: dict[str, str], port: int, work: Any) -> bytes:
    async with serving(env, port) as proc, aiohttp.ClientSession() as s:
        await work(s)
        await s.close()
        return await stop(proc)


@pytest.mark.timeout(120)
async def test_serve_logs_json_lines_startup_access_scan_and_shutdown(catalog_dsn: str, pool: asyncpg.Pool) -> None:
    await repo.register_instance(pool, InstanceRef("log-1", "space", "db"), Storage("b", "p/", "pgbackrest", "main"))
    port = free_port()
    env = {**os.environ, "CATALOG_DSN": catalog_dsn, "S3_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
           "S3_MAX_ATTEMPTS": "1", "S3_CONNECT_TIMEOUT_SECONDS": "1", "SCAN_INTERVAL_SECONDS": "3600",
           "OPERATOR_USERNAME": "op", "OPERATOR_PASSWORD": SECRET, "DRILL_ENABLED": "false"}
    env.pop("LOG_FORMAT", None)
    auth = {"Authorization": "Basic " + base64.b64encode(f"op:{SECRET}".encode()).decode()}

    async def work(s: aiohttp.ClientSession) -> None:
        async with s.get(f"http://127.0.0.1:{port}/instances", headers=auth) as r:
            assert r.status == 200
        async with s.get(f"http://127.0.0.1:{port}/instances", headers={"Authorization": "Basic eDp5"}) as r:
            assert r.status == 401
        async with s.post(f"http://127.0.0.1:{port}/instances/log-1/scan", headers=auth) as r:
            assert r.status == 503       # nothing listens where S3 should be

    out = await _serve(env, port, work)
    text = out.decode(errors="replace")
    assert SECRET not in text and "eDp5" not in text
    lines = [json.loads(ln) for ln in text.splitlines() if ln.startswith("{")]
    assert lines, text[-2000:]
    assert all({"time", "level", "logger", "message"} <= set(ln) for ln in lines), lines[:3]
    started = [ln for ln in lines if ln.get("event") == "started"]
    assert len(started) == 1 and started[0]["port"] == port and started[0]["workers"] == 1, lines
    assert started[0]["jobs"]["scan_all"] == "every 3600s", started
    assert started[0]["catalog"].startswith("postgresql://") and "@" not in started[0]["catalog"]
    access = [ln for ln in lines if ln["logger"] == "backup_catalog.access"]
    seen = {(a["method"], a["path"], a["status"], a["role"]) for a in access}
    assert ("GET", "/instances", 200, "operator") in seen, access
    assert ("GET", "/instances", 401, "public") in seen, access
    assert ("POST", "/instances/log-1/scan", 503, "operator") in seen, access
    assert all(isinstance(a["duration_ms"], float) for a in access)
    scans = [ln for ln in lines if ln.get("event") == "scan"]
    assert any(s["instance_guid"] == "log-1" and s["ok"] is False and s["code"] == "storage_unavailable"
               and s["level"] == "WARNING" for s in scans), scans
    events = [ln.get("event") for ln in lines]
    assert events.index("stopping") > events.index("started") and events[-1] == "stopped", events
    assert next(ln for ln in lines if ln.get("event") == "stopping")["signal"] == "SIGTERM"


@pytest.mark.timeout(120)
async def test_log_format_text_and_level(catalog_dsn: str, pool: asyncpg.Pool) -> None:
    port = free_port()
    env = {**os.environ, "CATALOG_DSN": catalog_dsn, "S3_ENDPOINT_URL": "http://127.0.0.1:9",
           "SCAN_INTERVAL_SECONDS": "3600", "LOG_FORMAT": "text", "LOG_LEVEL": "warning", "DRILL_ENABLED": "false"}

    async def work(s: aiohttp.ClientSession) -> None:
        async with s.get(f"http://127.0.0.1:{port}/healthz") as r:
            assert r.status == 200

    text = (await _serve(env, port, work)).decode(errors="replace")
    assert "{" not in "".join(ln[:1] for ln in text.splitlines())     # no JSON lines
    assert "listening on" not in text and "GET /healthz" not in text   # info lines are below WARNING
