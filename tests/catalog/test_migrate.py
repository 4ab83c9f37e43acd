"""Schema versions and migrations (issue 21): schema.sql = baseline + migrations; a catalog of the previous
release upgraded without losing its memory; concurrent upgraders apply each migration once; a catalog of a
newer release is refused."""
from __future__ import annotations

import asyncio
import json
import re
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from catalog import migrate
from catalog.db import open_pool
from catalog.migrate import Migration, MigrationError, SchemaTooNew
from tests.catalog.releases import FILL, RELEASE, database, release_catalog

REPO = Path(__file__).resolve().parents[2]


# ---- pure ------------------------------------------------------------------------------------------------

def m(version: int, sql: str = "SELECT 1", name: str = "x") -> Migration:
    return migrate.parse_migration(f"{version:04d}_{name}.sql", sql)


def test_migration_file_names() -> None:
    assert m(7, name="events").label == "0007_events"
    for bad in ("7_x.sql", "0007-x.sql", "0007_X.sql", "0007_x.txt", "00007_x.sql"):
        with pytest.raises(MigrationError, match="NNNN_"):
            migrate.parse_migration(bad, "")


def test_rebuilds_names_only_derived_tables() -> None:
    assert m(2, "-- rebuilds: scan_cache,scan_cache_facts\n-- rebuilds: wal_runs\n").rebuilds == (
        "scan_cache", "scan_cache_facts", "wal_runs")
    for table in migrate.PROTECTED:
        with pytest.raises(MigrationError, match="memory"):
            m(2, f"-- rebuilds: {table}")
    with pytest.raises(MigrationError, match="unknown derived table 'nope'"):
        m(2, "-- rebuilds: nope")


def test_order_allows_gaps_and_refuses_duplicates() -> None:
    assert [x.version for x in migrate.order_migrations([m(5), m(1), m(3)])] == [1, 3, 5]
    with pytest.raises(MigrationError, match="two migrations numbered 0003: 0003_a and 0003_b"):
        migrate.order_migrations([m(3, name="a"), m(3, name="b")])
    with pytest.raises(MigrationError, match="no migrations"):
        migrate.order_migrations([])


def test_status() -> None:
    ms = migrate.order_migrations([m(1), m(2), m(5), m(6)])
    fresh = migrate.status_of([], ms)
    assert fresh.fresh and fresh.current is None and fresh.head == 6 and not fresh.to_dict()["up_to_date"]
    s = migrate.status_of([1, 5], ms)                 # 0002 landed after 0005 was applied: still pending
    assert s.current == 5 and [x.version for x in s.pending] == [2, 6] and s.newer == ()
    assert s.to_dict()["pending"] == ["0002_x", "0006_x"]
    done = migrate.status_of([1, 2, 5, 6], ms)
    assert done.pending == () and done.to_dict()["up_to_date"]
    newer = migrate.status_of([1, 2, 5, 6, 9], ms)
    assert newer.newer == (9,)
    assert "records version(s) 9, this release knows up to 6" in str(migrate.too_new(newer))


def test_shipped_migrations() -> None:
    ms = migrate.load_migrations()
    assert ms[0].label == "0001_baseline" and ms[1].label == "0002_ops"
    assert ms[1].rebuilds == ("derived_views", "instance_facts")


def test_baseline_is_the_previous_release_schema() -> None:
    try:
        release = subprocess.run(["git", "-C", str(REPO), "show", f"{RELEASE}:schema.sql"], check=True,
                                 capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("no git history here")
    assert migrate.load_migrations()[0].sql == release


def test_migrations_ship_as_package_data() -> None:
    text = (REPO / "pyproject.toml").read_text()
    assert '"migrations/*.sql"' in text


# ---- a catalog ---------------------------------------------------------------------------------------------

@pytest_asyncio.fixture(loop_scope="session")
async def new_db(catalog_dsn: str) -> AsyncIterator[str]:
    async for dsn in database(catalog_dsn):
        yield dsn


@pytest_asyncio.fixture(loop_scope="session")
async def other_db(catalog_dsn: str) -> AsyncIterator[str]:
    async for dsn in database(catalog_dsn):
        yield dsn


SHAPE = {
    "relations": """SELECT c.relname, c.relkind::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                    WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')""",
    "columns": """SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
                         pg_get_expr(d.adbin, d.adrelid), a.attidentity::text, a.attgenerated::text,
                         coalesce(co.collname, '')
                  FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
                  JOIN pg_namespace n ON n.oid = c.relnamespace
                  LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                  LEFT JOIN pg_collation co ON co.oid = a.attcollation AND co.collname <> 'default'
                  WHERE n.nspname = 'public' AND a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v')""",
    "constraints": """SELECT c.relname, k.conname, pg_get_constraintdef(k.oid) FROM pg_constraint k
                      JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
                      WHERE n.nspname = 'public'""",
    "indexes": "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'",
    "views": "SELECT viewname, definition FROM pg_views WHERE schemaname = 'public'",
    "functions": """SELECT p.proname, pg_get_functiondef(p.oid) FROM pg_proc p
                    JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public'""",
    "triggers": """SELECT c.relname, t.tgname, pg_get_triggerdef(t.oid) FROM pg_trigger t
                   JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE n.nspname = 'public' AND NOT t.tgisinternal""",
    "types": """SELECT t.typname, t.typtype::text, coalesce(string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder), '')
                FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace LEFT JOIN pg_enum e ON e.enumtypid = t.oid
                WHERE n.nspname = 'public' AND t.typtype IN ('e', 'd', 'c')
                  AND NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.reltype = t.oid) GROUP BY 1, 2""",
    "versions": "SELECT version FROM schema_version",
}


async def shape(dsn: str) -> dict[str, list[tuple[object, ...]]]:
    """The catalog's structure, independent of the order in which it was built (column order aside)."""
    conn = await asyncpg.connect(dsn)
    try:
        return {k: sorted(tuple(r) for r in await conn.fetch(q)) for k, q in SHAPE.items()}
    finally:
        await conn.close()


async def test_schema_sql_is_baseline_plus_migrations(new_db: str, other_db: str) -> None:
    fresh = await asyncpg.connect(new_db)
    try:
        result = await migrate.upgrade(fresh)
    finally:
        await fresh.close()
    assert result.created and result.applied == ()
    await release_catalog(other_db)
    old = await asyncpg.connect(other_db)
    try:
        upgraded = await migrate.upgrade(old)
    finally:
        await old.close()
    assert not upgraded.created and upgraded.applied == tuple(x.label for x in migrate.load_migrations()[1:])
    a, b = await shape(new_db), await shape(other_db)
    for part in SHAPE:
        assert a[part] == b[part], f"schema.sql and baseline + migrations differ in {part}"
    assert a["versions"] == [(x.version,) for x in migrate.load_migrations()]     # marked at the head


async def test_upgrade_of_a_previous_release_catalog_keeps_its_memory(new_db: str) -> None:
    from backup_catalog.usecases import backups
    from catalog import drills, names, purges

    await release_catalog(new_db)
    conn = await asyncpg.connect(new_db)
    try:
        await conn.execute(FILL)
        assert [r[0] for r in await conn.fetch("SELECT version FROM schema_version")] == [1]
    finally:
        await conn.close()

    pool = await open_pool(new_db, min_size=1, max_size=4)
    try:
        before = await migrate.read_status(pool)
        assert before.current == 1 and before.pending[0].label == "0002_ops"
        result = await migrate.upgrade(pool)
        assert result.applied == tuple(x.label for x in before.pending) and not result.created
        assert {"derived_views", "instance_facts"} <= set(result.rebuilds)
        assert "derived_views emptied, rebuilt by the next read of the instance" in result.describe()
        assert await pool.fetchval("SELECT count(*) FROM scan_cache") == 0    # emptied by 0002, renamed by 0009
        assert await pool.fetchval("SELECT count(*) FROM scan_cache_facts") == 0
        assert await pool.fetchval("SELECT to_regclass('derived_views')") is None
        assert await pool.fetchval("SELECT to_regclass('schema_fingerprint')") is None

        # read by the current code: instances, holds, name history, drills, purges intact
        recs = {r.guid: r for r in await names.list_instances(pool)}
        assert set(recs) == {"inst-a", "inst-b"}
        assert recs["inst-a"].ref.name == "orders" and recs["inst-a"].hold_reason == "legal hold #42"
        assert recs["inst-b"].purge_policy == "DELETED_RETENTION_DAYS=30" and recs["inst-b"].ref.deleted_at
        from datetime import UTC, datetime
        assert (await names.resolve_name(pool, "space-1", "orders-old",
                                         at=datetime(2025, 6, 15, tzinfo=UTC))).record.guid == "inst-a"
        assert (await names.resolve_name(pool, "space-1", "orders",
                                         at=datetime(2025, 2, 1, tzinfo=UTC))).record.guid == "inst-b"
        assert await purges.hold_of(pool, "inst-a") is not None
        hist = await drills.history(pool, "inst-a")
        assert [d.state for d in hist] == ["failed", "passed"]
        assert hist[0].reason == "replay stopped at 000000010000000000000005"
        assert sorted((p.instance_guid, p.outcome, p.objects_deleted) for p in await purges.history(pool)) == [
            ("inst-a", "refused", 0), ("inst-b", "done", 120)]

        # derived tables rebuilt by a read
        doc = json.loads(await backups.backups_body(pool, "space-1", "orders"))
        entry = next(e for e in doc["instances"] if e["instance_guid"] == "inst-a")
        assert [b["label"] for b in entry["backups"]] == ["20251201-000000F"]
        view = await pool.fetchrow("SELECT archive, generation FROM scan_cache WHERE instance_guid = 'inst-a'")
        assert view is not None and view["generation"] == 3 and "previous release" not in view["archive"]
        assert await pool.fetchval("SELECT backups_total FROM scan_cache_facts WHERE instance_guid = 'inst-a'") == 1

        # a second upgrade is a no-op
        stamps = await pool.fetch("SELECT version, applied_at FROM schema_version ORDER BY version")
        again = await migrate.upgrade(pool)
        assert again.applied == () and not again.created and again.rebuilds == ()
        assert again.describe() == f"catalog schema is up to date (version {again.version})"
        assert await pool.fetch("SELECT version, applied_at FROM schema_version ORDER BY version") == stamps
        assert await pool.fetchval("SELECT count(*) FROM scan_cache") == 1
    finally:
        await pool.close()


async def test_concurrent_upgraders_apply_each_migration_once(new_db: str) -> None:
    """Two upgraders at once on a catalog two (non-idempotent, slow) migrations behind: each is run once."""
    ms = migrate.load_migrations() + (
        m(9001, "CREATE TABLE mig_once (x int); SELECT pg_sleep(0.3);", "slow_a"),
        m(9002, "ALTER TABLE mig_once ADD COLUMN y int; SELECT pg_sleep(0.3);", "slow_b"))
    boot = await asyncpg.connect(new_db)
    try:
        await migrate.upgrade(boot)                       # at the shipped head: 9001 and 9002 pending
    finally:
        await boot.close()
    conns = [await asyncpg.connect(new_db) for _ in range(2)]
    try:
        one, two = await asyncio.gather(*(migrate.upgrade(c, migrations=ms) for c in conns))
    finally:
        for c in conns:
            await c.close()
    assert sorted(one.applied + two.applied) == ["9001_slow_a", "9002_slow_b"]
    assert one.version == two.version == 9002


@pytest.mark.parametrize("sql, what", [
    ("DELETE FROM instance_names WHERE valid_to <> 'infinity'", "changes or deletes rows of instance_names"),
    ("UPDATE instances SET hold_at = NULL, hold_reason = NULL", "changes or deletes rows of instances"),
    ("ALTER TABLE drills DROP COLUMN reason", "drops drills.reason"),
    ("DROP TABLE purges", "drops table purges"),
    ("SELECT no_such_function()", "failed: function no_such_function() does not exist"),
])
async def test_a_migration_that_would_lose_memory_is_refused(new_db: str, sql: str, what: str) -> None:
    await release_catalog(new_db)
    conn = await asyncpg.connect(new_db)
    try:
        await conn.execute(FILL)
        await migrate.upgrade(conn)
        counts = await conn.fetchrow("SELECT (SELECT count(*) FROM instance_names) n, "
                                     "(SELECT count(*) FROM instances WHERE hold_at IS NOT NULL) h")
        bad = migrate.load_migrations() + (m(9100, sql, "bad"),)
        with pytest.raises(MigrationError, match=re.escape(f"migration 9100_bad {what}")):
            await migrate.upgrade(conn, migrations=bad)
        assert 9100 not in await migrate.applied_versions(conn)
        assert await conn.fetchrow("SELECT (SELECT count(*) FROM instance_names) n, "
                                   "(SELECT count(*) FROM instances WHERE hold_at IS NOT NULL) h") == counts
        assert await conn.fetchval("SELECT count(*) FROM drills WHERE reason IS NOT NULL") == 1
    finally:
        await conn.close()


async def test_a_newer_catalog_is_refused(new_db: str) -> None:
    conn = await asyncpg.connect(new_db)
    try:
        await migrate.upgrade(conn)
        await conn.execute("INSERT INTO schema_version (version) VALUES (9999)")
        with pytest.raises(SchemaTooNew, match=re.escape("records version(s) 9999")):
            await migrate.upgrade(conn)
        with pytest.raises(SchemaTooNew):
            await migrate.ensure_current(conn)
    finally:
        await conn.close()


async def test_tables_without_versions_are_not_taken_for_a_fresh_catalog(new_db: str) -> None:
    conn = await asyncpg.connect(new_db)
    try:
        await conn.execute("CREATE TABLE instances (x int)")
        with pytest.raises(MigrationError, match="no schema_version rows"):
            await migrate.upgrade(conn)
    finally:
        await conn.close()
