"""A catalog of the previous release (issue 21): its schema (0001_baseline, = `git show RELEASE:schema.sql`)
and what that release wrote into it: instances with a hold, name history, drills, purges, scan results and
the derived rows it computed."""
from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from catalog import migrate

RELEASE = "60a5c60"           # the last released commit on main: its schema.sql is 0001_baseline


def _with_database(dsn: str, db: str) -> str:
    u = urlsplit(dsn)
    return urlunsplit((u.scheme, u.netloc, "/" + db, u.query, u.fragment))


async def database(catalog_dsn: str) -> AsyncIterator[str]:
    """An empty database on the test server (dropped afterwards): its DSN."""
    admin = await asyncpg.connect(catalog_dsn)
    name = f"bc_mig_{uuid.uuid4().hex[:10]}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _with_database(catalog_dsn, name)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def release_catalog(dsn: str) -> None:
    """A catalog as the previous release made it: its schema.sql, applied by its own init_schema."""
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute(migrate.load_migrations()[0].sql)
    finally:
        await conn.close()


# What the previous release wrote: one instance renamed (name history), held, drilled twice, another one
# deleted and purged, one refused purge; its scan results and the derived rows computed by that release.
FILL = """
INSERT INTO instances (instance_guid, space_guid, org_guid, bucket, prefix, layout, detected_layout, stanza,
                       detected_stanza, pg_version, system_id, seg_size, created_at, registered_at,
                       hold_at, hold_reason)
VALUES ('inst-a', 'space-1', 'org-1', 'backups', 'a/', 'auto', 'pgbackrest', 'main', 'main', 150000,
        7300000000000000001, 16777216, '2025-06-01Z', '2025-06-01Z', '2025-11-01Z', 'legal hold #42');
INSERT INTO instances (instance_guid, space_guid, bucket, prefix, layout, registered_at, deleted_at, purged_at,
                       purge_policy)
VALUES ('inst-b', 'space-1', 'backups', 'b/', 'walg', '2025-01-01Z', '2025-03-01Z', '2025-04-01Z',
        'DELETED_RETENTION_DAYS=30');
INSERT INTO instance_names (space_guid, name, instance_guid, valid_from, valid_to) VALUES
  ('space-1', 'orders', 'inst-b', '-infinity', '2025-03-01Z'),
  ('space-1', 'orders-old', 'inst-a', '2025-06-01Z', '2025-07-01Z'),
  ('space-1', 'orders', 'inst-a', '2025-07-01Z', 'infinity');
INSERT INTO scan_state (instance_guid, cursors, last_scan, last_full_scan, generation)
VALUES ('inst-a', '{}', '2025-12-01Z', '2025-12-01Z', 3);
INSERT INTO backups (instance_guid, label, type, status, timeline, start_lsn, stop_lsn, start_time, stop_time,
                     pg_version, system_id)
VALUES ('inst-a', '20251201-000000F', 'full', 'done', 1, '0/2000028', '0/2000138', '2025-12-01 00:00Z',
        '2025-12-01 00:05Z', 150000, 7300000000000000001);
INSERT INTO wal_runs (instance_guid, timeline, first_segno, last_segno) VALUES ('inst-a', 1, 2, 9);
INSERT INTO derived_views (instance_guid, generation, last_scan, windows, archive)
VALUES ('inst-a', 3, '2025-12-01Z', '[]', '{"computed":"by the previous release"}');
INSERT INTO instance_facts (instance_guid, generation, last_scan, backups_total, backups_restorable,
                            latest_end_exact, holes_count, archive_bytes, windows, holes)
VALUES ('inst-a', 3, '2025-12-01Z', 99, 99, true, 0, 0, '[]', '[]');
INSERT INTO drills (instance_guid, requested_at, started_at, finished_at, state, trigger, backup_label, reason,
                    duration_s)
VALUES ('inst-a', '2025-11-01Z', '2025-11-01Z', '2025-11-01 00:10Z', 'passed', 'scheduled', '20251201-000000F',
        NULL, 600),
       ('inst-a', '2025-11-08Z', '2025-11-08Z', '2025-11-08 00:02Z', 'failed', 'manual', '20251201-000000F',
        'replay stopped at 000000010000000000000005', 120);
INSERT INTO purges (instance_guid, bucket, prefix, policy, started_at, finished_at, objects_deleted,
                    bytes_deleted, outcome, prefixes)
VALUES ('inst-b', 'backups', 'b/', 'DELETED_RETENTION_DAYS=30', '2025-04-01Z', '2025-04-01 00:01Z', 120, 123456,
        'done', '{b/basebackups_005/,b/wal_005/}');
INSERT INTO purges (instance_guid, bucket, prefix, policy, outcome, reason)
VALUES ('inst-a', 'backups', 'a/', 'DELETED_RETENTION_DAYS=30', 'refused', 'instance is held');
"""
