-- backup-catalog: the complete CURRENT schema, what a fresh catalog gets (catalog.migrate.upgrade), which then
-- records every migration of catalog/migrations in schema_version (it is at the highest one). An existing
-- catalog gets the migrations instead: every schema change is made here AND as a migration file
-- (tests/catalog/test_migrate.py checks that this file = 0001_baseline + the migrations). Keep it idempotent.
-- Times are timestamptz; WAL positions are pg_lsn; WAL coverage is stored as merged runs of segment
-- numbers (timeline, first_segno, last_segno), never one row per segment.

CREATE TABLE IF NOT EXISTS schema_version (
    version     integer PRIMARY KEY,
    applied_at  timestamptz NOT NULL DEFAULT now()
);

-- One row per database instance (service instance GUID).
CREATE TABLE IF NOT EXISTS instances (
    instance_guid    text PRIMARY KEY,
    space_guid       text NOT NULL,
    org_guid         text,
    bucket           text NOT NULL,
    prefix           text NOT NULL,
    layout           text NOT NULL DEFAULT 'auto',   -- requested: auto|pgbackrest|barman|walg|wale
    detected_layout  text,                           -- what the scanner found
    stanza           text,                           -- requested pgBackRest stanza / barman server name
    detected_stanza  text,                           -- what the scanner found
    pg_version       integer,
    system_id        numeric(20, 0),                 -- uint64: does not fit bigint
    seg_size         bigint,
    created_at       timestamptz,                    -- NULL: existed before the catalog learned of it
    registered_at    timestamptz NOT NULL DEFAULT now(),
    deleted_at       timestamptz,
    service_plan_guid text,                          -- the CF plan it was created with (name sync, PUT)
    CONSTRAINT instances_system_id_uint64 CHECK (system_id IS NULL OR system_id BETWEEN 0 AND 18446744073709551615)
);

-- Name history: (space, name) held by an instance during [valid_from, valid_to).
-- 'infinity' = still held; '-infinity' = since before the catalog knew.
CREATE TABLE IF NOT EXISTS instance_names (
    space_guid     text NOT NULL,
    name           text NOT NULL,
    instance_guid  text NOT NULL REFERENCES instances ON DELETE CASCADE,
    valid_from     timestamptz NOT NULL,
    valid_to       timestamptz NOT NULL DEFAULT 'infinity',
    PRIMARY KEY (space_guid, name, valid_from),
    CONSTRAINT instance_names_interval CHECK (valid_from < valid_to)
);
-- one current holder per (space, name); overlapping closed intervals are prevented by catalog.repo,
-- which serialises changes to a name with a row lock on the open interval.
CREATE UNIQUE INDEX IF NOT EXISTS instance_names_one_open
    ON instance_names (space_guid, name) WHERE valid_to = 'infinity';
CREATE INDEX IF NOT EXISTS instance_names_lookup
    ON instance_names (space_guid, name, valid_from DESC);
CREATE INDEX IF NOT EXISTS instance_names_by_instance
    ON instance_names (instance_guid, valid_from DESC);

CREATE TABLE IF NOT EXISTS backups (
    instance_guid    text NOT NULL REFERENCES instances ON DELETE CASCADE,
    label            text NOT NULL,
    type             text NOT NULL,
    status           text NOT NULL,
    timeline         integer,
    start_lsn        pg_lsn,
    stop_lsn         pg_lsn,
    start_time       timestamptz,
    stop_time        timestamptz,
    stop_time_exact  boolean NOT NULL DEFAULT true,
    depends_on       text[] NOT NULL DEFAULT '{}',
    parent           text,
    size_bytes       bigint,
    repo_size_bytes  bigint,
    pg_version       integer,
    system_id        numeric(20, 0),
    seg_size         bigint,
    error            text,
    metadata_key     text,
    PRIMARY KEY (instance_guid, label)
);

-- Rows of timeline TLI's history file, in file order (ordinal 0 = first line).
CREATE TABLE IF NOT EXISTS timelines (
    instance_guid  text NOT NULL REFERENCES instances ON DELETE CASCADE,
    tli            integer NOT NULL,
    ordinal        integer NOT NULL,
    parent         integer NOT NULL,
    switchpoint    pg_lsn NOT NULL,
    reason         text NOT NULL DEFAULT '',
    PRIMARY KEY (instance_guid, tli, ordinal)
);

-- Present WAL segments, merged into maximal runs per timeline.
CREATE TABLE IF NOT EXISTS wal_runs (
    instance_guid  text NOT NULL REFERENCES instances ON DELETE CASCADE,
    timeline       integer NOT NULL,
    first_segno    bigint NOT NULL,
    last_segno     bigint NOT NULL,
    PRIMARY KEY (instance_guid, timeline, first_segno),
    CONSTRAINT wal_runs_order CHECK (first_segno <= last_segno)
);

-- Segments replay cannot pass (planning through them is blocked): kind 'conflict', archived twice with
-- different content (for pgBackRest: archived twice at all, which its archive-get refuses); kind 'corrupt',
-- the scanner proved the bytes are not the segment the name says (windows end before it).
CREATE TABLE IF NOT EXISTS wal_conflicts (
    instance_guid  text NOT NULL REFERENCES instances ON DELETE CASCADE,
    timeline       integer NOT NULL,
    segno          bigint NOT NULL,
    detail         text NOT NULL DEFAULT '',
    PRIMARY KEY (instance_guid, timeline, segno)
);
ALTER TABLE wal_conflicts ADD COLUMN IF NOT EXISTS kind text NOT NULL DEFAULT 'conflict';  -- conflict|corrupt

-- Last commit/abort record at or before a segment (the true end of a recoverable window).
CREATE TABLE IF NOT EXISTS window_edges (
    instance_guid     text NOT NULL REFERENCES instances ON DELETE CASCADE,
    timeline          integer NOT NULL,
    segno             bigint NOT NULL,
    last_commit_time  timestamptz,
    last_commit_lsn   pg_lsn,
    exact             boolean NOT NULL,
    PRIMARY KEY (instance_guid, timeline, segno)
);

-- Incremental scan bookkeeping; `generation` is bumped by every committed scan (fencing).
CREATE TABLE IF NOT EXISTS scan_state (
    instance_guid    text PRIMARY KEY REFERENCES instances ON DELETE CASCADE,
    cursors          jsonb NOT NULL DEFAULT '{}',
    last_scan        timestamptz,
    last_full_scan   timestamptz,
    last_attempt     timestamptz,
    last_error       text,
    last_error_code  text,
    stale_since      timestamptz,
    unknown_objects  integer NOT NULL DEFAULT 0,
    issues           jsonb NOT NULL DEFAULT '[]',
    generation       bigint NOT NULL DEFAULT 0,
    requests         bigint NOT NULL DEFAULT 0
);

-- S3 event ingestion (issue 22, migration 0006): when the newest event was applied to an instance (its
-- coverage is "fresh as of" the later of this and last_scan), and per key the newest event applied
-- (its S3 sequencer, compared per key; keys of WAL, histories and backup metadata only). Rows older than
-- the longest SQS retention (14 days) are pruned by the reconcile; a rescan rebuilds nothing from them.
ALTER TABLE scan_state ADD COLUMN IF NOT EXISTS last_event timestamptz;
CREATE TABLE IF NOT EXISTS event_keys (
    instance_guid  text NOT NULL REFERENCES instances ON DELETE CASCADE,
    key            text NOT NULL,
    action         text NOT NULL CHECK (action IN ('created', 'removed')),
    sequencer      text,                      -- NULL: the store sends none (moto, some MinIO/RGW)
    event_time     timestamptz,
    applied_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (instance_guid, key)
);

-- Derived from the rows above for one stored scan (generation, last_scan): the recoverable windows per
-- timeline path and the archive part of the Backups document, so that a request does not recompute them
-- from a year of backups. Valid only while scan_state still has the same generation and last_scan;
-- written after each scan and on a read that finds it missing or stale. Deleting it loses nothing.
CREATE TABLE IF NOT EXISTS scan_cache (
    instance_guid  text PRIMARY KEY REFERENCES instances ON DELETE CASCADE,
    generation     bigint NOT NULL,
    last_scan      timestamptz,
    windows        text NOT NULL,    -- recovery.jsonout.windows_to_json
    archive        text NOT NULL,    -- recovery.jsonout.archive_to_dict, as JSON text
    computed_at    timestamptz NOT NULL DEFAULT now()
);
-- (issue 22) for the event consumer: the system identifiers of the scan's backups and the highest segment a
-- done backup needs replayed (-1: none); NULL in a view stored before they were kept
ALTER TABLE scan_cache ADD COLUMN IF NOT EXISTS system_ids bigint[];
ALTER TABLE scan_cache ADD COLUMN IF NOT EXISTS backup_need bigint;

-- The planner's two candidate orders (newest first, catalog.repo._ORDER), so that loading the newest
-- candidates of a year of backups reads a few index entries and sorts nothing.
CREATE INDEX IF NOT EXISTS backups_by_stop_time
    ON backups (instance_guid, stop_time DESC NULLS LAST, stop_lsn DESC, label COLLATE "C" DESC);
CREATE INDEX IF NOT EXISTS backups_by_stop_lsn
    ON backups (instance_guid, stop_lsn DESC, stop_time DESC NULLS LAST, label COLLATE "C" DESC);

-- Leases for multi-replica exclusivity. A lease row is never deleted, so `token` (the fencing
-- token) increases monotonically per key; release only expires it.
CREATE TABLE IF NOT EXISTS scan_leases (
    key          text PRIMARY KEY,
    holder       text NOT NULL,
    token        bigint NOT NULL,
    acquired_at  timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL
);

-- Run log: each scheduled slot of a job runs at most once per instance ('' = not per instance).
CREATE TABLE IF NOT EXISTS scan_runs (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job            text NOT NULL,
    scheduled_for  timestamptz NOT NULL,
    instance_guid  text NOT NULL DEFAULT '',
    holder         text NOT NULL,
    started_at     timestamptz NOT NULL DEFAULT now(),
    finished_at    timestamptz,
    outcome        text NOT NULL,
    CONSTRAINT scan_runs_once UNIQUE (job, scheduled_for, instance_guid)
);

-- ===== Restore drills (issue 11): one row per drill; history bounded per instance by the drill use case.
CREATE TABLE IF NOT EXISTS drills (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    instance_guid  text NOT NULL REFERENCES instances ON DELETE CASCADE,
    requested_at   timestamptz NOT NULL DEFAULT now(),
    started_at     timestamptz,
    finished_at    timestamptz,
    state          text NOT NULL DEFAULT 'queued',  -- queued|running|passed|failed|skipped
    trigger        text NOT NULL DEFAULT 'manual',  -- manual|scheduled|api
    holder         text,                            -- replica running it
    target         jsonb,                           -- the plan's target document
    backup_label   text,
    stage          text,                            -- plan|fetch|recover|verify|check (failure stage)
    reason         text,                            -- failure/skip reason, names the segment
    segment        text,                            -- WAL segment where replay stopped, if any
    reached_lsn    pg_lsn,
    fetch_s        double precision,
    replay_s       double precision,
    duration_s     double precision,
    bytes_fetched  bigint,
    postgres_log   jsonb NOT NULL DEFAULT '[]',
    server_pid     integer,                         -- the recovery server the drill started (issue 24) ...
    server_pgdata  text,                            -- ... and its data directory: what the reaper stops
    cleanup        text,                            -- what the reaper cleaned after a dead drill
    CONSTRAINT drills_state CHECK (state IN ('queued', 'running', 'passed', 'failed', 'skipped'))
);
CREATE INDEX IF NOT EXISTS drills_by_instance ON drills (instance_guid, id DESC);
-- never more than one drill per instance at a time
CREATE UNIQUE INDEX IF NOT EXISTS drills_one_running ON drills (instance_guid) WHERE state = 'running';
-- nor more than one queued or running (a replica renewing its own lease must not queue a second one)
CREATE UNIQUE INDEX IF NOT EXISTS drills_one_active ON drills (instance_guid) WHERE state IN ('queued', 'running');

-- ===== Undo period and purge (issue 13).
ALTER TABLE instances ADD COLUMN IF NOT EXISTS hold_at timestamptz;        -- operator hold: never purged
ALTER TABLE instances ADD COLUMN IF NOT EXISTS hold_reason text;
ALTER TABLE instances ADD COLUMN IF NOT EXISTS purged_at timestamptz;      -- archive deleted by a purge
ALTER TABLE instances ADD COLUMN IF NOT EXISTS purge_policy text;          -- e.g. 'DELETED_RETENTION_DAYS=30'
-- Audit: one row per purge of one instance's prefix (what, when, objects, bytes, outcome).
CREATE TABLE IF NOT EXISTS purges (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    instance_guid    text NOT NULL REFERENCES instances ON DELETE CASCADE,
    bucket           text NOT NULL,
    prefix           text NOT NULL,
    policy           text NOT NULL,
    started_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    objects_deleted  bigint NOT NULL DEFAULT 0,
    bytes_deleted    bigint NOT NULL DEFAULT 0,
    outcome          text NOT NULL DEFAULT 'running',  -- running|done|refused|failed
    reason           text
);
CREATE INDEX IF NOT EXISTS purges_by_instance ON purges (instance_guid, id DESC);
ALTER TABLE purges ADD COLUMN IF NOT EXISTS prefixes text[] NOT NULL DEFAULT '{}';  -- exact key prefixes deleted
ALTER TABLE purges ADD COLUMN IF NOT EXISTS holder text;                            -- replica/process running it
-- the DeleteObjects batch in flight {"keys": [...], "sizes": [...]}: a resumed purge counts those already gone
ALTER TABLE purges ADD COLUMN IF NOT EXISTS pending jsonb;
-- at most one unfinished purge per instance: a re-run resumes it (running: crashed; failed: S3 gave up)
CREATE UNIQUE INDEX IF NOT EXISTS purges_one_open ON purges (instance_guid) WHERE outcome IN ('running', 'failed');

-- ===== Fleet reports (issue 12): coverage facts per stored scan, like scan_cache (same version columns,
-- written by the scanner after each save and by a reader that finds them missing or stale; a cache: deleting
-- every row loses nothing). Grading (status, RPO, ages) is computed from these, the scan state, the newest
-- drill and `now` (recovery.grading) -- no snapshot is loaded to grade the fleet.
CREATE TABLE IF NOT EXISTS scan_cache_facts (
    instance_guid             text PRIMARY KEY REFERENCES instances ON DELETE CASCADE,
    generation                bigint NOT NULL,
    last_scan                 timestamptz,
    backups_total             integer NOT NULL,
    backups_restorable        integer NOT NULL,
    newest_backup             text,
    newest_backup_stop_time   timestamptz,
    newest_done_unrestorable  text,
    newest_done_stop_time     timestamptz,
    latest_end                timestamptz,
    latest_end_exact          boolean NOT NULL,
    latest_end_kind           text,
    first_recoverable         timestamptz,
    holes_count               integer NOT NULL,
    hole_after_newest         jsonb,
    archive_bytes             bigint NOT NULL,
    windows                   jsonb NOT NULL,    -- recovery.grading.window_summary, per window
    holes                     jsonb NOT NULL,
    corrupt                   jsonb NOT NULL DEFAULT '[]',   -- segments proven bad: timeline, segment, reason
    computed_at               timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE scan_cache_facts ADD COLUMN IF NOT EXISTS corrupt jsonb NOT NULL DEFAULT '[]';
-- the newest finished drill per instance (coverage rows, /metrics)
CREATE INDEX IF NOT EXISTS drills_finished_by_instance
    ON drills (instance_guid, finished_at DESC, id DESC) WHERE state IN ('passed', 'failed');

-- ===== WAL index (issue 20): each archived segment read once, after the scan catalogued it, by the index job
-- (backup_catalog.usecases.walindex). What it keeps is rebuilt by reading the WAL again: a cache of WAL facts.
-- Per segment (the file's timeline and number): its commit records in compact form -- count, first and last
-- by WAL order (time, xid), the lowest and highest xid (a before-xid target reads only the segments whose
-- range holds the xid) -- and how many of its transactions were destructive; `problem` when it could not be
-- read; `carry_*` the start of a record crossing into the next segment (decoding that segment finishes it).
CREATE TABLE IF NOT EXISTS wal_segment_summaries (
    instance_guid      text NOT NULL REFERENCES instances ON DELETE CASCADE,
    timeline           integer NOT NULL,
    segno              bigint NOT NULL,
    object_key         text NOT NULL,
    commits            integer NOT NULL DEFAULT 0,
    first_commit_time  timestamptz,
    last_commit_time   timestamptz,
    first_xid          bigint,
    last_xid           bigint,
    min_xid            bigint,
    max_xid            bigint,
    destructive        integer NOT NULL DEFAULT 0,
    problem            text,
    carry_lsn          pg_lsn,
    carry_total        integer,
    carry_head         bytea,
    indexed_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (instance_guid, timeline, segno)
);
-- Named restore points (XLOG_RESTORE_POINT records): a restore-point target needs no WAL reading at plan time.
CREATE TABLE IF NOT EXISTS wal_restore_points (
    instance_guid  text NOT NULL REFERENCES instances ON DELETE CASCADE,
    timeline       integer NOT NULL,
    lsn            pg_lsn NOT NULL,
    name           text NOT NULL,
    point_time     timestamptz NOT NULL,
    segno          bigint NOT NULL,
    PRIMARY KEY (instance_guid, timeline, lsn)
);
-- Resume point per instance and timeline: every present segment below `next_segno` is indexed. A hole keeps
-- the cursor before it (a late segment filling it is indexed when it arrives); later segments are indexed
-- anyway. The lag metric counts the archived segments from the cursor on.
CREATE TABLE IF NOT EXISTS wal_index_cursors (
    instance_guid  text NOT NULL REFERENCES instances ON DELETE CASCADE,
    timeline       integer NOT NULL,
    next_segno     bigint NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (instance_guid, timeline)
);

-- ===== Relation maps (issue 20, 0004): what each passed drill saw in its clone, per database: relation file
-- number -> (OID, schema, name, kind) from pg_class JOIN pg_namespace (user relations and rewritten catalogs),
-- as of the clone's last replayed commit (`as_of`; `taken_at`: when the drill ran). `changes` names a file
-- from the newest map as of before the change (recovery.relnames). Kept as long as the drill's row.
CREATE TABLE IF NOT EXISTS relation_maps (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    instance_guid  text NOT NULL REFERENCES instances ON DELETE CASCADE,
    drill_id       bigint NOT NULL REFERENCES drills ON DELETE CASCADE,
    database_oid   bigint NOT NULL,
    database_name  text NOT NULL,
    as_of          timestamptz NOT NULL,
    taken_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (drill_id, database_oid)
);
CREATE INDEX IF NOT EXISTS relation_maps_by_instance ON relation_maps (instance_guid, database_oid, as_of DESC);
CREATE TABLE IF NOT EXISTS relation_map_entries (
    map_id       bigint NOT NULL REFERENCES relation_maps ON DELETE CASCADE,
    relfilenode  bigint NOT NULL,
    rel_oid      bigint NOT NULL,
    schema_name  text NOT NULL,
    rel_name     text NOT NULL,
    kind         text NOT NULL,   -- pg_class.relkind
    PRIMARY KEY (map_id, relfilenode)
);
