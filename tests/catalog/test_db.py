from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import pytest

from catalog.db import open_pool
from catalog.errors import CatalogUnavailable
from catalog.migrate import init_schema
from recovery.lsn import Lsn

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_init_schema_is_idempotent(pool) -> None:
    await init_schema(pool)
    await init_schema(pool)
    async with pool.acquire() as conn:
        await init_schema(conn)
    from catalog.migrate import load_migrations
    versions = [m.version for m in load_migrations()]
    assert [r[0] for r in await pool.fetch("SELECT version FROM schema_version ORDER BY 1")] == versions
    tables = {r["tablename"] for r in await pool.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {"instances", "instance_names", "backups", "wal_runs", "scan_state", "scan_leases", "scan_runs"} <= tables


@pytest.mark.parametrize("text", ["0/0", "0/2000028", "16/B374D848", "7FFFFFFF/FFFFFFFF", "80000000/0",
                                  "FFFFFFFF/FFFFFFFF"])
async def test_lsn_round_trips_through_pg_lsn(pool, text: str) -> None:
    lsn = Lsn.parse(text)
    assert await pool.fetchval("SELECT $1::pg_lsn", lsn) == lsn
    assert await pool.fetchval("SELECT $1::pg_lsn::text", lsn) == text
    assert await pool.fetchval(f"SELECT '{text}'::pg_lsn") == lsn
    # order in SQL is unsigned, like Lsn's
    assert await pool.fetchval("SELECT $1::pg_lsn >= '0/0'::pg_lsn", lsn) is True


async def test_lsn_above_2_63_orders_unsigned_in_sql(pool) -> None:
    hi, lo = Lsn.parse("FFFFFFFF/FFFFFFFF"), Lsn.parse("1/0")
    assert await pool.fetchval("SELECT $1::pg_lsn > $2::pg_lsn", hi, lo) is True


async def test_unreachable_server_is_catalog_unavailable_without_password() -> None:
    with pytest.raises(CatalogUnavailable) as exc:
        await open_pool("postgresql://alice:s3cr3t-sentinel@127.0.0.1:1/cat", timeout=2)
    msg = str(exc.value)
    assert "s3cr3t-sentinel" not in msg
    assert "host=127.0.0.1" in msg and "port=1" in msg and "dbname=cat" in msg


async def test_wrong_password_message_redacts_password(catalog_dsn: str) -> None:
    # the embedded cluster trusts its socket, so use a missing database to provoke a server error
    u = urlsplit(catalog_dsn)
    netloc = f"{u.username or 'postgres'}:pw-sentinel@{u.netloc.rpartition('@')[2]}"
    bad = urlunsplit((u.scheme, netloc, "/no_such_db", u.query, ""))
    with pytest.raises(CatalogUnavailable) as exc:
        await open_pool(bad, timeout=5)
    assert "pw-sentinel" not in str(exc.value)
    assert "no_such_db" in str(exc.value)



async def test_released_connections_carry_no_session_state(catalog_dsn: str, pool) -> None:
    """The pool skips asyncpg's reset query (catalog.db._no_session_state): every catalog operation must
    leave a connection as it found it — no session settings, listeners, cursors or advisory locks."""
    from backup_catalog.usecases import backups
    from catalog import repo, scancache
    from recovery.target import make_target
    from tests.catalog.factories import backup, ref, scan, storage, t

    one = await open_pool(catalog_dsn, min_size=1, max_size=1)
    try:
        await init_schema(one)
        await repo.register_instance(one, ref("sess-1", name="sess"), storage(), at=t(0))
        await repo.save_scan(one, "sess-1", scan(backups=(backup("F1"),)))
        await scancache.refresh(one, "sess-1")
        await repo.load_plan_inputs(one, "sess-1", make_target(latest=True), 4)
        await backups.backups_body(one, "space-1", "sess")
        token = await repo.try_acquire_lease(one, "sess-lease", "me", 30)
        assert token is not None and await repo.release_lease(one, "sess-lease", "me", token)
        with pytest.raises(ZeroDivisionError):
            async with one.acquire() as c, c.transaction():
                await c.execute("SELECT pg_advisory_xact_lock(42)")
                raise ZeroDivisionError
        async with one.acquire() as c:
            state = await c.fetchrow(
                # asyncpg's type introspection (an array parameter) sets jit off at session level even when it
                # is off already: the pool starts connections with jit off, so that one changes nothing
                """SELECT (SELECT count(*) FROM pg_settings WHERE source = 'session'
                           AND NOT (name = 'jit' AND setting = 'off')) AS settings,
                          (SELECT count(*) FROM pg_listening_channels()) AS listeners,
                          (SELECT count(*) FROM pg_cursors WHERE is_holdable) AS cursors,
                          (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid())
                            AS advisory""")
            assert dict(state) == {"settings": 0, "listeners": 0, "cursors": 0, "advisory": 0}
            assert not c.is_in_transaction()
    finally:
        await one.close()
