-- Services (tsuru's service API providers, registered with POST /services),
-- service brokers (/1.7/brokers), service instances and their binds.
-- Secrets (a service's password, a broker's config, a bind's variables) are
-- stored sealed (store::sealed).
CREATE TABLE services (
    name TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    password TEXT NOT NULL,
    -- JSON object: cluster (or "production") → URL.
    endpoints TEXT NOT NULL,
    -- JSON list of the teams that own the service.
    owner_teams TEXT NOT NULL,
    -- JSON list of the teams granted access when the service is restricted.
    teams TEXT NOT NULL DEFAULT '[]',
    restricted BIGINT NOT NULL DEFAULT 0,
    doc TEXT NOT NULL DEFAULT '',
    multi_cluster BIGINT NOT NULL DEFAULT 0,
    disable_bind_unit BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE service_brokers (
    name TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    -- The broker's Config object as JSON (auth included), sealed.
    config TEXT NOT NULL
);

CREATE TABLE service_instances (
    -- The service as users name it (`<broker>::<service>` for brokered ones).
    service TEXT NOT NULL,
    name TEXT NOT NULL,
    plan TEXT NOT NULL,
    team_owner TEXT NOT NULL,
    -- JSON list of the teams the instance is granted to (owner first).
    teams TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    tags TEXT NOT NULL DEFAULT '[]',
    -- JSON object of the user's parameters.
    parameters TEXT NOT NULL DEFAULT '{}',
    pool TEXT NOT NULL DEFAULT '',
    -- What the broker keeps about the instance (JSON object).
    data TEXT NOT NULL DEFAULT '{}',
    -- ready | creating | updating | removing | failed
    state TEXT NOT NULL,
    -- The provider's operation in progress ('' when none), and what the
    -- last one that failed said.
    operation TEXT NOT NULL DEFAULT '',
    -- When the operation started (Unix ms; 0 when none).
    operation_since BIGINT NOT NULL DEFAULT 0,
    message TEXT NOT NULL DEFAULT '',
    -- While an update runs at the provider: the fields it replaced (JSON),
    -- put back if it fails.
    previous TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    PRIMARY KEY (service, name)
);

CREATE TABLE service_binds (
    service TEXT NOT NULL,
    instance TEXT NOT NULL,
    app TEXT NOT NULL,
    -- JSON list of [name, value] the app gets, sealed.
    env TEXT NOT NULL,
    -- What the broker keeps about the bind (JSON object).
    data TEXT NOT NULL DEFAULT '{}',
    created_at BIGINT NOT NULL,
    PRIMARY KEY (service, instance, app)
);
CREATE INDEX service_binds_by_app ON service_binds(app);

CREATE TABLE service_unit_binds (
    service TEXT NOT NULL,
    instance TEXT NOT NULL,
    app TEXT NOT NULL,
    unit TEXT NOT NULL,
    host TEXT NOT NULL,
    PRIMARY KEY (service, instance, app, unit)
);

-- An app's binds are part of its view (its env): other processes drop it.
CREATE TRIGGER service_binds_view_changed AFTER INSERT OR UPDATE OR DELETE ON service_binds
    FOR EACH ROW EXECUTE FUNCTION torii_app_view_changed('app');
