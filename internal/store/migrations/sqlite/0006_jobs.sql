-- Compute targets, the nodes they have up, what those nodes cost, quotas,
-- and command jobs with their attempts.

-- A compute target of a workspace: a cluster (nodes scaled between
-- min_instances and max_instances), an instance (one node for
-- interactive work) or the workspace's serverless pool (nodes made for
-- one job each). settings holds the kind's own fields (JSON); runtime
-- what a running instance has started (its node, apps and key).
CREATE TABLE compute_targets (
    pk           INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    kind         TEXT NOT NULL,
    sku          TEXT NOT NULL,
    settings     TEXT NOT NULL DEFAULT '{}',
    state        TEXT NOT NULL DEFAULT '',
    runtime      TEXT NOT NULL DEFAULT '',
    description  TEXT NOT NULL DEFAULT '',
    tags         TEXT NOT NULL DEFAULT '{}',
    created_by   TEXT NOT NULL DEFAULT '',
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    UNIQUE (workspace_id, name)
);

-- A node that is up (metered from started_at). job_id is the job it runs,
-- '' when idle; last_used_at starts its idle clock.
CREATE TABLE compute_nodes (
    id           TEXT PRIMARY KEY,
    compute_pk   BIGINT NOT NULL REFERENCES compute_targets(pk) ON DELETE CASCADE,
    workspace_id TEXT NOT NULL,
    sku          TEXT NOT NULL,
    gpus         TEXT NOT NULL DEFAULT '',
    job_id       TEXT NOT NULL DEFAULT '',
    started_at   BIGINT NOT NULL,
    last_used_at BIGINT NOT NULL
);
CREATE INDEX compute_nodes_compute ON compute_nodes (compute_pk);

-- Node up-time, for cost: one row per node, open (ended_at NULL) while it
-- is up. Kept after the node and its compute are gone.
CREATE TABLE node_usage (
    node_id        TEXT PRIMARY KEY,
    workspace_id   TEXT NOT NULL,
    workspace      TEXT NOT NULL,
    team           TEXT NOT NULL DEFAULT '',
    compute        TEXT NOT NULL,
    sku            TEXT NOT NULL,
    family         TEXT NOT NULL,
    spot           BOOLEAN NOT NULL DEFAULT FALSE,
    price_per_hour REAL NOT NULL,
    started_at     BIGINT NOT NULL,
    ended_at       BIGINT
);
CREATE INDEX node_usage_time ON node_usage (started_at);

-- Quotas per workspace and SKU family (G4); no row means no limit.
CREATE TABLE compute_quotas (
    workspace_id TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    family       TEXT NOT NULL,
    vcpus        BIGINT NOT NULL,
    gpus         BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, family)
);

-- A command job. id is also its MLflow run's id. spec is the parsed job
-- file (JSON); handles the executor handles of the current attempt.
CREATE TABLE jobs (
    id              TEXT PRIMARY KEY,
    workspace_id    TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    workspace       TEXT NOT NULL,
    name            TEXT NOT NULL,
    display_name    TEXT NOT NULL DEFAULT '',
    experiment_id   TEXT NOT NULL,
    spec            TEXT NOT NULL,
    status          TEXT NOT NULL,
    reason          TEXT NOT NULL DEFAULT '',
    priority        BIGINT NOT NULL DEFAULT 0,
    compute         TEXT NOT NULL DEFAULT '',
    sku             TEXT NOT NULL DEFAULT '',
    instance_count  BIGINT NOT NULL DEFAULT 1,
    code_digest     TEXT NOT NULL DEFAULT '',
    attempt         BIGINT NOT NULL DEFAULT 0,
    max_retries     BIGINT NOT NULL DEFAULT 0,
    not_before      BIGINT NOT NULL DEFAULT 0,
    timeout_seconds BIGINT NOT NULL DEFAULT 0,
    handles         TEXT NOT NULL DEFAULT '',
    nodes           TEXT NOT NULL DEFAULT '',
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    exit_code       BIGINT,
    cpu_seconds     REAL NOT NULL DEFAULT 0,
    peak_memory     BIGINT NOT NULL DEFAULT 0,
    gpu_seconds     REAL NOT NULL DEFAULT 0,
    node_seconds    REAL NOT NULL DEFAULT 0,
    cost            REAL NOT NULL DEFAULT 0,
    submitted_by    TEXT NOT NULL DEFAULT '',
    submitted_key   TEXT NOT NULL DEFAULT '',
    team            TEXT NOT NULL DEFAULT '',
    submitted_at    BIGINT NOT NULL,
    started_at      BIGINT,
    ended_at        BIGINT,
    UNIQUE (workspace_id, name)
);
-- The scheduler's queue scan reads only this index, however large the
-- jobs' specs are.
CREATE INDEX jobs_queue ON jobs (status, cancel_requested, priority, submitted_at, id, workspace_id, workspace, team, not_before,
    compute, sku, instance_count, reason);
CREATE INDEX jobs_workspace ON jobs (workspace_id, submitted_at);
