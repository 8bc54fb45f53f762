-- Volumes (`/1.4/volumes`, API-NOTES §2.18): storage of a plan
-- (`[[volume_plan]]`) in a pool, owned by a team, and where apps mount it.
-- opts is the JSON object of the options given at creation; provisioned is
-- set at its first bind (its storage is made then, and it no longer changes).
CREATE TABLE volumes (
    name        TEXT PRIMARY KEY,
    pool        TEXT NOT NULL,
    plan        TEXT NOT NULL,
    team_owner  TEXT NOT NULL,
    opts        TEXT NOT NULL,
    provisioned BIGINT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE TABLE volume_binds (
    volume      TEXT NOT NULL,
    app         TEXT NOT NULL,
    mount_point TEXT NOT NULL,
    read_only   BIGINT NOT NULL,
    PRIMARY KEY (volume, app, mount_point)
);
CREATE INDEX volume_binds_by_app ON volume_binds(app);
-- Names of deleted volumes: a plan keys storage by name, so a name is never
-- handed to another volume (it would find the old one's data).
CREATE TABLE volume_names_used (
    name TEXT PRIMARY KEY
);

-- An app's volume binds are part of its view (what its units mount): other
-- processes drop it.
CREATE TRIGGER volume_binds_view_changed AFTER INSERT OR UPDATE OR DELETE ON volume_binds
    FOR EACH ROW EXECUTE FUNCTION torii_app_view_changed('app');
