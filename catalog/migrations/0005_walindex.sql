-- 0005 (issue 20, targets): the WAL index -- per-segment commit summaries, restore points, cursors.
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
