"""`backup-catalog restore` end to end (the CLI in a subprocess, as a broker or operator runs it), with the real
tools on copies of the real archives: a damaged segment inside the newest window is exit 4 naming it (both
tools); bad input creates and touches nothing; an endpoint lost mid-fetch and a SIGTERM during recovery leave no
process and no directory; a plan fetched over HTTP restores on a host without CATALOG_DSN."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from backup_catalog.usecases.restore import plan_clone
from recovery.wal import WalSegment
from sandbox.archives import RealArchive, fresh_archive
from sandbox.pg import PG_BIN, as_postgres
from sandbox.s3 import free_port, list_all
from sandbox.tool_barman import TOOLS_BIN
from scheduler.clients import s3_client
from tests.support.clones import clone_request
from tests.support.faultproxy import FaultProxy
from tests.support.fixtures import on_path, register_and_scan
from tests.support.restore import (
    hand_plan,
    restore_environ,
    restore_settings,
    scratch_dir,
    start_and_read,
)

pytestmark = pytest.mark.realtools
TOOLS = ("pgbackrest", "barman")
EXE = str(Path(sys.executable).with_name("backup-catalog"))
DURATIONS: dict[str, float] = {}
ERRORS: dict[str, Any] = {}     # the error documents of the damaged-archive restores (for the README)


@dataclass(frozen=True, slots=True)
class Inst:
    arch: RealArchive
    space: str
    name: str


def cli_env(s3_endpoint: Any, catalog_dsn: str | None, endpoint_url: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in restore_environ(s3_endpoint).items() if k != "CATALOG_DSN"}
    env.update({"S3_ENDPOINT_URL": endpoint_url or s3_endpoint.url, "AWS_ACCESS_KEY_ID": "x",
                "AWS_SECRET_ACCESS_KEY": "x", "RESTORE_TOOLS_PATH": str(TOOLS_BIN), "S3_MAX_ATTEMPTS": "2",
                "RESTORE_RECOVERY_TIMEOUT_SECONDS": "180", "RESTORE_FETCH_TIMEOUT_SECONDS": "180"})
    if catalog_dsn:
        env["CATALOG_DSN"] = catalog_dsn
    return env


async def run_cli(env: dict[str, str], *args: str, stdin: bytes | None = None,
                  limit: float = 300) -> tuple[int, Any, str]:
    proc = await asyncio.create_subprocess_exec(EXE, "restore", *args, "--json", env=env,
                                                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(stdin), limit)
    assert proc.returncode is not None
    return proc.returncode, json.loads(out.decode()) if out.strip() else None, err.decode()


def objects(s3_endpoint: Any, bucket: str) -> list[tuple[str, int, str]]:
    return sorted((o["Key"], o["Size"], o["ETag"]) for o in list_all(s3_endpoint.client(), bucket))


def no_server_on(pgdata: Path) -> bool:
    r = subprocess.run(["pgrep", "-f", f"postgres -D {pgdata}"], capture_output=True, text=True, check=False)
    return r.stdout.strip() == ""


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def fresh(_catalog_pool: asyncpg.Pool, s3_endpoint: Any, catalog_dsn: str) -> dict[str, Inst]:
    """Per tool a fresh copy of the archive, registered and scanned under a module-unique space."""
    settings = restore_settings(s3_endpoint, catalog_dsn)
    space = f"restore-{uuid.uuid4().hex[:8]}"
    out = {}
    async with s3_client(settings) as client:
        for tool in TOOLS:
            arch = fresh_archive(s3_endpoint, tool)
            name = f"damaged-{tool}"
            await register_and_scan(_catalog_pool, client, settings, arch, f"{space}-{tool}", space=space, name=name)
            out[tool] = Inst(arch, space, name)
    return out


def damage_last_segment(s3_endpoint: Any, arch: RealArchive) -> str:
    """Overwrite the newest timeline's last segment with its predecessor's bytes (same key; both objects are
    stored by the tool the same way, gzip, so the copy is a valid object of the tool's own format)."""
    victim = arch.truth["last_archived"]["tl2"]
    prev = WalSegment.from_name(victim)
    prev_name = WalSegment(prev.timeline, prev.segno - 1).name
    keys = objects(s3_endpoint, arch.bucket)

    def key_of(seg: str) -> str:
        [k] = [k for k, _, _ in keys if k.rsplit("/", 1)[-1].startswith(seg) and "backup" not in k
               and not k.endswith(".partial")]
        return k

    c = s3_endpoint.client()
    body = c.get_object(Bucket=arch.bucket, Key=key_of(prev_name))["Body"].read()
    c.put_object(Bucket=arch.bucket, Key=key_of(victim), Body=body)
    return str(victim)


async def test_damaged_segment_in_newest_window_is_exit_4_naming_it(fresh: dict[str, Inst], s3_endpoint: Any,
                                                                     catalog_dsn: str) -> None:
    env = cli_env(s3_endpoint, catalog_dsn)

    async def one(tool: str) -> None:
        inst = fresh[tool]
        victim = damage_last_segment(s3_endpoint, inst.arch)
        before = objects(s3_endpoint, inst.arch.bucket)
        d = scratch_dir()
        try:
            t0 = time.monotonic()
            code, doc, err = await run_cli(env, "--space", inst.space, "--clone-from", inst.name, "--latest",
                                           "--pgdata", str(d / "data"))
            DURATIONS[f"damaged-{tool}"] = time.monotonic() - t0
            assert code == 4, (doc, err[-2000:])
            ERRORS[tool] = doc
            e = doc["error"]
            assert e["code"] == "restore_failed" and e["segment"] == victim, e
            assert victim in e["message"] and any(victim in ln for ln in e["postgres_log"]), e
            assert not (d / "data").exists()
            assert no_server_on(d / "data")
        finally:
            shutil.rmtree(d, ignore_errors=True)
        assert objects(s3_endpoint, inst.arch.bucket) == before

    await asyncio.gather(*(one(t) for t in TOOLS))


def plan_file(d: Path, doc: Any) -> Path:
    p = d / "plan.json"
    p.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return p


async def test_bad_input_creates_and_touches_nothing(real_archives: Any, s3_endpoint: Any, catalog_dsn: str,
                                                     _catalog_pool: asyncpg.Pool) -> None:
    t0 = time.monotonic()
    env = cli_env(s3_endpoint, None)
    arch = real_archives["barman"]
    good = hand_plan(arch, arch.truth["scenario_backups"]["B3"], "restore_command = 'false'\n",
                     "000000020000000000000007").to_json()
    d = scratch_dir()
    try:
        # a non-empty --pgdata: exit 2, untouched
        full = d / "full"
        full.mkdir()
        (full / "PG_VERSION").write_text("precious\n")
        code, doc, _ = await run_cli(env, "--plan", str(plan_file(d, good)), "--pgdata", str(full))
        assert code == 2 and "not empty" in doc["error"]["message"]
        assert [p.name for p in full.iterdir()] == ["PG_VERSION"] and (full / "PG_VERSION").read_text() == "precious\n"
        # what is not a plan: exit 2, nothing created
        for bad, words in (("{not json", "not JSON"), ("[1, 2]", "not a JSON object"),
                           ({"hello": "world"}, "the plan has no storage member"), ({**good, "files": {"../x": ""}}, "never writes"),
                           ({**good, "backup": {**good["backup"], "stop_lsn": "0-3"}}, "backup.stop_lsn '0-3' is not an LSN")):
            code, doc, _ = await run_cli(env, "--plan", str(plan_file(d, bad)), "--pgdata", str(d / "new"))
            assert code == 2 and words in doc["error"]["message"], doc
            assert not (d / "new").exists()
        code, doc, _ = await run_cli(env, "--plan", "-", "--pgdata", str(d / "new"), stdin=b"")
        assert code == 2 and not (d / "new").exists()
        # a refusal document given as the plan: exit 3, the refusal as it is
        refusal = {"error": {"code": "wal_gap", "message": "WAL 000000010000000000000004 is missing"}}
        code, doc, _ = await run_cli(env, "--plan", str(plan_file(d, refusal)), "--pgdata", str(d / "new"))
        assert code == 3 and doc == refusal and not (d / "new").exists()
        # missing server binaries for the archive's major version: exit 2 naming the version and --pg-bin
        code, doc, _ = await run_cli(env, "--plan", str(plan_file(d, {**good, "pg_version": 11})),
                                     "--pgdata", str(d / "new"))
        assert code == 2 and "PostgreSQL 11" in doc["error"]["message"] and "--pg-bin" in doc["error"]["message"]
        code, doc, _ = await run_cli(env, "--plan", str(plan_file(d, good)), "--pgdata", str(d / "new"),
                                     "--pg-bin", str(d / "nowhere"))
        assert code == 2 and "--pg-bin" in doc["error"]["message"] and not (d / "new").exists()
        # a refused plan from the catalog: exit 3, the refusal document, nothing created
        inst_space, guid = f"refuse-{uuid.uuid4().hex[:8]}", f"refuse-{uuid.uuid4().hex[:8]}"
        settings = restore_settings(s3_endpoint, catalog_dsn)
        async with s3_client(settings) as client:
            await register_and_scan(_catalog_pool, client, settings, arch, guid, space=inst_space, name="prod")
        code, doc, _ = await run_cli(cli_env(s3_endpoint, catalog_dsn), "--space", inst_space, "--clone-from",
                                     "prod", "--point-in-time", "2016-09-28T10:00:00Z", "--pgdata", str(d / "new"))
        assert code == 3 and doc["error"]["code"] == "target_before_window" and doc["error"]["windows"], doc
        assert not (d / "new").exists()
        # usage: no target
        code, doc, _ = await run_cli(env, "--space", "s", "--clone-from", "n", "--pgdata", str(d / "new"))
        assert code == 2 and not (d / "new").exists()
    finally:
        shutil.rmtree(d, ignore_errors=True)
    DURATIONS["bad-input (9 CLI runs)"] = time.monotonic() - t0


async def test_endpoint_lost_mid_fetch_leaves_nothing(fresh: dict[str, Inst], s3_endpoint: Any,
                                                      catalog_dsn: str, _catalog_pool: asyncpg.Pool) -> None:
    """The endpoint goes away mid-fetch: exit 4 at the fetch, nothing left; with --keep-failed the partial
    directory stays for inspection, marked as what it is (not a database). An endpoint already gone is
    found before any tool runs (exit 2, naming S3_ENDPOINT_URL)."""
    inst = fresh["barman"]
    settings = restore_settings(s3_endpoint, catalog_dsn)
    doc = (await plan_clone(_catalog_pool, settings, inst.space,
                            clone_request({"clone-from": inst.name, "immediate": True}))).to_json()
    d = scratch_dir()
    pgdata = d / "data"
    try:
        for keep in (False, True):
            proxy = await FaultProxy(s3_endpoint.url, drip_suffix="data.tar.gz", drip_chunk=256 * 1024,
                                     drip_interval=0.2).start()
            stopped = False
            try:
                env = cli_env(s3_endpoint, None, endpoint_url=proxy.url)
                t0 = time.monotonic()
                more = ["--keep-failed"] if keep else []
                task = asyncio.ensure_future(run_cli(env, "--plan", str(plan_file(d, doc)), "--pgdata", str(pgdata),
                                                     *more))
                while not task.done() and not (pgdata / ".restore-fetch").is_dir():
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0.5)
                assert not task.done(), "the fetch ended before the endpoint could be lost"
                await proxy.stop()          # the endpoint goes away mid-fetch: connection refused from now on
                stopped = True
                code, out, err = await task
                assert code == 4, (out, err[-2000:])
                assert out["error"]["stage"] == "fetch" and "barman-cloud-restore" in out["error"]["message"]
                assert no_server_on(pgdata)
                if keep:
                    assert pgdata.is_dir() and "NOT A DATABASE" in (pgdata / "RESTORE_INCOMPLETE").read_text()
                else:
                    DURATIONS["endpoint-lost-mid-fetch"] = time.monotonic() - t0
                    assert not pgdata.exists()
            finally:
                if not stopped:
                    await proxy.stop()
        shutil.rmtree(pgdata)
        code, out, _ = await run_cli(env, "--plan", str(plan_file(d, doc)), "--pgdata", str(pgdata))
        assert code == 2 and "S3_ENDPOINT_URL" in out["error"]["message"] and not pgdata.exists(), out
    finally:
        shutil.rmtree(d, ignore_errors=True)


async def test_sigterm_during_recovery_leaves_no_process_and_no_directory(
        real_archives: Any, s3_endpoint: Any, catalog_dsn: str, _catalog_pool: asyncpg.Pool) -> None:
    arch = real_archives["pgbackrest"]
    space, guid = f"sigterm-{uuid.uuid4().hex[:8]}", f"sigterm-{uuid.uuid4().hex[:8]}"
    settings = restore_settings(s3_endpoint, catalog_dsn)
    async with s3_client(settings) as client:
        await register_and_scan(_catalog_pool, client, settings, arch, guid, space=space, name="prod")
    d = scratch_dir()
    pgdata = d / "data"
    try:
        t0 = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            EXE, "restore", "--space", space, "--clone-from", "prod", "--latest", "--pgdata", str(pgdata), "--json",
            env=cli_env(s3_endpoint, catalog_dsn), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        while proc.returncode is None and not (pgdata / "postmaster.pid").exists():
            await asyncio.sleep(0.02)
        assert proc.returncode is None, "the restore ended before its server started"
        pid = int((pgdata / "postmaster.pid").read_text().split()[0])
        proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(proc.communicate(), 120)
        DURATIONS["sigterm-during-recovery"] = time.monotonic() - t0
        assert proc.returncode == 1 and json.loads(out)["error"]["code"] == "cancelled"
        assert not pgdata.exists()
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        assert no_server_on(pgdata)
        assert not [p for p in Path("/tmp").glob("backup-catalog-restore-*") if str(pgdata) in _conf_text(p)]
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _conf_text(work: Path) -> str:
    try:
        return (work / "pgbackrest.conf").read_text()
    except OSError:
        return ""


async def test_plan_over_http_restores_without_catalog_dsn(fresh: dict[str, Inst], s3_endpoint: Any,
                                                          catalog_dsn: str, _catalog_pool: asyncpg.Pool) -> None:
    """The broker's flow: POST /spaces/{space}/clones on the service, then `restore --plan -` on the host that
    will own the clone (no CATALOG_DSN there). barman: its plan names bucket and prefix in its restore_command
    (a plan with a `storage` member works for every layout)."""
    from backup_catalog.service.app import create_app
    from tests.api.conftest import AS_BROKER
    from tests.api.conftest import make_settings as api_settings

    arch = real_archive_copy = fresh["barman"].arch
    space, guid = f"http-{uuid.uuid4().hex[:8]}", f"http-{uuid.uuid4().hex[:8]}"
    settings = api_settings(s3_endpoint_url=s3_endpoint.url)
    rs = restore_settings(s3_endpoint, catalog_dsn)
    async with s3_client(rs) as client:
        await register_and_scan(_catalog_pool, client, rs, real_archive_copy, guid, space=space, name="prod")
    app = create_app(settings, pool=_catalog_pool, start_scheduler=False, holder="restore-test")
    async with TestClient(TestServer(app)) as http:
        r = await http.post(f"/spaces/{space}/clones", json={"clone-from": "prod", "immediate": True},
                            headers=AS_BROKER)
        assert r.status == 200, await r.text()
        plan = await r.read()
    env = cli_env(s3_endpoint, None)
    assert "CATALOG_DSN" not in env
    d = scratch_dir()
    try:
        t0 = time.monotonic()
        port = free_port()
        code, doc, err = await run_cli(env, "--plan", "-", "--pgdata", str(d / "data"), "--keep-running",
                                       "--port", str(port), "--socket-dir", "/tmp",
                                       "--check-query", "SELECT count(*) FROM ticks", stdin=plan)
        DURATIONS["plan-over-http"] = time.monotonic() - t0
        assert code == 0, (doc, err[-2000:])
        assert doc["state"] == "restored" and doc["backup"]["label"] == arch.truth["scenario_backups"]["B3"]
        assert doc["running"] is True and doc["check_result"] == "12"      # ids 1-9 and 13-15
        # not a terminal: one structured progress line per step on stderr
        for stage in ("fetch", "start", "verify", "check", "done"):
            assert f'restore stage="{stage}"' in err, err[-3000:]
        status = as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(d / "data"), "status"], check=False)
        assert status.returncode == 0, "--keep-running: the promoted server is running"
        # started with its own start command: its own port and socket, on which it answers
        assert doc["port"] == port and doc["start_command"].endswith(" start")
        q = await asyncio.to_thread(subprocess.run, ["psql", "-X", "-At", "-h", "/tmp", "-p", str(port), "-U",
                                    "postgres", "-c", "SELECT pg_is_in_recovery()"], capture_output=True, text=True,
                                    check=False)
        assert q.stdout.strip() == "f", q.stderr
        as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(d / "data"), "-m", "fast", "-w", "stop"])
        rows = await asyncio.to_thread(start_and_read, d / "data")
        stop = arch.truth["scenario_backups"]["B3"]
        assert rows and rows == [c.row for c in on_path(arch, (1, 2)) if c.id <= 15], (rows, stop)
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest_asyncio.fixture(scope="module", loop_scope="session", autouse=True)
async def _report_durations() -> AsyncIterator[None]:
    yield
    out = os.environ.get("RESTORE_TEST_DURATIONS")
    if out:
        Path(out).write_text(json.dumps({"seconds": {k: round(v, 1) for k, v in DURATIONS.items()},
                                         "errors": ERRORS}, indent=1))


async def test_restored_clone_starts_with_the_printed_command_alone(
        real_archives: Any, s3_endpoint: Any, catalog_dsn: str, _catalog_pool: asyncpg.Pool) -> None:
    """Issue 23 item 4: the clone's own settings are written once it is verified (no recovery settings, its
    port and socket directory, no fsync = off, archive off), and the printed command alone starts it."""
    arch = real_archives["pgbackrest"]
    space, guid = f"ready-{uuid.uuid4().hex[:8]}", f"ready-{uuid.uuid4().hex[:8]}"
    settings = restore_settings(s3_endpoint, catalog_dsn)
    async with s3_client(settings) as client:
        await register_and_scan(_catalog_pool, client, settings, arch, guid, space=space, name="prod")
    d = scratch_dir()
    pgdata, port = d / "data", free_port()
    try:
        code, doc, err = await run_cli(cli_env(s3_endpoint, catalog_dsn), "--space", space, "--clone-from", "prod",
                                       "--latest", "--pgdata", str(pgdata), "--port", str(port), "--socket-dir",
                                       "/tmp")
        assert code == 0, (doc, err[-2000:])
        auto = (pgdata / "postgresql.auto.conf").read_text()
        live = [ln for ln in auto.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        assert not [ln for ln in live if ln.startswith(("restore_command", "recovery_target"))], auto
        assert f"port = {port}" in live and "unix_socket_directories = '/tmp'" in live, auto
        assert not (pgdata / "RESTORE_INCOMPLETE").exists() and not (pgdata / "recovery.signal").exists()
        # the printed command, as printed, through a shell: nothing else
        start = await asyncio.to_thread(subprocess.run, doc["start_command"], shell=True, capture_output=True,
                                        text=True, timeout=120, check=False, cwd="/")
        assert start.returncode == 0, (doc["start_command"], start.stdout, start.stderr)
        try:
            q = await asyncio.to_thread(
                subprocess.run, ["psql", "-X", "-At", "-h", "/tmp", "-p", str(port), "-U", "postgres", "-c",
                                 "SELECT pg_is_in_recovery(), current_setting('fsync'), "
                                 "current_setting('archive_mode'), (SELECT count(*) FROM ticks)"],
                capture_output=True, text=True, check=False, timeout=60)
            rec, fsync, archive, ticks = q.stdout.strip().split("|")
            assert (rec, fsync, archive) == ("f", "on", "off") and int(ticks) > 0, (q.stdout, q.stderr)
        finally:
            as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(pgdata), "-m", "fast", "-w", "stop"], check=False)
    finally:
        shutil.rmtree(d, ignore_errors=True)
