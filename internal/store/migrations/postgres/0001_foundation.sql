-- Identities, workspaces, role assignments and the hash-chained audit log.
-- Times are Unix milliseconds (audit: microseconds) in BIGINT columns so the
-- same SQL reads them on SQLite and PostgreSQL.
CREATE TABLE principals (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    kind         TEXT NOT NULL CHECK (kind IN ('user', 'service')),
    display_name TEXT NOT NULL DEFAULT '',
    created_by   TEXT NOT NULL,
    created_at   BIGINT NOT NULL
);

CREATE TABLE workspaces (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    display_name    TEXT NOT NULL DEFAULT '',
    description     TEXT NOT NULL DEFAULT '',
    region          TEXT NOT NULL,
    allowed_regions TEXT NOT NULL,
    team            TEXT NOT NULL DEFAULT '',
    tags            TEXT NOT NULL DEFAULT '{}',
    created_by      TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    principal_id TEXT NOT NULL REFERENCES principals(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    prefix       TEXT NOT NULL,
    hash         TEXT NOT NULL UNIQUE,
    -- A key limited to one workspace names it; '' means all. The id
    -- reference deletes the key with its workspace.
    workspace    TEXT NOT NULL DEFAULT '',
    workspace_id TEXT REFERENCES workspaces(id) ON DELETE CASCADE,
    created_by   TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT,
    last_used_at BIGINT,
    revoked_at   BIGINT
);
CREATE INDEX api_keys_principal ON api_keys (principal_id);
CREATE UNIQUE INDEX api_keys_live_name ON api_keys (principal_id, name) WHERE revoked_at IS NULL;

CREATE TABLE role_assignments (
    id           TEXT PRIMARY KEY,
    principal_id TEXT NOT NULL REFERENCES principals(id) ON DELETE CASCADE,
    role         TEXT NOT NULL,
    -- Workspace names never change, so the name is kept beside the id
    -- (which cascades deletes) and grants load without a join. '' is
    -- platform scope.
    workspace    TEXT NOT NULL DEFAULT '',
    workspace_id TEXT REFERENCES workspaces(id) ON DELETE CASCADE,
    created_by   TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    UNIQUE (principal_id, role, workspace)
);
CREATE INDEX role_assignments_workspace ON role_assignments (workspace);

CREATE TABLE audit_log (
    seq        BIGINT PRIMARY KEY,
    time_us    BIGINT NOT NULL,
    principal  TEXT NOT NULL,
    key_id     TEXT NOT NULL,
    action     TEXT NOT NULL,
    resource   TEXT NOT NULL,
    workspace  TEXT NOT NULL,
    result     TEXT NOT NULL,
    source     TEXT NOT NULL,
    request_id TEXT NOT NULL,
    details    TEXT NOT NULL,
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL
);
CREATE INDEX audit_log_principal ON audit_log (principal, seq);
CREATE INDEX audit_log_resource ON audit_log (resource, seq);
CREATE INDEX audit_log_workspace ON audit_log (workspace, seq);
CREATE INDEX audit_log_time ON audit_log (time_us);

-- The chain head: one row, updated in every appending transaction, so
-- concurrent appenders queue on its row lock and a deleted tail is seen.
CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  BIGINT NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '');
