package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/plinth-dev/plinth/internal/client"
	"github.com/plinth-dev/plinth/internal/jobs"
	"github.com/plinth-dev/plinth/internal/store/storetest"
)

// startServer runs `plinth server` with args and returns it and its URL.
func startServer(t *testing.T, env []string, args ...string) (*exec.Cmd, string) {
	t.Helper()
	return runPlinth(t, env, 60*time.Second, append([]string{"server", "--addr", "127.0.0.1:0", "--log-level", "warn"}, args...)...)
}

// role is what a server's /readyz says it is: "leader" or "standby".
func role(url string) string {
	res, err := http.Get(url + "/readyz")
	if err != nil {
		return "down"
	}
	defer res.Body.Close()
	var body struct {
		Checks map[string]string `json:"checks"`
	}
	json.NewDecoder(res.Body).Decode(&body)
	return body.Checks["role"]
}

// TestLeaderFailover runs two `plinth server` replicas on one PostgreSQL
// and one artifact store, queues more jobs than can run at once, and kills
// the leader with SIGKILL: the standby takes over within seconds, and every
// job runs to completion exactly once.
func TestLeaderFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills real servers")
	}
	dbURL := storetest.PostgresURL(t)
	shared := t.TempDir()
	key := make([]byte, 32)
	for i := range key {
		key[i] = byte(i * 7)
	}
	env := []string{"PLINTH_BOOTSTRAP_KEY=" + crashKey, "PLINTH_SECRET_KEY=" + base64.StdEncoding.EncodeToString(key),
		"PLINTH_CONFIG_DIR=" + filepath.Join(shared, "cfg")}
	args := func(name string) []string {
		return []string{"--database", dbURL, "--data-dir", filepath.Join(shared, name), "--artifacts", "file://" + filepath.Join(shared, "artifacts"), "--work-dir", filepath.Join(shared, "work")}
	}
	a, urlA := startServer(t, env, args("a")...)
	deadline := time.Now().Add(20 * time.Second)
	for role(urlA) != "leader" {
		if time.Now().After(deadline) {
			t.Fatalf("the first server never led: %s", role(urlA))
		}
		time.Sleep(100 * time.Millisecond)
	}
	b, urlB := startServer(t, env, args("b")...)
	time.Sleep(1500 * time.Millisecond)
	if r := role(urlB); r != "standby" {
		t.Fatalf("second server is %q while the first leads", r)
	}

	// Jobs submitted through the standby: more than this machine's small
	// CPU SKU can run at once, so some queue. Each records its start in a
	// shared file.
	ctx := context.Background()
	c := client.New(urlB, crashKey)
	starts := filepath.Join(shared, "starts")
	var ids []string
	for i := range 6 {
		p := filepath.Join(shared, fmt.Sprintf("job%d.yml", i))
		os.WriteFile(p, []byte(fmt.Sprintf("name: j%d\nresources:\n  instance_type: local-cpu-small\ncommand: echo j%d >> %s; sleep 2; echo done\n", i, i, starts)), 0o644)
		j, err := c.SubmitJob(ctx, "default", p, client.SubmitOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, j.ID)
	}
	// Kill the leader once the first jobs run and others wait.
	deadline = time.Now().Add(30 * time.Second)
	for {
		data, _ := os.ReadFile(starts)
		if n := strings.Count(string(data), "\n"); n >= 1 && n < 6 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no job started, or all at once: %q", data)
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	if err := a.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	a.Wait()
	killed := time.Now()
	for role(urlB) != "leader" {
		if time.Since(killed) > 15*time.Second {
			t.Fatalf("the standby did not take over within 15s: %s", role(urlB))
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("the standby led %v after the leader was killed", time.Since(killed).Round(time.Millisecond))

	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	for _, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			j, err := c.WaitJob(wctx, "default", id)
			if err != nil || j.Status != jobs.StatusCompleted || j.Attempt != 1 {
				t.Errorf("job %s: %v %s attempt %d: %s", id, err, j.Status, j.Attempt, j.Reason)
			}
		}()
	}
	wg.Wait()
	data, _ := os.ReadFile(starts)
	for i := range 6 {
		if n := strings.Count(string(data), fmt.Sprintf("j%d\n", i)); n != 1 {
			t.Errorf("job j%d started %d times: %q", i, n, data)
		}
	}
	b.Process.Signal(syscall.SIGTERM)
	b.Wait()
}
