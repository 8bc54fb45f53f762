-- Per-pool settings of the docker area: node healing (`/1.2/healing/node`)
-- and container log config (`/docker/logs`). Pool '' is the default the
-- others inherit from.
CREATE TABLE pool_settings (
    kind  TEXT NOT NULL,
    pool  TEXT NOT NULL DEFAULT '',
    -- JSON object
    value TEXT NOT NULL,
    PRIMARY KEY (kind, pool)
);
