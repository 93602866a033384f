-- Online endpoints: a stable name behind the gateway, its keys and
-- traffic split; deployments (a model server, its scale and request
-- settings); their replicas; and every change to a deployment, for
-- traceability (I2).
CREATE TABLE endpoints (
    pk             INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace_id   TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    name           TEXT NOT NULL,
    auth_mode      TEXT NOT NULL,
    traffic        TEXT NOT NULL DEFAULT '{}',
    mirror_traffic TEXT NOT NULL DEFAULT '{}',
    rate_limit     BIGINT NOT NULL DEFAULT 0,
    team_rate_limit BIGINT NOT NULL DEFAULT 0,
    primary_hash   TEXT NOT NULL DEFAULT '',
    secondary_hash TEXT NOT NULL DEFAULT '',
    description    TEXT NOT NULL DEFAULT '',
    tags           TEXT NOT NULL DEFAULT '{}',
    created_by     TEXT NOT NULL DEFAULT '',
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL,
    UNIQUE (workspace_id, name)
);

-- spec is the deployment as given (JSON); generation counts its changes,
-- so replicas of an older generation are rolled away.
CREATE TABLE deployments (
    pk           INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint_pk  BIGINT NOT NULL REFERENCES endpoints(pk) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    spec         TEXT NOT NULL,
    generation   BIGINT NOT NULL DEFAULT 1,
    state        TEXT NOT NULL DEFAULT 'Creating',
    reason       TEXT NOT NULL DEFAULT '',
    desired      BIGINT NOT NULL DEFAULT 1,
    created_by   TEXT NOT NULL DEFAULT '',
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    UNIQUE (endpoint_pk, name)
);

CREATE TABLE replicas (
    id            TEXT PRIMARY KEY,
    deployment_pk BIGINT NOT NULL REFERENCES deployments(pk) ON DELETE CASCADE,
    generation    BIGINT NOT NULL,
    node_id       TEXT NOT NULL DEFAULT '',
    handle        TEXT NOT NULL DEFAULT '',
    addr          TEXT NOT NULL DEFAULT '',
    state         TEXT NOT NULL,
    restarts      BIGINT NOT NULL DEFAULT 0,
    last_error    TEXT NOT NULL DEFAULT '',
    started_at    BIGINT NOT NULL,
    ready_at      BIGINT
);
CREATE INDEX replicas_deployment ON replicas (deployment_pk);

CREATE TABLE deployment_history (
    deployment_pk BIGINT NOT NULL REFERENCES deployments(pk) ON DELETE CASCADE,
    generation    BIGINT NOT NULL,
    model         TEXT NOT NULL DEFAULT '',
    model_name    TEXT NOT NULL DEFAULT '',
    model_version TEXT NOT NULL DEFAULT '',
    environment   TEXT NOT NULL DEFAULT '',
    change        TEXT NOT NULL,
    changed_by    TEXT NOT NULL DEFAULT '',
    changed_key   TEXT NOT NULL DEFAULT '',
    changed_at    BIGINT NOT NULL,
    PRIMARY KEY (deployment_pk, generation, changed_at)
);
CREATE INDEX deployment_history_model ON deployment_history (model_name, model_version);

-- Every scoring call, written in batches by the gateway's meter; hourly
-- rollups keep reports cheap.
CREATE TABLE endpoint_calls (
    at            BIGINT NOT NULL,
    workspace     TEXT NOT NULL,
    team          TEXT NOT NULL DEFAULT '',
    endpoint      TEXT NOT NULL,
    deployment    TEXT NOT NULL DEFAULT '',
    replica       TEXT NOT NULL DEFAULT '',
    principal     TEXT NOT NULL DEFAULT '',
    key_id        TEXT NOT NULL DEFAULT '',
    status        BIGINT NOT NULL,
    latency_us    BIGINT NOT NULL,
    request_bytes  BIGINT NOT NULL DEFAULT 0,
    response_bytes BIGINT NOT NULL DEFAULT 0,
    request_id    TEXT NOT NULL DEFAULT '',
    mirrored      BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX endpoint_calls_at ON endpoint_calls (at);

CREATE TABLE endpoint_usage_hourly (
    hour          BIGINT NOT NULL,
    workspace     TEXT NOT NULL,
    team          TEXT NOT NULL,
    endpoint      TEXT NOT NULL,
    deployment    TEXT NOT NULL,
    requests      BIGINT NOT NULL,
    errors        BIGINT NOT NULL,
    latency_us    BIGINT NOT NULL,
    request_bytes  BIGINT NOT NULL,
    response_bytes BIGINT NOT NULL,
    PRIMARY KEY (hour, workspace, team, endpoint, deployment)
);

-- Replicas whose deployment or endpoint was deleted: the controller
-- stops their processes and nodes, then forgets them.
CREATE TABLE retired_replicas (
    id      TEXT PRIMARY KEY,
    handle  TEXT NOT NULL DEFAULT '',
    node_id TEXT NOT NULL DEFAULT ''
);
