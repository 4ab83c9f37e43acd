"""Undo a mistake, end to end (issue 20): the "mistakes" archives written by pgBackRest and barman-cloud from
PostgreSQL 15 (sandbox/mistakes.py: steady inserts, restore points 'before-migration' and twice 'deploy', then
under a pgbench load on `ledger`: DROP TABLE orders, DELETE FROM customers, TRUNCATE items), scanned, indexed
by the WAL index job, planned with exact targets and restored for real by the executor (``restore``).

- ``before-xid`` of the drop: the clone holds `orders` with every row, and `ledger` exactly the transactions
  committed before the drop's commit record (the oracle: the archive's own WAL, decoded); a time target at the
  drop's commit time loses `orders` and keeps the ledger commits of the same instant instead;
- ``before-xid`` of the DELETE (pgBackRest) and of the TRUNCATE (barman): the rows are back;
- ``restore-point`` 'before-migration': no backup label given, B1 chosen, the migration's column absent;
  'deploy' is ambiguous (both occurrences listed) unless ``restore-point-lsn`` picks one; an unknown name is
  refused with the known points.

One scan and one index run per tool for the module; the restores (8, each a real PostgreSQL recovery) start
up front, two at a time, so the module's time is about four restores.
"""
from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from backup_catalog.usecases import walindex as job
from backup_catalog.usecases.restore import plan_clone, restore_from_catalog
from catalog import walindex
from recovery.docjson import document_json
from recovery.errors import PlanningError
from recovery.lsn import Lsn
from recovery.target import CloneRequest
from recovery.walrecords import RowChange, decode_stream
from recovery.walsummary import summarise
from sandbox.mistakes import MistakesArchive, load_mistakes
from scheduler.clients import s3_client
from scheduler.edges import read_segment
from scheduler.storage import S3Store
from tests.support.clones import clone_request
from tests.support.fixtures import register_and_scan
from tests.support.restore import restore_environ, restore_settings, scratch_dir

pytestmark = [pytest.mark.realtools, pytest.mark.asyncio(loop_scope="session")]
TOOLS = ("pgbackrest", "barman")

# one value out of the restored clone: counts of each table (NULL when it does not exist), the migration's column
CHECK = """SELECT json_build_object(
  'orders', CASE WHEN to_regclass('public.orders') IS NULL THEN NULL ELSE
    (xpath('/row/c/text()', query_to_xml('SELECT count(*) AS c FROM orders', false, true, '')))[1]::text::int END,
  'customers', (SELECT count(*) FROM customers), 'items', (SELECT count(*) FROM items),
  'ledger', (SELECT count(*) FROM ledger),
  'price_column', (SELECT count(*) FROM information_schema.columns WHERE table_name = 'items'
                   AND column_name = 'price'))::text"""


@dataclass(slots=True)
class Env:
    pool: asyncpg.Pool
    settings: Any
    client: Any
    space: str
    archives: dict[str, MistakesArchive] = field(default_factory=dict)
    guids: dict[str, str] = field(default_factory=dict)
    restores: dict[tuple[str, str], asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    plans: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text)


def mistake(arch: MistakesArchive, what: str) -> dict[str, Any]:
    return next(m for m in arch.truth["mistakes"] if m["what"] == what)


def body(tool: str, **target: Any) -> CloneRequest:
    return clone_request({"clone-from": f"shop-{tool}", **{k.replace("_", "-"): v for k, v in target.items()}})


CASES: dict[str, Any] = {    # case -> (tools, the target of the clone request from the truth)
    "drop-xid": (TOOLS, lambda a: {"before_xid": mistake(a, "drop")["xid"]}),
    "drop-time": (TOOLS, lambda a: {"point_in_time": mistake(a, "drop")["commit_time"]}),
    "before-migration": (TOOLS, lambda _a: {"restore_point": "before-migration"}),
    "delete-xid": (("pgbackrest",), lambda a: {"before_xid": mistake(a, "delete")["xid"]}),
    "truncate-xid": (("barman",), lambda a: {"before_xid": mistake(a, "truncate")["xid"]}),
}


async def _restore(e: Env, sem: asyncio.Semaphore, ep: Any, tool: str, req: CloneRequest) -> dict[str, Any]:
    async with sem:
        d = scratch_dir("undo-test-")
        try:
            res = await restore_from_catalog(e.settings, e.space, req, d / "data", pool=e.pool,
                                             environ=restore_environ(ep), check_query=CHECK)
            return {"label": res.backup.label, "target": document_json(res.target),
                    "rows": json.loads(res.check_result or "{}"), "log": res.postgres_log}
        finally:
            shutil.rmtree(d, ignore_errors=True)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def env(_catalog_pool: asyncpg.Pool, s3_endpoint: Any, catalog_dsn: str) -> AsyncIterator[Env]:
    settings = restore_settings(s3_endpoint, catalog_dsn)
    run = uuid.uuid4().hex[:8]
    async with s3_client(settings) as client:
        e = Env(_catalog_pool, settings, client, f"undo-{run}")
        for tool in TOOLS:
            arch = await asyncio.to_thread(load_mistakes, s3_endpoint, tool, f"undo-{tool}-{run}")
            e.archives[tool], e.guids[tool] = arch, f"undo-{tool}-{run}"
            await register_and_scan(_catalog_pool, client, settings, arch, e.guids[tool], space=e.space,
                                    name=f"shop-{tool}")
            [o] = await job.run_once(_catalog_pool, settings, client, "undo-test", job.Budget(1 << 40),
                                     guids=[e.guids[tool]])
            assert o.lag == 0 and not o.problems, o
        sem = asyncio.Semaphore(2)
        for case, (tools, target) in CASES.items():
            for tool in tools:
                req = body(tool, **target(e.archives[tool]))
                e.plans[(tool, case)] = (await plan_clone(_catalog_pool, settings, e.space, req)).to_json()
                e.restores[(tool, case)] = asyncio.ensure_future(_restore(e, sem, s3_endpoint, tool, req))
        try:
            yield e
        finally:
            for f in e.restores.values():
                f.cancel()
            await asyncio.gather(*e.restores.values(), return_exceptions=True)


async def restored(e: Env, tool: str, case: str) -> dict[str, Any]:
    r = await e.restores[(tool, case)]
    assert r["label"] == e.plans[(tool, case)]["backup"]["label"], "the restore executed another plan"
    return r


async def ledger_oracle(e: Env, tool: str, drop_lsn: Lsn, drop_time: datetime) -> tuple[int, int, int]:
    """From the archive's own WAL: ledger rows committed before the drop's commit record (WAL order), with a
    commit time at or before the drop's, and how many of the latter commit after the drop record."""
    arch = e.archives[tool]
    ledger = next(int(r[0]) for r in arch.truth["relmap_before_drop"] if r[2] == "ledger")
    rows = await e.pool.fetch("SELECT segno, object_key FROM wal_segment_summaries WHERE instance_guid = $1 "
                              "AND timeline = 1 ORDER BY segno", e.guids[tool])
    store = S3Store(e.client, arch.bucket)
    datas = [await read_segment(store, r["object_key"]) for r in rows]
    recs = list(decode_stream(datas))
    ledger_x = {r.xid for r in recs if isinstance(r, RowChange) and r.rel.rel == ledger and r.op == "insert"}
    txs = [t for t in summarise(recs).transactions if t.xid in ledger_x or ledger_x & set(t.subxacts)]

    def rows_of(t: Any) -> int:
        return sum(c.inserted for c in t.rows if c.rel.rel == ledger)
    before = sum(rows_of(t) for t in txs if t.commit_lsn < drop_lsn)
    by_time = sum(rows_of(t) for t in txs if t.commit_time <= drop_time)
    after_same = sum(1 for t in txs if t.commit_lsn > drop_lsn and t.commit_time <= drop_time)
    return before, by_time, after_same


@pytest.mark.parametrize("tool", TOOLS)
async def test_before_xid_of_the_drop_keeps_orders_and_stops_one_transaction_short(env: Env, tool: str) -> None:
    arch, drop = env.archives[tool], mistake(env.archives[tool], "drop")
    plan = env.plans[(tool, "drop-xid")]
    t = plan["target"]
    assert (t["kind"], t["value"], t["inclusive"]) == ("xid", drop["xid"], False)
    assert ts(t["commit_time"]) == ts(drop["commit_time"])      # the commit record's own time
    assert Lsn.parse(t["lsn"]) < Lsn.parse(drop["lsn_after"])
    assert f"recovery_target_xid = '{drop['xid']}'" in plan["files"]["postgresql.auto.conf"]
    assert plan["backup"]["label"] == arch.truth["B2"]         # newest backup stopping before the commit
    r = await restored(env, tool, "drop-xid")
    counts = r["rows"]
    assert counts["orders"] == arch.truth["counts_before"]["orders"] == 140
    before, _by_time, _ = await ledger_oracle(env, tool, Lsn.parse(t["lsn"]), ts(t["commit_time"]))
    assert counts["ledger"] == before, (counts, before)
    assert counts["customers"] == 1500 and counts["items"] == 200


@pytest.mark.parametrize("tool", TOOLS)
async def test_a_time_target_at_the_drop_shows_what_it_would_lose(env: Env, tool: str) -> None:
    arch, drop = env.archives[tool], mistake(env.archives[tool], "drop")
    plan = env.plans[(tool, "drop-time")]
    assert plan["target"]["kind"] == "time"
    by_xid = (await restored(env, tool, "drop-xid"))["rows"]
    by_time = (await restored(env, tool, "drop-time"))["rows"]
    assert by_time["orders"] is None, "a time target at the drop's commit time replays the drop"
    _before, at_time, same_instant_after = await ledger_oracle(env, tool, Lsn.parse(env.plans[(tool, "drop-xid")]
                                                                                   ["target"]["lsn"]),
                                                                ts(drop["commit_time"]))
    assert by_time["ledger"] == at_time
    # what the time target gives instead: no orders, and the ledger commits of the drop's instant after it
    assert by_time["ledger"] - by_xid["ledger"] == same_instant_after >= 0
    assert arch.truth["ledger_commits_in_drop_millisecond"] >= 1


async def test_delete_and_truncate_undone(env: Env) -> None:
    r = await restored(env, "pgbackrest", "delete-xid")
    assert r["rows"]["customers"] == 1500 and r["rows"]["orders"] is None   # after the drop, before the delete
    assert env.plans[("pgbackrest", "delete-xid")]["target"]["value"] == mistake(env.archives["pgbackrest"],
                                                                                  "delete")["xid"]
    r = await restored(env, "barman", "truncate-xid")
    assert r["rows"]["items"] == 200 and r["rows"]["customers"] == 0 and r["rows"]["price_column"] == 1


@pytest.mark.parametrize("tool", TOOLS)
async def test_restore_point_before_the_migration(env: Env, tool: str) -> None:
    arch = env.archives[tool]
    plan = env.plans[(tool, "before-migration")]
    t = plan["target"]
    assert (t["kind"], t["value"]) == ("name", "before-migration")
    assert "recovery_target_name = 'before-migration'" in plan["files"]["postgresql.auto.conf"]
    assert plan["backup"]["label"] == arch.truth["B1"]
    truth_point = next(p for p in arch.truth["restore_points"] if p["name"] == "before-migration")
    assert Lsn.parse(t["lsn"]) < Lsn.parse(truth_point["lsn"])    # the record's start; the function returns its end
    r = await restored(env, tool, "before-migration")
    assert r["rows"]["price_column"] == 0 and r["rows"]["orders"] == 120 and r["rows"]["ledger"] == 0


@pytest.mark.parametrize("tool", TOOLS)
async def test_duplicated_and_unknown_restore_points_are_refused_with_the_lists(env: Env, tool: str) -> None:
    arch = env.archives[tool]
    with pytest.raises(PlanningError) as e:
        await plan_clone(env.pool, env.settings, env.space, body(tool, restore_point="deploy"))
    assert e.value.code == "restore_point_ambiguous"
    occ = e.value.details["occurrences"]
    assert [o["name"] for o in occ] == ["deploy", "deploy"] and occ[0]["time"] < occ[1]["time"]  # type: ignore[index]
    with pytest.raises(PlanningError) as e:
        await plan_clone(env.pool, env.settings, env.space, body(tool, restore_point="before-migrations"))
    assert e.value.code == "restore_point_unknown"
    assert {p["name"] for p in e.value.details["known"]} >= {"before-migration", "deploy"}  # type: ignore[union-attr]
    # restore-point-lsn picks the later one: after B2's start, so by name from B2
    later = occ[1]["lsn"]  # type: ignore[index]
    doc = (await plan_clone(env.pool, env.settings, env.space,
                            body(tool, restore_point="deploy", restore_point_lsn=str(later)))).to_json()
    assert doc["backup"]["label"] == arch.truth["B2"] and doc["target"]["lsn"] == str(later)
    assert doc["replay"]["stop"]["kind"] == "restore_point"
    points = await walindex.restore_points(env.pool, env.guids[tool])
    ours = [p.name for p in points if p.name in ("before-migration", "deploy")]
    assert ours == ["before-migration", "deploy", "deploy"]
    # pgBackRest's own `check`/stanza-create writes its restore point (LAYOUTS §13): indexed like any other
    assert ("pgBackRest Archive Check" in {p.name for p in points}) is (tool == "pgbackrest")
