-- What each router was told of each app: a row while the router may serve
-- the app (it was asked to), with why the last ensure or remove failed
-- ('' when it did as told). Rows with an error are retried by the resync
-- loop; a router the app left keeps its row until it forgets the app.
CREATE TABLE router_apps (
    router TEXT NOT NULL,
    kind TEXT NOT NULL,
    app TEXT NOT NULL,
    error TEXT NOT NULL DEFAULT '',
    -- The names the router said it serves for the app (JSON list).
    names TEXT NOT NULL DEFAULT '[]',
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (router, app)
);
CREATE INDEX router_apps_by_app ON router_apps(app);
