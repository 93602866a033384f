package jobs

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/plinth-dev/plinth/internal/artifact"
	"github.com/plinth-dev/plinth/internal/audit"
	"github.com/plinth-dev/plinth/internal/compute"
	"github.com/plinth-dev/plinth/internal/executor"
	"github.com/plinth-dev/plinth/internal/fault"
	"github.com/plinth-dev/plinth/internal/registry"
	"github.com/plinth-dev/plinth/internal/store"
	"github.com/plinth-dev/plinth/internal/tracking"
	"github.com/plinth-dev/plinth/internal/workspace"
)

// Job statuses, as Azure ML names them.
const (
	StatusQueued     = "Queued"
	StatusPreparing  = "Preparing"
	StatusRunning    = "Running"
	StatusFinalizing = "Finalizing"
	StatusCompleted  = "Completed"
	StatusFailed     = "Failed"
	StatusCanceled   = "Canceled"
)

// Terminal reports whether a status is final.
func Terminal(status string) bool {
	return status == StatusCompleted || status == StatusFailed || status == StatusCanceled
}

// Job is a submitted command job. Its ID is also its MLflow run's id.
type Job struct {
	ID             string     `json:"id"`
	Name           string     `json:"name"`
	DisplayName    string     `json:"display_name,omitempty"`
	Workspace      string     `json:"workspace"`
	ExperimentID   string     `json:"experiment_id"`
	Status         string     `json:"status"`
	Reason         string     `json:"reason,omitempty"`
	Priority       int        `json:"priority"`
	Compute        string     `json:"compute"`
	InstanceType   string     `json:"instance_type"`
	InstanceCount  int        `json:"instance_count"`
	CodeDigest     string     `json:"code_digest,omitempty"`
	Attempt        int        `json:"attempt"`
	MaxRetries     int        `json:"max_retries"`
	TimeoutSeconds int64      `json:"timeout_seconds,omitempty"`
	ExitCode       *int       `json:"exit_code,omitempty"`
	Nodes          []string   `json:"nodes,omitempty"`
	Usage          Usage      `json:"usage"`
	Cost           float64    `json:"cost"`
	SubmittedBy    string     `json:"submitted_by"`
	Team           string     `json:"team,omitempty"`
	SubmittedAt    time.Time  `json:"submitted_at"`
	StartedAt      *time.Time `json:"started_at,omitempty"`
	EndedAt        *time.Time `json:"ended_at,omitempty"`
	CancelRequest  bool       `json:"cancel_requested,omitempty"`
	Spec           Spec       `json:"spec"`

	workspaceID string
	submitKey   string
	handles     []executor.Handle
	notBefore   time.Time
}

// Usage is what a job's processes consumed, over all attempts.
type Usage struct {
	CPUSeconds      float64 `json:"cpu_seconds"`
	PeakMemoryBytes int64   `json:"peak_memory_bytes"`
	GPUSeconds      float64 `json:"gpu_seconds"`
	NodeSeconds     float64 `json:"node_seconds"`
}

// RunTokens issues and revokes the short-lived keys a job's processes log
// to their MLflow run with.
type RunTokens interface {
	CreateRunToken(ctx context.Context, principal, workspace, runID string, ttl time.Duration) (secret, keyID string, err error)
	RevokeRunTokens(ctx context.Context, runID string) error
}

// Deps are the services a job service works with.
type Deps struct {
	DB        *store.DB
	Audit     *audit.Log
	Tracking  *tracking.Service
	Registry  *registry.Service
	Compute   *compute.Service
	Tokens    RunTokens
	Artifacts *artifact.Store
	Executor  executor.Executor
	// Workspaces finds a workspace's name, team and regions by id.
	Workspaces interface {
		ByID(ctx context.Context, id string) (workspace.Workspace, error)
	}
	// WorkDir holds the jobs' working directories (code, inputs, outputs).
	WorkDir string
	Log     *slog.Logger
	Now     func() time.Time
	// StarveAfter is how long a job may be overtaken before what it waits
	// for is held for it (default 10 minutes).
	StarveAfter time.Duration
	// StopGrace is how long a cancelled or timed-out job has between
	// SIGTERM and SIGKILL (default 10 s).
	StopGrace time.Duration
	// RetryBackoff is the first wait before a retry when the job file
	// gives none (default 10 s); it doubles with each attempt.
	RetryBackoff time.Duration
	// RemoteWorkDir replaces DefaultRemoteWorkDir as where jobs' files
	// are inside their containers on a remote executor.
	RemoteWorkDir string
}

// Service submits, schedules, runs and reports command jobs.
type Service struct {
	Deps
	code *artifact.Store

	mu          sync.Mutex
	base        context.Context
	trackingURL string
	wake        chan struct{}
	// running holds a cancel function per job whose attempt this process
	// is watching.
	running map[string]context.CancelFunc
	wg      sync.WaitGroup
}

// NewService returns a Service; Start begins scheduling.
func NewService(d Deps) *Service {
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.StarveAfter == 0 {
		d.StarveAfter = 10 * time.Minute
	}
	if d.StopGrace == 0 {
		d.StopGrace = 10 * time.Second
	}
	if d.RetryBackoff == 0 {
		d.RetryBackoff = 10 * time.Second
	}
	if d.Log == nil {
		d.Log = slog.Default()
	}
	return &Service{Deps: d, code: d.Artifacts.Private("code"), wake: make(chan struct{}, 1), running: map[string]context.CancelFunc{}}
}

// SetTrackingURL tells the service where its own server listens, for the
// MLFLOW_TRACKING_URI its jobs get.
func (s *Service) SetTrackingURL(u string) {
	s.mu.Lock()
	s.trackingURL = strings.TrimRight(u, "/")
	s.mu.Unlock()
}

func (s *Service) trackingURI(ws string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ws == "default" {
		return s.trackingURL
	}
	return s.trackingURL + "/w/" + ws
}

// ServerURL is the control plane's base URL as work reaches it (see
// SetTrackingURL).
func (s *Service) ServerURL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.trackingURL
}

// kick asks for a scheduling pass soon.
func (s *Service) kick() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func jobResource(ws, name string) string { return "workspaces/" + ws + "/jobs/" + name }

const jobColumns = `id, workspace_id, workspace, name, display_name, experiment_id, spec, status, reason, priority, compute, sku, instance_count,
	code_digest, attempt, max_retries, not_before, timeout_seconds, handles, nodes, cancel_requested, exit_code, cpu_seconds, peak_memory,
	gpu_seconds, node_seconds, cost, submitted_by, submitted_key, team, submitted_at, started_at, ended_at`

func scanJob(row interface{ Scan(...any) error }) (Job, error) {
	var j Job
	var spec, handles, nodes string
	var notBefore, submitted int64
	var started, ended, exit sql.NullInt64
	err := row.Scan(&j.ID, &j.workspaceID, &j.Workspace, &j.Name, &j.DisplayName, &j.ExperimentID, &spec, &j.Status, &j.Reason, &j.Priority,
		&j.Compute, &j.InstanceType, &j.InstanceCount, &j.CodeDigest, &j.Attempt, &j.MaxRetries, &notBefore, &j.TimeoutSeconds, &handles, &nodes,
		&j.CancelRequest, &exit, &j.Usage.CPUSeconds, &j.Usage.PeakMemoryBytes, &j.Usage.GPUSeconds, &j.Usage.NodeSeconds, &j.Cost,
		&j.SubmittedBy, &j.submitKey, &j.Team, &submitted, &started, &ended)
	if err != nil {
		return j, err
	}
	if err := json.Unmarshal([]byte(spec), &j.Spec); err != nil {
		return j, fmt.Errorf("job %s: reading its spec: %w", j.ID, err)
	}
	if handles != "" {
		_ = json.Unmarshal([]byte(handles), &j.handles)
	}
	if nodes != "" {
		j.Nodes = strings.Split(nodes, ",")
	}
	if exit.Valid {
		c := int(exit.Int64)
		j.ExitCode = &c
	}
	j.notBefore = time.UnixMilli(notBefore)
	j.SubmittedAt = time.UnixMilli(submitted).UTC()
	if started.Valid {
		t := time.UnixMilli(started.Int64).UTC()
		j.StartedAt = &t
	}
	if ended.Valid {
		t := time.UnixMilli(ended.Int64).UTC()
		j.EndedAt = &t
	}
	return j, nil
}

// Get returns a job by id or name.
func (s *Service) Get(ctx context.Context, sc compute.Scope, idOrName string) (Job, error) {
	return s.get(ctx, s.DB.Read(), sc.WorkspaceID, idOrName, false)
}

func (s *Service) get(ctx context.Context, q store.Querier, workspaceID, idOrName string, lock bool) (Job, error) {
	suffix := ""
	if lock {
		suffix = store.ForUpdate(q)
	}
	j, err := scanJob(q.QueryRowContext(ctx, `SELECT `+jobColumns+` FROM jobs WHERE workspace_id = ? AND (id = ? OR name = ?)`+suffix, workspaceID, idOrName, idOrName))
	if errors.Is(err, sql.ErrNoRows) {
		return j, fault.New(fault.NotFound, "job %s does not exist in this workspace", clip(idOrName))
	}
	return j, err
}

// ListOptions filter a job listing.
type ListOptions struct {
	Status string
	Limit  int
}

// List returns a workspace's jobs, newest first.
func (s *Service) List(ctx context.Context, sc compute.Scope, o ListOptions) ([]Job, error) {
	q := `SELECT ` + jobColumns + ` FROM jobs WHERE workspace_id = ?`
	args := []any{sc.WorkspaceID}
	if o.Status != "" {
		q += ` AND status = ?`
		args = append(args, o.Status)
	}
	if o.Limit <= 0 || o.Limit > 1000 {
		o.Limit = 100
	}
	rows, err := s.DB.Read().QueryContext(ctx, q+fmt.Sprintf(` ORDER BY submitted_at DESC, id LIMIT %d`, o.Limit), args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []Job{}
	for rows.Next() {
		j, err := scanJob(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, j)
	}
	return out, rows.Err()
}

// Cancel asks a job to stop: a queued job ends at once; a running one is
// stopped (SIGTERM, then SIGKILL after the grace period) and ends
// Canceled once its processes are gone.
func (s *Service) Cancel(ctx context.Context, sc compute.Scope, idOrName string) (Job, error) {
	var j Job
	err := s.DB.Tx(ctx, func(tx store.Querier) error {
		var err error
		j, err = s.get(ctx, tx, sc.WorkspaceID, idOrName, true)
		if err != nil {
			return err
		}
		if Terminal(j.Status) {
			return fault.New(fault.FailedPrecondition, "job %s has already ended (%s)", j.Name, j.Status)
		}
		if j.Status == StatusQueued {
			now := s.Now()
			if _, err := tx.ExecContext(ctx, `UPDATE jobs SET status = ?, reason = ?, cancel_requested = TRUE, ended_at = ? WHERE id = ?`,
				StatusCanceled, "canceled by "+audit.CallerFrom(ctx).Principal+" while queued", now.UnixMilli(), j.ID); err != nil {
				return err
			}
		} else if _, err := tx.ExecContext(ctx, `UPDATE jobs SET cancel_requested = TRUE WHERE id = ?`, j.ID); err != nil {
			return err
		}
		return s.Audit.Append(ctx, tx, audit.Record{Action: "job.cancel", Resource: jobResource(sc.Workspace, j.Name), Workspace: sc.Workspace,
			Details: map[string]any{"status": j.Status}})
	})
	if err != nil {
		return Job{}, err
	}
	if j.Status == StatusQueued {
		s.endRun(context.WithoutCancel(ctx), j, "KILLED")
	} else {
		s.mu.Lock()
		stop := s.running[j.ID]
		s.mu.Unlock()
		if stop != nil {
			stop()
		}
	}
	return s.Get(ctx, sc, j.ID)
}

// ResourcesIn implements workspace.Holder: jobs not yet ended.
func (s *Service) ResourcesIn(ctx context.Context, q store.Querier, workspaceID string) (map[string]int, error) {
	var n int
	err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM jobs WHERE workspace_id = ? AND status NOT IN (?, ?, ?)`, workspaceID,
		StatusCompleted, StatusFailed, StatusCanceled).Scan(&n)
	return map[string]int{"jobs not ended": n}, err
}

// DeleteResourcesIn implements workspace.Holder. Jobs whose processes
// may be running are not deleted under them: cancel those first.
func (s *Service) DeleteResourcesIn(ctx context.Context, tx store.Querier, workspaceID string) error {
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM jobs WHERE workspace_id = ? AND status IN (?, ?, ?)`, workspaceID,
		StatusPreparing, StatusRunning, StatusFinalizing).Scan(&n); err != nil {
		return err
	}
	if n > 0 {
		return fault.New(fault.FailedPrecondition, "%d jobs of the workspace are running; cancel them and wait for them to end first", n)
	}
	_, err := tx.ExecContext(ctx, `DELETE FROM jobs WHERE workspace_id = ?`, workspaceID)
	return err
}

// Logs returns a job's output: live from its first node's process while
// it runs (with follow, until it ends), or as kept in its run's
// artifacts once it has ended. Following a queued job waits for it to
// start.
func (s *Service) Logs(ctx context.Context, sc compute.Scope, idOrName string, follow bool) (io.ReadCloser, error) {
	for {
		j, err := s.Get(ctx, sc, idOrName)
		if err != nil {
			return nil, err
		}
		if len(j.handles) > 0 && !Terminal(j.Status) {
			r, err := s.Executor.Logs(ctx, j.handles[0], executor.LogOptions{Follow: follow})
			if err == nil {
				return r, nil
			}
		}
		if Terminal(j.Status) || j.Status == StatusFinalizing || (j.Status == StatusQueued && j.Attempt > 0 && !follow) {
			_, tsc := s.scopes(j)
			run, err := s.Tracking.GetRun(ctx, tsc, j.ID)
			if err != nil {
				return nil, err
			}
			key := strings.TrimPrefix(strings.TrimRight(run.Info.ArtifactURI, "/"), "mlflow-artifacts:/") + "/user_logs/std_log.txt"
			r, _, err := s.Artifacts.Open(ctx, key)
			if fault.Is(err, fault.NotFound) {
				if j.Status == StatusFinalizing {
					time.Sleep(200 * time.Millisecond)
					continue
				}
				return io.NopCloser(strings.NewReader("")), nil
			}
			return r, err
		}
		if !follow {
			return io.NopCloser(strings.NewReader("")), nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// CostRow is one line of a job cost report.
type CostRow struct {
	Key         string  `json:"key"`
	Jobs        int     `json:"jobs"`
	NodeSeconds float64 `json:"node_seconds"`
	CPUSeconds  float64 `json:"cpu_seconds"`
	Cost        float64 `json:"cost"`
}

// Cost sums the cost of jobs submitted since a time, grouped by "user",
// "experiment" or "job", over the workspaces given by id (nil means all).
func (s *Service) Cost(ctx context.Context, by string, since time.Time, workspaceIDs []string) ([]CostRow, error) {
	col := map[string]string{"user": "submitted_by", "experiment": "workspace || '/' || experiment_id", "job": "workspace || '/' || name"}[by]
	if col == "" {
		return nil, fault.InvalidField("by", "%q: job cost groups by user, experiment or job", clip(by))
	}
	rows, err := s.DB.Read().QueryContext(ctx, `SELECT `+col+`, workspace_id, node_seconds, cpu_seconds, cost FROM jobs WHERE submitted_at >= ? OR ended_at IS NULL OR ended_at >= ?`,
		since.UnixMilli(), since.UnixMilli())
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	allowed := map[string]bool{}
	for _, id := range workspaceIDs {
		allowed[id] = true
	}
	acc := map[string]*CostRow{}
	for rows.Next() {
		var key, ws string
		var node, cpu, cost float64
		if err := rows.Scan(&key, &ws, &node, &cpu, &cost); err != nil {
			return nil, err
		}
		if workspaceIDs != nil && !allowed[ws] {
			continue
		}
		r := acc[key]
		if r == nil {
			r = &CostRow{Key: key}
			acc[key] = r
		}
		r.Jobs++
		r.NodeSeconds += node
		r.CPUSeconds += cpu
		r.Cost += cost
	}
	out := make([]CostRow, 0, len(acc))
	for _, r := range acc {
		out = append(out, *r)
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Cost > out[j].Cost || (out[i].Cost == out[j].Cost && out[i].Key < out[j].Key)
	})
	return out, rows.Err()
}
