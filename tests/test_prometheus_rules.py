"""The alerting rules (deploy/prometheus/, issue 21): promtool checks them and runs their unit cases (one per
alert at least, each firing for the right instance only); every metric they read is one /metrics serves; and
a real Prometheus scraping a real `serve` fires the drill-failed and window-stale alerts for the instance
whose drill failed and whose archive aged, naming it and linking its coverage page."""
from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml

from catalog import repo
from recovery.model import InstanceRef, Storage
from sandbox.s3 import free_port
from sandbox.tool_barman import TOOLS_BIN
from tests.support.fixtures import OPERATOR, make_settings, register_and_scan
from tests.test_serve_credentials import clean_env, get, wait_up

RULES_DIR = Path(__file__).resolve().parents[1] / "deploy" / "prometheus"
RULES = RULES_DIR / "backup-catalog.rules.yml"
TESTS = RULES_DIR / "backup-catalog.tests.yml"


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found: install Debian's prometheus package (make debs)")
    return path


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def test_promtool_checks_the_rules_and_runs_their_unit_cases() -> None:
    p = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, check=False)
    assert p.returncode == 0 and f"SUCCESS: {len(rules())} rules found" in p.stdout, p.stdout + p.stderr
    p = subprocess.run([promtool(), "test", "rules", TESTS.name], cwd=RULES_DIR, capture_output=True, text=True,
                       check=False)
    assert p.returncode == 0 and "SUCCESS" in p.stdout, p.stdout + p.stderr


def test_every_alert_has_a_firing_unit_case_and_names_its_instance() -> None:
    cases = yaml.safe_load(TESTS.read_text())["tests"]
    fired = {t["alertname"] for case in cases for t in case["alert_rule_test"] if t["exp_alerts"]}
    quiet = {t["alertname"] for case in cases for t in case["alert_rule_test"] if not t["exp_alerts"]}
    names = {r["alert"] for r in rules()}
    assert fired == names, f"alerts without a firing case: {names - fired}"
    assert names - quiet <= {"BackupCatalogPurgeProblem"}, "each alert also has a case where it must not fire"
    for r in rules():
        text = " ".join(r["annotations"].values())
        if "instance_guid" in r["expr"]:
            for label in ("instance_guid", "space_guid", "name", "coverage_url"):
                assert f"{{{{ $labels.{label} }}}}" in text, (r["alert"], label)


async def test_the_rules_read_only_metrics_that_serve_exports(pool: asyncpg.Pool, s3_endpoint: Any,
                                                              real_archives: Any, catalog_dsn: str) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from backup_catalog.service.app import create_app
    from scheduler.clients import s3_client
    from tests.api.conftest import AS_OPERATOR

    settings = make_settings(s3_endpoint, catalog_dsn, drill_enabled=True, external_url="https://catalog.example/")
    async with s3_client(settings) as client:
        await register_and_scan(pool, client, settings, real_archives["pgbackrest"], "g-m", space="sp-m",
                                name="orders")
    await pool.execute("""INSERT INTO drills (instance_guid, state, started_at, finished_at, reason)
                          VALUES ('g-m', 'failed', now(), now(), 'x')""")
    await pool.execute("""INSERT INTO purges (instance_guid, bucket, prefix, policy, outcome)
                          VALUES ('g-m', 'b', 'p/', 'P', 'refused')""")
    app = create_app(settings, pool=pool, s3=object(), start_scheduler=False, holder="m")
    async with TestClient(TestServer(app)) as c:
        resp = await c.get("/metrics", headers=AS_OPERATOR)
        text = await resp.text()
    exported = {m.group(1) for m in re.finditer(r"^# TYPE (\w+) ", text, re.MULTILINE)}
    exported |= {n + "_total" for n in exported}        # prometheus_client counters: the samples end in _total
    used = {m for r in rules() for m in re.findall(r"\b(backup_catalog_\w+)", r["expr"])}
    assert used <= exported, f"rules read metrics /metrics does not export: {sorted(used - exported)}"
    assert ('backup_catalog_instance_info{instance_guid="g-m",space_guid="sp-m",name="orders",deleted="false",'
            'coverage_url="https://catalog.example/instances/g-m/coverage.html"} 1') in text
    assert 'backup_catalog_last_drill_failed{instance_guid="g-m"} 1' in text
    assert 'backup_catalog_last_purge{instance_guid="g-m",outcome="refused"} 1' in text
    assert "backup_catalog_catalog_up 1" in text


# ---- a real Prometheus ------------------------------------------------------------------------------------

def fast_rules(tmp: Path) -> Path:
    """The shipped rules with every ``for:`` shortened to 1 s (the expressions and annotations unchanged)."""
    text = RULES.read_text()
    fast = re.sub(r"^(\s+for: ).*$", r"\g<1>1s", text, flags=re.MULTILINE)
    assert [ln for ln in fast.splitlines() if "for:" not in ln] == [ln for ln in text.splitlines() if "for:" not in ln]
    out = tmp / "rules.yml"
    out.write_text(fast)
    return out


def start_prometheus(tmp: Path, target_port: int) -> tuple[subprocess.Popen[bytes], int]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus not found: install Debian's prometheus package (make debs)")
    port = free_port()
    config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
              "rule_files": [str(fast_rules(tmp))],
              "scrape_configs": [{"job_name": "backup-catalog", "metrics_path": "/metrics",
                                  "basic_auth": {"username": OPERATOR[0], "password": OPERATOR[1]},
                                  "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}]}]}
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    proc = subprocess.Popen([binary, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                            stdout=subprocess.DEVNULL, stderr=open(tmp / "prometheus.log", "wb"))
    return proc, port


def start_serve(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "backup_catalog.cli", "serve", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=open(log, "wb"))


def firing(port: int) -> list[dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/alerts", timeout=5) as r:
            doc = json.load(r)
    except OSError:         # not listening yet
        return []
    return [a for a in doc["data"]["alerts"] if a["state"] == "firing"]


def drills_of(port: int, guid: str) -> list[dict[str, Any]]:
    import base64
    token = base64.b64encode(f"{OPERATOR[0]}:{OPERATOR[1]}".encode()).decode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/instances/{guid}/drills",
                                 headers={"Authorization": f"Basic {token}"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return list(json.load(r)["drills"])


def post_drill(port: int, guid: str) -> int:
    import base64
    token = base64.b64encode(f"{OPERATOR[0]}:{OPERATOR[1]}".encode()).decode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/instances/{guid}/drills", data=b"{}", method="POST",
                                 headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return int(r.status)


@pytest.fixture
def workdir() -> Iterator[Path]:
    tmp = Path(tempfile.mkdtemp(prefix="bc-prom-"))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.realtools
async def test_a_real_prometheus_fires_drill_failed_and_window_stale_for_the_right_instance(
        pool: asyncpg.Pool, s3_endpoint: Any, real_archives: Any, catalog_dsn: str, workdir: Path) -> None:
    t0 = time.monotonic()
    settings = make_settings(s3_endpoint, catalog_dsn)
    from scheduler.clients import s3_client
    arch = real_archives["barman"]        # plain-HTTP S3 is fine for barman-cloud (pgBackRest would need TLS)
    async with s3_client(settings) as client:
        # its archive was written when the cache was built: its last commit is older than the 60 s RPO below
        await register_and_scan(pool, client, settings, arch, "g-aged", space="sp-prod", name="orders")
    # another instance with no archive under its prefix (serve's first scan finds nothing): no window, no drill
    await repo.register_instance(pool, InstanceRef("g-other", "sp-prod", "billing"),
                                 Storage(arch.bucket, "nothing-here/", "auto", None))
    port = free_port()
    env = clean_env(CATALOG_DSN=catalog_dsn, S3_ENDPOINT_URL=s3_endpoint.url, AWS_ACCESS_KEY_ID="testing",
                    AWS_SECRET_ACCESS_KEY="testing", S3_MAX_ATTEMPTS="2", SCAN_INTERVAL_SECONDS="86400",
                    BROKER_USERNAME="broker-t", BROKER_PASSWORD="broker-pw", OPERATOR_USERNAME=OPERATOR[0],
                    OPERATOR_PASSWORD=OPERATOR[1], DRILL_ENABLED="false", DRILL_TIMEOUT_SECONDS="1",
                    COVERAGE_CRITICAL_RPO_SECONDS="60", EXTERNAL_URL="https://catalog.example",
                    RESTORE_TOOLS_PATH=str(TOOLS_BIN))
    serve = start_serve(env, port, workdir / "serve.log")
    prom = None
    try:
        wait_up(serve, port)     # type: ignore[arg-type]
        # a real drill through the API that fails: it overruns DRILL_TIMEOUT_SECONDS and is recorded failed
        assert post_drill(port, "g-aged") == 202
        deadline = time.monotonic() + 30
        while not [d for d in drills_of(port, "g-aged") if d["state"] == "failed"]:
            assert time.monotonic() < deadline, [(d["state"], d.get("reason")) for d in drills_of(port, "g-aged")]
            await asyncio.sleep(0.3)
        prom, prom_port = start_prometheus(workdir, port)
        want = {"BackupCatalogDrillFailed", "BackupCatalogWindowStale"}
        deadline = time.monotonic() + 30
        while True:
            alerts = firing(prom_port) if prom.poll() is None else []
            if want <= {a["labels"]["alertname"] for a in alerts} or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        assert want <= {a["labels"]["alertname"] for a in alerts}, (alerts, (workdir / "prometheus.log").read_text())
        for a in alerts:
            if a["labels"]["alertname"] in want:
                assert a["labels"]["instance_guid"] == "g-aged" and a["labels"]["name"] == "orders"
                assert a["labels"]["space_guid"] == "sp-prod"
                assert a["annotations"]["coverage_url"] == "https://catalog.example/instances/g-aged/coverage.html"
                assert "g-aged" in a["annotations"]["description"] and "sp-prod" in a["annotations"]["description"]
        assert not [a for a in alerts if a["labels"].get("instance_guid") == "g-other"
                    and a["labels"]["alertname"] in want], alerts
        assert get(port, "/readyz", *OPERATOR) == 200
    except BaseException:
        print("serve rc", serve.poll(), (workdir / "serve.log").read_text())
        raise
    finally:
        if prom is not None:
            stop(prom)
        stop(serve)
    assert time.monotonic() - t0 < 60
    assert os.path.exists(workdir / "serve.log")
