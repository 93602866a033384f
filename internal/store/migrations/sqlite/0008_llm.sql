-- The foundation-model front door (I11): upstream backends with their
-- sealed credentials, the model names callers use and the pools of
-- backends behind them, and teams' limits and budgets (G4). Calls are
-- metered into endpoint_calls (endpoint '' and a model) and rolled up
-- hourly by team, model, backend and key for chargeback (I3).

-- credential is sealed with AES-256-GCM under the platform secret key
-- ('' = none); credential_hint is at most its last four characters.
CREATE TABLE llm_backends (
    name               TEXT PRIMARY KEY,
    style              TEXT NOT NULL,
    base_url           TEXT NOT NULL,
    api_version        TEXT NOT NULL DEFAULT '',
    credential         TEXT NOT NULL DEFAULT '',
    credential_hint    TEXT NOT NULL DEFAULT '',
    rpm                BIGINT NOT NULL DEFAULT 0,
    tpm                BIGINT NOT NULL DEFAULT 0,
    input_cost_per_1k  REAL NOT NULL DEFAULT 0,
    output_cost_per_1k REAL NOT NULL DEFAULT 0,
    region             TEXT NOT NULL DEFAULT '',
    timeout_ms         BIGINT NOT NULL DEFAULT 0,
    created_by         TEXT NOT NULL DEFAULT '',
    created_at         BIGINT NOT NULL,
    updated_by         TEXT NOT NULL DEFAULT '',
    updated_at         BIGINT NOT NULL
);

CREATE TABLE llm_models (
    name                      TEXT PRIMARY KEY,
    rpm_per_key               BIGINT NOT NULL DEFAULT 0,
    tpm_per_key               BIGINT NOT NULL DEFAULT 0,
    mirror_model              TEXT NOT NULL DEFAULT '',
    mirror_percent            BIGINT NOT NULL DEFAULT 0,
    cache_ttl_ms              BIGINT NOT NULL DEFAULT 0,
    cache_nonzero_temperature BOOLEAN NOT NULL DEFAULT FALSE,
    description               TEXT NOT NULL DEFAULT '',
    created_by                TEXT NOT NULL DEFAULT '',
    created_at                BIGINT NOT NULL,
    updated_by                TEXT NOT NULL DEFAULT '',
    updated_at                BIGINT NOT NULL
);

-- A model's pool: priority groups are tried lowest first, weight shares
-- traffic inside a group; upstream_model is the backend's name for the
-- model ('' = the model's own name).
CREATE TABLE llm_model_targets (
    model          TEXT NOT NULL REFERENCES llm_models(name) ON DELETE CASCADE,
    backend        TEXT NOT NULL REFERENCES llm_backends(name),
    upstream_model TEXT NOT NULL DEFAULT '',
    priority       BIGINT NOT NULL DEFAULT 0,
    weight         BIGINT NOT NULL DEFAULT 1,
    PRIMARY KEY (model, backend)
);
CREATE INDEX llm_model_targets_backend ON llm_model_targets (backend);

-- 0 = no limit.
CREATE TABLE llm_team_limits (
    team             TEXT PRIMARY KEY,
    rpm              BIGINT NOT NULL DEFAULT 0,
    tpm              BIGINT NOT NULL DEFAULT 0,
    tokens_per_day   BIGINT NOT NULL DEFAULT 0,
    tokens_per_month BIGINT NOT NULL DEFAULT 0,
    budget_per_day   REAL NOT NULL DEFAULT 0,
    budget_per_month REAL NOT NULL DEFAULT 0,
    updated_by       TEXT NOT NULL DEFAULT '',
    updated_at       BIGINT NOT NULL
);

ALTER TABLE endpoint_calls ADD COLUMN model TEXT NOT NULL DEFAULT '';
ALTER TABLE endpoint_calls ADD COLUMN backend TEXT NOT NULL DEFAULT '';
ALTER TABLE endpoint_calls ADD COLUMN prompt_tokens BIGINT NOT NULL DEFAULT 0;
ALTER TABLE endpoint_calls ADD COLUMN completion_tokens BIGINT NOT NULL DEFAULT 0;
ALTER TABLE endpoint_calls ADD COLUMN cost REAL NOT NULL DEFAULT 0;
ALTER TABLE endpoint_calls ADD COLUMN spillover BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE endpoint_calls ADD COLUMN cached BOOLEAN NOT NULL DEFAULT FALSE;

CREATE TABLE llm_usage_hourly (
    hour              BIGINT NOT NULL,
    workspace         TEXT NOT NULL,
    team              TEXT NOT NULL,
    model             TEXT NOT NULL,
    backend           TEXT NOT NULL,
    key_id            TEXT NOT NULL,
    requests          BIGINT NOT NULL,
    errors            BIGINT NOT NULL,
    latency_us        BIGINT NOT NULL,
    prompt_tokens     BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    cost              REAL NOT NULL,
    spillovers        BIGINT NOT NULL,
    cached            BIGINT NOT NULL,
    PRIMARY KEY (hour, workspace, team, model, backend, key_id)
);
