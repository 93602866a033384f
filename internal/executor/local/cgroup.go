//go:build linux

package local

import (
	"bufio"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	cgroupMount       = "/sys/fs/cgroup"
	cgroup2SuperMagic = 0x63677270
)

// setupCgroups finds (and prepares) a cgroup v2 directory under which each
// job gets its own cgroup with cpu and memory controllers enabled. It
// returns that parent, or "" and the reason limits cannot be enforced.
//
// With an explicit parent (a delegated subtree, e.g. a systemd unit with
// Delegate=yes whose main process sits in a subgroup) it only enables the
// controllers there. Without one it succeeds by itself only inside a
// container that owns its cgroup namespace (this process is in "/"): it then
// does what docker-in-docker does — moves itself into a leaf "plinth-server"
// so that the namespace root may delegate controllers — and uses
// "plinth-jobs". Anywhere else it would have to reorganise cgroups it does
// not own, so it declines and says why.
func setupCgroups(parent string) (string, string) {
	var fs syscall.Statfs_t
	if err := syscall.Statfs(cgroupMount, &fs); err != nil {
		return "", fmt.Sprintf("cannot stat %s: %v", cgroupMount, err)
	}
	if fs.Type != cgroup2SuperMagic {
		return "", "cgroup v2 is not mounted at " + cgroupMount + " (cgroup v1 or hybrid hierarchy)"
	}
	if parent != "" {
		if !filepath.IsAbs(parent) {
			parent = filepath.Join(cgroupMount, parent)
		}
		if err := os.MkdirAll(parent, 0o755); err != nil {
			return "", fmt.Sprintf("cgroup parent %s: %v", parent, err)
		}
		if err := enableControllers(parent); err != nil {
			return "", fmt.Sprintf("cgroup parent %s: %v", parent, err)
		}
		return parent, ""
	}
	own, err := ownCgroup()
	if err != nil {
		return "", err.Error()
	}
	if own != "/" {
		return "", fmt.Sprintf("this process's cgroup %s also holds processes, so it cannot delegate controllers; "+
			"configure a delegated cgroup parent (systemd Delegate=yes)", own)
	}
	root := cgroupMount
	if syscall.Access(filepath.Join(root, "cgroup.subtree_control"), 2 /* W_OK */) != nil {
		return "", root + " is not writable (cgroup namespace not delegated)"
	}
	if err := enableControllers(root); err != nil {
		// Processes in the namespace root forbid delegation: move this
		// one into a leaf and try again.
		leaf := filepath.Join(root, "plinth-server")
		if merr := os.MkdirAll(leaf, 0o755); merr != nil {
			return "", fmt.Sprintf("cannot create %s: %v", leaf, merr)
		}
		if merr := os.WriteFile(filepath.Join(leaf, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0); merr != nil {
			return "", fmt.Sprintf("cannot move into %s: %v", leaf, merr)
		}
		if err := enableControllers(root); err != nil {
			return "", fmt.Sprintf("%s: %v (other processes share the root cgroup)", root, err)
		}
	}
	jobs := filepath.Join(root, "plinth-jobs")
	if err := os.MkdirAll(jobs, 0o755); err != nil {
		return "", fmt.Sprintf("cannot create %s: %v", jobs, err)
	}
	if err := enableControllers(jobs); err != nil {
		return "", fmt.Sprintf("%s: %v", jobs, err)
	}
	return jobs, ""
}

// ownCgroup returns this process's cgroup v2 path ("0::<path>").
func ownCgroup() (string, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(l, "0::"); ok {
			return p, nil
		}
	}
	return "", errors.New("no cgroup v2 entry in /proc/self/cgroup")
}

// enableControllers lets the children of dir use the cpu and memory
// controllers (and pids, where available).
func enableControllers(dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.controllers"))
	if err != nil {
		return err
	}
	have := strings.Fields(string(b))
	var want []string
	for _, c := range []string{"cpu", "memory", "pids"} {
		for _, h := range have {
			if h == c {
				want = append(want, "+"+c)
			}
		}
	}
	if len(want) < 2 || want[0] != "+cpu" || want[1] != "+memory" {
		return fmt.Errorf("cpu and memory controllers are not available (have %q)", have)
	}
	cur, _ := os.ReadFile(filepath.Join(dir, "cgroup.subtree_control"))
	if strings.Contains(string(cur), "cpu") && strings.Contains(string(cur), "memory") {
		return nil
	}
	return os.WriteFile(filepath.Join(dir, "cgroup.subtree_control"), []byte(strings.Join(want, " ")), 0)
}

// createJobCgroup makes the job's cgroup and writes its limits.
func createJobCgroup(dir string, cpus float64, memory int64) error {
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	if memory > 0 {
		if err := os.WriteFile(filepath.Join(dir, "memory.max"), []byte(strconv.FormatInt(memory, 10)), 0); err != nil {
			return fmt.Errorf("memory.max: %w", err)
		}
		// A memory limit that spills into swap is no limit.
		os.WriteFile(filepath.Join(dir, "memory.swap.max"), []byte("0"), 0)
		// An OOM kills the whole job, not one arbitrary process of it
		// (as Kubernetes does on cgroup v2).
		os.WriteFile(filepath.Join(dir, "memory.oom.group"), []byte("1"), 0)
	}
	if cpus > 0 {
		const period = 100000
		quota := max(int64(math.Ceil(cpus*period)), 1000)
		if err := os.WriteFile(filepath.Join(dir, "cpu.max"), fmt.Appendf(nil, "%d %d", quota, period), 0); err != nil {
			return fmt.Errorf("cpu.max: %w", err)
		}
	}
	return nil
}

func cgroupProcs(dir string) []int {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return nil
	}
	var out []int
	for _, f := range strings.Fields(string(b)) {
		if p, err := strconv.Atoi(f); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// cgroupKill SIGKILLs every process in the cgroup (cgroup.kill, Linux 5.14+;
// the tree's per-process signals cover older kernels).
func cgroupKill(dir string) {
	os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0)
}

// cgroupUsage reads the CPU time, peak memory and OOM kills of a cgroup.
func cgroupUsage(dir string) (cpuSeconds float64, peak int64, oomKills int64) {
	if m := keyed(filepath.Join(dir, "cpu.stat")); m != nil {
		cpuSeconds = float64(m["usage_usec"]) / 1e6
	}
	if b, err := os.ReadFile(filepath.Join(dir, "memory.peak")); err == nil { // Linux 5.19+
		peak, _ = strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	}
	if m := keyed(filepath.Join(dir, "memory.events")); m != nil {
		oomKills = m["oom_kill"]
	}
	return
}

// keyed reads a flat-keyed cgroup file ("key value" lines).
func keyed(path string) map[string]int64 {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	m := map[string]int64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		if ok {
			m[k], _ = strconv.ParseInt(v, 10, 64)
		}
	}
	return m
}

// removeCgroup removes an empty job cgroup, waiting briefly for the kernel
// to finish tearing down its last processes.
func removeCgroup(dir string) {
	for i := 0; i < 50; i++ {
		err := os.Remove(dir)
		if err == nil || errors.Is(err, os.ErrNotExist) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// memoryLimit is the memory this process may use: the smaller of the
// machine's and its cgroup's (v2 memory.max or v1 memory.limit_in_bytes).
func memoryLimit() int64 {
	total := memTotal()
	limit := int64(math.MaxInt64)
	readLimit := func(path string) bool {
		b, err := os.ReadFile(path)
		if err != nil {
			return false
		}
		if v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err == nil {
			limit = min(limit, v)
		}
		return true // "max" is no limit
	}
	if own, err := ownCgroup(); err == nil {
		readLimit(filepath.Join(cgroupMount, own, "memory.max"))
	}
	if b, err := os.ReadFile("/proc/self/cgroup"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			parts := strings.SplitN(l, ":", 3)
			if len(parts) == 3 && parts[1] == "memory" {
				// The v1 hierarchy may be mounted at our own cgroup
				// (a container) or at the host's root.
				if !readLimit(filepath.Join(cgroupMount, "memory", parts[2], "memory.limit_in_bytes")) {
					readLimit(filepath.Join(cgroupMount, "memory", "memory.limit_in_bytes"))
				}
			}
		}
	}
	if total > 0 {
		return min(total, limit)
	}
	if limit != math.MaxInt64 {
		return limit
	}
	return 0
}

func memTotal() int64 {
	var si syscall.Sysinfo_t
	if syscall.Sysinfo(&si) != nil {
		return 0
	}
	return int64(si.Totalram) * int64(si.Unit)
}
