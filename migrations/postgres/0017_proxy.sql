-- HTTP backends: a provisioner running a version outside the app runtime
-- (e.g. in containers) names the 127.0.0.1 addresses that serve it.
ALTER TABLE app_routes ADD COLUMN addresses TEXT NOT NULL DEFAULT '[]';

-- The proxy table the data plane serves, written by router plugins through
-- the `proxy` capability: each host name points at one app's backends on
-- one router. Filled again from the app routes when torii starts.
CREATE TABLE proxy_hosts (
    host     TEXT PRIMARY KEY,
    router   TEXT NOT NULL,
    app      TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
    -- JSON list of {version, addresses, weight}
    backends TEXT NOT NULL
);
CREATE INDEX proxy_hosts_app ON proxy_hosts (app, router);

-- Proxy entries are cached with the app views (0012).
CREATE TRIGGER proxy_hosts_view_changed AFTER INSERT OR UPDATE OR DELETE ON proxy_hosts
    FOR EACH ROW EXECUTE FUNCTION torii_app_view_changed('app');
