"""Catalog schema versions: ordered migrations (``catalog/migrations/NNNN_<name>.sql``), ``db upgrade``/``db status``.

A fresh catalog gets ``schema.sql`` (the complete current schema) and is marked with every migration this
code knows. An existing catalog gets each migration it has not recorded in ``schema_version``, in numeric
order (gaps allowed), each in its own transaction under a transaction-scoped advisory lock that serialises
concurrent upgraders (two ``serve`` starting at once): inside the lock the applied set is read again, so a
migration another process applied meanwhile is skipped, never run twice.

An upgrade never loses what a rescan cannot rebuild: around each migration the rows of the protected tables
(instances with their holds, name history, drills, purges) are fingerprinted, column by pre-existing column,
and the migration is rolled back if any row or column changed or went. A migration may empty derived tables
(caches and scan results) by declaring them in a header line ``-- rebuilds: table, table``; the upgrade
reports which, and what rebuilds them. A catalog recording a version this code does not know is newer than
it: every command refuses it (:class:`SchemaTooNew`).
"""
from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from catalog.db import Conn, schema_sql
from catalog.errors import CatalogError

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
SCHEMA_LOCK = 0x6263_6174_616C_6F67 & 0x7FFF_FFFF_FFFF_FFFF  # "bcatalog": serialises schema changes
#: The catalog's memory: nothing a rescan can rebuild. Extend when a table of that kind is added.
PROTECTED = ("instances", "instance_names", "drills", "purges")
#: Derived tables a migration may empty, and what refills them.
DERIVED = {
    "scan_cache": "the next read of the instance",
    "scan_cache_facts": "the next scan or coverage report",
    # their names until 0009_scan_cache (0002_ops empties them under these names, before 0009 renames them)
    "derived_views": "the next read of the instance",
    "instance_facts": "the next scan or coverage report",
    "backups": "the next scan", "timelines": "the next scan", "wal_runs": "the next scan",
    "wal_conflicts": "the next scan", "window_edges": "the next scan", "scan_state": "the next scan",
}
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_REBUILDS = re.compile(r"^--\s*rebuilds:\s*(.*)$", re.MULTILINE)


class MigrationError(CatalogError):
    """A migration file is malformed, or a migration would lose the catalog's memory."""

    code = "migration_failed"


class SchemaTooNew(CatalogError):
    """The catalog records schema versions this code does not know: a newer release upgraded it."""

    code = "schema_newer"


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str
    rebuilds: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.version:04d}_{self.name}"


@dataclass(frozen=True, slots=True)
class SchemaStatus:
    applied: tuple[int, ...]           # recorded in schema_version, ascending
    head: int                          # the highest migration this code knows
    pending: tuple[Migration, ...]     # known, not applied, in order
    newer: tuple[int, ...]             # applied versions above head: a newer release's

    @property
    def current(self) -> int | None:
        return self.applied[-1] if self.applied else None

    @property
    def fresh(self) -> bool:
        return not self.applied

    def to_dict(self) -> dict[str, object]:
        return {"version": self.current, "head": self.head, "applied": list(self.applied),
                "pending": [m.label for m in self.pending], "newer": list(self.newer),
                "up_to_date": not self.pending and not self.newer and not self.fresh}


@dataclass(frozen=True, slots=True)
class UpgradeResult:
    created: bool                      # a fresh catalog was given schema.sql
    applied: tuple[str, ...]           # migrations this call applied (labels)
    rebuilds: tuple[str, ...]          # derived tables emptied, to be refilled
    version: int

    def to_dict(self) -> dict[str, object]:
        return {"created": self.created, "applied": list(self.applied), "version": self.version,
                "rebuilds": {t: DERIVED[t] for t in self.rebuilds}}

    def describe(self) -> str:
        if self.created:
            return f"catalog created at schema version {self.version}"
        if not self.applied:
            return f"catalog schema is up to date (version {self.version})"
        text = f"catalog upgraded to schema version {self.version}: applied {', '.join(self.applied)}"
        for t in self.rebuilds:
            text += f"; {t} emptied, rebuilt by {DERIVED[t]}"
        return text


# ---- pure: files and status ------------------------------------------------------------------------------

def parse_migration(filename: str, sql: str) -> Migration:
    """One migration from its file name (``NNNN_<name>.sql``) and text.

    >>> parse_migration("0002_ops.sql", "-- rebuilds: derived_views, instance_facts\\nSELECT 1;").rebuilds
    ('derived_views', 'instance_facts')
    """
    m = _NAME.match(filename)
    if m is None:
        raise MigrationError(f"migration file {filename!r}: the name must be NNNN_<lowercase_name>.sql")
    rebuilds: list[str] = []
    for line in _REBUILDS.findall(sql):
        for table in (t.strip() for t in line.split(",")):
            if table in PROTECTED:
                raise MigrationError(f"migration {filename}: {table} is the catalog's memory; it cannot be rebuilt")
            if table not in DERIVED:
                raise MigrationError(f"migration {filename}: rebuilds unknown derived table {table!r} "
                                     f"(derived: {', '.join(DERIVED)})")
            rebuilds.append(table)
    return Migration(int(m.group(1)), m.group(2), sql, tuple(dict.fromkeys(rebuilds)))


def order_migrations(migrations: Iterable[Migration]) -> tuple[Migration, ...]:
    """Ascending by version; two files with one number are an error (gaps are fine)."""
    by_version: dict[int, Migration] = {}
    for m in migrations:
        if m.version in by_version:
            raise MigrationError(f"two migrations numbered {m.version:04d}: "
                                 f"{by_version[m.version].label} and {m.label}")
        by_version[m.version] = m
    if not by_version:
        raise MigrationError("no migrations found")
    return tuple(by_version[v] for v in sorted(by_version))


def status_of(applied: Iterable[int], migrations: tuple[Migration, ...]) -> SchemaStatus:
    """What a catalog that recorded ``applied`` lacks, and whether it is newer than ``migrations``."""
    done = tuple(sorted(set(applied)))
    head = migrations[-1].version
    if not done:
        return SchemaStatus((), head, migrations, ())
    have = set(done)
    return SchemaStatus(done, head, tuple(m for m in migrations if m.version not in have),
                        tuple(v for v in done if v > head))


def too_new(status: SchemaStatus) -> SchemaTooNew:
    return SchemaTooNew(f"the catalog's schema is newer than this release: it records version(s) "
                        f"{', '.join(map(str, status.newer))}, this release knows up to {status.head}; "
                        f"run the newer release (or restore the catalog's backup from before its upgrade)")


def load_migrations(directory: Path = MIGRATIONS_DIR) -> tuple[Migration, ...]:
    """The migration files of ``directory``, in order."""
    return order_migrations(parse_migration(p.name, p.read_text(encoding="utf-8"))
                            for p in directory.iterdir() if p.suffix == ".sql")


# ---- the catalog -----------------------------------------------------------------------------------------

async def applied_versions(conn: Conn | asyncpg.Pool) -> tuple[int, ...]:
    if await conn.fetchval("SELECT to_regclass('schema_version') IS NULL"):
        return ()
    rows = await conn.fetch("SELECT version FROM schema_version ORDER BY version")
    return tuple(int(r["version"]) for r in rows)


async def read_status(db: Conn | asyncpg.Pool, migrations: tuple[Migration, ...] | None = None) -> SchemaStatus:
    return status_of(await applied_versions(db), migrations or load_migrations())


async def _memory(conn: Conn) -> dict[str, tuple[tuple[str, ...], str, int]]:
    """Per protected table: its columns, a digest of every row over those columns, and the row count."""
    out: dict[str, tuple[tuple[str, ...], str, int]] = {}
    for table in PROTECTED:
        cols = tuple(r["attname"] for r in await conn.fetch(
            """SELECT attname FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0
               AND NOT attisdropped ORDER BY attname""", table))
        if not cols:
            continue
        digest, n = await _memory_of(conn, table, cols)
        out[table] = (cols, digest, n)
    return out


async def _check_memory(conn: Conn, m: Migration, before: dict[str, tuple[tuple[str, ...], str, int]]) -> None:
    after = await _memory(conn)
    for table, (cols, digest, n) in before.items():
        if table not in after:
            raise MigrationError(f"migration {m.label} drops table {table}, the catalog's memory: refused")
        now_cols = set(after[table][0])
        lost = [c for c in cols if c not in now_cols]
        if lost:
            raise MigrationError(f"migration {m.label} drops {table}.{', '.join(lost)}: refused")
        again = await _memory_of(conn, table, cols)
        if again != (digest, n):
            raise MigrationError(f"migration {m.label} changes or deletes rows of {table} "
                                 f"({n} rows before, {again[1]} after): refused")


async def _memory_of(conn: Conn, table: str, cols: tuple[str, ...]) -> tuple[str, int]:
    row = ", ".join(f'"{c}"' for c in cols)
    r = await conn.fetchrow(f"""SELECT count(*) AS n, md5(coalesce(string_agg(x, E'\\n' ORDER BY x), ''))
                                AS digest FROM (SELECT ROW({row})::text AS x FROM {table}) t""")
    assert r is not None
    return str(r["digest"]), int(r["n"])


async def _lock(conn: Conn) -> None:
    await conn.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK)


async def _apply(db: Conn, m: Migration) -> None:
    """One migration in its own transaction, checked to keep the catalog's memory, then recorded."""
    async with db.transaction():
        await _lock(db)
        before = await _memory(db)
        try:
            await db.execute(m.sql)
        except asyncpg.PostgresError as exc:
            raise MigrationError(f"migration {m.label} failed: {exc}") from None
        for table in m.rebuilds:     # a table renamed by a later migration (0009) has nothing here to empty
            if await db.fetchval("SELECT to_regclass($1) IS NOT NULL", table):
                await db.execute(f"DELETE FROM {table}")
        await _check_memory(db, m, before)
        await db.execute("INSERT INTO schema_version (version) VALUES ($1)", m.version)


async def upgrade(db: Conn | asyncpg.Pool, *, migrations: tuple[Migration, ...] | None = None,
                  schema: str | None = None, on_step: Callable[[str], None] | None = None) -> UpgradeResult:
    """Bring the catalog to the newest schema this code knows.

    :raises SchemaTooNew: the catalog records a version above the newest migration.
    :raises MigrationError: a migration failed (rolled back; earlier ones stay applied) or would lose memory.
    """
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn:
            return await upgrade(conn, migrations=migrations, schema=schema, on_step=on_step)
    ms = migrations or load_migrations()
    status = status_of(await applied_versions(db), ms)
    if status.newer:
        raise too_new(status)
    created = False
    if status.fresh:
        async with db.transaction():
            await _lock(db)
            if not await applied_versions(db):
                if await db.fetchval("SELECT to_regclass('instances') IS NOT NULL"):
                    raise MigrationError("the catalog has tables but no schema_version rows: it was not made by "
                                         "backup-catalog (or by a release before schema versions)")
                await db.execute(schema if schema is not None else schema_sql())
                await db.execute("INSERT INTO schema_version (version) SELECT unnest($1::int[]) "
                                 "ON CONFLICT (version) DO NOTHING", [m.version for m in ms])
                created = True
        status = status_of(await applied_versions(db), ms)
    applied: list[str] = []
    rebuilds: list[str] = []
    if status.pending:
        # one upgrader at a time for the whole run (a session lock; each migration's transaction takes the
        # same key again): a second one waits, then finds nothing pending — never interleaved step by step
        await db.execute("SELECT pg_advisory_lock($1)", SCHEMA_LOCK)
        try:
            for m in status_of(await applied_versions(db), ms).pending:
                await _apply(db, m)
                applied.append(m.label)
                rebuilds.extend(t for t in m.rebuilds if t not in rebuilds)
                if on_step is not None:
                    on_step(m.label)
        finally:
            with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                await db.execute("SELECT pg_advisory_unlock($1)", SCHEMA_LOCK)
    final = status_of(await applied_versions(db), ms)
    if final.newer:
        raise too_new(final)
    return UpgradeResult(created, tuple(applied), tuple(rebuilds), final.current or final.head)


async def ensure_current(db: Conn | asyncpg.Pool) -> UpgradeResult | None:
    """One small query when the catalog is current (short CLI commands, None); otherwise :func:`upgrade`."""
    ms = load_migrations()
    status = status_of(await applied_versions(db), ms)
    if status.newer:
        raise too_new(status)
    if not status.fresh and not status.pending:
        return None
    return await upgrade(db, migrations=ms)


# -- what the catalog's users call (tests, bench: a catalog at this release's schema) --------------------

async def init_schema(db: Conn | asyncpg.Pool) -> None:
    """Create the catalog (``schema.sql``) or upgrade it to the newest schema version (this module),
    serialised against concurrent callers.

    :raises SchemaTooNew: the catalog was upgraded by a newer release.
    """
    await upgrade(db)


async def ensure_schema(db: Conn | asyncpg.Pool) -> bool:
    """Like :func:`init_schema`, but one small query when the catalog is already current (short CLI
    commands). True when something was applied."""
    result = await ensure_current(db)
    return result is not None and (result.created or bool(result.applied))

