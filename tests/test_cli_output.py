"""Output for pipes and copy-paste (issue 23 item 7): piped tables are never cut to 80 columns, GUIDs,
labels and segment names are printed whole, ``--plain`` is tab-separated; on a narrow terminal nothing
that a later command needs (a GUID) is cut either."""
from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest

from tests.test_cli import one_json, run

pytestmark = pytest.mark.realtools

GUID = "699eafc1-3c5e-4b99-9a0e-6f1d2c3b4a59"
SPACE = "5d1f0c2a-8b7e-4f3a-9c6d-1e2f3a4b5c6d"
NAME = "a-rather-long-production-database-name"


@pytest.fixture
def env(catalog_dsn: str, s3_endpoint: Any, pool: Any, real_archives: Any) -> dict[str, str]:
    e = dict(os.environ)
    e.update(CATALOG_DSN=catalog_dsn, S3_ENDPOINT_URL=s3_endpoint.url, AWS_ACCESS_KEY_ID="x",
             AWS_SECRET_ACCESS_KEY="x", S3_MAX_ATTEMPTS="2")
    e.pop("COLUMNS", None)
    arch = real_archives["pgbackrest"]
    assert run(["db", "init"], e).returncode == 0
    p = run(["instances", "add", "--instance", GUID, "--space", SPACE, "--name", NAME, "--bucket", arch.bucket,
             "--prefix", arch.prefix + "/", "--json"], e)
    assert p.returncode == 0, p.stdout + p.stderr
    p = run(["scan", "--json"], e)
    assert p.returncode == 0 and one_json(p)["scans"][0]["ok"], p.stdout + p.stderr
    return e


def test_piped_tables_keep_every_value_whole(env: dict[str, str]) -> None:
    p = run(["instances", "list"], env)        # stdout is a pipe here
    assert p.returncode == 0, p.stderr
    assert GUID in p.stdout and SPACE in p.stdout and NAME in p.stdout, p.stdout
    assert "…" not in p.stdout
    p = run(["backups", "--space", SPACE, "--name", NAME], env)
    assert p.returncode == 0, p.stderr
    labels = [b["label"] for b in one_json(run(["backups", "--space", SPACE, "--name", NAME, "--json"], env))
              ["instances"][0]["backups"]]
    assert labels and all(lb in p.stdout for lb in labels), p.stdout
    assert "…" not in p.stdout
    p = run(["report", "coverage"], env)
    assert p.returncode == 0, p.stderr
    row = next(ln for ln in p.stdout.splitlines() if NAME in ln)
    assert GUID in row, p.stdout               # the name on one line, with its whole GUID beside it


def test_plain_is_tab_separated_with_a_header(env: dict[str, str]) -> None:
    p = run(["instances", "list", "--plain"], env)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].split("\t") == ["instance", "space", "name", "layout", "bucket/prefix", "deleted"]
    assert lines[1].split("\t")[:3] == [GUID, SPACE, NAME]
    p = run(["report", "coverage", "--plain"], env)
    rows = [ln.split("\t") for ln in p.stdout.splitlines() if "\t" in ln]
    header = rows[0]
    assert header[:3] == ["status", "name", "instance"], header
    mine = next(r for r in rows[1:] if r[1] == NAME)
    assert mine[header.index("instance")] == GUID and len(mine) == len(header)


def test_a_narrow_terminal_never_cuts_a_guid(env: dict[str, str]) -> None:
    # a real terminal (script(1) gives the command a pty) of 100 columns: the coverage table folds text
    # columns but the GUID, which `drill --instance` needs, is printed whole
    cmd = f"stty cols 100; {sys.executable} -m backup_catalog.cli instances list"
    p = subprocess.run(["script", "-qec", cmd, "/dev/null"], env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert GUID in p.stdout, p.stdout
