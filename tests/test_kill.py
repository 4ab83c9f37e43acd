"""Issue 24: killed at any moment, nothing left behind.

- Drills and restores (the CLI, on the sandbox's real archives) are killed with SIGKILL in each stage in turn —
  fetch, recovery, verification, clean-up — at a seeded random delay after the stage began (the stage is read
  from the directory; the one each kill landed in is reported). Fetch kills run on the pgBackRest archive (its
  ``restore:local`` workers are what outlived a killed parent), the later stages on barman-cloud's (its fetch is
  one object: seconds). After each kill the reaper runs (drills: the one ``serve`` runs at start and on every
  tick): no process works in the scratch directory any more, no drill directory is left, every row is
  finished (and says what was cleaned); a killed restore leaves no process and a directory that is either gone
  or marked ``RESTORE_INCOMPLETE`` (or a complete, verified clone, when killed after it was made ready). Then
  the next drill passes, and ``restore --force-clean`` into a killed restore's directory restores. The two
  series run side by side; the whole test is bounded (``KILL_TEST_SECONDS``, default 180).
- ``serve`` killed with SIGKILL while a scheduled drill runs in its worker: on restart the drill's server is
  stopped, its directory gone, its row abandoned (with what was cleaned).

``KILL_TEST_SEED`` (default 24) and ``KILL_TEST_MOMENTS`` (default 11 kills per series: at least 10 must land
while the process still runs; a kill whose run ended first is tried once more at no delay) make a run
repeatable; the moments and stages are printed and written to ``$KILL_TEST_REPORT`` when set.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from backup_catalog.usecases import drill as uc
from backup_catalog.usecases import scratch
from catalog import drills
from executor import clone, reap
from sandbox.s3 import free_port
from sandbox.tool_barman import TOOLS_BIN
from scheduler.clients import s3_client
from tests.pg import private_catalog
from tests.support.fixtures import register_and_scan
from tests.support.restore import restore_environ, restore_settings, scratch_dir

pytestmark = pytest.mark.realtools
EXE = str(Path(sys.executable).with_name("backup-catalog"))
SEED = int(os.environ.get("KILL_TEST_SEED", "24"))
MOMENTS = int(os.environ.get("KILL_TEST_MOMENTS", "11"))
BOUND = float(os.environ.get("KILL_TEST_SECONDS", "180"))
# on a machine running more than twice its cores' worth (helpers sharing it), the bound doubles (and is reported)
LOAD = round(os.getloadavg()[0], 1)
OVERLOADED = 2 * (os.cpu_count() or 1) < LOAD
LEASE = 3


@pytest_asyncio.fixture(loop_scope="session")
async def own_catalog(catalog_dsn: str) -> AsyncIterator[tuple[str, asyncpg.Pool]]:
    """A catalog database of its own: the reaper and the scheduler see only this test's instances."""
    async with private_catalog(catalog_dsn, "bc_kill") as own:
        yield own


def cli_env(s3_endpoint: Any, dsn: str, root: Path, **kw: str) -> dict[str, str]:
    env = {**restore_environ(s3_endpoint), "CATALOG_DSN": dsn, "S3_ENDPOINT_URL": s3_endpoint.url,
           "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "RESTORE_TOOLS_PATH": str(TOOLS_BIN),
           "S3_MAX_ATTEMPTS": "2", "DRILL_SCRATCH_DIR": str(root), "DRILL_LEASE_TTL_SECONDS": str(LEASE),
           "RESTORE_RECOVERY_TIMEOUT_SECONDS": "120", "RESTORE_FETCH_TIMEOUT_SECONDS": "120",
           "DRILL_VERIFY_CHECKSUMS": "false"}
    env.update(kw)
    return env


def stage_of(pgdata: Path, work: Path | None) -> str:
    """Where a restore (or a drill's restore) is, read from its directory."""
    if not pgdata.exists():
        return "start-up/plan"
    if (pgdata / clone.FETCH_DIR).exists():
        return "fetch"
    if not (pgdata / clone.MARKER).exists():
        return "clean-up"
    if (pgdata / "postmaster.pid").exists():
        log = ""
        for p in ([work / "postgres.log"] if work else []) + list(pgdata.parent.glob("*/postgres.log")):
            with contextlib.suppress(OSError):
                log += p.read_text(errors="replace")
        return "verification" if "database system is ready to accept connections" in log else "recovery"
    return "prepare/shutdown"


def postgres_of(path: Path) -> list[str]:
    """Processes whose command line names ``path`` or a path below it."""
    r = subprocess.run(["pgrep", "-af", str(path)], capture_output=True, text=True, check=False)
    return [ln for ln in r.stdout.splitlines() if "pgrep" not in ln
            and re.search(re.escape(str(path)) + r"(/|\s|$)", ln)]


def assert_nothing_runs_in(path: Path) -> None:
    """No process works in ``path`` (one SIGKILLed a moment ago may take up to a second to be gone)."""
    deadline = time.monotonic() + 2
    while (reap.processes_in(path) or postgres_of(path)) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = {pid: Path(f"/proc/{pid}/cmdline").read_bytes()[:200] for pid in reap.processes_in(path)
            if Path(f"/proc/{pid}/cmdline").exists()}
    assert not left, f"processes left working in {path}: {left}"
    assert postgres_of(path) == [], f"processes naming {path}: {postgres_of(path)}"


async def wait_until(pred: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if pred():
            return True
        await asyncio.sleep(0.02)
    return False


TARGETS = ("fetch", "recovery", "verification", "clean-up")


def plan_moments(rng: random.Random) -> list[tuple[str, float]]:
    """``MOMENTS`` kills: the stages in turn, each at a seeded delay (0-0.4 s) after the stage is first seen."""
    return [(TARGETS[i % len(TARGETS)], round(rng.uniform(0, 0.4), 3)) for i in range(MOMENTS)]


def with_retries(rng: random.Random, targets: list[str], outcomes: dict[str, str]) -> Iterator[tuple[str, float]]:
    """Each target at a seeded delay (0-0.4 s); a run that ended before its kill landed (a short stage on a
    busy machine) is tried once more at no delay, so that the kills still reach their count."""
    for target in targets:
        yield target, round(rng.uniform(0, 0.4), 3)
        if outcomes.get(target) == "finished":
            yield target, 0.0


async def kill_in_stage(argv: list[str], env: dict[str, str], where: Any, target: str, delay: float) -> str:
    """Run; once ``where()`` reports ``target`` (clean-up: anything after the server stopped), wait ``delay``
    and SIGKILL. Returns the stage it was in when killed (``finished``: it ended first)."""
    proc = await asyncio.create_subprocess_exec(EXE, *argv, env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    seen_server = False

    def reached() -> bool:
        nonlocal seen_server
        st = where()
        seen_server = seen_server or st in ("recovery", "verification")
        if target == "clean-up":
            return seen_server and st in ("prepare/shutdown", "clean-up", "start-up/plan")
        return st == target
    try:
        while proc.returncode is None and not reached():
            await asyncio.sleep(0.01)
        await wait_until(lambda: proc.returncode is not None, delay)
        if proc.returncode is not None:
            return "finished"
        stage = where()
        proc.kill()
        if seen_server:
            stage = {"prepare/shutdown": "shutdown", "start-up/plan": "clean-up"}.get(stage, stage)
        return stage
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.communicate()


async def test_drills_and_restores_killed_at_random_moments_leave_nothing(
        own_catalog: tuple[str, asyncpg.Pool], real_archives: Any, s3_endpoint: Any) -> None:
    dsn, pool = own_catalog
    t_start = time.monotonic()
    root = scratch_dir("kill-drills-")
    rroot = scratch_dir("kill-restores-")
    settings = restore_settings(s3_endpoint, dsn, drill_scratch_dir=str(root), drill_lease_ttl_seconds=LEASE)
    guid, space = f"kill-{uuid.uuid4().hex[:8]}", f"kill-{uuid.uuid4().hex[:8]}"
    async with s3_client(settings) as client:
        await register_and_scan(pool, client, settings, real_archives["pgbackrest"], guid, space=space, name="prod")
        await register_and_scan(pool, client, settings, real_archives["barman"], f"{guid}-b", space=space,
                                name="barman")
        await register_and_scan(pool, client, settings, real_archives["barman"], f"{guid}-c", space=space,
                                name="barman-2")
    env = cli_env(s3_endpoint, dsn, root)
    report: dict[str, Any] = {"seed": SEED, "drills": [], "restores": []}

    async def drill_lane(lane: str, lane_guid: str, targets: list[str]) -> None:
        """Kills of one instance's drills, in a scratch directory of the lane's own (lanes run side by side)."""
        rng = random.Random(f"{SEED}-{lane}")
        lroot = root / lane
        lroot.mkdir(mode=0o755)
        lenv = {**env, "DRILL_SCRATCH_DIR": str(lroot)}
        lsettings = settings.model_copy(update={"drill_scratch_dir": str(lroot)})
        argv = ["drill", "--instance", lane_guid, "--json"]

        def where() -> str:
            dirs = scratch.drill_dirs(lroot)
            if not dirs:
                return "start-up/plan"
            d = max(dirs.values())
            works = list(d.glob("backup-catalog-restore-*"))
            if (d / "pgdata").exists():
                return stage_of(d / "pgdata", works[0] if works else None)
            return "start-up/plan"      # before its restore began, or (once its server ran) its clean-up
        outcomes: dict[str, str] = {}
        for target, delay in with_retries(rng, targets, outcomes):
            stage = await kill_in_stage(argv, lenv, where, target, delay)
            outcomes[target] = stage
            # the reaper (serve runs it at start and on every tick) until the row is finished: lease + a tick
            deadline = time.monotonic() + LEASE + 10
            while True:
                await uc.reap(pool, lsettings, lane_guid)
                await uc.sweep_scratch(pool, lsettings)
                active = await pool.fetchval("SELECT count(*) FROM drills WHERE state IN ('queued', 'running') "
                                             "AND instance_guid = $1", lane_guid)
                if active == 0 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.3)
            assert active == 0, "a killed drill's row is still active after the reaper ran"
            assert scratch.drill_dirs(lroot) == {}, f"drill directories left: {scratch.drill_dirs(lroot)}"
            assert_nothing_runs_in(lroot)
            top = (await drills.history(pool, lane_guid, 1))[0]
            if stage != "finished" and top.stage == "abandoned":
                assert top.cleanup, "the row says what was cleaned"
            report["drills"].append({"lane": lane, "target": target, "delay_s": delay, "stage": stage,
                                     "row": top.state, "row_stage": top.stage, "cleanup": top.cleanup})
        if lane == "barman":     # the next drill passes
            proc = await asyncio.create_subprocess_exec(EXE, *argv, env=lenv, stdout=asyncio.subprocess.PIPE,
                                                        stderr=asyncio.subprocess.PIPE)
            out, err = await asyncio.wait_for(proc.communicate(), 120)
            assert proc.returncode == 0 and json.loads(out)["ok"], (out.decode(), err.decode()[-2000:])
            assert scratch.drill_dirs(lroot) == {}

    async def drill_series() -> None:
        per = [TARGETS[i % len(TARGETS)] for i in range(MOMENTS)]
        # pgBackRest: the fetch kills (its workers); barman-cloud (a quick fetch), two instances side by side:
        # the later stages, and the next drill that passes
        rest = [t for t in per if t != "fetch"]
        await asyncio.gather(drill_lane("pgbackrest", guid, [t for t in per if t == "fetch"]),
                             drill_lane("barman", f"{guid}-b", rest[0::2]),
                             drill_lane("barman-2", f"{guid}-c", rest[1::2]))

    async def restore_lane(lane: int, targets: list[str], marked: list[Path]) -> None:
        rng = random.Random(f"{SEED}-restore-{lane}")
        renv = cli_env(s3_endpoint, dsn, rroot)
        outcomes: dict[str, str] = {}
        for i, (target, delay) in enumerate(with_retries(rng, targets, outcomes)):
            p = rroot / f"killed-{lane}-{i}"
            stage = await kill_in_stage(restore_argv(p, name="prod" if target == "fetch" else "barman"), renv,
                                        lambda p=p: stage_of(p, p / ".restore-work"), target, delay)
            outcomes[target] = stage
            assert_nothing_runs_in(p)
            if p.exists():
                if (p / clone.MARKER).exists():
                    marked.append(p)
                    assert "NOT A DATABASE" in (p / clone.MARKER).read_text()
                else:     # killed after it was made ready: a complete, verified clone
                    assert clone.READY_HEAD in (p / "postgresql.auto.conf").read_text(), stage
            report["restores"].append({"target": target, "delay_s": delay, "stage": stage, "left": (
                "nothing" if not p.exists() else "marked" if p in marked else "ready clone")})

    def restore_argv(p: Path, *more: str, name: str = "barman") -> list[str]:
        return ["restore", "--space", space, "--clone-from", name, "--immediate", "--pgdata", str(p),
                "--port", str(free_port()), "--socket-dir", "/tmp", "--json", *more]

    async def restore_series() -> None:
        per = [TARGETS[i % len(TARGETS)] for i in range(MOMENTS)]
        marked: list[Path] = []
        await asyncio.gather(restore_lane(0, per[0::2], marked), restore_lane(1, per[1::2], marked))
        assert marked, "no kill left a marked directory"
        # the next restore into a killed restore's directory, with --force-clean
        proc = await asyncio.create_subprocess_exec(EXE, *restore_argv(marked[0], "--force-clean"),
                                                    env=cli_env(s3_endpoint, dsn, rroot),
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 0, (out.decode()[-2000:], err.decode()[-2000:])
        assert not (marked[0] / clone.MARKER).exists()

    try:
        await asyncio.wait_for(asyncio.gather(drill_series(), restore_series()), BOUND * (2 if OVERLOADED else 1))
    finally:
        took = time.monotonic() - t_start
        report["seconds"] = round(took, 1)
        report["load_average_at_start"] = LOAD
        for kind in ("drills", "restores"):
            report[f"{kind}_stages"] = dict(Counter(r["stage"] for r in report[kind]))
        print("kill test:", json.dumps(report, indent=1))
        if os.environ.get("KILL_TEST_REPORT"):
            Path(os.environ["KILL_TEST_REPORT"]).write_text(json.dumps(report, indent=1))
        for r in (root, rroot):
            reap.kill_in(r, grace=1.0)
            shutil.rmtree(r, ignore_errors=True)
    for kind in ("drills", "restores"):
        kills = [r for r in report[kind] if r["stage"] != "finished"]
        assert len(kills) >= 10, f"{kind}: only {len(kills)} kills landed while running"
        stages = {r["stage"] for r in kills}
        # verification is short (a query or two): a kill aimed at it may land in the shutdown after it
        assert {"fetch", "recovery"} <= stages and len(stages) >= 3, f"{kind}: the kills missed stages: {stages}"
    assert took < BOUND * (2 if OVERLOADED else 1), f"{took:.0f} s (load average {LOAD})"


async def test_serve_killed_during_a_scheduled_drill_is_reaped_on_restart(
        own_catalog: tuple[str, asyncpg.Pool], real_archives: Any, s3_endpoint: Any) -> None:
    dsn, pool = own_catalog
    root = scratch_dir("kill-serve-")
    settings = restore_settings(s3_endpoint, dsn, drill_scratch_dir=str(root))
    guid = f"kill-serve-{uuid.uuid4().hex[:8]}"
    async with s3_client(settings) as client:
        await register_and_scan(pool, client, settings, real_archives["pgbackrest"], guid, space="ks", name="prod")
    env = {**cli_env(s3_endpoint, dsn, root), "OPERATOR_USERNAME": "op", "OPERATOR_PASSWORD": "op",
           "SCAN_INTERVAL_SECONDS": "86400", "DRILL_TICK_SECONDS": "1", "DRILL_ENABLED": "true"}

    def serve(**more: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen([EXE, "serve", "--port", str(free_port())], env={**env, **more},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    proc = serve()
    row: Any = None
    try:
        deadline = time.monotonic() + 240     # a loaded machine: serve, its tick, a worker, a fetch
        while time.monotonic() < deadline:
            rows = await drills.history(pool, guid, 1)
            if rows and rows[0].state == "running" and rows[0].server_pid:
                row = rows[0]
                break
            await asyncio.sleep(0.1)
        assert row is not None, "no scheduled drill started its server"
        d = scratch.drill_dir(root, row.id)
        # the row names its running server (recorded at its start: it may not have entered its directory yet)
        assert await wait_until(lambda: reap.is_server_of(row.server_pid, row.server_pgdata), 10)
        proc.kill()     # serve alone (SIGKILL), not its process group
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # restart (scheduled drills off: the reaper runs anyway, at start and every tick)
    proc = serve(DRILL_ENABLED="false")
    try:
        deadline = time.monotonic() + LEASE + 60
        done = None
        while time.monotonic() < deadline:
            done = await drills.get(pool, row.id)
            # the reaper finishes the row, removes the directory, then records what it cleaned: wait for all three
            if done is not None and done.state not in drills.ACTIVE and not d.exists() and done.cleanup:
                break
            await asyncio.sleep(0.2)
        assert done is not None and done.state == "failed" and done.stage == "abandoned", done
        assert done.cleanup and f"removed {d}" in done.cleanup, done.cleanup
        assert not d.exists()
        assert not reap.alive(row.server_pid) or not reap.is_server_of(row.server_pid, row.server_pgdata)
        assert_nothing_runs_in(root)
    finally:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(30)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(root, ignore_errors=True)

