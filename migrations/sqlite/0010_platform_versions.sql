-- Platform versions: each upload of a Dockerfile makes version N+1; the
-- provisioner builds the image named here. `current` marks the one in use.
CREATE TABLE platform_versions (
    platform   TEXT NOT NULL REFERENCES platforms(name) ON DELETE CASCADE,
    version    BIGINT NOT NULL,
    image      TEXT NOT NULL,
    dockerfile TEXT NOT NULL,
    build_args TEXT NOT NULL DEFAULT '{}',
    current    BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (platform, version)
);
