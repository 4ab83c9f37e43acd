"""``changes`` on real archives (issue 20 "Must show"): the mistakes scenario (sandbox/mistakes.py) written
by pgBackRest and barman-cloud from PostgreSQL 15, scanned, drilled at a time before the drop (the drill's
relation maps name the tables), then asked what happened around the mistakes.

A pgbench load inserts into ``ledger`` on 4 connections throughout, so several commits share the drop's
millisecond: ``changes`` still lists the drop first, with its xid, and names public.orders.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from backup_catalog.service.app import create_app
from backup_catalog.settings import Settings
from backup_catalog.usecases import drill as drill_uc
from backup_catalog.usecases.changes import BadRange, changes
from backup_catalog.usecases.drill_rules import DrillPoint
from recovery.changes import RangeTooLarge
from sandbox.mistakes import MistakesArchive, load_mistakes
from scheduler.clients import s3_client
from tests.api.conftest import AS_BROKER
from tests.support.fixtures import register_and_scan
from tests.support.restore import restore_environ, restore_settings, scratch_dir

pytestmark = pytest.mark.realtools
TOOLS = ("pgbackrest", "barman")


@dataclass(frozen=True, slots=True)
class Scenario:
    settings: Settings
    space: str
    archives: dict[str, MistakesArchive]
    drills: dict[str, drill_uc.DrillOutcome]


def when(text: str) -> datetime:
    return datetime.fromisoformat(text)


@pytest.fixture(scope="module")
def pgbackrest_env(s3_endpoint: Any) -> Iterator[None]:
    env = restore_environ(s3_endpoint)     # read the environment before clearing it (PATH, ...)
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def scenario(_catalog_pool: asyncpg.Pool, s3_endpoint: Any, catalog_dsn: str,
                   pgbackrest_env: None) -> AsyncIterator[Scenario]:
    root = scratch_dir("changes-e2e-")
    settings = restore_settings(s3_endpoint, catalog_dsn, drill_scratch_dir=str(root), drill_timeout_seconds=240)
    space = f"undo-{uuid.uuid4().hex[:8]}"
    archives, outcomes = {}, {}
    async with s3_client(settings) as client:
        for tool in TOOLS:
            arch = archives[tool] = load_mistakes(s3_endpoint, tool, bucket=f"{space}-{tool}")
            await register_and_scan(_catalog_pool, client, settings, arch, f"{space}-{tool}", space=space, name=tool)
    for tool, arch in archives.items():
        drop = when(arch.truth["mistakes"][0]["commit_time"])
        point = DrillPoint("time", drop - timedelta(milliseconds=1500))  # the load starts 1 s before the drop
        outcomes[tool] = await drill_uc.run_drill(_catalog_pool, settings, f"{space}-{tool}", point=point,
                                                  holder="changes-e2e")
    yield Scenario(settings, space, archives, outcomes)
    import shutil
    shutil.rmtree(root, ignore_errors=True)


async def _changes(s: Scenario, pool: asyncpg.Pool, tool: str, start: datetime, end: datetime,
                   **kw: Any) -> dict[str, Any]:
    async with s3_client(s.settings) as client:
        return await changes(pool, client, s.space, tool, start, end, **{"limit": 1_000_000, **kw})


@pytest.mark.parametrize("tool", TOOLS)
async def test_the_drop_is_listed_first_named_with_its_xid(tool: str, scenario: Scenario,
                                                           _catalog_pool: asyncpg.Pool) -> None:
    assert scenario.drills[tool].ok, scenario.drills[tool].error
    truth = scenario.archives[tool].truth
    drop, delete, truncate = truth["mistakes"]
    doc = await _changes(scenario, _catalog_pool, tool, when(drop["commit_time"]) - timedelta(seconds=1),
                         when(truncate["commit_time"]) + timedelta(seconds=1))
    txs = doc["transactions"]
    first = txs[0]
    assert (first["xid"], first["destructive"], first["database_oid"]) == (drop["xid"], True, truth["db_oid"])
    assert first["commit_time"] == drop["commit_time"].replace("+00:00", "Z")
    assert "public.orders" in {d["name"] for d in first["dropped"]}
    assert {"public.orders_pkey"} <= {d["name"] for d in first["dropped"]}
    assert first["why"] == ["dropped public.orders (and 3 index/TOAST files)"]
    destructive = [t for t in txs if t["destructive"]]
    assert [t["xid"] for t in destructive] == [drop["xid"], delete["xid"], truncate["xid"]]
    (rows,) = destructive[1]["rows"]
    assert rows == {"relation": {"relfilenode": rows["relation"]["relfilenode"], "name": "public.customers"},
                    "inserted": 0, "updated": 0, "deleted": truth["counts_before"]["customers"]}
    assert destructive[1]["why"] == [f"deleted {truth['counts_before']['customers']} rows of public.customers"]
    assert {d["name"] for d in destructive[2]["dropped"]} >= {"public.items", "public.items_pkey"}
    assert destructive[2]["why"] == ["truncated or rewrote public.items (and 3 index/TOAST files)"]
    # the load's commits follow, by commit LSN; several share the drop's millisecond
    rest = txs[3:]
    assert [t["commit_lsn"] for t in rest] == sorted((t["commit_lsn"] for t in rest), key=_lsn)
    same_ms = [t for t in rest if t["commit_time"][:23] == first["commit_time"][:23]]
    assert len(same_ms) >= 1 and truth["ledger_commits_in_drop_millisecond"] >= 1
    assert all(t["rows"][0]["relation"]["name"] == "public.ledger" for t in rest if t["rows"])
    assert doc["segments_read"] >= 1 and doc["timeline_path"] == [1] and doc["restore_points"] == []


def _lsn(text: str) -> int:
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


@pytest.mark.parametrize("tool", TOOLS)
async def test_restore_points_are_listed(tool: str, scenario: Scenario, _catalog_pool: asyncpg.Pool) -> None:
    truth = scenario.archives[tool].truth
    points = truth["restore_points"]
    doc = await _changes(scenario, _catalog_pool, tool, when(points[0]["approx_time"]) - timedelta(seconds=2),
                         when(points[-1]["approx_time"]) + timedelta(seconds=2))
    # each backup tool writes its own restore point during a backup (B2 is in the range)
    own = {"pgbackrest": "pgBackRest Archive Check", "barman": f"barman_{truth['B2']}"}[tool]
    tools_own = [p for p in doc["restore_points"] if p["name"] == own]
    # barman-cloud-backup always writes barman_<id>; pgBackRest writes its archive check's point only when its
    # backup has to force a WAL switch to prove archiving (not in every build): listed once when written
    assert len(tools_own) == 1 if tool == "barman" else len(tools_own) <= 1, doc["restore_points"]
    got = [p for p in doc["restore_points"] if p not in tools_own]
    assert [(p["name"], p["timeline"]) for p in got] == [(p["name"], 1) for p in points], doc["restore_points"]
    for p, t in zip(got, points, strict=True):  # pg_create_restore_point returns the record's end
        assert 0 < _lsn(t["lsn"]) - _lsn(p["lsn"]) <= 128
    # the only destructive transactions a slow build may bring into the range are the scenario's own mistakes
    mistakes = {int(m["xid"]) for m in truth["mistakes"]}
    assert all(int(t["xid"]) in mistakes for t in doc["transactions"] if t["destructive"])


async def test_a_range_needing_too_many_segments_is_refused(scenario: Scenario, _catalog_pool: asyncpg.Pool) -> None:
    truth = scenario.archives["pgbackrest"].truth
    drop = when(truth["mistakes"][0]["commit_time"])
    with pytest.raises(RangeTooLarge, match=r"the range needs \d+ WAL segments") as exc:
        await _changes(scenario, _catalog_pool, "pgbackrest", drop - timedelta(hours=1), drop + timedelta(hours=1),
                       max_segments=1)
    assert exc.value.code == "range_too_large" and exc.value.need > 1
    with pytest.raises(BadRange, match="must be after"):
        await _changes(scenario, _catalog_pool, "pgbackrest", drop, drop - timedelta(seconds=1))


def test_cli_changes_json_text_and_exit_codes(scenario: Scenario, catalog_dsn: str, s3_endpoint: Any) -> None:
    """``changes --json`` prints the document; the text form lists the drop first; bad times exit 2, a range
    too large exits 3 naming how many segments it needs."""
    truth = scenario.archives["barman"].truth
    drop = when(truth["mistakes"][0]["commit_time"])
    env = {**os.environ, "CATALOG_DSN": catalog_dsn, "S3_ENDPOINT_URL": s3_endpoint.url,
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    cli = [sys.executable, "-m", "backup_catalog.cli", "changes", "--space", scenario.space, "--name", "barman"]
    around = ["--from", (drop - timedelta(seconds=1)).isoformat(), "--to", (drop + timedelta(seconds=1)).isoformat()]
    p = subprocess.run([*cli, *around, "--json"], env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["transactions"][0]["xid"] == truth["mistakes"][0]["xid"]
    p = subprocess.run([*cli, *around], env={**env, "COLUMNS": "200"}, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    first = next(line for line in p.stdout.splitlines() if line.lstrip().startswith("!"))
    assert str(truth["mistakes"][0]["xid"]) in first and "public.orders" in first
    p = subprocess.run([*cli, "--from", "yesterday", "--to", "2026-01-01T00:00Z", "--json"], env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and json.loads(p.stdout)["error"]["code"] == "invalid_target"
    p = subprocess.run([*cli, "--from", "2026-01-02T00:00Z", "--to", "2026-01-01T00:00Z", "--json"], env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and json.loads(p.stdout)["error"]["code"] == "invalid_range"
    p = subprocess.run([*cli, *around, "--json"], env={**env, "CHANGES_MAX_SEGMENTS": "1"}, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode in (0, 3)  # one segment may be enough around the drop
    wide = ["--from", (drop - timedelta(hours=1)).isoformat(), "--to", (drop + timedelta(hours=1)).isoformat()]
    p = subprocess.run([*cli, *wide, "--json"], env={**env, "CHANGES_MAX_SEGMENTS": "1"}, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 3 and json.loads(p.stdout)["error"]["code"] == "range_too_large", p.stdout


async def test_http_changes(scenario: Scenario, _catalog_pool: asyncpg.Pool) -> None:
    # 3: a slow build spreads the second around the drop over 3 segments; the 2-hour range needs 6 or more
    app = create_app(scenario.settings.model_copy(update={"changes_max_segments": 3}), pool=_catalog_pool,
                     start_scheduler=False, holder="changes-e2e")
    async with TestClient(TestServer(app)) as client:
        await _http_checks(scenario, client)


async def _http_checks(scenario: Scenario, client: TestClient) -> None:  # type: ignore[type-arg]
    truth = scenario.archives["pgbackrest"].truth
    drop = when(truth["mistakes"][0]["commit_time"])
    url = f"/spaces/{scenario.space}/services/pgbackrest/changes"
    q = {"from": (drop - timedelta(seconds=1)).isoformat(), "to": (drop + timedelta(seconds=1)).isoformat()}
    r = await client.get(url, params=q, headers=AS_BROKER)
    assert r.status == 200, await r.text()
    doc = await r.json()
    assert doc["transactions"][0]["xid"] == truth["mistakes"][0]["xid"] and doc["from"].endswith("Z")
    assert (await client.get(url, params=q)).status == 401
    r = await client.get(url, params={**q, "limit": "1"}, headers=AS_BROKER)   # bounded: the destructive one
    one = await r.json()
    assert r.status == 200, one
    assert [t["xid"] for t in one["transactions"]] == [truth["mistakes"][0]["xid"]]
    assert one["transactions_total"] == doc["transactions_total"] >= 1
    assert one["truncated"] is (doc["transactions_total"] > 1)
    for bad, status, code in [({"from": "yesterday", "to": q["to"]}, 400, "invalid_query_parameter"),
                              ({**q, "limit": "0"}, 400, "invalid_query_parameter"),
                              ({**q, "limit": "many"}, 400, "invalid_query_parameter"),
                              ({"to": q["to"]}, 400, "invalid_query_parameter"),
                              ({"from": q["to"], "to": q["from"]}, 422, "invalid_range"),
                              ({"from": (drop - timedelta(hours=2)).isoformat(), "to": q["to"]}, 422,
                               "range_too_large")]:
        r = await client.get(url, params=bad, headers=AS_BROKER)
        body = await r.json()
        assert (r.status, body["code"]) == (status, code), body
        assert r.content_type == "application/problem+json"
    assert body["need"] > 3 and body["limit"] == 3
    r = await client.get(f"/spaces/{scenario.space}/services/nobody/changes", params=q, headers=AS_BROKER)
    assert r.status == 404


async def test_the_wal_index_narrows_what_is_read(scenario: Scenario, _catalog_pool: asyncpg.Pool) -> None:
    """Indexed segments are anchors too: never more is read, and the answer is the same."""
    from backup_catalog.usecases.walindex import index_listed
    from catalog import walindex

    truth = scenario.archives["pgbackrest"].truth
    drop, _, truncate = truth["mistakes"]
    start, end = when(drop["commit_time"]) - timedelta(seconds=1), when(truncate["commit_time"]) + timedelta(seconds=1)
    plain = await _changes(scenario, _catalog_pool, "pgbackrest", start, end)
    await index_listed(_catalog_pool, scenario.settings, [f"{scenario.space}-pgbackrest"], "changes-e2e")
    summaries = await walindex.summaries_around(_catalog_pool, f"{scenario.space}-pgbackrest", start, end)
    assert summaries, "the index job stored no segment summaries"
    indexed = await _changes(scenario, _catalog_pool, "pgbackrest", start, end)
    assert 1 <= indexed["segments_read"] <= plain["segments_read"]
    assert indexed["transactions"] == plain["transactions"] and indexed["transactions"][0]["xid"] == drop["xid"]
