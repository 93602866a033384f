package endpoint

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/plinth-dev/plinth/internal/audit"
	"github.com/plinth-dev/plinth/internal/compute"
	"github.com/plinth-dev/plinth/internal/fault"
	"github.com/plinth-dev/plinth/internal/store"
)

// Deployment states, as Azure ML shows them.
const (
	StateCreating  = "Creating"
	StateUpdating  = "Updating"
	StateSucceeded = "Succeeded"
	StateFailed    = "Failed"
)

// DeploymentSpec is a deployment as written, in Azure ML's managed
// online deployment field names where they exist. Command is the serving
// contract (I10): any server that listens on $PORT and answers the
// scoring, liveness and readiness routes.
type DeploymentSpec struct {
	Model string `json:"model,omitempty"`
	// ResolvedModel pins the version Model named when the deployment was
	// made (an alias or a stage may move later): models:/<name>/<version>.
	ResolvedModel        string            `json:"resolved_model,omitempty"`
	Command              string            `json:"command"`
	Environment          string            `json:"environment,omitempty"`
	EnvironmentVariables map[string]string `json:"environment_variables,omitempty"`
	InstanceType         string            `json:"instance_type"`
	InstanceCount        int               `json:"instance_count"`
	Scale                ScaleSettings     `json:"scale_settings"`
	Request              RequestSettings   `json:"request_settings"`
	Liveness             Probe             `json:"liveness_probe"`
	Readiness            Probe             `json:"readiness_probe"`
	Routes               Routes            `json:"routes"`
	// DataCollector samples calls (request and response bodies) into the
	// artifact store for model monitoring; off unless sampling_rate > 0.
	DataCollector DataCollector `json:"data_collector"`
}

// DataCollector is Azure ML's data collector, reduced to its sampling
// rate (0 to 1).
type DataCollector struct {
	SamplingRate float64 `json:"sampling_rate"`
}

// ScaleSettings: "default" keeps instance_count replicas;
// "target_utilization" scales between min and max instances to keep
// target_concurrency requests in flight per replica.
type ScaleSettings struct {
	Type              string  `json:"type"`
	MinInstances      int     `json:"min_instances"`
	MaxInstances      int     `json:"max_instances"`
	TargetConcurrency float64 `json:"target_concurrency"`
	ScaleUpWindow     int     `json:"scale_up_window_seconds"`
	ScaleDownWindow   int     `json:"scale_down_window_seconds"`
	ScaleToZero       bool    `json:"scale_to_zero"`
}

// RequestSettings bound each call.
type RequestSettings struct {
	RequestTimeoutMS                 int `json:"request_timeout_ms"`
	MaxConcurrentRequestsPerInstance int `json:"max_concurrent_requests_per_instance"`
	MaxQueueWaitMS                   int `json:"max_queue_wait_ms"`
}

// Probe settings, in seconds.
type Probe struct {
	InitialDelay     int `json:"initial_delay"`
	Period           int `json:"period"`
	Timeout          int `json:"timeout"`
	FailureThreshold int `json:"failure_threshold"`
}

// Routes are the paths of the model server.
type Routes struct {
	Scoring   string `json:"scoring"`
	Liveness  string `json:"liveness"`
	Readiness string `json:"readiness"`
}

// Deployment is a deployment with its replicas.
type Deployment struct {
	pk         int64
	Name       string         `json:"name"`
	Endpoint   string         `json:"endpoint"`
	Spec       DeploymentSpec `json:"spec"`
	Generation int64          `json:"generation"`
	State      string         `json:"provisioning_state"`
	Reason     string         `json:"reason,omitempty"`
	Desired    int            `json:"desired_replicas"`
	Replicas   []Replica      `json:"replicas"`
	CreatedBy  string         `json:"created_by"`
	CreatedAt  time.Time      `json:"created_at"`
	UpdatedAt  time.Time      `json:"updated_at"`
	endpointPK int64
}

// Replica is one running copy of a deployment's server.
type Replica struct {
	ID         string     `json:"id"`
	Generation int64      `json:"generation"`
	State      string     `json:"state"`
	Addr       string     `json:"addr,omitempty"`
	Restarts   int        `json:"restarts"`
	LastError  string     `json:"last_error,omitempty"`
	StartedAt  time.Time  `json:"started_at"`
	ReadyAt    *time.Time `json:"ready_at,omitempty"`
	nodeID     string
	handle     string
}

// Replica states.
const (
	ReplicaStarting = "starting"
	ReplicaReady    = "ready"
	ReplicaDraining = "draining"
)

// normalize fills in defaults and checks a spec.
func (s *Service) normalize(sp *DeploymentSpec) error {
	if strings.TrimSpace(sp.Command) == "" {
		return fault.InvalidField("command", "required: the command that serves the model on $PORT")
	}
	if sp.InstanceType == "" {
		return fault.InvalidField("instance_type", "required: an instance type from `plinth sku list`")
	}
	sku, err := s.compute.SKUs().Get(sp.InstanceType)
	if err != nil {
		return fault.InvalidField("instance_type", "%v", err)
	}
	sp.InstanceType = sku.Name
	if sp.InstanceCount == 0 {
		sp.InstanceCount = 1
	}
	sc := &sp.Scale
	switch sc.Type {
	case "", "default":
		sc.Type = "default"
		if sp.InstanceCount < 1 || sp.InstanceCount > 100 {
			return fault.InvalidField("instance_count", "must be from 1 to 100")
		}
	case "target_utilization":
		if sc.MaxInstances == 0 {
			sc.MaxInstances = max(sp.InstanceCount, 1)
		}
		if sc.MinInstances < 0 || sc.MaxInstances < 1 || sc.MinInstances > sc.MaxInstances || sc.MaxInstances > 100 {
			return fault.InvalidField("scale_settings", "min_instances %d and max_instances %d must satisfy 0 ≤ min ≤ max ≤ 100, max ≥ 1", sc.MinInstances, sc.MaxInstances)
		}
		if sc.MinInstances == 0 && !sc.ScaleToZero {
			return fault.InvalidField("scale_settings.min_instances", "0 needs scale_to_zero: true (the first requests then wait for a replica)")
		}
		if sc.TargetConcurrency == 0 {
			sc.TargetConcurrency = 1
		}
		if sc.TargetConcurrency < 0 {
			return fault.InvalidField("scale_settings.target_concurrency", "must be positive")
		}
		if sc.ScaleDownWindow == 0 {
			sc.ScaleDownWindow = 60
		}
	default:
		return fault.InvalidField("scale_settings.type", "%q is not default or target_utilization", clip(sc.Type))
	}
	r := &sp.Request
	if r.RequestTimeoutMS == 0 {
		r.RequestTimeoutMS = 5000
	}
	if r.MaxConcurrentRequestsPerInstance == 0 {
		r.MaxConcurrentRequestsPerInstance = 1
	}
	if r.MaxQueueWaitMS == 0 {
		r.MaxQueueWaitMS = 500
	}
	if r.RequestTimeoutMS < 1 || r.RequestTimeoutMS > 180000 || r.MaxConcurrentRequestsPerInstance < 1 || r.MaxQueueWaitMS < 0 {
		return fault.InvalidField("request_settings", "request_timeout_ms is 1 to 180000, max_concurrent_requests_per_instance at least 1")
	}
	if sp.Routes.Scoring == "" {
		sp.Routes.Scoring = "/score"
	}
	if sp.Routes.Liveness == "" {
		sp.Routes.Liveness = "/"
	}
	if sp.Routes.Readiness == "" {
		sp.Routes.Readiness = sp.Routes.Liveness
	}
	for _, p := range []string{sp.Routes.Scoring, sp.Routes.Liveness, sp.Routes.Readiness} {
		if !strings.HasPrefix(p, "/") {
			return fault.InvalidField("routes", "%q must start with /", clip(p))
		}
	}
	for _, p := range []*Probe{&sp.Liveness, &sp.Readiness} {
		if p.Period == 0 {
			p.Period = 1
		}
		if p.Timeout == 0 {
			p.Timeout = 2
		}
		if p.FailureThreshold == 0 {
			p.FailureThreshold = 30
		}
		if p.InitialDelay < 0 || p.Period < 0 || p.Timeout < 0 || p.FailureThreshold < 0 {
			return fault.InvalidField("probe", "probe settings cannot be negative")
		}
	}
	if sp.DataCollector.SamplingRate < 0 || sp.DataCollector.SamplingRate > 1 {
		return fault.InvalidField("data_collector.sampling_rate", "must be from 0 to 1")
	}
	if sp.Model != "" && !strings.HasPrefix(sp.Model, "models:/") && !strings.HasPrefix(sp.Model, "azureml:") {
		return fault.InvalidField("model", "%q: name a registered model as models:/<name>/<version>, models:/<name>@<alias>, models:/<name>/<stage> or azureml:<name>:<version>", clip(sp.Model))
	}
	return nil
}

func (sp DeploymentSpec) initialDesired() int {
	if sp.Scale.Type == "target_utilization" {
		// Demand decides from the minimum up; a scale-to-zero deployment
		// starts nothing until its first call.
		return sp.Scale.MinInstances
	}
	return sp.InstanceCount
}

func deploymentResource(ws, endpoint, name string) string {
	return resource(ws, endpoint) + "/deployments/" + name
}

// ModelResolver turns a model reference into the registered version it
// names (for traceability) and where its files are.
type ModelResolver interface {
	ResolveModel(ctx context.Context, sc compute.Scope, ref string) (name, version, location string, err error)
}

// CreateDeployment adds a deployment to an endpoint (or, when it exists,
// changes it: a new generation the controller rolls out with surge).
func (s *Service) PutDeployment(ctx context.Context, sc compute.Scope, endpoint, name string, sp DeploymentSpec, models ModelResolver) (Deployment, error) {
	if err := ValidName("name", name); err != nil {
		return Deployment{}, err
	}
	sp.ResolvedModel = ""
	if err := s.normalize(&sp); err != nil {
		return Deployment{}, err
	}
	modelName, modelVersion := "", ""
	if sp.Model != "" {
		var err error
		if modelName, modelVersion, _, err = models.ResolveModel(ctx, sc, sp.Model); err != nil {
			return Deployment{}, fault.InvalidField("model", "%v", errorMessage(err))
		}
		sp.ResolvedModel = "models:/" + modelName + "/" + modelVersion
	}
	caller := audit.CallerFrom(ctx)
	raw, _ := json.Marshal(sp)
	now := s.now().UnixMilli()
	err := s.db.Tx(ctx, func(tx store.Querier) error {
		e, err := s.endpoint(ctx, tx, sc, endpoint, true)
		if err != nil {
			return err
		}
		var pk, gen int64
		var oldSpec string
		change := "create"
		err = tx.QueryRowContext(ctx, `SELECT pk, generation, spec FROM deployments WHERE endpoint_pk = ? AND name = ?`+store.ForUpdate(tx), e.pk, name).Scan(&pk, &gen, &oldSpec)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			gen = 1
			if err := tx.QueryRowContext(ctx, `INSERT INTO deployments (endpoint_pk, name, spec, generation, state, desired, created_by, created_at, updated_at)
				VALUES (?, ?, ?, 1, ?, ?, ?, ?, ?) RETURNING pk`, e.pk, name, string(raw), StateCreating, sp.initialDesired(), caller.Principal, now, now).Scan(&pk); err != nil {
				return err
			}
		case err != nil:
			return err
		case onlyScale(oldSpec, sp):
			// Scaling runs no new servers: the replicas there stay.
			change = "scale"
			if _, err := tx.ExecContext(ctx, `UPDATE deployments SET spec = ?, desired = ?, updated_at = ? WHERE pk = ?`,
				string(raw), sp.initialDesired(), now, pk); err != nil {
				return err
			}
		default:
			change = "update"
			gen++
			if _, err := tx.ExecContext(ctx, `UPDATE deployments SET spec = ?, generation = ?, state = ?, reason = '', desired = ?, updated_at = ? WHERE pk = ?`,
				string(raw), gen, StateUpdating, sp.initialDesired(), now, pk); err != nil {
				return err
			}
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO deployment_history (deployment_pk, generation, model, model_name, model_version, environment, change, changed_by, changed_key, changed_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, pk, gen, sp.Model, modelName, modelVersion, sp.Environment, change, caller.Principal, caller.KeyID, now); err != nil {
			return err
		}
		return s.audit.Append(ctx, tx, audit.Record{Action: "deployment." + change, Resource: deploymentResource(sc.Workspace, endpoint, name), Workspace: sc.Workspace,
			Details: map[string]any{"generation": gen, "model": sp.Model, "model_version": modelVersion, "instance_type": sp.InstanceType}})
	})
	if err != nil {
		return Deployment{}, err
	}
	s.changed()
	return s.GetDeployment(ctx, sc, endpoint, name)
}

func errorMessage(err error) string {
	if fe, ok := fault.As(err); ok {
		return fe.Message
	}
	return err.Error()
}

const deploymentColumns = `d.pk, d.endpoint_pk, d.name, e.name, d.spec, d.generation, d.state, d.reason, d.desired, d.created_by, d.created_at, d.updated_at`

func (s *Service) deployments(ctx context.Context, q store.Querier, where string, args ...any) ([]Deployment, error) {
	rows, err := q.QueryContext(ctx, `SELECT `+deploymentColumns+` FROM deployments d JOIN endpoints e ON e.pk = d.endpoint_pk WHERE `+where+` ORDER BY d.name`, args...)
	if err != nil {
		return nil, err
	}
	var out []Deployment
	for rows.Next() {
		var d Deployment
		var spec string
		var created, updated int64
		if err := rows.Scan(&d.pk, &d.endpointPK, &d.Name, &d.Endpoint, &spec, &d.Generation, &d.State, &d.Reason, &d.Desired, &d.CreatedBy, &created, &updated); err != nil {
			rows.Close()
			return nil, err
		}
		_ = json.Unmarshal([]byte(spec), &d.Spec)
		d.CreatedAt, d.UpdatedAt = time.UnixMilli(created).UTC(), time.UnixMilli(updated).UTC()
		d.Replicas = []Replica{}
		out = append(out, d)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	for i := range out {
		reps, err := s.replicas(ctx, q, `deployment_pk = ?`, out[i].pk)
		if err != nil {
			return nil, err
		}
		out[i].Replicas = reps
	}
	if out == nil {
		out = []Deployment{}
	}
	return out, nil
}

func (s *Service) replicas(ctx context.Context, q store.Querier, where string, args ...any) ([]Replica, error) {
	rows, err := q.QueryContext(ctx, `SELECT id, generation, state, addr, restarts, last_error, started_at, ready_at, node_id, handle FROM replicas WHERE `+where+` ORDER BY started_at, id`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []Replica{}
	for rows.Next() {
		var r Replica
		var started int64
		var ready sql.NullInt64
		if err := rows.Scan(&r.ID, &r.Generation, &r.State, &r.Addr, &r.Restarts, &r.LastError, &started, &ready, &r.nodeID, &r.handle); err != nil {
			return nil, err
		}
		r.StartedAt = time.UnixMilli(started).UTC()
		if ready.Valid {
			t := time.UnixMilli(ready.Int64).UTC()
			r.ReadyAt = &t
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// GetDeployment returns one deployment with its replicas.
func (s *Service) GetDeployment(ctx context.Context, sc compute.Scope, endpoint, name string) (Deployment, error) {
	e, err := s.endpoint(ctx, s.db.Read(), sc, endpoint, false)
	if err != nil {
		return Deployment{}, err
	}
	ds, err := s.deployments(ctx, s.db.Read(), `d.endpoint_pk = ? AND d.name = ?`, e.pk, name)
	if err != nil {
		return Deployment{}, err
	}
	if len(ds) == 0 {
		return Deployment{}, fault.New(fault.NotFound, "endpoint %s has no deployment %s", endpoint, clip(name))
	}
	return ds[0], nil
}

// DeleteDeployment removes a deployment that takes no traffic (set its
// share to 0 first); its replicas are stopped.
func (s *Service) DeleteDeployment(ctx context.Context, sc compute.Scope, endpoint, name string) error {
	err := s.db.Tx(ctx, func(tx store.Querier) error {
		e, err := s.endpoint(ctx, tx, sc, endpoint, true)
		if err != nil {
			return err
		}
		if e.Traffic[name] > 0 || e.MirrorTraffic[name] > 0 {
			return fault.New(fault.FailedPrecondition, "deployment %s takes %d%% of the traffic (and %d%% mirrored); move it elsewhere first", name, e.Traffic[name], e.MirrorTraffic[name])
		}
		var pk int64
		if err := tx.QueryRowContext(ctx, `SELECT pk FROM deployments WHERE endpoint_pk = ? AND name = ?`, e.pk, name).Scan(&pk); errors.Is(err, sql.ErrNoRows) {
			return fault.New(fault.NotFound, "endpoint %s has no deployment %s", endpoint, clip(name))
		} else if err != nil {
			return err
		}
		if err := s.retireReplicas(ctx, tx, `deployment_pk = ?`, pk); err != nil {
			return err
		}
		delete(e.Traffic, name)
		delete(e.MirrorTraffic, name)
		traffic, _ := json.Marshal(e.Traffic)
		mirror, _ := json.Marshal(e.MirrorTraffic)
		if _, err := tx.ExecContext(ctx, `UPDATE endpoints SET traffic = ?, mirror_traffic = ? WHERE pk = ?`, string(traffic), string(mirror), e.pk); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM deployments WHERE pk = ?`, pk); err != nil {
			return err
		}
		return s.audit.Append(ctx, tx, audit.Record{Action: "deployment.delete", Resource: deploymentResource(sc.Workspace, endpoint, name), Workspace: sc.Workspace})
	})
	if err == nil {
		s.changed()
	}
	return err
}

// retireReplicas hands replicas to the controller to stop before their
// rows go with their deployment.
func (s *Service) retireReplicas(ctx context.Context, tx store.Querier, where string, args ...any) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO retired_replicas (id, handle, node_id) SELECT id, handle, node_id FROM replicas WHERE `+where, args...)
	if err != nil {
		return fmt.Errorf("retiring replicas: %w", err)
	}
	return nil
}

// History is a deployment's changes: who deployed which model version
// with which environment, when (I2).
type History struct {
	Generation   int64     `json:"generation"`
	Change       string    `json:"change"`
	Model        string    `json:"model,omitempty"`
	ModelName    string    `json:"model_name,omitempty"`
	ModelVersion string    `json:"model_version,omitempty"`
	Environment  string    `json:"environment,omitempty"`
	ChangedBy    string    `json:"changed_by"`
	ChangedKey   string    `json:"changed_key,omitempty"`
	ChangedAt    time.Time `json:"changed_at"`
}

// DeploymentHistory lists a deployment's changes, newest first.
func (s *Service) DeploymentHistory(ctx context.Context, sc compute.Scope, endpoint, name string) ([]History, error) {
	d, err := s.GetDeployment(ctx, sc, endpoint, name)
	if err != nil {
		return nil, err
	}
	rows, err := s.db.Read().QueryContext(ctx, `SELECT generation, change, model, model_name, model_version, environment, changed_by, changed_key, changed_at
		FROM deployment_history WHERE deployment_pk = ? ORDER BY changed_at DESC, generation DESC`, d.pk)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []History{}
	for rows.Next() {
		var h History
		var at int64
		if err := rows.Scan(&h.Generation, &h.Change, &h.Model, &h.ModelName, &h.ModelVersion, &h.Environment, &h.ChangedBy, &h.ChangedKey, &at); err != nil {
			return nil, err
		}
		h.ChangedAt = time.UnixMilli(at).UTC()
		out = append(out, h)
	}
	return out, rows.Err()
}

// onlyScale reports whether a new spec differs from the stored one only
// in how many replicas it wants.
func onlyScale(stored string, sp DeploymentSpec) bool {
	var old DeploymentSpec
	if json.Unmarshal([]byte(stored), &old) != nil {
		return false
	}
	old.InstanceCount, old.Scale = sp.InstanceCount, sp.Scale
	a, _ := json.Marshal(old)
	b, _ := json.Marshal(sp)
	return string(a) == string(b)
}

// ModelDeployment is a deployment that serves, or served, a model
// version.
type ModelDeployment struct {
	Endpoint   string    `json:"endpoint"`
	Deployment string    `json:"deployment"`
	Generation int64     `json:"generation"`
	DeployedBy string    `json:"deployed_by"`
	DeployedAt time.Time `json:"deployed_at"`
	// Current says the deployment still runs this version.
	Current bool `json:"current"`
}

// DeploymentsOfModel lists where a model version was deployed in a
// workspace, most recent first (for lineage and traceability).
func (s *Service) DeploymentsOfModel(ctx context.Context, workspaceID, model, version string) ([]ModelDeployment, error) {
	rows, err := s.db.Read().QueryContext(ctx, `SELECT e.name, d.name, h.generation, h.changed_by, h.changed_at, d.generation,
		COALESCE((SELECT h2.model_version FROM deployment_history h2 WHERE h2.deployment_pk = d.pk AND h2.model_name = ? ORDER BY h2.changed_at DESC LIMIT 1), '')
		FROM deployment_history h JOIN deployments d ON d.pk = h.deployment_pk JOIN endpoints e ON e.pk = d.endpoint_pk
		WHERE e.workspace_id = ? AND h.model_name = ? AND h.model_version = ? ORDER BY h.changed_at DESC`, model, workspaceID, model, version)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	seen := map[string]bool{}
	var out []ModelDeployment
	for rows.Next() {
		var m ModelDeployment
		var at, gen int64
		var latest string
		if err := rows.Scan(&m.Endpoint, &m.Deployment, &m.Generation, &m.DeployedBy, &at, &gen, &latest); err != nil {
			return nil, err
		}
		k := m.Endpoint + "/" + m.Deployment
		if seen[k] {
			continue
		}
		seen[k] = true
		m.DeployedAt = time.UnixMilli(at).UTC()
		m.Current = latest == version
		out = append(out, m)
	}
	return out, rows.Err()
}
