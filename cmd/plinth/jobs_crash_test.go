package main

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/plinth-dev/plinth/internal/client"
	"github.com/plinth-dev/plinth/internal/jobs"
)

// jobProcesses lists the live processes whose environment names the job,
// each with its parent pid.
func jobProcesses(jobID string) map[int]int {
	out := map[int]int{}
	entries, _ := os.ReadDir("/proc")
	for _, d := range entries {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", d.Name(), "environ"))
		if err != nil || !strings.Contains(string(env), "PLINTH_JOB_ID="+jobID+"\x00") {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", d.Name(), "stat"))
		if err != nil {
			continue
		}
		fields := strings.Fields(string(stat)[strings.LastIndexByte(string(stat), ')')+1:])
		if len(fields) > 1 && fields[0] != "Z" {
			ppid, _ := strconv.Atoi(fields[1])
			out[pid] = ppid
		}
	}
	return out
}

// TestKillDuringJobs kills `plinth up` with SIGKILL while two jobs run.
// While it is down, one job's supervisor is killed too. After a restart
// the job whose process lived on is adopted and completes; the job whose
// process died is failed and retried as its policy says; nothing is left
// running.
func TestKillDuringJobs(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills real processes")
	}
	dataDir := t.TempDir()
	ctx := context.Background()
	cmd, url := startPlinth(t, dataDir)
	c := client.New(url, crashKey)
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	survivor, err := c.SubmitJob(ctx, "default", write("a.yml", "name: survivor\nresources:\n  instance_type: local-cpu-small\ncommand: echo started; sleep 4; echo finished\n"), client.SubmitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	victim, err := c.SubmitJob(ctx, "default", write("b.yml", `name: victim
resources:
  instance_type: local-cpu-small
retries:
  max: 1
  backoff_seconds: 1
command: if [ "$PLINTH_ATTEMPT" = 1 ]; then sleep 120; else echo second attempt; fi
`), client.SubmitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(jobProcesses(survivor.ID)) == 0 || len(jobProcesses(victim.ID)) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the jobs did not start within 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // past Preparing: their handles are saved
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()

	// The victim's supervisor dies while nobody watches.
	procs := jobProcesses(victim.ID)
	killed := false
	for pid, ppid := range procs {
		if _, parentIsJob := procs[ppid]; !parentIsJob && ppid > 1 {
			if err := syscall.Kill(ppid, syscall.SIGKILL); err == nil {
				killed = true
			}
			_ = pid
		}
	}
	if !killed {
		t.Fatalf("found no supervisor to kill among %v", procs)
	}

	cmd, url = startPlinth(t, dataDir)
	c = client.New(url, crashKey)
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	a, err := c.WaitJob(wctx, "default", survivor.ID)
	if err != nil || a.Status != jobs.StatusCompleted || a.Attempt != 1 {
		t.Fatalf("the survivor: %v %s attempt %d: %s", err, a.Status, a.Attempt, a.Reason)
	}
	var logs strings.Builder
	if err := c.JobLogs(ctx, "default", survivor.ID, false, &logs); err != nil || !strings.Contains(logs.String(), "started\nfinished") {
		t.Fatalf("the survivor's logs: %v %q", err, logs.String())
	}
	b, err := c.WaitJob(wctx, "default", victim.ID)
	if err != nil || b.Status != jobs.StatusCompleted || b.Attempt != 2 {
		t.Fatalf("the victim should have been retried: %v %s attempt %d: %s", err, b.Status, b.Attempt, b.Reason)
	}
	for _, id := range []string{survivor.ID, victim.ID} {
		if left := jobProcesses(id); len(left) > 0 {
			t.Fatalf("processes of job %s left: %v", id, left)
		}
	}
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
}
