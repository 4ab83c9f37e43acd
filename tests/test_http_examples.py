"""The HTTP guide's curl examples run as written (issue 23 item 5): every ``$ curl`` command of the block marked
``<!-- http-examples -->`` (in the README or docs/), against a real ``serve`` on the fixture archives, answers
the status the block shows (``-> NNN``; a printed JSON document means 200). Only the port is the test's own."""
from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from sandbox.s3 import MotoEndpoint, free_port
from tests.support.serve import serving, stop
from tests.support.tools import missing

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.realtools


def examples() -> list[tuple[str, int]]:
    """(command, expected status) for each ``$ curl`` of the marked block."""
    for f in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        m = re.search(r"<!-- http-examples -->\n```[a-z]*\n(.*?)```", f.read_text(encoding="utf-8"), re.DOTALL)
        if m:
            break
    else:
        pytest.fail("no <!-- http-examples --> block in README.md or docs/*.md")
    lines = m.group(1).splitlines()
    out: list[tuple[str, int]] = []
    i = 0
    while i < len(lines):
        if not lines[i].startswith("$ curl "):
            i += 1
            continue
        cmd = lines[i][2:]
        while cmd.count("'") % 2 or cmd.endswith("\\"):
            i += 1
            cmd = cmd + "\n" + lines[i]     # a backslash-newline is bash's own continuation
        i += 1
        status = re.match(r"-> (\d{3})", lines[i]) if i < len(lines) else None
        out.append((cmd, int(status.group(1)) if status else 200))
    return out


@pytest.mark.timeout(300)
async def test_every_curl_example_answers_what_the_guide_shows(catalog_dsn: str, pool: asyncpg.Pool,
                                                               s3_endpoint: MotoEndpoint, real_archives: Any) -> None:
    if shutil.which("curl") is None:
        missing("curl is absent")
    cases = examples()
    assert len(cases) >= 8 and any(s == 422 for _, s in cases) and any(s == 400 for _, s in cases)
    port = free_port()
    env = {**os.environ, "CATALOG_DSN": catalog_dsn, "S3_ENDPOINT_URL": s3_endpoint.url,
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "SCAN_INTERVAL_SECONDS": "3600",
           "DRILL_ENABLED": "false"}
    for k in ("BROKER_USERNAME", "BROKER_PASSWORD", "OPERATOR_USERNAME", "OPERATOR_PASSWORD", "CF_API_URL"):
        env.pop(k, None)
    async with serving(env, port) as proc:
        for cmd, want in cases:
            run = cmd.replace("localhost:8080", f"localhost:{port}") + " -sS -w '\\n%{http_code}'"
            p = await asyncio.to_thread(subprocess.run, ["bash", "-c", run], capture_output=True, text=True,
                                        timeout=120)
            body, _, code = p.stdout.rpartition("\n")
            assert p.returncode == 0 and code.isdigit(), (cmd, p.stdout, p.stderr)
            assert int(code) == want, f"{cmd}\n-> {code}, the guide shows {want}: {body[:1500]}"
            if want >= 400:
                assert '"type"' in body and f'"status": {want}' in body, body[:500]
        await stop(proc)
