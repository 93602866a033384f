package auth

import (
	"context"
	"fmt"
	"regexp"
	"time"

	"github.com/plinth-dev/plinth/internal/audit"
	"github.com/plinth-dev/plinth/internal/fault"
	"github.com/plinth-dev/plinth/internal/id"
	"github.com/plinth-dev/plinth/internal/store"
)

// A run token is an API key limited to one workspace and one MLflow run:
// the MLFLOW_TRACKING_TOKEN a batch job's training script runs with. It
// belongs to the job's submitter, so the audit log names who is behind
// every write made with it; Identity.Can grants it at most
// RunTokenPermissions in its workspace, and the MLflow layer lets it
// write only to its run.

// RunTokenPermissions are all a run token can ever be granted, whatever
// roles its owner holds: it gets the intersection of these and the
// owner's permissions, in its one workspace.
var RunTokenPermissions = []Permission{TrackingRead, TrackingWrite, RegistryRead, DataRead}

var runTokenAllows = func() map[Permission]bool {
	m := map[Permission]bool{}
	for _, p := range RunTokenPermissions {
		m[p] = true
	}
	return m
}()

var runIDRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$`)

// CreateRunToken makes a key owned by principal, limited to workspace and
// to the run runID, that expires after ttl, and returns its secret and
// id. The key is named run-<first 8 characters of runID>-<random>, so a
// job retried on the same run gets a key of its own. Its creation is
// audited as key.create, by the caller in ctx ("system" when none).
func (s *Service) CreateRunToken(ctx context.Context, principal, workspace, runID string, ttl time.Duration) (secret string, keyID string, err error) {
	if !runIDRE.MatchString(runID) {
		return "", "", fault.InvalidField("run_id", "%q is not a valid run id", truncate(runID))
	}
	if workspace == "" {
		return "", "", fault.InvalidField("workspace", "a run token must be limited to the run's workspace")
	}
	if ttl <= 0 {
		return "", "", fault.InvalidField("ttl", "%s is not a positive duration", ttl)
	}
	now := s.now().UTC().Truncate(time.Millisecond)
	expires := now.Add(ttl)
	createdBy := audit.CallerFrom(ctx).Principal
	if createdBy == "" {
		createdBy = "system"
	}
	suffix := id.New()
	in := CreateKeyInput{Name: "run-" + runID[:min(8, len(runID))] + "-" + suffix[len(suffix)-6:], Principal: principal,
		Workspace: workspace, ExpiresAt: &expires, RunID: runID}
	secret = NewKeySecret()
	err = s.tx(ctx, func(tx store.Querier) error {
		key, err := s.insertKey(ctx, tx, in, secret, createdBy, now)
		if err != nil {
			return err
		}
		keyID = key.ID
		return s.audit.Append(ctx, tx, audit.Record{Action: "key.create", Resource: "keys/" + key.ID, Workspace: workspace,
			Details: map[string]any{"name": key.Name, "principal": key.Principal, "prefix": key.Prefix, "run_id": runID,
				"expires_at": key.ExpiresAt.Format(time.RFC3339Nano)}})
	})
	if err != nil {
		return "", "", err
	}
	return secret, keyID, nil
}

// RevokeRunTokens revokes every live key limited to runID, each audited
// as key.revoke; call it when the run's job ends. Revoking a run that has
// no live keys does nothing.
func (s *Service) RevokeRunTokens(ctx context.Context, runID string) error {
	if runID == "" {
		// An empty run id would name every ordinary key.
		return fault.InvalidField("run_id", "must not be empty")
	}
	return s.tx(ctx, func(tx store.Querier) error {
		rows, err := tx.QueryContext(ctx, `SELECT `+keyColumns+` FROM api_keys k JOIN principals p ON p.id = k.principal_id
			WHERE k.run_id = ? AND k.revoked_at IS NULL ORDER BY k.id`+store.ForUpdate(tx), runID)
		if err != nil {
			return fmt.Errorf("reading run %s's keys: %w", runID, err)
		}
		var keys []APIKey
		for rows.Next() {
			k, err := scanKey(rows)
			if err != nil {
				rows.Close()
				return fmt.Errorf("reading run %s's keys: %w", runID, err)
			}
			keys = append(keys, k)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("reading run %s's keys: %w", runID, err)
		}
		now := s.now().UTC().Truncate(time.Millisecond).UnixMilli()
		for _, k := range keys {
			if _, err := tx.ExecContext(ctx, `UPDATE api_keys SET revoked_at = ? WHERE id = ?`, now, k.ID); err != nil {
				return fmt.Errorf("revoking key %s: %w", k.ID, err)
			}
		}
		// Audit last: on PostgreSQL Append holds the chain head until commit.
		for _, k := range keys {
			if err := s.audit.Append(ctx, tx, audit.Record{Action: "key.revoke", Resource: "keys/" + k.ID, Workspace: k.Workspace,
				Details: map[string]any{"name": k.Name, "principal": k.Principal, "run_id": runID}}); err != nil {
				return err
			}
		}
		return nil
	})
}
