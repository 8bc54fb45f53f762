-- Events (every state-changing request) and the per-target locks they hold.
-- Times are Unix milliseconds; structured fields are JSON text.

CREATE TABLE events (
    id               TEXT PRIMARY KEY,          -- 24-hex ObjectId
    target_type      TEXT NOT NULL,
    target_value     TEXT NOT NULL,
    kind_type        TEXT NOT NULL,             -- permission | internal
    kind_name        TEXT NOT NULL,
    owner_type       TEXT NOT NULL,             -- user | token | app | internal
    owner_name       TEXT NOT NULL,
    source_ip        TEXT NOT NULL DEFAULT '',
    start_time       BIGINT NOT NULL,
    end_time         BIGINT NOT NULL DEFAULT 0, -- 0 while running
    running          BIGINT NOT NULL,
    lock_update_time BIGINT NOT NULL,
    error            TEXT NOT NULL DEFAULT '',
    log              TEXT NOT NULL DEFAULT '[]',
    start_custom     TEXT NOT NULL DEFAULT 'null',
    end_custom       TEXT NOT NULL DEFAULT 'null',
    other_custom     TEXT NOT NULL DEFAULT 'null',
    cancelable       BIGINT NOT NULL DEFAULT 0,
    cancel_info      TEXT NOT NULL DEFAULT '{}',
    allowed          TEXT NOT NULL,
    allowed_cancel   TEXT NOT NULL,
    instance         TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX events_by_start ON events(start_time);
CREATE INDEX events_by_target ON events(target_type, target_value, start_time);
CREATE INDEX events_by_kind ON events(kind_name, start_time);

-- One row per locked target. A holder refreshes heartbeat_at while alive; a
-- row whose heartbeat is older than the expiry may be taken over.
CREATE TABLE event_locks (
    target_type  TEXT NOT NULL,
    target_value TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    heartbeat_at BIGINT NOT NULL,
    PRIMARY KEY (target_type, target_value)
);
CREATE INDEX event_locks_by_event ON event_locks(event_id);
