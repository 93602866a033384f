package registry

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/plinth-dev/plinth/internal/audit"
	"github.com/plinth-dev/plinth/internal/fault"
	"github.com/plinth-dev/plinth/internal/store"
	"github.com/plinth-dev/plinth/internal/tracking"
	"github.com/plinth-dev/plinth/internal/tracking/search"
)

func versionResource(sc tracking.Scope, name, version string) string {
	return resource(sc, name) + "/versions/" + version
}

func parseVersion(name, version string) (int64, error) {
	n, err := strconv.ParseInt(version, 10, 64)
	if err != nil || n < 1 {
		return 0, fault.New(fault.Invalid, "Model version must be an integer, got '%s'", version)
	}
	return n, nil
}

// version reads one live version of a model.
func (s *Service) version(ctx context.Context, q store.Querier, sc tracking.Scope, name, version string, lock bool) (Model, Version, error) {
	n, err := parseVersion(name, version)
	if err != nil {
		return Model{}, Version{}, err
	}
	m, err := s.model(ctx, q, sc, name, lock)
	if fault.Is(err, fault.NotFound) {
		return m, Version{}, fault.New(fault.NotFound, "Model Version (name=%s, version=%s) not found", name, version)
	}
	if err != nil {
		return m, Version{}, err
	}
	vs, err := s.versions(ctx, q, `v.model_pk = ? AND v.version = ? AND NOT v.deleted`, []any{m.pk, n}, "v.pk", 0, 0)
	if err != nil {
		return m, Version{}, err
	}
	if len(vs) == 0 {
		return m, Version{}, fault.New(fault.NotFound, "Model Version (name=%s, version=%s) not found", name, version)
	}
	return m, vs[0], nil
}

// CreateVersionInput is what model-versions/create carries.
type CreateVersionInput struct {
	Name        string
	Source      string
	RunID       string
	RunLink     string
	Description string
	Tags        []Tag
}

// CreateVersion adds the next version of a model. Concurrent creations
// of one model get distinct, consecutive numbers (the model row is locked
// while the number is chosen). A source of runs:/<run>/<path> is stored
// as the run's artifact location, so nothing is copied.
func (s *Service) CreateVersion(ctx context.Context, sc tracking.Scope, in CreateVersionInput) (Version, error) {
	if in.Source == "" {
		return Version{}, fault.New(fault.Invalid, "Missing value for required parameter 'source'. See the API docs for more information about request parameters.")
	}
	for _, t := range in.Tags {
		if err := validTag(t.Key, t.Value); err != nil {
			return Version{}, err
		}
	}
	storage := in.Source
	if rest, ok := strings.CutPrefix(in.Source, "runs:/"); ok {
		runID, path, _ := strings.Cut(strings.TrimLeft(rest, "/"), "/")
		if runID == "" {
			return Version{}, fault.New(fault.Invalid, "Invalid run source '%s': expected runs:/<run_id>/<path>", in.Source)
		}
		if in.RunID == "" {
			in.RunID = runID
		}
		run, err := s.tracking.GetRun(ctx, sc, runID)
		if err != nil {
			return Version{}, err
		}
		storage = strings.TrimRight(run.Info.ArtifactURI, "/")
		if path != "" {
			storage += "/" + path
		}
	} else if in.RunID != "" {
		if _, err := s.tracking.GetRun(ctx, sc, in.RunID); err != nil {
			return Version{}, err
		}
	}
	caller := audit.CallerFrom(ctx)
	var out Version
	err := s.db.Tx(ctx, func(tx store.Querier) error {
		m, err := s.model(ctx, tx, sc, in.Name, true)
		if err != nil {
			return err
		}
		var next int64
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) + 1 FROM model_versions WHERE model_pk = ?`, m.pk).Scan(&next); err != nil {
			return err
		}
		now := s.now().UnixMilli()
		var pk int64
		if err := tx.QueryRowContext(ctx, `INSERT INTO model_versions (model_pk, name, version, description, source, storage_location, run_id, run_link, status, current_stage,
			creation_time, last_updated_time, user_id, created_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'READY', 'None', ?, ?, ?, ?) RETURNING pk`,
			m.pk, m.Name, next, in.Description, in.Source, storage, in.RunID, in.RunLink, now, now, caller.Principal, caller.KeyID).Scan(&pk); err != nil {
			return fmt.Errorf("creating model version: %w", err)
		}
		for _, t := range in.Tags {
			if _, err := tx.ExecContext(ctx, `INSERT INTO model_version_tags (version_pk, key, value) VALUES (?, ?, ?)
				ON CONFLICT (version_pk, key) DO UPDATE SET value = excluded.value`, pk, t.Key, t.Value); err != nil {
				return err
			}
		}
		if _, err := tx.ExecContext(ctx, `UPDATE registered_models SET last_updated_time = ? WHERE pk = ?`, now, m.pk); err != nil {
			return err
		}
		out = Version{pk: pk, Name: m.Name, Version: strconv.FormatInt(next, 10), Description: in.Description, Source: in.Source,
			StorageLocation: storage, RunID: in.RunID, RunLink: in.RunLink, Status: "READY", CurrentStage: "None",
			CreationTime: now, LastUpdatedTime: now, UserID: caller.Principal, Tags: in.Tags}
		return s.audit.Append(ctx, tx, audit.Record{Action: "model.version.create", Resource: versionResource(sc, m.Name, out.Version), Workspace: sc.Workspace,
			Details: map[string]any{"source": in.Source, "run_id": in.RunID}})
	})
	return out, err
}

// GetVersion returns one version.
func (s *Service) GetVersion(ctx context.Context, sc tracking.Scope, name, version string) (Version, error) {
	_, v, err := s.version(ctx, s.db.Read(), sc, name, version, false)
	return v, err
}

// DownloadURI is where a version's files are: its storage location.
func (s *Service) DownloadURI(ctx context.Context, sc tracking.Scope, name, version string) (string, error) {
	v, err := s.GetVersion(ctx, sc, name, version)
	if err != nil {
		return "", err
	}
	if v.StorageLocation != "" {
		return v.StorageLocation, nil
	}
	return v.Source, nil
}

// UpdateVersion changes a version's description.
func (s *Service) UpdateVersion(ctx context.Context, sc tracking.Scope, name, version, description string) (Version, error) {
	err := s.db.Tx(ctx, func(tx store.Querier) error {
		_, v, err := s.version(ctx, tx, sc, name, version, true)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE model_versions SET description = ?, last_updated_time = ? WHERE pk = ?`, description, s.now().UnixMilli(), v.pk); err != nil {
			return err
		}
		return s.audit.Append(ctx, tx, audit.Record{Action: "model.version.update", Resource: versionResource(sc, name, version), Workspace: sc.Workspace})
	})
	if err != nil {
		return Version{}, err
	}
	return s.GetVersion(ctx, sc, name, version)
}

// DeleteVersion deletes a version; aliases that pointed at it go too.
// Its number is never reused.
func (s *Service) DeleteVersion(ctx context.Context, sc tracking.Scope, name, version string) error {
	return s.db.Tx(ctx, func(tx store.Querier) error {
		m, v, err := s.version(ctx, tx, sc, name, version, true)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE model_versions SET deleted = TRUE, current_stage = 'Archived', last_updated_time = ? WHERE pk = ?`, s.now().UnixMilli(), v.pk); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM registered_model_aliases WHERE model_pk = ? AND version = ?`, m.pk, mustInt(v.Version)); err != nil {
			return err
		}
		return s.audit.Append(ctx, tx, audit.Record{Action: "model.version.delete", Resource: versionResource(sc, name, version), Workspace: sc.Workspace})
	})
}

// TransitionStage moves a version to a stage; with archiveExisting, the
// other versions in that stage (Staging or Production) are archived.
func (s *Service) TransitionStage(ctx context.Context, sc tracking.Scope, name, version, stage string, archiveExisting bool) (Version, error) {
	stage, err := ParseStage(stage)
	if err != nil {
		return Version{}, err
	}
	if archiveExisting && stage != "Staging" && stage != "Production" {
		return Version{}, fault.New(fault.Invalid, "Model version transition cannot archive existing model versions because '%s' is not an Active stage. Valid stages are Staging, Production", stage)
	}
	err = s.db.Tx(ctx, func(tx store.Querier) error {
		m, v, err := s.version(ctx, tx, sc, name, version, true)
		if err != nil {
			return err
		}
		now := s.now().UnixMilli()
		if archiveExisting {
			if _, err := tx.ExecContext(ctx, `UPDATE model_versions SET current_stage = 'Archived', last_updated_time = ? WHERE model_pk = ? AND current_stage = ? AND pk <> ? AND NOT deleted`,
				now, m.pk, stage, v.pk); err != nil {
				return err
			}
		}
		if _, err := tx.ExecContext(ctx, `UPDATE model_versions SET current_stage = ?, last_updated_time = ? WHERE pk = ?`, stage, now, v.pk); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE registered_models SET last_updated_time = ? WHERE pk = ?`, now, m.pk); err != nil {
			return err
		}
		return s.audit.Append(ctx, tx, audit.Record{Action: "model.version.transition", Resource: versionResource(sc, name, version), Workspace: sc.Workspace,
			Details: map[string]any{"from": v.CurrentStage, "to": stage, "archive_existing_versions": archiveExisting}})
	})
	if err != nil {
		return Version{}, err
	}
	return s.GetVersion(ctx, sc, name, version)
}

// SetVersionTag sets a tag on a version.
func (s *Service) SetVersionTag(ctx context.Context, sc tracking.Scope, name, version, key, value string) error {
	if err := validTag(key, value); err != nil {
		return err
	}
	return s.db.Tx(ctx, func(tx store.Querier) error {
		_, v, err := s.version(ctx, tx, sc, name, version, true)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO model_version_tags (version_pk, key, value) VALUES (?, ?, ?)
			ON CONFLICT (version_pk, key) DO UPDATE SET value = excluded.value`, v.pk, key, value); err != nil {
			return err
		}
		return s.audit.Append(ctx, tx, audit.Record{Action: "model.version.set-tag", Resource: versionResource(sc, name, version), Workspace: sc.Workspace, Details: map[string]any{"key": key}})
	})
}

// DeleteVersionTag removes a tag from a version.
func (s *Service) DeleteVersionTag(ctx context.Context, sc tracking.Scope, name, version, key string) error {
	return s.db.Tx(ctx, func(tx store.Querier) error {
		_, v, err := s.version(ctx, tx, sc, name, version, true)
		if err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM model_version_tags WHERE version_pk = ? AND key = ?`, v.pk, key)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fault.New(fault.NotFound, "No tag with name: %s for model version %s of registered model %s", key, version, name)
		}
		return s.audit.Append(ctx, tx, audit.Record{Action: "model.version.delete-tag", Resource: versionResource(sc, name, version), Workspace: sc.Workspace, Details: map[string]any{"key": key}})
	})
}

// SetAlias points an alias of a model at a version.
func (s *Service) SetAlias(ctx context.Context, sc tracking.Scope, name, alias, version string) error {
	if err := validAlias(alias); err != nil {
		return err
	}
	return s.db.Tx(ctx, func(tx store.Querier) error {
		m, v, err := s.version(ctx, tx, sc, name, version, true)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO registered_model_aliases (model_pk, alias, version) VALUES (?, ?, ?)
			ON CONFLICT (model_pk, alias) DO UPDATE SET version = excluded.version`, m.pk, alias, mustInt(v.Version)); err != nil {
			return err
		}
		return s.audit.Append(ctx, tx, audit.Record{Action: "model.alias.set", Resource: resource(sc, name) + "/aliases/" + alias, Workspace: sc.Workspace,
			Details: map[string]any{"version": version}})
	})
}

// DeleteAlias removes an alias.
func (s *Service) DeleteAlias(ctx context.Context, sc tracking.Scope, name, alias string) error {
	return s.db.Tx(ctx, func(tx store.Querier) error {
		m, err := s.model(ctx, tx, sc, name, true)
		if err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM registered_model_aliases WHERE model_pk = ? AND alias = ?`, m.pk, alias)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fault.New(fault.NotFound, "Registered model alias %s not found.", alias)
		}
		return s.audit.Append(ctx, tx, audit.Record{Action: "model.alias.delete", Resource: resource(sc, name) + "/aliases/" + alias, Workspace: sc.Workspace})
	})
}

// VersionByAlias resolves models:/name@alias.
func (s *Service) VersionByAlias(ctx context.Context, sc tracking.Scope, name, alias string) (Version, error) {
	q := s.db.Read()
	m, err := s.model(ctx, q, sc, name, false)
	if err != nil {
		return Version{}, err
	}
	var v int64
	err = q.QueryRowContext(ctx, `SELECT version FROM registered_model_aliases WHERE model_pk = ? AND alias = ?`, m.pk, alias).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return Version{}, fault.New(fault.NotFound, "Registered model alias %s not found.", alias)
	}
	if err != nil {
		return Version{}, err
	}
	return s.GetVersion(ctx, sc, name, strconv.FormatInt(v, 10))
}

// LatestVersions returns the newest version in each of stages (all when
// empty), as models:/name/<stage> resolves.
func (s *Service) LatestVersions(ctx context.Context, sc tracking.Scope, name string, stages []string) ([]Version, error) {
	for i, st := range stages {
		p, err := ParseStage(st)
		if err != nil {
			return nil, err
		}
		stages[i] = p
	}
	q := s.db.Read()
	m, err := s.model(ctx, q, sc, name, false)
	if err != nil {
		return nil, err
	}
	return s.latestVersions(ctx, q, m.pk, stages)
}

// SearchVersions finds model versions by MLflow's filter language.
func (s *Service) SearchVersions(ctx context.Context, sc tracking.Scope, filter string, orderBy []string, max int64, pageToken string) ([]Version, string, error) {
	limit, offset, err := page(max, pageToken, 10000, 200000)
	if err != nil {
		return nil, "", err
	}
	q := s.db.Read()
	c, err := search.CompileModelVersions(q.Dialect(), filter, orderBy)
	if err != nil {
		return nil, "", fault.Wrap(fault.Invalid, err, "%s", err.Error())
	}
	where := `NOT v.deleted AND v.model_pk IN (SELECT pk FROM registered_models WHERE workspace_id = ?)`
	args := []any{sc.WorkspaceID}
	if c.Where != "" {
		where += " AND (" + c.Where + ")"
		args = append(args, c.Args...)
	}
	args = append(args, c.OrderArgs...)
	out, err := s.versions(ctx, q, where, args, c.OrderBy, limit+1, offset)
	if err != nil {
		return nil, "", err
	}
	next := ""
	if len(out) > limit {
		out = out[:limit]
		next = nextToken(offset + limit)
	}
	return out, next, nil
}

// mustInt converts a version number this package formatted itself.
func mustInt(version string) int64 {
	n, _ := strconv.ParseInt(version, 10, 64)
	return n
}
