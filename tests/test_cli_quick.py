"""The terminal-speed commands `backups` and `plan`: same documents, only the imports they use (the settings
model, but no rich for --json, no S3 client, no HTTP stack, no scheduler, no WAL record
decoder), the schema applied only when it changed.
(Timings are in `make bench`, beside `pgbackrest info`.)"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg

from catalog import migrate
from tests.api.seed import SPACE, seed_history

HEAVY = ("rich", "aiohttp", "botocore", "aioboto3", "apscheduler", "moto", "crc32c")

PROBE = """
import json, sys
from backup_catalog.cli.main import main
rc = main(sys.argv[1:])
sys.stdout.flush()
heavy = sorted({m.split('.')[0] for m in sys.modules} & set(HEAVY))
print(json.dumps({"rc": rc, "heavy": heavy}), file=sys.stderr)
""".replace("HEAVY", repr(HEAVY))


def run(env: dict[str, str], *args: str) -> tuple[dict[str, Any], dict[str, Any]]:
    p = subprocess.run([sys.executable, "-c", PROBE, *args], env=env, capture_output=True, text=True, timeout=120,
                       check=False)
    probe = json.loads(p.stderr.strip().splitlines()[-1])
    return json.loads(p.stdout), probe


def base_env(**kw: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(("CATALOG_DSN", "S3_ENDPOINT"))}
    env.update(S3_ENDPOINT_URL="http://127.0.0.1:9000", **kw)
    return env


async def test_backups_and_plan_json_import_only_what_they_use(pool: asyncpg.Pool, catalog_dsn: str,
                                                               tmp_path: Path) -> None:
    await seed_history(pool)
    dsn_file = tmp_path / "dsn"
    dsn_file.write_text(catalog_dsn + "\n")
    for env in (base_env(CATALOG_DSN=catalog_dsn), base_env(CATALOG_DSN_FILE=str(dsn_file))):
        doc, probe = run(env, "backups", "--space", SPACE, "--name", "legacy", "--json")
        assert probe == {"rc": 0, "heavy": []}, probe
        assert doc["name"] == "legacy" and doc["instances"][0]["backups"][0]["label"] == "F1"
        doc, probe = run(env, "plan", "--space", SPACE, "--clone-from", "legacy", "--latest", "--json")
        assert probe == {"rc": 0, "heavy": []}, probe
        assert doc["backup"]["label"] == "F1" and "archive-get" in doc["restore_command"]
    # refusals and bad input keep the CLI contract on this path too
    doc, probe = run(base_env(CATALOG_DSN=catalog_dsn), "plan", "--space", SPACE, "--clone-from", "legacy",
                     "--point-in-time", "yesterday-ish", "--json")
    assert probe["rc"] == 2 and doc["error"]["code"] == "invalid_target" and "yesterday-ish" in doc["error"]["message"]
    doc, probe = run(base_env(CATALOG_DSN=catalog_dsn), "plan", "--space", SPACE, "--clone-from", "legacy",
                     "--point-in-time", "2001-01-01T00:00Z", "--json")
    assert probe["rc"] == 3 and doc["error"]["windows"], doc
    doc, probe = run(base_env(CATALOG_DSN_FILE=str(tmp_path / "missing")), "backups", "--space", SPACE,
                     "--name", "legacy", "--json")
    assert probe["rc"] == 2 and doc["error"]["code"] == "bad_settings" and "CATALOG_DSN_FILE" in doc["error"]["message"]


def table_output(dsn: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "backup_catalog.cli", "backups", "--space", SPACE, "--name", "legacy"],
                          env=base_env(CATALOG_DSN=dsn), capture_output=True, text=True, timeout=120, check=False)


async def test_the_table_output_still_renders(pool: asyncpg.Pool, catalog_dsn: str) -> None:
    await seed_history(pool)
    p = table_output(catalog_dsn)
    assert p.returncode == 0 and "F1" in p.stdout and "recoverable on timeline path" in p.stdout, p.stdout + p.stderr


async def test_schema_is_upgraded_only_when_a_migration_is_pending(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await migrate.init_schema(conn)
        assert await migrate.ensure_schema(conn) is False            # current: one query, no DDL
        await conn.execute("DELETE FROM schema_version WHERE version = 2")   # as if 0002 were new
        assert await migrate.ensure_schema(conn) is True             # pending: applied
        assert 2 in {r[0] for r in await conn.fetch("SELECT version FROM schema_version")}
        assert await migrate.ensure_schema(conn) is False
