package jobs

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/plinth-dev/plinth/internal/artifact"
	"github.com/plinth-dev/plinth/internal/audit"
	"github.com/plinth-dev/plinth/internal/compute"
	"github.com/plinth-dev/plinth/internal/executor"
	"github.com/plinth-dev/plinth/internal/fault"
	"github.com/plinth-dev/plinth/internal/registry"
	"github.com/plinth-dev/plinth/internal/tracking"
)

// An attempt of a job, from its nodes being given to it to its end:
// prepare (code, inputs, output folders, a run token), start one process
// per node through the executor, wait (bounded by the job's timeout,
// stopped on cancel), then finalize (logs and outputs into the run's
// artifacts, outputs registered as data, usage and cost on the run, the
// run's status) or queue a retry.

// launch watches a job's attempt in a goroutine of its own.
func (s *Service) launch(j Job) {
	s.mu.Lock()
	base := s.base
	if _, dup := s.running[j.ID]; dup || base == nil {
		s.mu.Unlock()
		return
	}
	ctx, cancel := context.WithCancel(base)
	// What the attempt changes (its outputs' data versions, the run) is
	// done on behalf of whoever submitted the job.
	ctx = audit.WithCaller(ctx, audit.Caller{Principal: j.SubmittedBy, KeyID: j.submitKey, Source: "job " + j.Name})
	s.running[j.ID] = cancel
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		defer func() {
			s.mu.Lock()
			delete(s.running, j.ID)
			s.mu.Unlock()
			cancel()
		}()
		s.attempt(ctx, j)
	}()
}

// attemptID names one node's process of one attempt.
func attemptID(jobID string, attempt, node int) string {
	return fmt.Sprintf("%s-a%d-n%d", jobID, attempt, node)
}

func (s *Service) jobDir(j Job) string {
	return filepath.Join(s.WorkDir, j.ID, "attempt-"+strconv.Itoa(j.Attempt))
}

func (s *Service) scopes(j Job) (compute.Scope, tracking.Scope) {
	return compute.Scope{WorkspaceID: j.workspaceID, Workspace: j.Workspace, Team: j.Team},
		tracking.Scope{WorkspaceID: j.workspaceID, Workspace: j.Workspace}
}

// attempt runs (or, after a restart, goes on watching) one attempt.
func (s *Service) attempt(ctx context.Context, j Job) {
	shutdown := func() bool { return s.baseDone() }
	// A cancel that came between placement and this watch (or while no
	// control plane watched) is honoured now.
	var cancelRequested bool
	if err := s.DB.Read().QueryRowContext(ctx, `SELECT cancel_requested FROM jobs WHERE id = ?`, j.ID).Scan(&cancelRequested); err == nil && cancelRequested {
		for _, h := range j.handles {
			_ = s.Executor.Stop(context.WithoutCancel(ctx), h, s.StopGrace)
		}
		statuses := make([]executor.Status, 0, len(j.handles))
		for _, h := range j.handles {
			if st, err := s.Executor.Inspect(context.WithoutCancel(ctx), h); err == nil {
				statuses = append(statuses, st)
			}
		}
		s.finish(context.WithoutCancel(ctx), j, statuses, outcome{canceled: true, reason: "canceled"})
		return
	}
	if j.Status == StatusPreparing && len(j.handles) == 0 {
		// Work started before a crash could persist its handle is found
		// by the id it was started with.
		for i := range j.Nodes {
			if h, err := s.Executor.Find(ctx, attemptID(j.ID, j.Attempt, i)); err == nil {
				j.handles = append(j.handles, h)
			}
		}
		if len(j.handles) != len(j.Nodes) {
			for _, h := range j.handles {
				_ = s.Executor.Stop(context.WithoutCancel(ctx), h, 0)
			}
			j.handles = nil
			if err := s.start(ctx, &j); err != nil {
				if shutdown() {
					return
				}
				out := outcome{failed: true, reason: "could not start: " + errorMessage(err)}
				if ctx.Err() != nil {
					out = outcome{canceled: true, reason: "canceled while preparing"}
				}
				s.finish(context.WithoutCancel(ctx), j, nil, out)
				return
			}
		}
	}
	statuses, out := s.wait(ctx, j)
	if shutdown() && !out.decided() {
		return
	}
	s.finish(context.WithoutCancel(ctx), j, statuses, out)
}

func (s *Service) baseDone() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.base == nil || s.base.Err() != nil
}

// DefaultRemoteWorkDir is where a job's code, inputs and outputs are inside
// the container on a remote executor (a Kubernetes pod), which fetches and
// uploads them itself.
const DefaultRemoteWorkDir = "/plinth/work"

// start prepares the attempt and starts its processes.
func (s *Service) start(ctx context.Context, j *Job) error {
	if s.Executor.Capabilities().Remote {
		return s.startRemote(ctx, j)
	}
	dir := s.jobDir(*j)
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	codeDir := filepath.Join(dir, "code")
	for _, d := range []string{codeDir, filepath.Join(dir, "inputs"), filepath.Join(dir, "outputs")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if j.CodeDigest != "" {
		if err := s.extractCode(ctx, j.Workspace, j.CodeDigest, codeDir); err != nil {
			return err
		}
	}
	_, tsc := s.scopes(*j)
	inputs, err := resolveInputs(j.Spec, func(name string, in Input) (string, error) {
		return s.fetchInput(ctx, tsc, name, in, filepath.Join(dir, "inputs", name))
	})
	if err != nil {
		return err
	}
	outputs := map[string]string{}
	for name, o := range j.Spec.Outputs {
		p := filepath.Join(dir, "outputs", name)
		if o.Type == TypeURIFile {
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
		} else if err := os.MkdirAll(p, 0o755); err != nil {
			return err
		}
		outputs[name] = p
	}
	command, err := j.Spec.Render(inputs, outputs)
	if err != nil {
		return err
	}
	return s.launchNodes(ctx, j, command, codeDir, nil)
}

// startRemote prepares an attempt whose processes cannot see this
// machine: instead of copying code and inputs into a directory here, it
// lists what each process fetches through the API with its run token
// (and which outputs it uploads into the run's artifacts when it
// succeeds), and renders the command with the paths inside the container.
func (s *Service) startRemote(ctx context.Context, j *Job) error {
	_, tsc := s.scopes(*j)
	run, err := s.Tracking.GetRun(ctx, tsc, j.ID)
	if err != nil {
		return fmt.Errorf("the job's run: %w", err)
	}
	artifactRoot := strings.TrimPrefix(strings.TrimRight(run.Info.ArtifactURI, "/"), "mlflow-artifacts:/")
	stage := &executor.Stage{Server: s.ServerURL(), TokenEnv: "MLFLOW_TRACKING_TOKEN"}
	root := DefaultRemoteWorkDir
	if s.RemoteWorkDir != "" {
		root = s.RemoteWorkDir
	}
	codeDir := root + "/code"
	if j.CodeDigest != "" {
		stage.Fetch = append(stage.Fetch, executor.Fetch{Kind: executor.FetchCode, Workspace: j.Workspace, Source: j.CodeDigest, To: codeDir})
	}
	inputs, err := resolveInputs(j.Spec, func(name string, in Input) (string, error) {
		p, f, err := s.remoteInput(ctx, tsc, in, root+"/inputs/"+name)
		if f != nil {
			stage.Fetch = append(stage.Fetch, *f)
		}
		return p, err
	})
	if err != nil {
		return err
	}
	outputs := map[string]string{}
	for name, o := range j.Spec.Outputs {
		p := root + "/outputs/" + name
		if o.Type == TypeURIFile {
			stage.Dirs = append(stage.Dirs, root+"/outputs")
		} else {
			stage.Dirs = append(stage.Dirs, p)
		}
		stage.Upload = append(stage.Upload, executor.Upload{From: p, To: artifactRoot + "/outputs/" + name})
		outputs[name] = p
	}
	command, err := j.Spec.Render(inputs, outputs)
	if err != nil {
		return err
	}
	return s.launchNodes(ctx, j, command, codeDir, stage)
}

// resolveInputs gives each input of spec the value its command sees:
// literals as they are, data inputs where place puts them.
func resolveInputs(spec Spec, place func(name string, in Input) (string, error)) (map[string]string, error) {
	inputs := map[string]string{}
	for name, in := range spec.Inputs {
		if in.IsLiteral() {
			if in.Value != nil {
				inputs[name] = *in.Value
			}
			continue
		}
		if in.Path == "" {
			continue
		}
		p, err := place(name, in)
		if err != nil {
			return nil, fault.Wrap(fault.Invalid, err, "input %s (%s): %v", name, clip(in.Path), errorMessage(err))
		}
		inputs[name] = p
	}
	return inputs, nil
}

// remoteInput is where a data input will be inside the container and what
// fetches it there (nil for what the command is given as it is).
func (s *Service) remoteInput(ctx context.Context, sc tracking.Scope, in Input, dir string) (string, *executor.Fetch, error) {
	src, err := ParseSource(in.Path)
	if err != nil {
		return "", nil, err
	}
	if in.Mode == "direct" || src.Kind == SourceURL {
		return in.Path, nil, nil
	}
	switch src.Kind {
	case SourceAsset:
		v, files, err := s.Registry.DataFiles(ctx, sc, src.Asset, src.Version)
		if err != nil {
			return "", nil, err
		}
		f := &executor.Fetch{Kind: executor.FetchData, Workspace: sc.Workspace, Source: v.Name, Version: v.Version, To: dir}
		if v.Type == registry.TypeFile && len(files) == 1 {
			return dir + "/" + files[0].Path, f, nil
		}
		return dir, f, nil
	case SourceRun, SourceArtifact:
		key, err := s.artifactKey(ctx, sc, in.Path, src)
		if err != nil {
			return "", nil, err
		}
		f := &executor.Fetch{Kind: executor.FetchArtifacts, Workspace: sc.Workspace, Source: key, To: dir}
		// A file arrives as dir/<its name>, a folder's files under dir.
		if r, _, err := s.Artifacts.Open(ctx, key); err == nil {
			r.Close()
			return dir + "/" + path.Base(key), f, nil
		}
		entries, err := s.Artifacts.List(ctx, key)
		if err != nil {
			return "", nil, err
		}
		if len(entries) == 0 {
			return "", nil, fmt.Errorf("no artifacts at %s", key)
		}
		return dir, f, nil
	}
	return "", nil, fmt.Errorf("cannot fetch %s", in.Path)
}

// launchNodes issues the attempt's run token and starts one process per
// node running command in dir; stage, for a remote executor, is what each
// process fetches and uploads.
func (s *Service) launchNodes(ctx context.Context, j *Job, command, dir string, stage *executor.Stage) error {
	ttl := 24 * time.Hour
	if j.TimeoutSeconds > 0 {
		ttl = time.Duration(j.TimeoutSeconds)*time.Second + time.Hour
	}
	token, _, err := s.Tokens.CreateRunToken(ctx, j.SubmittedBy, j.Workspace, j.ID, ttl)
	if err != nil {
		return fmt.Errorf("issuing the run's token: %w", err)
	}
	sku, _ := s.Compute.SKUs().Lookup(j.InstanceType)
	gpusByNode, err := s.Compute.NodeGPUs(ctx, j.Nodes)
	if err != nil {
		return err
	}
	image := ""
	if j.Spec.Environment != nil {
		image = j.Spec.Environment.Image
	}
	env := map[string]string{}
	// The local backend runs jobs on this machine, so they find the tools
	// installed on it; an environment's image would define PATH instead.
	if p := os.Getenv("PATH"); p != "" && image == "" && stage == nil {
		env["PATH"] = p
	}
	for k, v := range j.Spec.EnvironmentVariables {
		env[k] = v
	}
	for k, v := range map[string]string{
		"MLFLOW_TRACKING_URI": s.trackingURI(j.Workspace), "MLFLOW_TRACKING_TOKEN": token, "MLFLOW_RUN_ID": j.ID,
		"MLFLOW_EXPERIMENT_ID": j.ExperimentID, "PLINTH_JOB_ID": j.ID, "PLINTH_JOB_NAME": j.Name, "PLINTH_WORKSPACE": j.Workspace,
		"PLINTH_ATTEMPT": strconv.Itoa(j.Attempt), "WORLD_SIZE": strconv.Itoa(len(j.Nodes)), "MASTER_ADDR": "127.0.0.1",
	} {
		env[k] = v
	}
	for i := range j.Nodes {
		node := map[string]string{"RANK": strconv.Itoa(i), "NODE_RANK": strconv.Itoa(i), "LOCAL_RANK": "0"}
		for k, v := range env {
			node[k] = v
		}
		spec := executor.Spec{ID: attemptID(j.ID, j.Attempt, i), Shell: command, Dir: dir, Env: node, Image: image, Stage: stage,
			Resources: executor.Resources{CPUs: float64(sku.VCPUs), MemoryBytes: sku.MemoryBytes, GPUs: gpusByNode[j.Nodes[i]]}}
		h, err := s.Executor.Start(ctx, spec)
		if err != nil {
			for _, started := range j.handles {
				_ = s.Executor.Stop(context.WithoutCancel(ctx), started, 0)
			}
			return err
		}
		j.handles = append(j.handles, h)
	}
	raw, _ := json.Marshal(j.handles)
	if _, err := s.DB.Exec(ctx, `UPDATE jobs SET status = ?, handles = ? WHERE id = ?`, StatusRunning, string(raw), j.ID); err != nil {
		return err
	}
	j.Status = StatusRunning
	return nil
}

// fetchInput makes a data input available at dir and returns the path the
// command gets: a folder, or for a uri_file the file. URLs of stores
// Plinth does not read are passed as they are.
func (s *Service) fetchInput(ctx context.Context, sc tracking.Scope, name string, in Input, dir string) (string, error) {
	src, err := ParseSource(in.Path)
	if err != nil {
		return "", err
	}
	if in.Mode == "direct" || src.Kind == SourceURL {
		return in.Path, nil
	}
	switch src.Kind {
	case SourceAsset:
		v, files, err := s.Registry.DataFiles(ctx, sc, src.Asset, src.Version)
		if err != nil {
			return "", err
		}
		for _, f := range files {
			if err := s.copyDataFile(ctx, sc, v, f, filepath.Join(dir, filepath.FromSlash(f.Path))); err != nil {
				return "", err
			}
		}
		if v.Type == registry.TypeFile && len(files) == 1 {
			return filepath.Join(dir, filepath.FromSlash(files[0].Path)), nil
		}
		return dir, nil
	case SourceRun, SourceArtifact:
		key, err := s.artifactKey(ctx, sc, in.Path, src)
		if err != nil {
			return "", err
		}
		return s.Artifacts.Download(ctx, key, dir)
	}
	return "", fmt.Errorf("cannot fetch %s", in.Path)
}

// artifactKey is where a runs:/ or mlflow-artifacts:/ input is in the
// artifact store; it must be in the job's workspace.
func (s *Service) artifactKey(ctx context.Context, sc tracking.Scope, path string, src Source) (string, error) {
	key := strings.TrimPrefix(strings.TrimPrefix(path, "mlflow-artifacts:"), "/")
	if src.Kind == SourceRun {
		run, err := s.Tracking.GetRun(ctx, sc, src.RunID)
		if err != nil {
			return "", err
		}
		key = strings.TrimPrefix(strings.TrimRight(run.Info.ArtifactURI, "/"), "mlflow-artifacts:/") + "/" + src.ArtifactPath
	}
	if ws, _, _ := strings.Cut(key, "/"); ws != sc.Workspace {
		return "", fmt.Errorf("%s is not in workspace %s", path, sc.Workspace)
	}
	return strings.TrimRight(key, "/"), nil
}

func (s *Service) copyDataFile(ctx context.Context, sc tracking.Scope, v registry.DataVersion, f registry.DataFile, target string) error {
	_, r, err := s.Registry.OpenDataFile(ctx, sc, v.Name, v.Version, f.Path)
	if err != nil {
		return err
	}
	defer r.Close()
	return artifact.WriteFile(target, r)
}

// outcome is how an attempt ended, beyond its processes' statuses.
type outcome struct {
	canceled bool
	timedOut bool
	failed   bool
	reason   string
}

func (o outcome) decided() bool { return o.canceled || o.timedOut || o.failed }

// wait waits for every process of the attempt, stopping them all on
// cancel, on timeout, or when one fails (the ranks of a distributed job
// cannot go on without it).
func (s *Service) wait(ctx context.Context, j Job) ([]executor.Status, outcome) {
	statuses := make([]executor.Status, len(j.handles))
	if len(j.handles) == 0 {
		return nil, outcome{failed: true, reason: "no processes to wait for"}
	}
	var out outcome
	var outMu sync.Mutex
	set := func(o outcome) {
		outMu.Lock()
		if !out.decided() {
			out = o
		}
		outMu.Unlock()
	}
	stopAll := func() {
		var wg sync.WaitGroup
		for _, h := range j.handles {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_ = s.Executor.Stop(context.Background(), h, s.StopGrace)
			}()
		}
		wg.Wait()
	}
	waitCtx, cancelWait := context.WithCancel(context.Background())
	defer cancelWait()
	done := make(chan struct{})
	var wg sync.WaitGroup
	for i, h := range j.handles {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := s.Executor.Wait(waitCtx, h)
			if err != nil {
				if waitCtx.Err() != nil {
					return
				}
				st = executor.Status{State: executor.StateLost, Reason: executor.ReasonNotFound, Message: err.Error()}
			}
			statuses[i] = st
			if st.State == executor.StateLost || st.ExitCode != 0 {
				set(outcome{failed: true})
				go stopAll()
			}
		}()
	}
	go func() { wg.Wait(); close(done) }()
	var timeout <-chan time.Time
	if j.TimeoutSeconds > 0 {
		started := s.Now()
		if j.StartedAt != nil {
			started = *j.StartedAt
		}
		left := time.Until(started.Add(time.Duration(j.TimeoutSeconds) * time.Second))
		timeout = time.After(max(left, 0))
	}
	select {
	case <-done:
	case <-timeout:
		set(outcome{timedOut: true, reason: fmt.Sprintf("timed out after %s (limits.timeout)", time.Duration(j.TimeoutSeconds)*time.Second)})
		stopAll()
		<-done
	case <-ctx.Done():
		if s.baseDone() {
			// The control plane is stopping; the processes go on and
			// the next one adopts them.
			cancelWait()
			<-done
			return nil, outcome{}
		}
		set(outcome{canceled: true, reason: "canceled"})
		stopAll()
		<-done
	}
	return statuses, out
}
