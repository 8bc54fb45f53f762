-- Provisioner clusters (`/provisioner/clusters`, API-NOTES §2.20): an
-- engine a provisioner runs apps on (Swarm managers, …), and the pools it
-- serves (or every pool of its provisioner without a cluster of its own,
-- when is_default). addresses, pools are JSON lists; cacert and clientcert
-- base64; secrets is a JSON object (clientkey, custom_data, kubeConfig),
-- sealed at rest.
CREATE TABLE clusters (
    name        TEXT PRIMARY KEY,
    provisioner TEXT NOT NULL,
    addresses   TEXT NOT NULL,
    pools       TEXT NOT NULL,
    is_default  BIGINT NOT NULL,
    local       BIGINT NOT NULL,
    cacert      TEXT NOT NULL,
    clientcert  TEXT NOT NULL,
    http_proxy  TEXT NOT NULL,
    secrets     TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX clusters_by_provisioner ON clusters(provisioner);
