-- Dynamic routers (`/1.8/routers`); routers from the config are not stored.
-- `config` is a JSON object, `readiness_gates` a JSON array.
CREATE TABLE routers (
    name            TEXT PRIMARY KEY,
    type            TEXT NOT NULL,
    config          TEXT NOT NULL,
    readiness_gates TEXT NOT NULL
);

-- The routers serving an app, in the order they were added (the first is
-- the app's main router); `opts` is a JSON object of strings.
CREATE TABLE app_routers (
    app      TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
    router   TEXT NOT NULL,
    opts     TEXT NOT NULL,
    position BIGINT NOT NULL,
    PRIMARY KEY (app, router)
);
CREATE INDEX app_routers_by_router ON app_routers(router);

-- TLS certificates of an app, one per address or cname (PEM).
CREATE TABLE app_certificates (
    app         TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    certificate TEXT NOT NULL,
    key         TEXT NOT NULL,
    PRIMARY KEY (app, name)
);

-- Apps created before routers existed are served by the built-in router.
INSERT INTO app_routers (app, router, opts, position) SELECT name, 'embedded', '{}', 0 FROM apps;
