-- One name for the stored scan cache (issue 18): derived_views -> scan_cache, instance_facts -> scan_cache_facts,
-- with their key and foreign-key constraints. A rename, not a rebuild: the rows stay the cache of the same
-- scans. (A serve of the previous release still running reports not ready once this version is recorded.)
-- Idempotent: applied again on a catalog that has it (its version row lost), it changes nothing.
ALTER TABLE IF EXISTS derived_views RENAME TO scan_cache;
ALTER INDEX IF EXISTS derived_views_pkey RENAME TO scan_cache_pkey;
ALTER TABLE IF EXISTS instance_facts RENAME TO scan_cache_facts;
ALTER INDEX IF EXISTS instance_facts_pkey RENAME TO scan_cache_facts_pkey;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'derived_views_instance_guid_fkey') THEN
        ALTER TABLE scan_cache RENAME CONSTRAINT derived_views_instance_guid_fkey TO scan_cache_instance_guid_fkey;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'instance_facts_instance_guid_fkey') THEN
        ALTER TABLE scan_cache_facts RENAME CONSTRAINT instance_facts_instance_guid_fkey
            TO scan_cache_facts_instance_guid_fkey;
    END IF;
END $$;
