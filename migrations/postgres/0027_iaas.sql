-- Machines made by IaaS drivers (`/iaas/machines`), as the driver answered
-- them when made; creation_params is a JSON object.
CREATE TABLE iaas_machines (
    id              TEXT PRIMARY KEY,
    iaas            TEXT NOT NULL,
    status          TEXT NOT NULL,
    address         TEXT NOT NULL,
    port            BIGINT NOT NULL,
    protocol        TEXT NOT NULL,
    creation_params TEXT NOT NULL,
    created_at      BIGINT NOT NULL
);
CREATE INDEX iaas_machines_by_iaas ON iaas_machines(iaas);

-- Machine templates (`/iaas/templates`): named parameter sets of one IaaS;
-- data is a JSON array of [name, value] pairs, in order.
CREATE TABLE iaas_templates (
    name TEXT PRIMARY KEY,
    iaas TEXT NOT NULL,
    data TEXT NOT NULL
);
