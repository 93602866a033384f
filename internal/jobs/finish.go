package jobs

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/plinth-dev/plinth/internal/executor"
	"github.com/plinth-dev/plinth/internal/registry"
	"github.com/plinth-dev/plinth/internal/store"
	"github.com/plinth-dev/plinth/internal/tracking"
)

// tailLines is how much of a failed job's output its reason quotes.
const tailLines = 5

// finish ends an attempt: logs and outputs go into the run's artifacts,
// outputs with a name become data versions, usage and cost are added up,
// and the job ends (Completed, Failed, Canceled) or is queued again when
// it failed with retries left.
func (s *Service) finish(ctx context.Context, j Job, statuses []executor.Status, out outcome) {
	if _, err := s.DB.Exec(ctx, `UPDATE jobs SET status = ? WHERE id = ?`, StatusFinalizing, j.ID); err != nil {
		s.Log.Error("finalizing job", "job", j.Name, "error", err)
	}
	_, tsc := s.scopes(j)
	run, err := s.Tracking.GetRun(ctx, tsc, j.ID)
	artifactRoot := ""
	if err == nil {
		artifactRoot = strings.TrimPrefix(strings.TrimRight(run.Info.ArtifactURI, "/"), "mlflow-artifacts:/")
	}
	var tail string
	for i, h := range j.handles {
		logs, err := s.Executor.Logs(ctx, h, executor.LogOptions{})
		if err != nil {
			continue
		}
		data, _ := io.ReadAll(io.LimitReader(logs, 256<<20))
		logs.Close()
		name := "user_logs/std_log.txt"
		if i > 0 {
			name = fmt.Sprintf("user_logs/std_log_%d.txt", i)
		}
		if artifactRoot != "" {
			if _, err := s.Artifacts.Put(ctx, artifactRoot+"/"+name, bytes.NewReader(data)); err != nil {
				s.Log.Warn("keeping job logs", "job", j.Name, "error", err)
			}
		}
		if i == 0 || tail == "" {
			tail = lastLines(string(data), tailLines)
		}
	}

	// The processes' own verdict.
	succeeded := !out.decided()
	exitCode := 0
	var usage Usage
	var ended time.Time
	for _, st := range statuses {
		usage.CPUSeconds += st.Usage.CPUSeconds
		usage.GPUSeconds += st.Usage.GPUSeconds
		usage.PeakMemoryBytes = max(usage.PeakMemoryBytes, st.Usage.PeakMemoryBytes)
		if st.EndedAt.After(ended) {
			ended = st.EndedAt
		}
		if st.State == executor.StateLost || st.ExitCode != 0 {
			succeeded = false
			if exitCode == 0 {
				exitCode = st.ExitCode
			}
			if out.reason == "" {
				out.reason = describeExit(st)
			}
		}
	}
	if len(statuses) == 0 && !out.decided() {
		succeeded = false
	}
	if succeeded && artifactRoot != "" {
		if err := s.keepOutputs(ctx, j, tsc, artifactRoot); err != nil {
			succeeded = false
			out.reason = "keeping outputs: " + errorMessage(err)
		}
	}
	if !succeeded && out.reason == "" {
		out.reason = "failed"
	}
	if !succeeded && tail != "" && !out.canceled {
		out.reason += "; last output: " + tail
	}

	// Node time and its cost for this attempt.
	if ended.IsZero() {
		ended = s.Now()
	}
	attemptStart := ended
	for _, st := range statuses {
		if !st.StartedAt.IsZero() && st.StartedAt.Before(attemptStart) {
			attemptStart = st.StartedAt
		}
	}
	secs := max(ended.Sub(attemptStart).Seconds(), 0) * float64(len(j.Nodes))
	usage.NodeSeconds = secs
	cost := 0.0
	if sku, ok := s.Compute.SKUs().Lookup(j.InstanceType); ok {
		cost = sku.Cost(secs, strings.EqualFold(j.Spec.QueueSettings.JobTier, "spot"))
	}

	retry := !succeeded && !out.canceled && !out.timedOut && j.Attempt <= j.MaxRetries
	status := StatusCompleted
	switch {
	case out.canceled:
		status = StatusCanceled
	case retry:
		status = StatusQueued
	case !succeeded:
		status = StatusFailed
	}
	now := s.Now()
	notBefore := int64(0)
	reason := out.reason
	if retry {
		backoff := time.Duration(j.Spec.Retries.BackoffSeconds) * time.Second
		if backoff == 0 {
			backoff = s.RetryBackoff
		}
		backoff <<= min(j.Attempt-1, 10)
		notBefore = now.Add(backoff).UnixMilli()
		reason = fmt.Sprintf("attempt %d of %d failed (%s); retrying after %s", j.Attempt, j.MaxRetries+1, clipTo(out.reason, 300), backoff)
	}
	if succeeded {
		reason = ""
	}
	if status != StatusQueued {
		// The run is complete before the job says it ended, so whoever
		// waits for the job finds the run's status and usage in place.
		final := j
		final.Status, final.Reason, final.Attempt = status, reason, j.Attempt
		final.Usage.CPUSeconds += usage.CPUSeconds
		final.Usage.GPUSeconds += usage.GPUSeconds
		final.Usage.NodeSeconds += usage.NodeSeconds
		final.Usage.PeakMemoryBytes = max(final.Usage.PeakMemoryBytes, usage.PeakMemoryBytes)
		final.Cost += cost
		s.recordOnRun(ctx, tsc, final)
		s.endRun(ctx, j, map[string]string{StatusCompleted: "FINISHED", StatusFailed: "FAILED", StatusCanceled: "KILLED"}[status])
	}
	if err := s.Tokens.RevokeRunTokens(ctx, j.ID); err != nil {
		s.Log.Warn("revoking a job's run token", "job", j.Name, "error", err)
	}
	err = s.DB.Tx(ctx, func(tx store.Querier) error {
		var endedAt any
		if status != StatusQueued {
			endedAt = now.UnixMilli()
		}
		if _, err := tx.ExecContext(ctx, `UPDATE jobs SET status = ?, reason = ?, exit_code = ?, not_before = ?, handles = '', nodes = '',
			cpu_seconds = cpu_seconds + ?, peak_memory = CASE WHEN peak_memory > ? THEN peak_memory ELSE ? END, gpu_seconds = gpu_seconds + ?,
			node_seconds = node_seconds + ?, cost = cost + ?, ended_at = ? WHERE id = ?`,
			status, clipTo(reason, 2000), exitCode, notBefore, usage.CPUSeconds, usage.PeakMemoryBytes, usage.PeakMemoryBytes, usage.GPUSeconds,
			usage.NodeSeconds, cost, endedAt, j.ID); err != nil {
			return err
		}
		return s.Compute.ReleaseJobNodes(ctx, tx, j.ID)
	})
	if err != nil {
		s.Log.Error("ending job attempt", "job", j.Name, "error", err)
		return
	}
	for _, h := range j.handles {
		_ = s.Executor.Remove(ctx, h)
	}
	_ = os.RemoveAll(s.jobDir(j))
	s.Log.Info("job attempt ended", "job", j.Name, "attempt", j.Attempt, "status", status, "reason", clipTo(reason, 200))
	s.kick()
}

// describeExit says how a process ended.
func describeExit(st executor.Status) string {
	switch {
	case st.State == executor.StateLost:
		return "its process was lost (" + strings.TrimSpace(st.Reason+" "+st.Message) + ")"
	case st.Reason == executor.ReasonOOMKilled:
		return "killed for exceeding its memory limit (OOMKilled)"
	case st.ExitCode == 127:
		return "exit code 127: the command was not found"
	case st.ExitCode == 126:
		return "exit code 126: the command is not executable"
	case st.Signal != "":
		return fmt.Sprintf("killed by %s (exit code %d)", st.Signal, st.ExitCode)
	}
	return "exit code " + strconv.Itoa(st.ExitCode)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return clipTo(strings.Join(lines, " | "), 1000)
}

// keepOutputs uploads the outputs into the run's artifacts under
// outputs/<name> and registers the named ones as data versions.
func (s *Service) keepOutputs(ctx context.Context, j Job, sc tracking.Scope, artifactRoot string) error {
	dir := filepath.Join(s.jobDir(j), "outputs")
	// On a remote executor the processes uploaded their outputs already.
	remote := s.Executor.Capabilities().Remote
	for name, o := range j.Spec.Outputs {
		local := filepath.Join(dir, name)
		err := filepath.WalkDir(local, func(p string, d fs.DirEntry, err error) error {
			if remote {
				return fs.SkipAll
			}
			if err != nil {
				return err
			}
			if d.IsDir() || !d.Type().IsRegular() {
				return nil
			}
			rel, _ := filepath.Rel(dir, p)
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = s.Artifacts.Put(ctx, artifactRoot+"/outputs/"+filepath.ToSlash(rel), f)
			return err
		})
		if remote && o.Type == TypeURIFile {
			if r, _, oerr := s.Artifacts.Open(ctx, artifactRoot+"/outputs/"+name); oerr == nil {
				r.Close()
			} else {
				err = os.ErrNotExist
			}
		}
		if os.IsNotExist(err) {
			if o.Type == TypeURIFile {
				return fmt.Errorf("output %s: the job wrote no file at ${{outputs.%s}}", name, name)
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("output %s: %w", name, err)
		}
		if o.Name == "" {
			continue
		}
		typ := registry.TypeFolder
		if o.Type == TypeURIFile {
			typ = registry.TypeFile
		}
		ds := registry.DataScope{Scope: sc}
		if err := s.workspaceRegions(ctx, &ds); err != nil {
			return err
		}
		if _, err := s.Registry.CreateDataReference(ctx, ds, o.Name, registry.DataReference{Version: o.Version, Type: typ,
			Path: "runs:/" + j.ID + "/outputs/" + name, Description: firstNonEmpty(o.Description, "output "+name+" of job "+j.Name)}); err != nil {
			if fault := errorMessage(err); strings.Contains(fault, "no artifacts") {
				continue // an empty folder: nothing to register
			}
			return fmt.Errorf("registering output %s as data %s: %w", name, o.Name, err)
		}
	}
	return nil
}

func (s *Service) workspaceRegions(ctx context.Context, ds *registry.DataScope) error {
	w, err := s.Workspaces.ByID(ctx, ds.WorkspaceID)
	if err != nil {
		return err
	}
	ds.Region, ds.AllowedRegions = w.Region, w.AllowedRegions
	return nil
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// recordOnRun puts the job's usage and cost on its MLflow run (G7).
func (s *Service) recordOnRun(ctx context.Context, sc tracking.Scope, j Job) {
	tags := map[string]string{
		"plinth.job.name": j.Name, "plinth.job.status": j.Status, "plinth.job.compute": j.Compute, "plinth.job.instance_type": j.InstanceType,
		"plinth.job.instance_count": strconv.Itoa(j.InstanceCount), "plinth.job.attempts": strconv.Itoa(j.Attempt),
		"plinth.job.cpu_seconds": strconv.FormatFloat(j.Usage.CPUSeconds, 'f', 3, 64), "plinth.job.peak_memory_bytes": strconv.FormatInt(j.Usage.PeakMemoryBytes, 10),
		"plinth.job.gpu_seconds": strconv.FormatFloat(j.Usage.GPUSeconds, 'f', 3, 64), "plinth.job.node_seconds": strconv.FormatFloat(j.Usage.NodeSeconds, 'f', 3, 64),
		"plinth.job.cost": strconv.FormatFloat(j.Cost, 'f', 6, 64),
	}
	if j.Reason != "" {
		tags["plinth.job.reason"] = clipTo(j.Reason, 4000)
	}
	if j.CodeDigest != "" {
		tags["plinth.job.code_digest"] = j.CodeDigest
	}
	if err := s.Tracking.SetSystemTags(ctx, sc, j.ID, tags); err != nil {
		s.Log.Warn("recording job usage on its run", "job", j.Name, "error", err)
	}
}

// endRun sets the run's final status, as the MLflow client does at the
// end of a run.
func (s *Service) endRun(ctx context.Context, j Job, status string) {
	_, tsc := s.scopes(j)
	end := s.Now().UnixMilli()
	if _, err := s.Tracking.UpdateRun(ctx, tsc, j.ID, tracking.UpdateRunInput{Status: status, EndTime: &end}); err != nil {
		s.Log.Warn("ending a job's run", "job", j.Name, "error", err)
	}
}
