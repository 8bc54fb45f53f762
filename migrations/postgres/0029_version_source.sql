-- What each version was made from, kept so another provisioner can make it
-- again (a pool move between the WASM and a container provisioner): the
-- SHA-256 of the uploaded archive in the blob store, empty for versions
-- deployed from an image or a Dockerfile.
ALTER TABLE app_versions ADD COLUMN source TEXT NOT NULL DEFAULT '';
