// Package executortest is the conformance suite every executor backend must
// pass: the scheduler relies on exactly these behaviours, whatever runs the
// work. A backend's tests call Run with a constructor.
package executortest

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/plinth-dev/plinth/internal/executor"
	"github.com/plinth-dev/plinth/internal/fault"
)

// ProcessLister is implemented by backends that can list the live processes
// of a work item. The suite uses it to prove that Stop leaves no survivor;
// backends without it are trusted on that point.
type ProcessLister interface {
	Processes(ctx context.Context, h executor.Handle) ([]int, error)
}

// SecretEnv is set in the test process while the suite runs; no job may
// see it.
const SecretEnv = "PLINTH_SECRET_TEST"

// timeout bounds every single operation of the suite.
const timeout = 30 * time.Second

// Run runs the suite. newExec returns a fresh executor for each subtest;
// subtests run in parallel.
func Run(t *testing.T, newExec func(t *testing.T) executor.Executor) {
	// Set directly (not t.Setenv) so the subtests may run in parallel.
	old, had := os.LookupEnv(SecretEnv)
	os.Setenv(SecretEnv, "leaked-server-secret")
	t.Cleanup(func() {
		if had {
			os.Setenv(SecretEnv, old)
		} else {
			os.Unsetenv(SecretEnv)
		}
	})

	tests := []struct {
		name string
		fn   func(t *testing.T, e executor.Executor)
	}{
		{"ExitZero", testExitZero},
		{"ExitNonZero", testExitNonZero},
		{"KilledBySignal", testKilledBySignal},
		{"EnvIsolation", testEnvIsolation},
		{"WorkingDir", testWorkingDir},
		{"Logs", testLogs},
		{"LogsFollow", testLogsFollow},
		{"StopTreeIgnoringTERM", testStopTree},
		{"StopGraceful", testStopGraceful},
		{"StopFinishedIsIdempotent", testStopFinished},
		{"CommandNotFound", testCommandNotFound},
		{"InvalidSpec", testInvalidSpec},
		{"Ports", testPorts},
		{"Usage", testUsage},
		{"ConcurrentStarts", testConcurrentStarts},
		{"InspectAndWaitCancel", testInspectAndWaitCancel},
		{"FindAndRemove", testFindAndRemove},
		{"Capabilities", testCapabilities},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, newExec(t))
		})
	}
}

// ID returns a work ID unique across runs (backends may share a cluster).
func ID(t *testing.T) string {
	var b [4]byte
	rand.Read(b[:])
	name := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			return r
		}
		if r >= 'A' && r <= 'Z' {
			return r - 'A' + 'a'
		}
		return '-'
	}, t.Name())
	if len(name) > 40 {
		name = name[len(name)-40:]
	}
	return "t" + hex.EncodeToString(b[:]) + "-" + strings.Trim(name, "-")
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	return ctx
}

// Start starts spec (giving it an ID if it has none) and registers a
// cleanup that stops it.
func Start(t *testing.T, e executor.Executor, spec executor.Spec) executor.Handle {
	t.Helper()
	if spec.ID == "" {
		spec.ID = ID(t)
	}
	h, err := e.Start(ctxT(t), spec)
	if err != nil {
		t.Fatalf("Start(%+v): %v", spec, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		e.Stop(ctx, h, 0)
	})
	return h
}

// Wait waits for h and fails the test if that fails or takes over 30 s.
func Wait(t *testing.T, e executor.Executor, h executor.Handle) executor.Status {
	t.Helper()
	st, err := e.Wait(ctxT(t), h)
	if err != nil {
		t.Fatalf("Wait(%s): %v", h.ID, err)
	}
	if !st.Done() {
		t.Fatalf("Wait(%s) returned a status that is not final: %+v", h.ID, st)
	}
	return st
}

// Output returns the whole log of h.
func Output(t *testing.T, e executor.Executor, h executor.Handle, stream executor.Stream) string {
	t.Helper()
	r, err := e.Logs(ctxT(t), h, executor.LogOptions{Stream: stream})
	if err != nil {
		t.Fatalf("Logs(%s, %q): %v", h.ID, stream, err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("reading logs of %s: %v", h.ID, err)
	}
	return string(b)
}

// RunShell runs a shell command line to completion.
func RunShell(t *testing.T, e executor.Executor, line string) (executor.Handle, executor.Status, string) {
	t.Helper()
	h := Start(t, e, executor.Spec{Shell: line})
	st := Wait(t, e, h)
	return h, st, Output(t, e, h, executor.StreamCombined)
}

// AwaitLine follows h's log until a line equal to want appears.
func AwaitLine(t *testing.T, e executor.Executor, h executor.Handle, want string) {
	t.Helper()
	r, err := e.Logs(ctxT(t), h, executor.LogOptions{Follow: true})
	if err != nil {
		t.Fatalf("Logs(%s): %v", h.ID, err)
	}
	defer r.Close()
	sc := bufio.NewScanner(r)
	var seen []string
	for sc.Scan() {
		if sc.Text() == want {
			return
		}
		seen = append(seen, sc.Text())
	}
	t.Fatalf("log of %s ended (%v) without line %q; saw %q", h.ID, sc.Err(), want, seen)
}

// NoSurvivors fails when the backend lists live processes of h.
func NoSurvivors(t *testing.T, e executor.Executor, h executor.Handle) {
	t.Helper()
	pl, ok := e.(ProcessLister)
	if !ok {
		return
	}
	ps, err := pl.Processes(ctxT(t), h)
	if err != nil {
		t.Fatalf("Processes(%s): %v", h.ID, err)
	}
	if len(ps) > 0 {
		t.Fatalf("work %s: processes survive: %v", h.ID, ps)
	}
}

func testExitZero(t *testing.T, e executor.Executor) {
	h := Start(t, e, executor.Spec{Command: []string{"true"}})
	if h.ID == "" || h.Backend == "" {
		t.Errorf("handle lacks ID or Backend: %+v", h)
	}
	st := Wait(t, e, h)
	if st.State != executor.StateExited || st.ExitCode != 0 || st.Signal != "" || st.Reason != "" {
		t.Errorf("status = %+v, want exited 0 without reason", st)
	}
	if st.StartedAt.IsZero() || st.EndedAt.Before(st.StartedAt) {
		t.Errorf("times: started %v ended %v", st.StartedAt, st.EndedAt)
	}
	// Inspect and Wait agree afterwards.
	st2, err := e.Inspect(ctxT(t), h)
	if err != nil || st2.State != st.State || st2.ExitCode != st.ExitCode {
		t.Errorf("Inspect after Wait = %+v, %v; want %+v", st2, err, st)
	}
}

func testExitNonZero(t *testing.T, e executor.Executor) {
	_, st, _ := RunShell(t, e, "exit 3")
	if st.State != executor.StateExited || st.ExitCode != 3 {
		t.Errorf("status = %+v, want exited 3", st)
	}
	h := Start(t, e, executor.Spec{Command: []string{"sh", "-c", "exit $0", "42"}})
	if st := Wait(t, e, h); st.ExitCode != 42 {
		t.Errorf("argv passing: exit code %d, want 42", st.ExitCode)
	}
}

func testKilledBySignal(t *testing.T, e executor.Executor) {
	_, st, _ := RunShell(t, e, "kill -KILL $$")
	if st.State != executor.StateExited || st.Signal != "SIGKILL" || st.ExitCode != 137 || st.Reason != executor.ReasonSignaled {
		t.Errorf("status = %+v, want SIGKILL, 137, %s", st, executor.ReasonSignaled)
	}
}

func testEnvIsolation(t *testing.T, e executor.Executor) {
	h := Start(t, e, executor.Spec{Command: []string{"env"}, Env: map[string]string{"FOO": "bar baz", "EMPTY": ""}})
	Wait(t, e, h)
	env := map[string]string{}
	for _, l := range strings.Split(Output(t, e, h, executor.StreamCombined), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			env[k] = v
		}
	}
	if _, ok := env[SecretEnv]; ok {
		t.Errorf("the server's %s leaked into the job", SecretEnv)
	}
	for k, v := range map[string]string{"FOO": "bar baz", "EMPTY": "", "CUDA_VISIBLE_DEVICES": ""} {
		if got, ok := env[k]; !ok || got != v {
			t.Errorf("job env %s = %q (set %v), want %q", k, got, ok, v)
		}
	}
	for _, k := range []string{"PATH", "HOME", "LANG"} {
		if env[k] == "" {
			t.Errorf("job env lacks a default %s", k)
		}
	}
	// A PATH of the spec's own is used for the lookup and given as is.
	h = Start(t, e, executor.Spec{Command: []string{"env"}, Env: map[string]string{"PATH": "/usr/bin:/bin"}})
	Wait(t, e, h)
	if out := Output(t, e, h, executor.StreamCombined); !strings.Contains(out, "PATH=/usr/bin:/bin\n") {
		t.Errorf("PATH not the spec's: %q", out)
	}
}

func testWorkingDir(t *testing.T, e executor.Executor) {
	h := Start(t, e, executor.Spec{Shell: "pwd", Dir: "/"})
	Wait(t, e, h)
	if out := Output(t, e, h, ""); out != "/\n" {
		t.Errorf("pwd in Dir=/ printed %q", out)
	}
	// The default is a fresh, empty, writable directory.
	_, st, out := RunShell(t, e, `test -z "$(ls -A)" && touch made && test -f made && pwd`)
	if st.ExitCode != 0 || !strings.HasPrefix(out, "/") {
		t.Errorf("default dir: exit %d, output %q", st.ExitCode, out)
	}
}

func testLogs(t *testing.T, e executor.Executor) {
	h, _, out := RunShell(t, e, "echo out1; echo err1 >&2; echo out2")
	for _, want := range []string{"out1\n", "err1\n", "out2\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("combined log %q lacks %q", out, want)
		}
	}
	r, err := e.Logs(ctxT(t), h, executor.LogOptions{Stream: executor.StreamStdout})
	if fault.Is(err, fault.FailedPrecondition) {
		return // the backend keeps only the combined log
	}
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	if got := Output(t, e, h, executor.StreamStdout); got != "out1\nout2\n" {
		t.Errorf("stdout = %q", got)
	}
	if got := Output(t, e, h, executor.StreamStderr); got != "err1\n" {
		t.Errorf("stderr = %q", got)
	}
}

func testLogsFollow(t *testing.T, e executor.Executor) {
	h := Start(t, e, executor.Spec{Shell: "echo a; sleep 0.3; echo b; sleep 0.2; echo c >&2"})
	r, err := e.Logs(ctxT(t), h, executor.LogOptions{Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, err := io.ReadAll(r) // returns at the end of the work
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != "a\nb\nc\n" {
		t.Errorf("followed %q, want a b c", b)
	}
	st, err := e.Inspect(ctxT(t), h)
	if err != nil || !st.Done() {
		t.Errorf("after the followed log ended: %+v, %v", st, err)
	}
	// A follower cut off by its context says so.
	h = Start(t, e, executor.Spec{Shell: "echo x; sleep 10"})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	r, err = e.Logs(ctx, h, executor.LogOptions{Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, err = io.ReadAll(r)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("follow past ctx: %q, %v; want DeadlineExceeded", b, err)
	}
}

func testStopTree(t *testing.T, e executor.Executor) {
	// sh ignores TERM, and so do its children (an ignored signal stays
	// ignored across fork and exec); the grandchildren are their own
	// processes. Only SIGKILL after grace can end this.
	h := Start(t, e, executor.Spec{Shell: `trap '' TERM; sleep 1000 & sleep 1000 & (sleep 1000; true) & echo ready; wait`})
	AwaitLine(t, e, h, "ready")
	if st, err := e.Inspect(ctxT(t), h); err != nil || st.State != executor.StateRunning {
		t.Fatalf("before Stop: %+v, %v", st, err)
	}
	if err := e.Stop(ctxT(t), h, 200*time.Millisecond); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	st, err := e.Inspect(ctxT(t), h)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != executor.StateExited || st.Reason != executor.ReasonStopped || st.Signal != "SIGKILL" {
		t.Errorf("after Stop: %+v, want exited, %s, SIGKILL", st, executor.ReasonStopped)
	}
	NoSurvivors(t, e, h)
	if st2 := Wait(t, e, h); st2.State != st.State || st2.Signal != st.Signal {
		t.Errorf("Wait after Stop = %+v, want %+v", st2, st)
	}
}

func testStopGraceful(t *testing.T, e executor.Executor) {
	h := Start(t, e, executor.Spec{Shell: `trap 'echo bye; exit 0' TERM; echo ready; while :; do sleep 0.05; done`})
	AwaitLine(t, e, h, "ready")
	if err := e.Stop(ctxT(t), h, 20*time.Second); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	st, err := e.Inspect(ctxT(t), h)
	if err != nil || st.State != executor.StateExited || st.ExitCode != 0 || st.Reason != executor.ReasonStopped {
		t.Errorf("after a graceful Stop: %+v, %v; want exited 0, %s", st, err, executor.ReasonStopped)
	}
	if out := Output(t, e, h, ""); !strings.Contains(out, "bye\n") {
		t.Errorf("the TERM handler did not run: %q", out)
	}
	NoSurvivors(t, e, h)
}

func testStopFinished(t *testing.T, e executor.Executor) {
	h := Start(t, e, executor.Spec{Shell: "exit 5"})
	Wait(t, e, h)
	for i := range 2 {
		if err := e.Stop(ctxT(t), h, time.Second); err != nil {
			t.Errorf("Stop #%d of finished work: %v", i+1, err)
		}
	}
	if st := Wait(t, e, h); st.ExitCode != 5 || st.Reason != "" {
		t.Errorf("Stop changed a finished status: %+v", st)
	}
	// Two Stops of running work, concurrently.
	h = Start(t, e, executor.Spec{Command: []string{"sleep", "1000"}})
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range errs {
		wg.Go(func() { errs[i] = e.Stop(ctxT(t), h, time.Second) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Errorf("concurrent Stops: %v", err)
	}
	NoSurvivors(t, e, h)
}

func testCommandNotFound(t *testing.T, e executor.Executor) {
	const name = "plinth-no-such-command-xyz"
	_, err := e.Start(ctxT(t), executor.Spec{ID: ID(t), Command: []string{name, "arg"}})
	if err == nil {
		t.Fatal("Start of a missing command succeeded")
	}
	if !fault.Is(err, fault.Invalid) || !strings.Contains(err.Error(), name) || !strings.Contains(err.Error(), "not found") {
		t.Errorf("error = %v (kind %s); want invalid_argument naming %q, saying not found", err, fault.KindOf(err), name)
	}
	// The ID is free again: a failed Start leaves nothing behind.
	id := ID(t)
	if _, err := e.Start(ctxT(t), executor.Spec{ID: id, Command: []string{name}}); err == nil {
		t.Fatal("want an error")
	}
	h := Start(t, e, executor.Spec{ID: id, Command: []string{"true"}})
	if st := Wait(t, e, h); st.ExitCode != 0 {
		t.Errorf("retry with the ID of a failed start: %+v", st)
	}
}

func testInvalidSpec(t *testing.T, e executor.Executor) {
	for name, spec := range map[string]executor.Spec{
		"neither":  {ID: ID(t)},
		"both":     {ID: ID(t), Command: []string{"true"}, Shell: "true"},
		"bad id":   {ID: "../escape", Command: []string{"true"}},
		"no id":    {Command: []string{"true"}},
		"ports":    {ID: ID(t), Command: []string{"true"}, Ports: -1},
		"memory":   {ID: ID(t), Command: []string{"true"}, Resources: executor.Resources{MemoryBytes: -1}},
		"env name": {ID: ID(t), Command: []string{"true"}, Env: map[string]string{"A=B": "c"}},
	} {
		if _, err := e.Start(ctxT(t), spec); !fault.Is(err, fault.Invalid) {
			t.Errorf("%s: Start error = %v, want invalid_argument", name, err)
		}
	}
	h := Start(t, e, executor.Spec{Command: []string{"sleep", "1000"}})
	if _, err := e.Start(ctxT(t), executor.Spec{ID: h.ID, Command: []string{"true"}}); !fault.Is(err, fault.AlreadyExists) {
		t.Errorf("second Start with ID %s: %v, want already_exists", h.ID, err)
	}
}

func testPorts(t *testing.T, e executor.Executor) {
	h := Start(t, e, executor.Spec{Shell: `echo "$PORT $PORT_1 $PORT_2"`, Ports: 3})
	if len(h.Ports) != 3 {
		t.Fatalf("handle ports = %v, want 3", h.Ports)
	}
	seen := map[int]bool{}
	for _, p := range h.Ports {
		if p <= 0 || p > 65535 || seen[p] {
			t.Errorf("bad or repeated port %d in %v", p, h.Ports)
		}
		seen[p] = true
	}
	Wait(t, e, h)
	want := fmt.Sprintf("%d %d %d\n", h.Ports[0], h.Ports[1], h.Ports[2])
	if out := Output(t, e, h, ""); out != want {
		t.Errorf("job saw ports %q, want %q", out, want)
	}
	h = Start(t, e, executor.Spec{Shell: `echo "[$PORT]"`})
	Wait(t, e, h)
	if len(h.Ports) != 0 || Output(t, e, h, "") != "[]\n" {
		t.Errorf("no ports asked, got %v / %q", h.Ports, Output(t, e, h, ""))
	}
}

func testUsage(t *testing.T, e executor.Executor) {
	// Busy in a grandchild, so that usage must cover the whole tree.
	_, st, _ := RunShell(t, e, `sh -c 'i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done'`)
	if st.ExitCode != 0 {
		t.Fatalf("status %+v", st)
	}
	if st.Usage.CPUSeconds <= 0 {
		t.Errorf("CPUSeconds = %v for a busy loop, want > 0", st.Usage.CPUSeconds)
	}
	if st.Usage.PeakMemoryBytes <= 0 {
		t.Errorf("PeakMemoryBytes = %v, want > 0", st.Usage.PeakMemoryBytes)
	}
}

func testConcurrentStarts(t *testing.T, e executor.Executor) {
	const n = 8
	var wg sync.WaitGroup
	hs := make([]executor.Handle, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			spec := executor.Spec{ID: ID(t) + "-" + strconv.Itoa(i), Command: []string{"sh", "-c", "echo $0; exit $0", strconv.Itoa(i)}, Ports: 1}
			hs[i], errs[i] = e.Start(ctxT(t), spec)
		})
	}
	wg.Wait()
	ports := map[int]bool{}
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("Start %d: %v", i, errs[i])
		}
		st := Wait(t, e, hs[i])
		if st.ExitCode != i {
			t.Errorf("job %d exited %d", i, st.ExitCode)
		}
		if out := Output(t, e, hs[i], ""); out != strconv.Itoa(i)+"\n" {
			t.Errorf("job %d printed %q", i, out)
		}
		if ports[hs[i].Ports[0]] {
			t.Errorf("port %d given twice", hs[i].Ports[0])
		}
		ports[hs[i].Ports[0]] = true
	}
}

func testInspectAndWaitCancel(t *testing.T, e executor.Executor) {
	h := Start(t, e, executor.Spec{Command: []string{"sleep", "1000"}})
	st, err := e.Inspect(ctxT(t), h)
	if err != nil || st.State != executor.StateRunning {
		t.Fatalf("Inspect of running work: %+v, %v", st, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := e.Wait(ctx, h); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Wait past its context: %v, want DeadlineExceeded", err)
	}
	if st, err := e.Inspect(ctxT(t), h); err != nil || st.State != executor.StateRunning {
		t.Errorf("a cancelled Wait changed the work: %+v, %v", st, err)
	}
	if err := e.Stop(ctxT(t), h, time.Second); err != nil {
		t.Fatal(err)
	}
	if st := Wait(t, e, h); st.Reason != executor.ReasonStopped || st.Signal != "SIGTERM" {
		t.Errorf("sleep stopped: %+v, want %s by SIGTERM", st, executor.ReasonStopped)
	}
}

func testFindAndRemove(t *testing.T, e executor.Executor) {
	h := Start(t, e, executor.Spec{Command: []string{"sleep", "1000"}, Ports: 1})
	found, err := e.Find(ctxT(t), h.ID)
	if err != nil {
		t.Fatalf("Find(%s): %v", h.ID, err)
	}
	if found.ID != h.ID || found.PID != h.PID || found.StartTime != h.StartTime || !slices.Equal(found.Ports, h.Ports) {
		t.Errorf("Find = %+v, want %+v", found, h)
	}
	if err := e.Remove(ctxT(t), h); !fault.Is(err, fault.FailedPrecondition) {
		t.Errorf("Remove of running work: %v, want failed_precondition", err)
	}
	if err := e.Stop(ctxT(t), h, time.Second); err != nil {
		t.Fatal(err)
	}
	if err := e.Remove(ctxT(t), h); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if _, err := e.Find(ctxT(t), h.ID); !fault.Is(err, fault.NotFound) {
		t.Errorf("Find after Remove: %v, want not_found", err)
	}
	st, err := e.Inspect(ctxT(t), h)
	if err != nil || st.State != executor.StateLost || st.Reason != executor.ReasonNotFound {
		t.Errorf("Inspect after Remove: %+v, %v; want lost, %s", st, err, executor.ReasonNotFound)
	}
	if _, err := e.Find(ctxT(t), "never-started-"+ID(t)); !fault.Is(err, fault.NotFound) {
		t.Errorf("Find of an unknown ID: %v, want not_found", err)
	}
}

func testCapabilities(t *testing.T, e executor.Executor) {
	c := e.Capabilities()
	if c.Backend == "" || c.CPUs <= 0 || c.MemoryBytes <= 0 {
		t.Errorf("capabilities %+v: want a backend, CPUs and memory", c)
	}
	if !c.CgroupLimits && c.CgroupReason == "" {
		t.Errorf("limits not enforced and no reason given")
	}
}
