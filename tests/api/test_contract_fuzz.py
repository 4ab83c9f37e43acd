"""RELIABILITY.md scenario 14: schemathesis against /openapi.json of a running server with a seeded
catalog, bounded in time: no server errors, no schema violations, negative data rejected, auth enforced,
and every 4xx/5xx an application/problem+json document (the ``errors_are_problem_json`` check of
tests/api/st_hooks.py)."""
from __future__ import annotations

import asyncio
import os
import shutil
import sys
from pathlib import Path

import asyncpg
import pytest
from aiohttp import web

from backup_catalog.service.app import create_app
from sandbox.s3 import MotoEndpoint, free_port
from tests.api.conftest import OPERATOR, make_settings
from tests.api.seed import seed_history
from tests.support.ccdouble import CloudControllerDouble
from tests.support.tools import missing

ST = Path(sys.executable).with_name("st")
ROOT = Path(__file__).resolve().parents[2]
# One worker: with two, hypothesis' lambda descriptions call ast.parse from two threads at once, which on
# this CPython 3.11 fails now and then with "SystemError: AST constructor recursion depth mismatch"
# (CPython gh-106905, a threaded-AST bug) and aborts the run (seen about one run in four).

# 422 is this API's answer to a well-formed clone request that cannot be planned (DESIGN.md refusal),
# e.g. two targets at once or a time outside every window: accepted for schema-valid data.
CONFIG = """
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "401", "403", "404", "409", "422"]
"""


@pytest.mark.timeout(300)
@pytest.mark.parametrize("auth", ["basic", "bearer"])
async def test_schemathesis_finds_no_server_errors_or_schema_violations(pool: asyncpg.Pool,
                                                                         s3_endpoint: MotoEndpoint,
                                                                         tmp_path: Path, auth: str) -> None:
    """With the operator's basic credentials, and with an end user's UAA token (an admin, in a Cloud
    Controller double where every space exists, so that the fuzz reaches the handlers behind the CC)."""
    if not ST.exists() and shutil.which("st") is None:
        missing("schemathesis (its `st` command) is not installed: pip install -e '.[test]'")
    await seed_history(pool)
    async with CloudControllerDouble(any_space=True) as cc:
        cc.user("u-admin", "admin", admin=True)
        credentials = (["--auth", f"{OPERATOR[0]}:{OPERATOR[1]}"] if auth == "basic" else
                       ["--header", f"Authorization: Bearer {cc.token_for('u-admin', lifetime=3600)}"])
        await _fuzz(pool, s3_endpoint, tmp_path, cc, credentials)
        assert not cc.unexpected, cc.unexpected


async def _fuzz(pool: asyncpg.Pool, s3_endpoint: MotoEndpoint, tmp_path: Path, cc: CloudControllerDouble,
                credentials: list[str]) -> None:
    app = create_app(make_settings(s3_endpoint_url=s3_endpoint.url, scan_deadline_seconds=5, cf_api_url=cc.url),
                     pool=pool, start_scheduler=False)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    marker = tmp_path / "hooks-loaded"
    problems = tmp_path / "problems-seen"
    cfg = tmp_path / "schemathesis.toml"
    cfg.write_text(CONFIG)
    try:
        proc = await asyncio.create_subprocess_exec(
            str(ST if ST.exists() else shutil.which("st")), "--config-file", str(cfg), "run",
            f"http://127.0.0.1:{port}/openapi.json", "--checks", "all", "--max-examples", "30",
            "--max-time", "90", "--request-timeout", "10", "--seed", "1", "--workers", "1",
            *credentials, "--no-color",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "SCHEMATHESIS_HOOKS": "tests.api.st_hooks", "BC_ST_HOOKS_MARKER": str(marker),
                 "BC_ST_PROBLEMS_SEEN": str(problems),
                 "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))},
            cwd=tmp_path)
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=240)
    finally:
        await runner.cleanup()
    text = out.decode(errors="replace")
    (tmp_path / "st-output.txt").write_text(text)
    if os.environ.get("ST_OUTPUT"):
        Path(os.environ["ST_OUTPUT"]).write_text(text)
    assert marker.exists(), "tests/api/st_hooks.py was not loaded"
    assert proc.returncode == 0, text[-6000:]
    assert "No operations" not in text and "passed" in text.lower(), text[-3000:]
    # the problem+json check ran on real error responses (negative data, auth), and all of them passed
    seen = problems.read_text().split("\n") if problems.exists() else []
    statuses = {line.split()[0] for line in seen if line}
    # (a time-boxed fuzz on a loaded machine may meet the validation refusals as 422 rather than 400)
    assert "401" in statuses and statuses & {"400", "422"}, statuses
    assert not [line for line in seen if line.endswith("bad")], seen
