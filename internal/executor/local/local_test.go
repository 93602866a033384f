//go:build linux

package local_test

import (
	"bufio"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/plinth-dev/plinth/internal/executor"
	"github.com/plinth-dev/plinth/internal/executor/executortest"
	"github.com/plinth-dev/plinth/internal/executor/local"
)

// controlPlaneEnv makes this test binary act as a control plane that starts
// one job, prints its handle and waits to be killed (TestMain).
const controlPlaneEnv = "PLINTH_TEST_LOCAL_CONTROL_PLANE"

func TestMain(m *testing.M) {
	if root := os.Getenv(controlPlaneEnv); root != "" {
		e, err := local.New(context.Background(), root, testOptions()...)
		if err != nil {
			panic(err)
		}
		h, err := e.Start(context.Background(), executor.Spec{ID: "job-1", Shell: "echo before; sleep 1; echo after; exit 7"})
		if err != nil {
			panic(err)
		}
		json.NewEncoder(os.Stdout).Encode(h)
		time.Sleep(time.Hour) // until kill -9
	}
	os.Exit(m.Run())
}

var quiet = local.WithLogger(slog.New(slog.DiscardHandler))

// cgroupParentEnv names a delegated cgroup v2 directory for the tests'
// executors, to run the whole suite with cgroup limits where the automatic
// setup declines (e.g. the test runs in a cgroup shared with other processes).
const cgroupParentEnv = "PLINTH_TEST_CGROUP_PARENT"

// testOptions are the options every executor of these tests gets.
func testOptions() []local.Option {
	opts := []local.Option{quiet}
	if p := os.Getenv(cgroupParentEnv); p != "" {
		opts = append(opts, local.WithCgroupParent(p))
	}
	return opts
}

func newLocal(t testing.TB, opts ...local.Option) *local.Executor {
	opts = append(testOptions(), opts...)
	e, err := local.New(context.Background(), t.TempDir(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestConformance(t *testing.T) {
	executortest.Run(t, func(t *testing.T) executor.Executor { return newLocal(t) })
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// tagged lists live processes whose environment carries the work's tag:
// an independent scan of /proc, not the executor's own bookkeeping.
func tagged(t *testing.T, e *local.Executor, h executor.Handle) []int {
	t.Helper()
	entry := "PLINTH_EXECUTOR_TAG=" + filepath.Join(e.Root(), h.ID)
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, d := range ents {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		env, err := os.ReadFile("/proc/" + d.Name() + "/environ")
		if err != nil || !slices.Contains(strings.Split(string(env), "\x00"), entry) {
			continue
		}
		if stat, err := os.ReadFile("/proc/" + d.Name() + "/stat"); err == nil {
			f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
			if f[0] == "Z" {
				continue // dead, not yet reaped
			}
		}
		out = append(out, pid)
	}
	return out
}

func procAlive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return f[0] != "Z"
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestStopLeavesNoTaggedProcess(t *testing.T) {
	t.Parallel()
	e := newLocal(t)
	// One grandchild escapes the process group into a session of its own.
	h := executortest.Start(t, e, executor.Spec{Shell: `trap '' TERM; sleep 1000 & setsid sleep 1000 & sleep 1000 & echo ready; wait`})
	executortest.AwaitLine(t, e, h, "ready")
	eventually(t, "four processes", func() bool { return len(tagged(t, e, h)) >= 4 })
	if err := e.Stop(ctxT(t), h, 100*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if ps := tagged(t, e, h); len(ps) > 0 {
		t.Fatalf("survivors: %v", ps)
	}
}

func TestMainExitKillsLeftovers(t *testing.T) {
	t.Parallel()
	e := newLocal(t)
	// The main process exits leaving background children: they go too,
	// before the status is recorded.
	h := executortest.Start(t, e, executor.Spec{Shell: `sleep 1000 & setsid sleep 1000 & exit 0`})
	if st := executortest.Wait(t, e, h); st.ExitCode != 0 {
		t.Fatalf("status %+v", st)
	}
	if ps := tagged(t, e, h); len(ps) > 0 {
		t.Fatalf("survivors after the main process exited: %v", ps)
	}
}

func TestStdinIsDevNull(t *testing.T) {
	t.Parallel()
	e := newLocal(t)
	// ls lists its own fds: stdin /dev/null, stdout, stderr and the
	// directory it is reading; nothing of the supervisor leaked in.
	h := executortest.Start(t, e, executor.Spec{Command: []string{"ls", "-l", "/proc/self/fd/"}})
	if st := executortest.Wait(t, e, h); st.ExitCode != 0 {
		t.Fatalf("%+v", st)
	}
	out := executortest.Output(t, e, h, "")
	var fds []string
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) >= 11 {
			fds = append(fds, f[8]+f[9]+f[10])
		}
	}
	if len(fds) != 4 || fds[0] != "0->/dev/null" {
		t.Errorf("the job's fds: %q", fds)
	}
}

func TestGPUEnv(t *testing.T) {
	t.Parallel()
	e := newLocal(t)
	h := executortest.Start(t, e, executor.Spec{
		Shell:     `echo "$CUDA_VISIBLE_DEVICES|$NVIDIA_VISIBLE_DEVICES"`,
		Env:       map[string]string{"CUDA_VISIBLE_DEVICES": "0,1,2,3"},
		Resources: executor.Resources{GPUs: []string{"1", "GPU-0a1b"}},
	})
	st := executortest.Wait(t, e, h)
	if out := executortest.Output(t, e, h, ""); out != "1,GPU-0a1b|1,GPU-0a1b\n" {
		t.Errorf("GPU env %q", out)
	}
	if st.Usage.GPUSeconds <= 0 {
		t.Errorf("GPUSeconds = %v for two GPUs", st.Usage.GPUSeconds)
	}
}

func TestReadoptAfterRestart(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	e1, err := local.New(context.Background(), root, testOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	h, err := e1.Start(ctxT(t), executor.Spec{ID: "job-1", Shell: "sleep 0.3; echo done; exit 4"})
	if err != nil {
		t.Fatal(err)
	}
	// The handle goes through JSON, as it would through the database.
	b, _ := json.Marshal(h)
	var h2 executor.Handle
	json.Unmarshal(b, &h2)
	e2, err := local.New(context.Background(), root, testOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := e2.Inspect(ctxT(t), h2); err != nil || st.State != executor.StateRunning {
		t.Fatalf("adopted Inspect = %+v, %v", st, err)
	}
	st, err := e2.Wait(ctxT(t), h2)
	if err != nil || st.State != executor.StateExited || st.ExitCode != 4 {
		t.Fatalf("adopted Wait = %+v, %v", st, err)
	}
	if out := executortest.Output(t, e2, h2, ""); out != "done\n" {
		t.Errorf("log %q", out)
	}
	// Find recovers a handle the caller never persisted.
	if f, err := e2.Find(ctxT(t), "job-1"); err != nil || f.PID != h.PID {
		t.Errorf("Find = %+v, %v", f, err)
	}
}

// The control plane is a separate process killed with SIGKILL while its job
// runs; a new executor over the same root learns the exit status.
func TestReadoptAfterControlPlaneKill9(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	cp := exec.Command(os.Args[0], "-test.run=^$")
	cp.Env = append(os.Environ(), controlPlaneEnv+"="+root)
	stdout, err := cp.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cp.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadBytes('\n')
	if err != nil {
		cp.Process.Kill()
		t.Fatalf("control plane: %v", err)
	}
	var h executor.Handle
	if err := json.Unmarshal(line, &h); err != nil {
		t.Fatalf("handle %q: %v", line, err)
	}
	cp.Process.Signal(syscall.SIGKILL)
	cp.Wait()

	e2, err := local.New(context.Background(), root, testOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	st, err := e2.Wait(ctxT(t), h)
	if err != nil || st.State != executor.StateExited || st.ExitCode != 7 {
		t.Fatalf("Wait after the control plane died = %+v, %v; want exited 7", st, err)
	}
	if out := executortest.Output(t, e2, h, ""); out != "before\nafter\n" {
		t.Errorf("log %q", out)
	}
}

func TestSupervisorKilled(t *testing.T) {
	t.Parallel()
	e := newLocal(t)
	h := executortest.Start(t, e, executor.Spec{Shell: `sleep 1000 & sleep 1000 & echo ready; wait`})
	executortest.AwaitLine(t, e, h, "ready")
	shim, _ := strconv.Atoi(h.Data["shim_pid"])
	if shim <= 0 || !procAlive(shim) {
		t.Fatalf("no live supervisor in %+v", h.Data)
	}
	if err := syscall.Kill(shim, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// PDEATHSIG takes the main process with it at once.
	eventually(t, "the job's main process to die with its supervisor", func() bool { return !procAlive(h.PID) })
	st, err := e.Inspect(ctxT(t), h)
	if err != nil || st.State != executor.StateLost || st.Reason != executor.ReasonSupervisorLost || st.Message == "" {
		t.Fatalf("Inspect = %+v, %v; want lost, %s", st, err, executor.ReasonSupervisorLost)
	}
	if ps := tagged(t, e, h); len(ps) > 0 {
		t.Fatalf("survivors: %v", ps)
	}
	// The verdict is recorded: Wait and a later executor agree.
	if st2 := executortest.Wait(t, e, h); st2.State != executor.StateLost || st2.Reason != st.Reason {
		t.Errorf("Wait = %+v", st2)
	}
}

// A handle whose pids now belong to another process (pid reuse) is gone;
// the other process is not touched.
func TestPIDReuse(t *testing.T) {
	t.Parallel()
	e := newLocal(t)
	h := executortest.Start(t, e, executor.Spec{Command: []string{"true"}})
	executortest.Wait(t, e, h)

	stranger := exec.Command("sleep", "30")
	stranger.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := stranger.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stranger.Process.Kill(); stranger.Wait() }()
	// Pretend the supervisor died without a status, and that its pid and
	// the job's pid were reused by the stranger (whose start time differs).
	dir := filepath.Join(e.Root(), h.ID)
	os.Remove(filepath.Join(dir, "status.json"))
	forged := h
	forged.PID, forged.StartTime = stranger.Process.Pid, 1
	forged.Data = map[string]string{}
	for k, v := range h.Data {
		forged.Data[k] = v
	}
	forged.Data["shim_pid"] = strconv.Itoa(stranger.Process.Pid)
	b, _ := json.Marshal(forged)
	if err := os.WriteFile(filepath.Join(dir, "handle.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := e.Inspect(ctxT(t), forged)
	if err != nil || st.State != executor.StateLost || st.Reason != executor.ReasonSupervisorLost {
		t.Fatalf("Inspect = %+v, %v; want lost", st, err)
	}
	if err := e.Stop(ctxT(t), forged, 0); err != nil {
		t.Fatal(err)
	}
	if !procAlive(stranger.Process.Pid) {
		t.Fatal("the process that reused the pid was killed")
	}
}

func pythonExe(t *testing.T) string {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not installed")
	}
	// Resolve launchers (pyenv shims) to the interpreter itself, since the
	// job does not get the test's environment.
	out, err := exec.Command(py, "-c", "import sys; print(sys.executable)").Output()
	if err != nil {
		t.Skipf("python3: %v", err)
	}
	return strings.TrimSpace(string(out))
}

func TestMemoryLimit(t *testing.T) {
	t.Parallel()
	py := pythonExe(t)
	e := newLocal(t)
	h := executortest.Start(t, e, executor.Spec{
		Command:   []string{py, "-c", "x = bytearray(500*1024*1024); import time; time.sleep(5)"},
		Resources: executor.Resources{MemoryBytes: 100 << 20},
	})
	st := executortest.Wait(t, e, h)
	if st.Reason != executor.ReasonOOMKilled || st.Signal != "SIGKILL" {
		t.Fatalf("status %+v, want %s by SIGKILL (%s)", st, executor.ReasonOOMKilled, e.Capabilities().CgroupReason)
	}
	// Near the limit at least (a cgroup's memory.peak cannot pass it).
	if st.Usage.PeakMemoryBytes <= 50<<20 {
		t.Errorf("peak memory %d, want near or over the limit", st.Usage.PeakMemoryBytes)
	}
	// Under the limit, nothing happens.
	h = executortest.Start(t, e, executor.Spec{
		Command:   []string{py, "-c", "x = bytearray(20*1024*1024)"},
		Resources: executor.Resources{MemoryBytes: 200 << 20},
	})
	if st := executortest.Wait(t, e, h); st.ExitCode != 0 || st.Reason != "" {
		t.Errorf("under the limit: %+v", st)
	}
}

func TestCapabilities(t *testing.T) {
	e := newLocal(t)
	c := e.Capabilities()
	t.Logf("capabilities: %+v", c)
	if c.Backend != local.Backend || c.CPUs < 1 || c.MemoryBytes <= 0 {
		t.Errorf("%+v", c)
	}
	if !c.CgroupLimits && c.CgroupReason == "" {
		t.Error("no reason given for unenforced limits")
	}
	off := newLocal(t, local.WithoutCgroups()).Capabilities()
	if off.CgroupLimits || !strings.Contains(off.CgroupReason, "turned off") {
		t.Errorf("WithoutCgroups: %+v", off)
	}
}

// Where cgroups work, the job runs in its own cgroup with the limits set.
func TestCgroupLimits(t *testing.T) {
	t.Parallel()
	e := newLocal(t)
	if c := e.Capabilities(); !c.CgroupLimits {
		t.Skipf("no cgroup limits here: %s", c.CgroupReason)
	}
	h := executortest.Start(t, e, executor.Spec{
		Shell:     `cg=/sys/fs/cgroup$(sed -n 's/^0:://p' /proc/self/cgroup); cat $cg/cpu.max $cg/memory.max`,
		Resources: executor.Resources{CPUs: 0.5, MemoryBytes: 100 << 20},
	})
	st := executortest.Wait(t, e, h)
	if out := executortest.Output(t, e, h, ""); st.ExitCode != 0 || out != "50000 100000\n104857600\n" {
		t.Errorf("limits seen by the job: %q (%+v)", out, st)
	}
	if cg := h.Data["cgroup"]; cg == "" {
		t.Error("handle names no cgroup")
	} else if _, err := os.Stat(cg); !os.IsNotExist(err) {
		t.Errorf("cgroup %s left behind: %v", cg, err)
	}
}

func TestBadHandles(t *testing.T) {
	t.Parallel()
	e := newLocal(t)
	for _, h := range []executor.Handle{{ID: "x", Backend: "kubernetes"}, {ID: "../x", Backend: local.Backend}} {
		if _, err := e.Inspect(ctxT(t), h); err == nil {
			t.Errorf("Inspect(%+v) accepted", h)
		}
	}
}

// BenchmarkStartToRunning measures Start: from the call to the job's
// process running (the supervisor has reported it). p50 and p95 are
// reported as extra metrics.
func BenchmarkStartToRunning(b *testing.B) {
	for _, c := range []struct {
		name string
		cmd  []string
	}{{"true", []string{"true"}}, {"sleep", []string{"sleep", "1000"}}} {
		b.Run(c.name, func(b *testing.B) {
			e := newLocal(b)
			ctx := context.Background()
			var ds []time.Duration
			for i := 0; i < b.N; i++ {
				start := time.Now()
				h, err := e.Start(ctx, executor.Spec{ID: "b" + strconv.Itoa(i), Command: c.cmd})
				if err != nil {
					b.Fatal(err)
				}
				ds = append(ds, time.Since(start))
				b.StopTimer()
				if err := e.Stop(ctx, h, 0); err != nil {
					b.Fatal(err)
				}
				e.Remove(ctx, h)
				b.StartTimer()
			}
			sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
			b.ReportMetric(float64(ds[len(ds)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(ds[len(ds)*95/100].Microseconds())/1000, "p95-ms")
		})
	}
}
