//go:build linux

// Package local runs work as processes on this machine, each under a small
// supervisor (the same binary re-executed; see shim.go) so that a job's
// status survives the death of the control plane.
//
// Each work item has a state directory root/<ID>/ holding launch.json (what
// to run), handle.json, status.json (once it ended), stdout.log, stderr.log,
// output.log (both, interleaved), stop.json (a stop request), shim.log and,
// unless Spec.Dir is set, work/ (the working directory).
//
// Limits: with a delegated cgroup v2 subtree each job gets a cgroup with
// cpu.max and memory.max, measured from cpu.stat and memory.peak and killed
// with cgroup.kill. Without one, CPU limits are not enforced and memory
// limits are enforced by the supervisor sampling the tree's RSS every 100 ms
// and killing it (ReasonOOMKilled); Capabilities says which applies.
package local

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/plinth-dev/plinth/internal/executor"
	"github.com/plinth-dev/plinth/internal/fault"
)

// Backend is the Handle.Backend of this executor.
const Backend = "local"

// Keys of Handle.Data.
const (
	dataShimPID   = "shim_pid"
	dataShimStart = "shim_start_time"
	dataBootID    = "boot_id"
	dataStartedAt = "started_at"
	dataCgroup    = "cgroup"
	dataImage     = "image"
)

// Defaults filled into a job's environment when Spec.Env lacks them.
const (
	DefaultPATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	DefaultLANG = "C.UTF-8"
)

// startTimeout bounds how long Start (and Find) wait for a supervisor to
// report that the job runs.
const startTimeout = 30 * time.Second

var _ executor.Executor = (*Executor)(nil)

// Executor runs work items as local processes. Create it with New.
type Executor struct {
	root   string
	log    *slog.Logger
	caps   executor.Capabilities
	cgroup string // parent of the jobs' cgroups; "" = no cgroups
	node   string
	tagKey string // distinguishes this root's cgroups from another's

	mu    sync.Mutex
	exits map[string]chan struct{} // closed when a shim started here exits
	ports map[int]time.Time        // recently handed out, not to be reused soon
}

// Option configures New.
type Option func(*config)

type config struct {
	cgroupParent string
	noCgroups    bool
	log          *slog.Logger
}

// WithCgroupParent names a delegated cgroup v2 directory (absolute, or
// relative to /sys/fs/cgroup) under which jobs get their own cgroups.
func WithCgroupParent(dir string) Option { return func(c *config) { c.cgroupParent = dir } }

// WithoutCgroups turns cgroup limits off even where they would work.
func WithoutCgroups() Option { return func(c *config) { c.noCgroups = true } }

// WithLogger sets the logger (default: slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.log = l } }

// New returns an executor that keeps its work under root (created if
// missing). An executor over the same root in a later process adopts the
// work of an earlier one: the handles stay valid.
func New(ctx context.Context, root string, opts ...Option) (*Executor, error) {
	var c config
	for _, o := range opts {
		o(&c)
	}
	if c.log == nil {
		c.log = slog.Default()
	}
	root, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("local executor root: %w", err)
	}
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, fmt.Errorf("local executor root: %w", err)
	}
	e := &Executor{root: root, log: c.log, exits: map[string]chan struct{}{}, ports: map[int]time.Time{}}
	e.node, _ = os.Hostname()
	e.tagKey = shortHash(root)

	e.caps = executor.Capabilities{Backend: Backend, CPUs: runtime.NumCPU(), MemoryBytes: memoryLimit()}
	if gpus, err := detectGPUs(ctx); err != nil {
		c.log.Warn("GPU detection failed; offering no GPUs", "err", err)
	} else {
		e.caps.GPUs = gpus
	}
	if c.noCgroups {
		e.caps.CgroupReason = "cgroups turned off by configuration"
	} else {
		e.cgroup, e.caps.CgroupReason = setupCgroups(c.cgroupParent)
	}
	if e.cgroup != "" {
		e.caps.CgroupLimits = true
	} else {
		e.caps.CgroupReason += "; memory limits are enforced by sampling each job's RSS every 100ms, CPU limits are not enforced"
	}
	return e, nil
}

// Capabilities implements executor.Executor.
func (e *Executor) Capabilities() executor.Capabilities {
	c := e.caps
	c.GPUs = append([]executor.GPU(nil), c.GPUs...)
	return c
}

// Root is the directory the executor keeps its work in.
func (e *Executor) Root() string { return e.root }

func (e *Executor) stateDir(id string) string { return filepath.Join(e.root, id) }

// Start implements executor.Executor.
func (e *Executor) Start(ctx context.Context, spec executor.Spec) (executor.Handle, error) {
	if err := spec.Validate(); err != nil {
		return executor.Handle{}, err
	}
	if spec.Stage != nil {
		// Work here sees the control plane's files: its caller stages them.
		return executor.Handle{}, fault.InvalidField("stage", "the local executor runs work on this machine; prepare its files instead of staging them")
	}
	dir := e.stateDir(spec.ID)
	workDir := spec.Dir
	if workDir != "" {
		if !filepath.IsAbs(workDir) {
			return executor.Handle{}, fault.InvalidField("dir", "must be an absolute path, got %q", workDir)
		}
		if fi, err := os.Stat(workDir); err != nil || !fi.IsDir() {
			return executor.Handle{}, fault.InvalidField("dir", "%q is not an existing directory", workDir)
		}
	} else {
		workDir = filepath.Join(dir, dirWork)
	}

	ports, err := e.allocPorts(spec.Ports)
	if err != nil {
		return executor.Handle{}, fault.Wrap(fault.ResourceExhausted, err, "allocating %d ports", spec.Ports)
	}
	env := buildEnv(spec, workDir, dir, ports)

	l := launch{
		ID: spec.ID, Dir: workDir, Image: spec.Image, Ports: ports, CPUs: spec.Resources.CPUs,
		MemoryBytes: spec.Resources.MemoryBytes, GPUs: spec.Resources.GPUs, Tag: dir, Node: e.node,
	}
	for _, k := range sortedKeys(env) {
		l.Env = append(l.Env, k+"="+env[k])
	}
	if spec.Shell != "" {
		l.Path, l.Argv = "/bin/sh", []string{"sh", "-c", spec.Shell}
		if err := executable(l.Path); err != nil {
			return executor.Handle{}, fault.Wrap(fault.FailedPrecondition, err, "/bin/sh is not available")
		}
	} else {
		name := spec.Command[0]
		p, err := lookPath(name, env["PATH"], workDir)
		if err != nil {
			if strings.Contains(name, "/") {
				return executor.Handle{}, &fault.Error{Kind: fault.Invalid, Field: "command",
					Message: fmt.Sprintf("command %q is not an executable file", name), Err: err}
			}
			return executor.Handle{}, &fault.Error{Kind: fault.Invalid, Field: "command",
				Message: fmt.Sprintf("command %q not found in PATH %q", name, env["PATH"])}
		}
		l.Path, l.Argv = p, spec.Command
	}
	if e.cgroup != "" {
		l.Cgroup = filepath.Join(e.cgroup, spec.ID+"."+e.tagKey)
	} else {
		l.PollMemory = spec.Resources.MemoryBytes > 0
	}

	if err := os.Mkdir(dir, 0o700); err != nil {
		if errors.Is(err, os.ErrExist) {
			return executor.Handle{}, fault.New(fault.AlreadyExists, "work %q already exists", spec.ID)
		}
		return executor.Handle{}, diskFault(err, "creating the work directory")
	}
	h, err := e.launch(ctx, dir, l, spec.Dir == "")
	if err != nil {
		os.RemoveAll(dir)
		return executor.Handle{}, err
	}
	return h, nil
}

// launch starts the supervisor for l and waits for its report.
func (e *Executor) launch(ctx context.Context, dir string, l launch, makeWork bool) (executor.Handle, error) {
	if makeWork {
		if err := os.Mkdir(l.Dir, 0o700); err != nil {
			return executor.Handle{}, diskFault(err, "creating the working directory")
		}
	}
	if err := writeJSON(filepath.Join(dir, fileLaunch), l); err != nil {
		return executor.Handle{}, diskFault(err, "writing the launch file")
	}
	shimLog, err := os.OpenFile(filepath.Join(dir, fileShim), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return executor.Handle{}, diskFault(err, "creating the supervisor log")
	}
	defer shimLog.Close()
	r, w, err := os.Pipe()
	if err != nil {
		return executor.Handle{}, fmt.Errorf("report pipe: %w", err)
	}
	defer r.Close()

	cmd := &exec.Cmd{
		Path:        selfExe(),
		Args:        []string{"plinth-shim", l.ID},
		Env:         []string{shimEnv + "=" + dir},
		Dir:         dir,
		Stdout:      shimLog,
		Stderr:      shimLog,
		ExtraFiles:  []*os.File{w},
		SysProcAttr: &syscall.SysProcAttr{Setsid: true},
	}
	err = cmd.Start()
	w.Close()
	if err != nil {
		return executor.Handle{}, fmt.Errorf("starting the supervisor: %w", err)
	}
	exited := make(chan struct{})
	e.mu.Lock()
	e.exits[l.ID] = exited
	e.mu.Unlock()
	go func() { cmd.Wait(); close(exited) }() // reap it while we live

	// Read the report, giving up when ctx ends or startTimeout passes.
	deadline := time.Now().Add(startTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	r.SetReadDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { r.SetReadDeadline(time.Now()) })
	b, rerr := io.ReadAll(io.LimitReader(r, 64<<10))
	stop()
	var rep startReport
	if len(b) > 0 {
		json.Unmarshal(b, &rep)
	}
	if rep.OK {
		var h executor.Handle
		if ok, err := readJSON(filepath.Join(dir, fileHandle), &h); ok && err == nil {
			return h, nil
		}
		rep = startReport{Error: "the supervisor reported a start but wrote no handle"}
	}
	// Failed: make sure nothing of it runs before saying so.
	cmd.Process.Kill()
	<-exited
	tree{tag: dir}.kill(5 * time.Second)
	e.forget(l.ID)
	switch {
	case rep.Invalid:
		return executor.Handle{}, &fault.Error{Kind: fault.Invalid, Field: "command", Message: rep.Error}
	case rep.Error != "":
		return executor.Handle{}, fault.New(fault.Internal, "starting work %s: %s", l.ID, rep.Error)
	case ctx.Err() != nil:
		return executor.Handle{}, fmt.Errorf("starting work %s: %w", l.ID, ctx.Err())
	default:
		tail, _ := os.ReadFile(filepath.Join(dir, fileShim))
		return executor.Handle{}, fault.New(fault.Internal, "starting work %s: the supervisor did not report (%v): %s",
			l.ID, rerr, strings.TrimSpace(string(tail)))
	}
}

func (e *Executor) forget(id string) {
	e.mu.Lock()
	delete(e.exits, id)
	e.mu.Unlock()
}

// selfExe is this binary: /proc/self/exe keeps working when the file was
// replaced (an upgrade) or deleted since we started.
func selfExe() string {
	if _, err := os.Stat("/proc/self/exe"); err == nil {
		return "/proc/self/exe"
	}
	p, err := os.Executable()
	if err != nil {
		return os.Args[0]
	}
	return p
}

// buildEnv returns the job's whole environment: Spec.Env, defaults for
// PATH/HOME/LANG, and what the executor assigns (ports, GPUs, the tag),
// which wins over Spec.Env.
func buildEnv(spec executor.Spec, workDir, tag string, ports []int) map[string]string {
	env := make(map[string]string, len(spec.Env)+8)
	for k, v := range spec.Env {
		env[k] = v
	}
	for k, v := range map[string]string{"PATH": DefaultPATH, "HOME": workDir, "LANG": DefaultLANG} {
		if _, ok := env[k]; !ok {
			env[k] = v
		}
	}
	for k := range env {
		if k == "PORT" || strings.HasPrefix(k, "PORT_") {
			delete(env, k)
		}
	}
	for i, p := range ports {
		if i == 0 {
			env["PORT"] = strconv.Itoa(p)
		} else {
			env["PORT_"+strconv.Itoa(i)] = strconv.Itoa(p)
		}
	}
	// A job sees exactly the GPUs it was given: none means none.
	gpus := strings.Join(spec.Resources.GPUs, ",")
	env["CUDA_VISIBLE_DEVICES"] = gpus
	if gpus == "" {
		env["NVIDIA_VISIBLE_DEVICES"] = "void"
	} else {
		env["NVIDIA_VISIBLE_DEVICES"] = gpus
	}
	env[tagEnv] = tag
	delete(env, shimEnv)
	return env
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// allocPorts finds n free loopback TCP ports. They are held open together
// (so they differ) and then released for the job to bind; ports handed out
// in the last minute are not handed out again.
func (e *Executor) allocPorts(n int) ([]int, error) {
	if n == 0 {
		return nil, nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	now := time.Now()
	for p, at := range e.ports {
		if now.Sub(at) > time.Minute {
			delete(e.ports, p)
		}
	}
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for tries := 0; len(ports) < n; tries++ {
		if tries > 4*n+16 {
			return nil, errors.New("no free loopback port found")
		}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		p := l.Addr().(*net.TCPAddr).Port
		if _, recent := e.ports[p]; recent {
			continue
		}
		ports = append(ports, p)
	}
	for _, p := range ports {
		e.ports[p] = now
	}
	return ports, nil
}

func diskFault(err error, what string) error {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return fault.Wrap(fault.ResourceExhausted, err, "%s: disk full", what)
	}
	return fmt.Errorf("%s: %w", what, err)
}

func shortHash(s string) string {
	// FNV-1a, 32 bits: only tells roots apart in cgroup names.
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= 16777619
	}
	return fmt.Sprintf("%08x", h)
}
