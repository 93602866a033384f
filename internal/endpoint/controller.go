package endpoint

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/plinth-dev/plinth/internal/artifact"
	"github.com/plinth-dev/plinth/internal/compute"
	"github.com/plinth-dev/plinth/internal/executor"
	"github.com/plinth-dev/plinth/internal/fault"
	"github.com/plinth-dev/plinth/internal/id"
	"github.com/plinth-dev/plinth/internal/store"
)

// The controller keeps every deployment's replicas as desired. Each
// round, per deployment: replicas that are starting are probed until
// ready (or failed, with their last output, after the readiness
// probe's failure threshold); ready replicas whose process ended are
// replaced; missing replicas of the current generation are started; once
// as many current replicas are ready as desired, replicas of older
// generations (a changed deployment) and extra ones (a scale-down) are
// drained: first taken out of the route snapshot, then stopped after the
// deployment's request timeout, so no request in flight is cut off.

// Load reports the in-flight and queued requests of a deployment
// (workspace/endpoint/deployment), from the gateway.
type Load func() map[string]LoadInfo

// LoadInfo is one deployment's load.
type LoadInfo struct {
	InFlight int
	Queued   int
}

// Controller reconciles deployments with their replicas.
type Controller struct {
	svc       *Service
	exec      executor.Executor
	artifacts *artifact.Store
	models    ModelResolver
	dir       string
	log       *slog.Logger
	load      Load

	mu       sync.Mutex
	wake     chan struct{}
	draining map[string]time.Time // replica id -> when to stop it
	probeAt  map[string]time.Time // replica id -> next liveness probe
	fails    map[string]int       // replica id -> consecutive failed probes
	scale    map[int64]*scaleState
	// backoff holds a deployment whose replicas keep failing: no new
	// replica before the time, which doubles with each failure.
	backoff  map[int64]backoffState
	onChange func()
	client   *http.Client
	// Replicas on a remote executor fetch their models (UseRemote).
	serverURL func() string
	tokens    ReplicaTokens
	// RemoteModelDir replaces DefaultRemoteModelDir (tests that pose as
	// a remote executor on this machine).
	RemoteModelDir string
}

type backoffState struct {
	until    time.Time
	failures int
}

type scaleState struct {
	above, below time.Time // since when demand asked for more, or fewer
}

// NewController returns a controller; dir holds replicas' model copies,
// onChange is called after each round that changed what is routable.
func NewController(svc *Service, exec executor.Executor, arts *artifact.Store, models ModelResolver, dir string, log *slog.Logger, onChange func()) *Controller {
	return &Controller{svc: svc, exec: exec, artifacts: arts, models: models, dir: dir, log: log, wake: make(chan struct{}, 1),
		draining: map[string]time.Time{}, probeAt: map[string]time.Time{}, fails: map[string]int{}, scale: map[int64]*scaleState{}, backoff: map[int64]backoffState{},
		onChange: onChange, client: &http.Client{Timeout: 2 * time.Second}}
}

// OnChange sets what is told when a round changed what is routable.
func (c *Controller) OnChange(f func()) { c.onChange = f }

// SetLoad gives the autoscaler its view of the gateway.
func (c *Controller) SetLoad(l Load) { c.load = l }

// Kick asks for a round soon.
func (c *Controller) Kick() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// Wake makes a scaled-to-zero deployment start a replica now (the
// gateway calls it with the first request).
func (c *Controller) Wake(workspace, endpoint, deployment string) {
	go func() {
		_, _ = c.svc.db.Exec(context.Background(), `UPDATE deployments SET desired = 1 WHERE desired = 0 AND name = ? AND endpoint_pk IN
			(SELECT e.pk FROM endpoints e JOIN workspaces w ON w.id = e.workspace_id WHERE w.name = ? AND e.name = ?)`, deployment, workspace, endpoint)
		c.Kick()
	}()
}

// Run reconciles until ctx ends. Replica processes outlive the control
// plane; the next Run adopts them.
func (c *Controller) Run(ctx context.Context) {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		changed, err := c.Round(ctx)
		if err != nil && ctx.Err() == nil {
			c.log.Error("endpoint controller round", "error", err)
		}
		if changed && c.onChange != nil {
			c.onChange()
		}
		select {
		case <-ctx.Done():
			return
		case <-c.wake:
		case <-t.C:
		}
	}
}

type deploymentRow struct {
	Deployment
	workspaceID, workspace, team string
}

// Round makes one pass over every deployment and reports whether what
// the gateway routes to changed.
func (c *Controller) Round(ctx context.Context) (bool, error) {
	changed := false
	if n, err := c.stopRetired(ctx); err != nil {
		return false, err
	} else if n > 0 {
		changed = true
	}
	rows, err := c.svc.db.Read().QueryContext(ctx, `SELECT d.pk, w.id, w.name, w.team FROM deployments d JOIN endpoints e ON e.pk = d.endpoint_pk JOIN workspaces w ON w.id = e.workspace_id`)
	if err != nil {
		return false, err
	}
	type ref struct {
		pk             int64
		wsID, ws, team string
	}
	var refs []ref
	for rows.Next() {
		var r ref
		if err := rows.Scan(&r.pk, &r.wsID, &r.ws, &r.team); err != nil {
			rows.Close()
			return false, err
		}
		refs = append(refs, r)
	}
	rows.Close()
	var load map[string]LoadInfo
	if c.load != nil {
		load = c.load()
	}
	for _, r := range refs {
		ds, err := c.svc.deployments(ctx, c.svc.db.Read(), `d.pk = ?`, r.pk)
		if err != nil || len(ds) == 0 {
			continue
		}
		d := deploymentRow{Deployment: ds[0], workspaceID: r.wsID, workspace: r.ws, team: r.team}
		ch, err := c.reconcile(ctx, d, load[r.ws+"/"+d.Endpoint+"/"+d.Name])
		if err != nil {
			c.log.Warn("reconciling a deployment", "endpoint", d.Endpoint, "deployment", d.Name, "error", err)
		}
		changed = changed || ch
	}
	return changed, nil
}

func (c *Controller) reconcile(ctx context.Context, d deploymentRow, load LoadInfo) (bool, error) {
	changed := false
	now := time.Now()
	desired := c.autoscale(ctx, d, load, now)
	var current, old []Replica
	ready := 0
	for _, r := range d.Replicas {
		if r.State == ReplicaDraining {
			if when, ok := c.drainDeadline(r.ID); ok && now.After(when) {
				c.stopReplica(ctx, r)
			} else if !ok {
				c.mu.Lock()
				c.draining[r.ID] = now.Add(c.drainTime(d))
				c.mu.Unlock()
			}
			continue
		}
		h := c.handleOf(r)
		st, err := c.exec.Inspect(ctx, h)
		if err == nil && st.Done() {
			msg := c.lastOutput(ctx, h)
			c.log.Warn("a replica ended", "endpoint", d.Endpoint, "deployment", d.Name, "replica", r.ID, "exit_code", st.ExitCode, "output", msg)
			c.stopReplica(ctx, r)
			wait := c.failed(d.pk)
			c.setState(ctx, d.pk, StateFailed, fmt.Sprintf("replica %s exited (code %d); retrying in %s; its last output: %s", r.ID, st.ExitCode, wait, msg), r.State == ReplicaReady)
			changed = changed || r.State == ReplicaReady
			continue
		}
		if r.State == ReplicaStarting && r.Addr == "" {
			c.learnAddress(ctx, &r, h)
		}
		if r.State == ReplicaStarting {
			if c.probe(ctx, r.Addr, d.Spec.Routes.Readiness, d.Spec.Readiness) {
				_, _ = c.svc.db.Exec(ctx, `UPDATE replicas SET state = ?, ready_at = ? WHERE id = ?`, ReplicaReady, now.UnixMilli(), r.ID)
				r.State = ReplicaReady
				changed = true
			} else if limit := time.Duration(d.Spec.Readiness.InitialDelay+d.Spec.Readiness.Period*d.Spec.Readiness.FailureThreshold) * time.Second; now.Sub(r.StartedAt) > limit {
				msg := c.lastOutput(ctx, h)
				c.stopReplica(ctx, r)
				wait := c.failed(d.pk)
				c.setState(ctx, d.pk, StateFailed, fmt.Sprintf("replica %s was not ready after %s (readiness probe %s); retrying in %s; its last output: %s", r.ID, limit, d.Spec.Routes.Readiness, wait, msg), false)
				continue
			}
		} else if r.State == ReplicaReady && c.livenessDue(r.ID, d.Spec.Liveness, now) {
			if c.probe(ctx, r.Addr, d.Spec.Routes.Liveness, d.Spec.Liveness) {
				c.resetFails(r.ID)
			} else if c.fail(r.ID) >= d.Spec.Liveness.FailureThreshold {
				c.log.Warn("a replica failed its liveness probe; replacing it", "replica", r.ID)
				c.drain(ctx, r, d)
				changed = true
				continue
			}
		}
		if r.Generation == d.Generation {
			current = append(current, r)
			if r.State == ReplicaReady {
				ready++
				c.recovered(d.pk)
			}
		} else {
			old = append(old, r)
		}
	}
	// Start what is missing of the current generation (not while a
	// crashing server is backed off).
	for i := len(current); i < desired && !c.heldBack(d.pk, now); i++ {
		r, err := c.startReplica(ctx, d)
		if err != nil {
			c.setState(ctx, d.pk, d.State, "waiting: "+errorMessage(err), false)
			break
		}
		current = append(current, r)
	}
	// Once enough are ready, drain the old generation and any extras.
	if ready >= desired {
		for _, r := range old {
			c.drain(ctx, r, d)
			changed = true
		}
		extra := len(current) - desired
		for i := len(current) - 1; i >= 0 && extra > 0; i-- {
			c.drain(ctx, current[i], d)
			extra--
			changed = true
		}
		if len(old) == 0 && d.State != StateSucceeded && (desired > 0 || ready == 0) {
			c.setState(ctx, d.pk, StateSucceeded, "", false)
		}
	}
	return changed, nil
}

func (c *Controller) drainTime(d deploymentRow) time.Duration {
	return time.Duration(d.Spec.Request.RequestTimeoutMS)*time.Millisecond + time.Second
}

func (c *Controller) drainDeadline(id string) (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, ok := c.draining[id]
	return t, ok
}

// drain takes a replica out of the routes now and stops it once requests
// already sent to it have had time to finish.
func (c *Controller) drain(ctx context.Context, r Replica, d deploymentRow) {
	_, _ = c.svc.db.Exec(ctx, `UPDATE replicas SET state = ? WHERE id = ?`, ReplicaDraining, r.ID)
	c.mu.Lock()
	c.draining[r.ID] = time.Now().Add(c.drainTime(d))
	c.mu.Unlock()
}

func (c *Controller) livenessDue(id string, p Probe, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now.Before(c.probeAt[id]) {
		return false
	}
	c.probeAt[id] = now.Add(time.Duration(max(p.Period, 1)) * time.Second)
	return true
}

func (c *Controller) fail(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.fails[id]++
	return c.fails[id]
}

func (c *Controller) resetFails(id string) {
	c.mu.Lock()
	delete(c.fails, id)
	c.mu.Unlock()
}

// ReplicaTokens issues the keys with which replicas on a remote executor
// fetch their model through the API: read-only, limited to the workspace,
// on behalf of the deployment's creator, revoked with the replica.
type ReplicaTokens interface {
	IssueReplicaToken(ctx context.Context, owner, workspace, replica string) (string, error)
	RevokeReplicaToken(ctx context.Context, replica string) error
}

// DefaultRemoteModelDir is where a replica on a remote executor finds its
// model's files.
const DefaultRemoteModelDir = "/plinth/work/model"

// UseRemote lets replicas on a remote executor fetch their models: serverURL
// is the control plane as pods reach it.
func (c *Controller) UseRemote(serverURL func() string, tokens ReplicaTokens) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.serverURL, c.tokens = serverURL, tokens
}

// stageModel has a replica's pod fetch its model: the same artifacts the
// local path downloads here, at the same relative place under the
// container's model folder, with a read-only token of its own.
func (c *Controller) stageModel(ctx context.Context, d deploymentRow, sc compute.Scope, rid string, env map[string]string) (*executor.Stage, error) {
	c.mu.Lock()
	serverURL, tokens, root := c.serverURL, c.tokens, c.RemoteModelDir
	c.mu.Unlock()
	if serverURL == nil || tokens == nil || serverURL() == "" {
		return nil, fault.New(fault.FailedPrecondition, "deployment %s names a model, and this server cannot hand models to replicas on the %s executor (no advertised URL)", d.Name, c.exec.Capabilities().Backend)
	}
	if root == "" {
		root = DefaultRemoteModelDir
	}
	ref := d.Spec.ResolvedModel
	if ref == "" {
		ref = d.Spec.Model
	}
	_, _, location, err := c.models.ResolveModel(ctx, sc, ref)
	if err != nil {
		return nil, fmt.Errorf("resolving model %s: %w", d.Spec.Model, err)
	}
	key := strings.TrimRight(strings.TrimPrefix(strings.TrimPrefix(location, "mlflow-artifacts:"), "/"), "/")
	modelDir := root
	if r, _, err := c.artifacts.Open(ctx, key); err == nil {
		r.Close()
		modelDir = root + "/" + path.Base(key)
	}
	token, err := tokens.IssueReplicaToken(ctx, d.CreatedBy, d.workspace, rid)
	if err != nil {
		return nil, fmt.Errorf("issuing replica %s its token for model %s: %w", rid, d.Spec.Model, err)
	}
	env["PLINTH_MODEL_TOKEN"] = token
	env["AZUREML_MODEL_DIR"], env["MODEL_DIR"] = modelDir, modelDir
	return &executor.Stage{Server: serverURL(), TokenEnv: "PLINTH_MODEL_TOKEN",
		Fetch: []executor.Fetch{{Kind: executor.FetchArtifacts, Workspace: d.workspace, Source: key, To: root}}}, nil
}

func (c *Controller) revokeToken(ctx context.Context, rid string) {
	c.mu.Lock()
	tokens := c.tokens
	c.mu.Unlock()
	if tokens == nil {
		return
	}
	if err := tokens.RevokeReplicaToken(ctx, rid); err != nil {
		c.log.Warn("revoking a replica's token", "replica", rid, "error", err)
	}
}

// learnAddress records the address of a replica that started without one
// (a pod that had no IP yet), once the executor knows it.
func (c *Controller) learnAddress(ctx context.Context, r *Replica, h executor.Handle) {
	nh, err := c.exec.Find(ctx, h.ID)
	if err != nil || nh.Address(0) == "" {
		return
	}
	raw, _ := json.Marshal(nh)
	if _, err := c.svc.db.Exec(ctx, `UPDATE replicas SET addr = ?, handle = ? WHERE id = ?`, nh.Address(0), string(raw), r.ID); err != nil {
		c.log.Warn("recording a replica's address", "replica", r.ID, "error", err)
		return
	}
	r.Addr, r.handle = nh.Address(0), string(raw)
}

func (c *Controller) probe(ctx context.Context, addr, path string, p Probe) bool {
	if addr == "" {
		return false
	}
	pctx, cancel := context.WithTimeout(ctx, time.Duration(max(p.Timeout, 1))*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(pctx, "GET", "http://"+addr+path, nil)
	res, err := c.client.Do(req)
	if err != nil {
		return false
	}
	io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10))
	res.Body.Close()
	return res.StatusCode >= 200 && res.StatusCode < 400
}

func (c *Controller) handleOf(r Replica) executor.Handle {
	var h executor.Handle
	_ = json.Unmarshal([]byte(r.handle), &h)
	return h
}

func (c *Controller) lastOutput(ctx context.Context, h executor.Handle) string {
	rc, err := c.exec.Logs(ctx, h, executor.LogOptions{})
	if err != nil {
		return ""
	}
	defer rc.Close()
	b, _ := io.ReadAll(io.LimitReader(rc, 1<<20))
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 5 {
		lines = lines[len(lines)-5:]
	}
	out := strings.Join(lines, " | ")
	if len(out) > 1000 {
		out = out[len(out)-1000:]
	}
	return out
}

func (c *Controller) setState(ctx context.Context, pk int64, state, reason string, _ bool) {
	_, _ = c.svc.db.Exec(ctx, `UPDATE deployments SET state = ?, reason = ? WHERE pk = ? AND (state <> ? OR reason <> ?)`, state, reason, pk, state, reason)
}

// startReplica brings up one replica: a metered node, the model's files
// and the server process.
func (c *Controller) startReplica(ctx context.Context, d deploymentRow) (Replica, error) {
	sku, err := c.svc.compute.SKUs().Get(d.Spec.InstanceType)
	if err != nil {
		return Replica{}, err
	}
	sc := compute.Scope{WorkspaceID: d.workspaceID, Workspace: d.workspace, Team: d.team}
	rid := id.New()
	dir := filepath.Join(c.dir, rid)
	env := map[string]string{"PLINTH_WORKSPACE": d.workspace, "PLINTH_ENDPOINT": d.Endpoint, "PLINTH_DEPLOYMENT": d.Name, "PLINTH_REPLICA": rid}
	if p := os.Getenv("PATH"); p != "" {
		env["PATH"] = p
	}
	for k, v := range d.Spec.EnvironmentVariables {
		env[k] = v
	}
	remote := c.exec.Capabilities().Remote
	if _, own := d.Spec.EnvironmentVariables["PATH"]; remote && !own {
		// The server's PATH means nothing inside an image.
		delete(env, "PATH")
	}
	var stage *executor.Stage
	if d.Spec.Model != "" && remote {
		if stage, err = c.stageModel(ctx, d, sc, rid, env); err != nil {
			return Replica{}, err
		}
	} else if d.Spec.Model != "" {
		ref := d.Spec.ResolvedModel
		if ref == "" {
			ref = d.Spec.Model
		}
		_, _, location, err := c.models.ResolveModel(ctx, sc, ref)
		if err != nil {
			return Replica{}, fmt.Errorf("resolving model %s: %w", d.Spec.Model, err)
		}
		key := strings.TrimPrefix(strings.TrimPrefix(location, "mlflow-artifacts:"), "/")
		modelDir, err := c.artifacts.Download(ctx, key, filepath.Join(dir, "model"))
		if err != nil {
			return Replica{}, fmt.Errorf("fetching model %s: %w", d.Spec.Model, err)
		}
		env["AZUREML_MODEL_DIR"], env["MODEL_DIR"] = modelDir, modelDir
	}
	if err := c.fits(ctx, sku); err != nil {
		return Replica{}, err
	}
	h, err := c.exec.Start(ctx, executor.Spec{ID: "replica-" + rid, Shell: d.Spec.Command, Env: env, Ports: 1, Image: d.Spec.Environment,
		Resources: executor.Resources{CPUs: float64(sku.VCPUs), MemoryBytes: sku.MemoryBytes}, Stage: stage})
	if err != nil {
		c.revokeToken(context.WithoutCancel(ctx), rid)
		return Replica{}, err
	}
	raw, _ := json.Marshal(h)
	r := Replica{ID: rid, Generation: d.Generation, State: ReplicaStarting, StartedAt: time.Now(), handle: string(raw)}
	// A pod still being scheduled has no address yet: reconcile looks it
	// up again until it has one.
	r.Addr = h.Address(0)
	err = c.svc.db.Tx(ctx, func(tx store.Querier) error {
		pk, err := c.svc.compute.ServerlessTarget(ctx, tx, sc)
		if err != nil {
			return err
		}
		n, err := c.svc.compute.StartNode(ctx, tx, sc, pk, "endpoint:"+d.Endpoint+"/"+d.Name, sku, false, nil, "replica:"+rid)
		if err != nil {
			return err
		}
		r.nodeID = n.ID
		_, err = tx.ExecContext(ctx, `INSERT INTO replicas (id, deployment_pk, generation, node_id, handle, addr, state, started_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
			rid, d.pk, d.Generation, n.ID, r.handle, r.Addr, ReplicaStarting, r.StartedAt.UnixMilli())
		return err
	})
	if err != nil {
		_ = c.exec.Stop(context.WithoutCancel(ctx), h, time.Second)
		return Replica{}, err
	}
	return r, nil
}

// fits checks the executor has room for one more node of the SKU.
func (c *Controller) fits(ctx context.Context, sku compute.SKU) error {
	clusters, err := c.svc.compute.Clusters(ctx, c.svc.db.Read())
	if err != nil {
		return err
	}
	if free := c.svc.compute.FreeCapacity(c.exec.Capabilities(), clusters); !free.Fits(sku) {
		return fmt.Errorf("no capacity for another %s replica (%d vCPUs free)", sku.Name, max(free.VCPUs, 0))
	}
	return nil
}

// stopReplica stops a replica's process and node and forgets it.
func (c *Controller) stopReplica(ctx context.Context, r Replica) {
	h := c.handleOf(r)
	_ = c.exec.Stop(ctx, h, 5*time.Second)
	_ = c.exec.Remove(context.WithoutCancel(ctx), h)
	c.revokeToken(context.WithoutCancel(ctx), r.ID)
	_ = os.RemoveAll(filepath.Join(c.dir, r.ID))
	_ = c.svc.db.Tx(ctx, func(tx store.Querier) error {
		if r.nodeID != "" {
			if err := c.svc.compute.StopNode(ctx, tx, r.nodeID); err != nil {
				return err
			}
		}
		_, err := tx.ExecContext(ctx, `DELETE FROM replicas WHERE id = ?`, r.ID)
		return err
	})
	c.mu.Lock()
	delete(c.draining, r.ID)
	delete(c.probeAt, r.ID)
	delete(c.fails, r.ID)
	c.mu.Unlock()
}

// stopRetired stops the replicas of deleted deployments.
func (c *Controller) stopRetired(ctx context.Context) (int, error) {
	rows, err := c.svc.db.Read().QueryContext(ctx, `SELECT id, handle, node_id FROM retired_replicas`)
	if err != nil {
		return 0, err
	}
	var list []Replica
	for rows.Next() {
		var r Replica
		if err := rows.Scan(&r.ID, &r.handle, &r.nodeID); err != nil {
			rows.Close()
			return 0, err
		}
		list = append(list, r)
	}
	rows.Close()
	for _, r := range list {
		c.stopReplica(ctx, r)
		_, _ = c.svc.db.Exec(ctx, `DELETE FROM retired_replicas WHERE id = ?`, r.ID)
	}
	return len(list), nil
}

// autoscale returns how many replicas a deployment should have now, and
// records it. target_utilization: in-flight plus queued requests over
// target_concurrency per replica, between min and max; up at once (after
// scale_up_window), down only after demand stayed lower for
// scale_down_window, to zero only when allowed.
func (c *Controller) autoscale(ctx context.Context, d deploymentRow, load LoadInfo, now time.Time) int {
	sc := d.Spec.Scale
	if sc.Type != "target_utilization" {
		if d.Desired != d.Spec.InstanceCount {
			_, _ = c.svc.db.Exec(ctx, `UPDATE deployments SET desired = ? WHERE pk = ?`, d.Spec.InstanceCount, d.pk)
		}
		return d.Spec.InstanceCount
	}
	want := int(math.Ceil(float64(load.InFlight+load.Queued) / sc.TargetConcurrency))
	want = min(max(want, sc.MinInstances), sc.MaxInstances)
	c.mu.Lock()
	st := c.scale[d.pk]
	if st == nil {
		st = &scaleState{}
		c.scale[d.pk] = st
	}
	next := d.Desired
	switch {
	case want > d.Desired:
		st.below = time.Time{}
		if st.above.IsZero() {
			st.above = now
		}
		if now.Sub(st.above) >= time.Duration(sc.ScaleUpWindow)*time.Second {
			next, st.above = want, time.Time{}
		}
	case want < d.Desired:
		st.above = time.Time{}
		if st.below.IsZero() {
			st.below = now
		}
		if now.Sub(st.below) >= time.Duration(sc.ScaleDownWindow)*time.Second {
			next, st.below = want, time.Time{}
		}
	default:
		st.above, st.below = time.Time{}, time.Time{}
	}
	c.mu.Unlock()
	if next != d.Desired {
		c.log.Info("autoscaling a deployment", "endpoint", d.Endpoint, "deployment", d.Name, "from", d.Desired, "to", next, "in_flight", load.InFlight, "queued", load.Queued)
		_, _ = c.svc.db.Exec(ctx, `UPDATE deployments SET desired = ? WHERE pk = ?`, next, d.pk)
	}
	return next
}

// failed records a replica failure of a deployment and returns how long
// it now waits before the next start: 1 s, doubling to at most 1 minute.
func (c *Controller) failed(pk int64) time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	b := c.backoff[pk]
	b.failures++
	wait := min(time.Second<<min(b.failures-1, 6), time.Minute)
	b.until = time.Now().Add(wait)
	c.backoff[pk] = b
	return wait
}

func (c *Controller) recovered(pk int64) {
	c.mu.Lock()
	delete(c.backoff, pk)
	c.mu.Unlock()
}

func (c *Controller) heldBack(pk int64, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return now.Before(c.backoff[pk].until)
}

// Logs returns the output of a deployment's replica (the newest ready
// one when replica is ""), following it when asked.
func (c *Controller) Logs(ctx context.Context, sc compute.Scope, endpoint, deployment, replica string, follow bool) (io.ReadCloser, error) {
	d, err := c.svc.GetDeployment(ctx, sc, endpoint, deployment)
	if err != nil {
		return nil, err
	}
	var pick *Replica
	for i := range d.Replicas {
		r := &d.Replicas[i]
		switch {
		case replica != "" && r.ID == replica:
			pick = r
		case replica == "" && (pick == nil || r.State == ReplicaReady || pick.State != ReplicaReady):
			pick = r
		}
	}
	if pick == nil {
		if replica != "" {
			return nil, fault.New(fault.NotFound, "deployment %s has no replica %s", deployment, clip(replica))
		}
		return nil, fault.New(fault.NotFound, "deployment %s has no replicas now (reason: %s)", deployment, orNone(d.Reason))
	}
	return c.exec.Logs(ctx, c.handleOf(*pick), executor.LogOptions{Follow: follow})
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
