//go:build linux

package local

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/plinth-dev/plinth/internal/executor"
)

// The supervisor ("shim") is this same binary, re-executed with shimEnv set
// to the work's state directory. It owns the job for the job's whole life,
// independently of the control plane:
//
//   - it has its own session (Setsid), stdin is /dev/null and its output goes
//     to shim.log, so the control plane's death (kill -9, a closed terminal)
//     neither signals nor blocks it;
//   - it starts the job in a process group of its own, with
//     PR_SET_PDEATHSIG=SIGKILL so that the job's main process dies with the
//     shim, and it makes itself a child subreaper so that every orphaned
//     descendant of the job is re-parented to it rather than to init;
//   - it copies stdout and stderr into stdout.log, stderr.log and output.log;
//   - when the main process ends it kills what is left of the tree, reaps
//     everything, and only then writes status.json (exit code, signal,
//     reason, rusage) atomically and once. So "a status exists" means
//     "nothing of the job runs".
//
// PDEATHSIG reaches only the job's main process. If the shim is SIGKILLed,
// grandchildren survive it until the control plane next looks at the work
// (Inspect, Wait, Stop, Find): it then finds the shim gone without a status,
// kills the tree (by process group, by the tag in the environment, by cgroup)
// and records StateLost with ReasonSupervisorLost. With cgroups the kernel
// keeps the tree contained meanwhile.
const (
	shimEnv = "PLINTH_EXECUTOR_SHIM" // set for the shim: the state directory
	tagEnv  = "PLINTH_EXECUTOR_TAG"  // set for the job: the state directory
)

func init() { MaybeRunShim() }

// MaybeRunShim runs the supervisor and exits when this process was started
// as one; otherwise it returns at once. Package local calls it from init, so
// any binary that links the local executor (plinth, a test binary) can
// supervise its jobs without changes to main.
func MaybeRunShim() {
	dir := os.Getenv(shimEnv)
	if dir == "" {
		return
	}
	os.Exit(runShim(dir))
}

// launch is what Start hands the shim, in launch.json.
type launch struct {
	ID          string   `json:"id"`
	Path        string   `json:"path"`
	Argv        []string `json:"argv"`
	Env         []string `json:"env"`
	Dir         string   `json:"dir"`
	Image       string   `json:"image,omitempty"`
	Ports       []int    `json:"ports,omitempty"`
	CPUs        float64  `json:"cpus,omitempty"`
	MemoryBytes int64    `json:"memory_bytes,omitempty"`
	GPUs        []string `json:"gpus,omitempty"`
	// Cgroup is the job's cgroup to create; "" when cgroups are not used.
	Cgroup string `json:"cgroup,omitempty"`
	// PollMemory enforces MemoryBytes by sampling the tree's RSS (no
	// cgroup to do it).
	PollMemory bool   `json:"poll_memory,omitempty"`
	Tag        string `json:"tag"`
	Node       string `json:"node"`
}

// stopRequest is what Stop leaves for the shim before signalling it.
type stopRequest struct {
	Grace time.Duration `json:"grace"`
}

// startReport is the shim's one message to Start, on fd 3.
type startReport struct {
	OK bool `json:"ok"`
	// Invalid marks errors the spec caused (no such program, not
	// executable, bad directory).
	Invalid bool   `json:"invalid,omitempty"`
	Error   string `json:"error,omitempty"`
}

const (
	defaultGrace  = 10 * time.Second
	pollMemEvery  = 100 * time.Millisecond
	samplePeakEvy = time.Second
	reapTimeout   = 10 * time.Second
)

type shim struct {
	dir    string
	l      launch
	report *os.File
}

func runShim(dir string) int {
	// PDEATHSIG fires when the *thread* that forked the child ends; the
	// main thread (init runs on it) lives as long as the process.
	runtime.LockOSThread()
	closeOnExecAll() // fds inherited by the control plane must not leak into the job
	s := &shim{dir: dir, report: os.NewFile(3, "report")}
	if ok, err := readJSON(filepath.Join(dir, fileLaunch), &s.l); !ok || err != nil {
		s.fail(fmt.Sprintf("reading %s: ok=%v %v", fileLaunch, ok, err), 1, false)
		return 1
	}
	return s.run()
}

// closeOnExecAll marks every open descriptor from 3 up close-on-exec: the
// report pipe, and whatever the control plane itself inherited without the
// flag (Go closes only the descriptors it opened).
func closeOnExecAll() {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		syscall.CloseOnExec(3)
		return
	}
	for _, e := range ents {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd >= 3 {
			syscall.CloseOnExec(fd)
		}
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, time.Now().Format(time.RFC3339Nano)+" shim: "+format+"\n", args...)
}

// fail records a start failure and tells Start.
func (s *shim) fail(msg string, code int, invalid bool) {
	logf("start failed: %s", msg)
	now := time.Now()
	writeOnce(filepath.Join(s.dir, fileStatus), executor.Status{
		State: executor.StateExited, ExitCode: code, Reason: executor.ReasonStartFailed,
		Message: msg, StartedAt: now, EndedAt: now,
	})
	s.send(startReport{Invalid: invalid, Error: msg})
}

func (s *shim) send(r startReport) {
	if s.report == nil {
		return
	}
	b, _ := json.Marshal(r)
	s.report.Write(b) // EPIPE if Start gave up or died: nothing to do
	s.report.Close()
	s.report = nil
}

func (s *shim) run() int {
	l := s.l
	// Orphaned descendants of the job come back to us, not to init.
	const prSetChildSubreaper = 36
	if _, _, e := syscall.RawSyscall6(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0, 0, 0, 0); e != 0 {
		logf("PR_SET_CHILD_SUBREAPER: %v", e)
	}
	signal.Ignore(syscall.SIGHUP, syscall.SIGPIPE)
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)

	open := func(name string) (*os.File, error) {
		return os.OpenFile(filepath.Join(s.dir, name), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	}
	stdoutF, err1 := open(fileStdout)
	stderrF, err2 := open(fileStderr)
	outputF, err3 := open(fileOutput)
	devnull, err4 := os.Open(os.DevNull)
	outR, outW, err5 := os.Pipe()
	errR, errW, err6 := os.Pipe()
	if err := errors.Join(err1, err2, err3, err4, err5, err6); err != nil {
		s.fail("preparing output: "+err.Error(), 1, false)
		return 1
	}

	attr := &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if l.Cgroup != "" {
		if err := createJobCgroup(l.Cgroup, l.CPUs, l.MemoryBytes); err != nil {
			s.fail("creating cgroup "+l.Cgroup+": "+err.Error(), 1, false)
			return 1
		}
		cg, err := os.Open(l.Cgroup)
		if err != nil {
			s.fail("opening cgroup: "+err.Error(), 1, false)
			return 1
		}
		defer cg.Close()
		attr.UseCgroupFD, attr.CgroupFD = true, int(cg.Fd())
	}
	pa := &syscall.ProcAttr{Dir: l.Dir, Env: l.Env, Files: []uintptr{devnull.Fd(), outW.Fd(), errW.Fd()}, Sys: attr}
	pid, err := syscall.ForkExec(l.Path, l.Argv, pa)
	if err != nil && attr.UseCgroupFD && !execError(err) {
		// clone3(CLONE_INTO_CGROUP) needs Linux 5.7: start, then move.
		logf("starting into cgroup: %v; retrying without", err)
		attr.UseCgroupFD = false
		if pid, err = syscall.ForkExec(l.Path, l.Argv, pa); err == nil {
			os.WriteFile(filepath.Join(l.Cgroup, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0)
		}
	}
	outW.Close()
	errW.Close()
	devnull.Close()
	if err != nil {
		if l.Cgroup != "" {
			removeCgroup(l.Cgroup)
		}
		code := 1
		if execError(err) {
			code = 126
			if errors.Is(err, syscall.ENOENT) {
				code = 127
			}
		}
		s.fail(fmt.Sprintf("starting %q: %v", l.Path, err), code, execError(err))
		return 1
	}
	startedAt := time.Now()
	st, _ := readStat(pid)
	self, _ := readStat(os.Getpid())
	t := tree{shimPID: os.Getpid(), shimStart: self.Start, pgid: pid, pgidStart: st.Start, tag: l.Tag, cgroup: l.Cgroup}

	h := executor.Handle{
		ID: l.ID, Backend: Backend, PID: pid, StartTime: st.Start, Node: l.Node, Ports: l.Ports,
		Dir: l.Dir, LogPath: filepath.Join(s.dir, fileOutput),
		Data: map[string]string{
			dataShimPID:   strconv.Itoa(os.Getpid()),
			dataShimStart: strconv.FormatInt(self.Start, 10),
			dataBootID:    bootID(),
			dataStartedAt: startedAt.Format(time.RFC3339Nano),
		},
	}
	if l.Cgroup != "" {
		h.Data[dataCgroup] = l.Cgroup
	}
	if l.Image != "" {
		h.Data[dataImage] = l.Image
	}
	if err := writeJSON(filepath.Join(s.dir, fileHandle), h); err != nil {
		t.kill(reapTimeout)
		s.fail("writing handle: "+err.Error(), 1, false)
		return 1
	}
	s.send(startReport{OK: true})

	// Output.
	var combined sync.Mutex
	var pumps sync.WaitGroup
	pump := func(r, own *os.File) {
		defer pumps.Done()
		buf := make([]byte, 32<<10)
		for {
			n, err := r.Read(buf)
			if n > 0 {
				own.Write(buf[:n])
				combined.Lock()
				outputF.Write(buf[:n])
				combined.Unlock()
			}
			if err != nil {
				return
			}
		}
	}
	pumps.Add(2)
	go pump(outR, stdoutF)
	go pump(errR, stderrF)

	// Reap every child (the job and orphans re-parented to us) until
	// there are none.
	type reaped struct {
		pid int
		ws  syscall.WaitStatus
	}
	reaps := make(chan reaped, 16)
	go func() {
		defer close(reaps)
		for {
			var ws syscall.WaitStatus
			p, err := syscall.Wait4(-1, &ws, 0, nil)
			if err == syscall.EINTR {
				continue
			}
			if err != nil { // ECHILD: nothing of the tree is left
				return
			}
			reaps <- reaped{p, ws}
		}
	}()

	every := samplePeakEvy
	if l.PollMemory {
		every = pollMemEvery
	}
	sample := time.NewTicker(every)
	defer sample.Stop()
	var (
		mainWS     syscall.WaitStatus
		stopping   bool
		killAt     time.Time
		killTimer  = time.NewTimer(time.Hour)
		oomKilled  bool
		oomMessage string
		peak       int64
	)
	killTimer.Stop()
	reapsOpen := true
wait:
	for {
		select {
		case r, ok := <-reaps:
			if !ok {
				reapsOpen = false
				break wait // cannot happen before the main process is reaped
			}
			if r.pid == pid {
				mainWS = r.ws
				break wait
			}
		case <-sigs:
			grace := defaultGrace
			var req stopRequest
			if ok, _ := readJSON(filepath.Join(s.dir, fileStop), &req); ok {
				grace = max(req.Grace, 0)
			}
			if at := time.Now().Add(grace); killAt.IsZero() || at.Before(killAt) {
				killAt = at
				killTimer.Reset(grace)
			}
			if !stopping {
				stopping = true
				t.signal(syscall.SIGTERM)
			}
		case <-killTimer.C:
			if l.Cgroup != "" {
				cgroupKill(l.Cgroup)
			}
			t.signal(syscall.SIGKILL)
		case <-sample.C:
			if l.Cgroup != "" {
				continue // the kernel enforces and measures
			}
			var rss int64
			for _, p := range descendants(os.Getpid()) {
				rss += rssBytes(p)
			}
			peak = max(peak, rss)
			if l.PollMemory && rss > l.MemoryBytes && !oomKilled {
				oomKilled = true
				oomMessage = fmt.Sprintf("memory use %d bytes exceeded the limit of %d bytes (RSS sampled every %v)", rss, l.MemoryBytes, pollMemEvery)
				t.signal(syscall.SIGKILL)
			}
		}
	}
	endedAt := time.Now()

	// The main process is gone: kill what is left and reap it all.
	deadline := time.After(reapTimeout)
	tick := time.NewTicker(20 * time.Millisecond)
	if l.Cgroup != "" {
		cgroupKill(l.Cgroup)
	}
	t.signal(syscall.SIGKILL)
	for reapsOpen {
		select {
		case _, ok := <-reaps:
			reapsOpen = ok
		case <-tick.C:
			if l.Cgroup != "" {
				cgroupKill(l.Cgroup)
			}
			t.signal(syscall.SIGKILL)
		case <-deadline:
			logf("children still not reaped after %v", reapTimeout)
			reapsOpen = false
		}
	}
	tick.Stop()
	survivors := t.kill(time.Second) // tagged processes outside our tree, if any

	// Drain the output; a survivor holding a pipe cannot hold us up.
	drained := make(chan struct{})
	go func() { pumps.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(2 * time.Second):
		outR.Close()
		errR.Close()
		<-drained
	}
	for _, f := range []*os.File{stdoutF, stderrF, outputF} {
		f.Sync()
		f.Close()
	}

	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru)
	usage := executor.Usage{
		CPUSeconds:      tv(ru.Utime) + tv(ru.Stime),
		PeakMemoryBytes: max(peak, ru.Maxrss*1024),
	}
	if l.Cgroup != "" {
		cpu, cpeak, ooms := cgroupUsage(l.Cgroup)
		if cpu > 0 {
			usage.CPUSeconds = cpu
		}
		usage.PeakMemoryBytes = max(usage.PeakMemoryBytes, cpeak)
		if ooms > 0 && !oomKilled {
			oomKilled = true
			oomMessage = fmt.Sprintf("the kernel killed a process for exceeding memory.max (%d bytes)", l.MemoryBytes)
		}
		removeCgroup(l.Cgroup)
	}

	// GPU time is what was allocated (the devices were the job's alone),
	// not measured utilisation.
	usage.GPUSeconds = float64(len(l.GPUs)) * endedAt.Sub(startedAt).Seconds()
	status := executor.Status{State: executor.StateExited, StartedAt: startedAt, EndedAt: endedAt, Usage: usage}
	switch {
	case mainWS.Exited():
		status.ExitCode = mainWS.ExitStatus()
	case mainWS.Signaled():
		status.ExitCode = 128 + int(mainWS.Signal())
		status.Signal = signalName(mainWS.Signal())
	}
	switch {
	case stopping:
		status.Reason, status.Message = executor.ReasonStopped, "stopped on request"
	case oomKilled:
		status.Reason, status.Message = executor.ReasonOOMKilled, oomMessage
	case mainWS.Signaled():
		status.Reason, status.Message = executor.ReasonSignaled, "killed by "+status.Signal
	}
	if survivors > 0 {
		status.Message += fmt.Sprintf(" (%d processes could not be killed)", survivors)
	}
	if _, err := writeOnce(filepath.Join(s.dir, fileStatus), status); err != nil {
		logf("writing status: %v", err)
		return 1
	}
	return 0
}

func tv(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }

// execError reports whether a start error is the spec's fault.
func execError(err error) bool {
	for _, e := range []error{syscall.ENOENT, syscall.EACCES, syscall.ENOEXEC, syscall.ENOTDIR, syscall.EISDIR, syscall.ELOOP, syscall.EPERM} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
