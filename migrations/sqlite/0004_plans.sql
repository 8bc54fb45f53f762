-- Plans: memory in bytes (0 = unlimited), CPU in millicores or shares.
CREATE TABLE plans (
    name       TEXT PRIMARY KEY,
    memory     BIGINT NOT NULL DEFAULT 0,
    cpumilli   BIGINT NOT NULL DEFAULT 0,
    cpushare   BIGINT NOT NULL DEFAULT 0,
    is_default BIGINT NOT NULL DEFAULT 0
);
