// Package testproc starts the servers that tests run beside them
// (PostgreSQL, MinIO, Azurite, Redis, the Kubernetes components) so that
// they die with the test binary, even when it is killed.
package testproc

import (
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
)

// Start starts cmd and returns a channel that gets its Wait result. Set
// cmd.SysProcAttr's Pdeathsig first (Linux): the parent-death signal fires
// when the thread that forked the child exits, not the process, so Start
// forks from a goroutine pinned to its thread that keeps waiting for as
// long as the child runs.
func Start(cmd *exec.Cmd) (<-chan error, error) {
	started := make(chan error, 1)
	exited := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		exited <- cmd.Wait()
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return exited, nil
}

// Alive reports whether pid runs (Linux); a zombie (nobody reaped it) is
// dead.
func Alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	_, after, ok := strings.Cut(string(b), ") ")
	return ok && !strings.HasPrefix(after, "Z")
}
