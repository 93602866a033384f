package tracking

import (
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/plinth-dev/plinth/internal/audit"
	"github.com/plinth-dev/plinth/internal/fault"
	"github.com/plinth-dev/plinth/internal/store"
	"github.com/plinth-dev/plinth/internal/tracking/search"
)

// Scope is the workspace a tracking call acts in.
type Scope struct {
	WorkspaceID string
	Workspace   string
}

// DefaultExperimentID is the experiment MLflow clients log to when none
// is set; every workspace has one, named "Default".
const DefaultExperimentID = "0"

// Service implements experiment tracking.
type Service struct {
	db    *store.DB
	audit *audit.Log
	now   func() time.Time
}

// NewService returns a Service; now nil means time.Now.
func NewService(db *store.DB, log *audit.Log, now func() time.Time) *Service {
	if now == nil {
		now = time.Now
	}
	return &Service{db: db, audit: log, now: now}
}

func (s *Service) nowMillis() int64 { return s.now().UnixMilli() }

// ArtifactRoot is where a workspace's experiment keeps its artifacts: the
// workspace's name first, so the artifact proxy knows whose files they are.
func ArtifactRoot(workspace, experimentID string) string {
	return "mlflow-artifacts:/" + workspace + "/" + experimentID
}

func resource(sc Scope, kind, id string) string {
	return "workspaces/" + sc.Workspace + "/" + kind + "/" + id
}

// CreateDefaultExperiment makes experiment 0 "Default" in a new workspace,
// inside the transaction that creates the workspace.
func (s *Service) CreateDefaultExperiment(ctx context.Context, tx store.Querier, workspaceID, workspace string) error {
	now := s.nowMillis()
	_, err := tx.ExecContext(ctx, `INSERT INTO experiments (workspace_id, experiment_id, name, artifact_location, lifecycle_stage, creation_time, last_update_time, created_by)
		VALUES (?, 0, 'Default', ?, 'active', ?, ?, 'system')`, workspaceID, ArtifactRoot(workspace, DefaultExperimentID), now, now)
	if err != nil {
		return fmt.Errorf("creating Default experiment: %w", err)
	}
	return nil
}

// EnsureDefaultExperiments gives each of the workspaces (id, name) that
// lacks one its Default experiment: workspaces created before tracking
// existed. The caller lists the workspaces, so this package reads only its
// own tables.
func (s *Service) EnsureDefaultExperiments(ctx context.Context, workspaces [][2]string) error {
	return s.db.Tx(ctx, func(tx store.Querier) error {
		for _, w := range workspaces {
			var n int
			if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM experiments WHERE workspace_id = ? AND experiment_id = 0`, w[0]).Scan(&n); err != nil {
				return err
			}
			if n > 0 {
				continue
			}
			if err := s.CreateDefaultExperiment(ctx, tx, w[0], w[1]); err != nil {
				return err
			}
		}
		return nil
	})
}

// ResourcesIn implements workspace.Holder: experiments beyond the Default
// one, and runs, keep a workspace from being deleted.
func (s *Service) ResourcesIn(ctx context.Context, q store.Querier, workspaceID string) (map[string]int, error) {
	var exps, runs int
	if err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM experiments WHERE workspace_id = ? AND experiment_id <> 0`, workspaceID).Scan(&exps); err != nil {
		return nil, err
	}
	if err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM runs r JOIN experiments e ON e.pk = r.experiment_pk WHERE e.workspace_id = ?`, workspaceID).Scan(&runs); err != nil {
		return nil, err
	}
	return map[string]int{"experiments": exps, "runs": runs}, nil
}

// DeleteResourcesIn implements workspace.Holder; the foreign keys cascade
// from experiments to everything below them.
func (s *Service) DeleteResourcesIn(ctx context.Context, tx store.Querier, workspaceID string) error {
	_, err := tx.ExecContext(ctx, `DELETE FROM experiments WHERE workspace_id = ?`, workspaceID)
	return err
}

func validateExperimentName(name string) error {
	if name == "" {
		return fault.New(fault.Invalid, "Invalid experiment name: ''")
	}
	if len(name) > MaxExperimentNameLen {
		return fault.New(fault.Invalid, "Experiment name exceeds the maximum length of %d characters", MaxExperimentNameLen)
	}
	return nil
}

func validateExperimentTag(key, value string) error {
	if err := validateKeyName("tag", key); err != nil {
		return err
	}
	if err := lengthLimit("Tag key", MaxExperimentTagKeyLen, key); err != nil {
		return err
	}
	return lengthLimit("Tag value", MaxExperimentTagValLen, value)
}

// CreateExperiment creates an experiment and returns its id.
func (s *Service) CreateExperiment(ctx context.Context, sc Scope, name, artifactLocation string, tags []Tag) (string, error) {
	if err := validateExperimentName(name); err != nil {
		return "", err
	}
	if strings.HasPrefix(artifactLocation, "runs:") {
		return "", fault.New(fault.Invalid, "Artifact location cannot be a runs:/ URI. Given: '%s'", artifactLocation)
	}
	if rest, ok := strings.CutPrefix(artifactLocation, "mlflow-artifacts:"); ok {
		// Proxied artifacts are authorised by the workspace their path
		// names: a location inside another workspace would let this one
		// list that workspace's files.
		first, _, _ := strings.Cut(strings.TrimLeft(rest, "/"), "/")
		if first != sc.Workspace {
			return "", fault.New(fault.Invalid, "Artifact location '%s' must be under mlflow-artifacts:/%s/ (this workspace)", artifactLocation, sc.Workspace)
		}
	}
	for _, t := range tags {
		if err := validateExperimentTag(t.Key, t.Value); err != nil {
			return "", err
		}
	}
	var expID int64
	err := s.db.Tx(ctx, func(tx store.Querier) error {
		// Serialise id allocation within the workspace.
		if _, err := tx.ExecContext(ctx, `SELECT id FROM workspaces WHERE id = ?`+store.ForUpdate(tx), sc.WorkspaceID); err != nil {
			return err
		}
		var exists int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM experiments WHERE workspace_id = ? AND name = ?`, sc.WorkspaceID, name).Scan(&exists); err != nil {
			return err
		}
		if exists > 0 {
			return fault.New(fault.AlreadyExists, "Experiment '%s' already exists.", name)
		}
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(experiment_id), 0) + 1 FROM experiments WHERE workspace_id = ?`, sc.WorkspaceID).Scan(&expID); err != nil {
			return err
		}
		id := strconv.FormatInt(expID, 10)
		loc := artifactLocation
		if loc == "" {
			loc = ArtifactRoot(sc.Workspace, id)
		}
		now := s.nowMillis()
		var pk int64
		err := tx.QueryRowContext(ctx, `INSERT INTO experiments (workspace_id, experiment_id, name, artifact_location, lifecycle_stage, creation_time, last_update_time, created_by)
			VALUES (?, ?, ?, ?, 'active', ?, ?, ?) RETURNING pk`, sc.WorkspaceID, expID, name, loc, now, now, audit.CallerFrom(ctx).Principal).Scan(&pk)
		if store.IsUniqueViolation(err) {
			return fault.New(fault.AlreadyExists, "Experiment '%s' already exists.", name)
		}
		if err != nil {
			return fmt.Errorf("creating experiment: %w", err)
		}
		for _, t := range tags {
			if _, err := tx.ExecContext(ctx, `INSERT INTO experiment_tags (experiment_pk, key, value) VALUES (?, ?, ?)
				ON CONFLICT (experiment_pk, key) DO UPDATE SET value = excluded.value`, pk, t.Key, t.Value); err != nil {
				return fmt.Errorf("tagging experiment: %w", err)
			}
		}
		return s.audit.Append(ctx, tx, audit.Record{Action: "experiment.create", Resource: resource(sc, "experiments", id), Workspace: sc.Workspace,
			Details: map[string]any{"name": name}})
	})
	return strconv.FormatInt(expID, 10), err
}

const experimentColumns = `e.pk, e.experiment_id, e.name, e.artifact_location, e.lifecycle_stage, e.creation_time, e.last_update_time`

func scanExperiment(row interface{ Scan(...any) error }) (Experiment, error) {
	var e Experiment
	var id int64
	err := row.Scan(&e.pk, &id, &e.Name, &e.ArtifactLocation, &e.LifecycleStage, &e.CreationTime, &e.LastUpdateTime)
	e.ExperimentID = strconv.FormatInt(id, 10)
	return e, err
}

// parseExperimentID checks an experiment id is a number, as Plinth issues.
func parseExperimentID(id string) (int64, error) {
	n, err := strconv.ParseInt(id, 10, 64)
	if err != nil || n < 0 {
		return 0, fault.New(fault.NotFound, "No Experiment with id=%s exists", id)
	}
	return n, nil
}

func (s *Service) experiment(ctx context.Context, q store.Querier, sc Scope, id string, lock bool) (Experiment, error) {
	n, err := parseExperimentID(id)
	if err != nil {
		return Experiment{}, err
	}
	suffix := ""
	if lock {
		suffix = store.ForUpdate(q)
	}
	e, err := scanExperiment(q.QueryRowContext(ctx, `SELECT `+experimentColumns+` FROM experiments e WHERE e.workspace_id = ? AND e.experiment_id = ?`+suffix, sc.WorkspaceID, n))
	if errors.Is(err, sql.ErrNoRows) {
		return e, fault.New(fault.NotFound, "No Experiment with id=%s exists", id)
	}
	if err != nil {
		return e, fmt.Errorf("reading experiment %s: %w", id, err)
	}
	return e, nil
}

func (s *Service) experimentTags(ctx context.Context, q store.Querier, pks []int64) (map[int64][]Tag, error) {
	out := map[int64][]Tag{}
	if len(pks) == 0 {
		return out, nil
	}
	args := make([]any, len(pks))
	for i, pk := range pks {
		args[i] = pk
	}
	rows, err := q.QueryContext(ctx, `SELECT experiment_pk, key, value FROM experiment_tags WHERE experiment_pk IN (?`+strings.Repeat(",?", len(pks)-1)+`) ORDER BY key`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var pk int64
		var t Tag
		if err := rows.Scan(&pk, &t.Key, &t.Value); err != nil {
			return nil, err
		}
		out[pk] = append(out[pk], t)
	}
	return out, rows.Err()
}

// GetExperiment returns an experiment with its tags.
func (s *Service) GetExperiment(ctx context.Context, sc Scope, id string) (Experiment, error) {
	q := s.db.Read()
	e, err := s.experiment(ctx, q, sc, id, false)
	if err != nil {
		return e, err
	}
	tags, err := s.experimentTags(ctx, q, []int64{e.pk})
	e.Tags = tags[e.pk]
	return e, err
}

// GetExperimentByName returns the experiment with that name, deleted or not.
func (s *Service) GetExperimentByName(ctx context.Context, sc Scope, name string) (Experiment, error) {
	q := s.db.Read()
	e, err := scanExperiment(q.QueryRowContext(ctx, `SELECT `+experimentColumns+` FROM experiments e WHERE e.workspace_id = ? AND e.name = ?`, sc.WorkspaceID, name))
	if errors.Is(err, sql.ErrNoRows) {
		return e, fault.New(fault.NotFound, "Could not find experiment with name '%s'", name)
	}
	if err != nil {
		return e, fmt.Errorf("reading experiment %q: %w", name, err)
	}
	tags, err := s.experimentTags(ctx, q, []int64{e.pk})
	e.Tags = tags[e.pk]
	return e, err
}

// ViewType selects active, deleted or all entities, as MLflow's ViewType.
type ViewType string

const (
	ActiveOnly  ViewType = "ACTIVE_ONLY"
	DeletedOnly ViewType = "DELETED_ONLY"
	AllView     ViewType = "ALL"
)

// ParseViewType accepts MLflow's names (and its enum numbers 1-3).
func ParseViewType(field, v string) (ViewType, error) {
	switch strings.ToUpper(v) {
	case "", "ACTIVE_ONLY", "1":
		return ActiveOnly, nil
	case "DELETED_ONLY", "2":
		return DeletedOnly, nil
	case "ALL", "3":
		return AllView, nil
	}
	return "", fault.New(fault.Invalid, "Invalid value %q for parameter '%s' supplied", v, field)
}

func (v ViewType) condition(alias string) string {
	switch v {
	case DeletedOnly:
		return alias + ".lifecycle_stage = 'deleted'"
	case AllView:
		return alias + ".lifecycle_stage IN ('active', 'deleted')"
	}
	return alias + ".lifecycle_stage = 'active'"
}

// SearchInput is a search request for experiments or runs.
type SearchInput struct {
	ExperimentIDs []string
	Filter        string
	ViewType      ViewType
	MaxResults    int64
	OrderBy       []string
	PageToken     string
}

// offsetToken encodes a result offset the way MLflow does (base64 JSON).
func offsetToken(offset int) string {
	b, _ := json.Marshal(map[string]int{"offset": offset})
	return base64.StdEncoding.EncodeToString(b)
}

func parseOffsetToken(tok string) (int, error) {
	if tok == "" {
		return 0, nil
	}
	b, err := base64.StdEncoding.DecodeString(tok)
	var v struct {
		Offset *int `json:"offset"`
	}
	if err != nil || json.Unmarshal(b, &v) != nil || v.Offset == nil || *v.Offset < 0 {
		return 0, fault.New(fault.Invalid, "Invalid page token, could not base64-decode")
	}
	return *v.Offset, nil
}

func maxResults(n int64) (int, error) {
	if n == 0 {
		return SearchDefaultResults, nil
	}
	if n < 0 || n > SearchMaxResults {
		return 0, fault.New(fault.Invalid, "Invalid value for request parameter max_results. It must be at most %d, but got value %d", SearchMaxResults, n)
	}
	return int(n), nil
}

// SearchExperiments finds experiments by MLflow's filter language.
func (s *Service) SearchExperiments(ctx context.Context, sc Scope, in SearchInput) ([]Experiment, string, error) {
	limit, err := maxResults(in.MaxResults)
	if err != nil {
		return nil, "", err
	}
	offset, err := parseOffsetToken(in.PageToken)
	if err != nil {
		return nil, "", err
	}
	q := s.db.Read()
	c, err := search.CompileExperiments(q.Dialect(), in.Filter, in.OrderBy)
	if err != nil {
		return nil, "", fault.Wrap(fault.Invalid, err, "%s", err.Error())
	}
	where := "e.workspace_id = ? AND " + in.ViewType.condition("e")
	args := []any{sc.WorkspaceID}
	if c.Where != "" {
		where += " AND (" + c.Where + ")"
		args = append(args, c.Args...)
	}
	args = append(args, c.OrderArgs...)
	args = append(args, limit+1, offset)
	rows, err := q.QueryContext(ctx, `SELECT `+experimentColumns+` FROM experiments e WHERE `+where+` ORDER BY `+c.OrderBy+` LIMIT ? OFFSET ?`, args...)
	if err != nil {
		return nil, "", fmt.Errorf("searching experiments: %w", err)
	}
	defer rows.Close()
	var out []Experiment
	var pks []int64
	for rows.Next() {
		e, err := scanExperiment(rows)
		if err != nil {
			return nil, "", err
		}
		out = append(out, e)
		pks = append(pks, e.pk)
	}
	if err := rows.Err(); err != nil {
		return nil, "", err
	}
	next := ""
	if len(out) > limit {
		out, pks = out[:limit], pks[:limit]
		next = offsetToken(offset + limit)
	}
	tags, err := s.experimentTags(ctx, q, pks)
	if err != nil {
		return nil, "", err
	}
	for i := range out {
		out[i].Tags = tags[out[i].pk]
	}
	return out, next, nil
}

// UpdateExperiment renames an experiment.
func (s *Service) UpdateExperiment(ctx context.Context, sc Scope, id, newName string) error {
	return s.db.Tx(ctx, func(tx store.Querier) error {
		e, err := s.experiment(ctx, tx, sc, id, true)
		if err != nil {
			return err
		}
		if e.LifecycleStage != StageActive {
			return fault.New(fault.Invalid, "Cannot rename a non-active experiment.")
		}
		if newName == "" {
			return nil
		}
		if err := validateExperimentName(newName); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE experiments SET name = ?, last_update_time = ? WHERE pk = ?`, newName, s.nowMillis(), e.pk)
		if store.IsUniqueViolation(err) {
			return fault.New(fault.AlreadyExists, "Experiment '%s' already exists.", newName)
		}
		if err != nil {
			return err
		}
		return s.audit.Append(ctx, tx, audit.Record{Action: "experiment.update", Resource: resource(sc, "experiments", id), Workspace: sc.Workspace,
			Details: map[string]any{"old_name": e.Name, "new_name": newName}})
	})
}

// DeleteExperiment marks an experiment and its runs deleted; RestoreExperiment undoes it.
func (s *Service) DeleteExperiment(ctx context.Context, sc Scope, id string) error {
	return s.setExperimentStage(ctx, sc, id, StageDeleted)
}

// RestoreExperiment makes a deleted experiment and its runs active again.
func (s *Service) RestoreExperiment(ctx context.Context, sc Scope, id string) error {
	return s.setExperimentStage(ctx, sc, id, StageActive)
}

func (s *Service) setExperimentStage(ctx context.Context, sc Scope, id, stage string) error {
	return s.db.Tx(ctx, func(tx store.Querier) error {
		e, err := s.experiment(ctx, tx, sc, id, true)
		if err != nil {
			return err
		}
		if stage == StageDeleted && id == DefaultExperimentID {
			return fault.New(fault.Invalid, "Cannot delete the default experiment '0'. This is an internally reserved experiment.")
		}
		if stage == StageActive && e.LifecycleStage != StageDeleted {
			return fault.New(fault.Invalid, "Cannot restore an experiment that is not deleted.")
		}
		if stage == StageDeleted && e.LifecycleStage != StageActive {
			return fault.New(fault.Invalid, "Cannot delete an already deleted experiment.")
		}
		now := s.nowMillis()
		if _, err := tx.ExecContext(ctx, `UPDATE experiments SET lifecycle_stage = ?, last_update_time = ? WHERE pk = ?`, stage, now, e.pk); err != nil {
			return err
		}
		// MLflow moves the experiment's runs with it.
		var deletedTime any
		if stage == StageDeleted {
			deletedTime = now
		}
		if _, err := tx.ExecContext(ctx, `UPDATE runs SET lifecycle_stage = ?, deleted_time = ? WHERE experiment_pk = ?`, stage, deletedTime, e.pk); err != nil {
			return err
		}
		action := "experiment.delete"
		if stage == StageActive {
			action = "experiment.restore"
		}
		return s.audit.Append(ctx, tx, audit.Record{Action: action, Resource: resource(sc, "experiments", id), Workspace: sc.Workspace})
	})
}

// SetExperimentTag sets (or replaces) a tag on an experiment.
func (s *Service) SetExperimentTag(ctx context.Context, sc Scope, id, key, value string) error {
	if err := validateExperimentTag(key, value); err != nil {
		return err
	}
	return s.db.Tx(ctx, func(tx store.Querier) error {
		e, err := s.experiment(ctx, tx, sc, id, true)
		if err != nil {
			return err
		}
		if e.LifecycleStage != StageActive {
			return fault.New(fault.Invalid, "The experiment %s must be in the 'active' state. Current state is %s.", id, e.LifecycleStage)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO experiment_tags (experiment_pk, key, value) VALUES (?, ?, ?)
			ON CONFLICT (experiment_pk, key) DO UPDATE SET value = excluded.value`, e.pk, key, value); err != nil {
			return err
		}
		return s.audit.Append(ctx, tx, audit.Record{Action: "experiment.set-tag", Resource: resource(sc, "experiments", id), Workspace: sc.Workspace,
			Details: map[string]any{"key": key}})
	})
}

// DeleteExperimentTag removes a tag from an experiment.
func (s *Service) DeleteExperimentTag(ctx context.Context, sc Scope, id, key string) error {
	return s.db.Tx(ctx, func(tx store.Querier) error {
		e, err := s.experiment(ctx, tx, sc, id, true)
		if err != nil {
			return err
		}
		if e.LifecycleStage != StageActive {
			return fault.New(fault.Invalid, "The experiment %s must be in the 'active' state. Current state is %s.", id, e.LifecycleStage)
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM experiment_tags WHERE experiment_pk = ? AND key = ?`, e.pk, key)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fault.New(fault.NotFound, "No tag with name: %s in experiment with id %s", key, id)
		}
		return s.audit.Append(ctx, tx, audit.Record{Action: "experiment.delete-tag", Resource: resource(sc, "experiments", id), Workspace: sc.Workspace,
			Details: map[string]any{"key": key}})
	})
}
