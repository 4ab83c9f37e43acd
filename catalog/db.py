"""Connecting to the catalog database: the asyncpg pool, the pg_lsn codec and the schema."""
from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from catalog import tracing
from catalog.errors import CatalogUnavailable
from recovery.lsn import Lsn

Conn = asyncpg.Connection | PoolConnectionProxy   # a connection, or what Pool.acquire() yields
Db = asyncpg.Pool | Conn
DbLike = Db


def schema_sql() -> str:
    """The complete current catalog DDL (``schema.sql``, shipped as package data of ``catalog``)."""
    return Path(__file__).with_name("schema.sql").read_text(encoding="utf-8")


def _encode_lsn(value: object) -> bytes:
    if isinstance(value, Lsn):
        return value.value.to_bytes(8, "big")
    if isinstance(value, int):
        return Lsn(value).value.to_bytes(8, "big")
    if isinstance(value, str):
        return Lsn.parse(value).value.to_bytes(8, "big")
    raise TypeError(f"cannot encode {type(value).__name__} as pg_lsn")


def _decode_lsn(data: bytes) -> Lsn:
    return Lsn(int.from_bytes(data, "big"))


async def register_codecs(conn: asyncpg.Connection) -> None:
    """Map ``pg_lsn`` to :class:`Lsn` via its binary wire format (an unsigned 64-bit big-endian integer).

    asyncpg's built-in pg_lsn codec is binary int8 (signed), which cannot hold LSNs >= 2**63; the text
    format would cost a parse per value (a year of backups is 730 LSNs per snapshot).
    """
    await conn.set_type_codec("pg_lsn", schema="pg_catalog", encoder=_encode_lsn,
                              decoder=_decode_lsn, format="binary")


def describe_dsn(dsn: str) -> str:
    """Where a DSN points, without credentials.

    >>> describe_dsn("postgresql://u:secret@db.example:6432/cat?sslmode=require")
    'host=db.example port=6432 dbname=cat user=u'
    >>> describe_dsn("postgresql://postgres@/backup_catalog?host=/tmp/pg/run")
    'host=/tmp/pg/run port=5432 dbname=backup_catalog user=postgres'
    """
    try:
        u = urlsplit(dsn)
        q = {k: v[-1] for k, v in parse_qs(u.query).items()}
        host = unquote(u.hostname or "") or q.get("host") or "localhost"
        port = str(u.port) if u.port else q.get("port", "5432")
        db = unquote(u.path.lstrip("/")) or q.get("dbname") or "(default)"
        user = unquote(u.username or "") or q.get("user") or "(default)"
    except ValueError:
        return "(unparseable DSN)"
    return f"host={host} port={port} dbname={db} user={user}"


def _password_of(dsn: str) -> str | None:
    try:
        u = urlsplit(dsn)
        return u.password or parse_qs(u.query).get("password", [None])[-1]
    except ValueError:
        return None


def unavailable(dsn: str, exc: BaseException) -> CatalogUnavailable:
    """A CatalogUnavailable naming where we tried to connect and why, never the password."""
    reason = str(exc) or type(exc).__name__
    password = _password_of(dsn)
    if password:
        reason = reason.replace(password, "***")
    return CatalogUnavailable(f"catalog database unavailable ({describe_dsn(dsn)}): {reason}")


async def _no_session_state(conn: asyncpg.Connection) -> None:
    """Pool reset on release, after asyncpg's own (which rolls back an open transaction).

    The catalog keeps no session state on a connection: no SET, LISTEN, WITH HOLD cursors or
    session-level advisory locks (leases are rows; locks are transaction-scoped). So the default
    reset query (``RESET ALL; UNLISTEN *; CLOSE ALL; pg_advisory_unlock_all()``) would only cost a
    round trip per request; tests/catalog/test_db.py checks that nothing of the kind survives a release.
    """


async def open_pool(dsn: str, **kw: Any) -> asyncpg.Pool:
    """Open a pool with the pg_lsn codec on every connection.

    :raises CatalogUnavailable: the server cannot be reached or refuses us.
    """
    user_init = kw.pop("init", None)

    async def init(conn: asyncpg.Connection) -> None:
        await register_codecs(conn)
        tracing.instrument_connection(conn)
        if user_init is not None:
            await user_init(conn)

    kw.setdefault("min_size", 1)
    kw.setdefault("max_size", 10)
    kw.setdefault("timeout", 10)
    kw.setdefault("reset", _no_session_state)
    # JIT off from the start (a startup parameter, not a SET): the catalog's queries are short, where JIT's
    # compile time only adds latency, and asyncpg's type introspection (the first bigint[] parameter, say)
    # otherwise turns it off and on again with a session-level set_config that would outlive the release
    kw["server_settings"] = {"jit": "off", **(kw.get("server_settings") or {})}
    try:
        return await asyncpg.create_pool(dsn, init=init, **kw)
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as exc:
        raise unavailable(dsn, exc) from None


async def connect(dsn: str, **kw: Any) -> asyncpg.Connection:
    """One connection with the codecs registered (for CLI one-shots and maintenance)."""
    kw.setdefault("timeout", 10)
    try:
        conn: asyncpg.Connection = await asyncpg.connect(dsn, **kw)
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as exc:
        raise unavailable(dsn, exc) from None
    await register_codecs(conn)
    tracing.instrument_connection(conn)
    return conn


@asynccontextmanager
async def transaction(db: Db) -> AsyncIterator[Conn]:
    """A connection inside a transaction (a savepoint when ``db`` is already in one)."""
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn, conn.transaction():
            yield conn
    else:
        async with db.transaction():
            yield db
