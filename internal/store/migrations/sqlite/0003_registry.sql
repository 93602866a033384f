-- MLflow-compatible model registry: registered models per workspace,
-- their numbered versions, tags and aliases.
CREATE TABLE registered_models (
    pk                INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace_id      TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    name              TEXT NOT NULL,
    description       TEXT NOT NULL DEFAULT '',
    creation_time     BIGINT NOT NULL,
    last_updated_time BIGINT NOT NULL,
    created_by        TEXT NOT NULL DEFAULT '',
    UNIQUE (workspace_id, name)
);

CREATE TABLE registered_model_tags (
    model_pk BIGINT NOT NULL REFERENCES registered_models(pk) ON DELETE CASCADE,
    key      TEXT NOT NULL,
    value    TEXT NOT NULL,
    PRIMARY KEY (model_pk, key)
);

-- name repeats the model's name so version searches filter without a
-- join; renames update it in the same transaction.
CREATE TABLE model_versions (
    pk                INTEGER PRIMARY KEY AUTOINCREMENT,
    model_pk          BIGINT NOT NULL REFERENCES registered_models(pk) ON DELETE CASCADE,
    name              TEXT NOT NULL,
    version           BIGINT NOT NULL,
    description       TEXT NOT NULL DEFAULT '',
    source            TEXT NOT NULL DEFAULT '',
    storage_location  TEXT NOT NULL DEFAULT '',
    run_id            TEXT NOT NULL DEFAULT '',
    run_link          TEXT NOT NULL DEFAULT '',
    status            TEXT NOT NULL DEFAULT 'READY',
    status_message    TEXT NOT NULL DEFAULT '',
    current_stage     TEXT NOT NULL DEFAULT 'None',
    creation_time     BIGINT NOT NULL,
    last_updated_time BIGINT NOT NULL,
    user_id           TEXT NOT NULL DEFAULT '',
    created_key       TEXT NOT NULL DEFAULT '',
    deleted           BOOLEAN NOT NULL DEFAULT FALSE,
    UNIQUE (model_pk, version)
);
CREATE INDEX model_versions_run ON model_versions (run_id);

CREATE TABLE model_version_tags (
    version_pk BIGINT NOT NULL REFERENCES model_versions(pk) ON DELETE CASCADE,
    key        TEXT NOT NULL,
    value      TEXT NOT NULL,
    PRIMARY KEY (version_pk, key)
);

CREATE TABLE registered_model_aliases (
    model_pk BIGINT NOT NULL REFERENCES registered_models(pk) ON DELETE CASCADE,
    alias    TEXT NOT NULL,
    version  BIGINT NOT NULL,
    PRIMARY KEY (model_pk, alias)
);
