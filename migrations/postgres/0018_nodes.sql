-- Docker nodes (`/1.2/node`): engines the docker provisioner runs units on.
-- A node belongs to one pool; its metadata is free-form (tsuru's Metadata).
CREATE TABLE nodes (
    address    TEXT PRIMARY KEY,
    pool       TEXT NOT NULL,
    -- JSON object of string → string, `pool` not included
    metadata   TEXT NOT NULL DEFAULT '{}',
    -- "ready" or "disabled"
    status     TEXT NOT NULL DEFAULT 'ready',
    iaas_id    TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL
);
CREATE INDEX nodes_pool ON nodes (pool);
