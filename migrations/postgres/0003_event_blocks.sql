-- Event blocks: an active block refuses the operations it matches.
CREATE TABLE event_blocks (
    id           TEXT PRIMARY KEY,          -- 24-hex ObjectId
    start_time   BIGINT NOT NULL,
    end_time     BIGINT NOT NULL DEFAULT 0,
    kind_name    TEXT NOT NULL DEFAULT '',  -- prefix of the event kind; empty = every kind
    owner_name   TEXT NOT NULL DEFAULT '',  -- empty = every owner
    target_type  TEXT NOT NULL DEFAULT '',  -- empty = every target
    target_value TEXT NOT NULL DEFAULT '',  -- empty = every target of that type
    conditions   TEXT NOT NULL DEFAULT '{}',-- request fields that must match, JSON object
    reason       TEXT NOT NULL,
    active       BIGINT NOT NULL
);
CREATE INDEX event_blocks_active ON event_blocks(active, start_time);
