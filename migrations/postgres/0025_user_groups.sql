-- The groups an auth scheme reported for a user at their last login
-- (a JSON array of strings). Role bindings to these groups grant their
-- permissions to the user; schemes that report no groups leave it as it is.
ALTER TABLE users ADD COLUMN idp_groups TEXT NOT NULL DEFAULT '[]';
