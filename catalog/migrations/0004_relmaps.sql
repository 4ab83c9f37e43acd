-- 0004 (issue 20, changes): relation maps recorded by passed drills, to name the relation files WAL speaks of.
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
    kind         text NOT NULL,
    PRIMARY KEY (map_id, relfilenode)
);
