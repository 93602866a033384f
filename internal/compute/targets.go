package compute

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/plinth-dev/plinth/internal/audit"
	"github.com/plinth-dev/plinth/internal/fault"
	"github.com/plinth-dev/plinth/internal/id"
	"github.com/plinth-dev/plinth/internal/store"
)

// Kinds of compute target, after Azure ML's amlcompute (cluster) and the
// serverless compute a job gets when it names only an instance type.
const (
	KindCluster    = "cluster"
	KindInstance   = "instance"
	KindServerless = "serverless"
)

// Tiers of a cluster's nodes.
const (
	TierDedicated = "dedicated"
	TierSpot      = "spot"
)

// ServerlessName is the compute target that holds a workspace's
// serverless nodes (one per job, removed after it).
const ServerlessName = "serverless"

// Scope is the workspace a compute call acts in.
type Scope struct {
	WorkspaceID string
	Workspace   string
	Team        string
	// Region and AllowedRegions: the workspace's residency policy.
	Region         string
	AllowedRegions []string
}

// Target is a compute target with the nodes it has up.
type Target struct {
	pk           int64
	Name         string `json:"name"`
	Kind         string `json:"type"`
	Size         string `json:"size"`
	MinInstances int    `json:"min_instances"`
	MaxInstances int    `json:"max_instances"`
	IdleSeconds  int64  `json:"idle_time_before_scale_down"`
	Tier         string `json:"tier"`
	// State is an instance's: Running or Stopped (clusters: Succeeded).
	State string `json:"state"`
	// The fields of an instance: who may use it, how long it may idle
	// before it stops itself, when it starts and stops, and the web
	// applications it runs (with the path each is served at).
	Owner        string            `json:"owner,omitempty"`
	IdleShutdown int64             `json:"idle_time_before_shutdown,omitempty"`
	Schedules    []Schedule        `json:"schedules,omitempty"`
	Applications []Application     `json:"applications,omitempty"`
	Description  string            `json:"description"`
	Tags         map[string]string `json:"tags"`
	CreatedBy    string            `json:"created_by"`
	CreatedAt    time.Time         `json:"created_at"`
	UpdatedAt    time.Time         `json:"updated_at"`
	Nodes        []Node            `json:"nodes"`
	// SKU is the size's catalogue entry.
	SKU SKU `json:"sku"`
}

// Node is one node that is up: idle, or busy with a job.
type Node struct {
	ID         string    `json:"id"`
	SKU        string    `json:"sku"`
	GPUs       []string  `json:"gpus,omitempty"`
	JobID      string    `json:"job_id,omitempty"`
	StartedAt  time.Time `json:"started_at"`
	LastUsedAt time.Time `json:"last_used_at"`
	computePK  int64
}

// settings are a target's kind-specific fields, stored as JSON.
type settings struct {
	Min         int           `json:"min_instances"`
	Max         int           `json:"max_instances"`
	IdleSeconds int64         `json:"idle_seconds"`
	Tier        string        `json:"tier"`
	Owner       string        `json:"owner,omitempty"`
	Schedules   []Schedule    `json:"schedules,omitempty"`
	Apps        []Application `json:"apps,omitempty"`
}

// TargetInput creates or changes a cluster, in Azure ML's field names.
// Pointer fields are optional on update.
type TargetInput struct {
	Name         string    `json:"name"`
	Type         string    `json:"type"`
	Size         string    `json:"size"`
	MinInstances *int      `json:"min_instances,omitempty"`
	MaxInstances *int      `json:"max_instances,omitempty"`
	IdleTime     *Duration `json:"idle_time_before_scale_down,omitempty"`
	Tier         string    `json:"tier,omitempty"`
	// Instances only.
	IdleShutdown *Duration         `json:"idle_time_before_shutdown,omitempty"`
	Owner        string            `json:"owner,omitempty"`
	Schedules    []Schedule        `json:"schedules,omitempty"`
	Applications []Application     `json:"applications,omitempty"`
	Description  *string           `json:"description,omitempty"`
	Tags         map[string]string `json:"tags,omitempty"`
}

// Duration is seconds as a JSON number (Azure's form) or a string: Go
// ("90s", "2m") or ISO 8601 ("PT2M").
type Duration int64

// UnmarshalJSON accepts a number of seconds or a duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var n float64
	if err := json.Unmarshal(b, &n); err == nil {
		if n < 0 {
			return fmt.Errorf("a duration cannot be negative")
		}
		*d = Duration(n)
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("want seconds or a duration such as \"120s\" or \"PT2M\"")
	}
	secs, err := ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(secs)
	return nil
}

var isoDurationRE = regexp.MustCompile(`^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$`)

// ParseDuration reads seconds ("120"), a Go duration ("2m") or an ISO 8601
// duration ("PT2M", "P1DT2H") and returns whole seconds.
func ParseDuration(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if n, err := strconv.ParseInt(s, 10, 64); err == nil && n >= 0 {
		return n, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return int64(d / time.Second), nil
	}
	if m := isoDurationRE.FindStringSubmatch(strings.ToUpper(s)); m != nil && s != "P" && !strings.HasSuffix(strings.ToUpper(s), "T") {
		var total float64
		for i, unit := range []float64{86400, 3600, 60, 1} {
			if m[i+1] != "" {
				v, _ := strconv.ParseFloat(m[i+1], 64)
				total += v * unit
			}
		}
		return int64(total), nil
	}
	return 0, fmt.Errorf("%q is not a duration (want seconds, \"90s\", \"2m\" or ISO 8601 \"PT2M\")", s)
}

var targetNameRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9-]{1,31}$`)

// Service manages compute targets, their nodes, quotas and the cost of
// node up-time.
type Service struct {
	db    *store.DB
	audit *audit.Log
	skus  *Catalogue
	now   func() time.Time
}

// NewService returns a Service over the catalogue; now nil means time.Now.
func NewService(db *store.DB, log *audit.Log, skus *Catalogue, now func() time.Time) *Service {
	if now == nil {
		now = time.Now
	}
	return &Service{db: db, audit: log, skus: skus, now: now}
}

// SKUs is the catalogue.
func (s *Service) SKUs() *Catalogue { return s.skus }

func targetResource(ws, name string) string { return "workspaces/" + ws + "/computes/" + name }

func normalTier(t string) (string, error) {
	switch strings.ToLower(t) {
	case "", TierDedicated:
		return TierDedicated, nil
	case TierSpot, "low_priority", "lowpriority":
		return TierSpot, nil
	}
	return "", fault.InvalidField("tier", "%q is not a tier (want dedicated or spot)", clipText(t))
}

// CreateTarget creates a cluster.
func (s *Service) CreateTarget(ctx context.Context, sc Scope, in TargetInput) (Target, error) {
	if !targetNameRE.MatchString(in.Name) || strings.EqualFold(in.Name, ServerlessName) {
		return Target{}, fault.InvalidField("name", "%q must be 2 to 32 letters, digits and '-', starting with a letter (and not %q)", clipText(in.Name), ServerlessName)
	}
	kind := KindCluster
	switch strings.ToLower(in.Type) {
	case "", KindCluster, "amlcompute":
	case "computeinstance", KindInstance:
		kind = KindInstance
	default:
		return Target{}, fault.InvalidField("type", "%q is not a compute type (want cluster or instance)", clipText(in.Type))
	}
	if in.Size == "" {
		return Target{}, fault.InvalidField("size", "required: an instance type from `plinth sku list`")
	}
	sku, err := s.skus.Get(in.Size)
	if err != nil {
		return Target{}, err
	}
	st := settings{Min: 0, Max: 1, IdleSeconds: 120}
	if in.MinInstances != nil {
		st.Min = *in.MinInstances
	}
	if in.MaxInstances != nil {
		st.Max = *in.MaxInstances
	}
	if in.IdleTime != nil {
		st.IdleSeconds = int64(*in.IdleTime)
	}
	if st.Tier, err = normalTier(in.Tier); err != nil {
		return Target{}, err
	}
	if err := st.valid(); err != nil {
		return Target{}, err
	}
	caller := audit.CallerFrom(ctx)
	state := "Succeeded"
	if kind == KindInstance {
		if err := instanceSettings(&st, in, caller.Principal); err != nil {
			return Target{}, err
		}
		state = StateStopped
	} else if in.IdleShutdown != nil || in.Owner != "" || len(in.Schedules) > 0 || len(in.Applications) > 0 {
		return Target{}, fault.InvalidField("type", "idle_time_before_shutdown, owner, schedules and applications belong to instances (type instance)")
	}
	desc := ""
	if in.Description != nil {
		desc = *in.Description
	}
	if err := validMeta(desc, in.Tags); err != nil {
		return Target{}, err
	}
	now := s.now().UTC().Truncate(time.Millisecond)
	t := Target{Name: in.Name, Kind: kind, State: state, Size: sku.Name, Description: desc, Tags: in.Tags, CreatedBy: caller.Principal, CreatedAt: now, UpdatedAt: now, SKU: sku}
	if t.Tags == nil {
		t.Tags = map[string]string{}
	}
	t.apply(st)
	raw, _ := json.Marshal(st)
	tags, _ := json.Marshal(t.Tags)
	err = s.db.Tx(ctx, func(tx store.Querier) error {
		if err := tx.QueryRowContext(ctx, `INSERT INTO compute_targets (workspace_id, name, kind, sku, settings, state, description, tags, created_by, created_at, updated_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING pk`, sc.WorkspaceID, t.Name, t.Kind, t.Size, string(raw), state, desc, string(tags),
			t.CreatedBy, now.UnixMilli(), now.UnixMilli()).Scan(&t.pk); err != nil {
			if store.IsUniqueViolation(err) {
				return fault.New(fault.AlreadyExists, "compute %s already exists in workspace %s", t.Name, sc.Workspace)
			}
			return fmt.Errorf("creating compute: %w", err)
		}
		return s.audit.Append(ctx, tx, audit.Record{Action: "compute.create", Resource: targetResource(sc.Workspace, t.Name), Workspace: sc.Workspace,
			Details: map[string]any{"type": kind, "size": t.Size, "min_instances": st.Min, "max_instances": st.Max, "tier": st.Tier}})
	})
	t.Nodes = []Node{}
	return t, err
}

func (st settings) valid() error {
	switch {
	case st.Min < 0:
		return fault.InvalidField("min_instances", "cannot be negative")
	case st.Max < 1:
		return fault.InvalidField("max_instances", "must be at least 1")
	case st.Max > 1000:
		return fault.InvalidField("max_instances", "at most 1000")
	case st.Min > st.Max:
		return fault.InvalidField("min_instances", "%d is more than max_instances %d", st.Min, st.Max)
	case st.IdleSeconds < 0 || st.IdleSeconds > 7*86400:
		return fault.InvalidField("idle_time_before_scale_down", "must be from 0 seconds to 7 days")
	}
	return nil
}

func (t *Target) apply(st settings) {
	t.MinInstances, t.MaxInstances, t.IdleSeconds, t.Tier = st.Min, st.Max, st.IdleSeconds, st.Tier
	if t.Kind == KindInstance {
		t.MinInstances, t.MaxInstances, t.IdleSeconds = 0, 1, 0
		t.Owner, t.IdleShutdown, t.Schedules, t.Applications = st.Owner, st.IdleSeconds, st.Schedules, st.Apps
	}
}

func validMeta(description string, tags map[string]string) error {
	if len(description) > 5000 {
		return fault.InvalidField("description", "at most 5000 bytes")
	}
	if len(tags) > 50 {
		return fault.InvalidField("tags", "at most 50 tags")
	}
	for k, v := range tags {
		if k == "" || len(k) > 250 || len(v) > 5000 {
			return fault.InvalidField("tags", "keys are 1 to 250 bytes, values at most 5000")
		}
	}
	return nil
}

const targetColumns = `pk, name, kind, sku, settings, state, description, tags, created_by, created_at, updated_at`

func (s *Service) scanTarget(row interface{ Scan(...any) error }) (Target, error) {
	var t Target
	var raw, tags string
	var created, updated int64
	if err := row.Scan(&t.pk, &t.Name, &t.Kind, &t.Size, &raw, &t.State, &t.Description, &tags, &t.CreatedBy, &created, &updated); err != nil {
		return t, err
	}
	var st settings
	_ = json.Unmarshal([]byte(raw), &st)
	t.apply(st)
	t.Tags = map[string]string{}
	_ = json.Unmarshal([]byte(tags), &t.Tags)
	t.CreatedAt, t.UpdatedAt = time.UnixMilli(created).UTC(), time.UnixMilli(updated).UTC()
	if sku, ok := s.skus.Lookup(t.Size); ok {
		t.SKU = sku
	} else {
		t.SKU = SKU{Name: t.Size}
	}
	t.Nodes = []Node{}
	return t, nil
}

// Target returns one target with its nodes.
func (s *Service) Target(ctx context.Context, sc Scope, name string) (Target, error) {
	t, err := s.scanTarget(s.db.Read().QueryRowContext(ctx, `SELECT `+targetColumns+` FROM compute_targets WHERE workspace_id = ? AND name = ?`, sc.WorkspaceID, name))
	if errors.Is(err, sql.ErrNoRows) {
		return t, fault.New(fault.NotFound, "compute %s does not exist in workspace %s", clipText(name), sc.Workspace)
	}
	if err != nil {
		return t, err
	}
	nodes, err := s.nodes(ctx, s.db.Read(), `compute_pk = ?`, t.pk)
	t.Nodes = nodes
	t.setURLs(sc.Workspace)
	return t, err
}

// setURLs fills in where an instance's applications are served.
func (t *Target) setURLs(ws string) {
	for i := range t.Applications {
		t.Applications[i].URL = AppBase(ws, t.Name, t.Applications[i].Name)
	}
}

// Targets lists a workspace's targets (serverless last, when it has had
// nodes), with their nodes.
func (s *Service) Targets(ctx context.Context, sc Scope) ([]Target, error) {
	rows, err := s.db.Read().QueryContext(ctx, `SELECT `+targetColumns+` FROM compute_targets WHERE workspace_id = ? ORDER BY kind = 'serverless', name`, sc.WorkspaceID)
	if err != nil {
		return nil, err
	}
	var out []Target
	for rows.Next() {
		t, err := s.scanTarget(rows)
		if err != nil {
			rows.Close()
			return nil, err
		}
		out = append(out, t)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	nodes, err := s.nodes(ctx, s.db.Read(), `workspace_id = ?`, sc.WorkspaceID)
	if err != nil {
		return nil, err
	}
	for i := range out {
		out[i].setURLs(sc.Workspace)
		for _, n := range nodes {
			if n.computePK == out[i].pk {
				out[i].Nodes = append(out[i].Nodes, n)
			}
		}
	}
	if out == nil {
		out = []Target{}
	}
	return out, nil
}

// UpdateTarget changes a cluster's scale settings, description or tags;
// its size is fixed (nodes of one cluster are alike).
func (s *Service) UpdateTarget(ctx context.Context, sc Scope, name string, in TargetInput) (Target, error) {
	if in.Size != "" || in.Type != "" || in.Name != "" {
		return Target{}, fault.InvalidField("size", "a cluster's name, type and size cannot change; create another cluster")
	}
	err := s.db.Tx(ctx, func(tx store.Querier) error {
		t, err := s.scanTarget(tx.QueryRowContext(ctx, `SELECT `+targetColumns+` FROM compute_targets WHERE workspace_id = ? AND name = ?`+store.ForUpdate(tx), sc.WorkspaceID, name))
		if errors.Is(err, sql.ErrNoRows) {
			return fault.New(fault.NotFound, "compute %s does not exist in workspace %s", clipText(name), sc.Workspace)
		}
		if err != nil {
			return err
		}
		if t.Kind != KindCluster {
			return fault.New(fault.FailedPrecondition, "%s is managed by Plinth and cannot be changed", name)
		}
		st := settings{Min: t.MinInstances, Max: t.MaxInstances, IdleSeconds: t.IdleSeconds, Tier: t.Tier}
		if in.MinInstances != nil {
			st.Min = *in.MinInstances
		}
		if in.MaxInstances != nil {
			st.Max = *in.MaxInstances
		}
		if in.IdleTime != nil {
			st.IdleSeconds = int64(*in.IdleTime)
		}
		if in.Tier != "" {
			if st.Tier, err = normalTier(in.Tier); err != nil {
				return err
			}
		}
		if err := st.valid(); err != nil {
			return err
		}
		if in.Description != nil {
			t.Description = *in.Description
		}
		for k, v := range in.Tags {
			t.Tags[k] = v
		}
		if err := validMeta(t.Description, t.Tags); err != nil {
			return err
		}
		raw, _ := json.Marshal(st)
		tags, _ := json.Marshal(t.Tags)
		if _, err := tx.ExecContext(ctx, `UPDATE compute_targets SET settings = ?, description = ?, tags = ?, updated_at = ? WHERE pk = ?`,
			string(raw), t.Description, string(tags), s.now().UnixMilli(), t.pk); err != nil {
			return err
		}
		return s.audit.Append(ctx, tx, audit.Record{Action: "compute.update", Resource: targetResource(sc.Workspace, name), Workspace: sc.Workspace,
			Details: map[string]any{"min_instances": st.Min, "max_instances": st.Max, "idle_seconds": st.IdleSeconds, "tier": st.Tier}})
	})
	if err != nil {
		return Target{}, err
	}
	return s.Target(ctx, sc, name)
}

// DeleteTarget deletes a cluster whose nodes are all idle (they are
// stopped with it); while a node runs a job it is refused.
func (s *Service) DeleteTarget(ctx context.Context, sc Scope, name string) error {
	return s.db.Tx(ctx, func(tx store.Querier) error {
		var pk int64
		var kind, state string
		err := tx.QueryRowContext(ctx, `SELECT pk, kind, state FROM compute_targets WHERE workspace_id = ? AND name = ?`+store.ForUpdate(tx), sc.WorkspaceID, name).Scan(&pk, &kind, &state)
		if errors.Is(err, sql.ErrNoRows) {
			return fault.New(fault.NotFound, "compute %s does not exist in workspace %s", clipText(name), sc.Workspace)
		}
		if err != nil {
			return err
		}
		if kind == KindInstance && state == StateRunning {
			return fault.New(fault.FailedPrecondition, "instance %s is running; stop it first", name)
		}
		nodes, err := s.nodes(ctx, tx, `compute_pk = ?`, pk)
		if err != nil {
			return err
		}
		for _, n := range nodes {
			if n.JobID != "" {
				return fault.New(fault.FailedPrecondition, "compute %s is running job %s; cancel it or wait for it to end", name, n.JobID)
			}
		}
		for _, n := range nodes {
			if err := s.StopNode(ctx, tx, n.ID); err != nil {
				return err
			}
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM compute_targets WHERE pk = ?`, pk); err != nil {
			return err
		}
		return s.audit.Append(ctx, tx, audit.Record{Action: "compute.delete", Resource: targetResource(sc.Workspace, name), Workspace: sc.Workspace,
			Details: map[string]any{"nodes_stopped": len(nodes)}})
	})
}

// ResourcesIn implements workspace.Holder.
func (s *Service) ResourcesIn(ctx context.Context, q store.Querier, workspaceID string) (map[string]int, error) {
	var n int
	err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM compute_targets WHERE workspace_id = ? AND kind <> 'serverless'`, workspaceID).Scan(&n)
	return map[string]int{"compute targets": n}, err
}

// DeleteResourcesIn implements workspace.Holder: it stops the nodes (their
// up-time stays in the cost records) and deletes the targets. A running
// instance has processes this transaction cannot stop: stop it first.
func (s *Service) DeleteResourcesIn(ctx context.Context, tx store.Querier, workspaceID string) error {
	var running int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM compute_targets WHERE workspace_id = ? AND kind = ? AND state = ?`,
		workspaceID, KindInstance, StateRunning).Scan(&running); err != nil {
		return err
	}
	if running > 0 {
		return fault.New(fault.FailedPrecondition, "%d compute instances of the workspace are running; stop them first", running)
	}
	nodes, err := s.nodes(ctx, tx, `workspace_id = ?`, workspaceID)
	if err != nil {
		return err
	}
	for _, n := range nodes {
		if err := s.StopNode(ctx, tx, n.ID); err != nil {
			return err
		}
	}
	_, err = tx.ExecContext(ctx, `DELETE FROM compute_targets WHERE workspace_id = ?`, workspaceID)
	return err
}

// ServerlessTarget returns the pk of the workspace's serverless target,
// creating it on first use.
func (s *Service) ServerlessTarget(ctx context.Context, tx store.Querier, sc Scope) (int64, error) {
	now := s.now().UnixMilli()
	if _, err := tx.ExecContext(ctx, `INSERT INTO compute_targets (workspace_id, name, kind, sku, settings, state, created_by, created_at, updated_at)
		VALUES (?, ?, 'serverless', '', '{}', 'Succeeded', 'plinth', ?, ?) ON CONFLICT (workspace_id, name) DO NOTHING`, sc.WorkspaceID, ServerlessName, now, now); err != nil {
		return 0, err
	}
	var pk int64
	err := tx.QueryRowContext(ctx, `SELECT pk FROM compute_targets WHERE workspace_id = ? AND name = ?`, sc.WorkspaceID, ServerlessName).Scan(&pk)
	return pk, err
}

func (s *Service) nodes(ctx context.Context, q store.Querier, where string, args ...any) ([]Node, error) {
	rows, err := q.QueryContext(ctx, `SELECT id, compute_pk, sku, gpus, job_id, started_at, last_used_at FROM compute_nodes WHERE `+where+` ORDER BY started_at, id`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []Node{}
	for rows.Next() {
		var n Node
		var gpus string
		var started, used int64
		if err := rows.Scan(&n.ID, &n.computePK, &n.SKU, &gpus, &n.JobID, &started, &used); err != nil {
			return nil, err
		}
		if gpus != "" {
			n.GPUs = strings.Split(gpus, ",")
		}
		n.StartedAt, n.LastUsedAt = time.UnixMilli(started).UTC(), time.UnixMilli(used).UTC()
		out = append(out, n)
	}
	return out, rows.Err()
}

// StartNode brings a node of a target up (metered from now) and returns
// it. gpus are the devices it holds exclusively.
func (s *Service) StartNode(ctx context.Context, tx store.Querier, sc Scope, targetPK int64, targetName string, sku SKU, spot bool, gpus []string, jobID string) (Node, error) {
	now := s.now().UTC().Truncate(time.Millisecond)
	n := Node{ID: id.New(), SKU: sku.Name, GPUs: gpus, JobID: jobID, StartedAt: now, LastUsedAt: now, computePK: targetPK}
	if _, err := tx.ExecContext(ctx, `INSERT INTO compute_nodes (id, compute_pk, workspace_id, sku, gpus, job_id, started_at, last_used_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		n.ID, targetPK, sc.WorkspaceID, sku.Name, strings.Join(gpus, ","), jobID, now.UnixMilli(), now.UnixMilli()); err != nil {
		return n, fmt.Errorf("starting node: %w", err)
	}
	price := sku.PricePerHour
	if spot && sku.SpotPricePerHour > 0 {
		price = sku.SpotPricePerHour
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO node_usage (node_id, workspace_id, workspace, team, compute, sku, family, spot, price_per_hour, started_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		n.ID, sc.WorkspaceID, sc.Workspace, sc.Team, targetName, sku.Name, sku.Family, spot, price, now.UnixMilli()); err != nil {
		return n, fmt.Errorf("metering node: %w", err)
	}
	return n, nil
}

// StopNode takes a node down and closes its metering.
func (s *Service) StopNode(ctx context.Context, tx store.Querier, nodeID string) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM compute_nodes WHERE id = ?`, nodeID); err != nil {
		return err
	}
	_, err := tx.ExecContext(ctx, `UPDATE node_usage SET ended_at = ? WHERE node_id = ? AND ended_at IS NULL`, s.now().UnixMilli(), nodeID)
	return err
}

// AssignNodes gives idle nodes to a job.
func (s *Service) AssignNodes(ctx context.Context, tx store.Querier, nodeIDs []string, jobID string) error {
	for _, n := range nodeIDs {
		res, err := tx.ExecContext(ctx, `UPDATE compute_nodes SET job_id = ?, last_used_at = ? WHERE id = ? AND job_id = ''`, jobID, s.now().UnixMilli(), n)
		if err != nil {
			return err
		}
		if k, _ := res.RowsAffected(); k != 1 {
			return fmt.Errorf("node %s is no longer idle", n)
		}
	}
	return nil
}

// ReleaseJobNodes ends a job's hold on its nodes: nodes of a cluster go
// idle (their idle clock starts now); serverless nodes go down.
func (s *Service) ReleaseJobNodes(ctx context.Context, tx store.Querier, jobID string) error {
	rows, err := tx.QueryContext(ctx, `SELECT n.id, t.kind FROM compute_nodes n JOIN compute_targets t ON t.pk = n.compute_pk WHERE n.job_id = ?`, jobID)
	if err != nil {
		return err
	}
	var down []string
	for rows.Next() {
		var id, kind string
		if err := rows.Scan(&id, &kind); err != nil {
			rows.Close()
			return err
		}
		if kind == KindServerless {
			down = append(down, id)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, id := range down {
		if err := s.StopNode(ctx, tx, id); err != nil {
			return err
		}
	}
	_, err = tx.ExecContext(ctx, `UPDATE compute_nodes SET job_id = '', last_used_at = ? WHERE job_id = ?`, s.now().UnixMilli(), jobID)
	return err
}
