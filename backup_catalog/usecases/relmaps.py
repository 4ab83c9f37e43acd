"""Relation maps read from a drill's running clone (issue 20): per database, relfilenode → (OID, schema,
name, kind), from ``pg_class`` ⨝ ``pg_namespace``, as of the clone's last replayed commit. The drill calls
:func:`read_clone` after verification, before the clone is shut down; stored by :mod:`catalog.relmaps`."""
from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path

import asyncpg

from recovery.relnames import FIRST_NORMAL_OID, RelationEntry, RelationMap

log = logging.getLogger(__name__)

DATABASES_SQL = "SELECT oid, datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY oid"
# user relations, and catalogs a VACUUM FULL gave a new file; mapped catalogs (relfilenode 0) are not needed
MAP_SQL = ("SELECT c.relfilenode, c.oid, n.nspname, c.relname, c.relkind::text FROM pg_class c "
           "JOIN pg_namespace n ON n.oid = c.relnamespace "
           f"WHERE c.relfilenode <> 0 AND (c.oid >= {FIRST_NORMAL_OID} OR c.relfilenode >= {FIRST_NORMAL_OID})")
AS_OF_SQL = "SELECT pg_last_xact_replay_timestamp()"


async def _connect(sock: Path, port: int, database: str) -> asyncpg.Connection:
    return await asyncpg.connect(host=str(sock), port=port, user="postgres", database=database, timeout=10,
                                 command_timeout=60)


async def read_clone(sock: Path, port: int, fallback: datetime) -> list[RelationMap]:
    """Every connectable database's map; ``as_of`` is the last replayed commit's time (``fallback``
    when the clone replayed none)."""
    conn = await _connect(sock, port, "postgres")
    try:
        dbs = [(int(r["oid"]), str(r["datname"])) for r in await conn.fetch(DATABASES_SQL)]
        as_of = await conn.fetchval(AS_OF_SQL) or fallback
    finally:
        await conn.close()
    maps = []
    for oid, name in dbs:
        c = await _connect(sock, port, name)
        try:
            rows = await c.fetch(MAP_SQL)
        finally:
            await c.close()
        maps.append(RelationMap(oid, name, as_of, tuple(
            RelationEntry(int(r[0]), int(r[1]), str(r[2]), str(r[3]), str(r[4])) for r in rows)))
    return maps
