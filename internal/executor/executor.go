// Package executor is the contract between the job scheduler and whatever
// runs work: local processes (executor/local) today, Kubernetes pods later.
//
// The contract is built around a crash of the control plane. Start returns a
// Handle, a small JSON-serialisable value that the caller persists; every
// other method takes a Handle and works whether the Handle came from this
// process or from one that was killed (-9) before it. There is no separate
// "recover" step: after a restart the scheduler calls Inspect on each handle
// it holds and Wait on those still running. For the crash between Start and
// persisting the handle, Find looks the work up by the ID the caller chose
// before calling Start.
package executor

import (
	"context"
	"io"
	"net"
	"strconv"
	"time"
)

// Executor runs work items. Implementations are safe for concurrent use.
type Executor interface {
	// Start launches the work described by spec and returns once its
	// process is running. An unknown command (not found in the spec's
	// PATH, not executable) is a fault.Invalid error naming it; a second
	// Start with the same ID is fault.AlreadyExists. When Start returns an
	// error nothing of the work is left running.
	Start(ctx context.Context, spec Spec) (Handle, error)

	// Wait blocks until the work ends (or ctx ends) and returns its final
	// status. It works for handles of an earlier control-plane process.
	// When Wait returns, no process of the work remains.
	Wait(ctx context.Context, h Handle) (Status, error)

	// Inspect returns the current status without blocking. Work that
	// cannot be found and left no status is StateLost; Inspect then also
	// kills whatever the work left behind, so Lost never hides a survivor.
	Inspect(ctx context.Context, h Handle) (Status, error)

	// Stop asks the work to end (SIGTERM to its whole process tree, or the
	// backend's equivalent) and kills it after grace. It returns once no
	// process of the work remains. Stopping finished work is not an error;
	// Stop is idempotent.
	Stop(ctx context.Context, h Handle, grace time.Duration) error

	// Logs returns the work's output. With Follow it streams until the
	// work ends (then io.EOF) or ctx ends.
	Logs(ctx context.Context, h Handle, opts LogOptions) (io.ReadCloser, error)

	// Find returns the handle of work started with the given ID, for a
	// caller that crashed between Start and persisting its handle; it is
	// fault.NotFound when no such work was started.
	Find(ctx context.Context, id string) (Handle, error)

	// Remove releases what finished work still holds (work directory,
	// logs, pod). Removing running work is fault.FailedPrecondition; Stop
	// it first. Copy logs and outputs away before calling it.
	Remove(ctx context.Context, h Handle) error

	// Capabilities describes the node(s) this executor runs work on and
	// which limits it really enforces.
	Capabilities() Capabilities
}

// Spec describes one attempt at running some work.
type Spec struct {
	// ID is unique per attempt (for example "<jobid>-1") and names the
	// work directory or pod. Letters, digits, '.', '_' and '-'; at most 128.
	ID string
	// Command is the argv; Command[0] is looked up in Env["PATH"] (not the
	// server's PATH). Exactly one of Command and Shell is set.
	Command []string
	// Shell is a command line run with /bin/sh -c.
	Shell string
	// Dir is the working directory; "" means a fresh, empty directory that
	// the executor makes (and Remove deletes).
	Dir string
	// Env is the complete environment: nothing of the server's environment
	// is inherited, so no server secret can leak into a job. PATH, HOME and
	// LANG get defaults when absent; the executor adds PORT, PORT_<n>,
	// CUDA_VISIBLE_DEVICES and NVIDIA_VISIBLE_DEVICES, which win over Env.
	Env map[string]string
	// Image is for container backends; process backends record it only.
	Image string
	// Resources are the limits and devices given to the work.
	Resources Resources
	// Ports is how many TCP ports to allocate. The process sees them as
	// $PORT (the first), $PORT_1, $PORT_2, ... and the Handle lists them.
	Ports int
	// Stage is for Remote backends only (local ones refuse it): what the
	// work fetches from the control plane before its command runs and
	// uploads after the command succeeds. The backend runs the command
	// under `plinth workload run`, which does both.
	Stage *Stage `json:"stage,omitempty"`
}

// Resources are what a work item may use. Zero means "no limit". Which
// limits a backend enforces (rather than only records) is in Capabilities;
// the local backend never enforces DiskBytes.
type Resources struct {
	CPUs        float64 `json:"cpus,omitempty"`
	MemoryBytes int64   `json:"memory_bytes,omitempty"`
	// GPUs are device indices or UUIDs (as nvidia-smi prints them). A job
	// sees exactly these; with none it sees no GPU at all.
	GPUs      []string `json:"gpus,omitempty"`
	DiskBytes int64    `json:"disk_bytes,omitempty"`
}

// Handle identifies started work. It is JSON-serialisable: the caller
// persists it and passes it back, possibly to a later process.
type Handle struct {
	ID      string `json:"id"`
	Backend string `json:"backend"`
	// PID is the work's main process, where there is one.
	PID int `json:"pid,omitempty"`
	// StartTime is the process start time (clock ticks since boot on
	// Linux, /proc/<pid>/stat field 22) so that a reused pid is not
	// mistaken for the work.
	StartTime int64  `json:"start_time,omitempty"`
	Node      string `json:"node,omitempty"`
	// Host is the address the Ports are served at when it is not this
	// machine's loopback (a pod's IP).
	Host  string `json:"host,omitempty"`
	Ports []int  `json:"ports,omitempty"`
	// Dir is the work's working directory.
	Dir string `json:"dir,omitempty"`
	// LogPath is the combined output log, where it is a file.
	LogPath string `json:"log_path,omitempty"`
	// Data is the backend's own bookkeeping (supervisor pid, cgroup, pod).
	Data map[string]string `json:"data,omitempty"`
}

// State is where work is in its life.
type State string

const (
	// StateRunning: the work has started and not yet ended.
	StateRunning State = "running"
	// StateExited: the work ended and its exit status is known.
	StateExited State = "exited"
	// StateLost: the work cannot be found and left no exit status (its
	// supervisor died, the node rebooted, the pod vanished).
	StateLost State = "lost"
)

// Reasons say why work ended, when more than an exit code is known. They are
// stable codes (CamelCase, as Kubernetes writes them); Status.Message adds
// the human detail.
const (
	ReasonStopped        = "Stopped"        // ended by Stop
	ReasonOOMKilled      = "OOMKilled"      // killed for exceeding Resources.MemoryBytes
	ReasonSignaled       = "Signaled"       // killed by a signal nobody here sent
	ReasonStartFailed    = "StartFailed"    // the process could not be started
	ReasonSupervisorLost = "SupervisorLost" // the supervisor died; the work was killed
	ReasonNotFound       = "NotFound"       // no record of the work exists
	ReasonRebooted       = "NodeRebooted"   // the node rebooted since the work started
)

// Status is what is known about work at one moment.
type Status struct {
	State State `json:"state"`
	// ExitCode is the main process's exit code; killed by a signal it is
	// 128+signal number, as shells report it.
	ExitCode int `json:"exit_code"`
	// Signal names the signal that killed the main process ("SIGKILL").
	Signal    string    `json:"signal,omitempty"`
	Reason    string    `json:"reason,omitempty"`
	Message   string    `json:"message,omitempty"`
	StartedAt time.Time `json:"started_at,omitzero"`
	EndedAt   time.Time `json:"ended_at,omitzero"`
	Usage     Usage     `json:"usage"`
}

// Done reports whether the work has ended (exited or lost).
func (s Status) Done() bool { return s.State == StateExited || s.State == StateLost }

// Usage is what the work consumed; it is complete once the work has ended.
type Usage struct {
	CPUSeconds      float64 `json:"cpu_seconds"`
	PeakMemoryBytes int64   `json:"peak_memory_bytes"`
	// GPUSeconds is GPU time allocated: devices × wall seconds.
	GPUSeconds float64 `json:"gpu_seconds"`
}

// Stream picks which output Logs returns.
type Stream string

const (
	StreamCombined Stream = "" // stdout and stderr interleaved as written
	StreamStdout   Stream = "stdout"
	StreamStderr   Stream = "stderr"
)

// LogOptions select what Logs returns. Backends that cannot separate the
// streams answer fault.FailedPrecondition for StreamStdout/StreamStderr.
type LogOptions struct {
	Follow bool
	Stream Stream
}

// Capabilities describes where an executor runs work.
type Capabilities struct {
	Backend     string `json:"backend"`
	CPUs        int    `json:"cpus"`
	MemoryBytes int64  `json:"memory_bytes"`
	GPUs        []GPU  `json:"gpus,omitempty"`
	// CgroupLimits reports whether CPU and memory limits are enforced by
	// the kernel (cgroups). When false, CgroupReason says why and what is
	// done instead.
	CgroupLimits bool   `json:"cgroup_limits"`
	CgroupReason string `json:"cgroup_reason,omitempty"`
	// Remote reports that work does not see the control plane's files
	// (a pod on another node): callers pass what it needs as a Spec.Stage
	// instead of preparing directories on this machine, and address its
	// ports at Handle.Host rather than on loopback.
	Remote bool `json:"remote,omitempty"`
}

// Address is where port i of the work listens, as host:port: the work's
// own address on a remote backend, loopback on a local one. It is "" when
// the handle has no such port.
func (h Handle) Address(i int) string {
	if i < 0 || i >= len(h.Ports) {
		return ""
	}
	host := "127.0.0.1"
	if h.Host != "" {
		host = h.Host
	}
	return net.JoinHostPort(host, strconv.Itoa(h.Ports[i]))
}

// GPU is one accelerator a job can be given.
type GPU struct {
	Index       int    `json:"index"`
	UUID        string `json:"uuid"`
	Name        string `json:"name"`
	MemoryBytes int64  `json:"memory_bytes"`
}
