"""Coverage at fleet scale: stored facts graded in one pass give the same rows as the whole-snapshot grading
of before (tests/support/coverage_oracle.py, verbatim), on the real archives and on a generated fleet; drills
and purge state; pages, filters and cursors; the HTML page's links followed; CSV streamed; /metrics."""
from __future__ import annotations

import asyncio
import csv
import io
import json
import random
import re
from datetime import UTC, datetime, timedelta
from html import unescape
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from backup_catalog.service.app import create_app
from backup_catalog.settings import Settings
from backup_catalog.usecases import coverage
from backup_catalog.usecases.scan import scan_listed
from catalog import repo
from recovery.grading import DrillFact, GradeInput, ScanFacts, grade
from recovery.model import WalRun
from tests.api.conftest import AS_BROKER, AS_OPERATOR
from tests.api.conftest import make_settings as api_settings
from tests.catalog.factories import ref, scan, storage
from tests.support import coverage_oracle as oracle
from tests.test_report import NOW, add, ago, bk, edge, fleet

pytestmark = pytest.mark.asyncio(loop_scope="session")


def _comparable(old: dict[str, Any]) -> dict[str, Any]:
    """An oracle row as the fleet path shows it: no per-backup list, windows without their backup lists."""
    out = {k: v for k, v in old.items() if k != "backups"}
    out["windows"] = [{k: v for k, v in w.items() if k != "backups"} for w in old["windows"]]
    return out


async def assert_same_as_snapshot_grading(pool: asyncpg.Pool, settings: Settings, now: datetime) -> int:
    """Every row of the stored-facts path equals the whole-snapshot grading's (plus drill/purge fields),
    in the same order. Returns how many rows were compared."""
    old = await oracle.coverage(pool, settings, now=now)
    new = await coverage.all_rows(pool, settings, now=now)
    assert [r["instance_guid"] for r in new] == [r["instance_guid"] for r in old]
    for o, n in zip(old, new, strict=True):
        assert {k: v for k, v in n.items() if k not in ("drill", "undo_until", "purge", "fresh_as_of")} == _comparable(o), \
            o["name"]
    return len(old)


def no_snapshots(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tripwire: loading a whole snapshot fails the test (the fleet path must grade from stored facts)."""
    async def refuse(*a: Any, **k: Any) -> Any:
        raise AssertionError("a snapshot was loaded to grade the fleet")
    monkeypatch.setattr(repo, "load_snapshot", refuse)
    monkeypatch.setattr(repo, "load_versioned_snapshot", refuse)


# -- the same grades as before ---------------------------------------------------------------------

@pytest.mark.realtools
async def test_real_archives_grade_as_before(pool: asyncpg.Pool, real_archives: Any, s3_endpoint: Any,
                                             catalog_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.support.fixtures import make_settings
    settings = make_settings(s3_endpoint, catalog_dsn)
    guids = []
    for tool in ("pgbackrest", "barman", "wale", "walg"):
        a = real_archives[tool]
        g = f"real-{tool}"
        await repo.register_instance(pool, ref(g, f"db-{tool}", space="real"),
                                     storage(bucket=a.bucket, prefix=a.prefix, stanza=a.stanza), existed_before=True)
        guids.append(g)
    await repo.register_instance(pool, ref("real-never", "never-scanned", space="real"), storage(bucket="nowhere"))
    outcomes = await scan_listed(pool, settings, guids, full=True)
    assert all(o.ok for o in outcomes), outcomes
    await repo.delete_instance(pool, "real-walg")
    assert await pool.fetchval("SELECT count(*) FROM scan_cache_facts") == 4   # written by the scans
    commits = [c["commit_time"] for a in real_archives for c in a.truth["commits"]]
    last = max(datetime.fromisoformat(c) for c in commits)
    compared = 0
    for now in (last + timedelta(minutes=5), last + timedelta(minutes=40), last + timedelta(hours=30),
                datetime.now(UTC)):
        with monkeypatch.context() as m:
            no_snapshots(m)
            rows = await coverage.all_rows(pool, settings, now=now)
        assert len(rows) == 5
        compared += await assert_same_as_snapshot_grading(pool, settings, now)
    assert compared == 20
    statuses = {r["name"]: r["status"] for r in await coverage.all_rows(pool, settings,
                                                                        now=last + timedelta(hours=30))}
    assert statuses["never-scanned"] == "critical"


def _generated(rnd: random.Random, i: int) -> tuple[list[Any], list[tuple[int, int]], list[Any], datetime]:
    """A random instance: backups (some past the archived WAL), runs with holes, exact and approximate edges."""
    last_seg = rnd.randint(8, 60)
    cuts = sorted(rnd.sample(range(4, last_seg), k=min(rnd.randint(0, 3), last_seg - 5)))
    runs, first = [], 2
    for c in cuts:
        if c - 1 >= first:
            runs.append((first, c - 1))
        first = c + rnd.randint(1, 2)
    if first <= last_seg:
        runs.append((first, last_seg))
    age_h = rnd.choice([0.2, 1, 3, 20, 30, 60, 200])
    edges = [edge(b, ago(age_h * (1 - k / (len(runs) + 1)) + rnd.random()), exact=rnd.random() > 0.2)
             for k, (_, b) in enumerate(runs) if rnd.random() > 0.1]
    backups = []
    for k in range(rnd.randint(0, 4)):
        seg = rnd.randint(2, last_seg + 3)
        backups.append(bk(f"B-{i}-{k}", seg, ago(age_h + rnd.choice([0, 1, 5, 25, 49]) + k)))
    return backups, runs, edges, ago(rnd.choice([0.05, 0.5, 2]))


async def test_generated_fleet_grades_as_before(pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch) -> None:
    rnd = random.Random(12)
    await fleet(pool)        # the hand-made situations of tests/test_report.py
    for i in range(60):
        backups, runs, edges, scanned = _generated(rnd, i)
        g = await add(pool, f"gen-{i:03d}", f"gen-{rnd.choice('abc')}-{i}", backups, runs, edges, scanned=scanned)
        r = rnd.random()
        if r < 0.1:
            await repo.record_scan_failure(pool, g, "storage_unavailable", f"S3 unavailable for {g}")
        elif r < 0.2:
            await repo.delete_instance(pool, g, at=ago(rnd.choice([1, 30])))
        elif r < 0.25:
            await pool.execute("UPDATE scan_state SET issues = $2::jsonb WHERE instance_guid = $1", g, json.dumps(
                [{"code": "foreign_object", "key": "x", "message": "ignored"},
                 {"code": "metadata_error", "key": "k", "message": f"unreadable sentinel of {g}"}]))
    await repo.register_instance(pool, ref("gen-never", "gen-never"), storage())
    for settings in (Settings(), Settings(coverage_warning_rpo_seconds=60, coverage_critical_rpo_seconds=600,
                                          scan_interval_seconds=60)):
        for now in (NOW, NOW + timedelta(hours=6), NOW + timedelta(days=3)):
            with monkeypatch.context() as m:
                no_snapshots(m)
                await coverage.all_rows(pool, settings, now=now)
            assert await assert_same_as_snapshot_grading(pool, settings, now) == 69
    statuses = {r["status"] for r in await coverage.all_rows(pool, Settings(), now=NOW)}
    assert statuses == {"ok", "warning", "critical"}


async def test_facts_are_written_through_when_missing_or_stale(pool: asyncpg.Pool) -> None:
    g = await fleet(pool)
    before = await coverage.all_rows(pool, Settings(), now=NOW)
    await pool.execute("DELETE FROM scan_cache_facts")
    # a new window edge (outside a scan) makes the stored facts of its instance stale
    await repo.save_edges(pool, g["orders"], [edge(50, ago(minutes=1))])
    assert await pool.fetchval("SELECT count(*) FROM scan_cache_facts") == 0
    after = await coverage.all_rows(pool, Settings(), now=NOW)
    orders = next(r for r in after if r["name"] == "orders")
    assert orders["rpo_seconds"] == 60, "the new edge is graded"
    assert [r for r in after if r["name"] != "orders"] == [r for r in before if r["name"] != "orders"]
    assert await pool.fetchval("SELECT count(*) FROM scan_cache_facts") == len(g)
    await repo.save_edges(pool, g["orders"], [edge(50, ago(minutes=2))])
    assert (await coverage.detail(pool, Settings(), g["orders"], now=NOW))["rpo_seconds"] == 120
    assert await pool.fetchval("""SELECT count(*) FROM scan_cache_facts f JOIN scan_state s USING (instance_guid)
                                  WHERE f.generation = s.generation""") == len(g)


# -- drills and purge state -------------------------------------------------------------------------

async def drill(pool: asyncpg.Pool, guid: str, state: str, finished: datetime, reason: str | None = None,
                duration: float = 42.0) -> int:
    return int(await pool.fetchval(
        """INSERT INTO drills (instance_guid, requested_at, started_at, finished_at, state, target, reason,
                               duration_s)
           VALUES ($1, $3, $3, $3, $2, '{"kind": "latest"}', $4, $5) RETURNING id""",
        guid, state, finished, reason, duration))


async def test_drills_and_purge_state_in_rows(pool: asyncpg.Pool) -> None:
    g = await fleet(pool)
    s = Settings()
    await drill(pool, g["orders"], "failed", ago(30), "replay stopped in segment 000000010000000000000007")
    bad = await drill(pool, g["orders"], "failed", ago(1), "replay stopped in segment 000000010000000000000009")
    await pool.execute("INSERT INTO drills (instance_guid, state) VALUES ($1, 'running')", g["orders"])
    await drill(pool, g["reports"], "passed", ago(24 * 9))
    ok = await drill(pool, g["rpo-late"], "passed", ago(5))
    rows = {r["name"]: r for r in await coverage.all_rows(pool, s, now=NOW)}

    o = rows["orders"]
    assert o["status"] == "critical"
    assert o["drill"] == {"id": bad, "at": "2026-03-10T11:00:00Z", "ok": False, "target": {"kind": "latest"},
                          "reason": "replay stopped in segment 000000010000000000000009"}
    assert o["reasons"] == [f"drill {bad} at 2026-03-10T11:00:00Z failed: replay stopped in segment "
                            "000000010000000000000009"]
    assert rows["reports"]["reasons"][-1].endswith("is older than 8d") and rows["reports"]["status"] == "warning"
    assert rows["rpo-late"]["drill"]["id"] == ok and rows["rpo-late"]["drill"]["ok"] is True
    assert all(not x.startswith("last drill") for x in rows["rpo-late"]["reasons"])
    assert rows["billing"]["drill"] is None, "never drilled: null, not graded"

    gone = rows["checkout-old"]
    assert gone["undo_until"] == "2026-04-09T00:00:00Z" and gone["purge"] == "clonable"
    assert rows["orders"]["undo_until"] is None and rows["orders"]["purge"] is None
    later = NOW + timedelta(days=31)
    assert {r["name"]: r["purge"] for r in await coverage.all_rows(pool, s, now=later)}["checkout-old"] == "due"
    await pool.execute("UPDATE instances SET hold_at = now(), hold_reason = 'legal' WHERE instance_guid = $1",
                       g["checkout-old"])
    assert {r["name"]: r["purge"] for r in await coverage.all_rows(pool, s, now=later)}["checkout-old"] == "held"
    await pool.execute("UPDATE instances SET purged_at = now() WHERE instance_guid = $1", g["checkout-old"])
    doc = await coverage.page(pool, s, now=later)
    assert doc["summary"]["purge"] == {"held": 0, "clonable": 0, "due": 0, "purged": 1}


@pytest.mark.asyncio(loop_scope="session")
async def test_grade_is_pure_and_drill_rules() -> None:
    s = Settings()
    f = ScanFacts(newest_backup="B", newest_backup_stop_time=NOW - timedelta(hours=1), latest_end=NOW,
                      latest_end_exact=True, latest_end_kind="end")
    assert grade(GradeInput(facts=f), s, NOW).status == "ok"
    failed = DrillFact(7, NOW - timedelta(days=30), False, None, None)
    g = grade(GradeInput(facts=f, drill=failed), s, NOW)
    assert (g.status, g.reasons) == ("critical", ("drill 7 at 2026-02-08T12:00:00Z failed: no reason recorded",))
    old = DrillFact(8, NOW - timedelta(days=9), True)
    assert grade(GradeInput(facts=f, drill=old), s, NOW).status == "warning"
    assert grade(GradeInput(facts=f, drill=old, deleted_at=NOW), s, NOW).status == "ok", \
        "a deleted instance is not expected to be drilled"
    assert grade(GradeInput(facts=None, facts_error="bad history"), s, NOW).reasons[0] == \
        "recoverable windows cannot be computed: bad history"


# -- pages, filters, links --------------------------------------------------------------------------

async def big_fleet(pool: asyncpg.Pool, n: int, now: datetime = NOW) -> None:
    """``n`` instances in three spaces with every status at ``now`` (facts written by the same code as a scan's)."""
    def ago(hours: float = 0, minutes: float = 0) -> datetime:
        return now - timedelta(hours=hours, minutes=minutes)
    rnd = random.Random(5)
    for i in range(n):
        k = i % 10
        age = 2 if k < 6 else 30 if k < 8 else 60
        guid = f"fleet-{i:04d}"
        stop = ago(age)
        await repo.register_instance(pool, ref(guid, f"svc-{i:04d}", space=f"space-{i % 3}", org_guid=f"org-{i % 2}"),
                                     storage(prefix=f"cf/{guid}/"), existed_before=True)
        await repo.save_scan(pool, guid, scan((WalRun(1, 2, 40),), backups=(bk(f"B-{i}", 3, stop),),
                                              edges=(edge(40, ago(minutes=rnd.choice([1, 3]))),),
                                              started_at=ago(minutes=2), finished_at=ago(minutes=1)))
        if i % 25 == 0:
            await repo.delete_instance(pool, guid, at=ago(1))
    await pool.execute("DELETE FROM scan_cache_facts")     # the first page request writes them through


async def test_json_pages_cursor_and_filters(pool: asyncpg.Pool) -> None:
    await big_fleet(pool, 230)
    s = Settings()
    seen, cursor, pages = [], None, 0
    while True:
        doc = await coverage.page(pool, s, limit=100, cursor=cursor, now=NOW)
        assert doc["summary"]["instances"] == 230 and doc["matched"] == 230
        seen += doc["instances"]
        pages += 1
        cursor = doc["next_cursor"]
        if cursor is None:
            break
    assert pages == 3 and len(seen) == 230 and len({r["instance_guid"] for r in seen}) == 230
    keys = [({"critical": 0, "warning": 1, "ok": 2}[r["status"]], r["deleted"], r["name"]) for r in seen]
    assert keys == sorted(keys), "worst first, live before deleted, then by name"
    assert all("backups" not in r for r in seen)
    sm = doc["summary"]
    assert sm["ok"] + sm["warning"] + sm["critical"] == 230 and min(sm["ok"], sm["warning"], sm["critical"]) > 0
    assert sm["deleted"] == 10 and sm["live"] == 220

    f = coverage.Filters(status="warning", space="space-1", name="svc-00")
    doc = await coverage.page(pool, s, f, now=NOW)
    assert doc["summary"]["instances"] == 230, "the summary is the whole fleet's"
    assert doc["instances"] and all(r["status"] == "warning" and r["space_guid"] == "space-1"
                                    and r["name"].startswith("svc-00") for r in doc["instances"])
    assert doc["matched"] == len(doc["instances"]) == sum(
        1 for r in seen if r["status"] == "warning" and r["space_guid"] == "space-1" and r["name"].startswith("svc-00"))
    only_deleted = await coverage.page(pool, s, coverage.Filters(deleted=True, org="org-0"), now=NOW)
    assert only_deleted["matched"] == 5 and all(r["deleted"] for r in only_deleted["instances"])
    assert (await coverage.page(pool, s, coverage.Filters(layout="barman"), now=NOW))["matched"] == 0
    for bad in (dict(limit=0), dict(limit=1001), dict(cursor="nope"), dict(cursor="WzEsMl0")):
        with pytest.raises(coverage.InvalidQuery):
            await coverage.page(pool, s, now=NOW, **bad)
    with pytest.raises(coverage.InvalidQuery):
        coverage.Filters(status="bad")


async def test_html_links_filter_page_and_detail(pool: asyncpg.Pool) -> None:
    await big_fleet(pool, 230, datetime.now(UTC))
    app = create_app(api_settings(), pool=pool, start_scheduler=False, holder="t")
    async with TestClient(TestServer(app)) as c:
        async def get(path: str) -> str:
            resp = await c.get(path, headers=AS_OPERATOR)
            assert resp.status == 200, await resp.text()
            assert resp.headers["Content-Type"].startswith("text/html")
            return await resp.text()

        def links(page: str, cls: str) -> list[str]:
            return [unescape(h) for h in re.findall(rf'<a class="{cls}"[^>]*href="([^"]*)"', page)]

        base = "/reports/coverage.html"
        page = await get(base)
        assert len(page) < 2_000_000
        guids, pages = [], 0
        while True:
            pages += 1
            guids += re.findall(r'data-guid="([^"]+)"', page)
            nxt = links(page, "next")
            if not nxt:
                break
            assert len(set(nxt)) == 1 and nxt[0].startswith("?") and "cursor=" in nxt[0]
            page = await get(base + nxt[0])
        assert pages == 3 and len(guids) == len(set(guids)) == 230

        first = await get(base)
        crit = links(first, "s-critical")
        assert crit == ["?status=critical"]
        page = await get(base + crit[0])
        statuses = re.findall(r'data-status="([^"]+)"', page)
        assert statuses and set(statuses) == {"critical"}
        # the filter form submits these names; every one of them is accepted by the route
        names = set(re.findall(r'<(?:input|select) [^>]*name="([^"]+)"', first))
        assert names == {"status", "space", "org", "name", "layout", "deleted", "limit"}
        page = await get(base + "?status=ok&space=space-2&org=&name=svc-01&layout=&deleted=false&limit=5")
        assert 'value="space-2"' in page and "<option value=\"ok\" selected>" in page
        rows = re.findall(r'data-guid="([^"]+)" data-status="([^"]+)"', page)
        assert len(rows) == 5 and {st for _, st in rows} == {"ok"}
        nxt = links(page, "next")
        assert nxt and "limit=5" in nxt[0] and "space=space-2" in nxt[0] and "status=ok" in nxt[0]
        page2 = await get(base + nxt[0])
        assert not set(re.findall(r'data-guid="([^"]+)"', page2)) & {g for g, _ in rows}

        detail = links(first, "detail")[0]
        assert detail.startswith("../instances/") and detail.endswith("/coverage.html")
        dpage = await get("/reports/" + detail)      # resolved as a browser resolves it against /reports/
        assert 'class="backup"' in dpage and "all instances" in dpage
        back = re.search(r'<a href="([^"]+)">&larr; all instances', dpage)
        assert back is not None and back.group(1) == "../../reports/coverage.html"

        guid = guids[0]
        resp = await c.get(f"/instances/{guid}/coverage", headers=AS_OPERATOR)
        doc = await resp.json()
        assert resp.status == 200 and doc["instance_guid"] == guid and len(doc["backups"]) == 1
        assert doc["windows"][0]["backups"] == [doc["backups"][0]["label"]]
        resp = await c.get("/instances/nope/coverage", headers=AS_OPERATOR)
        assert resp.status == 404 and (await resp.json())["code"] == "unknown_instance"
        resp = await c.get(f"/instances/{guid}/coverage", headers=AS_BROKER)
        assert resp.status == 403

        resp = await c.get("/reports/coverage?limit=2&status=critical", headers=AS_OPERATOR)
        doc = await resp.json()
        assert resp.status == 200 and len(doc["instances"]) == 2 and doc["next_cursor"]
        resp = await c.get(f"/reports/coverage?limit=2&status=critical&cursor={doc['next_cursor']}",
                           headers=AS_OPERATOR)
        doc2 = await resp.json()
        assert {r["instance_guid"] for r in doc2["instances"]}.isdisjoint(r["instance_guid"] for r in doc["instances"])
        for bad in ("limit=0", "limit=x", "status=fine", "deleted=maybe", "layout=tar", "space=%01"):
            resp = await c.get(f"/reports/coverage?{bad}", headers=AS_OPERATOR)
            assert resp.status == 400 and (await resp.json(content_type=None))["code"] == "invalid_query_parameter"
        for path in ("/reports/coverage?cursor=zzz", "/reports/coverage.html?cursor=WzEsMl0"):
            resp = await c.get(path, headers=AS_OPERATOR)
            assert resp.status == 422 and (await resp.json(content_type=None))["code"] == "invalid_cursor"

        resp = await c.get("/reports/coverage?format=csv&space=space-0", headers=AS_OPERATOR)
        text = await resp.text()
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/csv")
        parsed = list(csv.DictReader(io.StringIO(text)))
        assert len(parsed) == 77 and {p["space_guid"] for p in parsed} == {"space-0"}
        resp = await c.get("/reports/coverage?format=csv", headers=AS_OPERATOR)
        assert len(list(csv.DictReader(io.StringIO(await resp.text())))) == 230


async def test_csv_stream_is_every_row(pool: asyncpg.Pool) -> None:
    await fleet(pool)
    rows = await coverage.all_rows(pool, Settings(), now=NOW)
    streamed = [r async for r in coverage.stream(pool, Settings(), now=NOW, batch=3)]
    assert sorted(streamed, key=lambda r: r["instance_guid"]) == sorted(rows, key=lambda r: r["instance_guid"])
    assert [r["name"] for r in streamed] == sorted(r["name"] for r in rows)


# -- metrics -----------------------------------------------------------------------------------------

async def test_metrics_fleet_drills_and_purges(pool: asyncpg.Pool) -> None:
    g = await fleet(pool)
    await drill(pool, g["orders"], "passed", ago(2), duration=12.5)
    await drill(pool, g["orders"], "failed", ago(1), "replay stopped", duration=3.0)
    await drill(pool, g["reports"], "passed", ago(3), duration=7.0)
    await pool.execute("UPDATE instances SET deleted_at = now() - interval '40 days' WHERE instance_guid = $1",
                       g["legacy"])
    await pool.execute("UPDATE instances SET hold_at = now() WHERE instance_guid = $1", g["checkout-old"])
    await pool.execute("""INSERT INTO purges (instance_guid, bucket, prefix, policy, finished_at, objects_deleted,
                                              bytes_deleted, outcome)
                          VALUES ($1, 'b', 'p', 'DELETED_RETENTION_DAYS=30', now(), 10, 1000, 'done'),
                                 ($1, 'b', 'p', 'DELETED_RETENTION_DAYS=30', now(), 2, 24, 'failed')""", g["legacy"])
    app = create_app(api_settings(), pool=pool, start_scheduler=False, holder="t")
    async with TestClient(TestServer(app)) as c:
        resp = await c.get("/metrics", headers=AS_OPERATOR)
        assert resp.status == 200
        text = await resp.text()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(text) for s in fam.samples}

    def v(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]
    assert v("backup_catalog_last_successful_drill_timestamp_seconds", instance_guid=g["orders"]) == \
        ago(2).timestamp()
    assert v("backup_catalog_last_drill_failed", instance_guid=g["orders"]) == 1
    assert v("backup_catalog_last_drill_duration_seconds", instance_guid=g["orders"]) == 3.0
    assert v("backup_catalog_last_drill_failed", instance_guid=g["reports"]) == 0
    assert ("backup_catalog_last_drill_failed", (("instance_guid", g["billing"]),)) not in samples
    assert v("backup_catalog_drills", state="passed") == 2 and v("backup_catalog_drills", state="failed") == 1
    assert v("backup_catalog_purge_reclaimed_bytes_total") == 1024
    assert v("backup_catalog_purge_deleted_objects_total") == 12
    assert v("backup_catalog_purges", outcome="done") == 1
    assert v("backup_catalog_purge_instances", state="due") == 1
    assert v("backup_catalog_purge_instances", state="held") == 1
    assert v("backup_catalog_purge_due_bytes") == 8 * (16 << 20), "legacy: no backups, WAL segments 2..9"
    assert v("backup_catalog_coverage_status", instance_guid=g["orders"]) == 2
    assert sum(v("backup_catalog_coverage_instances", status=s) for s in ("ok", "warning", "critical")) == len(g)
    assert v("backup_catalog_instances", state="deleted") == 2


async def test_metrics_one_statement(pool: asyncpg.Pool) -> None:
    """However many instances, a scrape with current facts is one catalog statement."""
    await big_fleet(pool, 40)
    settings = api_settings()
    await coverage.all_rows(pool, settings)                 # facts written through once
    statements: list[str] = []
    async with pool.acquire() as conn:
        conn.add_query_logger(lambda q: statements.append(q.query))
        from backup_catalog.api.metrics import fleet_text
        text = await fleet_text(conn, settings, datetime.now(UTC))   # type: ignore[arg-type]
    reads = [q for q in statements if q.lstrip().upper().startswith(("SELECT", "WITH"))]
    assert len(reads) == 1, statements            # besides BEGIN, SET LOCAL jit = off, COMMIT
    assert text.count("backup_catalog_coverage_status{") == 40
    await asyncio.sleep(0)


# -- CLI ---------------------------------------------------------------------------------------------

def _cli(args: list[str], dsn: str) -> Any:
    import os
    import subprocess
    import sys
    env = {**os.environ, "CATALOG_DSN": dsn}
    return subprocess.run([sys.executable, "-m", "backup_catalog.cli", "report", "coverage", *args], env=env,
                          capture_output=True, text=True, timeout=120)


async def test_cli_pages_filters_and_csv(pool: asyncpg.Pool, catalog_dsn: str) -> None:
    await big_fleet(pool, 30, datetime.now(UTC))
    p = await asyncio.to_thread(_cli, ["--json", "--status", "ok", "--limit", "4"], catalog_dsn)
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["summary"]["instances"] == 30 and len(doc["instances"]) == 4 and doc["next_cursor"]
    assert {r["status"] for r in doc["instances"]} == {"ok"}
    p2 = await asyncio.to_thread(_cli, ["--json", "--status", "ok", "--limit", "4", "--cursor", doc["next_cursor"]],
                                 catalog_dsn)
    doc2 = json.loads(p2.stdout)
    assert {r["instance_guid"] for r in doc2["instances"]}.isdisjoint(r["instance_guid"] for r in doc["instances"])
    p = await asyncio.to_thread(_cli, ["--csv", "--space", "space-1"], catalog_dsn)
    parsed = list(csv.DictReader(io.StringIO(p.stdout)))
    assert p.returncode == 0 and len(parsed) == 10 and {r["space_guid"] for r in parsed} == {"space-1"}
    p = await asyncio.to_thread(_cli, ["--deleted"], catalog_dsn)
    assert p.returncode == 0 and "fleet: 30 instance(s)" in p.stdout and "2 of 2 matching" in p.stdout
    p = await asyncio.to_thread(_cli, ["--json", "--cursor", "garbage"], catalog_dsn)
    assert p.returncode == 2 and json.loads(p.stdout)["error"]["code"] == "usage"
