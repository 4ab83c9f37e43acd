-- Schema versions (issue 21): migrations recorded in schema_version replace the fingerprint of schema.sql.
-- The derived rows were computed by the previous release's code; this release recomputes them.
-- rebuilds: derived_views, instance_facts
DROP TABLE IF EXISTS schema_fingerprint;
