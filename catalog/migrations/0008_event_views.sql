-- S3 events at fleet rates (issue 22): with the derived view of a scan, what the event consumer needs of that
-- scan's backups, so that applying a segment reads neither the backups nor recomputes the windows: the system
-- identifiers a segment is checked against, and the highest segment a completed backup needs replayed
-- (max over done backups of (stop_lsn - 1) / segment size; -1: none). NULL: a view stored before this
-- migration (the consumer then reads the backups). A cache like the rest of derived_views (IF EXISTS: applied
-- again after 0009 renamed the table, which has the columns, it changes nothing).
ALTER TABLE IF EXISTS derived_views ADD COLUMN IF NOT EXISTS system_ids bigint[];
ALTER TABLE IF EXISTS derived_views ADD COLUMN IF NOT EXISTS backup_need bigint;
