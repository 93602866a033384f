// Command jobs measures how fast Plinth turns a submitted command job
// into a running process on idle compute: the time from just before the
// submit request to the moment the job's process reads the clock (it
// prints `date +%s%N` as its first act), and from submit to the job's end
// as the API reports it.
//
// Usage:
//
//	go run ./bench/jobs -url http://127.0.0.1:8080 -token $KEY -n 50
//
// It creates (or reuses) a cluster, bench-jobs, with one local-cpu-small
// node kept up (min_instances 1), so every job finds idle compute, and
// submits -n trivial jobs one after another. Client and server must
// share a clock: run it on the server's machine.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/plinth-dev/plinth/internal/client"
	"github.com/plinth-dev/plinth/internal/compute"
)

func main() {
	url := flag.String("url", "http://127.0.0.1:8080", "Plinth server")
	token := flag.String("token", os.Getenv("PLINTH_API_KEY"), "API key (default $PLINTH_API_KEY)")
	ws := flag.String("workspace", "default", "workspace")
	n := flag.Int("n", 30, "jobs to submit, one after another")
	size := flag.String("size", "local-cpu-small", "instance type of the cluster's node")
	flag.Parse()
	if err := run(*url, *token, *ws, *size, *n); err != nil {
		fmt.Fprintln(os.Stderr, "bench/jobs:", err)
		os.Exit(1)
	}
}

func run(url, token, ws, size string, n int) error {
	ctx := context.Background()
	c := client.New(url, token)
	one := 1
	idle := compute.Duration(600)
	if _, err := c.GetCompute(ctx, ws, "bench-jobs"); err != nil {
		if _, err := c.CreateCompute(ctx, ws, compute.TargetInput{Name: "bench-jobs", Size: size, MinInstances: &one, MaxInstances: &one, IdleTime: &idle}); err != nil {
			return fmt.Errorf("creating the bench-jobs cluster: %w", err)
		}
	}
	// Wait for the minimum node to be up: the jobs measure idle compute.
	for start := time.Now(); ; time.Sleep(100 * time.Millisecond) {
		t, err := c.GetCompute(ctx, ws, "bench-jobs")
		if err != nil {
			return err
		}
		if len(t.Nodes) == 1 && t.Nodes[0].JobID == "" {
			break
		}
		if time.Since(start) > time.Minute {
			return fmt.Errorf("bench-jobs has no idle node after a minute")
		}
	}
	dir, err := os.MkdirTemp("", "bench-jobs")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	file := filepath.Join(dir, "job.yml")
	if err := os.WriteFile(file, []byte("compute: bench-jobs\ncommand: date +%s%N\nexperiment_name: bench-jobs\n"), 0o644); err != nil {
		return err
	}
	var toRunning, toEnd []time.Duration
	for i := range n {
		t0 := time.Now()
		j, err := c.SubmitJob(ctx, ws, file, client.SubmitOptions{})
		if err != nil {
			return err
		}
		wctx, cancel := context.WithTimeout(ctx, time.Minute)
		done, err := c.WaitJob(wctx, ws, j.ID)
		cancel()
		if err != nil {
			return err
		}
		ended := time.Now()
		if done.Status != "Completed" {
			return fmt.Errorf("job %d ended %s: %s", i, done.Status, done.Reason)
		}
		var out strings.Builder
		if err := c.JobLogs(ctx, ws, j.ID, false, &out); err != nil {
			return err
		}
		ns, err := strconv.ParseInt(strings.TrimSpace(out.String()), 10, 64)
		if err != nil {
			return fmt.Errorf("job %d printed %q, not a time", i, out.String())
		}
		toRunning = append(toRunning, time.Unix(0, ns).Sub(t0))
		toEnd = append(toEnd, ended.Sub(t0))
	}
	fmt.Printf("%d jobs on idle %s compute\n", n, size)
	report("submit -> process running", toRunning)
	report("submit -> job ended (API)", toEnd)
	return nil
}

func report(what string, d []time.Duration) {
	slices.Sort(d)
	q := func(p float64) time.Duration { return d[min(len(d)-1, int(p*float64(len(d))))] }
	fmt.Printf("%-28s p50 %6.1f ms   p90 %6.1f ms   max %6.1f ms\n", what, ms(q(0.5)), ms(q(0.9)), ms(d[len(d)-1]))
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
