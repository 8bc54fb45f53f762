-- App status (started, stopped, asleep) and units (concurrency slots) per version.
ALTER TABLE apps ADD COLUMN status TEXT NOT NULL DEFAULT 'started';
ALTER TABLE app_versions ADD COLUMN units BIGINT NOT NULL DEFAULT 1;
