-- A CNAME belongs to at most one app: the primary key enforces it.
CREATE TABLE app_cnames (
    cname TEXT PRIMARY KEY,
    app   TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE
);
CREATE INDEX app_cnames_by_app ON app_cnames(app);
ALTER TABLE apps DROP COLUMN cnames;
