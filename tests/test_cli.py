"""The CLI contract: exit codes, one JSON document with --json, clear errors for bad input."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from recovery.lsn import Lsn
from recovery.target import parse_time
from recovery.timefmt import iso

pytestmark = pytest.mark.realtools


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "backup_catalog.cli", *args], env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture
def env(catalog_dsn: str, s3_endpoint: Any, pool: Any) -> dict[str, str]:
    """Environment for the CLI on the test catalog (``pool`` empties it first)."""
    e = dict(os.environ)
    e.update(CATALOG_DSN=catalog_dsn, S3_ENDPOINT_URL=s3_endpoint.url, AWS_ACCESS_KEY_ID="x",
             AWS_SECRET_ACCESS_KEY="x", S3_MAX_ATTEMPTS="2")
    return e


def one_json(p: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    doc = json.loads(p.stdout)          # exactly one document: json.loads rejects trailing data
    assert isinstance(doc, dict)
    return doc


def test_wrong_dsn_is_a_clear_error(env: dict[str, str]) -> None:
    env["CATALOG_DSN"] = "postgresql://nobody:sekrit@127.0.0.1:1/nodb"
    p = run(["instances", "list", "--json"], env)
    assert p.returncode == 1
    err = one_json(p)["error"]
    assert "catalog database unavailable" in err["message"] and "127.0.0.1" in err["message"]
    assert "sekrit" not in p.stdout + p.stderr
    assert "Traceback" not in p.stderr


def test_full_flow_and_bad_input(env: dict[str, str], real_archives: Any) -> None:
    arch = real_archives["barman"]
    space = "sp-cli"
    assert run(["db", "init"], env).returncode == 0
    p = run(["instances", "add", "--instance", "g-cli", "--space", space, "--name", "production", "--bucket",
             arch.bucket, "--prefix", arch.prefix + "/", "--json"], env)
    assert p.returncode == 0, p.stderr
    assert one_json(p) == {"instance_guid": "g-cli", "created": True}
    p = run(["scan", "--json"], env)
    assert p.returncode == 0, p.stdout + p.stderr
    scans = one_json(p)["scans"]
    assert [s["instance_guid"] for s in scans if s["ok"]] == ["g-cli"]

    p = run(["backups", "--space", space, "--name", "production", "--json"], env)
    assert p.returncode == 0
    doc = one_json(p)
    assert doc["name"] == "production" and len(doc["instances"][0]["backups"]) == 3
    assert doc["instances"][0]["layout"] == "barman"

    # plan: success, then each kind of bad input
    t2 = sorted((c for c in arch.commits if c["tl"] == 2), key=lambda c: c["id"])
    p = run(["plan", "--space", space, "--clone-from", "production", "--point-in-time", t2[0]["commit_time"],
             "--json"], env)
    assert p.returncode == 0, p.stdout + p.stderr
    plan = one_json(p)
    assert plan["source"]["instance_guid"] == "g-cli" and plan["timeline_path"] == [1, 2]
    assert "barman-cloud-wal-restore" in plan["restore_command"] and "recovery.signal" in plan["files"]
    assert plan["storage"] == {"layout": "barman", "bucket": arch.bucket, "prefix": arch.prefix, "stanza": "main"}
    assert plan["pg_version"] == 15 and plan["replay"]["mode"] == "target"
    # latest: replay must reach the last commit record (16 < it < the insert position after 17)
    p = run(["plan", "--space", space, "--clone-from", "production", "--latest", "--json"], env)
    replay = one_json(p)["replay"]
    lsn = {c["id"]: Lsn.parse(c["commit_lsn"]) for c in t2}
    assert replay["mode"] == "end_of_wal" and lsn[16] <= Lsn.parse(replay["end_lsn"]) < lsn[17], replay
    assert replay["last_commit_time"] == iso(parse_time(t2[-1]["commit_time"]))
    p = run(["plan", "--space", space, "--clone-from", "production", "--latest"], env)
    assert f"replay to the end of WAL, at least {replay['end_lsn']}" in p.stdout, p.stdout
    assert f"archive barman s3://{arch.bucket}/{arch.prefix} main, PostgreSQL 15" in p.stdout, p.stdout

    cases = [
        (["--point-in-time", "2016-09-28T10:00Z"], 3, "target_before_window"),
        (["--point-in-time", "2016-09-28T10:00"], 2, "invalid_target"),          # no zone: ambiguous
        (["--point-in-time", "yesterday"], 2, "invalid_target"),
        (["--lsn", "16/ZZ"], 2, "invalid_target"),
        (["--point-in-time", "2999-01-01T00:00Z"], 3, "target_after_window"),
    ]
    for extra, code, err in cases:
        p = run(["plan", "--space", space, "--clone-from", "production", *extra, "--json"], env)
        assert (p.returncode, one_json(p)["error"]["code"]) == (code, err), (extra, p.stdout, p.stderr)
        assert "Traceback" not in p.stderr

    p = run(["plan", "--space", "other-space", "--clone-from", "production", "--latest", "--json"], env)
    assert p.returncode == 2 and one_json(p)["error"]["code"] == "unknown_service"
    p = run(["instances", "rename", "no-such-guid", "x", "--json"], env)
    assert p.returncode == 2 and one_json(p)["error"]["code"] == "unknown_instance"
    p = run(["scan", "--instance", "no-such-guid", "--json"], env)
    assert p.returncode == 2 and one_json(p)["error"]["code"] == "unknown_instance"
    p = run(["plan", "--space", space, "--clone-from", "production", "--json"], env)   # no target: usage
    assert p.returncode == 2 and one_json(p)["error"]["code"] == "usage"

    # an unreachable endpoint: per-instance error, non-zero exit, catalog kept
    bad = dict(env, S3_ENDPOINT_URL="http://127.0.0.1:9", S3_MAX_ATTEMPTS="1", S3_CONNECT_TIMEOUT_SECONDS="1")
    p = run(["scan", "--full", "--json"], bad)
    assert p.returncode == 1
    scan = one_json(p)["scans"][0]
    assert scan["ok"] is False and scan["code"] == "storage_unavailable"
    p = run(["backups", "--space", space, "--name", "production", "--json"], env)
    inst = one_json(p)["instances"][0]
    assert len(inst["backups"]) == 3 and inst["scan"]["stale_since"] is not None
