-- Webhooks called after finished events, and their bounded delivery history.
CREATE TABLE webhooks (
    name         TEXT PRIMARY KEY,
    description  TEXT NOT NULL DEFAULT '',
    team_owner   TEXT NOT NULL,
    event_filter TEXT NOT NULL DEFAULT '{}',
    url          TEXT NOT NULL,
    proxy_url    TEXT NOT NULL DEFAULT '',
    headers      TEXT NOT NULL DEFAULT '{}',
    method       TEXT NOT NULL DEFAULT '',
    body         TEXT NOT NULL DEFAULT '',
    insecure     BIGINT NOT NULL DEFAULT 0,
    -- Only events that finish after this are delivered.
    created_at   BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE webhook_deliveries (
    id          BIGSERIAL PRIMARY KEY,
    webhook     TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    attempt     BIGINT NOT NULL,
    at          BIGINT NOT NULL,
    status      BIGINT NOT NULL,     -- HTTP status; 0 when no answer
    error       TEXT NOT NULL DEFAULT '',
    duration_ms BIGINT NOT NULL
);
CREATE INDEX webhook_deliveries_by_webhook ON webhook_deliveries(webhook, id);
