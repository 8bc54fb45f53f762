-- Pools and the constraints that say which teams, plans, routers, services
-- and volume plans may use them.
CREATE TABLE pools (
    name        TEXT PRIMARY KEY,
    provisioner TEXT NOT NULL DEFAULT '',
    is_default  BIGINT NOT NULL DEFAULT 0,
    labels      TEXT NOT NULL DEFAULT '{}',
    created_at  BIGINT NOT NULL
);

-- `pool_expr` and each value are globs (`*` matches any run).
CREATE TABLE pool_constraints (
    pool_expr TEXT NOT NULL,
    field     TEXT NOT NULL,
    vals      TEXT NOT NULL DEFAULT '[]',
    blacklist BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (pool_expr, field)
);
