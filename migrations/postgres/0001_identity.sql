-- Users, sessions, teams, roles, team tokens and plugin key-value storage.
-- Times are Unix milliseconds; lists are JSON text.

CREATE TABLE users (
    email        TEXT PRIMARY KEY,
    quota_limit  BIGINT NOT NULL DEFAULT -1,
    -- API key: derived as HMAC(server key, email || generation); only its hash is kept.
    api_key_gen  BIGINT NOT NULL DEFAULT 0,
    api_key_hash TEXT UNIQUE,
    created_at   BIGINT NOT NULL
);

CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY,
    email      TEXT NOT NULL REFERENCES users(email) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX sessions_by_email ON sessions(email, created_at);

CREATE TABLE teams (
    name        TEXT PRIMARY KEY,
    tags        TEXT NOT NULL DEFAULT '[]',
    quota_limit BIGINT NOT NULL DEFAULT -1,
    created_at  BIGINT NOT NULL
);

CREATE TABLE roles (
    name         TEXT PRIMARY KEY,
    context_type TEXT NOT NULL,
    description  TEXT NOT NULL DEFAULT '',
    schemes      TEXT NOT NULL DEFAULT '[]',
    events       TEXT NOT NULL DEFAULT '[]'
);

-- A role instance held by a user, a team token or a group.
CREATE TABLE role_bindings (
    subject_kind  TEXT NOT NULL,
    subject       TEXT NOT NULL,
    role          TEXT NOT NULL REFERENCES roles(name) ON UPDATE CASCADE ON DELETE CASCADE,
    context_value TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (subject_kind, subject, role, context_value)
);
CREATE INDEX role_bindings_by_role ON role_bindings(role);

CREATE TABLE team_tokens (
    token_id      TEXT PRIMARY KEY,
    team          TEXT NOT NULL REFERENCES teams(name) ON UPDATE CASCADE,
    description   TEXT NOT NULL DEFAULT '',
    token_gen     BIGINT NOT NULL,
    token_hash    TEXT NOT NULL UNIQUE,
    creator_email TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL DEFAULT 0,
    last_access   BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE plugin_kv (
    plugin TEXT NOT NULL,
    key    TEXT NOT NULL,
    value  BYTEA NOT NULL,
    PRIMARY KEY (plugin, key)
);
