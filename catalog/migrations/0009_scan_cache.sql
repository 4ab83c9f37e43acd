-- One name for the stored scan cache (issue 18): derived_views -> scan_cache, instance_facts -> scan_cache_facts,
-- with their key and foreign-key constraints. A rename, not a rebuild: the rows stay the cache of the same
-- scans. (A serve of the previous release still running reports not ready once this version is recorded.)
ALTER TABLE derived_views RENAME TO scan_cache;
ALTER INDEX derived_views_pkey RENAME TO scan_cache_pkey;
ALTER TABLE scan_cache RENAME CONSTRAINT derived_views_instance_guid_fkey TO scan_cache_instance_guid_fkey;
ALTER TABLE instance_facts RENAME TO scan_cache_facts;
ALTER INDEX instance_facts_pkey RENAME TO scan_cache_facts_pkey;
ALTER TABLE scan_cache_facts RENAME CONSTRAINT instance_facts_instance_guid_fkey TO scan_cache_facts_instance_guid_fkey;
