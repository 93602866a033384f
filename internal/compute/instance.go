package compute

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/plinth-dev/plinth/internal/audit"
	"github.com/plinth-dev/plinth/internal/executor"
	"github.com/plinth-dev/plinth/internal/fault"
	"github.com/plinth-dev/plinth/internal/store"
)

// Compute instances: one node for one person's interactive work. A
// running instance holds a metered node and runs the web applications it
// was created with (JupyterLab, Notebook, VS Code, or any command that
// serves HTTP on $PORT) through the executor, reachable only through
// Plinth's authenticated proxy. Each has a home directory that outlives
// stop and start, and sees its workspace's shared folder at
// $HOME/shared. Traffic through the proxy counts as use; an instance idle
// for idle_time_before_shutdown stops itself, and cron schedules start
// and stop it.

// Instance states.
const (
	StateRunning = "Running"
	StateStopped = "Stopped"
)

// Schedule starts or stops an instance when its cron expression fires
// (UTC).
type Schedule struct {
	Action string `json:"action"`
	Cron   string `json:"cron"`
}

// Application is a web application an instance runs. Type jupyter,
// jupyterlab and vscode are built in; custom runs Command, which must
// serve HTTP on $PORT under the path in $PLINTH_APP_BASE_URL (or at the
// root: the proxy strips nothing, so prefer honouring the base URL).
type Application struct {
	Name    string `json:"name"`
	Type    string `json:"type"`
	Command string `json:"command,omitempty"`
	// URL is where the proxy serves it, relative to the server.
	URL string `json:"url,omitempty"`
}

var appNameRE = regexp.MustCompile(`^[a-z][a-z0-9-]{0,31}$`)

// appCommands are the built-in applications. They listen on loopback
// only, with their own authentication off: the proxy authenticates.
var appCommands = map[string]string{
	"jupyter": `exec jupyter notebook --no-browser --allow-root --ip=127.0.0.1 --port="$PORT" --notebook-dir="$HOME" ` +
		`--NotebookApp.base_url="$PLINTH_APP_BASE_URL" --NotebookApp.token='' --NotebookApp.password='' --NotebookApp.allow_origin='*' --NotebookApp.disable_check_xsrf=True`,
	"jupyterlab": `exec jupyter lab --no-browser --allow-root --ip=127.0.0.1 --port="$PORT" --notebook-dir="$HOME" ` +
		`--ServerApp.base_url="$PLINTH_APP_BASE_URL" --ServerApp.token='' --ServerApp.password='' --ServerApp.allow_origin='*' --ServerApp.disable_check_xsrf=True`,
	"vscode": `exec code-server --bind-addr "127.0.0.1:$PORT" --auth none --disable-telemetry "$HOME"`,
}

// instanceSettings checks and records an instance's own fields.
func instanceSettings(st *settings, in TargetInput, caller string) error {
	st.Min, st.Max = 0, 1
	st.IdleSeconds = 0
	if in.IdleShutdown != nil {
		st.IdleSeconds = int64(*in.IdleShutdown)
		if st.IdleSeconds != 0 && st.IdleSeconds < 60 && os.Getenv("PLINTH_TEST_SHORT_IDLE") == "" {
			return fault.InvalidField("idle_time_before_shutdown", "at least 60 seconds (or 0 for never)")
		}
	}
	if in.MinInstances != nil || in.MaxInstances != nil || in.IdleTime != nil {
		return fault.InvalidField("type", "an instance is one node: min_instances, max_instances and idle_time_before_scale_down belong to clusters")
	}
	st.Owner = in.Owner
	if st.Owner == "" {
		st.Owner = caller
	}
	for i, sc := range in.Schedules {
		if sc.Action != "start" && sc.Action != "stop" {
			return fault.InvalidField(fmt.Sprintf("schedules[%d].action", i), "%q is not start or stop", clipText(sc.Action))
		}
		if _, err := ParseCron(sc.Cron); err != nil {
			return fault.InvalidField(fmt.Sprintf("schedules[%d].cron", i), "%v", err)
		}
	}
	st.Schedules = in.Schedules
	seen := map[string]bool{}
	for i, a := range in.Applications {
		if a.Name == "" {
			a.Name = a.Type
		}
		if !appNameRE.MatchString(a.Name) || seen[a.Name] {
			return fault.InvalidField(fmt.Sprintf("applications[%d].name", i), "%q must be unique, 1-32 lower-case letters, digits and '-'", clipText(a.Name))
		}
		seen[a.Name] = true
		switch {
		case a.Type == "custom" && strings.TrimSpace(a.Command) == "":
			return fault.InvalidField(fmt.Sprintf("applications[%d].command", i), "a custom application needs the command that serves it on $PORT")
		case a.Type != "custom" && appCommands[a.Type] == "":
			return fault.InvalidField(fmt.Sprintf("applications[%d].type", i), "%q is not an application type (jupyter, jupyterlab, vscode or custom)", clipText(a.Type))
		case a.Type != "custom" && a.Command != "":
			return fault.InvalidField(fmt.Sprintf("applications[%d].command", i), "only custom applications take a command")
		}
		a.URL = ""
		st.Apps = append(st.Apps, a)
	}
	return nil
}

// InstanceKeys issues the key an instance's applications log to MLflow
// with (its owner's, limited to the workspace) and revokes it when the
// instance stops.
type InstanceKeys interface {
	IssueInstanceKey(ctx context.Context, owner, workspace, instance string, ttl time.Duration) (secret, keyID string, err error)
	RevokeInstanceKey(ctx context.Context, owner, keyID string) error
}

// runtime is what a running instance has started.
type instanceRuntime struct {
	NodeID string                     `json:"node_id"`
	KeyID  string                     `json:"key_id"`
	Apps   map[string]executor.Handle `json:"apps"`
}

// Instances starts, stops and watches compute instances.
type Instances struct {
	svc      *Service
	exec     executor.Executor
	keys     InstanceKeys
	dataDir  string
	log      *slog.Logger
	mu       sync.Mutex
	url      string
	touched  map[int64]time.Time
	lastTick time.Time
}

// NewInstances returns the instance manager; dataDir holds the homes
// (dataDir/homes/<workspace>/<instance>) and shared folders
// (dataDir/shared/<workspace>).
func NewInstances(svc *Service, exec executor.Executor, keys InstanceKeys, dataDir string, log *slog.Logger) *Instances {
	return &Instances{svc: svc, exec: exec, keys: keys, dataDir: dataDir, log: log, touched: map[int64]time.Time{}}
}

// SetServerURL is where the server listens, for the instances'
// MLFLOW_TRACKING_URI.
func (m *Instances) SetServerURL(u string) {
	m.mu.Lock()
	m.url = strings.TrimRight(u, "/")
	m.mu.Unlock()
}

// AppBase is the path the proxy serves an instance's application at.
func AppBase(ws, instance, app string) string {
	prefix := ""
	if ws != "default" {
		prefix = "/w/" + ws
	}
	return prefix + "/compute/" + instance + "/apps/" + app + "/"
}

func (m *Instances) target(ctx context.Context, q store.Querier, sc Scope, name string, lock bool) (Target, instanceRuntime, error) {
	suffix := ""
	if lock {
		suffix = store.ForUpdate(q)
	}
	var rt instanceRuntime
	var rawRuntime string
	row := q.QueryRowContext(ctx, `SELECT `+targetColumns+`, runtime FROM compute_targets WHERE workspace_id = ? AND name = ?`+suffix, sc.WorkspaceID, name)
	t, err := m.svc.scanTarget(scanExtra{row, &rawRuntime})
	if errors.Is(err, sql.ErrNoRows) {
		return t, rt, fault.New(fault.NotFound, "compute %s does not exist in workspace %s", clipText(name), sc.Workspace)
	}
	if err != nil {
		return t, rt, err
	}
	if t.Kind != KindInstance {
		return t, rt, fault.New(fault.FailedPrecondition, "%s is a %s; only instances start and stop", name, t.Kind)
	}
	if rawRuntime != "" {
		_ = json.Unmarshal([]byte(rawRuntime), &rt)
	}
	return t, rt, nil
}

// scanExtra appends destinations to a row's Scan.
type scanExtra struct {
	row   interface{ Scan(...any) error }
	extra *string
}

func (s scanExtra) Scan(dest ...any) error { return s.row.Scan(append(dest, s.extra)...) }

func (m *Instances) homeDir(ws, name string) string {
	return filepath.Join(m.dataDir, "homes", ws, name)
}
func (m *Instances) sharedDir(ws string) string { return filepath.Join(m.dataDir, "shared", ws) }

// Start brings an instance up: its node (metered from now), a key for
// its owner limited to the workspace, and its applications.
func (m *Instances) Start(ctx context.Context, sc Scope, name string) (Target, error) {
	t, _, err := m.target(ctx, m.svc.db.Read(), sc, name, false)
	if err != nil {
		return t, err
	}
	if t.State == StateRunning {
		return m.svc.Target(ctx, sc, name)
	}
	if caps := m.exec.Capabilities(); caps.Remote {
		// Home and shared folders are directories on this server's disk,
		// and the app proxy reaches applications on loopback.
		return t, fault.New(fault.FailedPrecondition, "compute instances run on the server's own machine, and this server runs work on the %s executor", caps.Backend)
	}
	gpus, err := m.fits(ctx, sc, t)
	if err != nil {
		return t, err
	}
	home, shared := m.homeDir(sc.Workspace, name), m.sharedDir(sc.Workspace)
	for _, d := range []string{home, shared} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return t, err
		}
	}
	if _, err := os.Lstat(filepath.Join(home, "shared")); errors.Is(err, os.ErrNotExist) {
		_ = os.Symlink(shared, filepath.Join(home, "shared"))
	}
	secret, keyID, err := m.keys.IssueInstanceKey(ctx, t.Owner, sc.Workspace, name, 30*24*time.Hour)
	if err != nil {
		return t, fmt.Errorf("issuing the instance's key: %w", err)
	}
	rt := instanceRuntime{KeyID: keyID, Apps: map[string]executor.Handle{}}
	stopAll := func() {
		for _, h := range rt.Apps {
			_ = m.exec.Stop(context.WithoutCancel(ctx), h, 5*time.Second)
			_ = m.exec.Remove(context.WithoutCancel(ctx), h)
		}
		_ = m.keys.RevokeInstanceKey(context.WithoutCancel(ctx), t.Owner, keyID)
	}
	m.mu.Lock()
	base := m.url
	m.mu.Unlock()
	tracking := base
	if sc.Workspace != "default" {
		tracking += "/w/" + sc.Workspace
	}
	for _, app := range t.Applications {
		cmd := app.Command
		if app.Type != "custom" {
			cmd = appCommands[app.Type]
		}
		env := map[string]string{"HOME": home, "PLINTH_SHARED": shared, "PLINTH_APP_BASE_URL": AppBase(sc.Workspace, name, app.Name),
			"PLINTH_INSTANCE": name, "PLINTH_WORKSPACE": sc.Workspace, "MLFLOW_TRACKING_URI": tracking, "MLFLOW_TRACKING_TOKEN": secret}
		if p := os.Getenv("PATH"); p != "" {
			env["PATH"] = p
		}
		id := fmt.Sprintf("instance-%s-%s-%s-%d", sc.WorkspaceID, name, app.Name, m.svc.now().UnixNano())
		h, err := m.exec.Start(ctx, executor.Spec{ID: id, Shell: cmd, Dir: home, Env: env, Ports: 1,
			Resources: executor.Resources{CPUs: float64(t.SKU.VCPUs), MemoryBytes: t.SKU.MemoryBytes, GPUs: gpus}})
		if err != nil {
			stopAll()
			return t, fmt.Errorf("starting application %s: %w", app.Name, err)
		}
		rt.Apps[app.Name] = h
	}
	err = m.svc.db.Tx(ctx, func(tx store.Querier) error {
		cur, _, err := m.target(ctx, tx, sc, name, true)
		if err != nil {
			return err
		}
		if cur.State == StateRunning {
			return fault.New(fault.FailedPrecondition, "instance %s was started meanwhile", name)
		}
		n, err := m.svc.StartNode(ctx, tx, sc, t.pk, name, t.SKU, false, gpus, "instance:"+name)
		if err != nil {
			return err
		}
		rt.NodeID = n.ID
		raw, _ := json.Marshal(rt)
		if _, err := tx.ExecContext(ctx, `UPDATE compute_targets SET state = ?, runtime = ?, updated_at = ? WHERE pk = ?`, StateRunning, string(raw), m.svc.now().UnixMilli(), t.pk); err != nil {
			return err
		}
		return m.svc.audit.Append(ctx, tx, audit.Record{Action: "compute.start", Resource: targetResource(sc.Workspace, name), Workspace: sc.Workspace,
			Details: map[string]any{"node": n.ID, "applications": len(rt.Apps)}})
	})
	if err != nil {
		stopAll()
		return t, err
	}
	m.mu.Lock()
	m.touched[t.pk] = m.svc.now()
	m.mu.Unlock()
	return m.svc.Target(ctx, sc, name)
}

// fits checks that the executor has room for the instance's node and the
// workspace's quota allows it, and picks the GPUs the node will hold.
func (m *Instances) fits(ctx context.Context, sc Scope, t Target) ([]string, error) {
	clusters, err := m.svc.Clusters(ctx, m.svc.db.Read())
	if err != nil {
		return nil, err
	}
	free := m.svc.FreeCapacity(m.exec.Capabilities(), clusters)
	if !free.Fits(t.SKU) {
		return nil, fault.New(fault.ResourceExhausted, "no capacity for a %s node now (%d vCPUs, %d GPUs free); stop another instance or wait for jobs to end",
			t.SKU.Name, max(free.VCPUs, 0), len(free.GPUs))
	}
	gpus := free.GPUs[:t.SKU.GPUs]
	limits, err := m.svc.QuotaLimits(ctx, m.svc.db.Read())
	if err != nil {
		return nil, err
	}
	if q, ok := limits[[2]string{sc.WorkspaceID, t.SKU.Family}]; ok {
		used, err := m.svc.QuotaUse(ctx, m.svc.db.Read())
		if err != nil {
			return nil, err
		}
		u := used[[2]string{sc.WorkspaceID, t.SKU.Family}]
		if u[0]+t.SKU.VCPUs > q[0] || u[1]+t.SKU.GPUs > q[1] {
			return nil, fault.New(fault.ResourceExhausted, "quota: workspace %s uses %d of %d vCPUs of family %s; the instance needs %d more", sc.Workspace, u[0], q[0], t.SKU.Family, t.SKU.VCPUs)
		}
	}
	return gpus, nil
}

// Stop takes an instance down: its applications, its node and its key.
// The home directory stays.
func (m *Instances) Stop(ctx context.Context, sc Scope, name, why string) (Target, error) {
	t, rt, err := m.target(ctx, m.svc.db.Read(), sc, name, false)
	if err != nil {
		return t, err
	}
	if t.State != StateRunning {
		return m.svc.Target(ctx, sc, name)
	}
	for _, h := range rt.Apps {
		if err := m.exec.Stop(ctx, h, 5*time.Second); err != nil {
			m.log.Warn("stopping an instance application", "instance", name, "error", err)
		}
		_ = m.exec.Remove(context.WithoutCancel(ctx), h)
	}
	err = m.svc.db.Tx(ctx, func(tx store.Querier) error {
		if rt.NodeID != "" {
			if err := m.svc.StopNode(ctx, tx, rt.NodeID); err != nil {
				return err
			}
		}
		if _, err := tx.ExecContext(ctx, `UPDATE compute_targets SET state = ?, runtime = '', updated_at = ? WHERE pk = ?`, StateStopped, m.svc.now().UnixMilli(), t.pk); err != nil {
			return err
		}
		return m.svc.audit.Append(ctx, tx, audit.Record{Action: "compute.stop", Resource: targetResource(sc.Workspace, name), Workspace: sc.Workspace,
			Details: map[string]any{"reason": why}})
	})
	if err != nil {
		return t, err
	}
	if rt.KeyID != "" {
		if err := m.keys.RevokeInstanceKey(context.WithoutCancel(ctx), t.Owner, rt.KeyID); err != nil {
			m.log.Warn("revoking an instance's key", "instance", name, "error", err)
		}
	}
	m.log.Info("instance stopped", "workspace", sc.Workspace, "instance", name, "reason", why)
	return m.svc.Target(ctx, sc, name)
}

// App finds a running application of an instance for the proxy: its
// port and the instance's owner.
func (m *Instances) App(ctx context.Context, sc Scope, instance, app string) (port int, owner string, targetPK int64, err error) {
	t, rt, err := m.target(ctx, m.svc.db.Read(), sc, instance, false)
	if err != nil {
		return 0, "", 0, err
	}
	if t.State != StateRunning {
		return 0, t.Owner, t.pk, fault.New(fault.FailedPrecondition, "instance %s is stopped; start it with `plinth compute start %s`", instance, instance)
	}
	h, ok := rt.Apps[app]
	if !ok || len(h.Ports) == 0 {
		return 0, t.Owner, t.pk, fault.New(fault.NotFound, "instance %s runs no application %s", instance, clipText(app))
	}
	return h.Ports[0], t.Owner, t.pk, nil
}

// Touch records use of an instance (traffic through the proxy), at most
// every few seconds to the database.
func (m *Instances) Touch(ctx context.Context, targetPK int64) {
	now := m.svc.now()
	m.mu.Lock()
	last := m.touched[targetPK]
	if now.Sub(last) < 5*time.Second {
		m.mu.Unlock()
		return
	}
	m.touched[targetPK] = now
	m.mu.Unlock()
	_ = m.svc.db.Tx(ctx, func(tx store.Querier) error {
		_, err := tx.ExecContext(ctx, `UPDATE compute_nodes SET last_used_at = ? WHERE compute_pk = ?`, now.UnixMilli(), targetPK)
		return err
	})
}

// Run stops idle instances and applies schedules until ctx ends.
func (m *Instances) Run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if err := m.Tick(ctx); err != nil && ctx.Err() == nil {
			m.log.Error("watching instances", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Tick makes one round: instances idle past their limit stop, schedules
// that fired since the last round start or stop theirs, and applications
// that died are started again.
func (m *Instances) Tick(ctx context.Context) error {
	now := m.svc.now()
	m.mu.Lock()
	last := m.lastTick
	m.lastTick = now
	m.mu.Unlock()
	rows, err := m.svc.db.Read().QueryContext(ctx, `SELECT t.name, t.settings, t.state, t.runtime, w.id, w.name, w.team,
		COALESCE((SELECT MAX(n.last_used_at) FROM compute_nodes n WHERE n.compute_pk = t.pk), 0)
		FROM compute_targets t JOIN workspaces w ON w.id = t.workspace_id WHERE t.kind = ?`, KindInstance)
	if err != nil {
		return err
	}
	type inst struct {
		name, state string
		st          settings
		rt          instanceRuntime
		sc          Scope
		lastUsed    time.Time
	}
	var list []inst
	for rows.Next() {
		var i inst
		var raw, rawRT string
		var used int64
		if err := rows.Scan(&i.name, &raw, &i.state, &rawRT, &i.sc.WorkspaceID, &i.sc.Workspace, &i.sc.Team, &used); err != nil {
			rows.Close()
			return err
		}
		_ = json.Unmarshal([]byte(raw), &i.st)
		if rawRT != "" {
			_ = json.Unmarshal([]byte(rawRT), &i.rt)
		}
		i.lastUsed = time.UnixMilli(used)
		list = append(list, i)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, i := range list {
		if !last.IsZero() {
			for _, sch := range i.st.Schedules {
				c, err := ParseCron(sch.Cron)
				if err != nil || !c.FiredBetween(last, now) {
					continue
				}
				if sch.Action == "start" && i.state != StateRunning {
					if _, err := m.Start(ctx, i.sc, i.name); err != nil {
						m.log.Warn("scheduled start of an instance", "instance", i.name, "error", err)
					}
				} else if sch.Action == "stop" && i.state == StateRunning {
					_, _ = m.Stop(ctx, i.sc, i.name, "schedule "+sch.Cron)
				}
			}
		}
		if i.state != StateRunning {
			continue
		}
		if i.st.IdleSeconds > 0 && now.Sub(i.lastUsed) > time.Duration(i.st.IdleSeconds)*time.Second {
			_, _ = m.Stop(ctx, i.sc, i.name, fmt.Sprintf("idle for %s (idle_time_before_shutdown)", now.Sub(i.lastUsed).Round(time.Second)))
			continue
		}
		for app, h := range i.rt.Apps {
			st, err := m.exec.Inspect(ctx, h)
			if err == nil && st.Done() {
				m.log.Warn("an instance application ended", "instance", i.name, "application", app, "exit_code", st.ExitCode, "reason", st.Reason)
			}
		}
	}
	return nil
}
