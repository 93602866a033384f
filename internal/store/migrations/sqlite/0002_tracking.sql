-- MLflow-compatible experiment tracking. The small, composite-keyed
-- tables are WITHOUT ROWID: one B-tree clustered on the key instead of a
-- table plus an index, so a metric's history is one contiguous range and
-- a batch of points is inserted once, not twice. Experiment ids are numbers
-- counted per workspace (each workspace has its own "0" Default
-- experiment, as a standalone MLflow server would); pk is the global key.
CREATE TABLE experiments (
    pk                INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace_id      TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    experiment_id     BIGINT NOT NULL,
    name              TEXT NOT NULL,
    artifact_location TEXT NOT NULL,
    lifecycle_stage   TEXT NOT NULL DEFAULT 'active',
    creation_time     BIGINT NOT NULL,
    last_update_time  BIGINT NOT NULL,
    created_by        TEXT NOT NULL DEFAULT '',
    UNIQUE (workspace_id, experiment_id),
    UNIQUE (workspace_id, name)
);

CREATE TABLE experiment_tags (
    experiment_pk BIGINT NOT NULL REFERENCES experiments(pk) ON DELETE CASCADE,
    key           TEXT NOT NULL,
    value         TEXT NOT NULL,
    PRIMARY KEY (experiment_pk, key)
) WITHOUT ROWID;

CREATE TABLE runs (
    run_uuid        TEXT PRIMARY KEY,
    experiment_pk   BIGINT NOT NULL REFERENCES experiments(pk) ON DELETE CASCADE,
    name            TEXT NOT NULL DEFAULT '',
    user_id         TEXT NOT NULL DEFAULT '',
    status          TEXT NOT NULL DEFAULT 'RUNNING',
    start_time      BIGINT,
    end_time        BIGINT,
    deleted_time    BIGINT,
    lifecycle_stage TEXT NOT NULL DEFAULT 'active',
    artifact_uri    TEXT NOT NULL DEFAULT '',
    created_by      TEXT NOT NULL DEFAULT '',
    created_key     TEXT NOT NULL DEFAULT ''
);
CREATE INDEX runs_experiment_start ON runs (experiment_pk, start_time DESC, run_uuid);

CREATE TABLE params (
    run_uuid TEXT NOT NULL REFERENCES runs(run_uuid) ON DELETE CASCADE,
    key      TEXT NOT NULL,
    value    TEXT NOT NULL,
    PRIMARY KEY (run_uuid, key)
) WITHOUT ROWID;

CREATE TABLE tags (
    run_uuid TEXT NOT NULL REFERENCES runs(run_uuid) ON DELETE CASCADE,
    key      TEXT NOT NULL,
    value    TEXT NOT NULL,
    PRIMARY KEY (run_uuid, key)
) WITHOUT ROWID;

-- Every logged point. An exact duplicate (same key, step, timestamp,
-- value) is dropped, as MLflow drops it. NaN is stored as is_nan with
-- value 0, since SQL has no NaN.
CREATE TABLE metrics (
    run_uuid  TEXT NOT NULL REFERENCES runs(run_uuid) ON DELETE CASCADE,
    key       TEXT NOT NULL,
    step      BIGINT NOT NULL,
    timestamp BIGINT NOT NULL,
    value     DOUBLE PRECISION NOT NULL,
    is_nan    BOOLEAN NOT NULL,
    PRIMARY KEY (run_uuid, key, step, timestamp, value, is_nan)
) WITHOUT ROWID;

-- The latest point of each metric (largest step, then timestamp, then
-- value), kept up to date on every write: what runs/get returns and what
-- search filters and sorts on.
CREATE TABLE latest_metrics (
    run_uuid  TEXT NOT NULL REFERENCES runs(run_uuid) ON DELETE CASCADE,
    key       TEXT NOT NULL,
    step      BIGINT NOT NULL,
    timestamp BIGINT NOT NULL,
    value     DOUBLE PRECISION NOT NULL,
    is_nan    BOOLEAN NOT NULL,
    PRIMARY KEY (run_uuid, key)
) WITHOUT ROWID;
CREATE INDEX latest_metrics_key_value ON latest_metrics (key, value);

-- Datasets logged with runs/log-inputs, unique per experiment by name
-- and digest, and the inputs linking them to runs.
CREATE TABLE datasets (
    dataset_uuid  TEXT PRIMARY KEY,
    experiment_pk BIGINT NOT NULL REFERENCES experiments(pk) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    digest        TEXT NOT NULL,
    source_type   TEXT NOT NULL,
    source        TEXT NOT NULL,
    schema        TEXT NOT NULL DEFAULT '',
    profile       TEXT NOT NULL DEFAULT '',
    UNIQUE (experiment_pk, name, digest)
);

CREATE TABLE run_inputs (
    input_uuid   TEXT PRIMARY KEY,
    dataset_uuid TEXT NOT NULL REFERENCES datasets(dataset_uuid) ON DELETE CASCADE,
    run_uuid     TEXT NOT NULL REFERENCES runs(run_uuid) ON DELETE CASCADE,
    UNIQUE (dataset_uuid, run_uuid)
);
CREATE INDEX run_inputs_run ON run_inputs (run_uuid);

CREATE TABLE run_input_tags (
    input_uuid TEXT NOT NULL REFERENCES run_inputs(input_uuid) ON DELETE CASCADE,
    key        TEXT NOT NULL,
    value      TEXT NOT NULL,
    PRIMARY KEY (input_uuid, key)
) WITHOUT ROWID;
