"""The CLI of the undo period and purge: delete answers undo_until, hold/unhold, `purge` (plan) as a table and
JSON. Only dry runs here: the shared session archives are never purged (tests/test_purge.py uses copies)."""
from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pytest

from tests.test_cli import env, one_json, run  # noqa: F401 (the env fixture)

pytestmark = pytest.mark.realtools


def test_delete_hold_unhold_and_the_dry_run(env: dict[str, str], real_archives: Any) -> None:  # noqa: F811
    arch = real_archives["barman"]
    add = ["instances", "add", "--instance", "g-p", "--space", "sp", "--name", "orders", "--bucket", arch.bucket,
           "--prefix", arch.prefix, "--layout", "barman", "--stanza", "main", "--json"]
    assert run(add, env).returncode == 0
    env["DELETED_RETENTION_DAYS"] = "2.5"
    doc = one_json(run(["instances", "delete", "g-p", "--json"], env))
    gone, until = datetime.fromisoformat(doc["deleted_at"]), datetime.fromisoformat(doc["undo_until"])
    assert doc["deleted"] is True and until - gone == timedelta(days=2.5)
    p = run(["purge"], env)
    assert p.returncode == 0 and "nothing is due" in p.stdout

    env.update(DELETED_RETENTION_DAYS="0", PURGE_GRACE_HOURS="0")
    doc = one_json(run(["purge", "plan", "--json"], env))
    (e,) = doc["instances"]
    listed = [k for k in arch.keys if k.startswith(f"{arch.prefix}/main/")]
    assert e["state"] == "due" and e["prefixes"] == [f"{arch.prefix}/main/"] and e["objects"] == len(listed)
    assert doc["dry_run"] is True and doc["objects_deleted"] == 0
    p = run(["purge"], env)
    assert p.returncode == 0 and "due" in p.stdout and f"s3://{arch.bucket}/{arch.prefix}/main/" in p.stdout

    held = one_json(run(["instances", "hold", "g-p", "--reason", "legal", "--json"], env))
    assert held["hold_at"] and held["hold_reason"] == "legal"
    (e,) = one_json(run(["purge", "--json"], env))["instances"]
    assert e["state"] == "refused" and "operator hold" in e["reason"] and "legal" in e["reason"]
    assert one_json(run(["instances", "unhold", "g-p", "--json"], env))["hold_at"] is None
    p = run(["instances", "hold", "nope", "--json"], env)
    assert p.returncode == 2 and json.loads(p.stdout)["error"]["code"] == "unknown_instance"
