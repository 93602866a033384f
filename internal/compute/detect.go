package compute

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"os/exec"
	"path"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// Machine is what detection found out about the machine Plinth runs on.
type Machine struct {
	// CPUs is the number of CPUs this process may use: the logical CPUs
	// it may run on, lowered to a cgroup CPU quota (rounded up) when one
	// is set.
	CPUs int `json:"cpus"`
	// MemoryBytes is MemTotal, lowered to a cgroup memory limit when one
	// is set; 0 when neither could be read (not Linux).
	MemoryBytes int64 `json:"memory_bytes"`
	GPUs        []GPU `json:"gpus,omitempty"`
	// Notes say what could not be detected and why.
	Notes []string `json:"notes,omitempty"`
}

// GPU is one NVIDIA GPU as nvidia-smi lists it.
type GPU struct {
	Index int    `json:"index"`
	Name  string `json:"name"`
	// MemoryBytes is 0 when nvidia-smi does not know it ("[N/A]").
	MemoryBytes int64 `json:"memory_bytes"`
}

// Detector finds out what the local machine has.
type Detector func() (Machine, error)

// Runner runs a command and returns its standard output. It returns an
// error wrapping exec.ErrNotFound when the command does not exist.
type Runner func(ctx context.Context, name string, args ...string) ([]byte, error)

// ExecRunner runs commands with os/exec; a failing command's error
// carries the start of its standard error.
func ExecRunner(ctx context.Context, name string, args ...string) ([]byte, error) {
	if _, err := exec.LookPath(name); err != nil {
		return nil, err // wraps exec.ErrNotFound
	}
	cmd := exec.CommandContext(ctx, name, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = strings.TrimSpace(string(out)) // nvidia-smi reports failures on stdout
		}
		if len(msg) > 300 {
			msg = msg[:300] + "..."
		}
		if msg != "" {
			return out, fmt.Errorf("%w: %s", err, msg)
		}
		return out, err
	}
	return out, nil
}

// Probe detects a machine from a file system (for /proc and /sys), a CPU
// count and a command runner, so tests can feed it canned answers.
type Probe struct {
	// FS is the root file system: files are read as "proc/meminfo",
	// "sys/fs/cgroup/memory.max" and so on.
	FS fs.FS
	// NumCPU is the number of logical CPUs the process may run on
	// (runtime.NumCPU).
	NumCPU int
	// Run runs nvidia-smi; nil skips GPU detection.
	Run Runner
	// Timeout bounds nvidia-smi; 0 means 15 seconds.
	Timeout time.Duration
}

// DetectSystem detects the machine this process runs on.
func DetectSystem() (Machine, error) {
	return Probe{FS: os.DirFS("/"), NumCPU: runtime.NumCPU(), Run: ExecRunner}.Detect()
}

// Detect finds CPUs, memory and GPUs. What it cannot find out it leaves
// out and explains in Notes: an honest small machine is better than a
// refusal to start.
func (p Probe) Detect() (Machine, error) {
	m := Machine{CPUs: max(p.NumCPU, 1)}
	if p.FS != nil {
		cg := readCgroups(p.FS)
		if quota, ok, err := cg.cpuLimit(p.FS); err != nil {
			m.Notes = append(m.Notes, "cgroup CPU quota not read: "+err.Error())
		} else if ok && quota < m.CPUs {
			m.CPUs = quota
		}
		total, err := memTotal(p.FS)
		if err != nil {
			m.Notes = append(m.Notes, "memory size not detected: "+err.Error())
		}
		limit, ok, err := cg.memoryLimit(p.FS)
		if err != nil {
			m.Notes = append(m.Notes, "cgroup memory limit not read: "+err.Error())
		} else if ok && (total == 0 || limit < total) {
			total = limit
		}
		m.MemoryBytes = total
	} else {
		m.Notes = append(m.Notes, "memory size not detected: no file system to read /proc/meminfo from")
	}
	if p.Run != nil {
		timeout := p.Timeout
		if timeout <= 0 {
			timeout = 15 * time.Second
		}
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		gpus, err := DetectGPUs(ctx, p.Run)
		cancel()
		if err != nil {
			m.Notes = append(m.Notes, "no GPUs listed: "+err.Error())
		}
		m.GPUs = gpus
	}
	return m, nil
}

// nvidiaSMIArgs is the query DetectGPUs runs.
var nvidiaSMIArgs = []string{"--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"}

// DetectGPUs lists NVIDIA GPUs with nvidia-smi. No nvidia-smi means no
// GPUs and no error; an nvidia-smi that fails (no driver loaded) or
// answers what cannot be parsed is an error.
func DetectGPUs(ctx context.Context, run Runner) ([]GPU, error) {
	out, err := run(ctx, "nvidia-smi", nvidiaSMIArgs...)
	if errors.Is(err, exec.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		if bytes.Contains(out, []byte("No devices were found")) {
			return nil, nil
		}
		return nil, fmt.Errorf("nvidia-smi failed: %w", err)
	}
	return parseNvidiaSMI(out)
}

// parseNvidiaSMI reads "index, name, memory.total" lines, memory in MiB.
func parseNvidiaSMI(out []byte) ([]GPU, error) {
	var gpus []GPU
	sc := bufio.NewScanner(bytes.NewReader(out))
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" {
			continue
		}
		if text == "No devices were found" {
			return nil, nil
		}
		first, last := strings.Index(text, ","), strings.LastIndex(text, ",")
		if first < 0 || first == last {
			return nil, fmt.Errorf("nvidia-smi line %d %q: want \"index, name, memory.total\"", line, clipText(text))
		}
		idx, err := strconv.Atoi(strings.TrimSpace(text[:first]))
		if err != nil || idx < 0 {
			return nil, fmt.Errorf("nvidia-smi line %d %q: index is not a number", line, clipText(text))
		}
		name := strings.TrimSpace(text[first+1 : last])
		if name == "" {
			return nil, fmt.Errorf("nvidia-smi line %d %q: empty name", line, clipText(text))
		}
		var mem int64
		memText := strings.TrimSpace(text[last+1:])
		if !strings.HasPrefix(memText, "[") { // "[N/A]", "[Not Supported]"
			mib, err := strconv.ParseFloat(memText, 64)
			if err != nil || mib < 0 || mib > float64(maxMemoryGiB)*1024 {
				return nil, fmt.Errorf("nvidia-smi line %d %q: memory.total is not a number of MiB", line, clipText(text))
			}
			mem = int64(mib) << 20
		}
		gpus = append(gpus, GPU{Index: idx, Name: name, MemoryBytes: mem})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading nvidia-smi output: %w", err)
	}
	return gpus, nil
}

func clipText(s string) string {
	if len(s) > 80 {
		return s[:77] + "..."
	}
	return s
}

// memTotal reads MemTotal from /proc/meminfo.
func memTotal(fsys fs.FS) (int64, error) {
	data, err := fs.ReadFile(fsys, "proc/meminfo")
	if err != nil {
		return 0, err
	}
	for l := range strings.Lines(string(data)) {
		rest, ok := strings.CutPrefix(l, "MemTotal:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			break
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil || kb <= 0 || kb > math.MaxInt64>>10 {
			return 0, fmt.Errorf("/proc/meminfo: MemTotal %q is not a number", f[0])
		}
		if len(f) > 1 && f[1] != "kB" {
			return 0, fmt.Errorf("/proc/meminfo: MemTotal in %q, want kB", f[1])
		}
		return kb << 10, nil
	}
	return 0, errors.New("/proc/meminfo has no MemTotal line")
}

// cgroups is where this process sits in the cgroup hierarchies, from
// /proc/self/cgroup: the v2 path ("0::/a/b") and v1 paths by controller.
type cgroups struct {
	v2 string
	v1 map[string]string
}

func readCgroups(fsys fs.FS) cgroups {
	cg := cgroups{v2: "/", v1: map[string]string{}}
	data, err := fs.ReadFile(fsys, "proc/self/cgroup")
	if err != nil {
		return cg // fall back to the roots
	}
	for l := range strings.Lines(string(data)) {
		parts := strings.SplitN(strings.TrimSpace(l), ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[0] == "0" && parts[1] == "" {
			cg.v2 = parts[2]
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			cg.v1[c] = parts[2]
		}
	}
	return cg
}

// dirs returns the cgroup directories from the process's own up to the
// hierarchy's root under mount, for the limits of every ancestor apply.
// A process in a container without a cgroup namespace sees a path that
// does not exist under the mount; those directories are simply absent.
func dirs(mount, cgPath string) []string {
	p := path.Clean("/" + cgPath)
	var out []string
	for {
		out = append(out, path.Join(mount, p))
		if p == "/" {
			return out
		}
		p = path.Dir(p)
	}
}

// readSmallest reads an integer limit from file in each directory and
// returns the smallest; unlimited values ("max", -1, or above 2^62 as
// cgroup v1 writes "unlimited") are skipped. parse returns ok=false for
// those.
func readSmallest(fsys fs.FS, ds []string, file string, parse func(string) (int64, bool, error)) (int64, bool, error) {
	var best int64
	found := false
	for _, d := range ds {
		data, err := fs.ReadFile(fsys, path.Join(d, file))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return 0, false, err
		}
		v, ok, err := parse(strings.TrimSpace(string(data)))
		if err != nil {
			return 0, false, fmt.Errorf("/%s: %w", path.Join(d, file), err)
		}
		if ok && (!found || v < best) {
			best, found = v, true
		}
	}
	return best, found, nil
}

func parseBytesLimit(s string) (int64, bool, error) {
	if s == "max" {
		return 0, false, nil
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("%q is not a number of bytes", clipText(s))
	}
	if v < 0 || v >= 1<<62 {
		return 0, false, nil
	}
	return v, true, nil
}

// memoryLimit is the cgroup memory limit: memory.max (v2) or
// memory.limit_in_bytes (v1), the smallest on the way to the root.
func (cg cgroups) memoryLimit(fsys fs.FS) (int64, bool, error) {
	v2, ok2, err := readSmallest(fsys, dirs("sys/fs/cgroup", cg.v2), "memory.max", parseBytesLimit)
	if err != nil {
		return 0, false, err
	}
	v1, ok1, err := readSmallest(fsys, dirs("sys/fs/cgroup/memory", cg.v1["memory"]), "memory.limit_in_bytes", parseBytesLimit)
	if err != nil {
		return 0, false, err
	}
	switch {
	case ok1 && ok2:
		return min(v1, v2), true, nil
	case ok2:
		return v2, true, nil
	default:
		return v1, ok1, nil
	}
}

// cpuLimit is the cgroup CPU quota in whole CPUs, rounded up: cpu.max
// (v2, "quota period") or cpu.cfs_quota_us / cpu.cfs_period_us (v1).
func (cg cgroups) cpuLimit(fsys fs.FS) (int, bool, error) {
	// Quotas are compared as millicpus so that rounding happens once.
	v2, ok2, err := readSmallest(fsys, dirs("sys/fs/cgroup", cg.v2), "cpu.max", func(s string) (int64, bool, error) {
		f := strings.Fields(s)
		if len(f) == 0 || len(f) > 2 {
			return 0, false, fmt.Errorf("%q: want \"quota period\"", clipText(s))
		}
		if f[0] == "max" {
			return 0, false, nil
		}
		period := int64(100000)
		if len(f) == 2 {
			p, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil || p <= 0 {
				return 0, false, fmt.Errorf("%q: period is not a positive number", clipText(s))
			}
			period = p
		}
		q, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil || q <= 0 {
			return 0, false, fmt.Errorf("%q: quota is not a positive number", clipText(s))
		}
		return milliCPUs(q, period), true, nil
	})
	if err != nil {
		return 0, false, err
	}
	v1dir := "sys/fs/cgroup/cpu"
	if _, err := fs.Stat(fsys, v1dir); err != nil {
		v1dir = "sys/fs/cgroup/cpu,cpuacct"
	}
	var v1 int64
	ok1 := false
	for _, d := range dirs(v1dir, cg.v1["cpu"]) {
		q, okq, err := readSmallest(fsys, []string{d}, "cpu.cfs_quota_us", func(s string) (int64, bool, error) {
			v, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				return 0, false, fmt.Errorf("%q is not a number", clipText(s))
			}
			return v, v > 0, nil
		})
		if err != nil {
			return 0, false, err
		}
		if !okq {
			continue
		}
		p, okp, err := readSmallest(fsys, []string{d}, "cpu.cfs_period_us", func(s string) (int64, bool, error) {
			v, err := strconv.ParseInt(s, 10, 64)
			if err != nil || v <= 0 {
				return 0, false, fmt.Errorf("%q is not a positive number", clipText(s))
			}
			return v, true, nil
		})
		if err != nil {
			return 0, false, err
		}
		if !okp {
			p = 100000
		}
		if m := milliCPUs(q, p); !ok1 || m < v1 {
			v1, ok1 = m, true
		}
	}
	var mc int64
	switch {
	case ok1 && ok2:
		mc = min(v1, v2)
	case ok2:
		mc = v2
	case ok1:
		mc = v1
	default:
		return 0, false, nil
	}
	cpus := (mc + 999) / 1000
	return int(max(1, min(cpus, maxVCPUs))), true, nil
}

func milliCPUs(quota, period int64) int64 {
	if quota > math.MaxInt64/1000 {
		return math.MaxInt64 / 1000
	}
	return quota * 1000 / period
}

// LocalSKUs describes the machine as SKUs whose names are the same on
// every machine, so job files travel: local-cpu-small (1 CPU),
// local-cpu-half, local-cpu-full (all of it) and, for N GPUs,
// local-gpu-1 .. local-gpu-N with a proportional share of CPUs and
// memory. They cost nothing per hour until the SKU file says otherwise.
func LocalSKUs(m Machine) []SKU {
	n := max(m.CPUs, 1)
	share := func(num, den int) int64 {
		if m.MemoryBytes <= 0 || den <= 0 {
			return 0
		}
		if num >= den {
			return m.MemoryBytes
		}
		// MemoryBytes is at most 1 PiB (2^50) and num at most 4096 (2^12):
		// no overflow.
		return m.MemoryBytes / int64(den) * int64(num)
	}
	memText := func(b int64) string {
		if m.MemoryBytes <= 0 {
			return "memory not detected"
		}
		return fmt.Sprintf("%.1f of its %.1f GiB memory", float64(b)/GiB, float64(m.MemoryBytes)/GiB)
	}
	cpu := func(name string, v int) SKU {
		mem := share(v, n)
		return SKU{Name: name, Family: "local-cpu", VCPUs: v, MemoryBytes: mem, Source: SourceDetected,
			Description: fmt.Sprintf("this machine: %d of its %d CPUs, %s", v, n, memText(mem))}
	}
	skus := []SKU{cpu("local-cpu-small", 1), cpu("local-cpu-half", max(1, n/2)), cpu("local-cpu-full", n)}
	g := len(m.GPUs)
	for k := 1; k <= g; k++ {
		v := max(1, n*k/g)
		mem := share(k, g)
		names := map[string]bool{}
		var types []string
		var gpuMem int64
		for i, gpu := range m.GPUs[:k] {
			if !names[gpu.Name] {
				names[gpu.Name] = true
				types = append(types, gpu.Name)
			}
			if i == 0 || gpu.MemoryBytes < gpuMem {
				gpuMem = gpu.MemoryBytes
			}
		}
		skus = append(skus, SKU{Name: fmt.Sprintf("local-gpu-%d", k), Family: "local-gpu", VCPUs: v, MemoryBytes: mem,
			GPUs: k, GPUType: strings.Join(types, " + "), GPUMemoryBytes: gpuMem, Source: SourceDetected,
			Description: fmt.Sprintf("this machine: %d of its %d GPUs, %d of its %d CPUs, %s", k, g, v, n, memText(mem))})
	}
	return skus
}
