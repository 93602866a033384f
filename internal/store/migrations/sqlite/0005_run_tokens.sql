-- Run-scoped API keys: a key that names a run may read in its workspace
-- and write only to that run (the token a batch job's MLflow script gets).
-- '' means an ordinary key. The index serves revoking a run's keys when
-- its job ends.
ALTER TABLE api_keys ADD COLUMN run_id TEXT NOT NULL DEFAULT '';
CREATE INDEX api_keys_run ON api_keys (run_id) WHERE run_id <> '';
