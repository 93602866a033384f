//go:build linux

package local

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// procStat is what we read of /proc/<pid>/stat.
type procStat struct {
	PID   int
	State byte
	PPID  int
	PGRP  int
	// Start is field 22, starttime: clock ticks after boot. With the pid
	// it names a process uniquely for the life of the boot.
	Start int64
}

// parseStat parses the contents of /proc/<pid>/stat. The command name
// (field 2) is in parentheses and may itself contain spaces and ')', so
// fields are counted from the last ')'.
func parseStat(b []byte) (procStat, error) {
	var s procStat
	open := bytes.IndexByte(b, '(')
	end := bytes.LastIndexByte(b, ')')
	if open < 1 || end < open {
		return s, fmt.Errorf("malformed stat %q", b)
	}
	pid, err := strconv.Atoi(string(bytes.TrimSpace(b[:open])))
	if err != nil {
		return s, fmt.Errorf("malformed stat pid: %w", err)
	}
	f := strings.Fields(string(b[end+1:]))
	// f[0] is field 3 (state); field n is f[n-3].
	if len(f) < 20 {
		return s, fmt.Errorf("malformed stat: %d fields after comm", len(f))
	}
	s.PID = pid
	s.State = f[0][0]
	if s.PPID, err = strconv.Atoi(f[1]); err != nil {
		return s, fmt.Errorf("malformed stat ppid: %w", err)
	}
	if s.PGRP, err = strconv.Atoi(f[2]); err != nil {
		return s, fmt.Errorf("malformed stat pgrp: %w", err)
	}
	if s.Start, err = strconv.ParseInt(f[19], 10, 64); err != nil {
		return s, fmt.Errorf("malformed stat starttime: %w", err)
	}
	return s, nil
}

func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, err
	}
	return parseStat(b)
}

// alive reports whether pid is a live (not zombie) process that started at
// start, so a recycled pid is never taken for the process we mean.
func alive(pid int, start int64) bool {
	if pid <= 0 {
		return false
	}
	s, err := readStat(pid)
	return err == nil && s.Start == start && s.State != 'Z' && s.State != 'X'
}

// bootID changes on every boot; pids and start times from another boot mean
// nothing.
func bootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// hasEnv reports whether the initial environment of pid contains entry
// (e.g. "PLINTH_EXECUTOR_TAG=/x").
func hasEnv(pid int, entry string) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		return false
	}
	for len(b) > 0 {
		i := bytes.IndexByte(b, 0)
		if i < 0 {
			i = len(b)
		}
		if string(b[:i]) == entry {
			return true
		}
		if i == len(b) {
			break
		}
		b = b[i+1:]
	}
	return false
}

// children lists the child processes of every thread of pid, from
// /proc/<pid>/task/*/children (cheap: no scan of all of /proc).
func children(pid int) ([]int, error) {
	tasks, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/task")
	if err != nil {
		return nil, err
	}
	var out []int
	for _, t := range tasks {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/task/" + t.Name() + "/children")
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue // the thread ended
			}
			return nil, err
		}
		for _, f := range strings.Fields(string(b)) {
			if c, err := strconv.Atoi(f); err == nil {
				out = append(out, c)
			}
		}
	}
	return out, nil
}

// descendants lists every process below pid.
func descendants(pid int) []int {
	var out []int
	seen := map[int]bool{pid: true}
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		cs, err := children(p)
		if err != nil {
			continue
		}
		for _, c := range cs {
			if !seen[c] {
				seen[c] = true
				out = append(out, c)
				queue = append(queue, c)
			}
		}
	}
	return out
}

// rssBytes is the resident set size of pid (0 if it is gone).
func rssBytes(pid int) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseInt(f[1], 10, 64)
	return pages * int64(os.Getpagesize())
}

// tree names the processes of one work item, however they can be found:
//   - descendants of the live supervisor (which is a child subreaper, so
//     orphans of the job come back to it);
//   - members of the job's process group, while the group is provably ours;
//   - processes carrying the work's tag in their environment (this also
//     finds processes that left the group and lost their supervisor);
//   - members of the work's cgroup, when it has one.
type tree struct {
	shimPID   int
	shimStart int64
	pgid      int
	pgidStart int64 // start time of the group leader (the job's main process)
	tag       string
	cgroup    string
}

// members returns the live processes of the tree, keyed by pid. Zombies
// are dead and not listed.
func (t tree) members() map[int]procStat {
	m, _ := t.scan()
	return m
}

// scan is members, and whether the process group is provably the work's
// (its leader is the job's main process, or a tagged process is in it).
func (t tree) scan() (map[int]procStat, bool) {
	self := os.Getpid()
	out := map[int]procStat{}
	add := func(s procStat) {
		if s.PID != self && s.PID != t.shimPID && s.State != 'Z' && s.State != 'X' {
			out[s.PID] = s
		}
	}
	if t.shimPID > 0 && alive(t.shimPID, t.shimStart) {
		for _, p := range descendants(t.shimPID) {
			if s, err := readStat(p); err == nil {
				add(s)
			}
		}
	}
	if t.cgroup != "" {
		for _, p := range cgroupProcs(t.cgroup) {
			if s, err := readStat(p); err == nil {
				add(s)
			}
		}
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return out, false
	}
	entry := tagEnv + "=" + t.tag
	groupOurs := t.pgid > 0 && alive(t.pgid, t.pgidStart)
	var group []procStat
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		s, err := readStat(pid)
		if err != nil {
			continue
		}
		tagged := t.tag != "" && hasEnv(pid, entry)
		if tagged {
			add(s)
		}
		if t.pgid > 0 && s.PGRP == t.pgid {
			group = append(group, s)
			if tagged {
				groupOurs = true
			}
		}
	}
	if groupOurs {
		for _, s := range group {
			add(s)
		}
	}
	return out, groupOurs
}

// signal sends sig to every member of the tree and returns how many there
// were. Each process is signalled through a pidfd opened and then checked
// against the start time seen, so a pid recycled meanwhile is never hit.
func (t tree) signal(sig syscall.Signal) int {
	m, groupOurs := t.scan()
	if groupOurs {
		// The whole group at once, so that no member sees another die
		// (and, say, exits 0 from "wait") before its own signal lands.
		syscall.Kill(-t.pgid, sig)
	}
	for pid, s := range m {
		if groupOurs && s.PGRP == t.pgid {
			continue // signalled with the group: once is enough
		}
		signalExact(pid, s.Start, sig)
	}
	return len(m)
}

// signalExact signals pid only if it is still the process that started at
// start.
func signalExact(pid int, start int64, sig syscall.Signal) bool {
	p, err := os.FindProcess(pid) // holds a pidfd on Linux
	if err != nil {
		return false
	}
	defer p.Release()
	if s, err := readStat(pid); err != nil || s.Start != start {
		return false
	}
	return p.Signal(sig) == nil
}

// kill SIGKILLs the tree (cgroup.kill first where there is a cgroup) until
// no member is left or the timeout passes; it returns the survivors.
func (t tree) kill(timeout time.Duration) int {
	deadline := time.Now().Add(timeout)
	wait := 2 * time.Millisecond
	for {
		if t.cgroup != "" {
			cgroupKill(t.cgroup)
		}
		n := t.signal(syscall.SIGKILL)
		if n == 0 || time.Now().After(deadline) {
			return n
		}
		time.Sleep(wait)
		wait = min(2*wait, 50*time.Millisecond)
	}
}

// signalNames are the names Status.Signal uses.
var signalNames = map[syscall.Signal]string{
	syscall.SIGABRT: "SIGABRT", syscall.SIGALRM: "SIGALRM", syscall.SIGBUS: "SIGBUS",
	syscall.SIGFPE: "SIGFPE", syscall.SIGHUP: "SIGHUP", syscall.SIGILL: "SIGILL",
	syscall.SIGINT: "SIGINT", syscall.SIGKILL: "SIGKILL", syscall.SIGPIPE: "SIGPIPE",
	syscall.SIGQUIT: "SIGQUIT", syscall.SIGSEGV: "SIGSEGV", syscall.SIGTERM: "SIGTERM",
	syscall.SIGTRAP: "SIGTRAP", syscall.SIGUSR1: "SIGUSR1", syscall.SIGUSR2: "SIGUSR2",
	syscall.SIGXCPU: "SIGXCPU", syscall.SIGXFSZ: "SIGXFSZ", syscall.SIGSYS: "SIGSYS",
}

func signalName(s syscall.Signal) string {
	if n, ok := signalNames[s]; ok {
		return n
	}
	return "SIG" + strconv.Itoa(int(s))
}

// lookPath finds name the way a shell would, but in the job's PATH rather
// than the server's. Relative PATH entries are skipped (as exec.LookPath
// refuses them). A name with a slash is taken relative to dir.
func lookPath(name, path, dir string) (string, error) {
	if strings.Contains(name, "/") {
		p := name
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		return p, executable(p)
	}
	for _, d := range filepath.SplitList(path) {
		if !filepath.IsAbs(d) {
			continue
		}
		p := filepath.Join(d, name)
		if executable(p) == nil {
			return p, nil
		}
	}
	return "", os.ErrNotExist
}

func executable(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", p)
	}
	if fi.Mode().Perm()&0o111 == 0 {
		return os.ErrPermission
	}
	return syscall.Access(p, 1 /* X_OK */)
}
