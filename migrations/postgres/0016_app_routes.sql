-- What the router serves for each app, as its provisioner set it (through
-- the app-runtime capability): per routable version, the process that takes
-- the traffic, its units (concurrency slots) and its share of the traffic.
CREATE TABLE app_routes (
    app     TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
    version BIGINT NOT NULL,
    process TEXT NOT NULL,
    units   BIGINT NOT NULL,
    weight  BIGINT NOT NULL,
    PRIMARY KEY (app, version)
);

-- Apps deployed before provisioners set routes: their routable versions'
-- first process, as the router served them until now.
INSERT INTO app_routes (app, version, process, units, weight)
    SELECT app, version, COALESCE(processes::jsonb->>0, 'web'), units, weight
    FROM app_versions WHERE routable = 1 AND weight > 0;

-- The routes are part of the cached app view (0012).
CREATE TRIGGER app_routes_view_changed AFTER INSERT OR UPDATE OR DELETE ON app_routes
    FOR EACH ROW EXECUTE FUNCTION torii_app_view_changed('app');
