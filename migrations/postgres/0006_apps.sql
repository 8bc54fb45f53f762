-- Apps, the teams with access to them, their environment and their tokens.
CREATE TABLE apps (
    name             TEXT PRIMARY KEY,
    platform         TEXT NOT NULL DEFAULT '',
    platform_version TEXT NOT NULL DEFAULT '',
    team_owner       TEXT NOT NULL,
    owner            TEXT NOT NULL,           -- creator's email
    pool             TEXT NOT NULL,
    plan             TEXT NOT NULL,
    override_memory  BIGINT NOT NULL DEFAULT 0, -- 0 = no override
    override_cpumilli BIGINT NOT NULL DEFAULT 0,
    description      TEXT NOT NULL DEFAULT '',
    tags             TEXT NOT NULL DEFAULT '[]',
    metadata         TEXT NOT NULL DEFAULT '{}',
    routers          TEXT NOT NULL DEFAULT '[]',
    cnames           TEXT NOT NULL DEFAULT '[]',
    quota_limit      BIGINT NOT NULL DEFAULT -1,
    deploys          BIGINT NOT NULL DEFAULT 0,
    created_at       BIGINT NOT NULL
);
CREATE INDEX apps_by_team_owner ON apps(team_owner);
CREATE INDEX apps_by_owner ON apps(owner);
CREATE INDEX apps_by_pool ON apps(pool);

CREATE TABLE app_teams (
    app  TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
    team TEXT NOT NULL,
    PRIMARY KEY (app, team)
);
CREATE INDEX app_teams_by_team ON app_teams(team);

CREATE TABLE app_env (
    app    TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
    name   TEXT NOT NULL,
    value  TEXT NOT NULL,
    public BIGINT NOT NULL DEFAULT 1,
    PRIMARY KEY (app, name)
);

-- App tokens (TSURU_APP_TOKEN): never expire; only their hash is kept here.
CREATE TABLE app_tokens (
    token_hash TEXT PRIMARY KEY,
    app        TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
    created_at BIGINT NOT NULL
);
CREATE INDEX app_tokens_by_app ON app_tokens(app);

-- Platforms as records with versions; images are built by provisioners.
CREATE TABLE platforms (
    name       TEXT PRIMARY KEY,
    disabled   BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL
);
