-- Deployed versions of an app. The artifact (a wasi:http component) lives in
-- the content-addressed blob store under data_dir, named by its SHA-256.
-- `weight` is the share of traffic among the routable versions.
CREATE TABLE app_versions (
    app             TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
    version         BIGINT NOT NULL,
    digest          TEXT NOT NULL,
    processes       TEXT NOT NULL,
    routable        BIGINT NOT NULL,
    weight          BIGINT NOT NULL,
    deploy_event    TEXT NOT NULL,
    disabled_reason TEXT NOT NULL DEFAULT '',
    created_at      BIGINT NOT NULL,
    PRIMARY KEY (app, version)
);

-- What the router serves is part of the cached app view (0012).
CREATE TRIGGER app_versions_view_changed AFTER INSERT OR UPDATE OR DELETE ON app_versions
    FOR EACH ROW EXECUTE FUNCTION torii_app_view_changed('app');
CREATE TRIGGER app_env_view_changed AFTER INSERT OR UPDATE OR DELETE ON app_env
    FOR EACH ROW EXECUTE FUNCTION torii_app_view_changed('app');
