-- Node containers (`/1.2/nodecontainers`): a container torii runs on every
-- Docker node, configured per pool ('' = every pool, the base others extend).
CREATE TABLE node_containers (
    name   TEXT NOT NULL,
    pool   TEXT NOT NULL DEFAULT '',
    -- tsuru's config JSON: {"Name","PinnedImage","Disabled","Config","HostConfig"}
    config TEXT NOT NULL,
    PRIMARY KEY (name, pool)
);
