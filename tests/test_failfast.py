"""Issue 23 item 3: `restore` fails fast in the product's words — before any tool runs for a plain-HTTP endpoint
given to pgBackRest, a certificate that does not name the host, missing credentials; and a fetch that stops
making progress stops after RESTORE_STALL_SECONDS. Each exits within seconds naming the setting to change, and
creates nothing."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from sandbox.archives import fresh_archive
from sandbox.tool_barman import TOOLS_BIN
from tests.support.faultproxy import FaultProxy
from tests.support.restore import hand_plan, scratch_dir

pytestmark = pytest.mark.realtools
EXE = str(Path(sys.executable).with_name("backup-catalog"))


def base_env(**kw: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PGBACKREST_", "S3_", "CATALOG_"))}
    env.update({"RESTORE_TOOLS_PATH": str(TOOLS_BIN), "S3_MAX_ATTEMPTS": "2", "RESTORE_FETCH_TIMEOUT_SECONDS": "120"})
    env.update(kw)
    return env


def plan_of(arch: Any) -> bytes:
    label = arch.truth["scenario_backups"]["B3"]
    return json.dumps(hand_plan(arch, label, "restore_command = 'false'\n",
                                arch.truth["last_archived"]["tl2"]).to_json()).encode()


async def restore(env: dict[str, str], plan: bytes, pgdata: Path) -> tuple[int, dict[str, Any], float]:
    t0 = time.monotonic()
    proc = await asyncio.create_subprocess_exec(EXE, "restore", "--plan", "-", "--pgdata", str(pgdata), "--json",
                                                env=env, stdin=asyncio.subprocess.PIPE,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(plan), 120)
    assert proc.returncode is not None
    assert out.strip(), err.decode()[-2000:]
    return proc.returncode, json.loads(out), time.monotonic() - t0


def cert_of(s3_endpoint: Any) -> str:
    s3_endpoint.start_tls()
    return str(s3_endpoint._tls_dir / "cert.pem")


CREDS = {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x"}


@pytest.mark.parametrize("case", ["plain-http", "https-to-http-port", "wrong-certificate-name", "untrusted-ca",
                                  "no-credentials"])
async def test_pgbackrest_endpoint_problems_fail_fast_naming_the_setting(case: str, real_archives: Any,
                                                                       s3_endpoint: Any) -> None:
    arch = real_archives["pgbackrest"]
    http = s3_endpoint.url
    tls_port = s3_endpoint.tls_port
    env, says = {
        "plain-http": (base_env(S3_ENDPOINT_URL=http, **CREDS), ["S3_ENDPOINT_URL", "HTTPS"]),
        "https-to-http-port": (base_env(S3_ENDPOINT_URL=http.replace("http://", "https://"), S3_VERIFY_TLS="false",
                                        **CREDS), ["plain HTTP", "S3_ENDPOINT_URL"]),
        "wrong-certificate-name": (base_env(S3_ENDPOINT_URL=f"https://localhost:{tls_port}",
                                            S3_CA_BUNDLE=cert_of(s3_endpoint), **CREDS),
                                   ["does not name the host 'localhost'", "S3_ENDPOINT_URL"]),
        "untrusted-ca": (base_env(S3_ENDPOINT_URL=f"https://127.0.0.1:{tls_port}", **CREDS),
                         ["not signed by a trusted CA", "S3_CA_BUNDLE"]),
        "no-credentials": (base_env(S3_ENDPOINT_URL=f"https://127.0.0.1:{tls_port}", S3_VERIFY_TLS="false"),
                           ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]),
    }[case]
    d = scratch_dir("failfast-")
    try:
        code, doc, took = await restore(env, plan_of(arch), d / "data")
        assert code == 2, doc
        message = doc["error"]["message"]
        for word in says:
            assert word in message, message
        assert took < 10, f"{case}: {took:.1f} s"
        assert not (d / "data").exists(), "a refused restore creates nothing"
    finally:
        shutil.rmtree(d, ignore_errors=True)


async def test_a_stalled_fetch_stops_after_restore_stall_seconds(s3_endpoint: Any) -> None:
    """barman-cloud through a proxy that sends the base backup's first bytes, then nothing more."""
    arch = fresh_archive(s3_endpoint, "barman")
    proxy = await FaultProxy(s3_endpoint.url, stall_suffix="data.tar.gz", stall_at=10).start()
    d = scratch_dir("failfast-stall-")
    try:
        env = base_env(S3_ENDPOINT_URL=proxy.url, RESTORE_STALL_SECONDS="3", **CREDS)
        code, doc, took = await restore(env, plan_of(arch), d / "data")
        assert code == 4, doc
        e = doc["error"]
        assert e["stage"] == "fetch" and "RESTORE_STALL_SECONDS" in e["message"], e
        assert proxy.stalled >= 1
        assert took < 20, f"{took:.1f} s"
        assert not (d / "data").exists()
    finally:
        await proxy.stop()
        shutil.rmtree(d, ignore_errors=True)
