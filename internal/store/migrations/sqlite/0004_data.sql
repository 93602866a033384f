-- Data assets: named, versioned, immutable references to data. A version
-- is an upload into Plinth's store, a file or folder already in the
-- artifact store, a blob URL, or a path on one machine (recorded only).
CREATE TABLE data_assets (
    pk           INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    created_by   TEXT NOT NULL DEFAULT '',
    UNIQUE (workspace_id, name)
);

-- seq orders the versions of an asset (latest = highest seq not
-- archived); version is the name users see. workspace_id and name repeat
-- the asset's so digest lookups across a workspace need no join.
CREATE TABLE data_versions (
    pk              INTEGER PRIMARY KEY AUTOINCREMENT,
    asset_pk        BIGINT NOT NULL REFERENCES data_assets(pk) ON DELETE CASCADE,
    workspace_id    TEXT NOT NULL,
    name            TEXT NOT NULL,
    version         TEXT NOT NULL,
    seq             BIGINT NOT NULL,
    type            TEXT NOT NULL,
    storage         TEXT NOT NULL,
    path            TEXT NOT NULL,
    storage_key     TEXT NOT NULL DEFAULT '',
    host            TEXT NOT NULL DEFAULT '',
    origin          TEXT NOT NULL DEFAULT '',
    digest          TEXT NOT NULL DEFAULT '',
    digest_verified BOOLEAN NOT NULL DEFAULT FALSE,
    size_bytes      BIGINT NOT NULL DEFAULT 0,
    file_count      BIGINT NOT NULL DEFAULT 0,
    region          TEXT NOT NULL,
    description     TEXT NOT NULL DEFAULT '',
    tags            TEXT NOT NULL DEFAULT '{}',
    source_run_id   TEXT NOT NULL DEFAULT '',
    archived        BOOLEAN NOT NULL DEFAULT FALSE,
    created_at      BIGINT NOT NULL,
    created_by      TEXT NOT NULL DEFAULT '',
    created_key     TEXT NOT NULL DEFAULT '',
    UNIQUE (asset_pk, version),
    UNIQUE (asset_pk, seq)
);
CREATE INDEX data_versions_digest ON data_versions (workspace_id, digest);
CREATE INDEX data_versions_run ON data_versions (source_run_id);

-- The files of a version, with their SHA-256 where known and, for the
-- bytes Plinth holds, the blob that holds them.
CREATE TABLE data_version_files (
    version_pk BIGINT NOT NULL REFERENCES data_versions(pk) ON DELETE CASCADE,
    path       TEXT NOT NULL,
    size_bytes BIGINT NOT NULL,
    sha256     TEXT NOT NULL DEFAULT '',
    blob_key   TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (version_pk, path)
);

-- An upload in progress: what the version will be (spec, JSON) and how
-- far each file has come, so an interrupted upload resumes where it
-- stopped. hash_state is the file's SHA-256 state after its received
-- bytes, so the digest is computed while uploading, across resumptions.
CREATE TABLE data_uploads (
    id           TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    spec         TEXT NOT NULL,
    storage_key  TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    created_by   TEXT NOT NULL DEFAULT '',
    created_key  TEXT NOT NULL DEFAULT ''
);

CREATE TABLE data_upload_files (
    upload_id  TEXT NOT NULL REFERENCES data_uploads(id) ON DELETE CASCADE,
    idx        BIGINT NOT NULL,
    path       TEXT NOT NULL,
    size_bytes BIGINT NOT NULL,
    sha256     TEXT NOT NULL DEFAULT '',
    received   BIGINT NOT NULL DEFAULT 0,
    hash_state TEXT NOT NULL DEFAULT '',
    parts      TEXT NOT NULL DEFAULT '',
    done       BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (upload_id, idx)
);
