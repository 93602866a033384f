// Package registry is Plinth's model registry: registered models, their
// numbered versions with stages, tags and aliases, following MLflow's
// Model Registry rules. The MLflow wire format lives in internal/mlflowapi.
package registry

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"

	"strconv"
	"strings"
	"time"

	"github.com/plinth-dev/plinth/internal/artifact"
	"github.com/plinth-dev/plinth/internal/audit"
	"github.com/plinth-dev/plinth/internal/fault"
	"github.com/plinth-dev/plinth/internal/store"
	"github.com/plinth-dev/plinth/internal/tracking"
	"github.com/plinth-dev/plinth/internal/tracking/search"
)

// Stages a model version can be in, as MLflow names them.
var Stages = []string{"None", "Staging", "Production", "Archived"}

// Tag is a key/value pair on a model or a version.
type Tag struct {
	Key   string
	Value string
}

// Alias names a version of a model.
type Alias struct {
	Alias   string
	Version string
}

// Model is a registered model.
type Model struct {
	pk              int64
	Name            string
	Description     string
	CreationTime    int64
	LastUpdatedTime int64
	LatestVersions  []Version
	Tags            []Tag
	Aliases         []Alias
}

// Version is one version of a registered model.
type Version struct {
	pk              int64
	Name            string
	Version         string
	Description     string
	Source          string
	StorageLocation string
	RunID           string
	RunLink         string
	Status          string
	CurrentStage    string
	CreationTime    int64
	LastUpdatedTime int64
	UserID          string
	// KeyID is the API key that registered the version (not on MLflow's wire).
	KeyID   string
	Tags    []Tag
	Aliases []string
}

// Service manages registered models in workspaces.
type Service struct {
	db       *store.DB
	audit    *audit.Log
	tracking *tracking.Service
	now      func() time.Time
	// artifacts is the artifact store (data versions may reference
	// files in it); dataStore its private area holding uploaded data;
	// storeRegion the region the store is in ("" when not configured).
	artifacts   *artifact.Store
	dataStore   *artifact.Store
	storeRegion string
	// deployments finds where model versions are served (nil: nowhere).
	deployments DeploymentFinder
}

// UseArtifacts gives the service the artifact store data versions are
// uploaded to and may reference, and the region it is in ("" when
// unknown: uploads are then recorded in their workspace's region).
func (s *Service) UseArtifacts(st *artifact.Store, region string) {
	s.artifacts, s.dataStore, s.storeRegion = st, st.Private("data"), region
}

// NewService returns a Service; now nil means time.Now.
func NewService(db *store.DB, log *audit.Log, tr *tracking.Service, now func() time.Time) *Service {
	if now == nil {
		now = time.Now
	}
	return &Service{db: db, audit: log, tracking: tr, now: now}
}

func resource(sc tracking.Scope, name string) string {
	return "workspaces/" + sc.Workspace + "/models/" + name
}

// ResourcesIn implements workspace.Holder.
func (s *Service) ResourcesIn(ctx context.Context, q store.Querier, workspaceID string) (map[string]int, error) {
	var n int
	if err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM registered_models WHERE workspace_id = ?`, workspaceID).Scan(&n); err != nil {
		return nil, err
	}
	d, err := s.dataResourcesIn(ctx, q, workspaceID)
	return map[string]int{"registered models": n, "data assets": d}, err
}

// DeleteResourcesIn implements workspace.Holder.
func (s *Service) DeleteResourcesIn(ctx context.Context, tx store.Querier, workspaceID string) error {
	for _, table := range []string{"registered_models", "data_assets", "data_uploads"} {
		if _, err := tx.ExecContext(ctx, `DELETE FROM `+table+` WHERE workspace_id = ?`, workspaceID); err != nil {
			return err
		}
	}
	return nil
}

func validName(name string) error {
	if name == "" {
		return fault.New(fault.Invalid, "Registered model name cannot be empty.")
	}
	return nil
}

var aliasRE = regexp.MustCompile(`^[\w\-]*$`)
var versionAliasRE = regexp.MustCompile(`^[vV]\d+$`)

func validAlias(alias string) error {
	switch {
	case alias == "":
		return fault.New(fault.Invalid, "Registered model alias name cannot be empty.")
	case !aliasRE.MatchString(alias):
		return fault.New(fault.Invalid, "Invalid alias name: '%s'. Names may only contain alphanumerics, underscores (_), and dashes (-).", alias)
	case len(alias) > 255:
		return fault.New(fault.Invalid, "Registered model alias name '%s' had length %d, which exceeded length limit of 255", alias, len(alias))
	case strings.EqualFold(alias, "latest"):
		return fault.New(fault.Invalid, "'latest' alias name (case insensitive) is reserved.")
	case versionAliasRE.MatchString(alias):
		return fault.New(fault.Invalid, "Version alias name '%s' is reserved.", alias)
	}
	return nil
}

func validTag(key, value string) error {
	if key == "" {
		return fault.New(fault.Invalid, "Tag name cannot be None. A key name must be provided.")
	}
	if len(key) > 250 {
		return fault.New(fault.Invalid, "Registered model key '%s' had length %d, which exceeded length limit of 250", key[:250], len(key))
	}
	if len(value) > 5000 {
		return fault.New(fault.Invalid, "Registered model value '%s' had length %d, which exceeded length limit of 5000", value[:250], len(value))
	}
	return nil
}

// ParseStage accepts a stage name in any case, as MLflow does.
func ParseStage(stage string) (string, error) {
	for _, st := range Stages {
		if strings.EqualFold(st, stage) {
			return st, nil
		}
	}
	return "", fault.New(fault.Invalid, "Invalid Model Version stage: %s. Value must be one of %s.", stage, strings.Join(Stages, ", "))
}

func (s *Service) model(ctx context.Context, q store.Querier, sc tracking.Scope, name string, lock bool) (Model, error) {
	suffix := ""
	if lock {
		suffix = store.ForUpdate(q)
	}
	var m Model
	err := q.QueryRowContext(ctx, `SELECT pk, name, description, creation_time, last_updated_time FROM registered_models WHERE workspace_id = ? AND name = ?`+suffix,
		sc.WorkspaceID, name).Scan(&m.pk, &m.Name, &m.Description, &m.CreationTime, &m.LastUpdatedTime)
	if errors.Is(err, sql.ErrNoRows) {
		return m, fault.New(fault.NotFound, "Registered Model with name=%s not found", name)
	}
	if err != nil {
		return m, fmt.Errorf("reading registered model %s: %w", name, err)
	}
	return m, nil
}

// CreateModel registers a model name.
func (s *Service) CreateModel(ctx context.Context, sc tracking.Scope, name, description string, tags []Tag) (Model, error) {
	if err := validName(name); err != nil {
		return Model{}, err
	}
	for _, t := range tags {
		if err := validTag(t.Key, t.Value); err != nil {
			return Model{}, err
		}
	}
	now := s.now().UnixMilli()
	m := Model{Name: name, Description: description, CreationTime: now, LastUpdatedTime: now, Tags: tags}
	err := s.db.Tx(ctx, func(tx store.Querier) error {
		err := tx.QueryRowContext(ctx, `INSERT INTO registered_models (workspace_id, name, description, creation_time, last_updated_time, created_by)
			VALUES (?, ?, ?, ?, ?, ?) RETURNING pk`, sc.WorkspaceID, name, description, now, now, audit.CallerFrom(ctx).Principal).Scan(&m.pk)
		if store.IsUniqueViolation(err) {
			return fault.New(fault.AlreadyExists, "Registered Model (name=%s) already exists.", name)
		}
		if err != nil {
			return fmt.Errorf("creating registered model: %w", err)
		}
		for _, t := range tags {
			if _, err := tx.ExecContext(ctx, `INSERT INTO registered_model_tags (model_pk, key, value) VALUES (?, ?, ?)
				ON CONFLICT (model_pk, key) DO UPDATE SET value = excluded.value`, m.pk, t.Key, t.Value); err != nil {
				return err
			}
		}
		return s.audit.Append(ctx, tx, audit.Record{Action: "model.create", Resource: resource(sc, name), Workspace: sc.Workspace})
	})
	return m, err
}

// GetModel returns a registered model with its latest versions per stage,
// tags and aliases.
func (s *Service) GetModel(ctx context.Context, sc tracking.Scope, name string) (Model, error) {
	q := s.db.Read()
	m, err := s.model(ctx, q, sc, name, false)
	if err != nil {
		return m, err
	}
	models, err := s.fillModels(ctx, q, []Model{m})
	if err != nil {
		return m, err
	}
	return models[0], nil
}

func (s *Service) fillModels(ctx context.Context, q store.Querier, models []Model) ([]Model, error) {
	for i := range models {
		m := &models[i]
		rows, err := q.QueryContext(ctx, `SELECT key, value FROM registered_model_tags WHERE model_pk = ? ORDER BY key`, m.pk)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var t Tag
			if err := rows.Scan(&t.Key, &t.Value); err != nil {
				rows.Close()
				return nil, err
			}
			m.Tags = append(m.Tags, t)
		}
		rows.Close()
		rows, err = q.QueryContext(ctx, `SELECT alias, version FROM registered_model_aliases WHERE model_pk = ? ORDER BY alias`, m.pk)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var a Alias
			var v int64
			if err := rows.Scan(&a.Alias, &v); err != nil {
				rows.Close()
				return nil, err
			}
			a.Version = strconv.FormatInt(v, 10)
			m.Aliases = append(m.Aliases, a)
		}
		rows.Close()
		latest, err := s.latestVersions(ctx, q, m.pk, nil)
		if err != nil {
			return nil, err
		}
		m.LatestVersions = latest
	}
	return models, nil
}

// latestVersions returns the newest version in each of stages (all
// stages when empty), ordered by stage as MLflow lists them.
func (s *Service) latestVersions(ctx context.Context, q store.Querier, modelPK int64, stages []string) ([]Version, error) {
	vs, err := s.versions(ctx, q, `v.model_pk = ? AND NOT v.deleted`, []any{modelPK}, "v.version DESC", 0, 0)
	if err != nil {
		return nil, err
	}
	want := map[string]bool{}
	for _, st := range stages {
		want[st] = true
	}
	best := map[string]Version{}
	for _, v := range vs {
		if len(stages) > 0 && !want[v.CurrentStage] {
			continue
		}
		if _, ok := best[v.CurrentStage]; !ok {
			best[v.CurrentStage] = v
		}
	}
	var out []Version
	for _, st := range Stages {
		if v, ok := best[st]; ok {
			out = append(out, v)
		}
	}
	return out, nil
}

const versionColumns = `v.pk, v.name, v.version, v.description, v.source, v.storage_location, v.run_id, v.run_link, v.status, v.current_stage, v.creation_time, v.last_updated_time, v.user_id, v.created_key`

// versions reads versions matching where, with their tags and aliases.
func (s *Service) versions(ctx context.Context, q store.Querier, where string, args []any, order string, limit, offset int) ([]Version, error) {
	query := `SELECT ` + versionColumns + ` FROM model_versions v WHERE ` + where + ` ORDER BY ` + order
	if limit > 0 {
		query += ` LIMIT ? OFFSET ?`
		args = append(append([]any{}, args...), limit, offset)
	}
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("reading model versions: %w", err)
	}
	var out []Version
	for rows.Next() {
		var v Version
		var n int64
		if err := rows.Scan(&v.pk, &v.Name, &n, &v.Description, &v.Source, &v.StorageLocation, &v.RunID, &v.RunLink, &v.Status,
			&v.CurrentStage, &v.CreationTime, &v.LastUpdatedTime, &v.UserID, &v.KeyID); err != nil {
			rows.Close()
			return nil, err
		}
		v.Version = strconv.FormatInt(n, 10)
		out = append(out, v)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	for i := range out {
		v := &out[i]
		trows, err := q.QueryContext(ctx, `SELECT key, value FROM model_version_tags WHERE version_pk = ? ORDER BY key`, v.pk)
		if err != nil {
			return nil, err
		}
		for trows.Next() {
			var t Tag
			if err := trows.Scan(&t.Key, &t.Value); err != nil {
				trows.Close()
				return nil, err
			}
			v.Tags = append(v.Tags, t)
		}
		trows.Close()
		arows, err := q.QueryContext(ctx, `SELECT a.alias FROM registered_model_aliases a JOIN model_versions mv ON mv.model_pk = a.model_pk AND mv.version = a.version
			WHERE mv.pk = ? ORDER BY a.alias`, v.pk)
		if err != nil {
			return nil, err
		}
		for arows.Next() {
			var a string
			if err := arows.Scan(&a); err != nil {
				arows.Close()
				return nil, err
			}
			v.Aliases = append(v.Aliases, a)
		}
		arows.Close()
	}
	return out, nil
}

// RenameModel renames a model and its versions.
func (s *Service) RenameModel(ctx context.Context, sc tracking.Scope, name, newName string) (Model, error) {
	if err := validName(newName); err != nil {
		return Model{}, err
	}
	err := s.db.Tx(ctx, func(tx store.Querier) error {
		m, err := s.model(ctx, tx, sc, name, true)
		if err != nil {
			return err
		}
		now := s.now().UnixMilli()
		_, err = tx.ExecContext(ctx, `UPDATE registered_models SET name = ?, last_updated_time = ? WHERE pk = ?`, newName, now, m.pk)
		if store.IsUniqueViolation(err) {
			return fault.New(fault.AlreadyExists, "Registered Model (name=%s) already exists.", newName)
		}
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE model_versions SET name = ? WHERE model_pk = ?`, newName, m.pk); err != nil {
			return err
		}
		return s.audit.Append(ctx, tx, audit.Record{Action: "model.rename", Resource: resource(sc, name), Workspace: sc.Workspace,
			Details: map[string]any{"new_name": newName}})
	})
	if err != nil {
		return Model{}, err
	}
	return s.GetModel(ctx, sc, newName)
}

// UpdateModel changes a model's description.
func (s *Service) UpdateModel(ctx context.Context, sc tracking.Scope, name, description string) (Model, error) {
	err := s.db.Tx(ctx, func(tx store.Querier) error {
		m, err := s.model(ctx, tx, sc, name, true)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE registered_models SET description = ?, last_updated_time = ? WHERE pk = ?`, description, s.now().UnixMilli(), m.pk); err != nil {
			return err
		}
		return s.audit.Append(ctx, tx, audit.Record{Action: "model.update", Resource: resource(sc, name), Workspace: sc.Workspace})
	})
	if err != nil {
		return Model{}, err
	}
	return s.GetModel(ctx, sc, name)
}

// DeleteModel deletes a model and all its versions. A model with a
// version in Production is kept unless force: deleting what serves
// traffic must be deliberate.
func (s *Service) DeleteModel(ctx context.Context, sc tracking.Scope, name string, force bool) error {
	return s.db.Tx(ctx, func(tx store.Querier) error {
		m, err := s.model(ctx, tx, sc, name, true)
		if err != nil {
			return err
		}
		var prod int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM model_versions WHERE model_pk = ? AND current_stage = 'Production' AND NOT deleted`, m.pk).Scan(&prod); err != nil {
			return err
		}
		if prod > 0 && !force {
			return fault.New(fault.Invalid, "Registered Model (name=%s) has %d version(s) in Production; archive them first or delete with force=true", name, prod)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM registered_models WHERE pk = ?`, m.pk); err != nil {
			return err
		}
		return s.audit.Append(ctx, tx, audit.Record{Action: "model.delete", Resource: resource(sc, name), Workspace: sc.Workspace,
			Details: map[string]any{"force": force, "production_versions": prod}})
	})
}

// SetModelTag sets a tag on a model; DeleteModelTag removes one.
func (s *Service) SetModelTag(ctx context.Context, sc tracking.Scope, name, key, value string) error {
	if err := validTag(key, value); err != nil {
		return err
	}
	return s.db.Tx(ctx, func(tx store.Querier) error {
		m, err := s.model(ctx, tx, sc, name, true)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO registered_model_tags (model_pk, key, value) VALUES (?, ?, ?)
			ON CONFLICT (model_pk, key) DO UPDATE SET value = excluded.value`, m.pk, key, value); err != nil {
			return err
		}
		return s.audit.Append(ctx, tx, audit.Record{Action: "model.set-tag", Resource: resource(sc, name), Workspace: sc.Workspace, Details: map[string]any{"key": key}})
	})
}

// DeleteModelTag removes a tag from a model.
func (s *Service) DeleteModelTag(ctx context.Context, sc tracking.Scope, name, key string) error {
	return s.db.Tx(ctx, func(tx store.Querier) error {
		m, err := s.model(ctx, tx, sc, name, true)
		if err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM registered_model_tags WHERE model_pk = ? AND key = ?`, m.pk, key)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fault.New(fault.NotFound, "No tag with name: %s in registered model with name %s", key, name)
		}
		return s.audit.Append(ctx, tx, audit.Record{Action: "model.delete-tag", Resource: resource(sc, name), Workspace: sc.Workspace, Details: map[string]any{"key": key}})
	})
}

// SearchModels finds registered models by MLflow's filter language.
func (s *Service) SearchModels(ctx context.Context, sc tracking.Scope, filter string, orderBy []string, max int64, pageToken string) ([]Model, string, error) {
	limit, offset, err := page(max, pageToken, 100, 1000)
	if err != nil {
		return nil, "", err
	}
	q := s.db.Read()
	c, err := search.CompileRegisteredModels(q.Dialect(), filter, orderBy)
	if err != nil {
		return nil, "", fault.Wrap(fault.Invalid, err, "%s", err.Error())
	}
	where := `m.workspace_id = ?`
	args := []any{sc.WorkspaceID}
	if c.Where != "" {
		where += " AND (" + c.Where + ")"
		args = append(args, c.Args...)
	}
	args = append(append(args, c.OrderArgs...), limit+1, offset)
	rows, err := q.QueryContext(ctx, `SELECT m.pk, m.name, m.description, m.creation_time, m.last_updated_time FROM registered_models m WHERE `+where+
		` ORDER BY `+c.OrderBy+` LIMIT ? OFFSET ?`, args...)
	if err != nil {
		return nil, "", fmt.Errorf("searching registered models: %w", err)
	}
	var out []Model
	for rows.Next() {
		var m Model
		if err := rows.Scan(&m.pk, &m.Name, &m.Description, &m.CreationTime, &m.LastUpdatedTime); err != nil {
			rows.Close()
			return nil, "", err
		}
		out = append(out, m)
	}
	rows.Close()
	next := ""
	if len(out) > limit {
		out = out[:limit]
		next = nextToken(offset + limit)
	}
	out, err = s.fillModels(ctx, q, out)
	return out, next, err
}

// page reads max_results (default def, at most limit) and an offset token.
func page(max int64, token string, def, limit int) (int, int, error) {
	n := int(max)
	if max == 0 {
		n = def
	}
	if max < 0 || n > limit {
		return 0, 0, fault.New(fault.Invalid, "Invalid value for request parameter max_results. It must be at most %d, but got value %d", limit, max)
	}
	offset := 0
	if token != "" {
		v, err := strconv.Atoi(token)
		if err != nil || v < 0 {
			return 0, 0, fault.New(fault.Invalid, "Invalid page token: %q", token)
		}
		offset = v
	}
	return n, offset, nil
}

func nextToken(offset int) string { return strconv.Itoa(offset) }
