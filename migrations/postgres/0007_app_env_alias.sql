-- Env var aliases (show another variable's value) and the tool managing a variable.
ALTER TABLE app_env ADD COLUMN alias TEXT NOT NULL DEFAULT '';
ALTER TABLE app_env ADD COLUMN managed_by TEXT NOT NULL DEFAULT '';
