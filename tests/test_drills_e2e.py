"""Restore drills for real: the pgBackRest and barman-cloud fixtures restored by the executor into scratch
directories, verified, recorded and cleaned up.

- Drills pass on both real archives, and fail — naming the segment — on copies with one damaged segment
  inside the newest window (the last TL2 segment overwritten with its predecessor's bytes under the same
  key: the listing stays complete). pgBackRest: the sha1 in the segment's name says so (stage ``verify``);
  barman-cloud (no checksums): replay stops short of the plan's promise (the executor's verdict).
- The four drills of the module run concurrently, once, in the ``drilled`` fixture; the tests assert on
  their recorded results. Budget and timeout drills cost no restore (timeout: two seconds of one).
- Killed drills (SIGKILL of the worker, SIGTERM of ``serve``) and two supervisors on one catalog use a
  catalog database of their own (``fresh_catalog``), so the scheduler sees only their instance.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
import pytest_asyncio

from backup_catalog.settings import Settings
from backup_catalog.usecases import coverage, scratch
from backup_catalog.usecases import drill as uc
from backup_catalog.usecases import drill_rules as rules
from backup_catalog.usecases.drill_schedule import JOB, DrillSupervisor
from catalog import drills
from recovery.wal import WalSegment, segment_name
from sandbox.s3 import free_port, wait_port
from scheduler.clients import s3_client
from tests.pg import private_catalog
from tests.realarchives.plugin import RealArchive, fresh_archive
from tests.support.fixtures import register_and_scan
from tests.support.restore import restore_environ, restore_settings, scratch_dir

pytestmark = pytest.mark.realtools
TOOLS = ("pgbackrest", "barman")
REPO = Path(__file__).resolve().parents[1]


def drill_settings(s3_endpoint: Any, dsn: str, root: Path, **kw: Any) -> Settings:
    return restore_settings(s3_endpoint, dsn, drill_scratch_dir=str(root), drill_timeout_seconds=240,
                            drill_lease_ttl_seconds=6, **kw)


@pytest.fixture(scope="module")
def pgbackrest_env(s3_endpoint: Any) -> Iterator[None]:
    """The TLS front for pgBackRest in this process's environment (the executor's caller environment,
    inherited by supervised workers)."""
    env = restore_environ(s3_endpoint)     # read the environment before clearing it (PATH, ...)
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def damage_last_segment(s3_endpoint: Any, arch: RealArchive) -> str:
    """Overwrite the last TL2 segment with its predecessor's bytes under the same key; its name."""
    last = arch.truth["last_archived"]["tl2"]
    seg = WalSegment.from_name(last)
    prev = segment_name(seg.timeline, seg.segno - 1)

    def key_of(name: str) -> str:
        pattern = re.compile(rf"^{name}(-[0-9a-f]{{40}})?(\.(gz|bz2|lz4|zst))?$")
        (k,) = [k for k in arch.keys if pattern.match(k.rsplit("/", 1)[-1])]
        return k

    c = s3_endpoint.client()
    body = c.get_object(Bucket=arch.bucket, Key=key_of(prev))["Body"].read()
    c.put_object(Bucket=arch.bucket, Key=key_of(last), Body=body)
    return last


@dataclass(frozen=True, slots=True)
class Drilled:
    settings: Settings
    root: Path
    guids: dict[str, str]                 # "pgbackrest", "barman", "pgbackrest-damaged", "barman-damaged"
    outcomes: dict[str, uc.DrillOutcome]
    damaged: dict[str, str]               # tool -> damaged segment name
    seconds: float


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def drilled(_catalog_pool: asyncpg.Pool, real_archives: Any, s3_endpoint: Any, catalog_dsn: str,
                  pgbackrest_env: None) -> AsyncIterator[Drilled]:
    """Four instances (both tools, intact and damaged) registered, scanned and drilled concurrently."""
    root = scratch_dir("drills-e2e-")
    settings = drill_settings(s3_endpoint, catalog_dsn, root)
    run = uuid.uuid4().hex[:8]
    guids: dict[str, str] = {}
    damaged: dict[str, str] = {}
    async with s3_client(settings) as client:
        for tool in TOOLS:
            for kind in ("", "-damaged"):
                arch = real_archives[tool] if not kind else fresh_archive(s3_endpoint, tool)
                guid = guids[tool + kind] = f"drill-{tool}{kind}-{run}"
                await register_and_scan(_catalog_pool, client, settings, arch, guid, space=f"drills-{run}",
                                        name=f"{tool}{kind}")
                if kind:   # damaged after the scan read it: what only a restore can notice (bit rot, an overwrite)
                    damaged[tool] = damage_last_segment(s3_endpoint, arch)
    t0 = time.monotonic()
    results = await asyncio.gather(*(uc.run_drill(_catalog_pool, settings, g, holder=f"test-{k}")
                                     for k, g in guids.items()))
    yield Drilled(settings, root, guids, dict(zip(guids, results, strict=True)), damaged, time.monotonic() - t0)
    import shutil
    shutil.rmtree(root, ignore_errors=True)


def assert_clean(root: Path) -> None:
    """No drill directory under ``root`` and no process working there."""
    assert scratch.drill_dirs(root) == {}, f"scratch directories left: {list(scratch.drill_dirs(root))}"
    assert scratch.processes_inside(root) == [], "processes left running in the scratch directory"


@pytest.mark.parametrize("tool", TOOLS)
async def test_drill_passes_on_the_real_archive(tool: str, drilled: Drilled, _catalog_pool: asyncpg.Pool) -> None:
    o = drilled.outcomes[tool]
    assert o.ok, o.error
    doc = o.to_json()
    assert doc["ok"] is True and doc["error"] is None and doc["target"]["kind"] == "latest"
    assert doc["backup"]["label"] and doc["reached"]["lsn"] and doc["duration_s"] > 0
    row = await drills.get(_catalog_pool, o.id)
    assert row is not None and row.state == "passed" and row.finished_at is not None
    assert row.backup_label == doc["backup"]["label"] and row.reached_lsn is not None
    assert row.bytes_fetched and row.fetch_s is not None and row.replay_s is not None
    assert row.target is not None and row.target["kind"] == "latest"
    if tool == "pgbackrest":   # the plan's WAL was checked against the sha1 in the names
        assert o.checked_segments >= 2
    # the clone's relation maps (issue 20): every database, user relations with their schema and kind
    seen = {(r["database_name"], r["schema_name"], r["rel_name"], r["kind"]) for r in await _catalog_pool.fetch(
        "SELECT m.database_name, e.schema_name, e.rel_name, e.kind FROM relation_maps m "
        "JOIN relation_map_entries e ON e.map_id = m.id WHERE m.drill_id = $1", o.id)}
    assert {("postgres", "public", "ticks", "r"), ("postgres", "public", "ticks_pkey", "i")} <= seen
    assert not any(schema == "pg_catalog" and name == "pg_class" for _, schema, name, _ in seen)
    assert_clean(drilled.root)


@pytest.mark.parametrize("tool", TOOLS)
async def test_drill_fails_naming_the_damaged_segment(tool: str, drilled: Drilled,
                                                      _catalog_pool: asyncpg.Pool) -> None:
    o = drilled.outcomes[f"{tool}-damaged"]
    seg = drilled.damaged[tool]
    assert o.state == "failed" and o.error is not None
    row = await drills.get(_catalog_pool, o.id)
    assert row is not None and row.state == "failed" and row.finished_at is not None
    assert row.segment == seg and seg in (row.reason or "")
    if tool == "pgbackrest":
        assert row.stage == "verify" and "checksum mismatch in segment " + seg in (row.reason or "")
    else:
        assert row.stage in ("recover", "verify") and row.postgres_log, row.reason
    assert_clean(drilled.root)
    # the coverage report turns the instance critical, naming the drill
    rows = {r["instance_guid"]: r for r in await coverage.all_rows(_catalog_pool, drilled.settings,
                                                                  now=datetime.now(UTC))}
    cov = rows[drilled.guids[f"{tool}-damaged"]]
    assert cov["status"] == "critical" and cov["drill"] is not None and cov["drill"]["ok"] is False
    assert any(f"drill {o.id}" in r for r in cov["reasons"]), cov["reasons"]


async def test_budget_skip_is_recorded_and_nothing_started(drilled: Drilled, _catalog_pool: asyncpg.Pool) -> None:
    tight = drilled.settings.model_copy(update={"drill_scratch_budget_bytes": 1 << 20})
    o = await uc.run_drill(_catalog_pool, tight, drilled.guids["barman"], holder="test-budget")
    assert o.state == "skipped"
    row = await drills.get(_catalog_pool, o.id)
    assert row is not None and row.state == "skipped" and row.stage == "budget"
    assert "needs about" in (row.reason or "") and "budget is 1.0 MiB" in (row.reason or "")
    assert row.bytes_fetched is None and row.fetch_s is None
    assert_clean(drilled.root)


async def test_timeout_kills_and_records_failed(drilled: Drilled, _catalog_pool: asyncpg.Pool) -> None:
    short = drilled.settings.model_copy(update={"drill_timeout_seconds": 2.0})
    o = await uc.run_drill(_catalog_pool, short, drilled.guids["pgbackrest"], holder="test-timeout")
    row = await drills.get(_catalog_pool, o.id)
    assert row is not None and row.state == "failed" and row.stage == "timeout"
    assert "timeout of 2 s" in (row.reason or "")
    assert_clean(drilled.root)


async def test_second_drill_of_an_instance_is_refused_while_one_runs(drilled: Drilled,
                                                                     _catalog_pool: asyncpg.Pool) -> None:
    g = drilled.guids["barman"]
    first = asyncio.create_task(uc.run_drill(_catalog_pool, drilled.settings, g, holder="test-one"))
    try:
        for _ in range(100):
            if any(r.state == "running" for r in await drills.history(_catalog_pool, g, 3)):
                break
            await asyncio.sleep(0.05)
        with pytest.raises(uc.DrillBusy):
            await uc.run_drill(_catalog_pool, drilled.settings, g, holder="test-two")
    finally:
        first.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await first
    (last, *_) = await drills.history(_catalog_pool, g, 1)
    assert last.state == "failed" and last.stage == "cancelled"      # cancellation is recorded, never half
    assert_clean(drilled.root)


# -- supervised drills: own catalog database --------------------------------------------------------------

@pytest_asyncio.fixture(loop_scope="session")
async def fresh_catalog(catalog_dsn: str) -> AsyncIterator[tuple[str, asyncpg.Pool]]:
    async with private_catalog(catalog_dsn, "bc_drill") as own:
        yield own


async def _one_instance(pool: asyncpg.Pool, settings: Settings, arch: RealArchive) -> str:
    guid = f"sup-{arch.tool}-{uuid.uuid4().hex[:8]}"
    async with s3_client(settings) as client:
        await register_and_scan(pool, client, settings, arch, guid, space="sup", name=arch.tool)
    return guid


async def _wait_for(pred: Any, seconds: float, what: str) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        v = await pred()
        if v:
            return v
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _postmaster_of(d: Path) -> int | None:
    for p in d.rglob("postmaster.pid"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int(p.read_text().splitlines()[0])
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()


async def test_sigkill_of_the_worker_leaves_nothing_and_the_next_drill_runs(
        fresh_catalog: tuple[str, asyncpg.Pool], real_archives: Any, s3_endpoint: Any, pgbackrest_env: None) -> None:
    dsn, pool = fresh_catalog
    root = scratch_dir("drills-kill-")
    settings = drill_settings(s3_endpoint, dsn, root, drill_interval_seconds=3600)
    guid = await _one_instance(pool, settings, real_archives["pgbackrest"])
    sup = DrillSupervisor(pool, settings, "replica-k")
    now = uc.now()
    (drill_id,) = await sup.tick(now)
    d = scratch.drill_dir(root, drill_id)

    async def server_up() -> int | None:
        pid = _postmaster_of(d) if d.exists() else None
        return pid if pid and _alive(pid) else None
    postmaster = await _wait_for(server_up, 120, "the drill's PostgreSQL server")
    worker = sup.workers[drill_id]
    os.kill(worker.pid, signal.SIGKILL)
    await asyncio.wait_for(asyncio.gather(*sup.tasks), 60)
    row = await drills.get(pool, drill_id)
    assert row is not None and row.state == "failed" and row.stage == "killed" and row.finished_at is not None
    assert "SIGKILL" in (row.reason or "")
    assert not _alive(postmaster), "the drill's server survived its worker"
    assert_clean(root)
    # the next scheduled slot drills again, and passes; the killed slot is not run twice
    assert await sup.tick(now) == []
    nxt = rules.drill_slot(now, 3600, guid).start + timedelta(hours=1, seconds=1)
    (again,) = await sup.tick(nxt)
    await asyncio.wait_for(asyncio.gather(*sup.tasks), 240)
    row = await drills.get(pool, again)
    assert row is not None and row.state == "passed", row.reason
    assert_clean(root)


async def test_two_supervisors_run_every_due_drill_exactly_once(
        fresh_catalog: tuple[str, asyncpg.Pool], real_archives: Any, s3_endpoint: Any, pgbackrest_env: None) -> None:
    dsn, pool = fresh_catalog
    root = scratch_dir("drills-two-")
    settings = drill_settings(s3_endpoint, dsn, root, drill_interval_seconds=3600, drill_concurrency=2)
    g1 = await _one_instance(pool, settings, real_archives["pgbackrest"])
    g2 = await _one_instance(pool, settings, real_archives["barman"])
    a, b = DrillSupervisor(pool, settings, "replica-a"), DrillSupervisor(pool, settings, "replica-b")
    now = uc.now()
    started = await asyncio.gather(a.tick(now), b.tick(now), a.tick(now), b.tick(now))
    assert sorted(i for s in started for i in s) == sorted(r["id"] for r in await pool.fetch("SELECT id FROM drills"))
    assert sum(len(s) for s in started) == 2
    await asyncio.wait_for(asyncio.gather(*a.tasks, *b.tasks), 300)
    rows = await pool.fetch("SELECT instance_guid, state, holder FROM drills ORDER BY instance_guid")
    assert sorted(r["instance_guid"] for r in rows) == sorted([g1, g2])
    assert all(r["state"] == "passed" for r in rows), [dict(r) for r in rows]
    runs = await pool.fetch("SELECT instance_guid, outcome FROM scan_runs WHERE job = $1", JOB)
    assert sorted(r["instance_guid"] for r in runs) == sorted([g1, g2])
    assert await asyncio.gather(a.tick(now), b.tick(now)) == [[], []]      # nothing due twice
    assert_clean(root)


async def test_scheduled_drill_over_budget_is_skipped_without_a_worker(
        fresh_catalog: tuple[str, asyncpg.Pool], real_archives: Any, s3_endpoint: Any) -> None:
    dsn, pool = fresh_catalog
    root = scratch_dir("drills-budget-")
    settings = drill_settings(s3_endpoint, dsn, root, drill_scratch_budget_bytes=1000)
    await _one_instance(pool, settings, real_archives["barman"])
    sup = DrillSupervisor(pool, settings, "replica-b")
    spawned: list[int] = []
    original = sup._run_worker

    async def spy(drill_id: int, *a: Any) -> str:
        spawned.append(drill_id)
        return await original(drill_id, *a)
    sup._run_worker = spy   # type: ignore[method-assign]
    (drill_id,) = await sup.tick()
    await asyncio.wait_for(asyncio.gather(*sup.tasks), 60)
    row = await drills.get(pool, drill_id)
    assert row is not None and row.state == "skipped" and row.stage == "budget"
    assert "budget is 1000 B" in (row.reason or "")
    assert spawned == []
    assert_clean(root)


# -- serve ----------------------------------------------------------------------------------------------

def _serve(dsn: str, s3_endpoint: Any, root: Path, port: int, **env: str) -> subprocess.Popen[bytes]:
    e = {**restore_environ(s3_endpoint), "CATALOG_DSN": dsn, "S3_ENDPOINT_URL": s3_endpoint.url,
         "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "OPERATOR_USERNAME": "op",
         "OPERATOR_PASSWORD": "op", "DRILL_SCRATCH_DIR": str(root), "RESTORE_TOOLS_PATH": str(REPO / ".tools/venv/bin"),
         "SCAN_INTERVAL_SECONDS": "86400", "DRILL_TICK_SECONDS": "1", "DRILL_LEASE_TTL_SECONDS": "6", **env}
    return subprocess.Popen([sys.executable, "-m", "backup_catalog.cli", "serve", "--port", str(port)], env=e,
                            # an unread pipe fills with serve's log lines and blocks it: a file that goes away
                            stdout=subprocess.DEVNULL, stderr=tempfile.TemporaryFile(), start_new_session=True)


async def test_sigterm_of_serve_stops_its_drill_cleanly_and_http_drills_run(
        fresh_catalog: tuple[str, asyncpg.Pool], real_archives: Any, s3_endpoint: Any) -> None:
    dsn, pool = fresh_catalog
    root = scratch_dir("drills-serve-")
    settings = drill_settings(s3_endpoint, dsn, root)
    guid = await _one_instance(pool, settings, real_archives["pgbackrest"])
    port = free_port()
    proc = _serve(dsn, s3_endpoint, root, port, DRILL_ENABLED="true")
    try:
        async def running() -> Any:
            rows = await drills.history(pool, guid, 1)
            d = scratch.drill_dir(root, rows[0].id) if rows else None
            return rows[0] if rows and rows[0].state == "running" and d and _postmaster_of(d) else None
        row = await _wait_for(running, 120, "a scheduled drill's server")
        postmaster = _postmaster_of(scratch.drill_dir(root, row.id))
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 90) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    done = await drills.get(pool, row.id)
    assert done is not None and done.state == "failed" and done.stage == "cancelled" and done.finished_at
    assert postmaster is not None and not _alive(postmaster)
    assert_clean(root)
    # a new replica (scheduled drills off): an operator's drill over HTTP runs, and passes
    proc = _serve(dsn, s3_endpoint, root, port, DRILL_ENABLED="false")
    try:
        await asyncio.to_thread(wait_port, port, 30)
        auth = {"Authorization": aiohttp.encode_basic_auth("op", "op")}
        async with aiohttp.ClientSession(headers=auth) as http:
            url = f"http://127.0.0.1:{port}/instances/{guid}/drills"
            async with http.post(url) as r:
                assert r.status == 202, await r.text()
                accepted = await r.json()
            async with http.post(url, json={"latest": True}) as r:
                assert r.status == 409                       # one drill per instance at a time
            async with http.post(f"http://127.0.0.1:{port}/instances/nope/drills") as r:
                assert r.status == 404

            async def finished() -> Any:
                async with http.get(url) as r:
                    assert r.status == 200
                    doc = await r.json()
                top = doc["drills"][0]
                return top if top["id"] == accepted["id"] and top["state"] not in ("queued", "running") else None
            top = await _wait_for(finished, 240, "the HTTP drill")
            assert top["state"] == "passed" and top["ok"] and top["trigger"] == "api", top
            assert [d["id"] for d in (await (await http.get(url)).json())["drills"]] == [accepted["id"], row.id]
            # exact targets over HTTP too: the worker gets the restore point, and its plan refuses it by name
            async with http.post(url, json={"restore-point": "before-the-storm", "latest": True}) as r:
                assert r.status == 400 and "at most one target" in await r.text()
            async def accepted_named() -> Any:     # the supervisor releases the lease just after the row ends
                async with http.post(url, json={"restore-point": "before-the-storm"}) as r:
                    if r.status == 409:
                        return None
                    assert r.status == 202, await r.text()
                    return await r.json()
            named = await _wait_for(accepted_named, 30, "the instance's drill lease to be released")

            async def named_finished() -> Any:
                async with http.get(url) as r:
                    top = (await r.json())["drills"][0]
                return top if top["id"] == named["id"] and top["state"] not in ("queued", "running") else None
            top = await _wait_for(named_finished, 120, "the restore-point drill")
            assert top["state"] == "failed" and top["target"]["kind"] == "name", top
            assert "before-the-storm" in (top["reason"] or ""), top
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 60)
    assert_clean(root)


def test_cli_drill_json_exit_codes(drilled: Drilled, catalog_dsn: str, s3_endpoint: Any) -> None:
    """``drill --json``: one document; skipped (budget) is exit 1, an unknown instance exit 2."""
    env = {**os.environ, "CATALOG_DSN": catalog_dsn, "S3_ENDPOINT_URL": s3_endpoint.url,
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "DRILL_SCRATCH_DIR": str(drilled.root), "DRILL_SCRATCH_BUDGET_BYTES": "1024"}
    cli = [sys.executable, "-m", "backup_catalog.cli", "drill", "--json"]
    p = subprocess.run([*cli, "--instance", drilled.guids["barman"]], env=env, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 1, p.stderr
    doc = json.loads(p.stdout)
    assert doc["ok"] is False and doc["state"] == "skipped" and doc["error"]["stage"] == "budget"
    assert doc["instance_guid"] == drilled.guids["barman"] and doc["target"]["kind"] == "latest"
    p = subprocess.run([*cli, "--instance", "no-such-instance"], env=env, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 2 and json.loads(p.stdout)["error"]["code"] == "unknown_instance"
    p = subprocess.run([*cli, "--instance", drilled.guids["barman"], "--point-in-time", "yesterday"], env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and json.loads(p.stdout)["error"]["code"] == "invalid_target"
    assert_clean(drilled.root)
