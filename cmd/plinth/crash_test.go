package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/plinth-dev/plinth/internal/client"
	"github.com/plinth-dev/plinth/internal/store"
	"github.com/plinth-dev/plinth/internal/workspace"
)

const crashKey = "crash-test-admin-key-0123456789"

// startPlinth runs `plinth up` as a real process and returns it with the
// URL it serves.
func startPlinth(t *testing.T, dataDir string) (*exec.Cmd, string) {
	t.Helper()
	env := []string{"PLINTH_BOOTSTRAP_KEY=" + crashKey, "PLINTH_CONFIG_DIR=" + filepath.Join(dataDir, "cfg")}
	return runPlinth(t, env, 30*time.Second, "up", "--addr", "127.0.0.1:0", "--data-dir", dataDir, "--log-level", "warn")
}

// runPlinth starts the plinth test binary with args and env added to this
// process's environment, and returns it with the URL it says it serves at
// (within the given time). The process is killed when the test ends.
func runPlinth(t *testing.T, env []string, within time.Duration, args ...string) (*exec.Cmd, string) {
	t.Helper()
	bin, err := exec.LookPath("plinth")
	if err != nil {
		t.Fatalf("plinth test binary not on PATH: %v", err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	urlc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if _, url, ok := strings.Cut(sc.Text(), "is serving at "); ok {
				urlc <- url
			}
		}
	}()
	select {
	case url := <-urlc:
		return cmd, url
	case <-time.After(within):
		t.Fatalf("plinth %s did not start within %s", args[0], within)
	}
	return nil, ""
}

// TestKillDuringWrites kills `plinth up` with SIGKILL while clients are
// writing, three times over, and checks after each restart that the
// database opens, passes SQLite's integrity check and `audit verify`, and
// that every workspace that exists has its audit record and vice versa
// (they commit in one transaction).
func TestKillDuringWrites(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills real processes")
	}
	dataDir := t.TempDir()
	ctx := context.Background()
	var created atomic.Int64
	for round := range 3 {
		cmd, url := startPlinth(t, dataDir)
		c := client.New(url, crashKey)
		if rep, err := c.VerifyAudit(ctx); err != nil || !rep.OK {
			t.Fatalf("round %d: audit verify after restart: %+v %v", round, rep, err)
		}

		var wg sync.WaitGroup
		stop := make(chan struct{})
		for w := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					name := fmt.Sprintf("r%d-w%d-%d", round, w, i)
					if _, err := c.CreateWorkspace(ctx, workspace.CreateInput{Name: name, Tags: map[string]string{"round": fmt.Sprint(round)}}); err == nil {
						created.Add(1)
						team := "t" + fmt.Sprint(i)
						c.UpdateWorkspace(ctx, name, workspace.UpdateInput{Team: &team})
					}
				}
			}()
		}
		time.Sleep(700 * time.Millisecond)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		cmd.Wait()
		close(stop)
		wg.Wait()
	}
	if created.Load() < 10 {
		t.Fatalf("only %d workspaces were created before the kills; the test proved nothing", created.Load())
	}

	db, err := store.Open(ctx, filepath.Join(dataDir, "plinth.db"))
	if err != nil {
		t.Fatalf("database does not open after kills: %v", err)
	}
	defer db.Close()
	var integrity string
	if err := db.Read().QueryRowContext(ctx, `PRAGMA integrity_check`).Scan(&integrity); err != nil || integrity != "ok" {
		t.Fatalf("integrity_check: %q %v", integrity, err)
	}
	var orphans int
	if err := db.Read().QueryRowContext(ctx, `SELECT
		(SELECT COUNT(*) FROM workspaces w WHERE NOT EXISTS (SELECT 1 FROM audit_log a WHERE a.action = 'workspace.create' AND a.result = 'success' AND a.resource = 'workspaces/' || w.name)) +
		(SELECT COUNT(*) FROM audit_log a WHERE a.action = 'workspace.create' AND a.result = 'success' AND NOT EXISTS (SELECT 1 FROM workspaces w WHERE a.resource = 'workspaces/' || w.name))`).Scan(&orphans); err != nil {
		t.Fatal(err)
	}
	if orphans != 0 {
		t.Fatalf("%d workspaces and audit records disagree after kills", orphans)
	}

	cmd, url := startPlinth(t, dataDir)
	rep, err := client.New(url, crashKey).VerifyAudit(ctx)
	if err != nil || !rep.OK {
		t.Fatalf("final audit verify: %+v %v", rep, err)
	}
	t.Logf("%d workspaces created across 3 kills; audit chain of %d records verifies", created.Load(), rep.Records)
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
}

// TestKillDuringLogBatch kills `plinth up` while clients send MLflow
// log-batch requests of 1,000 points each: after a restart every batch is
// there whole or not at all, and the audit chain verifies.
func TestKillDuringLogBatch(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills real processes")
	}
	dataDir := t.TempDir()
	ctx := context.Background()
	cmd, url := startPlinth(t, dataDir)
	c := client.New(url, crashKey)
	var runs []string
	for range 3 {
		var out struct {
			Run struct {
				Info struct {
					RunID string `json:"run_id"`
				} `json:"info"`
			} `json:"run"`
		}
		if err := c.Do(ctx, "POST", "/api/2.0/mlflow/runs/create", nil, map[string]any{"experiment_id": "0"}, &out); err != nil {
			t.Fatal(err)
		}
		runs = append(runs, out.Run.Info.RunID)
	}
	var sent atomic.Int64
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w, run := range runs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := 0; ; b++ {
				select {
				case <-stop:
					return
				default:
				}
				metrics := make([]map[string]any, 1000)
				for i := range metrics {
					metrics[i] = map[string]any{"key": "m", "value": float64(i), "timestamp": int64(b), "step": int64(b*1000 + i)}
				}
				if err := c.Do(ctx, "POST", "/api/2.0/mlflow/runs/log-batch", nil, map[string]any{"run_id": run, "metrics": metrics}, nil); err == nil {
					sent.Add(1)
				}
				_ = w
			}
		}()
	}
	time.Sleep(1500 * time.Millisecond)
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	close(stop)
	wg.Wait()
	if sent.Load() < 3 {
		t.Fatalf("only %d batches were acknowledged before the kill; the test proved nothing", sent.Load())
	}

	_, url = startPlinth(t, dataDir)
	c = client.New(url, crashKey)
	stored := 0
	for _, run := range runs {
		points, err := c.MetricHistory(ctx, "", run, "m")
		if err != nil {
			t.Fatal(err)
		}
		if len(points)%1000 != 0 {
			t.Fatalf("run %s holds %d points: a batch was half written", run, len(points))
		}
		stored += len(points) / 1000
	}
	if int64(stored) < sent.Load() {
		t.Fatalf("%d batches acknowledged but only %d stored", sent.Load(), stored)
	}
	if rep, err := c.VerifyAudit(ctx); err != nil || !rep.OK {
		t.Fatalf("audit verify: %+v %v", rep, err)
	}
	t.Logf("%d batches acknowledged, %d stored whole, none partial", sent.Load(), stored)
}
