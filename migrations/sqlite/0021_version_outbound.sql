-- Where each version's outbound HTTP may go: the allowed_outbound_hosts of
-- its torii.toml, a JSON list of allow entries (empty: nowhere).
ALTER TABLE app_versions ADD COLUMN outbound TEXT NOT NULL DEFAULT '[]';
