-- S3 event ingestion (issue 22): the newest event applied per instance ("fresh as of") and per key (its
-- S3 sequencer). Nothing here is memory a rescan cannot rebuild; event_keys rows are pruned after 14 days.
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
